"""DCNv2 (R. Wang, R. Shivanna, D. Cheng, S. Jain, D. Lin, L. Hong, E. Chi, WWW 2021): a full-matrix cross
network combined with a DNN, stacked or in parallel, optionally with a low-rank mixture of experts (DCN-Mix).

  x_0     = flat(E1)                                             B x D, D = F d
  cross:  x_{l+1} = x_0 * (W_l x_l + b_l) + x_l                   W_l: D x D  (* elementwise)
  mix:    x_{l+1} = sum_i G_i(x_l) E_i(x_l) + x_l                 i = 1..K experts, G = softmax(W_G x_l)
          E_i(x)  = x_0 * (U_i tanh(C_i tanh(V_i^T x)) + b_l)     V_i, U_i^T: D x r, C_i: r x r (per layer)
          W_G: K x D, no bias, one for all layers (the paper's G_i has no layer index; FuxiCTR's CrossNetMix)
  parallel:       logit = w^T [x_L ; MLP(x_0)] + b
  stacked:        logit = MLP(x_L) -> 1
  crossnet_only:  logit = w^T x_L + b

Defaults: FuxiCTR `DCNv2_default` (parallel, 3 cross layers, DNN 500-500-500, ReLU, no BatchNorm, dropout 0,
mixture off; when on: rank 32, 4 experts); embedding_dim 16 (BARS Criteo_x4_001 setting). Init: embeddings
N(0, 1e-4), every Linear and the V/C/U factors Xavier normal, biases zero.
Deliberate: each expert's V_i, C_i, U_i is Xavier over its own matrix (FuxiCTR's xavier_normal_ on the whole
K x D x r tensor counts fan_in D r, a std about sqrt(r) times smaller); FuxiCTR's "stacked_parallel" is not offered.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from dlf.data.features import Batch, FeatureMap
from dlf.models.embedding import FieldEmbedding
from dlf.models.layers import check_config, init_linear_xavier, mlp_tower
from dlf.models.registry import register


@dataclass
class DCNv2Config:
    embedding_dim: int = 16
    structure: Literal["parallel", "stacked", "crossnet_only"] = "parallel"
    cross_layers: int = 3
    hidden_units: tuple[int, ...] = (500, 500, 500)
    dropout: float = 0.0
    batch_norm: bool = False
    low_rank_mixture: bool = False  # DCN-Mix
    low_rank: int = 32  # r
    experts: int = 4  # K
    embedding_init_std: float = 1e-4

    def validate(self) -> None:
        if self.structure not in ("parallel", "stacked", "crossnet_only"):
            raise ValueError("model.structure must be 'parallel', 'stacked' or 'crossnet_only', "
                             f"got {self.structure!r}")
        check_config(self, positive=["embedding_dim", "cross_layers", "low_rank", "experts"], rates=["dropout"])
        if self.structure != "crossnet_only":
            check_config(self, units=["hidden_units"])


class CrossLayerV2(nn.Module):
    """x_{l+1} = x_0 * (W x_l + b) + x_l."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # B x D, B x D -> B x D
        return x0 * self.linear(x) + x


def _xavier_factor(experts: int, fan_in: int, fan_out: int) -> nn.Parameter:
    """K matrices fan_in x fan_out, each Xavier normal."""
    return nn.Parameter(torch.randn(experts, fan_in, fan_out) * math.sqrt(2.0 / (fan_in + fan_out)))


class LowRankMixtureCrossLayer(nn.Module):
    """x_{l+1} = sum_i g_i * x_0 * (U_i tanh(C_i tanh(V_i^T x_l)) + b) + x_l, all K experts at once; the gate
    weights g = softmax(W_G x_l) come from the caller, whose W_G every layer shares."""

    def __init__(self, dim: int, rank: int, experts: int):
        super().__init__()
        self.v = _xavier_factor(experts, dim, rank)  # K x D x r
        self.c = _xavier_factor(experts, rank, rank)  # K x r x r
        self.u = _xavier_factor(experts, rank, dim)  # K x r x D
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x0: torch.Tensor, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        # B x D, B x D, B x K -> B x D
        z = torch.tanh(torch.einsum("bd,kdr->bkr", x, self.v))  # B x K x r
        z = torch.tanh(torch.einsum("bkr,krs->bks", z, self.c))  # B x K x r
        experts = x0.unsqueeze(1) * (torch.einsum("bkr,krd->bkd", z, self.u) + self.bias)  # B x K x D
        return (gates.unsqueeze(-1) * experts).sum(dim=1) + x


@register("dcnv2", DCNv2Config, "DCNv2: cross network + DNN, parallel/stacked, low-rank mixture")
class DCNv2(nn.Module):
    def __init__(self, feature_map: FeatureMap, cfg: DCNv2Config):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embedding = FieldEmbedding(feature_map, cfg.embedding_dim, cfg.embedding_init_std)
        dim = self.embedding.num_fields * cfg.embedding_dim
        if cfg.low_rank_mixture:
            self.cross = nn.ModuleList(LowRankMixtureCrossLayer(dim, cfg.low_rank, cfg.experts)
                                       for _ in range(cfg.cross_layers))
            self.gate = nn.Linear(dim, cfg.experts, bias=False)  # W_G, shared by every layer
        else:
            self.cross = nn.ModuleList(CrossLayerV2(dim) for _ in range(cfg.cross_layers))
        if cfg.structure == "parallel":
            self.dnn = mlp_tower(dim, cfg.hidden_units, None, cfg.dropout, cfg.batch_norm)
            self.head = nn.Linear(dim + cfg.hidden_units[-1], 1)
        elif cfg.structure == "stacked":
            self.dnn = mlp_tower(dim, cfg.hidden_units, None, cfg.dropout, cfg.batch_norm)
            self.head = nn.Linear(cfg.hidden_units[-1], 1)
        else:
            self.head = nn.Linear(dim, 1)
        init_linear_xavier(self)

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:  # B x D -> B x K, rows sum to 1
        return torch.softmax(self.gate(x), dim=-1)

    def cross_output(self, x0: torch.Tensor) -> torch.Tensor:  # B x D -> x_L, B x D
        x = x0
        for layer in self.cross:
            x = layer(x0, x, self.gate_weights(x)) if self.cfg.low_rank_mixture else layer(x0, x)
        return x

    def forward(self, batch: Batch) -> torch.Tensor:
        x0 = self.embedding(batch).flatten(1)  # B x D
        x = self.cross_output(x0)  # B x D
        if self.cfg.structure == "parallel":
            top = torch.cat([x, self.dnn(x0)], dim=1)  # B x (D + h_K)
        elif self.cfg.structure == "stacked":
            top = self.dnn(x)  # B x h_K
        else:
            top = x
        return self.head(top).squeeze(-1)  # B
