"""Elementwise kernels as explicit vector loops (kernels_elementwise + strided_vector_loop): every
elementwise primitive's body at vector width, on shapes that give whole vectors, a scalar tail,
a row split across threads and rows too short for a vector, with operands broadcast along rows
and along columns, at every dtype a body handles, with NaN, infinities and signed zeros in the
data. JIT equals the NumPy interpreter (NaN where it has NaN), the same on one and two threads;
random draws and everything integer or boolean bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import LOC

from netc.compiler.codegen.kernels_shape import batch_chunks
from netc.compiler.codegen.lower_elementwise import ELEMENTWISE
from netc.compiler.interpret import interpret
from netc.compiler.ir import Graph, TensorType
from netc.engine import Store
from netc.jit_engine import JitEngine

# (3, 37): rows of whole vectors and a ragged tail; (75,): one row split between threads, each
# with its own tail; (4, 12), (32, 10), (9, 6), (2, 5, 3): short ragged rows in groups of rows
# that make whole vectors (strided_vector_loop's row groups), rows left over after the last
# group (split between threads too); (3, 2): fewer rows than a group (scalar steps)
SHAPES = [(3, 37), (75,), (4, 12), (32, 10), (9, 6), (2, 5, 3), (3, 2)]
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -3.0, 100.0]
FLOAT_UNARY = ["neg", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "abs", "sign", "tanh",
               "sigmoid", "relu", "erf", "stop_gradient"]
FLOAT_BINARY = ["add", "sub", "mul", "div", "pow", "maximum", "minimum"]
COMPARE = ["lt", "le", "gt", "ge", "eq", "ne"]
INT_UNARY = ["neg", "abs", "sign", "relu"]
INT_BINARY = ["add", "sub", "mul", "maximum", "minimum"]


def test_every_elementwise_body_is_covered():
    covered = set(FLOAT_UNARY) | set(FLOAT_BINARY) | set(COMPARE) | {"cast", "where"}
    assert set(ELEMENTWISE) == covered


def _floats(rng: np.random.Generator, shape: tuple, dtype=np.float32) -> np.ndarray:
    a = rng.uniform(-3.0, 3.0, shape)
    flat = a.reshape(-1)
    at = rng.choice(flat.size, size=min(len(SPECIAL), flat.size // 3), replace=False)
    flat[at] = SPECIAL[:len(at)]
    return a.astype(dtype)


def _run(g: Graph, feeds: dict) -> None:
    """The JIT's outputs on one and on two threads against the interpreter's."""
    nodes = list(g.outputs.values())
    ref = interpret(g, feeds, {}, {}, seed=5, step=0, wanted=nodes)
    outs = []
    for threads in (1, 2):
        eng = JitEngine(g, Store(5), threads=threads)
        assert eng._fallback is None
        outs.append(eng.run("predict", feeds))
    for name, node in g.outputs.items():
        want, got = ref[node.id], outs[0][name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        with np.errstate(all="ignore"):
            if want.dtype.kind in "bi" or node.op.startswith("random"):
                np.testing.assert_array_equal(got, want, err_msg=name)
            else:
                np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5, equal_nan=True,
                                           err_msg=name)
        np.testing.assert_array_equal(outs[1][name], got, err_msg=f"{name} on two threads")


def _operands(g: Graph, rng, shape, dtype: str, make):
    """x and y of `shape`, a row operand broadcast down the columns and a column operand
    broadcast along the rows (the innermost stride 0: splat in the vector loop)."""
    row = shape[-1:]
    col = shape[:-1] + (1,)
    feeds = {f"{dtype}_x": make(rng, shape), f"{dtype}_y": make(rng, shape),
             f"{dtype}_row": make(rng, row), f"{dtype}_col": make(rng, col)}
    nodes = {k: g.input(k, TensorType(v.shape, dtype), LOC) for k, v in feeds.items()}
    return [nodes[f"{dtype}_{k}"] for k in ("x", "y", "row", "col")], feeds


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_float_bodies_at_vector_width(shape):
    rng = np.random.default_rng(1)
    g = Graph("vec_f32", float_dtype="f32")
    (x, y, row, col), feeds = _operands(g, rng, shape, "f32", _floats)
    for op in FLOAT_UNARY:
        g.outputs[op] = g.add(op, [x], {}, LOC)
    for op in FLOAT_BINARY + COMPARE:
        g.outputs[op] = g.add(op, [x, y], {}, LOC)
        g.outputs[f"{op}_row"] = g.add(op, [x, row], {}, LOC)
        g.outputs[f"{op}_col"] = g.add(op, [col, x], {}, LOC)
    g.outputs["where"] = g.add("where", [g.add("gt", [x, col], {}, LOC), y, row], {}, LOC)
    for to in ("i32", "bool", "f64"):
        g.outputs[f"cast_{to}"] = g.add("cast", [x], {"dtype": to}, LOC)
    # float64 values in registers: through float32 math and back
    wide = g.add("cast", [y], {"dtype": "f64"}, LOC)
    g.outputs["f64_chain"] = g.add("cast", [g.add("mul", [g.add("tanh", [wide], {}, LOC),
                                                          wide], {}, LOC)], {"dtype": "f32"}, LOC)
    key = g.rng_key(LOC)
    g.outputs["random_uniform"] = g.add("random_uniform", [key], {"shape": shape, "stream": 2},
                                        LOC)
    g.outputs["random_normal"] = g.add("random_normal", [key], {"shape": shape, "stream": 9}, LOC)
    _run(g, feeds)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_int_and_bool_bodies_at_vector_width(shape):
    rng = np.random.default_rng(2)
    g = Graph("vec_int", float_dtype="f32")
    (a, b, row, col), feeds = _operands(
        g, rng, shape, "i32", lambda r, s: r.integers(-9, 10, s).astype(np.int32))
    for op in INT_UNARY:
        g.outputs[op] = g.add(op, [a], {}, LOC)
    for op in INT_BINARY + COMPARE:
        g.outputs[op] = g.add(op, [a, b], {}, LOC)
        g.outputs[f"{op}_row"] = g.add(op, [a, row], {}, LOC)
        g.outputs[f"{op}_col"] = g.add(op, [col, a], {}, LOC)
    (p, q, prow, pcol), bfeeds = _operands(g, rng, shape, "bool",
                                           lambda r, s: r.integers(0, 2, s).astype(bool))
    feeds.update(bfeeds)
    for op in ("eq", "ne", "lt", "ge"):
        g.outputs[f"bool_{op}"] = g.add(op, [p, prow], {}, LOC)
    g.outputs["where_int"] = g.add("where", [p, a, col], {}, LOC)
    g.outputs["where_bool"] = g.add("where", [pcol, q, p], {}, LOC)
    for src, node in (("i32", a), ("bool", q)):
        for to in ("f32", "i32", "bool", "f64"):
            if to != src:
                g.outputs[f"cast_{src}_{to}"] = g.add("cast", [node], {"dtype": to}, LOC)
    _run(g, feeds)


def test_pow_special_values_follow_numpy():
    """C99's pow cases (NumPy's): signed zeros and infinities as base, +-inf and NaN as exponent,
    negative bases to odd, even and non-integral powers, pow(1, nan) and pow(nan, 0)."""
    v = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0,
                  -3.0, 2.5, 1e-40], np.float32)
    a, e = np.meshgrid(v, v, indexing="ij")
    g = Graph("pow_special", float_dtype="f32")
    x = g.input("a", TensorType(a.shape, "f32"), LOC)
    y = g.input("e", TensorType(e.shape, "f32"), LOC)
    g.outputs["pow"] = g.add("pow", [x, y], {}, LOC)
    _run(g, {"a": a, "e": e})


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
def test_gemm_epilogue_activation_is_the_primitive(act):
    """An activation fused into a GEMM's epilogue is the primitive's own body: NaN and infinite
    pre-activations give what the unfused op (and NumPy) gives."""
    rng = np.random.default_rng(3)
    g = Graph("epilogue", float_dtype="f32")
    x = g.input("x", TensorType((6, 20), "f32"), LOC)
    w = g.input("w", TensorType((20, 24), "f32"), LOC)
    bias = g.input("b", TensorType((24,), "f32"), LOC)
    pre = g.add("add", [g.add("matmul", [x, w], {}, LOC), bias], {}, LOC)
    g.outputs["out"] = g.add(act, [pre], {}, LOC)
    xs = rng.standard_normal((6, 20)).astype(np.float32)
    xs[1, 3], xs[4, 0] = np.nan, np.inf
    bs = rng.standard_normal(24).astype(np.float32)
    bs[5], bs[7] = -np.inf, 1e30
    feeds = {"x": xs, "w": rng.standard_normal((20, 24)).astype(np.float32), "b": bs}
    plan = JitEngine(g, Store(0), threads=1).compiled("predict").plan
    fused = [k for k in plan.kernels if k.kind == "gemm"
             and any(plan.graph.node(i).op == act for i in k.nodes)]
    assert fused, "the activation is not in the GEMM's epilogue"
    _run(g, feeds)


@pytest.mark.parametrize("op", ["sum", "max", "min"])
@pytest.mark.parametrize("shape, axes", [
    ((3, 37), (1,)),  # rows of whole vectors and a ragged end: vector partials
    ((4, 100), (1,)),  # rows of several blocks of partials
    ((6, 5), (1,)),  # rows shorter than a vector: one element at a time
    ((37, 3, 21), (0, 1)),  # outer axes reduced: y's row is a vector loop
    ((2, 40, 9), (0, 2)),  # both kinds
], ids=str)
def test_reductions_at_vector_width(op, shape, axes):
    """sum/max/min over contiguous rows (vector partial accumulators, NaN propagating) and over
    outer axes (vector loops over the kept row), with an elementwise prologue evaluated at the
    same width (`(x - m)^2` with m broadcast along the row: its operand is splat), float and
    int: equal to the interpreter, bitwise the same on one and two threads."""
    rng = np.random.default_rng(4)
    g = Graph("red", float_dtype="f32")
    x = g.input("x", TensorType(shape, "f32"), LOC)
    kept = tuple(1 if i in axes else d for i, d in enumerate(shape))
    m = g.input("m", TensorType(kept, "f32"), LOC)
    i = g.input("i", TensorType(shape, "i32"), LOC)
    attrs = {"axes": axes, "keepdims": False}
    d = g.add("sub", [x, m], {}, LOC)
    g.outputs["plain"] = g.add(op, [x], attrs, LOC)
    g.outputs["prologue"] = g.add(op, [g.add("mul", [d, d], {}, LOC)], attrs, LOC)
    g.outputs["int"] = g.add(op, [i], attrs, LOC)
    xs = rng.standard_normal(shape).astype(np.float32)
    xs.reshape(-1)[[5, 17]] = np.nan  # a NaN in one row/column propagates to its result
    feeds = {"x": xs, "m": rng.standard_normal(kept).astype(np.float32),
             "i": rng.integers(-50, 50, shape).astype(np.int32)}
    _run(g, feeds)


@pytest.mark.parametrize("op", ["sum", "max"])
@pytest.mark.parametrize("shape, axes, chunks", [
    ((64, 16, 10, 10), (0, 2, 3), 8),  # a conv bias gradient: 8 chunks of 8 images
    ((128, 512), (0,), 1),  # a dense bias gradient: the kept columns split, no chunks
    ((8192, 12), (0,), 8),  # a kept row too short to split
    ((50, 30, 40), (0, 1, 2), 5),  # everything: one value, now on every thread
    ((40, 2, 500), (0, 2), 8),
    ((13, 3000), (0,), 1),  # a prime leading size: the plain loop
], ids=str)
def test_reductions_over_the_batch_axis_in_chunks(op, shape, axes, chunks):
    """A reduction over the leading axis of a big input (and its innermost, or keeping only a
    short one) sums fixed chunks of rows into partials (each thread its own rows), then the
    partials in chunk order; with a prologue whose operand
    is broadcast down the chunks (not moved) and whose value is also stored (moved with each
    chunk): equal to the interpreter, bitwise the same on one and two threads."""
    rng = np.random.default_rng(7)
    kept = tuple(1 if i in axes else d for i, d in enumerate(shape))
    assert batch_chunks(shape, axes, int(np.prod(kept)), "f32") == chunks
    g = Graph("red_chunks", float_dtype="f32")
    x = g.input("x", TensorType(shape, "f32"), LOC)
    m = g.input("m", TensorType(kept, "f32"), LOC)
    i = g.input("i", TensorType(shape, "i32"), LOC)
    attrs = {"axes": axes, "keepdims": False}
    d = g.add("sub", [x, m], {}, LOC)
    g.outputs["d"] = d
    g.outputs["plain"] = g.add(op, [x], attrs, LOC)
    g.outputs["prologue"] = g.add(op, [g.add("mul", [d, d], {}, LOC)], attrs, LOC)
    g.outputs["int"] = g.add(op, [i], attrs, LOC)
    xs = rng.standard_normal(shape).astype(np.float32)
    xs.reshape(-1)[[7, xs.size - 3]] = np.nan
    _run(g, {"x": xs, "m": rng.standard_normal(kept).astype(np.float32),
             "i": rng.integers(-50, 50, shape).astype(np.int32)})


@pytest.mark.parametrize("shape, perm", [
    ((13, 21), (1, 0)),  # ragged tiles both ways; the split dimension is one of the tile's
    ((64, 40), (1, 0)),
    ((16, 24, 40), (0, 2, 1)),  # a batch of transposes (the split is outside the tiles)
    ((3, 9, 17, 10), (3, 1, 0, 2)),
    ((5, 8, 8), (2, 0, 1)),
    ((4, 6, 3), (1, 0, 2)),  # rows stay contiguous: a plain copy
], ids=str)
@pytest.mark.parametrize("dtype", ["f32", "i32", "bool"])
def test_transposes(shape, perm, dtype):
    """Transposing copies run in register-transposed tiles (strided_transpose) with ragged ends
    element by element: exactly NumPy's transpose, on one and two threads."""
    rng = np.random.default_rng(5)
    g = Graph("tr", float_dtype="f32")
    x = g.input("x", TensorType(shape, dtype), LOC)
    g.outputs["t"] = g.add("transpose", [x], {"perm": perm}, LOC)
    data = rng.standard_normal(shape)
    feeds = {"x": (data > 0 if dtype == "bool" else
                   (data * 100).astype(np.int32) if dtype == "i32" else data.astype(np.float32))}
    _run(g, feeds)


def test_reduction_of_short_rows_in_groups():
    """A reduction over an outer axis whose kept rows are short and ragged, with a prologue
    operand of one element per row: the kept rows run in row groups (the operand spread by a
    shuffle)."""
    rng = np.random.default_rng(6)
    g = Graph("red_groups", float_dtype="f32")
    x = g.input("x", TensorType((3, 9, 10), "f32"), LOC)
    c = g.input("c", TensorType((9, 1), "f32"), LOC)
    d = g.add("sub", [x, c], {}, LOC)
    for op in ("sum", "max"):
        g.outputs[op] = g.add(op, [g.add("mul", [d, d], {}, LOC)], {"axes": (0,),
                                                                     "keepdims": False}, LOC)
    _run(g, {"x": rng.standard_normal((3, 9, 10)).astype(np.float32),
             "c": rng.standard_normal((9, 1)).astype(np.float32)})


@pytest.mark.parametrize("k", [24, 700])  # one K block, several
def test_gemm_residual_chains(k):
    """`P + A·B`, `P - c·(A·B)` and `P + c·(A·B)` are GEMM epilogues (the residual added in the
    first K block); `A·B - P` is not (a negated residual) and stays a kernel of its own. All
    equal the interpreter."""
    rng = np.random.default_rng(7)
    g = Graph("resid", float_dtype="f32")
    x = g.input("x", TensorType((9, k), "f32"), LOC)
    p = g.input("p", TensorType((9, 20), "f32"), LOC)
    c = g.const(np.float32(0.25), "f32", LOC)
    feeds = {"x": rng.standard_normal((9, k)).astype(np.float32),
             "p": rng.standard_normal((9, 20)).astype(np.float32)}

    def mm():  # a product of its own (one matmul used by several chains fuses none)
        name = f"w{len(feeds)}"
        feeds[name] = rng.standard_normal((k, 20)).astype(np.float32)
        return g.add("matmul", [x, g.input(name, TensorType((k, 20), "f32"), LOC)], {}, LOC)

    g.outputs["plus"] = g.add("add", [p, mm()], {}, LOC)
    g.outputs["minus_scaled"] = g.add("sub", [p, g.add("mul", [mm(), c], {}, LOC)], {}, LOC)
    g.outputs["plus_scaled"] = g.add("add", [g.add("mul", [c, mm()], {}, LOC), p], {}, LOC)
    g.outputs["negated"] = g.add("sub", [mm(), p], {}, LOC)
    plan = JitEngine(g, Store(0), threads=1).compiled("predict").plan
    fused = [k for k in plan.kernels if k.kind == "gemm" and len(k.nodes) > 1]
    assert len(fused) == 3
    _run(g, feeds)
