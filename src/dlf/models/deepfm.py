"""DeepFM (H. Guo, R. Tang, Y. Ye, Z. Li, X. He, IJCAI 2017): an FM and a DNN that share one embedding.

  logit = y_FM + y_DNN
  y_FM  = b + sum_f w(x_f) + sum_{i<j} <v_i, v_j>          (see fm.py)
  y_DNN = MLP(flat(E1))                                    E1: B x F x d, the same v_f tokens

Defaults: FuxiCTR `DeepFM_base` (hidden 300-300-300, ReLU, no BatchNorm, dropout 0); embedding_dim 16 (BARS
Criteo_x4_001 setting). Init: embeddings N(0, 1e-4), Linear Xavier normal with zero bias.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dlf.data.features import Batch, FeatureMap
from dlf.models.embedding import FieldEmbedding
from dlf.models.fm import fm_pairwise
from dlf.models.layers import check_config, init_linear_xavier, mlp_tower
from dlf.models.lr import LogisticRegression, LRConfig
from dlf.models.registry import register


@dataclass
class DeepFMConfig:
    embedding_dim: int = 16
    hidden_units: tuple[int, ...] = (300, 300, 300)
    dropout: float = 0.0
    batch_norm: bool = False
    embedding_init_std: float = 1e-4

    def validate(self) -> None:
        check_config(self, positive=["embedding_dim"], units=["hidden_units"], rates=["dropout"])


@register("deepfm", DeepFMConfig, "FM + DNN on a shared embedding, logits summed")
class DeepFM(nn.Module):
    def __init__(self, feature_map: FeatureMap, cfg: DeepFMConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.linear = LogisticRegression(feature_map, LRConfig(cfg.embedding_init_std))
        self.embedding = FieldEmbedding(feature_map, cfg.embedding_dim, cfg.embedding_init_std)
        self.dnn = mlp_tower(self.embedding.num_fields * cfg.embedding_dim, cfg.hidden_units, 1, cfg.dropout,
                             cfg.batch_norm)
        init_linear_xavier(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        e = self.embedding(batch)  # B x F x d
        y_fm = self.linear(batch) + fm_pairwise(e)  # B
        y_dnn = self.dnn(e.flatten(1)).squeeze(-1)  # B
        return y_fm + y_dnn
