"""WuKong (B. Zhang, L. Luo, Y. Chen et al., "Wukong: Towards a Scaling Law for Large-Scale Recommendation",
ICML 2024, arXiv 2403.02545): a stack of interaction layers, each a Factorization Machine Block (FMB) and a
Linear Compression Block (LCB) side by side, with a residual and LayerNorm. DLF's parent architecture.

  X_1     = E1                                                  B x F x d (N_1 = F tokens)
  FMB(X)  = reshape(MLP(LN(flat(X (X^T Y)))))                    Y: N_l x k, X (X^T Y) is the optimised FM X X^T Y
                                                                -> n_F x d
  LCB(X)  = W_L^T X                                             W_L: N_l x n_L, no bias -> n_L x d
  X_{l+1} = LN([FMB(X_l) ; LCB(X_l)] + R^T X_l)                 N = n_F + n_L tokens; R = I when N_l = N
  logit   = MLP(flat(X_{L+1}))

Stacking FMBs doubles the interaction order per layer (layer l reaches order 2^l); the LCB carries lower orders
forward and the residual keeps every order seen so far.

This is exactly DLF's released computation with the low-rank `alpha` branch removed (DLF concat mode, no gate):
the FMB is DLF's `beta` block and the LCB its `gamma` block. So the blocks are reused from dlf.py
(`InteractionBlock`, `TokenMix`) and parameter names match a `dlf_concat` model with `alpha=False`, whose weights
load into this model as is (tested). MLP = Linear -> BatchNorm -> ReLU -> Dropout -> Linear, as in DLF.

Defaults: the DLF authors' configuration (d 64, 3 layers, rank k 24, n_F = n_L = 32, MLP width 512, dropout 0),
so that `wukong` vs `dlf_concat` isolates DLF's additions at the same size. The rank k = 24 also matches the
paper's public-benchmark setting as reproduced by the unofficial implementation (clabrugere/wukong-recommendation).
FuxiCTR's WuKong (64-d, 8 layers) flattens the tokens and differs from the paper's equations; not followed.
Init as DLF: embeddings N(0, 1e-4), Linear Xavier normal with zero bias, raw matrices (Y, W_L, R) Kaiming uniform.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dlf.data.features import Batch, FeatureMap
from dlf.models.dlf import InteractionBlock, TokenMix
from dlf.models.embedding import FieldEmbedding
from dlf.models.layers import check_config, init_linear_xavier, mlp_block
from dlf.models.registry import register


@dataclass
class WuKongConfig:
    embedding_dim: int = 64  # d
    layers: int = 3  # L
    rank: int = 24  # k: columns of the FMB projection Y
    fmb_tokens: int = 32  # n_F
    lcb_tokens: int = 32  # n_L
    hidden: int = 512  # hidden width of the FMB MLPs and of the head
    dropout: float = 0.0
    embedding_init_std: float = 1e-4

    def validate(self) -> None:
        check_config(self, positive=["embedding_dim", "layers", "rank", "fmb_tokens", "lcb_tokens", "hidden"],
                     rates=["dropout"])


class WuKongLayer(nn.Module):
    """X_{l+1} = LN([FMB(X_l) ; LCB(X_l)] + R^T X_l)."""

    def __init__(self, in_tokens: int, cfg: WuKongConfig):
        super().__init__()
        d = cfg.embedding_dim
        self.out_tokens = cfg.fmb_tokens + cfg.lcb_tokens
        self.fmb = InteractionBlock(in_tokens, cfg.rank, cfg.fmb_tokens, d, cfg.hidden, cfg.dropout)
        self.lcb = TokenMix(in_tokens, cfg.lcb_tokens)
        if in_tokens != self.out_tokens:
            self.residual_projection = TokenMix(in_tokens, self.out_tokens)  # R: N_l x N
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x N_l x d -> B x N x d
        z = torch.cat([self.fmb(x, x), self.lcb(x)], dim=1)  # B x (n_F + n_L) x d
        residual = self.residual_projection(x) if hasattr(self, "residual_projection") else x
        return self.norm(z + residual)


@register("wukong", WuKongConfig, "WuKong: stacked FM + linear compression blocks (DLF's parent)")
class WuKong(nn.Module):
    def __init__(self, feature_map: FeatureMap, cfg: WuKongConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embedding = FieldEmbedding(feature_map, cfg.embedding_dim, cfg.embedding_init_std)
        layers, tokens = [], self.embedding.num_fields
        for _ in range(cfg.layers):
            layers.append(WuKongLayer(tokens, cfg))
            tokens = layers[-1].out_tokens
        self.layers = nn.ModuleList(layers)
        self.head = mlp_block(tokens * cfg.embedding_dim, cfg.hidden, 1, cfg.dropout)
        init_linear_xavier(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        x = self.embedding(batch)  # B x F x d
        for layer in self.layers:
            x = layer(x)  # B x N x d
        return self.head(x.flatten(1)).squeeze(-1)  # B
