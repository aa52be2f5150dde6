"""What a run leaves for people to read: train_log.csv, TensorBoard events, learning-curve PNG,
and environment.json (package versions, git commit, data schema hash).

TensorBoard and matplotlib are optional at import time: without them the CSV and JSON are
still written and a one-line note says what was skipped.
"""
from __future__ import annotations

import csv
import io
import math
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from dlf._io import atomic_write_png, atomic_write_text

CONFIG_NAME = "config.yaml"
CSV_NAME = "train_log.csv"
PLOT_NAME = "learning_curves.png"
TB_DIR = "tensorboard"


def write_config(run_dir: Path, config: dict) -> None:
    """The run's resolved config, which `--resume` reads."""
    import yaml

    atomic_write_text(run_dir / CONFIG_NAME, yaml.safe_dump(config, sort_keys=False))


def write_csv(path: Path, history: list[dict]) -> None:
    """The whole history, rewritten atomically (so a resumed run's CSV has no duplicate rows). An undefined metric (the
    AUC of a one-class validation split) is an empty cell, as it is null in metrics.json, not 'nan'."""
    columns: list[str] = []
    for rec in history:
        columns += [k for k in rec if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for rec in history:
        writer.writerow({k: _cell(rec.get(k, "")) for k in columns})
    atomic_write_text(path, buf.getvalue())


def _cell(value):
    return "" if isinstance(value, float) and not math.isfinite(value) else value


class RunLogger:
    """CSV + TensorBoard for one run directory; a no-op when run_dir is None (or on ranks > 0)."""

    def __init__(self, run_dir: str | Path | None, resume_step: int | None = None, tensorboard: bool = True,
                 note=print):
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.tb = None
        if self.run_dir is None or not tensorboard:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is not installed
            note("tensorboard is not installed: no TensorBoard event files (pip install tensorboard)")
            return
        # a run resumed from the checkpoint of step S hides the events the killed run wrote after it (steps > S; the
        # evaluation of step S is in the checkpoint's history and stays)
        self.tb = SummaryWriter(str(self.run_dir / TB_DIR), purge_step=None if resume_step is None else resume_step + 1)

    def step(self, global_step: int, loss: float, lr: float) -> None:
        if self.tb is not None:
            self.tb.add_scalar("train/loss", loss, global_step)
            self.tb.add_scalar("train/lr", lr, global_step)

    def evaluation(self, record: dict, history: list[dict]) -> None:
        if self.run_dir is None:
            return
        write_csv(self.run_dir / CSV_NAME, history)
        if self.tb is not None:
            for key, value in record.items():
                if key.startswith("val_") and isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(f"valid/{key[4:]}", value, record["step"])
            self.tb.add_scalar("train/epoch_loss", record["train_loss"], record["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def plot_learning_curves(history: list[dict], path: str | Path, note=print) -> bool:
    """PNG with train loss, validation AUC and logloss, and learning rate against the step.

    Returns False (and writes nothing) when the history is empty, or when matplotlib is missing (said by `note`).
    """
    if not history:
        return False
    try:
        # a Figure of its own, not pyplot's: matplotlib.use('Agg', force=True) switched the backend of the whole
        # process, so a notebook that called dlf.train lost its inline (or interactive) plots
        from matplotlib import figure
    except ImportError:
        note(f"matplotlib is not installed: no {Path(path).name} (pip install matplotlib)")
        return False
    steps = [r["step"] for r in history]
    fig = figure.Figure(figsize=(16, 3.6))
    axes = fig.subplots(1, 4)
    panels = [("train loss", "train_loss", None), ("validation AUC", "val_auc", None),
              ("validation logloss", "val_logloss", None), ("learning rate", "lr", "log")]
    for ax, (title, key, scale) in zip(axes, panels):
        ax.plot(steps, [r.get(key, float("nan")) for r in history], marker="o")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if scale:
            ax.set_yscale(scale)
    best = [r["step"] for r in history if r.get("best")]
    if best:
        for ax in axes[1:3]:
            ax.axvline(best[-1], color="tab:green", linestyle="--", linewidth=1, label="best")
        axes[1].legend(loc="lower right")
    fig.tight_layout()
    atomic_write_png(fig, path)
    return True


def _version(dist_name: str) -> str | None:
    try:
        return metadata.version(dist_name)
    except metadata.PackageNotFoundError:
        return None


def git_commit(start: str | Path) -> str | None:
    """The commit of the git checkout holding `start` (None outside git or without git)."""
    try:
        out = subprocess.run(["git", "-C", str(start), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    try:  # git status can take longer than the timeout on a large checkout: the commit without the mark, no traceback
        dirty = subprocess.run(["git", "-C", str(start), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return out.stdout.strip() + "-unknown-dirty"
    return out.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def environment(schema_hash: str | None = None, world_size: int = 1, device: str = "cpu",
                threads: int | None = None) -> dict:
    import dlf
    import torch

    from dlf._runtime import malloc_library

    packages = {name: _version(name) for name in
                ("dlf", "torch", "numpy", "safetensors", "pyyaml", "rich", "typer", "tensorboard", "matplotlib")}
    return {"dlf": dlf.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "executable": sys.executable, "packages": packages, "torch": torch.__version__,
            "cuda": torch.version.cuda, "device": device, "torch_threads": threads or torch.get_num_threads(),
            "world_size": world_size, "malloc": malloc_library(), "git_commit": git_commit(Path(dlf.__file__).parent),
            "data_schema_hash": schema_hash}
