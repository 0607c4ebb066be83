"""GEMMs of one module share their micro-kernels (strides and edges are arguments), each still
equal to the float64 reference; an in-place A is never read past its end (guard page)."""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from llvmlite import ir

from netc.compiler.codegen.gemm import GemmSpec, choose_blocking, emit_gemm, use_a_direct
from netc.compiler.codegen.microkernel import Epilogue
from netc.compiler.codegen.target import TARGET_NAMES, get_target
from netc.jit import compile_module

_FN = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_int32, *[ctypes.c_void_p] * 7)
RUNNABLE = [t for t in TARGET_NAMES if get_target(t).runnable]


def _ref(a, b, spec: GemmSpec, c0, bias, resid):
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    out = (a64.T if spec.trans_a else a64) @ (b64.T if spec.trans_b else b64)
    if spec.accumulate:
        out = out + c0
    e = spec.epilogue
    if e.bias_axis:
        out = out + (bias[None, :] if e.bias_axis == "cols" else bias[:, None])
    if e.residual and not e.residual_after:
        out = out + resid
    if e.activation == "relu":
        out = np.maximum(out, 0)
    if e.residual and e.residual_after:
        out = out + resid
    return out


def _specs(target) -> list[GemmSpec]:
    blk = choose_blocking(target, 100, 100, 100)
    mr, nr, kc = blk.mr, blk.nr, blk.kc
    return [
        GemmSpec(2 * mr + 1, 3 * nr - 3, kc + 9),  # two K blocks, row and column edges
        GemmSpec(mr + 1, 2 * nr + 5, 17, ldc=3 * nr, accumulate=True),  # wider C rows
        GemmSpec(3 * mr - 1, nr + 1, 33, lda=40, epilogue=Epilogue("cols", "relu")),  # A in place
        GemmSpec(2 * mr + 2, nr - 3, 21, trans_a=True, epilogue=Epilogue("rows", None, True)),
        GemmSpec(mr - 1, 5, 9),  # fewer rows than MR: A packed, not read in place
        GemmSpec(mr + 3, 3 * nr + 1, 40),  # the same variant as the one above
        GemmSpec(4 * mr, 4 * nr, 2 * kc + 1, trans_b=True, epilogue=Epilogue("cols", "relu",
                                                                                 True, True)),
    ]


@pytest.mark.parametrize("target_name", RUNNABLE)
def test_gemms_of_one_module_share_micro_kernels(target_name):
    target = get_target(target_name)
    specs = _specs(target)
    module = ir.Module("shared")
    kernels = [emit_gemm(module, s, target) for s in specs]
    uks = [f.name for f in module.functions if f.name.startswith("netc_uk_")]
    # one variant per (epilogue, store variants, operand reading), never per shape or stride,
    # plus one per count of rows in a last row tile (M not a multiple of MR) and one per count
    # of columns in the last column tile of a narrow N (under 2 NR)
    full_height = [n for n in uks if not re.search(r"_[rc]\d+$", n)]
    assert len(uks) == len(set(uks)) and len(full_height) < len(specs)
    assert not any(re.search(r"_ldc|_lda|_ldb|_r\d+c\d+", n) for n in uks), uks
    plain = [n for n in uks if n.endswith("_n_n_0_s2")]
    assert len(plain) == 1, uks  # two products of other shapes share this variant
    comp = compile_module(module, target)
    rng = np.random.default_rng(7)
    for spec, kern in zip(specs, kernels):
        m, n, k = spec.m, spec.n, spec.k
        a = rng.standard_normal((k, spec.lda_) if spec.trans_a else (m, spec.lda_),
                                dtype=np.float32)
        b = rng.standard_normal((n, spec.ldb_) if spec.trans_b else (k, spec.ldb_),
                                dtype=np.float32)
        # B rows may be read up to NR-1 floats past their end when B is read in place
        c = rng.standard_normal((m, spec.ldc_), dtype=np.float32)
        c0 = c[:, :n].astype(np.float64)
        resid = rng.standard_normal((m, spec.ldc_), dtype=np.float32)
        bias = rng.standard_normal(n if spec.epilogue.bias_axis == "cols" else m,
                                   dtype=np.float32)
        scratch = np.zeros(kern.scratch_per_thread // 4 + 16, np.float32)
        sp = scratch[(-scratch.ctypes.data) % 64 // 4:].ctypes.data
        _FN(comp.address(kern.fn.name))(0, 1, a.ctypes.data, b.ctypes.data, c.ctypes.data,
                                        bias.ctypes.data, resid.ctypes.data, None, sp)
        av = a[:, :m] if spec.trans_a else a[:, :k]
        bv = b[:, :k] if spec.trans_b else b[:, :n]
        want = _ref(av, bv, spec, c0, bias, resid[:, :n])
        np.testing.assert_allclose(c[:, :n], want, rtol=2e-5, atol=1e-4 * np.sqrt(k),
                                   err_msg=f"{spec}")


GUARD = r"""
import ctypes, mmap, sys
import numpy as np
import netc.kernels as K
m, n, k, trans = (int(v) for v in sys.argv[1:5])
page = mmap.PAGESIZE
buf = mmap.mmap(-1, 4 * page)
base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
libc = ctypes.CDLL(None)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
assert libc.mprotect(base + 3 * page, page, 0) == 0  # the page after A: any read faults
floats = np.frombuffer(buf, dtype=np.float32, count=3 * page // 4)
a = floats[3 * page // 4 - m * k:].reshape((k, m) if trans else (m, k))
a[...] = np.random.default_rng(0).standard_normal(a.shape)
b = np.random.default_rng(1).standard_normal((k, n)).astype(np.float32)
got = K.gemm(a, b, trans_a=bool(trans))
want = (a.T if trans else a).astype(np.float64) @ b
print(float(np.abs(got - want).max()))
"""


@pytest.mark.parametrize("tiles", [2, 20])  # last row tile: its own kernel / the shared one
@pytest.mark.parametrize("trans", [0, 1])
def test_in_place_a_edge_tiles_stay_inside_a(trans, tiles):
    target = get_target()
    blk = choose_blocking(target, 100, 10, 7)
    m, n, k = tiles * blk.mr + 1, 10, 7  # the last row tile has one real row
    assert use_a_direct(blk, GemmSpec(m, n, k, trans_a=bool(trans)))
    out = subprocess.run([sys.executable, "-c", GUARD, str(m), str(n), str(k), str(trans)],
                         capture_output=True, text=True, env=dict(os.environ))
    assert out.returncode == 0, out.stderr  # a read past A would kill the child (SIGSEGV)
    assert float(out.stdout) < 1e-4
