"""Command line: a thin layer over the Python API (`dlf.train`)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="dlf: CTR prediction with DLF and baselines.")
err = Console(stderr=True)


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def train(
    dataset: Optional[str] = typer.Option(None, help="Dataset name (built in: synthetic)."),
    model: Optional[str] = typer.Option(None, help="Registered model name (see `dlf models`)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file with model/data/train sections."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override, e.g. --set model.layers=2 (repeatable)."),
    out: Optional[Path] = typer.Option(None, help="Run directory for config, weights and metrics."),
    quiet: bool = typer.Option(False, help="No progress bar."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this directory from its newest "
                                          "valid checkpoint (uses its config.yaml; --set still applies)."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Train with N processes: runs torchrun --nproc-per-node N "
                              "(DistributedDataParallel, gloo on CPU, NCCL on GPU)."),
) -> None:
    """Train a model, evaluate it on the test split and print AUC / logloss."""
    import os

    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from dlf.train.distributed import torchrun_command

        raise typer.Exit(subprocess.call(torchrun_command(nproc, sys.argv[1:])))
    from dlf.api import train as run_train
    from dlf.config import ConfigError, load_config
    from dlf.train.checkpoint import CheckpointError
    from dlf.train.trainer import TrainingError

    overrides = list(set_) + (["train.progress=false"] if quiet else [])
    try:
        if resume is not None:
            if config is not None or model is not None or dataset is not None:
                _fail("--resume continues a run with its own config.yaml; only --set/--quiet may be added")
            run_config = resume / "config.yaml"
            cfg = load_config(run_config, overrides) if run_config.is_file() else None
            metrics = run_train(cfg, resume=resume)
            out = resume
        else:
            cfg = load_config(config, overrides, model=model, dataset=dataset)
            metrics = run_train(cfg, out=out)
    except (ConfigError, TrainingError, CheckpointError) as exc:
        _fail(str(exc))
    if os.environ.get("RANK", "0") != "0":
        return
    table = Table(title=f"{metrics['model']} on {metrics['dataset']} (test split)")
    for col in ("", "AUC", "logloss"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row(metrics["model"], f"{metrics['test']['auc']:.4f}", f"{metrics['test']['logloss']:.4f}")
    if "oracle_test" in metrics:
        o = metrics["oracle_test"]
        table.add_row("oracle (true probabilities)", f"{o['auc']:.4f}", f"{o['logloss']:.4f}")
    Console().print(table)
    if out is not None:
        Console().print(f"run directory: {out}")


@app.command()
def models() -> None:
    """List the registered models."""
    from dlf.models.registry import available_models, get_entry

    for name in available_models():
        Console().print(f"{name:<12} {get_entry(name).description}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
