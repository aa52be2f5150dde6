"""Training loop: BCE with Adam/AdamW/Adagrad, optional L2 on embeddings and on the network,
optional sparse gradients and row-wise updates for the fused embedding tables, gradient clipping,
validation every epoch (and optionally every N steps), lr decay on plateau, early stopping with
the best weights restored, crash-safe checkpoints and exact resume, DistributedDataParallel under
torchrun, and CUDA bf16/fp16 autocast paths.

Exact resume: the shuffle of epoch e is a pure function of (seed, e), so the loader position is
just (epoch, step); a checkpoint holds weights, optimiser, plateau state, RNG states and that
position, and resuming skips the first `step` batches of `epoch`. Evaluation and checkpoints
never draw random numbers, so a resumed run ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from dlf._runtime import autocast, reuse_freed_memory
from dlf.data.dataset import ArrayDataset
from dlf.models import weights_mismatch
from dlf.models.embedding import FieldEmbedding
from dlf.train.checkpoint import DATA_KEYS, Checkpoint, TrainState, restore_rng, save_checkpoint
from dlf.train.distributed import DistContext, rank_seed
from dlf.train.logging import RunLogger, write_config
from dlf.train.metrics import classification_metrics
from dlf.train.rowwise import RowWiseAdagrad

CHECKPOINT_DIR = "checkpoints"


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

    def step(self, value: float, *optimizers: torch.optim.Optimizer) -> bool:
        """Record one validation value (a plateau decays every optimiser's lr); True when training should stop."""
        self.improved = value > self.best
        if self.improved:
            self.best, self.bad_epochs = value, 0
            return False
        self.bad_epochs += 1
        for group in (g for opt in optimizers for g in opt.param_groups):
            # min_lr is a floor for the decay, never a raise (a group may start below it: train.embedding_lr)
            group["lr"] = max(group["lr"] * self.decay, min(self.min_lr, group["lr"]))
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best if math.isfinite(self.best) else None, "bad_epochs": self.bad_epochs,
                "improved": self.improved}

    def load_state_dict(self, d: dict) -> None:
        self.best = -math.inf if d.get("best") is None else float(d["best"])
        self.bad_epochs = int(d.get("bad_epochs", 0))
        self.improved = bool(d.get("improved", False))


# ---------------------------------------------------------------- optimiser and regularisation

def is_embedding_param(name: str, module_types: dict) -> bool:
    owner = name.rsplit(".", 1)[0] if "." in name else ""
    return isinstance(module_types.get(owner), nn.Embedding) or type(module_types.get(owner)).__name__ in (
        "FieldEmbedding",) or name.startswith("embedding.")


def split_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(embedding parameters, network weight matrices); biases and norm scales get no L2."""
    modules = dict(model.named_modules())
    emb, net = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if is_embedding_param(name, modules):
            emb.append(p)
        elif p.dim() > 1 and not name.endswith("bias"):  # DLF's gate bias is tokens x 1, and net_l2 pulled it to 0
            net.append(p)
    return emb, net


def build_optimizer(model: nn.Module, cfg, exclude: list[nn.Parameter] = ()) -> torch.optim.Optimizer:
    """`cfg.optimizer` over the trainable parameters of `model`, less `exclude` (the sparse tables)."""
    skip = {id(p) for p in exclude}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in skip]
    name = getattr(cfg, "optimizer", "adam")
    wd = getattr(cfg, "weight_decay", 0.0)
    # fused: one kernel per step over all parameters instead of ~10 full passes (the same update up to float
    # rounding); on CPU with a ~1M-row embedding table, Adam's step drops from ~1 s to ~0.2 s on 2 cores.
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=wd, fused=fused or None)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=wd, fused=fused or None)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=wd, fused=fused or None)
    raise TrainingError(f"train.optimizer: unknown optimiser {name!r}; use adam, adamw or adagrad")


def sparse_embeddings(model: nn.Module) -> list[FieldEmbedding]:
    """train.sparse_embedding: switch every fused embedding table of `model` to sparse gradients."""
    found = [m for m in model.modules() if isinstance(m, FieldEmbedding)]
    if not found:
        raise TrainingError(f"train.sparse_embedding=true needs a model with a fused embedding table "
                            f"(dlf.models.embedding.FieldEmbedding); {type(model).__name__} has none")
    for m in found:
        m.sparse = True
    # the sparse optimisers build COO tensors; opting out of invariant checks explicitly (torch's default anyway)
    # keeps torch from warning about it on every run
    torch.sparse.check_sparse_tensor_invariants.disable()
    return found


def build_sparse_optimizer(tables: list[nn.Parameter], cfg) -> torch.optim.Optimizer:
    """Row-wise optimiser for tables with sparse gradients: only the rows in the batch (and their optimiser state)
    are read and written. With embedding_optimizer "auto", the counterpart of `cfg.optimizer`: SparseAdam is "lazy"
    Adam (a row's moments move only when the row is in a batch). None takes weight_decay (it stays with the dense
    optimiser)."""
    lr = getattr(cfg, "embedding_lr", 0.0) or cfg.lr
    if getattr(cfg, "embedding_optimizer", "auto") == "rowwise_adagrad":
        return RowWiseAdagrad(tables, lr=lr)
    name = getattr(cfg, "optimizer", "adam")
    if name in ("adam", "adamw"):
        return torch.optim.SparseAdam(tables, lr=lr)
    if name == "adagrad":  # sparse Adagrad updates exactly the rows dense Adagrad would change
        return torch.optim.Adagrad(tables, lr=lr, foreach=False)
    raise TrainingError(f"train.optimizer: unknown optimiser {name!r}; use adam, adamw or adagrad")


def l2_penalty(emb: list[nn.Parameter], net: list[nn.Parameter], cfg) -> torch.Tensor | None:
    """embedding_l2 * sum ||E||^2 + net_l2 * sum ||W||^2 (added to the mean BCE loss)."""
    terms = []
    if getattr(cfg, "embedding_l2", 0.0) > 0 and emb:
        terms.append(cfg.embedding_l2 * sum(p.pow(2).sum() for p in emb))
    if getattr(cfg, "net_l2", 0.0) > 0 and net:
        terms.append(cfg.net_l2 * sum(p.pow(2).sum() for p in net))
    return sum(terms) if terms else None


def rows_l2(embeddings: list[FieldEmbedding], batch, dist: DistContext | None = None) -> torch.Tensor:
    """Sum of squares of the table rows `batch` looks up, each row once: embedding_l2 under sparse gradients
    (a penalty on the whole table would give every row a gradient at every step). With several ranks, the rows of
    every rank's slice of the global batch: each rank's penalty gradient is then the same and their mean the 1-process
    run's (with its own slice's rows alone, a row only one rank looked up got half its penalty)."""
    dist = dist or DistContext()

    def looked_up(m: FieldEmbedding) -> torch.Tensor:
        rows = m.batch_rows(batch)
        return torch.unique(torch.cat(dist.all_gather(rows)).to(rows.device)) if dist.enabled else rows
    return sum(m.lookup(looked_up(m)).pow(2).sum() for m in embeddings)


@torch.no_grad()
def clip_grad_norm_(params, max_norm: float) -> torch.Tensor:
    """nn.utils.clip_grad_norm_ (same norm, same scaling) that also takes coalesced sparse gradients, which
    torch's rejects: a coalesced sparse gradient's norm and scaling are those of its values."""
    grads = [p.grad.values() if p.grad.is_sparse else p.grad for p in params if p.grad is not None]
    total = nn.utils.get_total_norm(grads)
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale)
    return total


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def predict_proba(model: nn.Module, data: ArrayDataset, batch_size: int, device: torch.device | None = None,
                  precision: str = "fp32") -> np.ndarray:
    model.eval()
    reuse_freed_memory()
    device = device or torch.device("cpu")
    out = np.empty(len(data), dtype=np.float32)
    pos = 0
    for batch in data.batches(batch_size):
        if device.type != "cpu":
            batch = batch.to(device)
        with autocast(device, precision):
            logits = model(batch)
        p = torch.sigmoid(logits.float()).cpu().numpy()
        out[pos:pos + len(p)] = p
        pos += len(p)
    return out


def evaluate(model: nn.Module, data: ArrayDataset, batch_size: int, dist: DistContext | None = None,
             precision: str = "fp32") -> dict:
    """Metrics on `data`; with several ranks each predicts its shard and predictions are gathered
    (every rank then computes the same metrics over all rows)."""
    dist = dist or DistContext()
    if not dist.enabled:
        probs = predict_proba(model, data, batch_size, dist.device, precision)
        return classification_metrics(data.label, probs, data.group)
    # rank 0's buffers (batch norm's running statistics), as DDP's next forward sets them: each rank's last training
    # forward updated its own copy (on CPU, without SyncBatchNorm, from its own slice), so the other ranks' shards were
    # predicted by models other than the one saved, and the best weights kept on those ranks differed too
    for buffer in model.buffers():
        if buffer.is_floating_point():  # (the others are counts and constants, the same on every rank)
            dist.broadcast_(buffer)
    part = data.shard(dist.rank, dist.world)
    probs = dist.all_gather_np(predict_proba(model, part, batch_size, dist.device, precision))
    labels = dist.all_gather_np(part.label)
    groups = None if part.group is None else dist.all_gather_np(part.group)
    return classification_metrics(labels, probs, groups)


def check_validation(valid: ArrayDataset, monitor: str) -> None:
    """Refuse a validation split that cannot drive early stopping: empty, or one class under an AUC monitor (AUC is
    undefined there: it was NaN, no evaluation ever counted as an improvement, and the run stopped after
    `patience` evaluations with nothing to restore)."""
    if len(valid) == 0:
        raise TrainingError("the validation split is empty: early stopping, lr decay and the choice of the best "
                            "weights need validation rows")
    positives = int(np.count_nonzero(valid.label))
    if monitor != "logloss" and positives in (0, len(valid)):
        raise TrainingError(f"train.monitor={monitor} needs both classes in the validation split, which has only "
                            f"label {int(positives > 0)} ({len(valid):,} rows): its AUC is undefined; use "
                            "train.monitor=logloss or a validation split with both classes")


def fmt_metric(value: float) -> str:
    """A metric for people: 'n/a' for an undefined one (the AUC of a one-class split) instead of 'nan'."""
    return f"{value:.4f}" if math.isfinite(value) else "n/a"


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:,.0f} samples/s"),
                    TimeRemainingColumn(), console=console, disable=not enabled, transient=True)


# ---------------------------------------------------------------- the loop

def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _rows(batch, start: int, step: int):
    take = lambda t: None if t is None else t[start::step]  # noqa: E731
    return type(batch)(take(batch.categorical), take(batch.numeric), take(batch.multi), take(batch.label),
                       take(batch.group))


def epoch_batches(train: ArrayDataset, global_batch: int, dist: DistContext, sharding: str, seed: int, epoch: int,
                  skip: int = 0):
    """This rank's batches of one epoch (a pure function of seed and epoch, so resume can skip ahead), less the
    first `skip` (resume: trained before the checkpoint), which the dataset leaves out without building them.

    sharding "batch": the global batch order is the same for every world size and each rank keeps
    a strided slice of every global batch, so N processes follow the 1-process trajectory (up to
    float summation order). "rows": `train` is already this rank's (strided) shard; it is shuffled on its own,
    with a seed of its own: with one seed for all, rank r's k-th row was always row (rank 0's k-th) + r, so every
    global batch held `world` neighbouring rows of the file together.
    """
    if sharding == "rows":
        return train.batches(global_batch // dist.world, shuffle=True, seed=rank_seed(seed, dist.rank), epoch=epoch,
                             skip=skip)
    batches = train.batches(global_batch, shuffle=True, seed=seed, epoch=epoch, skip=skip)
    if not dist.enabled:
        return batches
    return (_rows(b, dist.rank, dist.world) for b in batches)


def _apply_changed_hyperparameters(saved: dict, cfg, optimizer, sparse_optimizer, say) -> None:
    """load_state_dict restores the optimiser's saved lr and weight decay, so a train.lr, embedding_lr or
    weight_decay changed on resume was silently ignored. A changed value now replaces the saved (possibly decayed)
    one; an unchanged config keeps the saved state, so an unchanged resume stays exact."""
    changes = []
    if saved.get("lr") != cfg.lr:
        changes.append((f"train.lr {saved.get('lr')} -> {cfg.lr}", [optimizer], "lr", cfg.lr))
    table_lr = getattr(cfg, "embedding_lr", 0.0) or cfg.lr
    if sparse_optimizer is not None and (saved.get("embedding_lr") or saved.get("lr")) != table_lr:
        changes.append((f"embedding tables' lr -> {table_lr}", [sparse_optimizer], "lr", table_lr))
    if saved.get("weight_decay") != cfg.weight_decay:
        changes.append((f"train.weight_decay {saved.get('weight_decay')} -> {cfg.weight_decay}", [optimizer],
                        "weight_decay", cfg.weight_decay))
    for what, opts, key, value in changes:
        for group in (g for opt in opts for g in opt.param_groups):
            group[key] = value
        say(f"resume: {what} (replaces the checkpoint's value)", highlight=False)


def _check_data(resume: Checkpoint, data_id: dict) -> bool:
    """Refuse to resume on re-preprocessed data: its vocabulary sizes can all be unchanged (the weights load) while
    its ids mean other values, so training would go on from weights that no longer fit the inputs. True: the
    checkpoint cannot tell (written before checkpoints stored the data identity)."""
    if resume.data is None:
        return bool(data_id)
    if resume.data != data_id:
        show = lambda v: "none" if v is None else str(v)[:12]  # noqa: E731  (hashes: a prefix is enough to compare)
        changed = ", ".join(f"{k} {show(resume.data.get(k))} -> {show(data_id.get(k))}" for k in DATA_KEYS
                            if resume.data.get(k) != data_id.get(k))
        raise TrainingError(f"{resume.path} was trained on other data than this ({changed}; preprocessed again "
                            "since?): its ids would not mean what the weights learned; preprocess the data back as "
                            "it was, or start a fresh run (another --out)")
    return False


def _comparable(config: dict) -> dict:
    """The config as JSON sees it, less the keys that do not change what is computed (epochs only says when to
    stop: a run resumed with more epochs computes what an uninterrupted run with that many would; when checkpoints
    are written and model.checkpoint_layers, which recomputes the same values, do not either: a run killed for memory
    resumed with checkpoint_layers=true was told its result would not match, and it matched to the bit)."""
    d = json.loads(json.dumps(config))
    if d.get("data", {}).get("path"):  # `--resume RUN --data DIR` names the same folder relative to here
        d["data"]["path"] = os.path.realpath(d["data"]["path"])
    for key in ("epochs", "progress", "tensorboard", "log_every_steps", "keep_checkpoints", "grad_norm_every_steps",
                "checkpoint_every_steps"):
        d.get("train", {}).pop(key, None)
    d.get("model", {}).pop("checkpoint_layers", None)
    return d


def _changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key.path: old -> new' for every leaf that differs between two nested config dicts."""
    out = []
    for key in list(old) + [k for k in new if k not in old]:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a} -> {b}")
    return out


def check_setup(cfg, dist: DistContext) -> None:
    """The checks of the train config against the processes and device that need no data: run before the data
    is loaded (under torchrun started directly, a non-divisible batch failed only after every rank loaded it)."""
    if getattr(cfg, "precision", "fp32") == "fp16" and dist.device.type != "cuda":
        raise TrainingError("train.precision=fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    if cfg.batch_size % dist.world:
        raise TrainingError(f"train.batch_size={cfg.batch_size} must be divisible by the world size {dist.world}")


def check_resume(resume: Checkpoint, cfg) -> None:
    """The refusals of a resume that the train config alone decides: dlf.train runs them before it loads the data
    (fit runs them again, with the refusals that need the model and data)."""
    sparse = bool(getattr(cfg, "sparse_embedding", False))  # (a model without a fused table is refused in fit)
    if (resume.sparse_optimizer is not None) != sparse:
        raise TrainingError(f"{resume.path} was written with train.sparse_embedding={str(not sparse).lower()}; "
                            "resume with the same setting")
    saved_batch = resume.config.get("train", {}).get("batch_size", cfg.batch_size)
    if saved_batch != cfg.batch_size:  # the position (batches of this epoch to skip) and every step count are
        # in batches of the saved size: another size skips other rows and mixes two step sizes in one run
        raise TrainingError(f"{resume.path} was trained with train.batch_size={saved_batch}, resumed with "
                            f"{cfg.batch_size}: its position and step counts are in batches of {saved_batch}; "
                            f"resume with train.batch_size={saved_batch}, or start a fresh run (another --out)")


def fit(model: nn.Module, train: ArrayDataset, valid: ArrayDataset, cfg, console: Console | None = None, *,
        run_dir: str | Path | None = None, config: dict | None = None, resume: Checkpoint | None = None,
        dist: DistContext | None = None, data_id: dict | None = None) -> dict:
    """Train `model` in place (best weights restored at the end).

    run_dir: where checkpoints/, train_log.csv and tensorboard/ go (None: no files).
    config: the resolved run config, stored in each checkpoint.
    resume: a loaded checkpoint to continue from.
    dist: the process group context (world size 1 when None).
    data_id: checkpoint.data_identity() of the training data, stored in each checkpoint and checked on resume.
    Returns {'history', 'best_epoch', 'best_step', 'train_seconds', 'global_step', 'world_size',
    'replicas_in_sync'}.
    """
    dist = dist or DistContext()
    main = dist.is_main
    console = console or Console(soft_wrap=True)
    say = console.print if main else (lambda *a, **k: None)
    device = dist.device
    precision = getattr(cfg, "precision", "fp32")
    check_setup(cfg, dist)
    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt_dir = run_dir / CHECKPOINT_DIR if run_dir is not None else None

    # --- data: batch_size is the global batch; each rank trains on batch_size / world rows per step
    sharding = getattr(cfg, "ddp_sharding", "batch") if dist.enabled else "batch"
    train_rows = len(train)
    per_rank = cfg.batch_size // dist.world
    if sharding == "rows":  # each rank reads only its strided shard of the rows, shuffled on its own
        rank_rows = len(train) // dist.world  # shards differ by at most one row: same step count everywhere
        train = train.shard(dist.rank, dist.world)
        steps_per_epoch = rank_rows // per_rank + (rank_rows % per_rank >= 2)
    else:  # every rank draws the same global batch and keeps rows rank, rank+world, ...: world-size invariant
        steps_per_epoch = len(train) // cfg.batch_size + (len(train) % cfg.batch_size >= 2 * dist.world)
    # (a last partial batch is kept only if every rank gets >= 2 rows: BatchNorm cannot train on one row)
    if per_rank < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        # every step would fail inside torch with "Expected more than 1 value per channel when training"
        raise TrainingError(f"train.batch_size={cfg.batch_size} gives each of {dist.world} process(es) {per_rank} row "
                            "per step, and this model's BatchNorm layers cannot train on one row: use "
                            f"train.batch_size >= {2 * dist.world}")
    if steps_per_epoch == 0:  # each epoch would only re-evaluate the initial weights and print 'loss 0.0000'
        raise TrainingError(f"the training split has {train_rows:,} row(s): too few for one training step "
                            f"(at least 2 per process, {dist.world} process(es))")

    check_validation(valid, cfg.monitor)
    model.to(device)
    reuse_freed_memory()
    # train.sparse_embedding: the fused tables get sparse gradients and their own row-wise optimiser
    embeddings = sparse_embeddings(model) if getattr(cfg, "sparse_embedding", False) else []
    tables = [m.table for m in embeddings]
    emb_params, net_params = split_params(model)
    emb_params = [p for p in emb_params if all(p is not t for t in tables)]  # tables: rows_l2 instead
    optimizer = build_optimizer(model, cfg, exclude=tables)
    sparse_optimizer = build_sparse_optimizer(tables, cfg) if tables else None
    optimizers = [optimizer] + ([sparse_optimizer] if sparse_optimizer else [])
    plateau = PlateauController(cfg.lr_decay, cfg.patience, cfg.min_lr)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    state, best_state = TrainState(), None
    if resume is not None:
        check_resume(resume, cfg)
        unchecked_data = _check_data(resume, data_id or {})
        mismatch = weights_mismatch(model, resume.model)
        if mismatch:
            raise TrainingError(f"{resume.path}: its weights do not fit this {type(model).__name__} model "
                                f"(written by another model or model config?): {mismatch}")
        model.load_state_dict(resume.model)
        for opt, saved in ((optimizer, resume.optimizer), (sparse_optimizer, resume.sparse_optimizer)):
            if opt is None:
                continue
            if saved["param_groups"] and set(saved["param_groups"][0]) != set(opt.param_groups[0]):
                raise TrainingError(f"{resume.path} was written with another train.optimizer or "
                                    f"train.embedding_optimizer (it has no state for {type(opt).__name__}); "
                                    "resume with the same settings")
            opt.load_state_dict(saved)
        # the warnings after every refusal above: a refused resume is its error alone
        if unchecked_data:
            say(f"[yellow]warning:[/yellow] {resume.path.name} predates data checks: it cannot tell whether it was "
                "trained on this processed data", highlight=False)
        changed = _changes(_comparable(resume.config), _comparable(config)) if config is not None else []
        if changed:  # named: 'the config differs' alone left the user to diff the YAMLs
            say("[yellow]warning:[/yellow] the config differs from the one the checkpoint was written with "
                f"({escape(', '.join(changed))}); the result will not match an uninterrupted run", highlight=False)
        _apply_changed_hyperparameters(resume.config.get("train", {}), cfg, optimizer, sparse_optimizer, say)
        state = resume.state
        if not main:  # the checkpoint's running train loss is every rank's (see checkpoint): rank 0 carries it on
            state.loss_sum, state.seen = 0.0, 0
        plateau.load_state_dict(state.plateau)
        saved_monitor = resume.config.get("train", {}).get("monitor", cfg.monitor)
        if saved_monitor != cfg.monitor:  # its best value is on another scale: no evaluation could beat it, or all
            plateau.best, plateau.bad_epochs = -math.inf, 0
            say(f"resume: train.monitor {saved_monitor} -> {cfg.monitor}: the best value so far is forgotten, the "
                "next evaluation starts the comparison", highlight=False)
        if state.scaler and precision == "fp16":
            scaler.load_state_dict(state.scaler)
        best_state = resume.best
        if state.done and not state.stopped_early and state.epoch <= cfg.epochs:
            state.done = False  # it had used up its epochs, and train.epochs was raised: train on
        finished = ""
        if state.stopped_early:
            finished = "; training had already stopped early (no improvement), so it stays finished"
        elif state.done:
            finished = (f"; training had already finished its {state.epoch - 1} epoch(s) "
                        "(raise train.epochs to train longer)")
        elif state.epoch > cfg.epochs:
            finished = (f"; train.epochs={cfg.epochs} ends before this epoch, so nothing is trained (raise "
                        "train.epochs to finish it)")
        say(f"resuming from {resume.path.name}: epoch {state.epoch}, step {state.step}/{steps_per_epoch} "
            f"(global step {state.global_step})" + finished)
        if main and run_dir is not None and config is not None:  # the resumed run's settings (a --set train.epochs)
            write_config(run_dir, config)  # are its own from now on: a later plain --resume kept the old ones
        written_by = max(1, len(resume.rng.get("ranks", {})))  # a multi-process checkpoint has each rank's RNG
        if written_by != dist.world and not state.done:  # the process count is in no config: say it here
            say(f"[yellow]warning:[/yellow] {resume.path.name} was written by {written_by} process(es) and is "
                f"resumed with {dist.world}: the result will not match an uninterrupted run (resume with "
                f"--nproc {written_by} for that)")
    net = model
    if dist.enabled and device.type == "cuda" and getattr(cfg, "sync_batchnorm", True):
        # batch-norm statistics over the global batch (torch supports SyncBatchNorm on CUDA only;
        # on CPU each rank normalises with its own slice's statistics)
        net = model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if dist.enabled:
        # kept out of DDP: the sparse tables, whose sparse gradients it cannot all-reduce (see DistContext.mean_sparse),
        # and the parameters the model never uses on this data, whose gradients it would wait for (they never change,
        # and every rank built them from the same seed)
        unused = [p for m in model.modules() if isinstance(m, FieldEmbedding) for p in m.unused_parameters()]
        ignored = [n for n, p in model.named_parameters() if any(p is t for t in tables + unused)]
        if ignored:
            nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
        for t in tables:  # what DDP does for the parameters it manages
            dist.broadcast_(t.data)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    logger = RunLogger(run_dir if main else None, resume_step=state.global_step if resume else None,
                       tensorboard=getattr(cfg, "tensorboard", True), note=say)
    every_eval = getattr(cfg, "eval_every_steps", 0)
    every_ckpt = getattr(cfg, "checkpoint_every_steps", 0)
    log_every = max(1, getattr(cfg, "log_every_steps", 50))
    config = config or {}
    grad_log = None  # train.grad_norm_every_steps: per-branch / per-layer gradient norms (dlf.train.grad_norms)
    if main and run_dir is not None and getattr(cfg, "grad_norm_every_steps", 0):
        from dlf.train.grad_norms import GradNormLogger
        grad_log = GradNormLogger(run_dir / "grad_norms.csv", model, cfg.grad_norm_every_steps,
                                  resume_step=state.global_step if resume is not None else None)

    def checkpoint(batch) -> None:
        """Save the run's state (rank 0). `batch`: the last batch trained (None: none this epoch); the weights' logits
        on it must be finite, as the weights themselves."""
        state.plateau = plateau.state_dict()
        state.scaler = scaler.state_dict() if scaler.is_enabled() else {}
        if ckpt_dir is None:
            return
        # diverged weights would be the newest checkpoint, and every resume from it would stop again at its next
        # step, whatever train.lr it is given
        kept = ("not checkpointed, so the checkpoints written before stay the newest; lower train.lr "
                f"(now {optimizer.param_groups[0]['lr']:g}) and resume or start again")
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise TrainingError(f"the weights are not finite after step {state.global_step} (the update diverged): "
                                f"{kept}")
        if batch is not None and not finite_logits(batch):  # huge but finite weights (train.lr=1e30 on DLF)
            raise TrainingError(f"the weights give predictions that are not finite after step {state.global_step} "
                                f"(the update diverged): {kept}")
        rank_rng, rank_cuda_rng = dist.gather_rng() if dist.enabled else (None, None)
        local = state.loss_sum, state.seen
        loss_sum, seen = dist.all_sum(*local)  # this epoch's train loss so far, over every rank's rows
        state.loss_sum, state.seen = loss_sum, int(seen)
        if main:
            try:
                save_checkpoint(ckpt_dir, model_state=_unwrap(net).state_dict(), optimizer_state=optimizer.state_dict(),
                                sparse_optimizer_state=sparse_optimizer.state_dict() if sparse_optimizer else None,
                                state=state, config=config, best_state=best_state,
                                keep=getattr(cfg, "keep_checkpoints", 2),
                                rank_rng=rank_rng, rank_cuda_rng=rank_cuda_rng, data=data_id)
            except OSError as exc:  # disk full, not writable, a file named checkpoints: one line, not a traceback
                raise TrainingError(f"cannot write a checkpoint of step {state.global_step} into {ckpt_dir}: "
                                    f"{exc.strerror or exc}; the checkpoints written before are intact") from None
        state.loss_sum, state.seen = local
        dist.barrier()

    def finite_logits(batch) -> bool:
        """True when the model's logits on `batch` are finite; in eval mode, which draws no dropout and leaves the
        batch-norm statistics alone, so that training goes on exactly as without this check."""
        net.eval()
        with torch.no_grad(), autocast(device, precision):
            finite = bool(torch.isfinite(_unwrap(net)(batch)).all())
        net.train()
        return finite

    def run_eval(epoch_end: bool) -> bool:
        """Validate, record history, step the plateau controller; returns True to stop."""
        nonlocal best_state
        val = evaluate(_unwrap(net), valid, cfg.eval_batch_size, dist, precision)
        lr = optimizer.param_groups[0]["lr"]
        value = monitor_value(val, cfg.monitor)
        if not math.isfinite(value):  # check_validation made it defined: the predictions are NaN; counting it as
            # "no improvement" decayed the lr and stopped early, with the NaN as the only trace
            raise TrainingError(f"validation {cfg.monitor} is {value} at epoch {state.epoch}, step "
                                f"{state.global_step}: the model's predictions are not finite; lower train.lr "
                                f"(now {lr:g}) or check inputs")
        stop = plateau.step(value, *optimizers)
        loss_sum, seen = dist.all_sum(state.loss_sum, state.seen)  # every rank's rows: rank 0's alone were half
        record = {"epoch": state.epoch, "step": state.global_step, "epoch_end": epoch_end,
                  "train_loss": loss_sum / max(seen, 1), "lr": lr,
                  "samples_per_s": epoch_rate(),
                  **{f"val_{k}": v for k, v in val.items()}, "best": plateau.improved}
        state.history.append(record)
        where = f"epoch {state.epoch:>2}" + ("" if epoch_end else f" step {state.global_step}")
        gauc = f"val gAUC {fmt_metric(val['gauc'])}  " if "gauc" in val else ""  # data with a group column
        say(f"{where}  loss {record['train_loss']:.4f}  val AUC {fmt_metric(val['auc'])}  "
            f"val logloss {fmt_metric(val['logloss'])}  {gauc}lr {lr:.0e}  {record['samples_per_s']:,.0f} samples/s"
            + ("  *" if plateau.improved else ""), highlight=False)
        if plateau.improved:
            best_state = {k: v.detach().clone() for k, v in _unwrap(net).state_dict().items()}
            state.best_epoch, state.best_step = state.epoch, state.global_step
        logger.evaluation(record, state.history)
        if stop:
            say(f"early stop: no improvement in {cfg.patience} evaluation(s); restoring epoch {state.best_epoch} "
                f"(step {state.best_step})")
        net.train()
        return stop

    run_started = time.perf_counter()
    seconds_before = state.train_seconds
    epoch_started = [time.perf_counter(), 0]  # clock and rows seen when this process started the epoch

    def epoch_rate() -> float:
        return (state.seen - epoch_started[1]) * dist.world / max(time.perf_counter() - epoch_started[0], 1e-9)

    if resume is not None:
        restore_rng(resume.rng_for_rank(dist.rank, cfg.seed, device), device)
    try:
        while not state.done and state.epoch <= cfg.epochs:
            epoch, skip = state.epoch, state.step
            net.train()
            epoch_started[:] = [time.perf_counter(), state.seen]
            stop = False
            with _progress(console, cfg.progress and main) as bar:
                task = bar.add_task(f"epoch {epoch}", total=steps_per_epoch, completed=skip,
                                    loss=state.loss_sum / max(state.seen, 1), rate=0.0)
                batches = epoch_batches(train, cfg.batch_size, dist, sharding, cfg.seed, epoch, skip)
                batch = None
                for index, batch in enumerate(batches, start=skip):
                    if index >= steps_per_epoch:
                        break
                    if device.type != "cpu":
                        batch = batch.to(device)
                    for opt in optimizers:
                        opt.zero_grad(set_to_none=True)
                    with autocast(device, precision):
                        logits = net(batch)
                    loss = F.binary_cross_entropy_with_logits(logits.float(), batch.label)
                    # the step's one read of a device value (on a GPU, a wait for it): here, after the forward pass, so
                    # that the host draws the next batch while the GPU runs the backward pass (a second read at the end
                    # of the step made the host wait for the optimiser too)
                    loss_value = loss.item()
                    if not math.isfinite(loss_value):
                        raise TrainingError(f"training loss became {loss_value} at epoch {epoch}, step {index + 1}; "
                                            f"lower train.lr (now {optimizer.param_groups[0]['lr']:g}) or check inputs")
                    if sharding == "batch" and dist.enabled:
                        # DDP averages the ranks' mean losses: the slices of a last global batch of an odd size are one
                        # row apart, and their rows weighed more or less than in the 1-process run; each rank's mean now
                        # counts by its share of the global batch
                        global_rows = min(cfg.batch_size, train_rows - index * cfg.batch_size)
                        loss = loss * (len(batch) * dist.world / global_rows)
                    penalty = l2_penalty(emb_params, net_params, cfg)
                    if tables and cfg.embedding_l2 > 0:
                        row_penalty = cfg.embedding_l2 * rows_l2(embeddings, batch, dist)
                        penalty = row_penalty if penalty is None else penalty + row_penalty
                    total = loss if penalty is None else loss + penalty
                    aux = getattr(_unwrap(net), "auxiliary_loss", None)  # a model's own extra term (FinalNet)
                    if aux is not None:
                        total = total + aux
                        _unwrap(net).auxiliary_loss = None
                    scaler.scale(total).backward()
                    for t in tables:  # duplicates summed (coalesced) once here, then averaged over ranks
                        if t.grad is not None:
                            t.grad = dist.mean_sparse(t.grad)
                    if cfg.clip_norm > 0 or grad_log is not None:
                        for opt in optimizers:
                            scaler.unscale_(opt)
                    if grad_log is not None:  # norms before clipping
                        grad_log.maybe_log(state.global_step + 1, epoch)
                    if cfg.clip_norm > 0:
                        clip_grad_norm_(model.parameters(), cfg.clip_norm)
                    for opt in optimizers:
                        scaler.step(opt)
                    scaler.update()
                    state.step, state.global_step = index + 1, state.global_step + 1
                    state.seen += len(batch)
                    state.loss_sum += loss_value * len(batch)
                    bar.update(task, advance=1, loss=state.loss_sum / state.seen, rate=epoch_rate())
                    if state.global_step % log_every == 0:  # the step's loss over every rank's rows, as train_loss
                        step_sum, step_rows = dist.all_sum(loss_value * len(batch), len(batch))
                        logger.step(state.global_step, step_sum / step_rows, optimizer.param_groups[0]["lr"])
                    last = index + 1 == steps_per_epoch
                    if every_eval and state.global_step % every_eval == 0 and not last:
                        stop = run_eval(epoch_end=False)
                        if stop:
                            break
                    if every_ckpt and state.global_step % every_ckpt == 0 and not last:
                        state.train_seconds = seconds_before + time.perf_counter() - run_started
                        checkpoint(batch)
            if not stop:
                stop = run_eval(epoch_end=True)
            state.epoch, state.step, state.loss_sum, state.seen = epoch + 1, 0, 0.0, 0
            state.done, state.stopped_early = stop or state.epoch > cfg.epochs, stop
            state.train_seconds = seconds_before + time.perf_counter() - run_started
            checkpoint(batch)
    finally:
        logger.close()
    if best_state is not None:
        _unwrap(net).load_state_dict(best_state)
    in_sync = dist.all_equal(float(sum(p.double().sum().item() for p in model.parameters())))
    return {"history": state.history, "best_epoch": state.best_epoch, "best_step": state.best_step,
            "train_seconds": state.train_seconds, "global_step": state.global_step, "world_size": dist.world,
            "replicas_in_sync": in_sync}
