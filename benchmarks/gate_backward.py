"""DLF's residual gate, out = sigmoid(x w + b) * x: its hand-written backward (dlf.models.dlf._GateProduct) against
autograd's backward of the same formula, on one B x N x d token stream (default: batch 10,000 at the authors'
sizes, N = 96 tokens, d = 64), in fp32 and bf16.

    python benchmarks/gate_backward.py [--batch 10000] [--repeats 5]

Prints the fastest forward and backward time of each over --repeats runs, alternating the two.
"""
from __future__ import annotations

import argparse
import time

import torch

from dlf.models.dlf import _GateProduct


def plain(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(torch.matmul(x, w.to(x.dtype)).float().unsqueeze(-1) + b).to(x.dtype) * x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"B={args.batch} N={args.tokens} d={args.dim}, {args.threads} threads, best of {args.repeats}")
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(args.batch, args.tokens, args.dim, dtype=dtype, requires_grad=True)
        w = torch.randn(args.dim, requires_grad=True)
        b = torch.ones(args.tokens, 1, requires_grad=True)
        grad = torch.randn_like(x)
        best = {name: [float("inf"), float("inf")] for name in ("autograd", "hand-written")}
        for _ in range(args.repeats):
            for name, fn in (("autograd", lambda: plain(x, w, b)),
                             ("hand-written", lambda: _GateProduct.apply(x, w, b))):
                t0 = time.perf_counter()
                out = fn()
                t1 = time.perf_counter()
                out.backward(grad)
                t2 = time.perf_counter()
                best[name] = [min(best[name][0], t1 - t0), min(best[name][1], t2 - t1)]
                x.grad = w.grad = b.grad = None
        for name, (fwd, bwd) in best.items():
            print(f"{str(dtype).split('.')[-1]:9s} {name:12s} forward {fwd:.3f} s  backward {bwd:.3f} s")


if __name__ == "__main__":
    main()
