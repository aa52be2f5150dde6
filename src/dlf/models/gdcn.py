"""GDCN: Gated Deep Cross Network (F. Wang, H. Gu, D. Li, T. Lu, P. Zhang, N. Gu, "Towards Deeper, Lighter and
Interpretable Cross Network for CTR Prediction", CIKM 2023).

  c_0     = flat(E1)                                                  B x D, D = F d
  c_{l+1} = c_0 * (W_c c_l + b_l) * sigmoid(W_g c_l) + c_l            W_c, W_g: D x D  (* elementwise)
  parallel (GDCN-P, default): logit = w^T [c_L ; MLP(c_0)] + b
  stacked  (GDCN-S):           logit = MLP(c_L) -> 1

The information gate sigmoid(W_g c_l) decides, per value and sample, how much of each new cross feature passes,
so deeper cross stacks stop amplifying noisy high-order crosses.
Defaults: the parallel GDCN-P (FuxiCTR's `GDCNP`), with FuxiCTR `GDCN_default` sizes (3 gated cross layers, DNN
1024-512-256, ReLU, no BatchNorm, dropout 0); embedding_dim 16 (BARS Criteo_x4_001 setting). Why parallel: the
stacked form feeds a gated degree-4 polynomial of the embeddings straight into the DNN and was unstable in our
tiny overfit check at a high learning rate (Adam 0.05 diverged after reaching zero loss); the parallel form was
not. Init: embeddings N(0, 1e-4); W_c, W_g and every Linear Xavier normal; b_l uniform in [0, 1) as in the
authors' code; other biases zero.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from dlf.data.features import Batch, FeatureMap
from dlf.models.embedding import FieldEmbedding
from dlf.models.layers import check_config, init_linear_xavier, mlp_tower
from dlf.models.registry import register


@dataclass
class GDCNConfig:
    embedding_dim: int = 16
    structure: Literal["parallel", "stacked"] = "parallel"
    cross_layers: int = 3
    hidden_units: tuple[int, ...] = (1024, 512, 256)
    dropout: float = 0.0
    batch_norm: bool = False
    embedding_init_std: float = 1e-4

    def validate(self) -> None:
        if self.structure not in ("stacked", "parallel"):
            raise ValueError(f"model.structure must be 'stacked' or 'parallel', got {self.structure!r}")
        check_config(self, positive=["embedding_dim", "cross_layers"], units=["hidden_units"], rates=["dropout"])


class GatedCrossLayer(nn.Module):
    """c_{l+1} = c_0 * (W_c c_l + b) * sigmoid(W_g c_l) + c_l."""

    def __init__(self, dim: int):
        super().__init__()
        self.cross = nn.Linear(dim, dim, bias=False)  # W_c
        self.gate = nn.Linear(dim, dim, bias=False)  # W_g
        self.bias = nn.Parameter(torch.rand(dim))  # b, U[0, 1) as the authors' code

    def forward(self, c0: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # B x D, B x D -> B x D
        return c0 * (self.cross(c) + self.bias) * torch.sigmoid(self.gate(c)) + c


@register("gdcn", GDCNConfig, "GDCN: gated cross network + DNN (parallel by default, or stacked)")
class GDCN(nn.Module):
    def __init__(self, feature_map: FeatureMap, cfg: GDCNConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embedding = FieldEmbedding(feature_map, cfg.embedding_dim, cfg.embedding_init_std)
        dim = self.embedding.num_fields * cfg.embedding_dim
        self.cross = nn.ModuleList(GatedCrossLayer(dim) for _ in range(cfg.cross_layers))
        if cfg.structure == "stacked":
            self.dnn = mlp_tower(dim, cfg.hidden_units, 1, cfg.dropout, cfg.batch_norm)
        else:
            self.dnn = mlp_tower(dim, cfg.hidden_units, None, cfg.dropout, cfg.batch_norm)
            self.head = nn.Linear(dim + cfg.hidden_units[-1], 1)
        init_linear_xavier(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        c0 = self.embedding(batch).flatten(1)  # B x D
        c = c0
        for layer in self.cross:
            c = layer(c0, c)
        if self.cfg.structure == "stacked":
            return self.dnn(c).squeeze(-1)  # B
        return self.head(torch.cat([c, self.dnn(c0)], dim=1)).squeeze(-1)  # B
