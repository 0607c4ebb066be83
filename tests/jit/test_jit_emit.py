"""The whole-step module's text: LLVM IR and assembly of an example, vectorized."""

from __future__ import annotations

import os

import pytest

from netc.compiler.codegen.target import get_target
from netc.emit import emit_object, emit_text

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
MLP = os.path.join(ROOT, "examples", "digits_mlp.net")


def test_emit_llvm_has_entry_points():
    text = emit_text(MLP, "llvm")
    for name in ("netc_step", "netc_train_steps"):
        assert f'define void @"{name}"(' in text or f"define void @{name}(" in text


def test_emit_asm_is_vectorized():
    asm = emit_text(MLP, "asm", request="predict")
    assert "netc_step" in asm
    assert "expf" not in asm and "tanhf" not in asm  # math is inlined polynomials, not libm
    if get_target().lanes >= 8:  # avx2 or avx512: ymm/zmm arithmetic in the step
        assert "ymm" in asm or "zmm" in asm


def test_emit_object_is_elf():
    assert emit_object(MLP, request="predict")[:4] == b"\x7fELF"


def test_transcendental_loops_vectorize():
    """exp/log/tanh/erf/sigmoid are inline polynomials: the loop over them becomes SIMD code with
    no libm call (a call would block vectorization)."""
    import re

    import pytest

    from netc.compiler.codegen.step import build_step_module
    from netc.compiler.codegen.step_input import plan_step
    from netc.compiler.errors import SourceLoc
    from netc.compiler.ir import Graph, TensorType
    from netc.jit import asm_of

    target = get_target()
    if target.lanes < 8:
        pytest.skip("portable target: no wide vector registers to look for")
    loc = SourceLoc("t.net", 1, 1)
    for op in ("exp", "log", "tanh", "erf", "sigmoid"):
        g = Graph("t", float_dtype="f32")
        x = g.input("x", TensorType((4096,), "f32"), loc)
        g.outputs["y"] = y = g.add(op, [x], None, loc)
        asm = asm_of(build_step_module(plan_step(g, {"y": y}), target).module, target)
        assert re.search(r"\bv\w+ps\s+.*[yz]mm", asm), op
        calls = [c for c in re.findall(r"call\w*\s+(\S+)", asm)
                 if "netc" not in c and "k1_" not in c]
        assert calls == [], (op, calls)


RECURRENT = """
model rec(batch = 4, steps = 6) {
    input  x: f32[batch, steps, 8]
    target y: i32[batch]
    param W: [8, 16] = glorot_uniform
    param U: [16, 16] = orthogonal
    h = zeros([batch, 16])
    for t in 0..steps {
        h = tanh(x[:, t, :] @ W + h @ U)
    }
    logits = h -> Dense(3) as head
    loss cross_entropy(logits, y)
}
train rec { optimizer = sgd(lr = 0.1) }
"""


def test_identical_kernels_are_emitted_once(tmp_path):
    """Each time step of an unrolled recurrence runs the same kernels on other buffers: the
    module defines each of them once and the step calls it once per time step."""
    import re

    import numpy as np

    import netc

    path = tmp_path / "rec.net"
    path.write_text(RECURRENT)
    text = emit_text(str(path), "llvm")
    defined = set(re.findall(r'^define internal void @"(k\d+_\w+)"', text, re.M))
    called = re.findall(r'call void @"(k\d+_\w+)"', text)
    assert set(called) == defined
    # forward: each step's x_t @ W, h @ U and tanh(. + .); backward: their gradients
    assert len(called) - len(defined) >= 3 * 5, (len(called), len(defined))
    # and the shared code computes what the interpreter computes
    a, b = netc.compile(str(path), seed=1), netc.compile(str(path), seed=1, backend="interpret")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6, 8)).astype(np.float32)
    y = rng.integers(0, 3, 4).astype(np.int32)
    for _ in range(3):
        np.testing.assert_allclose(a.train_step(x=x, y=y), b.train_step(x=x, y=y), rtol=1e-4)
    for k in a.params:
        np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("target_name", ["avx2", "avx512"])
def test_in_place_select_is_a_full_store(target_name):
    """The relu gradient `where(x > 0, g, 0)` written over g: x86 LLVM turns `store(select(c,
    load p, 0), p)` into a masked store of the zeros (vmaskmovps to memory: microcoded, many
    times slower on AMD cores). The emitter freezes values stored in place, so the kernel stays a
    compare, a select in registers (AVX2: an and; AVX-512: a zero-masking load) and a plain
    vector store. Both targets' assembly is read on any host."""
    import re

    from netc.compiler.codegen.step import build_step_module
    from netc.compiler.codegen.step_input import plan_step
    from netc.compiler.errors import SourceLoc
    from netc.compiler.ir import Graph, TensorType
    from netc.jit import asm_of

    target = get_target(target_name)
    loc = SourceLoc("t.net", 1, 1)
    g = Graph("t", float_dtype="f32")
    x = g.input("x", TensorType((32, 64), "f32"), loc)
    a = g.input("a", TensorType((32, 16), "f32"), loc)
    w = g.input("w", TensorType((16, 64), "f32"), loc)
    t = g.input("t", TensorType((32, 64), "f32"), loc)
    gr = g.add("matmul", [a, w], None, loc)  # an arena buffer the where may overwrite
    # a tensor threshold: the where is no GEMM epilogue (that takes a scalar), its own kernel
    pos = g.add("gt", [x, t], None, loc)
    y = g.add("where", [pos, gr, g.const(0.0, "f32", loc)], None, loc)
    g.outputs["y"] = y
    module = build_step_module(plan_step(g, {"y": y}), target).module
    (sig,) = re.findall(r'define .*where"?\((.*)\)', str(module))
    assert sig.count("float*") == 3, "the test needs the where to write over its input"
    asm = asm_of(module, target)
    body = asm[asm.index("where:"):]
    body = body[:body.index(".Lfunc_end")]
    reg = "ymm" if target.lanes == 8 else "zmm"
    masked_stores = re.findall(r"^\s*(vmaskmovps\s+%[yz]mm\d+, %[yz]mm\d+, .*\(.*|vmovup\w\s+"
                               r"%[yz]mm\d+, .*\{%k.*)$", body, re.M)
    full_stores = re.findall(rf"^\s*vmovup\w\s+%{reg}\d+, -?\d*\(%\w+(,%\w+)?\)$", body, re.M)
    in_registers = (r"\bvandps\b" if target.lanes == 8
                    else r"\bvmovup\w\s+\S+, %zmm\d+ \{%k\d\} \{z\}")
    assert masked_stores == [] and full_stores and re.search(in_registers, body), body


@pytest.mark.parametrize("target", ["avx512", "avx2", "portable"])
def test_whole_step_compiles_for_every_target(monkeypatch, target):
    """The LeNet training step (conv, pooling rows, packing transposes, row sums) goes through
    LLVM's code generator for each target, also the ones this host cannot run (AVX-512 on an
    AVX2 machine): the vector widths each target picks are legal there."""
    monkeypatch.setenv("NETC_TARGET", target)
    asm = emit_text(os.path.join(ROOT, "examples", "lenet.net"), "asm")
    assert "netc_step" in asm and "maxpool_bwd" in asm
    if target == "avx512":
        assert "zmm" in asm


@pytest.mark.parametrize("name", ["avx512", "avx2", "portable"])
def test_elementwise_kernels_are_explicit_vector_loops(name):
    """A fused elementwise kernel is emitted as a loop over whole vectors of the target's width
    (operands broadcast along a row are one element splat across the vector), then a scalar
    tail for the row's last elements: no reliance on LLVM's loop vectorizer, whose vector loop
    the kernel's loop metadata turns off."""
    import re

    from netc.compiler.codegen.step import build_step_module
    from netc.compiler.codegen.step_input import plan_step
    from netc.compiler.errors import SourceLoc
    from netc.compiler.ir import Graph, TensorType
    from netc.jit import asm_of

    target = get_target(name)
    w = target.lanes
    loc = SourceLoc("t.net", 1, 1)
    g = Graph("t", float_dtype="f32")
    x = g.input("x", TensorType((3, 4 * w + 3), "f32"), loc)
    col = g.input("c", TensorType((3, 1), "f32"), loc)
    y = g.add("mul", [g.add("exp", [x], None, loc), col], None, loc)
    g.outputs["y"] = y
    module = build_step_module(plan_step(g, {"y": y}), target).module
    text = str(module)
    fn = text[text.index('define internal void @"k'):]
    fn = fn[:fn.index("\n}")]
    assert f"load <{w} x float>" in fn and f"store <{w} x float>" in fn
    splat = rf"shufflevector <{w} x float> .*, <{w} x i32> <i32 0(, i32 0){{{w - 1}}}>"
    assert re.search(splat, fn), "no splat of c"
    assert re.search(r"\bload float, float\*", fn), "no scalar tail"
    assert '"llvm.loop.vectorize.enable", i1 0' in text
    asm_of(module, target)  # legal for the target's code generator


def test_short_rows_run_in_groups_of_whole_vectors():
    """A softmax's exp(x - max) over 10 classes: groups of rows that are whole vectors (4 rows
    of 10 on 8 lanes: 5 vectors), the per-row max spread over the lanes by a shuffle, no scalar
    exp for the rows' last elements except in rows left over after the last group."""
    import re

    from netc.compiler.codegen.step import build_step_module
    from netc.compiler.codegen.step_input import plan_step
    from netc.compiler.errors import SourceLoc
    from netc.compiler.ir import Graph, TensorType

    target = get_target("avx2")
    loc = SourceLoc("t.net", 1, 1)
    g = Graph("t", float_dtype="f32")
    x = g.input("x", TensorType((32, 10), "f32"), loc)
    m = g.input("m", TensorType((32, 1), "f32"), loc)
    y = g.add("exp", [g.add("sub", [x, m], None, loc)], None, loc)
    g.outputs["y"] = y
    text = str(build_step_module(plan_step(g, {"y": y}), target).module)
    fn = text[text.index('define internal void @"k'):]
    fn = fn[:fn.index("\n}")]
    group = fn[fn.index("g.body:"):fn.index("g.done:")]
    assert group.count("store <8 x float>") == 5  # 4 rows of 10 = 5 whole vectors
    assert "load <4 x float>" in group  # the 4 rows' m, once per group
    assert len(re.findall(r"shufflevector <4 x float>", group)) == 5
