"""The whole-step module's text: LLVM IR and assembly of an example, vectorized."""

from __future__ import annotations

import os

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
