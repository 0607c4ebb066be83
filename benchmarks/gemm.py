"""Benchmark: netc's generated GEMM against NumPy's BLAS (and PyTorch when installed).

Runs every case at 1 and 2 threads, each thread count in its own subprocess so the peers' thread
counts are fixed before NumPy/PyTorch load (OPENBLAS/OMP/MKL_NUM_THREADS, torch.set_num_threads).
Cases: square sizes 64..2048, the MLP 784-512-256-10 at batch 128 (forward, dW = Xᵀ·dY, dX = dY·Wᵀ
products) and LeNet-5's fully connected layers at batch 64. Prints a table, or with --json one JSON
object per row (GFLOP/s of each, ratio netc/peer, both called from Python; "netc_native" is the
same kernel called with validation and lookup done up front, as native callers see it). The
host's FMA peak, measured with a generated kernel of independent vector FMAs, is printed beside
it.

Usage: python benchmarks/gemm.py [--json] [--threads 1,2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from timing import load_note, per_thread_count_rows, timed_many

SQUARE = [64, 128, 256, 512, 1024, 2048]


def mlp_cases(batch: int, dims: list[int], tag: str) -> list[tuple[str, int, int, int, bool, bool]]:
    out = []
    for i, (d_in, d_out) in enumerate(zip(dims, dims[1:]), start=1):
        out.append((f"{tag} fwd L{i}", batch, d_out, d_in, False, False))  # X·W
        out.append((f"{tag} dW L{i}", d_in, d_out, batch, True, False))  # Xᵀ·dY
        if i > 1:
            out.append((f"{tag} dX L{i}", batch, d_in, d_out, False, True))  # dY·Wᵀ
    return out


def cases(quick: bool) -> list[tuple[str, int, int, int, bool, bool]]:
    sq = [(f"square {n}", n, n, n, False, False) for n in (SQUARE[:4] if quick else SQUARE)]
    return (sq + mlp_cases(128, [784, 512, 256, 10], "MLP b128")
            + mlp_cases(64, [400, 120, 84, 10], "LeNet fc b64"))


def bench_many(fns: dict, flops: float, budget: float = 0.6, pause: float = 0.0) -> dict:
    """GFLOP/s of each callable, timed in alternation (see timing.timed_many)."""
    return {name: flops / t / 1e9 for name, t in timed_many(fns, budget, pause=pause).items()}


def fma_peak(threads: int) -> float:
    """Measured single-core FMA throughput (GFLOP/s) x threads: 12 independent accumulator chains
    of the target's widest vector FMA, so latency is hidden and only throughput counts."""
    import ctypes

    from llvmlite import ir

    from netc.compiler.codegen.loops import F32P, I32, I64, fma_fn, i64, vec_type
    from netc.compiler.codegen.target import get_target
    from netc.jit import compile_module

    t = get_target()
    m = ir.Module("peak")
    fn = ir.Function(m, ir.FunctionType(ir.VoidType(), [I32, I32, F32P, I64]), name="peak")
    out, iters = fn.args[2], fn.args[3]
    b = ir.IRBuilder(fn.append_basic_block("e"))
    vt = vec_type(t.lanes)
    fma = fma_fn(m, t.lanes, t.has_fma)
    x = ir.Constant(vt, [1.0000001] * t.lanes)
    y = ir.Constant(vt, [0.9999999] * t.lanes)
    accs = [ir.Constant(vt, [float(i)] * t.lanes) for i in range(12)]
    pre = b.block
    body = b.append_basic_block("body")
    done = b.append_basic_block("done")
    b.branch(body)
    b.position_at_end(body)
    k = b.phi(I64)
    phis = [b.phi(vt) for _ in accs]
    k.add_incoming(i64(0), pre)
    for p, a in zip(phis, accs):
        p.add_incoming(a, pre)
    new = [b.call(fma, [p, x, y]) for p in phis]
    k2 = b.add(k, i64(1))
    k.add_incoming(k2, body)
    for p, v in zip(phis, new):
        p.add_incoming(v, body)
    b.cbranch(b.icmp_signed("<", k2, iters), body, done)
    b.position_at_end(done)
    total = new[0]
    for v in new[1:]:
        total = b.fadd(total, v)
    b.store(b.extract_element(total, ir.Constant(I32, 0)), out)
    b.ret_void()
    c = compile_module(m, t)
    f = ctypes.CFUNCTYPE(None, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64)(
        c.address("peak"))
    buf = (ctypes.c_float * 1)()
    n = 20_000_000
    f(0, 1, ctypes.addressof(buf), 1000)
    t0 = time.perf_counter()
    f(0, 1, ctypes.addressof(buf), n)
    dt = time.perf_counter() - t0
    return n * 12 * t.lanes * 2 / dt / 1e9 * threads


def child(threads: int, quick: bool) -> None:
    """Runs in a subprocess with the peers' thread counts already fixed by the environment."""
    import numpy as np

    import netc.kernels as K
    from netc.compiler.codegen.target import get_target

    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    peak = fma_peak(threads)
    target = get_target().name
    for name, m, n, k, ta, tb in cases(quick):
        a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
        c = np.empty((m, n), np.float32)
        flops = 2.0 * m * n * k
        row = {"case": name, "m": m, "n": n, "k": k, "trans_a": ta, "trans_b": tb,
               "threads": threads, "target": target, "fma_peak_gflops": round(peak, 1)}
        opa, opb = (a.T if ta else a), (b.T if tb else b)
        fns = {
            "netc": lambda a=a, b=b, c=c, ta=ta, tb=tb: K.gemm(a, b, c, trans_a=ta, trans_b=tb,
                                                              threads=threads),
            "netc_native": K.bound_gemm(a, b, c, trans_a=ta, trans_b=tb, threads=threads),
            "numpy": lambda x=opa, y=opb, z=c: np.matmul(x, y, out=z),
        }
        if torch is not None:
            ta_, tb_, tc = torch.from_numpy(opa), torch.from_numpy(opb), torch.from_numpy(c)
            fns["torch"] = lambda x=ta_, y=tb_, z=tc: torch.matmul(x, y, out=z)
        for who, gf in bench_many(fns, flops, pause=0.12 if threads > 1 else 0.0).items():
            row[f"{who}_gflops"] = gf
        ref = opa.astype(np.float64) @ opb.astype(np.float64)
        K.gemm(a, b, c, trans_a=ta, trans_b=tb, threads=threads)
        row["max_rel_err"] = float(np.abs(c - ref).max() / max(np.abs(ref).max(), 1e-30))
        for peer in ("numpy", "torch"):
            if f"{peer}_gflops" in row:
                row[f"ratio_vs_{peer}"] = row["netc_gflops"] / row[f"{peer}_gflops"]
        for key, v in list(row.items()):
            if isinstance(v, float) and key != "max_rel_err":
                row[key] = round(v, 2)
        print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="one JSON object per row")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--quick", action="store_true", help="square sizes up to 512 only")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.quick)
        return
    load = os.getloadavg()[0]
    extra = ["--quick"] if args.quick else []
    rows = per_thread_count_rows(__file__, args.threads, extra, args.json)
    if not args.json:
        print_table(rows)
        print(load_note(load))


def print_table(rows: list[dict]) -> None:
    if not rows:
        return
    print(f"target {rows[0]['target']}; measured FMA peak {rows[0]['fma_peak_gflops']} GFLOP/s "
          f"per core; 'native' = the same kernel called without the Python entry")
    has_torch = "torch_gflops" in rows[0]
    head = (f"{'case':<18}{'M':>6}{'N':>6}{'K':>6} tA tB thr {'netc':>7} {'native':>7} "
            f"{'numpy':>7} {'x np':>6}")
    if has_torch:
        head += f" {'torch':>7} {'x torch':>7}"
    print(head + "   (GFLOP/s; ratio = netc / peer, both through Python)")
    for r in rows:
        line = (f"{r['case']:<18}{r['m']:>6}{r['n']:>6}{r['k']:>6}  {'T' if r['trans_a'] else '-'}"
                f"  {'T' if r['trans_b'] else '-'} {r['threads']:>3} {r['netc_gflops']:>7.1f} "
                f"{r['netc_native_gflops']:>7.1f} {r['numpy_gflops']:>7.1f} "
                f"{r['ratio_vs_numpy']:>6.2f}")
        if has_torch:
            line += f" {r['torch_gflops']:>7.1f} {r['ratio_vs_torch']:>7.2f}"
        print(line)


if __name__ == "__main__":
    main()
