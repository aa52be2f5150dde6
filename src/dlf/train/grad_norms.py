"""Per-branch and per-layer gradient norms, written by the trainer every N steps.

`train.grad_norm_every_steps=N` makes `fit` append to RUN/grad_norms.csv, every N optimiser steps, one
row per parameter group: the gradient norm before clipping (after loss-scale removal), its RMS
(norm / sqrt(#values), comparable between groups of different sizes) and the parameter norm.
`dlf analyze RUN` plots the file.

Groups come from parameter names (no model imports this module):
  * a parameter under a ModuleList child, `LIST.i.SUB...`, belongs to group SUB (layer i + 1) for
    DLF-style layers (`layers.i`), with the released code's names mapped to the paper's branches:
    fmb -> beta, fmb_x0 and x0_change_projection -> alpha, lcb -> gamma, residual_projection ->
    residual (fusion, gate, norm keep their names); other lists give group LIST (layer i + 1), e.g.
    DCNv2's `cross` layers;
  * anything else belongs to its top-level module (layer 0): `embedding`, `head`, `dnn`, DeepFM's
    `linear` (the FM's first-order weights; its second-order term has no weights of its own, it
    reads the shared embedding), FinalMLP's `mlp1` / `mlp2` / `gate1` / `gate2` / `fusion`.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch
from torch import nn

from dlf._io import atomic_write_text

COLUMNS = ["step", "epoch", "group", "layer", "params", "grad_norm", "grad_rms", "param_norm"]
BRANCH_NAMES = {"fmb": "beta", "fmb_x0": "alpha", "x0_change_projection": "alpha", "lcb": "gamma",
                "residual_projection": "residual"}


def parameter_groups(model: nn.Module) -> dict[tuple[str, int], list[nn.Parameter]]:
    """(group, layer) -> trainable parameters, in first-seen order; layer 0 = not part of a layer stack."""
    children = dict(model.named_children())
    groups: dict[tuple[str, int], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        parts = name.split(".")
        top = children.get(parts[0])
        if isinstance(top, nn.ModuleList) and len(parts) >= 3 and parts[1].isdigit():
            if parts[0] == "layers":
                key = (BRANCH_NAMES.get(parts[2], parts[2]), int(parts[1]) + 1)
            else:
                key = (parts[0], int(parts[1]) + 1)
        else:
            key = (parts[0] if len(parts) > 1 else "other", 0)
        groups.setdefault(key, []).append(p)
    return groups


@torch.no_grad()
def group_norms(groups: dict[tuple[str, int], list[nn.Parameter]]) -> list[dict]:
    """One row per group: params, grad_norm, grad_rms, param_norm (groups with no gradient yet: norm 0)."""
    rows = []
    for (group, layer), params in groups.items():
        numel = sum(p.numel() for p in params)
        grad_sq = sum(float(p.grad.detach().float().pow(2).sum()) for p in params if p.grad is not None)
        param_sq = sum(float(p.detach().float().pow(2).sum()) for p in params)
        rows.append({"group": group, "layer": layer, "params": numel, "grad_norm": math.sqrt(grad_sq),
                     "grad_rms": math.sqrt(grad_sq / max(numel, 1)), "param_norm": math.sqrt(param_sq)})
    return rows


class GradNormLogger:
    """Appends group norms to a CSV every `every` steps. On resume, rows after the checkpoint are dropped
    (they are logged again as the run replays those steps)."""

    def __init__(self, path: str | Path, model: nn.Module, every: int, resume_step: int | None = None):
        self.path, self.every = Path(path), int(every)
        self.groups = parameter_groups(model)
        kept = []
        if resume_step is not None and self.path.is_file():
            text = self.path.read_text()
            if not text.endswith("\n"):  # the kill cut the last row short (its step too: '1' of '12', or ''): drop it
                text = text[:text.rfind("\n") + 1]
            kept = [r for r in csv.DictReader(io.StringIO(text, newline="")) if int(r["step"]) <= resume_step]
        # rewritten atomically: a kill during the rewrite must not lose the rows kept from before the checkpoint
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(self.path, buf.getvalue())

    def maybe_log(self, step: int, epoch: int) -> bool:
        """Log the current gradients as those of optimiser step `step` when it is a multiple of `every`."""
        if step % self.every:
            return False
        rows = group_norms(self.groups)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            for r in rows:
                writer.writerow({"step": step, "epoch": epoch, **{k: (f"{v:.6g}" if isinstance(v, float) else v)
                                                                  for k, v in r.items()}})
        return True


def read_grad_norms(path: str | Path) -> list[dict]:
    """The rows of a grad_norms.csv with numbers parsed; a row that is not (a line cut short by a killed run) is a
    ValueError naming its line and column."""
    rows = []
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        for r in reader:
            for k, number in [(k, int) for k in ("step", "epoch", "layer", "params")] + \
                              [(k, float) for k in ("grad_norm", "grad_rms", "param_norm")]:
                try:
                    r[k] = number(r[k])
                except (KeyError, TypeError, ValueError):
                    raise ValueError(f"line {reader.line_num}: expected {'an integer' if number is int else 'a number'}"
                                     f" in column {k!r}, got {r.get(k)!r}") from None
            rows.append(r)
    return rows
