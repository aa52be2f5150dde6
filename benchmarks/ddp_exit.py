"""How often does a finished 2-process run still fail at exit? `dlf train --nproc 2` on tiny DLF, N times.

    python benchmarks/ddp_exit.py --runs 60

Each run trains the tiny 2-process job of tests/test_distributed.py (3,000 synthetic rows, one-layer DLF, about 10 s
here) and must exit 0. Printed: every failing run's last stderr lines and the count. While gloo's threads outlived
the run (docs/training.md, "Multi-process training", Exit) about 1 run in 6 aborted at interpreter shutdown.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile

TINY = {"data.synthetic.rows": 3000, "data.synthetic.max_cardinality": 200, "model.embedding_dim": 8,
        "model.layers": 1, "model.rank": 2, "model.interaction_tokens": 2, "model.implicit_tokens": 2,
        "model.hidden": 16, "train.epochs": 3, "train.batch_size": 256, "train.threads": 1,
        "train.eval_every_steps": 7}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args(argv)
    sets = [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]
    failed = 0
    for i in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory() as out:
            proc = subprocess.run([sys.executable, "-m", "dlf", "train", "--out", f"{out}/run", "--nproc", "2",
                                   "--quiet", *sets], capture_output=True, text=True)
        if proc.returncode != 0:
            failed += 1
            tail = [line for line in proc.stderr.splitlines() if "terminate" in line or "exitcode" in line][:3]
            print(f"run {i}: exit code {proc.returncode}: {' | '.join(tail)}", flush=True)
    print(f"{failed} of {args.runs} runs failed")


if __name__ == "__main__":
    main()
