"""The Python API the CLI wraps: `dlf.train(config)` trains, evaluates and writes a run directory."""
from __future__ import annotations

import dataclasses
import math
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.markup import escape
from safetensors.torch import save as st_save

from dlf._io import atomic_write_bytes, atomic_write_json
from dlf.config import RunConfig, from_dict, load_config
from dlf.data.synthetic import generate
from dlf.models import build_model
from dlf.train.metrics import classification_metrics
from dlf.train.checkpoint import CheckpointError, data_identity, list_checkpoints, load_latest
from dlf.train.distributed import DeviceError, DistContext, rank_seed
from dlf.train.logging import environment, plot_learning_curves, write_config
from dlf.train.trainer import CHECKPOINT_DIR, TrainingError, check_resume, check_setup, evaluate, fit


def _resolve(config) -> RunConfig:
    if isinstance(config, RunConfig):  # checked again: `cfg.train.batch_size = 0` after load_config skipped the checks
        return from_dict(config.to_dict())  # (a ZeroDivisionError traceback; a string lr failed inside torch)
    if config is None:
        return load_config()
    if isinstance(config, (str, Path)):
        return load_config(config)
    if isinstance(config, dict):
        return from_dict(config)
    raise TypeError(f"config must be a RunConfig, dict or YAML path, got {type(config).__name__}")


def train(config=None, out: str | Path | None = None, console: Console | None = None,
          resume: str | Path | None = None) -> dict:
    """Train and evaluate one model; returns the metrics dict (also written to OUT/metrics.json).

    config: a RunConfig (load_config), a dict of model/data/train sections, or a YAML path; None: the defaults.
    out: the run directory (config.yaml, metrics.json, model.safetensors, checkpoints); None writes nothing.
    console: where progress and results print (rich.console.Console(quiet=True) silences them).
    resume: a run directory written by an earlier (possibly killed) call; training continues
    from its newest valid checkpoint, with the run's config.yaml unless `config` is given.
    Under torchrun (WORLD_SIZE > 1) this runs DistributedDataParallel; rank 0 writes the files.

    The dict: model and dataset (names), parameters, test {auc, logloss, calibration} of the best weights (NaN where
    undefined, e.g. the AUC of a one-class test split; null in metrics.json), oracle_test (synthetic data: the true
    probabilities' metrics), history (one entry per evaluation: epoch, step, train_loss, lr, samples_per_s, val_*,
    best), best_epoch, best_step, epochs_run, global_steps, train_seconds, world_size, and run_dir when `out` is
    given. The trained model (best weights): dlf.load_run_model(out).
    Raises ConfigError (a bad config), DataError or TrainingError (bad data, a failed run): one line each.
    """
    # '~' as a shell would: from Python (a notebook), out="~/runs/x" made a folder named '~' in the working directory
    out = Path(out).expanduser() if out is not None else None
    if resume is not None:
        resume = Path(resume).expanduser()
        if out is not None and out.resolve() != resume.resolve():
            raise TrainingError(f"resume writes into the run it continues ({resume}); drop --out or make it the same")
        if not (resume / "config.yaml").is_file():
            raise TrainingError(f"cannot resume: {resume / 'config.yaml'} does not exist (not a dlf run directory?)")
        out = resume
        if config is None:
            config = resume / "config.yaml"
    cfg = _resolve(config)
    if cfg.data.path:  # the run's config.yaml then names the dataset from any directory; '~' as a shell would
        path = os.path.abspath(os.path.expanduser(cfg.data.path))  # (data.path: ~/data/criteo in a YAML file)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=path))
    try:
        dist = DistContext.from_env(cfg.train.device)
    except DeviceError as exc:  # a one-line error in the CLI, not a traceback
        raise TrainingError(str(exc)) from None
    threads = torch.get_num_threads()
    # the run reseeds the global generators with train.seed: the caller's streams come back after it (a notebook
    # drawing from np.random between runs drew the same numbers after every run)
    rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    dtype = torch.get_default_dtype()
    try:
        # float32 weights and gradients on, whatever the caller set for its own work (a notebook's
        # torch.set_default_dtype(torch.float64) or torch.set_grad_enabled(False) failed inside torch: "expected
        # scalar type Double but found Float", "element 0 of tensors does not require grad")
        torch.set_default_dtype(torch.float32)
        with torch.enable_grad():
            return _train(cfg, out, console, resume, dist)
    finally:
        dist.close()
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)  # train.threads is this run's: a later call with threads=0 gets torch's default
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])


def load_data(cfg: RunConfig):
    """The train/valid/test splits `cfg.data` names: a processed dataset, or the built-in synthetic one."""
    from dlf.data.schema import DataError
    from dlf.data.store import load_dataset
    try:  # (synthetic: which fields may interact is drawn, so too few for data.synthetic.pairs shows only here)
        return load_dataset(cfg.data.path) if cfg.data.dataset == "processed" else generate(cfg.data.synthetic)
    except DataError as exc:
        raise TrainingError(str(exc)) from None


def _is_run_dir(out: Path) -> bool:
    """A folder a dlf run wrote: its config.yaml (the first file a run writes) holds a run config."""
    try:
        config = yaml.safe_load((out / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and {"model", "data", "train"} <= set(config)


def _writable_run_dir(out: Path, fresh: bool = True) -> None:
    """Create the run directory, or say in one line why it cannot be (was a FileExistsError / PermissionError
    traceback, after the data had been loaded). A fresh run refuses a non-empty folder that is not a dlf run: it
    overwrote config.yaml and metrics.json in e.g. `--out .`."""
    if out.exists() and not out.is_dir():
        raise TrainingError(f"run directory {out} (--out) is a file, not a directory; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):  # a unique name: every rank probes
            pass
        # the write probes and atomic-write temporaries of this run's other processes are not the user's files
        found = [] if not fresh or _is_run_dir(out) else sorted(
            p.name for p in out.iterdir()
            if not (p.name.startswith(".write-test-") or (p.name[:1] == "." and p.name.endswith(".tmp"))))
    except OSError as exc:
        raise TrainingError(f"cannot write the run directory {out} (--out): {exc.strerror or exc}") from None
    if found:
        listing = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise TrainingError(f"run directory {out} (--out) is not empty and is not a dlf run (it holds {listing}); "
                            "use an empty or new folder")


def _train(cfg: RunConfig, out: Path | None, console, resume: Path | None, dist: DistContext) -> dict:
    console = console or Console(soft_wrap=True, quiet=not dist.is_main)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed % 2**32)
    random.seed(cfg.train.seed)
    checkpoint = None
    if out is not None and resume is not None:
        checkpoint = load_latest(out / CHECKPOINT_DIR,
                                 warn=lambda m: console.print(f"[yellow]warning:[/yellow] {escape(m)}"))
        if checkpoint is None:
            console.print(f"no checkpoint in {out / CHECKPOINT_DIR} yet: starting the run from the beginning",
                          markup=False)
        else:
            check_resume(checkpoint, cfg.train)  # refused before the data is loaded; fit runs the rest
    elif out is not None and list_checkpoints(out / CHECKPOINT_DIR):
        raise TrainingError(f"{out} already holds checkpoints of a run; continue it with --resume {out} "
                            "or choose another --out")

    check_setup(cfg.train, dist)
    if out is not None:  # before the data is loaded: a bad --out fails at once, on every rank (not rank 0 alone,
        _writable_run_dir(out, fresh=resume is None)  # which left the others to die in their first collective)
    data = load_data(cfg)
    model = build_model(cfg.model_name, data.feature_map, cfg.model)
    if dist.enabled:  # identical initial weights on every rank, then per-rank dropout streams
        torch.manual_seed(rank_seed(cfg.train.seed, dist.rank))
    schema_hash = data.feature_map.meta.get("schema_hash")
    if out is not None and dist.is_main:
        if checkpoint is None:  # (a resume writes its config once its checkpoint passed fit's checks)
            write_config(out, cfg.to_dict())
            data.feature_map.save(out / "feature_map.json")
        env = environment(schema_hash, dist.world, str(dist.device), cfg.train.threads or None)
        atomic_write_json(out / ("environment.json" if resume is None else "environment.resumed.json"), env)
    n_params = sum(p.numel() for p in model.parameters())
    console.print(f"model {cfg.model_name}: {n_params:,} parameters; data {cfg.data.dataset}: "
                  f"{len(data.train):,} train / {len(data.valid):,} valid / {len(data.test):,} test rows")

    try:
        result = fit(model, data.train, data.valid, cfg.train, console, run_dir=out, config=cfg.to_dict(),
                     resume=checkpoint, dist=dist, data_id=data_identity(data.feature_map.meta))
    except CheckpointError as exc:
        raise TrainingError(str(exc)) from None
    test = evaluate(model, data.test, cfg.train.eval_batch_size, dist, cfg.train.precision)
    undefined = [k for k, v in test.items() if not math.isfinite(v)]
    if undefined:  # e.g. the AUC of a one-class test split: say so rather than print 'nan' as a result
        console.print(f"[yellow]warning:[/yellow] test {', '.join(undefined)} undefined on the test split "
                      f"({len(data.test):,} rows, {int(np.count_nonzero(data.test.label)):,} positive); "
                      "written as null in metrics.json", highlight=False)
    epochs_run = len({r["epoch"] for r in result["history"]})
    metrics = {"model": cfg.model_name, "dataset": cfg.data.dataset, "parameters": n_params,
               "best_epoch": result["best_epoch"], "best_step": result["best_step"], "epochs_run": epochs_run,
               "global_steps": result["global_step"], "world_size": result["world_size"],
               "replicas_in_sync": result["replicas_in_sync"], "data_schema_hash": schema_hash,
               "train_seconds": result["train_seconds"], "test": test, "history": result["history"]}
    if data.test.prob is not None:
        metrics["oracle_test"] = classification_metrics(data.test.label, data.test.prob)

    if out is not None and dist.is_main:
        # atomically, as the checkpoints: an interrupted or failed write leaves no temporary file behind
        atomic_write_bytes(out / "model.safetensors",
                           st_save({k: v.contiguous() for k, v in model.state_dict().items()}))
        try:  # not fatal: a picture failing (matplotlib, fonts) lost the weights and metrics written after it
            plot_learning_curves(result["history"], out / "learning_curves.png", note=console.print)
        except Exception as exc:  # noqa: BLE001
            console.print(f"[yellow]warning:[/yellow] learning_curves.png not written "
                          f"({type(exc).__name__}: {escape(str(exc))})",
                          highlight=False)
        # last: metrics.json marks a finished run (dlf bench skips it), so Ctrl-C during the plot leaves a run that
        # --resume (or the bench's rerun) finishes, not one that stays without its learning_curves.png
        atomic_write_json(out / "metrics.json", metrics)  # NaN -> null
        metrics["run_dir"] = str(out)
    return metrics
