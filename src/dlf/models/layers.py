"""Small building blocks shared by the models."""
from __future__ import annotations

import math

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
    """A bare weight matrix with Kaiming-uniform init (as nn.Linear's default)."""
    w = torch.empty(rows, cols)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    return nn.Parameter(w)
