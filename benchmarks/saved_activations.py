"""What the autograd graph of one training forward pass keeps for the backward pass, tensor by tensor.

Groups the saved tensors (distinct storages, parameters excluded) by the module that saved them first and by their
per-sample shape, and prints bytes per sample, largest first. The total is train_speed.py's "act GB" at the same
batch size (autocast's low-precision copies of the weights are kept once per batch, so the bytes per sample fall
slightly with the batch size). Same Criteo-shaped data and model sizes as train_speed.py:

    python benchmarks/saved_activations.py --model dlf --precision bf16
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_speed  # noqa: E402


def saved_by_module(model, batch, device, precision: str) -> collections.Counter:
    """{(module, per-sample shape, dtype): bytes} of the storages one forward pass keeps for the backward pass."""
    import torch

    from dlf._runtime import autocast

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    current = ["(model)"]  # the module whose forward is running
    hooks = []
    for name, module in model.named_modules():
        hooks.append(module.register_forward_pre_hook(lambda m, args, name=name: current.append(name or "(model)")))
        hooks.append(module.register_forward_hook(lambda m, args, out: current.pop() and None))
    seen, groups = set(), collections.Counter()

    def keep(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params and storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            layer = re.sub(r"layers\.[1-9]\d*", "layers.1+", current[-1])  # the layers after the first, summed
            groups[(layer, tuple(t.shape[1:]), str(t.dtype).removeprefix("torch."))] += storage.nbytes()
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), autocast(device, precision):
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return groups


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="dlf")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--batch-size", type=int, default=10000, help="rows in the measured forward pass")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="model config override, as train_speed.py's --set")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "dlf-bench-data")
    args = ap.parse_args(argv)

    import torch
    torch.manual_seed(0)
    folder = train_speed.ensure_data(args.cache, int(args.batch_size / 0.98) + 1, 350_000)  # 98% is the train split
    fm, train = train_speed.load_data(folder, "array")
    job = {"set": train_speed.parse_sets(ap, args.set), "device": "cpu", "compile": False,
           "embedding_optimizer": "dense"}
    model, _, _, _ = train_speed.build_for_job(job, args.model, fm)
    batch = next(train.batches(args.batch_size, shuffle=False, seed=0, epoch=0))
    assert len(batch.label) == args.batch_size
    groups = saved_by_module(model, batch, torch.device("cpu"), args.precision)
    total = sum(groups.values()) / args.batch_size
    print(f"{args.model} {args.precision}: {total / 1e3:.1f} KB per sample kept for the backward pass, "
          f"{total * args.batch_size / 1e9:.2f} GB at batch {args.batch_size:,}")
    print(f"{'KB/sample':>9}  module (first to save it), per-sample shape, dtype")
    for (module, shape, dtype), nbytes in groups.most_common(args.top):
        print(f"{nbytes / args.batch_size / 1e3:9.2f}  {module} {shape} {dtype}")


if __name__ == "__main__":
    main()
