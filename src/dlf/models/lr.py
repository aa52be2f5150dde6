"""Logistic regression: logit = b + sum_f w_f(x_f), one scalar weight per id (numeric: x * w_f).

Differs from FuxiCTR, kept: a multi-valued field adds the mean of its values' weights (the shared FieldEmbedding's
pooling; FuxiCTR's LR sums them); numeric weights start N(0, 1e-4) (FuxiCTR's Linear(1, 1) gets Xavier, std 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dlf.data.features import Batch, FeatureMap
from dlf.models.embedding import FieldEmbedding
from dlf.models.layers import check_config
from dlf.models.registry import register


@dataclass
class LRConfig:
    embedding_init_std: float = 1e-4

    def validate(self) -> None:
        check_config(self)


@register("lr", LRConfig, "logistic regression on one-hot ids and raw numerics")
class LogisticRegression(nn.Module):
    def __init__(self, feature_map: FeatureMap, cfg: LRConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embedding = FieldEmbedding(feature_map, 1, cfg.embedding_init_std)  # one weight per id
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.embedding(batch).sum(dim=(1, 2)) + self.bias  # B
