"""Crash-safe training checkpoints that load without unpickling anything.

One checkpoint is ONE safetensors file, `RUN/checkpoints/step-<global step>.safetensors`:

* tensors: `model/<name>` (current weights), `best/<name>` (best-so-far weights, if any),
  `optim/<param index>/<state key>` (optimiser state tensors), `sparse_optim/<param index>/<state key>`
  (the row-wise optimiser of the embedding tables under train.sparse_embedding), `rng/torch`,
  `rng/numpy`, `rng/cuda/<i>` (the writing process's CUDA generators); in multi-process runs also each rank's
  torch state, `rng/rank/<rank>`, and on CUDA the state of each rank's own device generator, `rng/rank_cuda/<rank>`;
* the safetensors header metadata key `dlf_checkpoint` holds a JSON document with everything
  else: optimiser param groups and non-tensor state, the plateau controller, the python RNG
  state, the loader position (epoch, step within the epoch, global step), the running epoch
  loss, history, best epoch/step, the resolved config, the identity of the processed data it was trained
  on (`data`: the feature map's schema_hash, preprocess fingerprint and pipeline_version; absent in older
  checkpoints), and a SHA-256 digest of all tensor bytes;
* the metadata key `dlf_checkpoint_sha256` holds a SHA-256 of that JSON text, so a damaged or hand-edited
  header (an epoch, the best metric, an optimiser step) is detected too. Checkpoints written before it
  existed lack it and are verified on the tensor digest alone.

The file is written to a temporary sibling and renamed over the target (atomic on POSIX), so a
crash leaves either the old or the new checkpoint, never half of one. Loading parses the
safetensors header (no code execution is possible: safetensors is a JSON header plus raw bytes,
and the rest is JSON) and verifies both digests, so a truncated or bit-flipped file is detected;
`load_latest` then warns and falls back to the previous checkpoint (the last `keep` are kept).
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from dlf._io import atomic_write_bytes
from dlf.train.distributed import rank_seed

FORMAT = "dlf-checkpoint"
VERSION = 1
_NAME = re.compile(r"^step-(\d+)\.safetensors$")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupted or not a dlf checkpoint."""


@dataclass
class TrainState:
    """Everything besides weights and optimiser that the loop needs to continue exactly."""

    epoch: int = 1  # epoch in progress (1-based)
    step: int = 0  # batches of `epoch` already trained
    global_step: int = 0
    loss_sum: float = 0.0  # running train loss sum over this epoch's batches (for the epoch record)
    seen: int = 0  # rows trained this epoch
    train_seconds: float = 0.0
    history: list = field(default_factory=list)
    best_epoch: int = 0
    best_step: int = 0
    plateau: dict = field(default_factory=dict)  # PlateauController.state_dict()
    scaler: dict = field(default_factory=dict)  # GradScaler state (fp16 only)
    done: bool = False  # training finished (epochs exhausted or early stop)
    stopped_early: bool = False  # it finished by early stopping (a raised train.epochs does not continue it)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "stopped_early" not in known:  # older checkpoints lack it: a finished run that had evaluations without
            # improvement may have stopped early, so it stays finished (the behaviour those versions had)
            known["stopped_early"] = bool(known.get("done")) and (known.get("plateau") or {}).get("bad_epochs", 0) > 0
        return cls(**known)


@dataclass
class Checkpoint:
    path: Path
    model: dict  # name -> tensor
    best: dict | None
    optimizer: dict  # torch optimizer state_dict
    rng: dict
    state: TrainState
    config: dict
    sparse_optimizer: dict | None = None  # the embedding tables' optimizer state_dict (train.sparse_embedding)
    data: dict | None = None  # data_identity() of the data it was trained on; None: written before it was stored

    def rng_for_rank(self, rank: int, seed: int, device: torch.device | None = None) -> dict:
        """What restore_rng restores on one rank: rank 0's numpy and python states, the rank's own torch state and,
        training on a CUDA `device`, the state of that device's generator (`cuda`).

        A rank the checkpoint has no state for (it was written by fewer processes; on CUDA, also by a dlf that kept
        only rank 0's generators) gets a stream of its own, seeded from train.seed, the rank and the step (`cuda_seed`
        on CUDA): rank 0's states would give it rank 0's dropout masks. Rank 0 without a per-rank state (a
        1-process checkpoint) takes its device's state from the writing process's `rng/cuda/<i>`."""
        rng = {k: self.rng[k] for k in ("torch", "numpy", "numpy_meta", "python")}
        fallback = rank_seed(seed, rank) + self.state.global_step
        if rank in self.rng["ranks"]:
            rng["torch"] = self.rng["ranks"][rank]
        elif rank > 0:
            rng["torch"] = torch.Generator().manual_seed(fallback).get_state()
        if device is not None and device.type == "cuda":
            own = self.rng["rank_cuda"].get(rank)
            if own is None and rank == 0:  # the process that wrote the checkpoint
                own = self.rng["cuda"].get(torch.cuda.current_device() if device.index is None else device.index)
            if own is not None:
                rng["cuda"] = own
            elif rank > 0:
                rng["cuda_seed"] = fallback
        return rng


# ---------------------------------------------------------------- RNG states

def capture_rng() -> tuple[dict, dict]:
    """(tensors, json) for torch, numpy, python and (if present) CUDA RNG states."""
    tensors = {"rng/torch": torch.get_rng_state()}
    np_state = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    py_version, py_internal, py_gauss = random.getstate()
    meta = {"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": [py_version, list(py_internal), py_gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    return tensors, meta


def restore_rng(rng: dict, device: torch.device | None = None) -> None:
    """Restore Checkpoint.rng_for_rank's states; on a CUDA `device`, its generator too (no other device's: each
    process trains on one device, and touching the others would open a CUDA context on each)."""
    torch.set_rng_state(rng["torch"])
    name, pos, has_gauss, cached = rng["numpy_meta"]
    np.random.set_state((name, rng["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    if device is None or device.type != "cuda":
        return
    if "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)
    elif "cuda_seed" in rng:  # the state torch.cuda.manual_seed gives, set on this device (not the current one)
        torch.cuda.set_rng_state(torch.Generator(device).manual_seed(rng["cuda_seed"]).get_state(), device)


# ---------------------------------------------------------------- optimiser state

def _split_optimizer(opt_state: dict, prefix: str = "optim") -> tuple[dict, dict]:
    tensors, meta_state = {}, {}
    for idx, slots in opt_state["state"].items():
        for key, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}/{idx}/{key}"] = value
            else:
                meta_state.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": opt_state["param_groups"], "state": meta_state}


def _join_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for name, value in tensors.items():
        _, idx, key = name.split("/", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, slots in meta.get("state", {}).items():
        state.setdefault(int(idx), {}).update(slots)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        for k in ("betas",):
            if isinstance(g.get(k), list):
                g[k] = tuple(g[k])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------- data identity

DATA_KEYS = ("schema_hash", "fingerprint", "pipeline_version")


def data_identity(meta: dict) -> dict:
    """What identifies a processed dataset's ids (from its feature map's meta): re-preprocessed data can keep every
    vocabulary size, so the weights would load, while its ids mean other values. {} for synthetic data."""
    return {k: meta[k] for k in DATA_KEYS if meta.get(k) is not None}


# ---------------------------------------------------------------- digest

HEADER_DIGEST = "dlf_checkpoint_sha256"  # metadata key: SHA-256 of the dlf_checkpoint JSON text


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _digest(tensors: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _cpu(t: torch.Tensor) -> torch.Tensor:
    # clone: safetensors refuses tensors that share storage, and we must not alias live weights
    return t.detach().to("cpu", copy=True).contiguous()


# ---------------------------------------------------------------- weights

# ---------------------------------------------------------------- save / load

def checkpoint_path(directory: Path, global_step: int) -> Path:
    return Path(directory) / f"step-{global_step:09d}.safetensors"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in `directory`, newest (highest step) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(directory: str | Path, *, model_state: dict, optimizer_state: dict, state: TrainState,
                    config: dict, best_state: dict | None = None, keep: int = 2,
                    rank_rng: list[torch.Tensor] | None = None, sparse_optimizer_state: dict | None = None,
                    data: dict | None = None, rank_cuda_rng: list[torch.Tensor] | None = None) -> Path:
    """Write one checkpoint atomically and delete all but the newest `keep`.

    rank_rng, rank_cuda_rng: every rank's torch state and own CUDA device's state (DistContext.gather_rng)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": _cpu(v) for k, v in model_state.items()}
    if best_state is not None:
        tensors.update({f"best/{k}": _cpu(v) for k, v in best_state.items()})
    opt_tensors, opt_meta = _split_optimizer(optimizer_state)
    tensors.update({k: _cpu(v) for k, v in opt_tensors.items()})
    sparse_meta = None
    if sparse_optimizer_state is not None:
        sparse_tensors, sparse_meta = _split_optimizer(sparse_optimizer_state, "sparse_optim")
        tensors.update({k: _cpu(v) for k, v in sparse_tensors.items()})
    rng_tensors, rng_meta = capture_rng()
    tensors.update({k: _cpu(v) for k, v in rng_tensors.items()})
    for r, t in enumerate(rank_rng or []):  # torch RNG of every rank (dropout) in multi-process runs
        tensors[f"rng/rank/{r}"] = _cpu(t)
    for r, t in enumerate(rank_cuda_rng or []):
        tensors[f"rng/rank_cuda/{r}"] = _cpu(t)
    doc = {"format": FORMAT, "version": VERSION, "state": state.to_dict(), "optimizer": opt_meta,
           "sparse_optimizer": sparse_meta, "rng": rng_meta, "config": config, "has_best": best_state is not None,
           "data": data or {},
           "digest": _digest(tensors)}
    path = checkpoint_path(directory, state.global_step)
    # temporary files of writes cut off by a kill (atomic_write_bytes names them .step-N.safetensors.*.tmp): nothing
    # else removes them, and each is as large as a checkpoint. Only this process writes checkpoints of the run.
    for stale in directory.glob(".step-*.safetensors.*.tmp"):
        stale.unlink(missing_ok=True)
    text = json.dumps(doc)
    atomic_write_bytes(path, st_save(tensors, metadata={"dlf_checkpoint": text, HEADER_DIGEST: _sha256(text)}))
    # A file above the step just written is one a resume skipped as corrupted: ranked newest, it pushed the good
    # checkpoints out of the rotation (with keep=1 each new checkpoint was deleted as soon as it was written).
    found = list_checkpoints(directory)
    for old in [p for p in found if _step(p) > state.global_step] + \
            [p for p in found if _step(p) <= state.global_step][max(keep, 1):]:
        old.unlink(missing_ok=True)
    return path


def _step(path: Path) -> int:
    return int(_NAME.match(path.name).group(1))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify one checkpoint; raises CheckpointError saying what is wrong."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    try:
        tensors = st_load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + header_len])
        text = header["__metadata__"]["dlf_checkpoint"]
        header_digest = header["__metadata__"].get(HEADER_DIGEST)  # None: written before it was stored
        doc = json.loads(text)
    except (SafetensorError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted ({type(exc).__name__}: {exc})") from None
    if header_digest is not None and header_digest != _sha256(text):  # before the format check: a damaged one
        raise CheckpointError(f"checkpoint {path} is corrupted (its header document does not match the stored "
                              "SHA-256)")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise CheckpointError(f"{path} is not a dlf checkpoint of version {VERSION}")
    if _digest(tensors) != doc.get("digest"):
        raise CheckpointError(f"checkpoint {path} is corrupted (tensor bytes do not match the stored SHA-256)")
    try:
        return _checkpoint(path, tensors, doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a hand-edited or foreign header: no traceback
        raise CheckpointError(f"checkpoint {path} has a header this dlf cannot read "
                              f"({type(exc).__name__}: {exc})") from None


def _checkpoint(path: Path, tensors: dict, doc: dict) -> Checkpoint:
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best/")} if doc["has_best"] else None
    optimizer = _join_optimizer({k: v for k, v in tensors.items() if k.startswith("optim/")}, doc["optimizer"])
    sparse_optimizer = None
    if doc.get("sparse_optimizer") is not None:
        sparse_optimizer = _join_optimizer({k: v for k, v in tensors.items() if k.startswith("sparse_optim/")},
                                           doc["sparse_optimizer"])
    rng = {"torch": tensors["rng/torch"], "numpy": tensors["rng/numpy"], "numpy_meta": doc["rng"]["numpy"],
           "python": doc["rng"]["python"],
           "cuda": {int(k.rsplit("/", 1)[1]): v for k, v in tensors.items() if k.startswith("rng/cuda/")},
           "ranks": {int(k.rsplit("/", 1)[1]): v for k, v in tensors.items() if k.startswith("rng/rank/")},
           "rank_cuda": {int(k.rsplit("/", 1)[1]): v for k, v in tensors.items() if k.startswith("rng/rank_cuda/")}}
    return Checkpoint(path, model, best, optimizer, rng, TrainState.from_dict(doc["state"]), doc["config"],
                      sparse_optimizer, doc.get("data"))


def load_latest(directory: str | Path, warn=None) -> Checkpoint | None:
    """Newest checkpoint that verifies; a bad one is reported (warning) and skipped.

    Returns None when the directory holds no checkpoint at all; raises CheckpointError when
    checkpoints exist but none of them can be used.
    """
    paths = list_checkpoints(directory)
    errors = []
    for path in paths:
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as exc:
            errors.append(str(exc))
            message = f"{exc}; trying the previous checkpoint"
            (warn or (lambda m: warnings.warn(m, RuntimeWarning, stacklevel=2)))(message)
            continue
        return ckpt
    if errors:
        raise CheckpointError("no usable checkpoint in " + str(directory) + ": " + "; ".join(errors))
    return None
