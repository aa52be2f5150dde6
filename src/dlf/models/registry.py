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
