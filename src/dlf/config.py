"""Typed run configuration: defaults <- YAML file <- `--set key=value` overrides.

Every section is a dataclass; values from YAML or the command line are checked
against the field types, and an unknown key or a bad value raises `ConfigError`
with the dotted key, what was given and what was expected.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from dlf.data.schema import yaml_problem
from dlf.data.synthetic import SyntheticConfig
from dlf.models import get_entry


class ConfigError(ValueError):
    pass


@dataclass
class DataConfig:
    dataset: str = "synthetic"  # "synthetic" (built in) or "processed" (a folder written by `dlf preprocess`)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    path: str | None = None  # processed dataset folder (`dlf preprocess --out`); implies dataset "processed"


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 2048
    eval_batch_size: int = 16384
    lr: float = 1e-3
    clip_norm: float = 10.0  # max global gradient norm; 0 disables clipping
    monitor: Literal["auc-logloss", "auc", "logloss"] = "auc-logloss"
    lr_decay: float = 0.1  # lr multiplier after an epoch without improvement
    min_lr: float = 1e-6
    patience: int = 2  # epochs without improvement before stopping (best weights restored)
    seed: int = 2025
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    progress: bool = True
    optimizer: Literal["adam", "adamw", "adagrad"] = "adam"
    weight_decay: float = 0.0  # the optimiser's own weight decay (decoupled for adamw)
    embedding_l2: float = 0.0  # loss += embedding_l2 * sum of squared embedding weights
    net_l2: float = 0.0  # loss += net_l2 * sum of squared network weight matrices (no biases)
    # fused embedding tables get sparse gradients and a row-wise optimiser (SparseAdam for adam/adamw, sparse
    # Adagrad for adagrad); the other parameters keep `optimizer`. embedding_l2 then covers the batch's rows only
    sparse_embedding: bool = False
    # with sparse_embedding: "auto" = the row-wise counterpart of `optimizer` (above); "rowwise_adagrad" = one
    # Adagrad accumulator per table row (TorchRec's EXACT_ROWWISE_ADAGRAD): optimiser state V floats, not 2 V x d
    embedding_optimizer: Literal["auto", "rowwise_adagrad"] = "auto"
    embedding_lr: float = 0.0  # learning rate of the sparse tables' optimiser; 0 = lr
    eval_every_steps: int = 0  # also validate every N steps (0: once per epoch); patience counts evaluations
    checkpoint_every_steps: int = 0  # also checkpoint every N steps (0: once per epoch)
    keep_checkpoints: int = 2  # newest checkpoints kept in RUN/checkpoints
    log_every_steps: int = 50  # TensorBoard train-loss interval
    tensorboard: bool = True  # write RUN/tensorboard event files (needs the tensorboard package)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype; fp16 (with loss scaling) needs CUDA
    # multi-process data split: "batch" = each rank keeps a slice of every global batch (results do not depend
    # on the process count); "rows" = each rank reads only train.shard(rank, world) (less reading per rank)
    ddp_sharding: Literal["batch", "rows"] = "batch"
    sync_batchnorm: bool = True  # multi-process on CUDA: BatchNorm -> SyncBatchNorm (torch has none on CPU)
    grad_norm_every_steps: int = 0  # > 0: RUN/grad_norms.csv, per-branch/per-layer gradient norms every N steps

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "patience", "log_every_steps", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"train.lr_decay must be in (0, 1], got {self.lr_decay}")
        for name in ("clip_norm", "weight_decay", "embedding_l2", "net_l2", "eval_every_steps",
                     "checkpoint_every_steps", "grad_norm_every_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.embedding_lr < 0:
            raise ConfigError(f"train.embedding_lr must be >= 0 (0: train.lr), got {self.embedding_lr}")
        if self.embedding_optimizer != "auto" and not self.sparse_embedding:
            raise ConfigError(f"train.embedding_optimizer={self.embedding_optimizer} updates the embedding tables "
                              "row by row from sparse gradients; set train.sparse_embedding=true as well")
        if self.embedding_lr > 0 and not self.sparse_embedding:  # dense tables are in train.optimizer's one lr group:
            # the value trained nothing differently, without a word
            raise ConfigError(f"train.embedding_lr={self.embedding_lr} is the learning rate of the sparse tables' "
                              "optimiser; set train.sparse_embedding=true as well (dense tables train at train.lr)")
        if self.threads < 0:  # torch.set_num_threads refuses it with a traceback
            raise ConfigError(f"train.threads must be >= 0 (0: torch's default), got {self.threads}")
        if not -2**32 < self.seed < 2**32:  # torch.manual_seed overflowed (a traceback) on larger ones
            raise ConfigError(f"train.seed must be an integer between -2**32 and 2**32 (exclusive), got {self.seed}")


@dataclass
class RunConfig:
    model_name: str = "dlf"
    model: Any = None  # the registered model's config dataclass
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.model is None:  # RunConfig() or RunConfig(model_name="lr"): that model's defaults (was a TypeError
            try:  # from asdict(None) in dlf.train)
                self.model = get_entry(self.model_name).default_config()
            except KeyError as exc:
                raise ConfigError(exc.args[0]) from None

    def to_dict(self) -> dict:
        return {"model": {"name": self.model_name, **dataclasses.asdict(self.model)},
                "data": dataclasses.asdict(self.data), "train": dataclasses.asdict(self.train)}


def _type_name(tp) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _number(value) -> int | float | None:
    """`value` as a number, or None: PyYAML reads YAML 1.1, where 1e-3 and 1e6 (no dot) are strings, so a string
    is read as Python's float() reads it (for every int and float key alike, here in one place)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _coerce(value, tp, key: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: expected one of {_type_name(tp)}, got {value!r}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        any_length = args[-1] is Ellipsis  # tuple[int, ...]: its args are (int, Ellipsis), not a length
        if not isinstance(value, (list, tuple)) or (not any_length and len(value) != len(args)):
            expected = f"a list of {len(args)} values" if not any_length else \
                f"a list of {_type_name(args[0])} values of any length, in brackets (e.g. [64, 64])"
            raise ConfigError(f"{key}: expected {expected}, got {value!r}")
        item_types = [args[0]] * len(value) if any_length else args
        return tuple(_coerce(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, item_types)))
    if dataclasses.is_dataclass(tp):
        return _update(tp(), value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if type(value) is int and value in (0, 1):  # YAML reads --set x=1 as the int 1: a bool field means true
            return bool(value)
        raise ConfigError(f"{key}: expected true or false (or 1 / 0), got {value!r}")
    if tp is int:
        number = _number(value)
        if isinstance(number, int):
            return number
        if isinstance(number, float) and number.is_integer():  # 1e6, 4e3; not 2.5e0
            if abs(number) <= 2**53:
                return int(number)
            # 1e30 is 1000000000000000019884624838656 as a float: say what was written, not that number
            raise ConfigError(f"{key}: expected an integer, got {value!r} (beyond 2**53: write the integer in full)")
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        number = _number(value)
        if number is None:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        number = float(number)
        # every float field, here in one place: nan passes comparisons like `lr <= 0` and would be ignored or
        # fail deep inside torch; inf fails mid-training
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {number}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _update(obj, values: dict, prefix: str):
    """Return a copy of dataclass `obj` with `values` (a nested dict) applied, type-checked."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    changes = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise ConfigError(f"unknown key {dotted!r}; valid keys: {', '.join(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _update(current, value, dotted)
        else:
            changes[key] = _coerce(value, hints[key], dotted)
    return dataclasses.replace(obj, **changes)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'model.layers=2' -> (['model', 'layers'], 2); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _merge(base: dict, path: list[str], value) -> None:
    node = base
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(path)}: {part!r} is a value, not a section")
    if isinstance(value, dict) and isinstance(node.get(path[-1]), dict):
        # --set 'train={lr: 0.01}' sets those keys; it replaced the whole section, silently dropping the YAML's
        # other keys (and with 'model={...}' its model name, so another model was trained)
        for key, item in value.items():
            _merge(node, [path[-1], key], item)
        return
    node[path[-1]] = value


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping: PyYAML silently keeps the last one, so a
    duplicated `lr:` in a long config overrode the first without a word."""


def _unique_mapping(loader: _UniqueKeyLoader, node, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise ConfigError(f"key {key!r} is given twice in one section (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_config(path: str | Path | None = None, overrides: list[str] | str | None = None, *, model: str | None = None,
                dataset: str | None = None) -> RunConfig:
    """Build a RunConfig from an optional YAML file, then `model` (a registered name, e.g. 'lr') and `dataset`, then
    overrides ('train.lr=0.01'). (They were **kwargs: load_config(epochs=3) was silently ignored.)"""
    raw: dict = {}
    if path is not None:
        try:
            raw = yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        except OSError as exc:  # a directory, no permission: was a traceback
            raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {str(path)!r} is not UTF-8 text "
                              f"({exc.reason} at byte {exc.start})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {yaml_problem(exc)}") from None
        except ConfigError as exc:
            raise ConfigError(f"config file {str(path)!r}: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping with model/data/train sections")
    file_model = (raw.get("model") or {}).get("name", "dlf") if isinstance(raw.get("model") or {}, dict) else None
    if model is not None:
        _merge(raw, ["model", "name"], model)
    if dataset is not None:
        _merge(raw, ["data", "dataset"], dataset)
    if isinstance(overrides, str):  # load_config(path, "train.lr=0.1"): one override, not one per letter (it said
        overrides = [overrides]  # "override 't' must look like key.path=value")
    for text in overrides or []:
        _merge(raw, *parse_override(text))
    try:
        return from_dict(raw)
    except ConfigError as exc:  # `-c configs/demo.yaml --model lr`: the file's model keys are DLF's
        if path is None or model in (None, file_model) or not str(exc).startswith("unknown key 'model."):
            raise
        raise ConfigError(f"config file {str(path)!r} has model settings for {file_model}, not {model}: "
                          f"{exc}") from None


def from_dict(raw: dict) -> RunConfig:
    unknown = set(raw) - {"model", "data", "train"}
    if unknown:
        raise ConfigError(f"unknown section(s) {sorted(unknown)}; valid sections: model, data, train")
    for section in ("model", "data", "train"):  # `model: dlf` or --set model=dlf was a ValueError traceback
        if not isinstance(raw.get(section) or {}, dict):
            raise ConfigError(f"{section}: expected a mapping of keys (e.g. {section}.KEY=VALUE"
                              f"{', model.name=dlf' if section == 'model' else ''}), got {raw[section]!r}")
    model_raw = dict(raw.get("model") or {})
    name = model_raw.pop("name", "dlf")
    try:
        entry = get_entry(name)
    except KeyError as exc:
        raise ConfigError(exc.args[0]) from None
    cfg = RunConfig(model_name=name,
                    model=_update(entry.default_config(), model_raw, "model"),
                    data=_update(DataConfig(), raw.get("data") or {}, "data"),
                    train=_update(TrainConfig(), raw.get("train") or {}, "train"))
    for section in (cfg.model, cfg.data.synthetic, cfg.train):
        try:
            section.validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if cfg.data.path and cfg.data.dataset == "synthetic":
        cfg.data.dataset = "processed"
    if cfg.data.dataset not in ("synthetic", "processed"):
        raise ConfigError(f"data.dataset: unknown dataset {cfg.data.dataset!r}; available: synthetic, processed "
                          "(with data.path = a folder written by dlf preprocess)")
    if cfg.data.dataset == "processed" and not cfg.data.path:
        raise ConfigError("data.dataset 'processed' needs data.path (a folder written by dlf preprocess), "
                          "e.g. --data DIR")
    return cfg
