"""The micro-kernel's assembly for each target (forced, so AVX-512 is checked on any x86 host):
its hot loop uses full-width vector registers and FMAs and never touches the stack (no spills)."""

from __future__ import annotations

import dataclasses
import re

import pytest
from llvmlite import ir

from netc.compiler.codegen.gemm import GemmSpec, choose_blocking, emit_gemm
from netc.compiler.codegen.microkernel import UNROLL, Epilogue, microkernel_name
from netc.compiler.codegen.target import get_target
from netc.jit import asm_of

EPILOGUE = Epilogue("cols", "relu", True)  # the epilogue must not disturb the k loop
WIDTH_REG = {"avx512": "zmm", "avx2": "ymm", "portable": "xmm"}


def function_body(asm: str, name: str) -> list[str]:
    lines = asm.splitlines()
    start = lines.index(f"{name}:")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(".Lfunc_end"))
    return [ln.strip() for ln in lines[start + 1:end]]


def hot_loop(body: list[str], op: str) -> list[str]:
    """The loop (label .. backward jump to it) holding the most `op` instructions."""
    labels = {ln[:-1]: i for i, ln in enumerate(body) if re.fullmatch(r"\.LBB\w+:", ln)}
    best: list[str] = []
    for i, ln in enumerate(body):
        m = re.fullmatch(r"j\w+\s+(\.LBB\w+)", ln)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            loop = body[labels[m.group(1)]:i + 1]
            if sum(op in x for x in loop) > sum(op in x for x in best):
                best = loop
    return best


@pytest.mark.parametrize("name", ["avx512", "avx2", "portable"])
def test_microkernel_assembly(name):
    target = get_target(name)
    m, n, k = 96, 128, 200
    module = ir.Module("asm")
    kern = emit_gemm(module, GemmSpec(m, n, k, epilogue=EPILOGUE), target)
    blk = choose_blocking(target, m, n, k)
    asm = asm_of(module, target)
    prefix = microkernel_name(target, blk.mr, blk.nv, EPILOGUE)
    prefix = prefix[:prefix.rindex("_s")]  # the store variants follow
    # one micro-kernel serves every full-height tile (strides and column edges are arguments;
    # the last row tile of an M that is not a multiple of MR has its own, suffixed _r<rows>)
    kernels = [ln[:-1] for ln in asm.splitlines() if ln.startswith(prefix) and ln.endswith(":")
               and not re.search(r"_r\d+$", ln[:-1])]
    assert len(kernels) == 1, kernels
    body = function_body(asm, kernels[0])
    reg = WIDTH_REG[name]
    if target.has_fma:
        loop = hot_loop(body, "vfmadd")
        fmas = [x for x in loop if x.startswith("vfmadd")]
        # every FMA of the unrolled block, at full width, on registers only
        assert len(fmas) == blk.mr * blk.nv * UNROLL, loop
        assert all(re.search(rf"%{reg}\d+, %{reg}\d+$", x) for x in fmas), fmas
    else:
        loop = hot_loop(body, "mulps")
        assert sum(x.startswith("mulps") for x in loop) == blk.mr * blk.nv * UNROLL, loop
        assert sum(x.startswith("addps") for x in loop) == blk.mr * blk.nv * UNROLL, loop
        assert not any("vfmadd" in x or "call" in x for x in body)
    assert blk.mr * blk.nv + blk.nv + 1 <= target.n_vregs
    # no calls at all (edge tiles included: no memcpy, no libm)
    assert not [x for x in body if "call" in x], [x for x in body if "call" in x]
    # no spills or reloads: the loop never addresses the stack
    assert not [x for x in loop if "rsp" in x or "rbp" in x], loop
    # wider registers than the target's must not appear anywhere in the kernel
    if name == "avx2":
        assert not any("zmm" in x for x in body)
    if name == "portable":
        assert not any("ymm" in x or "zmm" in x for x in body)
    assert kern.fn.name in asm


def test_forced_target_names_and_cpus(monkeypatch):
    monkeypatch.setenv("NETC_TARGET", "portable")
    assert get_target().name == "portable" and get_target().lanes == 4
    t = get_target("avx512")
    assert (t.lanes, t.n_vregs, t.vector_bits) == (16, 32, 512)
    assert get_target("avx2").n_vregs == 16
    with pytest.raises(ValueError, match="unknown target"):
        get_target("sse9")


def test_avx512_edges_use_lane_masks():
    target = get_target("avx512")
    module = ir.Module("asm_edges")
    emit_gemm(module, GemmSpec(20, 40, 16, epilogue=EPILOGUE), target)  # 40 = 32 + 8: edge
    asm = asm_of(module, target)
    assert re.search(r"vmovups\s+%zmm\d+, [^\n]*\{%k\d\}", asm), "no masked zmm store"


def test_jit_caches_by_ir_and_target():
    from netc.jit import compile_module

    def module() -> ir.Module:
        m = ir.Module("cache")
        emit_gemm(m, GemmSpec(5, 6, 7), get_target("portable"))
        return m

    portable = get_target("portable")
    first = compile_module(module(), portable)
    assert compile_module(module(), portable) is first  # same IR text, same target: cached
    assert compile_module(module(), get_target()) is not first or get_target().name == "portable"
    with pytest.raises(RuntimeError, match="cannot run"):
        compile_module(module(), dataclasses.replace(portable, runnable=False))
