"""FinalMLP (K. Mao, J. Zhu, L. Su, G. Cai, Y. Li, Z. Dong, AAAI 2023): two MLP streams over the same embedding,
each with its own feature-selection gate, fused by a multi-head bilinear aggregation.

  x        = flat(E1)                                                 B x D, D = F d
  g_k      = 2 * sigmoid(MLP_k^gate(c_k))                              D, k = 1, 2  (c_k: a learned context vector)
  o_k      = MLP_k(g_k * x)                                           B x h_k
  logit    = b + w_1^T o_1 + w_2^T o_2 + sum_{j=1..H} o_{1,j}^T W_j o_{2,j}
             (o_{k,j}: the j-th of H equal chunks of o_k; W_j: h_1/H x h_2/H)

The gate starts near 1 (sigmoid(~0) * 2), so each stream starts from the plain embedding and learns which fields
to emphasise. Context: with no context fields (the FuxiCTR default `fs1_context: []`) c_k is a learned d-vector;
we initialise it N(0, embedding_init_std) rather than zeros, because with zeros the gate MLP's first layer sees
an all-zero input and ReLU'(0) = 0 would leave that layer (and c_k) without gradient forever.
Using chosen fields as context (the paper's option) is not offered yet.
Defaults: FuxiCTR `FinalMLP_default` (streams 1024-512 and 1024-512-256, gate MLPs 1024-512, 2 fusion heads,
ReLU, no BatchNorm, dropout 0); embedding_dim 16 (same config). Init: embeddings N(0, 1e-4); Linear Xavier
normal, zero bias; W_j Xavier normal over the flattened H h_1/H h_2/H x 1 tensor (as FuxiCTR).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dlf.data.features import Batch, FeatureMap
from dlf.models.embedding import FieldEmbedding
from dlf.models.layers import check_config, init_linear_xavier, mlp_tower
from dlf.models.registry import register


@dataclass
class FinalMLPConfig:
    embedding_dim: int = 16
    mlp1_hidden_units: tuple[int, ...] = (1024, 512)
    mlp2_hidden_units: tuple[int, ...] = (1024, 512, 256)
    mlp1_dropout: float = 0.0
    mlp2_dropout: float = 0.0
    batch_norm: bool = False
    feature_selection: bool = True
    fs_hidden_units: tuple[int, ...] = (1024, 512)
    fusion_heads: int = 2  # H
    embedding_init_std: float = 1e-4

    def validate(self) -> None:
        check_config(self, positive=["embedding_dim", "fusion_heads"],
                     units=["mlp1_hidden_units", "mlp2_hidden_units", "fs_hidden_units"],
                     rates=["mlp1_dropout", "mlp2_dropout"])
        for name in ("mlp1_hidden_units", "mlp2_hidden_units"):
            if getattr(self, name)[-1] % self.fusion_heads:
                raise ValueError(f"model.{name}: the last size ({getattr(self, name)[-1]}) must be divisible by "
                                 f"model.fusion_heads ({self.fusion_heads})")


class FeatureSelectionGate(nn.Module):
    """g = 2 sigmoid(MLP(c)), one weight per input value (D); context-free, so the same for every sample."""

    def __init__(self, embedding_dim: int, out_dim: int, hidden_units: tuple[int, ...], init_std: float):
        super().__init__()
        self.context = nn.Parameter(torch.randn(embedding_dim) * init_std)  # c (see the module docstring)
        self.mlp = mlp_tower(embedding_dim, hidden_units, out_dim)

    def forward(self) -> torch.Tensor:  # -> D
        return 2.0 * torch.sigmoid(self.mlp(self.context.unsqueeze(0))).squeeze(0)


class BilinearFusion(nn.Module):
    """logit = b + w_1^T o_1 + w_2^T o_2 + sum_j o_{1,j}^T W_j o_{2,j} (H heads)."""

    def __init__(self, dim1: int, dim2: int, heads: int):
        super().__init__()
        self.heads = heads
        self.linear1 = nn.Linear(dim1, 1)
        self.linear2 = nn.Linear(dim2, 1, bias=False)  # one bias is enough
        h1, h2 = dim1 // heads, dim2 // heads
        self.bilinear = nn.Parameter(torch.randn(heads, h1, h2) * math.sqrt(2.0 / (heads * h1 * h2 + 1)))

    def forward(self, o1: torch.Tensor, o2: torch.Tensor) -> torch.Tensor:  # B x h_1, B x h_2 -> B
        b = o1.shape[0]
        heads1 = o1.view(b, self.heads, -1)  # B x H x h_1/H
        heads2 = o2.view(b, self.heads, -1)  # B x H x h_2/H
        cross = torch.einsum("bhx,hxy,bhy->b", heads1, self.bilinear, heads2)
        return (self.linear1(o1) + self.linear2(o2)).squeeze(-1) + cross


@register("finalmlp", FinalMLPConfig, "FinalMLP: two gated MLP streams, bilinear fusion")
class FinalMLP(nn.Module):
    def __init__(self, feature_map: FeatureMap, cfg: FinalMLPConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embedding = FieldEmbedding(feature_map, cfg.embedding_dim, cfg.embedding_init_std)
        dim = self.embedding.num_fields * cfg.embedding_dim
        self.mlp1 = mlp_tower(dim, cfg.mlp1_hidden_units, None, cfg.mlp1_dropout, cfg.batch_norm)
        self.mlp2 = mlp_tower(dim, cfg.mlp2_hidden_units, None, cfg.mlp2_dropout, cfg.batch_norm)
        if cfg.feature_selection:
            self.gate1 = FeatureSelectionGate(cfg.embedding_dim, dim, cfg.fs_hidden_units, cfg.embedding_init_std)
            self.gate2 = FeatureSelectionGate(cfg.embedding_dim, dim, cfg.fs_hidden_units, cfg.embedding_init_std)
        self.fusion = BilinearFusion(cfg.mlp1_hidden_units[-1], cfg.mlp2_hidden_units[-1], cfg.fusion_heads)
        init_linear_xavier(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embedding(batch).flatten(1)  # B x D
        x1, x2 = (x * self.gate1(), x * self.gate2()) if self.cfg.feature_selection else (x, x)
        return self.fusion(self.mlp1(x1), self.mlp2(x2))  # B
