"""User-facing diagnostics from shape rules and the interpreter: both shapes shown, location set."""

import numpy as np
import pytest

from netc.compiler.errors import DataError, NetTypeError, ShapeError, SourceLoc
from netc.compiler.interpret import interpret, run
from netc.compiler.ir import Graph, TensorType

L = SourceLoc("m.net", 4, 7, 4, 12)


def _g():
    g = Graph("e")
    a = g.input("a", TensorType((64, 10), "f32"), L)
    b = g.input("b", TensorType((64, 12), "f32"), L)
    return g, a, b


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow", "maximum", "minimum", "lt"])
def test_broadcast_error_shows_both_shapes_and_location(op):
    g, a, b = _g()
    with pytest.raises(ShapeError) as err:
        g.add(op, [a, b], None, L)
    assert err.value.message == f"{op}: cannot broadcast f32[64,10] with f32[64,12]"
    assert err.value.loc == L
    assert err.value.format().startswith("m.net:4:7: error: ")


@pytest.mark.parametrize("op,types,attrs,msg", [
    ("matmul", [(64, 10), (12, 5)], None,
     r"cannot multiply f32\[64,10\] by f32\[12,5\]: inner dimensions 10 and 12 differ"),
    ("matmul", [(2, 3, 4), (5, 4, 2)], None,
     r"cannot broadcast the batch dimensions of f32\[2,3,4\] and f32\[5,4,2\]"),
    ("conv2d", [(1, 3, 8, 8), (4, 2, 3, 3)], None, r"has 3 channels but weights .* expect 2"),
    ("conv2d", [(1, 3, 2, 2), (4, 3, 3, 3)], None, "a 3x3 window does not fit"),
    ("broadcast_to", [(3, 4)], {"shape": (5, 4)}, r"cannot broadcast f32\[3,4\] to f32\[5,4\]"),
    ("reshape", [(4, 6)], {"shape": (5, -1)}, r"cannot reshape f32\[4,6\] \(24 elements\)"),
    ("transpose", [(2, 3)], {"perm": (0, 0)}, "not a permutation"),
    ("concat", [(2, 3), (3, 3)], {"axis": 1}, r"cannot join f32\[2,3\], f32\[3,3\] along axis 1"),
    ("slice", [(4,)], {"starts": (3,), "stops": (1,)}, "is empty"),
    ("sum", [(4,)], {"axes": (1,)}, "axis 1 is out of range for a tensor of rank 1"),
    ("pad", [(4,)], {"pads": ((1, -1),)}, "non-negative"),
    ("max_pool2d", [(1, 1, 4, 4)], {"k": 2, "stride": 0}, "stride must be >= 1"),
    # the stride defaults to k, and a bad k was reported as the stride
    ("max_pool2d", [(1, 1, 4, 4)], {"k": 0}, r"max_pool2d: k \(the kernel size\) must be >= 1, "
     "got 0"),
    ("avg_pool2d", [(1, 1, 4, 4)], {"k": (2, -1)}, r"k \(the kernel size\) must be >= 1"),
    ("conv2d", [(1, 3, 8, 8), (4, 3, 3, 3)], {"pad": -1}, "conv2d: pad must be >= 0, got -1"),
])
def test_shape_rule_errors(op, types, attrs, msg):
    g = Graph("e")
    nodes = [g.input(f"i{k}", TensorType(s, "f32"), L) for k, s in enumerate(types)]
    with pytest.raises(ShapeError, match=msg) as err:
        g.add(op, nodes, attrs, L)
    assert err.value.loc == L


def test_type_errors():
    g, a, _ = _g()
    i = g.input("i", TensorType((64, 10), "i32"), L)
    for op, args, msg in [
        ("add", [a, i], r"different dtypes \(f32\[64,10\] and i32\[64,10\]\)"),
        ("exp", [i], "needs a floating-point tensor"),
        ("where", [a, a, a], "condition must be bool"),
        ("gather", [a, a], "indices must be i32"),
        ("one_hot", [a], "labels must be i32"),
    ]:
        with pytest.raises(NetTypeError, match=msg) as err:
            g.add(op, args, {"n": 3} if op == "one_hot" else None, L)
        assert err.value.loc == L


def test_interpreter_data_errors():
    g, a, b = _g()
    g.outputs["s"] = g.add("add", [a, a], None, L)
    ok = np.zeros((64, 10))
    with pytest.raises(DataError, match=r"missing input 'a' \(f32\[64,10\]\)"):
        run(g, {}, {})
    with pytest.raises(DataError, match=r"input 'a' should have shape \[64, 10\].*got \[64, 12\]"):
        run(g, {"a": np.zeros((64, 12))}, {})
    assert run(g, {"a": ok}, {}).outputs["s"].dtype == np.float32  # f64 feed converted
    t = g.input("t", TensorType((3,), "i32"), L, role="target")
    table = g.param("emb", TensorType((5, 2), "f32"), L)
    look = g.add("gather", [table, t], None, L)
    with pytest.raises(DataError, match="should hold integers"):
        interpret(g, {"t": np.zeros(3)}, {"emb": np.zeros((5, 2))}, {}, wanted=[look])
    with pytest.raises(DataError, match="missing parameter 'emb'"):
        interpret(g, {"t": np.zeros(3, dtype=np.int32)}, {}, {}, wanted=[look])
    with pytest.raises(DataError, match="index 7 is out of range for 5 rows") as err:
        interpret(g, {"t": np.array([0, 7, 1])}, {"emb": np.zeros((5, 2))}, {}, wanted=[look])
    assert err.value.loc == L
