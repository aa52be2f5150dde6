"""Small building blocks shared by the models."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def mlp_block(in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear -> BatchNorm -> ReLU -> Dropout -> Linear (indices 0,1,2,3,4 as in the released code)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, out_dim),
    )


def init_linear_xavier(module: nn.Module) -> None:
    """Xavier-normal weights and zero bias for every nn.Linear under `module`."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def raw_matrix(rows: int, cols: int) -> nn.Parameter:
    """A bare weight matrix with Kaiming-uniform init as the released DLF/WuKong code: torch's default a=0, so
    U(-sqrt(6 / cols), sqrt(6 / cols)) (not nn.Linear's a=sqrt(5), whose bound is sqrt(6) times smaller)."""
    w = torch.empty(rows, cols)
    nn.init.kaiming_uniform_(w)
    return nn.Parameter(w)


def mlp_tower(in_dim: int, hidden_units: Sequence[int], out_dim: int | None = None, dropout: float = 0.0,
              batch_norm: bool = False) -> nn.Sequential:
    """The baselines' DNN (FuxiCTR's MLP_Block): per hidden width h, Linear -> [BatchNorm] -> ReLU -> [Dropout];
    then a Linear to `out_dim` when given (else the last hidden layer is the output; empty `hidden_units` and no
    `out_dim` is the identity)."""
    layers: list[nn.Module] = []
    for width in hidden_units:
        layers.append(nn.Linear(in_dim, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_dim = width
    if out_dim is not None:
        layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def check_config(cfg, positive: Sequence[str] = (), units: Sequence[str] = (), rates: Sequence[str] = ()) -> None:
    """Raise ValueError naming the bad `model.<field>`: `positive` ints >= 1, `units` non-empty lists of ints >= 1,
    `rates` (dropout) in [0, 1); and embedding_init_std > 0, which every model has (torch refuses a negative one
    with a traceback, and 0 starts every embedding at zero, where products of embeddings, such as FM's pairwise
    term, have zero gradient: they would never learn)."""
    if cfg.embedding_init_std <= 0:
        raise ValueError(f"model.embedding_init_std must be > 0, got {cfg.embedding_init_std}")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ValueError(f"model.{name} must be >= 1, got {getattr(cfg, name)}")
    for name in units:
        value = tuple(getattr(cfg, name))
        if not value or any(v < 1 for v in value):
            raise ValueError(f"model.{name} must be a non-empty list of sizes >= 1, got {list(value)}")
    for name in rates:
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ValueError(f"model.{name} must be in [0, 1), got {getattr(cfg, name)}")
