"""DNN: a plain MLP on the concatenated field embeddings (the "deep" part shared by most baselines;
e.g. Covington et al., RecSys 2016; FuxiCTR's DNN).

  h_0 = flat(E1)                         B x (F d)
  h_k = ReLU(W_k h_{k-1} + b_k)          k = 1..K (optional BatchNorm before ReLU, dropout after)
  logit = w^T h_K + b                    B

Defaults: FuxiCTR `DNN_base` (hidden 500-500-500, ReLU, no BatchNorm, dropout 0); embedding_dim 16 as in the
BARS Criteo_x4_001 setting. Init: embeddings N(0, 1e-4), Linear weights Xavier normal with zero bias (as FuxiCTR).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dlf.data.features import Batch, FeatureMap
from dlf.models.embedding import FieldEmbedding
from dlf.models.layers import check_config, init_linear_xavier, mlp_tower
from dlf.models.registry import register


@dataclass
class DNNConfig:
    embedding_dim: int = 16
    hidden_units: tuple[int, ...] = (500, 500, 500)
    dropout: float = 0.0
    batch_norm: bool = False
    embedding_init_std: float = 1e-4

    def validate(self) -> None:
        check_config(self, positive=["embedding_dim"], units=["hidden_units"], rates=["dropout"])


@register("dnn", DNNConfig, "plain MLP on the concatenated field embeddings")
class DNN(nn.Module):
    def __init__(self, feature_map: FeatureMap, cfg: DNNConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embedding = FieldEmbedding(feature_map, cfg.embedding_dim, cfg.embedding_init_std)
        in_dim = self.embedding.num_fields * cfg.embedding_dim
        self.mlp = mlp_tower(in_dim, cfg.hidden_units, 1, cfg.dropout, cfg.batch_norm)
        init_linear_xavier(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        e = self.embedding(batch)  # B x F x d
        return self.mlp(e.flatten(1)).squeeze(-1)  # B
