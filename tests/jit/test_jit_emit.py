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
