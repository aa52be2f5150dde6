"""Training step time of DLF as committed at another revision against the working tree's, in one process.

A change to src/dlf/models/dlf.py is timed against the same file at REV: both versions of the model are built in this
process on the same Criteo-shaped batches (train_speed.py's data and sizes) and stepped in turn, round by round
(the order alternates), so machine drift and the other cores' load fall on both alike. Prints each version's median
step time and the per-round ratio new / old, for dlf_concat and dlf, and each version's attention / concat ratio:

    python benchmarks/model_ab.py --rev 412c85e --batch-size 10000 --rounds 10
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_speed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def model_module_at(rev: str):
    """src/dlf/models/dlf.py as committed at `rev`, imported as its own module (its registry entries are not used)."""
    text = subprocess.run(["git", "show", f"{rev}:src/dlf/models/dlf.py"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "dlf_at_rev.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("dlf_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rev", required=True, help="the git revision whose dlf.py is the baseline ('old')")
    ap.add_argument("--batch-size", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=10, help="timed rounds (each steps every model once)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "dlf-bench-data")
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F

    import dlf.models.dlf as current
    from dlf._runtime import autocast, reuse_freed_memory
    from dlf.models import get_entry

    torch.set_num_threads(args.threads)
    old = model_module_at(args.rev)
    folder = train_speed.ensure_data(args.cache, int(4 * args.batch_size / 0.98) + 1, 350_000)
    fm, train = train_speed.load_data(folder, "array")
    reuse_freed_memory()  # as fit() does
    batches = list(train.batches(args.batch_size, shuffle=True, seed=1, epoch=0))[:4]
    device = torch.device("cpu")
    models = {}
    for name in ("dlf_concat", "dlf"):
        cfg = get_entry(name).default_config()
        for tag, module in (("old", old), ("new", current)):
            torch.manual_seed(0)
            model = module.DLF(fm, module.DLFConfig(**vars(cfg))).train()
            models[name, tag] = (model, torch.optim.Adam(model.parameters(), lr=1e-3))

    def step(model, optimizer, batch) -> float:
        t = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, args.precision):
            logits = model(batch)
        F.binary_cross_entropy_with_logits(logits.float(), batch.label).backward()
        optimizer.step()
        return time.perf_counter() - t

    seconds = {key: [] for key in models}
    for r in range(args.rounds + 1):  # round 0 warms up
        for key in list(models) if r % 2 == 0 else list(models)[::-1]:
            dt = step(*models[key], batches[r % len(batches)])
            if r:
                seconds[key].append(dt)

    def ratio(num: list[float], den: list[float]) -> str:
        per_round = [a / b for a, b in zip(num, den)]
        return (f"median {statistics.median(per_round):.3f}, mean {statistics.mean(per_round):.3f}, "
                f"range {min(per_round):.3f}-{max(per_round):.3f}")

    print(f"{args.precision}, batch {args.batch_size:,}, {args.rounds} rounds, {args.threads} threads; old = dlf.py at "
          f"{args.rev}, new = the working tree")
    for name in ("dlf_concat", "dlf"):
        o, n = seconds[name, "old"], seconds[name, "new"]
        print(f"  {name:10s} old {statistics.median(o):.3f} s, new {statistics.median(n):.3f} s per step; "
              f"new / old: {ratio(n, o)}")
    for tag in ("old", "new"):
        print(f"  attention / concat, {tag}: {ratio(seconds['dlf', tag], seconds['dlf_concat', tag])}")


if __name__ == "__main__":
    main()
