"""AutoInt+ (W. Song, C. Shi, Z. Xiao, Z. Duan, Y. Xu, M. Zhang, J. Tang, CIKM 2019): stacked multi-head
self-attention over the field tokens ("interacting layers"), plus a parallel DNN (the "+").

Per interacting layer, with input tokens e_m (m = 1..F) of size d_in and H heads of size d_h (d' = H d_h):
  alpha^h_{m,k} = softmax_k( <W_Q^h e_m, W_K^h e_k> [/ sqrt(d_h) if use_scale] )   attention over the F tokens
  ~e^h_m        = sum_k alpha^h_{m,k} W_V^h e_k                                   d_h
  e'_m          = ReLU( [~e^1_m ; ... ; ~e^H_m] + W_Res e_m )                    d'  (residual projection)
Then:
  logit = w^T flat(e^(L)) + MLP(flat(E1)) + b

The paper scores with a plain inner product (no 1/sqrt(d_h)), as FuxiCTR's `use_scale: False`; both offered.
Defaults: embedding_dim 16, 3 interacting layers, 2 heads, d' = 32 (the paper's setting); DNN 400-400 with ReLU,
no BatchNorm, dropout 0 (FuxiCTR `AutoInt_base`). Init: embeddings N(0, 1e-4); Linear Xavier normal, zero bias.
Deliberate: every layer has its W_Res (the paper's equation); FuxiCTR adds x unprojected when d_in = d'.
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
class AutoIntConfig:
    embedding_dim: int = 16
    attention_layers: int = 3
    attention_heads: int = 2
    attention_dim: int = 32  # d' = H * d_h: token size after each interacting layer
    use_scale: bool = False
    hidden_units: tuple[int, ...] = (400, 400)
    dropout: float = 0.0  # on the DNN and on the attention weights
    batch_norm: bool = False
    embedding_init_std: float = 1e-4

    def validate(self) -> None:
        check_config(self, positive=["embedding_dim", "attention_layers", "attention_heads", "attention_dim"],
                     units=["hidden_units"], rates=["dropout"])
        if self.attention_dim % self.attention_heads:
            raise ValueError(f"model.attention_dim ({self.attention_dim}) must be divisible by "
                             f"model.attention_heads ({self.attention_heads})")


class InteractingLayer(nn.Module):
    """Multi-head self-attention over tokens, residual projection, ReLU: B x F x d_in -> B x F x d'."""

    def __init__(self, in_dim: int, attention_dim: int, heads: int, use_scale: bool, dropout: float):
        super().__init__()
        self.heads, self.head_dim = heads, attention_dim // heads
        self.scale = 1.0 / math.sqrt(self.head_dim) if use_scale else 1.0
        self.query = nn.Linear(in_dim, attention_dim, bias=False)
        self.key = nn.Linear(in_dim, attention_dim, bias=False)
        self.value = nn.Linear(in_dim, attention_dim, bias=False)
        self.residual = nn.Linear(in_dim, attention_dim, bias=False)  # W_Res
        self.dropout = nn.Dropout(dropout)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:  # B x F x d' -> B x H x F x d_h
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:  # B x F x d_in -> B x H x F x F, rows sum to 1
        q, k = self._split_heads(self.query(x)), self._split_heads(self.key(x))
        return torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, f, _ = x.shape
        weights = self.dropout(self.attention_weights(x))  # B x H x F x F
        mixed = torch.matmul(weights, self._split_heads(self.value(x)))  # B x H x F x d_h
        mixed = mixed.transpose(1, 2).reshape(b, f, -1)  # B x F x d'
        return torch.relu(mixed + self.residual(x))


@register("autoint", AutoIntConfig, "AutoInt+: multi-head self-attention over field tokens + DNN")
class AutoInt(nn.Module):
    def __init__(self, feature_map: FeatureMap, cfg: AutoIntConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embedding = FieldEmbedding(feature_map, cfg.embedding_dim, cfg.embedding_init_std)
        num_fields = self.embedding.num_fields
        self.attention = nn.ModuleList(
            InteractingLayer(cfg.embedding_dim if i == 0 else cfg.attention_dim, cfg.attention_dim,
                             cfg.attention_heads, cfg.use_scale, cfg.dropout)
            for i in range(cfg.attention_layers))
        self.attention_head = nn.Linear(num_fields * cfg.attention_dim, 1)
        self.dnn = mlp_tower(num_fields * cfg.embedding_dim, cfg.hidden_units, 1, cfg.dropout, cfg.batch_norm)
        init_linear_xavier(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        e = self.embedding(batch)  # B x F x d
        x = e
        for layer in self.attention:
            x = layer(x)  # B x F x d'
        y_attention = self.attention_head(x.flatten(1)).squeeze(-1)  # B
        y_dnn = self.dnn(e.flatten(1)).squeeze(-1)  # B
        return y_attention + y_dnn
