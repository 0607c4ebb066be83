"""GEMM kernels against a float64 NumPy reference: transpositions, accumulate, epilogues,
prologue, leading dimensions, awkward and blocking-edge shapes, every runnable target, threads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import netc.kernels as K
from netc.compiler.codegen.gemm import choose_blocking
from netc.compiler.codegen.target import TARGET_NAMES, get_target


def rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)

ACTS = {
    None: lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
}


def reference(a, b, c=None, trans_a=False, trans_b=False, bias=None, bias_axis="cols",
              activation=None, residual=None, mask=None):
    a64 = a.astype(np.float64) * (1.0 if mask is None else mask.astype(np.float64))
    a64 = a64.T if trans_a else a64
    b64 = b.astype(np.float64).T if trans_b else b.astype(np.float64)
    out = a64 @ b64
    if c is not None:
        out = out + c
    if bias is not None:
        out = out + (bias[None, :] if bias_axis == "cols" else bias[:, None])
    if residual is not None:
        out = out + residual
    return ACTS[activation](out)


def operands(rng, m, n, k, trans_a, trans_b):
    a = rand(rng, k, m) if trans_a else rand(rng, m, k)
    b = rand(rng, n, k) if trans_b else rand(rng, k, n)
    return a, b


def close(got, want, k):
    # float32 accumulation over k terms of unit-variance products: error grows like sqrt(k).
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6 * (1 + np.sqrt(k)) * 4)


AWKWARD = [(1, 1, 1), (7, 13, 5), (1, 37, 9), (23, 1, 9), (17, 19, 1), (1, 1, 40)]


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("shape", AWKWARD)
def test_transpositions_awkward_shapes(rng, trans_a, trans_b, shape):
    m, n, k = shape
    a, b = operands(rng, m, n, k, trans_a, trans_b)
    got = K.gemm(a, b, trans_a=trans_a, trans_b=trans_b)
    close(got, reference(a, b, trans_a=trans_a, trans_b=trans_b), k)


def edge_shapes():
    t = get_target()
    blk = choose_blocking(t, 1000, 1000, 1000)
    return [(blk.mr - 1, blk.nr + 1, blk.kc + 1), (blk.mr + 1, blk.nr - 1, blk.kc - 1),
            (blk.mc + 1, 2 * blk.nr, 2 * blk.kc + 3)]


@pytest.mark.parametrize("shape", edge_shapes())
@pytest.mark.parametrize("trans", [(False, False), (True, True)])
def test_blocking_edges(rng, shape, trans):
    m, n, k = shape
    a, b = operands(rng, m, n, k, *trans)
    close(K.gemm(a, b, trans_a=trans[0], trans_b=trans[1]),
          reference(a, b, trans_a=trans[0], trans_b=trans[1]), k)


def test_large_with_everything_fused(rng):
    m, n, k = 301, 263, 700
    a, b = operands(rng, m, n, k, False, True)
    c0, bias, res, mask = rand(rng, m, n), rand(rng, n), rand(rng, m, n), rand(rng, m, k)
    c = c0.copy()
    K.gemm(a, b, c, trans_b=True, accumulate=True, bias=bias, activation="relu", residual=res,
           prologue_mask=mask, threads=2)
    close(c, reference(a, b, c0, trans_b=True, bias=bias, activation="relu", residual=res,
                       mask=mask), k)


@pytest.mark.parametrize("activation", list(ACTS))
@pytest.mark.parametrize("bias_axis", ["rows", "cols"])
def test_epilogues(rng, activation, bias_axis):
    m, n, k = 11, 21, 17
    a, b = operands(rng, m, n, k, False, False)
    bias = rand(rng, n if bias_axis == "cols" else m)
    res = rand(rng, m, n)
    got = K.gemm(a, b, bias=bias, bias_axis=bias_axis, activation=activation, residual=res)
    close(got, reference(a, b, bias=bias, bias_axis=bias_axis, activation=activation,
                         residual=res), k)


def test_activation_extremes():
    # exp clamping: sigmoid and tanh saturate exactly, no inf/nan for huge inputs.
    a = np.array([[1.0], [-1.0], [0.0], [1e-3]], dtype=np.float32)
    b = np.array([[200.0, 30.0, 1.0, 1e-3]], dtype=np.float32)
    for act in ("sigmoid", "tanh"):
        got = K.gemm(a, b, activation=act)
        np.testing.assert_allclose(got, ACTS[act](a.astype(np.float64) @ b),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("trans_a", [False, True])
def test_accumulate_and_prologue_mask(rng, trans_a):
    m, n, k = 13, 29, 31
    a, b = operands(rng, m, n, k, trans_a, False)
    mask = (rng.random(a.shape) > 0.5).astype(np.float32)
    c0 = rand(rng, m, n)
    c = c0.copy()
    out = K.gemm(a, b, c, trans_a=trans_a, accumulate=True, prologue_mask=mask)
    assert out is c
    close(c, reference(a, b, c0, trans_a=trans_a, mask=mask), k)


def test_residual_after_activation(rng):
    a, b, bias, res = rand(rng, 9, 13), rand(rng, 13, 20), rand(rng, 20), rand(rng, 9, 20)
    got = K.gemm(a, b, bias=bias, activation="relu", residual=res,
                 residual_after_activation=True)
    close(got, reference(a, b, bias=bias, activation="relu") + res, 13)


def test_residual_may_be_c(rng):
    a, b, c0 = rand(rng, 5, 7), rand(rng, 7, 9), rand(rng, 5, 9)
    c = c0.copy()
    K.gemm(a, b, c, residual=c, activation="tanh")
    close(c, reference(a, b, residual=c0, activation="tanh"), 7)


def test_leading_dimensions(rng):
    big_a, big_b, big_c = rand(rng, 20, 40), rand(rng, 30, 50), np.zeros((25, 60), np.float32)
    a, b, c = big_a[:9, 3:14], big_b[2:13, 5:22], big_c[4:13, 7:24]
    K.gemm(a, b, c)
    close(c, reference(np.ascontiguousarray(a), np.ascontiguousarray(b)), 11)
    assert np.all(big_c[:4] == 0) and np.all(big_c[:, :7] == 0) and np.all(big_c[:, 24:] == 0)


@pytest.mark.parametrize("target", [t for t in TARGET_NAMES if get_target(t).runnable])
def test_every_runnable_target(rng, target):
    for m, n, k in [(7, 13, 5), (33, 70, 90)]:
        a, b = operands(rng, m, n, k, True, False)
        bias = rand(rng, n)
        got = K.gemm(a, b, trans_a=True, bias=bias, activation="sigmoid", target=target)
        close(got, reference(a, b, trans_a=True, bias=bias, activation="sigmoid"), k)


def test_two_threads_bitwise_reproducible(rng):
    m, n, k = 201, 97, 555  # above the size where the runtime bothers to split
    assert 2 * m * n * k >= K.SPLIT_FLOPS
    a, b = operands(rng, m, n, k, False, False)
    runs = [K.gemm(a, b, threads=2) for _ in range(4)]
    assert K._local.last[1] == 2  # the kernel really ran on two threads
    for r in runs[1:]:
        assert np.array_equal(r, runs[0])
    # Each element is produced by one thread with a fixed K order: thread count changes nothing.
    assert np.array_equal(K.gemm(a, b, threads=1), runs[0])
    close(runs[0], reference(a, b), k)


def test_more_threads_than_work(rng):
    a, b = operands(rng, 3, 5, 4, False, False)
    close(K.gemm(a, b, threads=3), reference(a, b), 4)


@pytest.mark.parametrize("call, message", [
    (lambda a, b: K.gemm(a, b[:3]), "inner dimensions"),
    (lambda a, b: K.gemm(a.astype(np.float64), b), "float32"),
    (lambda a, b: K.gemm(a[None], b), "2 dimensions"),
    (lambda a, b: K.gemm(a, b, bias=np.zeros(3, np.float32)), "bias has shape"),
    (lambda a, b: K.gemm(a, b, np.zeros((2, 2), np.float32)), "c has shape"),
    (lambda a, b: K.gemm(a, b, accumulate=True), "needs an output"),
    (lambda a, b: K.gemm(a, b, activation="gelu"), "unknown activation"),
    (lambda a, b: K.gemm(a, b, threads=0), "threads"),
    (lambda a, b: K.gemm(a[:, ::2], b[:2]), "C-contiguous"),
    (lambda a, b: K.gemm(a[:, :4], a[:4], a), "overlap a"),
    (lambda a, b: K.gemm(a, b, np.broadcast_to(np.zeros(6, np.float32), (4, 6))),
     "C-contiguous|writable"),
    (lambda a, b: K.gemm(a, b, bias=np.zeros(6, np.float32), bias_axis="diag"), "bias_axis"),
    (lambda a, b: K.gemm(a, b, residual=np.zeros((4, 7), np.float32)[:, :6]), "row stride"),
])
def test_validation(rng, call, message):
    a, b = rand(rng, 4, 5), rand(rng, 5, 6)
    with pytest.raises(ValueError, match=message):
        call(a, b)


def test_avx512_ir_runs_here_through_legalisation(rng):
    # The AVX-512 IR (MR=14, NR=32, <16 x float>, masked edges) compiled for *this* host's CPU:
    # LLVM splits the wide vectors, so the generated logic is checked even without AVX-512.
    host = get_target()
    t = dataclasses.replace(get_target("avx512"), cpu=host.cpu, features=host.features,
                            runnable=True)
    for (m, n, k), (ta, tb) in [((29, 45, 300), (False, True)), ((15, 33, 7), (True, False))]:
        a, b = operands(rng, m, n, k, ta, tb)
        bias, res = rand(rng, n), rand(rng, m, n)
        got = K.gemm(a, b, trans_a=ta, trans_b=tb, bias=bias, residual=res, activation="tanh",
                     target=t, threads=2)
        close(got, reference(a, b, trans_a=ta, trans_b=tb, bias=bias, residual=res,
                             activation="tanh"), k)


@pytest.mark.skipif(get_target().name == "avx512", reason="this host runs AVX-512")
def test_unrunnable_target_is_refused(rng):
    a, b = rand(rng, 3, 4), rand(rng, 4, 5)
    with pytest.raises(ValueError, match="cannot run avx512"):
        K.gemm(a, b, target="avx512")


def test_bound_gemm_matches_gemm(rng):
    a, b, bias = rand(rng, 40, 30), rand(rng, 50, 30), rand(rng, 50)
    c = np.zeros((40, 50), np.float32)
    run = K.bound_gemm(a, b, c, trans_b=True, bias=bias, activation="sigmoid", threads=2)
    c[:] = 0
    run()
    close(c, reference(a, b, trans_b=True, bias=bias, activation="sigmoid"), 30)


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("target", [t for t in TARGET_NAMES if get_target(t).runnable])
def test_both_operands_in_place(rng, trans_a, target):
    """A small GEMM reads A and B unpacked, each with its own leading dimension (use_a_direct:
    N <= 2 NR; use_b_direct: a row-major B of whole slivers that fits L1), including the edge
    row tile and a B that is a view with a longer row stride; two threads split it bitwise the
    same."""
    from netc.compiler.codegen.gemm import GemmSpec, use_a_direct, use_b_direct

    tg = get_target(target)
    blk = choose_blocking(tg, 32, 2 * tg.lanes * 2, 64)
    n = blk.nr * 2
    for m in (32, blk.mr + 3):  # whole row tiles and an edge tile, on every target's MR
        spec = GemmSpec(m, n, 64, trans_a, False)
        assert use_a_direct(choose_blocking(tg, m, n, 64), spec) and use_b_direct(blk, spec)
        a = rand(rng, 64, m) if trans_a else rand(rng, m, 64)
        wide = rand(rng, 64, n + 5)
        b = wide[:, 2:2 + n]  # rows n + 5 floats apart
        bias = rand(rng, n)
        got = K.gemm(a, b, trans_a=trans_a, bias=bias, activation="relu", target=target)
        close(got, reference(a, np.ascontiguousarray(b), trans_a=trans_a, bias=bias,
                             activation="relu"), 64)
        two = K.gemm(a, b, trans_a=trans_a, bias=bias, activation="relu", target=target,
                     threads=2)
        assert np.array_equal(got, two)


@pytest.mark.parametrize("target", [t for t in TARGET_NAMES if get_target(t).runnable])
def test_narrow_column_edge_kernels(rng, target):
    """N under 2 NR and not a multiple of NR: the last column tile's own kernel stores its
    partial vector with plain 4-, 2- and 1-lane moves; with a column bias, an activation, C
    accumulated and several K blocks (C read back partially too), and a partial row tile."""
    tg = get_target(target)
    nr = choose_blocking(tg, 8, 8, 8).nr
    kc = choose_blocking(tg, 13, 10, 400).kc
    for n in sorted({1, 2, 3, 5, 7, 9, 10, nr - 1, nr + 1, nr + 7, 2 * nr - 1} - {0, nr}):
        a, b = operands(rng, 13, n, kc + 5, False, False)
        c0, bias = rand(rng, 13, n), rand(rng, n)
        c = c0.copy()
        K.gemm(a, b, c, accumulate=True, bias=bias, activation="tanh", target=target)
        close(c, reference(a, b, c0.astype(np.float64), bias=bias, activation="tanh"), kc + 5)


@pytest.mark.parametrize("m, n, k, ta, split, mode", [
    (60, 300, 600, False, "cols", "whole"),  # items of columns; A (several K blocks) packed once
    (400, 48, 500, True, "rows", "whole"),  # items of rows; B packed once
    (120, 600, 1200, False, "cols", "blocked"),  # A too big: claimed K block by K block
    (400, 64, 1200, True, "rows", "blocked"),
])
def test_claimed_items_equal_the_static_split(rng, m, n, k, ta, split, mode):
    """A claimed GEMM (emit_gemm(claimed=True): threads take work items, each packing the
    operand all items read once, or once per K block) gives bitwise what the static split
    gives, on 1 to 3 threads, with accumulate, a bias and an activation; repeated runs agree."""
    from netc.compiler.codegen.gemm import GemmSpec, claim_mode, emit_gemm, split_dim
    from netc.compiler.codegen.microkernel import Epilogue

    tg = get_target()
    blk = choose_blocking(tg, m, n, k)
    spec = GemmSpec(m, n, k, ta, False, accumulate=True, epilogue=Epilogue("cols", "relu"))
    assert split_dim(blk, spec) == split and k > blk.kc
    assert claim_mode(blk, spec, tg)[0] == mode
    kernels = {}
    for claimed in (False, True):
        def build(module, t, claimed=claimed):
            g = emit_gemm(module, spec, t, claimed=claimed)
            assert g.claims == claimed
            return g.fn.name, g.scratch_per_thread, g.max_threads
        kernels[claimed] = K.native(("test-gemm", spec, claimed), build, tg)
    a = rand(rng, k, m) if ta else rand(rng, m, k)
    b, bias, c0 = rand(rng, k, n), rand(rng, n), rand(rng, m, n)
    want = reference(a, b, c0, trans_a=ta, bias=bias, activation="relu")
    results = []
    for threads in (1, 2, 3, 2):
        for claimed, nat in kernels.items():
            c = c0.copy()
            state = [K.claim_state_for(threads), K.barrier_state_for()] if claimed else []
            K.run(nat, threads, a, b, c, bias, None, None, *state)
            results.append(c)
    close(results[0], want, k)
    assert all(np.array_equal(r, results[0]) for r in results[1:])
