"""Model registry: name -> (model class, config dataclass, default overrides).

The CLI, the trainer, bench and bundles only ever build models through here.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

from torch import nn

from dlf.data.features import FeatureMap


@dataclass(frozen=True)
class ModelEntry:
    name: str
    model_cls: type[nn.Module]
    config_cls: type
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def default_config(self):
        return replace(self.config_cls(), **self.defaults)


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, config_cls: type, description: str = "", **defaults) -> Callable[[type], type]:
    def wrap(model_cls: type) -> type:
        _REGISTRY[name] = ModelEntry(name, model_cls, config_cls, defaults, description)
        return model_cls
    return wrap


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    return _REGISTRY[name]


def build_model(name: str, feature_map: FeatureMap, config=None) -> nn.Module:
    entry = get_entry(name)
    return entry.model_cls(feature_map, config if config is not None else entry.default_config())


def weights_mismatch(model: nn.Module, weights: dict) -> str | None:
    """None when `weights` (name -> tensor) fit `model` exactly, else a one-line summary of what does not: torch's
    own load_state_dict error lists every key over many lines, which hides the cause (another model or config)."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in weights and weights[k].shape != own[k].shape]
    # load_state_dict would cast silently; a tensor of another dtype (int ids, float64) is not this model's weight
    dtypes = [f"{k} {weights[k].dtype} vs {own[k].dtype}" for k in own
              if k in weights and weights[k].shape == own[k].shape and weights[k].dtype != own[k].dtype]

    def some(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    parts = [f"{len(names)} {what} ({some(names)})" for names, what in (
        (missing, "missing key(s)"), (unexpected, "unexpected key(s)"),
        (shapes, "shape mismatch(es), saved vs model"), (dtypes, "dtype mismatch(es), saved vs model")) if names]
    return "; ".join(parts) or None
