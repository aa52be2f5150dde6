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
  S_b = P_b^T Z_b           m learned summary tokens ("slots") per branch b, each a mix of
                            that branch's tokens only (P_b: n_b x m)      3m x d in all
  K = S + T[branch(s)]      a learned d-vector per branch added to each slot's key, so the
                            scores know which sub-network a slot summarises
  A = softmax(Q K^T / sqrt(d_h)) per head (H heads of size d_h = d / H), with Q a
                            learned N x d matrix of output queries (one per output token)
  NAF(Z) = Z + A S          every output token draws on summaries of all three branches
Why this shape: (1) the residual `Z +` keeps the released concat computation as the
starting point, so NAF can only add cross-branch mixing, never lose a branch;
(2) the scores still depend on the input through the keys, so the mix is chosen per
sample ("dynamic" fusion); (3) cost: attending over 3m slots instead of all N tokens
(`model.fusion_slots: 0`) cuts the scores from H N^2 to H N 3m per sample (4x at the
defaults, m = 8), and one head (H = 1, d_h = d) keeps the per-sample products large
enough to run efficiently. Softmax and its backward are memory-bound on CPU, so the
size of the scores, not the multiply-adds, sets NAF's price: over all N tokens with
4 heads a training step cost ~2.3x concat mode (bf16, 2 cores); the defaults cost what
docs/benchmarks.md, "Training speed", reports (target: at most 1.3x).

Products are ordered for speed without changing the math: the four weights that
multiply E^(l) from the left (W_C, W_L, W_D, R) are two batched products, and alpha's
X0 (E^T W_L) is computed as P^T (E1 (E^T W_L)) (fewer multiply-adds, X0 never formed).

Gate (residual-aware part of RLI): g = sigmoid(R^T E^(l) w_g + b_g), one scalar per
token and sample (w_g: d, b_g: one bias per output token, initialised to 1 so that
~73% of the residual passes at the start). It lets a layer damp noisy input tokens
instead of re-injecting them at full strength as a plain skip does.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from dlf.data.features import Batch, FeatureMap
from dlf.models.embedding import FieldEmbedding
from dlf.models.layers import check_config, init_linear_xavier, mlp_block, raw_matrix
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
    attention_heads: int = 1  # H: on CPU each extra head costs ~0.2x concat mode per step (many tiny products)
    fusion_slots: int = 8  # m: NAF keys/values are m summary tokens per branch (at most its tokens); 0 = all N
    gate: bool = True
    alpha: bool = True  # raw-embedding cross (the "low-order-aware" branch)
    beta: bool = True
    gamma: bool = True
    embedding_init_std: float = 1e-4
    # recompute each layer in the backward pass instead of keeping its activations (activation checkpointing):
    # ~70-80% less activation memory for one more forward pass (~+25-35% step time); same results
    checkpoint_layers: bool = False

    def validate(self) -> None:
        if not (self.alpha or self.beta or self.gamma):
            raise ValueError("model: at least one of alpha, beta, gamma must be on")
        if self.fusion not in ("attention", "concat"):
            raise ValueError(f"model.fusion must be 'attention' or 'concat', got {self.fusion!r}")
        for name in ("embedding_dim", "layers", "rank", "interaction_tokens", "implicit_tokens", "hidden",
                     "attention_heads"):  # before the divisibility check: attention_heads=0 was a ZeroDivisionError
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.fusion == "attention" and self.embedding_dim % self.attention_heads:
            raise ValueError(f"model.embedding_dim ({self.embedding_dim}) must be divisible by "
                             f"model.attention_heads ({self.attention_heads})")
        if self.fusion_slots < 0:
            raise ValueError(f"model.fusion_slots must be >= 0 (0 = attend over all tokens), got {self.fusion_slots}")
        check_config(self, rates=["dropout"])


@contextlib.contextmanager
def frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """BatchNorm under `module` normalises with the batch's statistics (as in training) but leaves its running
    statistics as they are: for the recomputation of a checkpointed layer, whose forward pass already updated them.
    Momentum 0 keeps the running mean and variance (not track_running_stats=False: the recomputation would then save
    fewer tensors than the forward pass, which checkpoint refuses); the batch counter is put back."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


def autocast_input(x: torch.Tensor) -> torch.Tensor:
    """x in autocast's low-precision dtype when autocast is on for its device, else x. Casting once up front lets every
    product that reads x share one copy (autocast itself casts a non-parameter tensor again at each product)."""
    if torch.is_autocast_enabled(x.device.type):
        return x.to(torch.get_autocast_dtype(x.device.type))
    return x


def token_mix(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """W^T X for every sample: weight N_in x N_out, x B x N_in x c -> B x N_out x c.

    One batched product with W^T broadcast over the batch. `torch.matmul(W.t(), x)` would instead fold the batch into
    the rows of one product, which copies a transposed x (B x c x N_in) forward and its gradient backward; measured
    slower on CPU. Under autocast W is cast before the broadcast (else autocast would cast all B copies).
    """
    return torch.bmm(autocast_input(weight.t()).expand(x.shape[0], -1, -1), x)  # B x N_out x c


class TokenMix(nn.Module):
    """Y = W^T X: mixes N_in tokens into N_out tokens (W: N_in x N_out, no bias)."""

    def __init__(self, in_tokens: int, out_tokens: int):
        super().__init__()
        self.weight = raw_matrix(in_tokens, out_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x N_in x d -> B x N_out x d
        return token_mix(self.weight, x)


class InteractionBlock(nn.Module):
    """alpha / beta: MLP(LN(flat(left (right^T W)))), out_tokens x d."""

    def __init__(self, in_tokens: int, rank: int, out_tokens: int, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.out_tokens, self.dim = out_tokens, dim
        self.weight = raw_matrix(in_tokens, rank)  # N_l x r
        self.norm = nn.LayerNorm(in_tokens * rank)
        self.mlp = mlp_block(in_tokens * rank, hidden, out_tokens * dim, dropout)

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        proj_t = token_mix(self.weight, right)  # (E^T W)^T = W^T E: B x r x d   (E^T W first: the cheap order)
        return self.interact(torch.bmm(left, proj_t.transpose(1, 2)))  # s = left (E^T W): B x N_l x r

    def interact(self, s: torch.Tensor) -> torch.Tensor:  # s: B x N_l x r -> MLP(LN(flat(s))): B x n_F x d
        z = self.mlp(self.norm(s.flatten(1)))  # B x (n_F d)
        return z.view(-1, self.out_tokens, self.dim)  # B x n_F x d


class NetworkAwareFusion(nn.Module):
    """NAF(Z) = Z + softmax(Q (S + T_branch)^T / sqrt(d_h)) S per head, S = per-branch slots.
    See the module docstring."""

    def __init__(self, branch_tokens: list[int], dim: int, heads: int, slots: int):
        super().__init__()
        n = sum(branch_tokens)
        self.heads = heads
        branches = torch.arange(len(branch_tokens))
        # (output_size: the meta device, on which bundles check weight shapes before building, cannot count them)
        token_branch = torch.repeat_interleave(branches, torch.tensor(branch_tokens), output_size=n)  # N
        key_branch = token_branch  # the branch of each key: of each token, or of each slot
        if slots:
            # P = blockdiag(P_1, P_2, P_3): N x 3m, a slot mixes the tokens of its own branch only (m_b = min(m, n_b))
            slot_counts = [min(slots, k) for k in branch_tokens]
            per_branch = torch.tensor(slot_counts)
            key_branch = slot_branch = torch.repeat_interleave(branches, per_branch, output_size=sum(slot_counts))  # 3m
            self.register_buffer("pool_mask", (token_branch[:, None] == slot_branch[None, :]).float(),
                                 persistent=False)
            # init: slot j of a branch averages its tokens j, j + m_b, j + 2 m_b, ...
            # (distinct slots; identity if m_b = n_b)
            local = torch.cat([torch.arange(k) for k in branch_tokens])  # index of each token within its branch
            slot_of_token = (torch.cumsum(per_branch, 0) - per_branch)[token_branch] + local % per_branch[token_branch]
            assign = nn.functional.one_hot(slot_of_token, len(slot_branch)).float()  # N x 3m
            self.pool = nn.Parameter(assign / assign.sum(0))
        self.register_buffer("key_branch", key_branch, persistent=False)
        self.branch_embedding = nn.Parameter(torch.randn(len(branch_tokens), dim) * 0.02)  # T: n_branches x d
        self.query = nn.Parameter(torch.randn(n, dim) / math.sqrt(dim))  # Q: N x d
        # Which feature column belongs to which head: the block-diagonal layout of all heads' queries (d x H N) and
        # each head's columns of the output (H x 1 x d).
        column_head = torch.arange(dim) // (dim // heads)  # d
        self.register_buffer("query_blocks", (column_head[:, None] == torch.arange(heads).repeat_interleave(n)).float(),
                             persistent=False)
        self.register_buffer("head_columns", (torch.arange(heads)[:, None, None] == column_head).float(),
                             persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # B x N x d
        b, n, d = z.shape
        h, dh = self.heads, d // self.heads
        s = token_mix(self.pool * self.pool_mask, z) if hasattr(self, "pool") else z  # S = P^T Z: B x S x d
        # All heads' scores in one product with the block-diagonal query matrix Q_bd = blockdiag(Q_1^T, ..., Q_H^T)
        # (d x H N): no per-sample copy of Q, and one large product instead of B H small ones. Written out rather than
        # F.scaled_dot_product_attention: torch's CPU attention backward is several times slower at these sizes.
        q = autocast_input(self.query.t().repeat(1, h) * self.query_blocks / math.sqrt(dh))  # Q_bd / sqrt(d_h)
        # K Q_bd = S Q_bd + T[branch] Q_bd: the branch term is one S x (H N) bias shared by all samples, so K
        # (B x S x d) is never formed and the backward pass keeps S (which it needs anyway) instead of a copy of it.
        key_bias = torch.matmul(autocast_input(self.branch_embedding), q)[self.key_branch]  # T[branch] Q_bd: S x (H N)
        attn = torch.softmax(torch.matmul(s, q) + key_bias, dim=1)  # softmax over the S keys of K Q_j^T: B x S x (H N)
        if h == 1:
            return torch.baddbmm(z, attn.transpose(1, 2), s)  # Z + A S, the sum inside the product: B x N x d
        mixed = torch.bmm(attn.transpose(1, 2), s)  # A_j S for every head j over all d columns: B x (H N) x d
        return z + (mixed.view(b, h, n, d) * self.head_columns).sum(1)  # head j's own d_h columns of A_j S: B x N x d


def _gate_values(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """g = sigmoid(x w + b): B x N, in at least fp32 (x, the token stream, may be low precision under autocast)."""
    acc = torch.promote_types(x.dtype, torch.float32)
    return torch.sigmoid(torch.matmul(x, weight.to(x.dtype)).to(acc) + bias.squeeze(-1))


class _GateProduct(torch.autograd.Function):
    """out = sigmoid(x w + b) * x with a hand-written backward (same gradients as autograd's, fewer full-size passes).

    Autograd's backward of the three ops makes five passes over B x N x d tensors (grad * g, grad * x, its sum over
    d, the outer product of d(score) with w, and the sum of the two input gradients); this one makes three (grad . x
    per token, grad * g, and adding d(score) w to it in place), plus one read of x for w's gradient. It saves x (kept
    for other products anyway) and g (B x N); autograd's matrix-vector product also kept a contiguous copy of a
    sliced x (layer 1's R^T E). Timings: benchmarks/gate_backward.py (figures in docs/benchmarks.md).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        g = _gate_values(x, weight, bias)  # B x N
        ctx.save_for_backward(x, weight, g)
        return x * g.to(x.dtype).unsqueeze(-1)  # B x N x d

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, g = ctx.saved_tensors
        grad = grad.to(x.dtype)
        d_score = torch.linalg.vecdot(grad, x).to(g.dtype) * g * (1 - g)  # dL/d(x w + b) = (grad . x) g (1 - g): B x N
        grad_x = grad * g.to(x.dtype).unsqueeze(-1)  # through g * x ...
        grad_x.addcmul_(d_score.to(x.dtype).unsqueeze(-1), weight.to(x.dtype))  # ... and through the score x w
        # sum over samples and tokens of d_score x, as one matrix-vector product (einsum is ~10x slower in bf16 here)
        grad_w = x.reshape(-1, x.shape[-1]).t().mv(d_score.to(x.dtype).flatten()).to(weight.dtype)
        return grad_x, grad_w, d_score.sum(0).unsqueeze(-1)


class ResidualGate(nn.Module):
    """g * x with g = sigmoid(x w_g + b_g): one gate per token and sample (g: B x N x 1)."""

    def __init__(self, tokens: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.ones(tokens, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x N x d -> B x N x d
        # Under autocast x (the token stream) is low precision and stays so; g is computed in fp32.
        if torch.is_grad_enabled() and not torch.jit.is_tracing():  # training: the leaner backward
            return _GateProduct.apply(x, self.weight, self.bias)
        return _gate_values(x, self.weight, self.bias).to(x.dtype).unsqueeze(-1) * x


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
            self.fusion = NetworkAwareFusion(branch_tokens, d, cfg.attention_heads, cfg.fusion_slots)
        if cfg.gate:
            self.gate = ResidualGate(out_tokens, d)
        self.norm = nn.LayerNorm(d)
        self.out_tokens = out_tokens
        # Every weight that multiplies E^(l) from the left, in two stacked products (see forward): W_C and W_L, whose
        # results the backward pass keeps, and W_D and R, whose results it does not need.
        self._mixers = [[name for name, on in group if on] for group in (
            (("fmb", cfg.beta), ("fmb_x0", cfg.alpha)),
            (("lcb", cfg.gamma), ("residual_projection", in_tokens != out_tokens)))]

    def _stacked_mix(self, names: list[str], e: torch.Tensor) -> dict[str, torch.Tensor]:
        """{name: W^T E} for the named weights, computed as one product with the stacked [W_1 | W_2 | ...]^T."""
        if not names:
            return {}
        weights = [getattr(self, name).weight for name in names]
        return dict(zip(names, token_mix(torch.cat(weights, 1), e).split([w.shape[1] for w in weights], 1)))

    def forward(self, e: torch.Tensor, e1: torch.Tensor) -> torch.Tensor:
        # e: E^(l), B x N_l x d;  e1: E1, B x F x d
        # The four products with E^(l) on the right are two batched products:
        #   [W_C | W_L]^T E = [(E^T W_C)^T ; (E^T W_L)^T]    B x 2r x d  (kept for the backward pass by the s products)
        #   [W_D | R]^T E   = [Z_D ; R^T E]                  B x (n_L + N) x d  (not kept: a slice of one stacked result
        #                                                     would keep the whole result alive)
        # (Under autocast every product reads E^(l) and E1 in low precision: cast once here, for all of them.)
        e_mm, e1 = autocast_input(e), autocast_input(e1)
        blocks = self._stacked_mix(self._mixers[0], e_mm) | self._stacked_mix(self._mixers[1], e_mm)
        parts = []
        if self.cfg.beta:  # s_C = E (E^T W_C): B x N_l x r
            parts.append(self.fmb.interact(torch.bmm(e_mm, blocks["fmb"].transpose(1, 2))))  # Z_C: B x n_F x d
        if self.cfg.alpha:  # s_L = X0 (E^T W_L), X0 = P^T E1, computed as P^T (E1 (E^T W_L)): the F x r product is
            s = torch.bmm(e1, blocks["fmb_x0"].transpose(1, 2))  # mixed, never X0 (N_l x d)   E1 (E^T W_L): B x F x r
            if hasattr(self, "x0_change_projection"):
                s = self.x0_change_projection(s)  # P^T (E1 (E^T W_L)): B x N_l x r
            parts.append(self.fmb_x0.interact(s))  # Z_L: B x n_F x d
        if self.cfg.gamma:
            parts.append(blocks["lcb"])  # Z_D = W_D^T E: B x n_L x d
        z = torch.cat(parts, dim=1)  # B x N x d, order [beta, alpha, gamma]
        res = blocks.get("residual_projection", e)  # R^T E, or E when N_l = N: B x N x d
        del parts, blocks  # when scoring, the stacked products are freed here (autograd keeps what it needs)
        if self.cfg.fusion == "attention":
            z = self.fusion(z)
        if self.cfg.gate:
            res = self.gate(res)
        z = z + res if torch.is_grad_enabled() else z.add_(res)  # scoring: in place, one B x N x d buffer fewer
        return self.norm(z)  # E^(l+1): B x N x d


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

    def iter_layers(self, e1: torch.Tensor) -> Iterator[torch.Tensor]:
        """E^(2) .. E^(L+1), one at a time, for embedding output E1 (B x F x d)."""
        e = e1_mm = autocast_input(e1)  # one low-precision copy of E1 for layer 1 and every layer's alpha branch
        recompute = self.cfg.checkpoint_layers and torch.is_grad_enabled() and self.training
        for layer in self.layers:
            if recompute:  # the recomputation must not update BatchNorm's running statistics a second time
                e = checkpoint(layer, e, e1_mm, use_reentrant=False,
                               context_fn=lambda layer=layer: (contextlib.nullcontext(), frozen_batchnorm_stats(layer)))
            else:
                e = layer(e, e1_mm)
            yield e

    def layer_outputs(self, e1: torch.Tensor) -> list[torch.Tensor]:
        """E^(2) .. E^(L+1) for embedding output E1 (B x F x d)."""
        return list(self.iter_layers(e1))

    def head_logit(self, tokens: torch.Tensor) -> torch.Tensor:  # B x N x d -> B
        return self.head(tokens.flatten(1)).squeeze(-1)

    def forward(self, batch: Batch) -> torch.Tensor:
        e1 = self.embedding(batch)  # B x F x d
        for e in self.iter_layers(e1):  # keep only the newest layer output: when scoring, earlier ones are freed
            pass
        return self.head_logit(e)  # B logits


register("dlf", DLFConfig, "DLF with network-aware attention fusion (NAF) and the RLI gate")(DLF)
register("dlf_concat", DLFConfig, "DLF as in the authors' released code: concat fusion, plain residual",
         fusion="concat", gate=False)(DLF)
