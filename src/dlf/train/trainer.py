"""Training loop: Adam + BCE, gradient clipping, per-epoch validation, lr decay on
plateau, early stopping with the best weights restored."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from dlf.data.dataset import ArrayDataset
from dlf.train.metrics import classification_metrics


class TrainingError(RuntimeError):
    pass


def monitor_value(metrics: dict, monitor: str) -> float:
    """Higher is better: auc-logloss (the authors' choice), auc, or -logloss."""
    return {"auc-logloss": lambda m: m["auc"] - m["logloss"],
            "auc": lambda m: m["auc"],
            "logloss": lambda m: -m["logloss"]}[monitor](metrics)


@dataclass
class PlateauController:
    """lr x decay after each evaluation without improvement; stop after `patience` of them."""

    decay: float
    patience: int
    min_lr: float
    best: float = -math.inf
    bad_epochs: int = 0
    improved: bool = field(default=False, init=False)

    def step(self, value: float, optimizer: torch.optim.Optimizer) -> bool:
        """Record one validation value; returns True when training should stop."""
        self.improved = value > self.best
        if self.improved:
            self.best, self.bad_epochs = value, 0
            return False
        self.bad_epochs += 1
        for group in optimizer.param_groups:
            group["lr"] = max(group["lr"] * self.decay, self.min_lr)
        return self.bad_epochs >= self.patience


@torch.no_grad()
def predict_proba(model: nn.Module, data: ArrayDataset, batch_size: int) -> np.ndarray:
    model.eval()
    out = np.empty(len(data), dtype=np.float32)
    pos = 0
    for batch in data.batches(batch_size):
        p = torch.sigmoid(model(batch).float()).numpy()
        out[pos:pos + len(p)] = p
        pos += len(p)
    return out


def evaluate(model: nn.Module, data: ArrayDataset, batch_size: int) -> dict:
    probs = predict_proba(model, data, batch_size)
    return classification_metrics(data.label, probs, data.group)


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:,.0f} samples/s"),
                    TimeRemainingColumn(), console=console, disable=not enabled, transient=True)


def fit(model: nn.Module, train: ArrayDataset, valid: ArrayDataset, cfg, console: Console | None = None) -> dict:
    """Train `model` in place; returns {'history': [...], 'best_epoch': int, 'train_seconds': float}."""
    console = console or Console(soft_wrap=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    plateau = PlateauController(cfg.lr_decay, cfg.patience, cfg.min_lr)
    history, best_state, best_epoch = [], None, 0
    started = time.perf_counter()
    steps_per_epoch = train.num_batches(cfg.batch_size)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        epoch_start, seen, loss_sum = time.perf_counter(), 0, 0.0
        with _progress(console, cfg.progress) as bar:
            task = bar.add_task(f"epoch {epoch}", total=steps_per_epoch, loss=0.0, rate=0.0)
            for step, batch in enumerate(train.batches(cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch)):
                optimizer.zero_grad(set_to_none=True)
                loss = F.binary_cross_entropy_with_logits(model(batch), batch.label)
                if not torch.isfinite(loss):
                    raise TrainingError(f"training loss became {loss.item()} at epoch {epoch}, step {step + 1}; "
                                        f"lower train.lr (now {optimizer.param_groups[0]['lr']:g}) or check inputs")
                loss.backward()
                if cfg.clip_norm > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
                optimizer.step()
                seen += len(batch)
                loss_sum += loss.item() * len(batch)
                bar.update(task, advance=1, loss=loss_sum / seen, rate=seen / (time.perf_counter() - epoch_start))
        train_time = time.perf_counter() - epoch_start
        val = evaluate(model, valid, cfg.eval_batch_size)
        lr = optimizer.param_groups[0]["lr"]
        stop = plateau.step(monitor_value(val, cfg.monitor), optimizer)
        record = {"epoch": epoch, "train_loss": loss_sum / seen, "lr": lr, "samples_per_s": seen / train_time,
                  **{f"val_{k}": v for k, v in val.items()}}
        history.append(record)
        console.print(f"epoch {epoch:>2}  loss {record['train_loss']:.4f}  val AUC {val['auc']:.4f}  "
                      f"val logloss {val['logloss']:.4f}  lr {lr:.0e}  {record['samples_per_s']:,.0f} samples/s"
                      + ("  *" if plateau.improved else ""))
        if plateau.improved:
            best_state, best_epoch = copy.deepcopy(model.state_dict()), epoch
        if stop:
            console.print(f"early stop: no improvement for {cfg.patience} epoch(s); restoring epoch {best_epoch}")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"history": history, "best_epoch": best_epoch, "train_seconds": time.perf_counter() - started}
