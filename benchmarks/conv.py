"""Benchmark: netc's generated conv2d (forward, grad input, grad weight) against PyTorch eager.

Shapes: LeNet-5 at batch 64 (x[64,1,28,28] w[6,1,5,5] pad 2; x[64,6,14,14] w[16,6,5,5]) and a small
ResNet (x[32,16,32,32] w[16,16,3,3] pad 1; x[32,32,16,16] w[32,32,3,3] pad 1). netc runs both
lowerings ("implicit": im2col inside B packing; "im2col": explicit column buffer then dense GEMM) so
the faster can be kept; PyTorch runs F.conv2d and aten.convolution_backward (input and weight
gradients). Each thread count runs in its own subprocess with the peers' thread counts fixed
before import. Prints a table, or with --json one JSON object per row (ms and GFLOP/s, ratio
peer_time / netc_time, > 1 means netc is faster).

Usage: python benchmarks/conv.py [--json] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import json
import os

from timing import load_note, per_thread_count_rows, timed_many

SHAPES = [
    ("LeNet conv1", (64, 1, 28, 28), (6, 1, 5, 5), 1, 2),
    ("LeNet conv2", (64, 6, 14, 14), (16, 6, 5, 5), 1, 0),
    ("ResNet 16ch", (32, 16, 32, 32), (16, 16, 3, 3), 1, 1),
    ("ResNet 32ch", (32, 32, 16, 16), (32, 32, 3, 3), 1, 1),
]


def child(threads: int) -> None:
    import numpy as np

    import netc.kernels as K

    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        print(json.dumps(measure(shape, threads, rng, K, torch)), flush=True)


def measure(shape: tuple, threads: int, rng, K, torch) -> dict:
    """One row: netc (both strategies) and PyTorch on one convolution shape."""
    import numpy as np

    name, xs, ws, s, p = shape
    x = rng.standard_normal(xs, dtype=np.float32)
    w = rng.standard_normal(ws, dtype=np.float32)
    y = K.conv2d(x, w, s, p)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    flops = 2.0 * y.size * ws[1] * ws[2] * ws[3]  # per product; fwd, dX, dW each
    fns = {}
    for strat in ("implicit", "im2col"):
        fns[f"fwd_{strat}"] = lambda st=strat: K.conv2d(x, w, s, p, threads=threads, strategy=st)
        fns[f"dw_{strat}"] = lambda st=strat: K.conv2d_grad_weight(x, dy, ws, s, p,
                                                                   threads=threads, strategy=st)
    fns["dx"] = lambda: K.conv2d_grad_input(dy, w, xs, s, p, threads=threads)
    if torch is not None:
        import torch.nn.functional as F

        tx, tw, tdy = (torch.from_numpy(a) for a in (x, w, dy))
        fns["torch_fwd"] = lambda: F.conv2d(tx, tw, None, s, p)
        fns["torch_bwd"] = lambda: torch.ops.aten.convolution_backward(
            tdy, tx, tw, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, [True, True, False])
    t = timed_many(fns, pause=0.12 if threads > 1 else 0.0)  # peers spin after a call
    from netc.compiler.codegen.conv import DEFAULT_STRATEGY

    # The total is what users get: the default strategy for forward and weight gradient.
    best_fwd, best_dw = t[f"fwd_{DEFAULT_STRATEGY}"], t[f"dw_{DEFAULT_STRATEGY}"]
    row = {"case": name, "x": xs, "w": ws, "stride": s, "pad": p, "threads": threads}
    row.update({f"netc_{k}_ms": v * 1e3 for k, v in t.items() if not k.startswith("torch")})
    row["netc_total_ms"] = (best_fwd + best_dw + t["dx"]) * 1e3
    row["netc_fwd_gflops"] = flops / best_fwd / 1e9
    if torch is not None:
        tf, tb = t["torch_fwd"], t["torch_bwd"]
        row["torch_fwd_ms"] = tf * 1e3
        row["torch_bwd_ms"] = tb * 1e3
        row["torch_total_ms"] = (tf + tb) * 1e3
        row["ratio_fwd_vs_torch"] = tf / best_fwd
        row["ratio_total_vs_torch"] = (tf + tb) / (row["netc_total_ms"] / 1e3)
    for k, v in list(row.items()):
        if isinstance(v, float):
            row[k] = round(v, 3)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="one JSON object per row")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    load = os.getloadavg()[0]
    rows = per_thread_count_rows(__file__, args.threads, [], args.json)
    if not args.json:
        print_table(rows)
        print(load_note(load))


def print_table(rows: list[dict]) -> None:
    has_torch = rows and "torch_total_ms" in rows[0]
    print("times in ms; 'impl' = implicit im2col in packing, 'expl' = explicit im2col buffer")
    head = (f"{'case':<13}{'thr':>4} {'fwd impl':>9}{'fwd expl':>9}{'dW impl':>9}{'dW expl':>9}"
            f"{'dX':>8}{'netc tot':>9}")
    if has_torch:
        head += f"{'torch fwd':>10}{'torch bwd':>10}{'torch tot':>10}{'fwd x':>7}{'tot x':>7}"
    print(head)
    for r in rows:
        line = (f"{r['case']:<13}{r['threads']:>4} {r['netc_fwd_implicit_ms']:>9.2f}"
                f"{r['netc_fwd_im2col_ms']:>9.2f}{r['netc_dw_implicit_ms']:>9.2f}"
                f"{r['netc_dw_im2col_ms']:>9.2f}{r['netc_dx_ms']:>8.2f}{r['netc_total_ms']:>9.2f}")
        if has_torch:
            line += (f"{r['torch_fwd_ms']:>10.2f}{r['torch_bwd_ms']:>10.2f}"
                     f"{r['torch_total_ms']:>10.2f}{r['ratio_fwd_vs_torch']:>7.2f}"
                     f"{r['ratio_total_vs_torch']:>7.2f}")
        print(line)
    for thr in sorted({r["threads"] for r in rows}):
        lenet = [r for r in rows if r["threads"] == thr and r["case"].startswith("LeNet")]
        if has_torch and lenet:
            ours = sum(r["netc_total_ms"] for r in lenet)
            theirs = sum(r["torch_total_ms"] for r in lenet)
            print(f"LeNet conv layers, fwd+bwd, {thr} thread(s): netc {ours:.2f} ms, torch "
                  f"{theirs:.2f} ms, torch/netc {theirs / ours:.2f}")
    print("ratios = torch time / netc time (> 1: netc faster); netc tot = default strategy "
          "(im2col) fwd + dW + dX")


if __name__ == "__main__":
    main()
