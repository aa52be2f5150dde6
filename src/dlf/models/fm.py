"""FM: Factorization Machines (S. Rendle, ICDM 2010).

  logit = b + sum_f w(x_f) + sum_{i<j} <v_i, v_j>

where v_f (d) is field f's token from the shared embedding (E1's row f: the id's vector for categorical fields,
x * v_f for numeric ones, the mean of the values' vectors for multi-valued ones) and w(x_f) the first-order
weight (the LR model: one scalar per id, x * w_f for numerics). The pairwise sum uses Rendle's O(F d) identity

  sum_{i<j} <v_i, v_j> = 1/2 sum_k [ (sum_i v_ik)^2 - sum_i v_ik^2 ].

Defaults: embedding_dim 16 (BARS Criteo_x4_001 setting; FuxiCTR's FM_base uses 10); init N(0, 1e-4).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dlf.data.features import Batch, FeatureMap
from dlf.models.embedding import FieldEmbedding
from dlf.models.layers import check_config
from dlf.models.lr import LogisticRegression, LRConfig
from dlf.models.registry import register


def fm_pairwise(e: torch.Tensor) -> torch.Tensor:
    """sum_{i<j} <e_i, e_j> for tokens e (B x F x d) -> B, via Rendle's square-of-sum identity."""
    square_of_sum = e.sum(dim=1).pow(2)  # B x d
    sum_of_squares = e.pow(2).sum(dim=1)  # B x d
    return 0.5 * (square_of_sum - sum_of_squares).sum(dim=-1)  # B


@dataclass
class FMConfig:
    embedding_dim: int = 16
    embedding_init_std: float = 1e-4

    def validate(self) -> None:
        check_config(self, positive=["embedding_dim"])


@register("fm", FMConfig, "factorization machine: linear + all pairwise <v_i, v_j>")
class FM(nn.Module):
    def __init__(self, feature_map: FeatureMap, cfg: FMConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.linear = LogisticRegression(feature_map, LRConfig(cfg.embedding_init_std))  # b + sum_f w(x_f)
        self.embedding = FieldEmbedding(feature_map, cfg.embedding_dim, cfg.embedding_init_std)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.linear(batch) + fm_pairwise(self.embedding(batch))  # B
