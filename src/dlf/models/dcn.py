"""DCN: Deep & Cross Network (R. Wang, B. Fu, G. Fu, M. Wang, ADKDD 2017), cross network v1 + a parallel DNN.

  x_0     = flat(E1)                                   B x D, D = F d
  x_{l+1} = x_0 (x_l^T w_l) + b_l + x_l                 w_l, b_l: D  (one scalar per sample scales x_0)
  h       = MLP(x_0)                                   B x h_K
  logit   = w_out^T [x_L ; h] + b_out

Each cross layer raises the polynomial order by one with only 2D parameters.
Defaults: FuxiCTR `DCN_base` (3 cross layers, DNN 500-500-500, ReLU, no BatchNorm, dropout 0); embedding_dim 16
(BARS Criteo_x4_001 setting). Init: embeddings N(0, 1e-4); w_l and every Linear Xavier normal; biases zero.
Note: FuxiCTR's current `DCN_default` template has DNN 1024-512-256 (and d 32); the computation is the same.
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
class DCNConfig:
    embedding_dim: int = 16
    cross_layers: int = 3
    hidden_units: tuple[int, ...] = (500, 500, 500)
    dropout: float = 0.0
    batch_norm: bool = False
    embedding_init_std: float = 1e-4

    def validate(self) -> None:
        check_config(self, positive=["embedding_dim", "cross_layers"], units=["hidden_units"], rates=["dropout"])


class CrossLayerV1(nn.Module):
    """x_{l+1} = x_0 (x_l^T w) + b + x_l."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Linear(dim, 1, bias=False)  # w: x_l^T w as a Linear so the shared Xavier init covers it
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # B x D, B x D -> B x D
        return x0 * self.weight(x) + self.bias + x  # weight(x): B x 1


@register("dcn", DCNConfig, "Deep & Cross Network: cross network v1 in parallel with a DNN")
class DCN(nn.Module):
    def __init__(self, feature_map: FeatureMap, cfg: DCNConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embedding = FieldEmbedding(feature_map, cfg.embedding_dim, cfg.embedding_init_std)
        dim = self.embedding.num_fields * cfg.embedding_dim
        self.cross = nn.ModuleList(CrossLayerV1(dim) for _ in range(cfg.cross_layers))
        self.dnn = mlp_tower(dim, cfg.hidden_units, None, cfg.dropout, cfg.batch_norm)
        self.head = nn.Linear(dim + cfg.hidden_units[-1], 1)
        init_linear_xavier(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        x0 = self.embedding(batch).flatten(1)  # B x D
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        return self.head(torch.cat([x, self.dnn(x0)], dim=1)).squeeze(-1)  # B
