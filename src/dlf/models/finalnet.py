"""FinalNet (J. Zhu, Q. Jia, G. Cai, Q. Dai, J. Li, Z. Dong, R. Tang, R. Zhang, "FINAL: Factorized Interaction
Layer for CTR Prediction", SIGIR 2023): MLP-like blocks whose layers are factorized interaction layers (FINAL),
two blocks in an ensemble, the first behind a field gate.

  FINAL layer:  h = W x + b,  split h = [h_2 ; h_1]   (two halves)
                concat: y = [h_2 ; h_1 * h_2]   (same parameters as a Linear of the output width)
                sum:    y = h_2 + h_1 * h_2     (h has twice the output width)
                then BatchNorm, optional dropout (no activation: the product supplies the non-linearity),
                so stacking K layers reaches multiplicative interactions of order 2^K.
  Field gate:   G = W_g^T E1 + b_g   (W_g: F x F over the field axis; init W_g = 0, b_g = 1, so G = 1 at start)
                gated = [E1 ; E1 * G]                                  B x 2F x d
  block 1:      y_1 = w_1^T FINALBlock_1(flat(gated)) + b_1
  block 2:      y_2 = w_2^T FINALBlock_2(flat(E1)) + b_2
  logit = (y_1 + y_2) / 2         ("2B"; "1B" uses block 1 alone)

Self-knowledge distillation ("2B", `self_distillation`, on as in FuxiCTR): each block is also trained towards
the ensemble's prediction, loss += sum_k BCE(sigmoid(y_k), stop_grad(sigmoid(logit))). A training forward leaves
that term in `self.auxiliary_loss`, which dlf's trainer adds to the BCE of the logit (and clears).
Defaults: FuxiCTR `FINAL_default` (2B, field gate on, blocks 64-64-64, concat residual, BatchNorm, no activation,
dropout 0); embedding_dim 16 (BARS Criteo_x4_001 setting; FINAL_default uses 40). Init: embeddings N(0, 1e-4);
Linear Xavier normal with zero bias; the field gate as above.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dlf.data.features import Batch, FeatureMap
from dlf.models.embedding import FieldEmbedding
from dlf.models.layers import check_config, init_linear_xavier
from dlf.models.registry import register


@dataclass
class FinalNetConfig:
    embedding_dim: int = 16
    block_type: Literal["1B", "2B"] = "2B"
    field_gate: bool = True
    block1_hidden_units: tuple[int, ...] = (64, 64, 64)
    block2_hidden_units: tuple[int, ...] = (64, 64, 64)
    block1_dropout: float = 0.0
    block2_dropout: float = 0.0
    batch_norm: bool = True
    residual_type: Literal["concat", "sum"] = "concat"
    self_distillation: bool = True  # 2B: each block also learns the ensemble's (detached) prediction
    embedding_init_std: float = 1e-4

    def validate(self) -> None:
        if self.block_type not in ("1B", "2B"):
            raise ValueError(f"model.block_type must be '1B' or '2B', got {self.block_type!r}")
        if self.residual_type not in ("concat", "sum"):
            raise ValueError(f"model.residual_type must be 'concat' or 'sum', got {self.residual_type!r}")
        check_config(self, positive=["embedding_dim"], units=["block1_hidden_units", "block2_hidden_units"],
                     rates=["block1_dropout", "block2_dropout"])
        if self.residual_type == "concat":
            for name in ("block1_hidden_units", "block2_hidden_units"):
                if any(u % 2 for u in getattr(self, name)):
                    raise ValueError(f"model.{name} must be even sizes with residual_type 'concat', "
                                     f"got {list(getattr(self, name))}")


class FactorizedInteraction(nn.Module):
    """A drop-in for Linear(in_dim, out_dim): h = W x + b = [h_2 ; h_1];
    concat -> [h_2 ; h_1 * h_2], sum -> h_2 + h_1 * h_2."""

    def __init__(self, in_dim: int, out_dim: int, residual_type: str):
        super().__init__()
        self.residual_type = residual_type
        self.linear = nn.Linear(in_dim, out_dim * 2 if residual_type == "sum" else out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B x in -> B x out
        h2, h1 = self.linear(x).chunk(2, dim=-1)
        if self.residual_type == "concat":
            return torch.cat([h2, h1 * h2], dim=-1)
        return h2 + h1 * h2


def final_block(in_dim: int, hidden_units: tuple[int, ...], residual_type: str, batch_norm: bool,
                dropout: float) -> nn.Sequential:
    """FINAL layers, each followed by [BatchNorm] and [Dropout]; no activation."""
    layers: list[nn.Module] = []
    for width in hidden_units:
        layers.append(FactorizedInteraction(in_dim, width, residual_type))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_dim = width
    return nn.Sequential(*layers)


class FieldGate(nn.Module):
    """[E ; E * (W^T E + b)] over the field axis: B x F x d -> B x 2F x d."""

    def __init__(self, num_fields: int):
        super().__init__()
        self.proj = nn.Linear(num_fields, num_fields)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.proj.weight)  # the gate starts at 1 for every field
        nn.init.ones_(self.proj.bias)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        gates = self.proj(e.transpose(1, 2)).transpose(1, 2)  # B x F x d
        return torch.cat([e, e * gates], dim=1)


@register("finalnet", FinalNetConfig, "FinalNet: two factorized-interaction blocks, one field-gated")
class FinalNet(nn.Module):
    def __init__(self, feature_map: FeatureMap, cfg: FinalNetConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embedding = FieldEmbedding(feature_map, cfg.embedding_dim, cfg.embedding_init_std)
        f, d = self.embedding.num_fields, cfg.embedding_dim
        if cfg.field_gate:
            self.field_gate = FieldGate(f)
        block1_in = (2 * f if cfg.field_gate else f) * d
        self.block1 = final_block(block1_in, cfg.block1_hidden_units, cfg.residual_type, cfg.batch_norm,
                                  cfg.block1_dropout)
        self.head1 = nn.Linear(cfg.block1_hidden_units[-1], 1)
        if cfg.block_type == "2B":
            self.block2 = final_block(f * d, cfg.block2_hidden_units, cfg.residual_type, cfg.batch_norm,
                                      cfg.block2_dropout)
            self.head2 = nn.Linear(cfg.block2_hidden_units[-1], 1)
        init_linear_xavier(self)
        if cfg.field_gate:
            self.field_gate.reset_parameters()  # after the generic Xavier init, which would overwrite it

    def branch_logits(self, batch: Batch) -> list[torch.Tensor]:
        """[y_1] or [y_1, y_2], each B."""
        e = self.embedding(batch)  # B x F x d
        gated = self.field_gate(e) if self.cfg.field_gate else e  # B x 2F x d (or F)
        logits = [self.head1(self.block1(gated.flatten(1))).squeeze(-1)]
        if self.cfg.block_type == "2B":
            logits.append(self.head2(self.block2(e.flatten(1))).squeeze(-1))
        return logits

    def forward(self, batch: Batch) -> torch.Tensor:
        logits = self.branch_logits(batch)
        logit = sum(logits) / len(logits)  # B
        if self.training and self.cfg.self_distillation and len(logits) > 1:
            target = torch.sigmoid(logit.detach().float())  # stop_grad(sigmoid(logit))
            self.auxiliary_loss = sum(F.binary_cross_entropy_with_logits(y.float(), target) for y in logits)
        return logit
