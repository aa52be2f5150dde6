"""DLF: Dynamic Low-Order-Aware Fusion for CTR prediction (Wang et al., SIGIR 2025).

Notation (../docs and README): B batch, F fields, d embedding size, E1 the embedding
output (B x F x d), E^(l) the input tokens of layer l (B x N_l x d, N_1 = F),
r rank, n_F tokens per interaction branch (alpha, beta), n_L implicit (gamma) tokens,
N = 2 n_F + n_L tokens out of each layer (fewer when a branch is switched off).

Each layer is RLI (three branches reading E^(l), plus a residual gate) followed by a
fusion of the branch outputs:

  gamma (implicit)   Z_D = W_D^T E^(l)                                 n_L x d
  beta  (high-rank)  Z_C = MLP(LN(flat(E^(l) (E^(l)T W_C))))           n_F x d
  alpha (low-rank)   Z_L = MLP(LN(flat(X0 (E^(l)T W_L))))              n_F x d
                     X0 = E1 in layer 1, P^T E1 after (P: F x N_l)
  Z      = [Z_C ; Z_L ; Z_D]                                            N x d
  Z'     = NAF(Z)                      (fusion="attention")  or  Z   (fusion="concat")
  E^(l+1)= LN(Z' + g * R^T E^(l))      g = gate (or 1 with gate=False); R = I when N_l = N

With fusion="concat" and gate=False this is exactly the authors' released
computation (checked against shared fixtures to 1e-5). Parameter names follow the
released code (lcb = gamma, fmb = beta, fmb_x0 = alpha) so its weights load as is.

NAF (network-aware attention fusion), our design from the paper's description,
since its exact equations were not available to us:
  K = Z + T[branch(j)]      a learned d-vector per branch added to each key token, so
                            attention scores know which sub-network a token came from
  A = softmax(Q K^T / sqrt(d_h)) per head (H heads of size d_h = d / H), with Q a
                            learned N x d matrix of output queries (one per output token)
  NAF(Z) = Z + A Z          every output token draws on the tokens of all three branches
Why this shape: (1) the residual `Z +` keeps the released concat computation as the
starting point, so NAF can only add cross-branch mixing, never lose a branch;
(2) learned queries and unprojected keys/values cost 2 N^2 d multiply-adds per sample
per layer (~1.2M at the defaults, against ~5M for the rest of the layer), keeping
attention within ~1.3x of concat mode; (3) the scores still depend on the input
through the keys, so the mix is chosen per sample ("dynamic" fusion).

Gate (residual-aware part of RLI): g = sigmoid(R^T E^(l) w_g + b_g), one scalar per
token and sample (w_g: d, b_g: one bias per output token, initialised to 1 so that
~73% of the residual passes at the start). It lets a layer damp noisy input tokens
instead of re-injecting them at full strength as a plain skip does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
import torch.nn.functional as F

from dlf.data.features import Batch, FeatureMap
from dlf.models.embedding import FieldEmbedding
from dlf.models.layers import init_linear_xavier, mlp_block, raw_matrix
from dlf.models.registry import register


@dataclass
class DLFConfig:
    embedding_dim: int = 64  # d
    layers: int = 3  # L
    rank: int = 24  # r
    interaction_tokens: int = 32  # n_F: tokens out of alpha and of beta
    implicit_tokens: int = 32  # n_L: tokens out of gamma
    hidden: int = 512  # h: hidden width of the branch MLPs and the head
    dropout: float = 0.0
    fusion: Literal["attention", "concat"] = "attention"
    attention_heads: int = 4
    gate: bool = True
    alpha: bool = True  # raw-embedding cross (the "low-order-aware" branch)
    beta: bool = True
    gamma: bool = True
    embedding_init_std: float = 1e-4

    def validate(self) -> None:
        if not (self.alpha or self.beta or self.gamma):
            raise ValueError("model: at least one of alpha, beta, gamma must be on")
        if self.fusion not in ("attention", "concat"):
            raise ValueError(f"model.fusion must be 'attention' or 'concat', got {self.fusion!r}")
        if self.fusion == "attention" and self.embedding_dim % self.attention_heads:
            raise ValueError(f"model.embedding_dim ({self.embedding_dim}) must be divisible by "
                             f"model.attention_heads ({self.attention_heads})")
        for name in ("embedding_dim", "layers", "rank", "interaction_tokens", "implicit_tokens", "hidden",
                     "attention_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")


class TokenMix(nn.Module):
    """Y = W^T X: mixes N_in tokens into N_out tokens (W: N_in x N_out, no bias)."""

    def __init__(self, in_tokens: int, out_tokens: int):
        super().__init__()
        self.weight = raw_matrix(in_tokens, out_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x N_in x d -> B x N_out x d
        return torch.matmul(self.weight.t(), x)


class InteractionBlock(nn.Module):
    """alpha / beta: MLP(LN(flat(left (right^T W)))), out_tokens x d."""

    def __init__(self, in_tokens: int, rank: int, out_tokens: int, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.out_tokens, self.dim = out_tokens, dim
        self.weight = raw_matrix(in_tokens, rank)  # N_l x r
        self.norm = nn.LayerNorm(in_tokens * rank)
        self.mlp = mlp_block(in_tokens * rank, hidden, out_tokens * dim, dropout)

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        proj = torch.matmul(right.transpose(1, 2), self.weight)  # B x d x r   (E^T W first: the cheap order)
        s = torch.bmm(left, proj)  # B x N_l x r
        z = self.mlp(self.norm(s.flatten(1)))  # B x (n_F d)
        return z.view(-1, self.out_tokens, self.dim)  # B x n_F x d


class NetworkAwareFusion(nn.Module):
    """NAF(Z) = Z + softmax(Q (Z + T_branch)^T / sqrt(d_h)) Z, per head. See the module docstring."""

    def __init__(self, branch_tokens: list[int], dim: int, heads: int):
        super().__init__()
        n = sum(branch_tokens)
        self.heads = heads
        self.register_buffer("branch_of_token",
                             torch.repeat_interleave(torch.arange(len(branch_tokens)), torch.tensor(branch_tokens)),
                             persistent=False)  # N
        self.branch_embedding = nn.Parameter(torch.randn(len(branch_tokens), dim) * 0.02)  # n_branches x d
        self.query = nn.Parameter(torch.randn(n, dim) / math.sqrt(dim))  # N x d

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # B x N x d
        b, n, d = z.shape
        h = self.heads
        keys = z + self.branch_embedding[self.branch_of_token]  # B x N x d
        q = self.query.view(n, h, d // h).transpose(0, 1).unsqueeze(0).expand(b, -1, -1, -1)  # B x H x N x d_h
        k = keys.view(b, n, h, d // h).transpose(1, 2)  # B x H x N x d_h
        v = z.view(b, n, h, d // h).transpose(1, 2)  # B x H x N x d_h
        mixed = F.scaled_dot_product_attention(q, k, v)  # B x H x N x d_h
        return z + mixed.transpose(1, 2).reshape(b, n, d)


class ResidualGate(nn.Module):
    """g = sigmoid(x w_g + b_g): one gate per token and sample, B x N x 1."""

    def __init__(self, tokens: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.ones(tokens, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x N x d -> B x N x d
        return torch.sigmoid(torch.matmul(x, self.weight).unsqueeze(-1) + self.bias) * x


class DLFLayer(nn.Module):
    def __init__(self, num_fields: int, in_tokens: int, cfg: DLFConfig):
        super().__init__()
        d, r, n_f, n_l = cfg.embedding_dim, cfg.rank, cfg.interaction_tokens, cfg.implicit_tokens
        self.cfg = cfg
        branch_tokens = [n for n, on in ((n_f, cfg.beta), (n_f, cfg.alpha), (n_l, cfg.gamma)) if on]
        out_tokens = sum(branch_tokens)
        if cfg.beta:
            self.fmb = InteractionBlock(in_tokens, r, n_f, d, cfg.hidden, cfg.dropout)
        if cfg.alpha:
            self.fmb_x0 = InteractionBlock(in_tokens, r, n_f, d, cfg.hidden, cfg.dropout)
            if in_tokens != num_fields:
                self.x0_change_projection = TokenMix(num_fields, in_tokens)  # P: F x N_l
        if cfg.gamma:
            self.lcb = TokenMix(in_tokens, n_l)  # W_D: N_l x n_L
        if in_tokens != out_tokens:
            self.residual_projection = TokenMix(in_tokens, out_tokens)  # R: N_l x N
        if cfg.fusion == "attention":
            self.fusion = NetworkAwareFusion(branch_tokens, d, cfg.attention_heads)
        if cfg.gate:
            self.gate = ResidualGate(out_tokens, d)
        self.norm = nn.LayerNorm(d)
        self.out_tokens = out_tokens

    def forward(self, e: torch.Tensor, e1: torch.Tensor) -> torch.Tensor:
        # e: E^(l), B x N_l x d;  e1: E1, B x F x d
        parts = []
        if self.cfg.beta:
            parts.append(self.fmb(e, e))  # Z_C: B x n_F x d
        if self.cfg.alpha:
            x0 = self.x0_change_projection(e1) if hasattr(self, "x0_change_projection") else e1  # B x N_l x d
            parts.append(self.fmb_x0(x0, e))  # Z_L: B x n_F x d
        if self.cfg.gamma:
            parts.append(self.lcb(e))  # Z_D: B x n_L x d
        z = torch.cat(parts, dim=1)  # B x N x d, order [beta, alpha, gamma]
        if self.cfg.fusion == "attention":
            z = self.fusion(z)
        res = self.residual_projection(e) if hasattr(self, "residual_projection") else e  # B x N x d
        if self.cfg.gate:
            res = self.gate(res)
        return self.norm(z + res)  # E^(l+1): B x N x d


class DLF(nn.Module):
    def __init__(self, feature_map: FeatureMap, cfg: DLFConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embedding = FieldEmbedding(feature_map, cfg.embedding_dim, cfg.embedding_init_std)
        num_fields = self.embedding.num_fields
        layers, tokens = [], num_fields
        for _ in range(cfg.layers):
            layers.append(DLFLayer(num_fields, tokens, cfg))
            tokens = layers[-1].out_tokens
        self.layers = nn.ModuleList(layers)
        self.head = mlp_block(tokens * cfg.embedding_dim, cfg.hidden, 1, cfg.dropout)
        init_linear_xavier(self)

    def layer_outputs(self, e1: torch.Tensor) -> list[torch.Tensor]:
        """E^(2) .. E^(L+1) for embedding output E1 (B x F x d)."""
        outs, e = [], e1
        for layer in self.layers:
            e = layer(e, e1)
            outs.append(e)
        return outs

    def head_logit(self, tokens: torch.Tensor) -> torch.Tensor:  # B x N x d -> B
        return self.head(tokens.flatten(1)).squeeze(-1)

    def forward(self, batch: Batch) -> torch.Tensor:
        e1 = self.embedding(batch)  # B x F x d
        return self.head_logit(self.layer_outputs(e1)[-1])  # B logits


register("dlf", DLFConfig, "DLF with network-aware attention fusion (NAF) and the RLI gate")(DLF)
register("dlf_concat", DLFConfig, "DLF as in the authors' released code: concat fusion, plain residual",
         fusion="concat", gate=False)(DLF)
