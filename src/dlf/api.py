"""The Python API the CLI wraps: `dlf.train(config)` trains, evaluates and writes a run directory."""
from __future__ import annotations

import dataclasses
import platform
from pathlib import Path

import torch
import yaml
from rich.console import Console
from safetensors.torch import save_file

import dlf
from dlf._io import atomic_write_json, atomic_write_text
from dlf.config import RunConfig, load_config
from dlf.data.synthetic import generate
from dlf.models import build_model
from dlf.train.metrics import classification_metrics
from dlf.train.trainer import evaluate, fit


def _resolve(config) -> RunConfig:
    if isinstance(config, RunConfig):
        return config
    if config is None:
        return load_config()
    if isinstance(config, (str, Path)):
        return load_config(config)
    if isinstance(config, dict):
        from dlf.config import from_dict
        return from_dict(config)
    raise TypeError(f"config must be a RunConfig, dict or YAML path, got {type(config).__name__}")


def train(config=None, out: str | Path | None = None, console: Console | None = None) -> dict:
    """Train and evaluate one model; returns the metrics dict (also written to OUT/metrics.json)."""
    cfg = _resolve(config)
    console = console or Console(soft_wrap=True)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)

    data = generate(cfg.data.synthetic)
    model = build_model(cfg.model_name, data.feature_map, cfg.model)
    n_params = sum(p.numel() for p in model.parameters())
    console.print(f"model {cfg.model_name}: {n_params:,} parameters; data {cfg.data.dataset}: "
                  f"{len(data.train):,} train / {len(data.valid):,} valid / {len(data.test):,} test rows")

    result = fit(model, data.train, data.valid, cfg.train, console)
    test = evaluate(model, data.test, cfg.train.eval_batch_size)
    metrics = {"model": cfg.model_name, "dataset": cfg.data.dataset, "parameters": n_params,
               "best_epoch": result["best_epoch"], "epochs_run": len(result["history"]),
               "train_seconds": result["train_seconds"], "test": test, "history": result["history"]}
    if data.test.prob is not None:
        metrics["oracle_test"] = classification_metrics(data.test.label, data.test.prob)

    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        atomic_write_json(out / "environment.json", {"dlf": dlf.__version__, "torch": torch.__version__,
                                                     "python": platform.python_version()})
        data.feature_map.save(out / "feature_map.json")
        tmp = out / ".model.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        tmp.replace(out / "model.safetensors")
        atomic_write_json(out / "metrics.json", metrics)
        metrics["run_dir"] = str(out)
    return metrics
