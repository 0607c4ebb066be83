"""LLVM compiles in a forked child (runtime/jit_cache.object_code): the same object code as in
process, LLVM's errors and crashes become InternalCompilerErrors, the caller survives."""

from __future__ import annotations

import os

import pytest
from llvmlite import ir

from netc.compiler.codegen.target import get_target
from netc.compiler.errors import InternalCompilerError
from netc.jit_cache import object_code

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this OS")


def _module_text() -> str:
    m = ir.Module(name="t")
    f = ir.Function(m, ir.FunctionType(ir.FloatType(), [ir.FloatType()] * 2), name="madd")
    b = ir.IRBuilder(f.append_basic_block())
    b.ret(b.fadd(b.fmul(f.args[0], f.args[1]), f.args[0]))
    return str(m)


def test_forked_compile_gives_the_in_process_object(monkeypatch):
    target = get_target()
    forked = object_code(_module_text(), target)
    monkeypatch.setenv("NETC_COMPILE_IN_PROCESS", "1")
    here = object_code(_module_text(), target)
    assert forked == here and len(forked) > 100


def test_llvm_error_in_the_child_is_reported():
    with pytest.raises(InternalCompilerError, match="LLVM could not compile"):
        object_code("define void @f() {\n  ret i32 0\n}\n", get_target())


def test_a_child_that_dies_is_an_error_not_a_crash(monkeypatch):
    import netc.jit_cache as JC

    def die(text, target, *_):
        os.kill(os.getpid(), 9)

    monkeypatch.setattr(JC, "_object_code_here", die)
    with pytest.raises(InternalCompilerError, match="signal 9"):
        object_code(_module_text(), get_target())
