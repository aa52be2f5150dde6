"""Field embedding: one token of size d per field, for every field kind at once.

- categorical: one id -> row of the fused table
- numeric:     value x -> x * w_f (one learned vector per field)
- multi:       list of ids -> mean of their rows, padding (id 0) masked out

All categorical and multi-valued vocabularies live in ONE fused table; each field's
ids are shifted by its offset so a single `F.embedding` call serves every field.

`sparse=True` (set by the trainer for `train.sparse_embedding`) makes the table's gradient a
sparse tensor holding only the rows a batch looked up, for a row-wise optimiser.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from dlf.data.features import PAD_ID, Batch, FeatureMap


class FieldEmbedding(nn.Module):
    def __init__(self, feature_map: FeatureMap, dim: int, init_std: float = 1e-4, sparse: bool = False):
        super().__init__()
        self.sparse = sparse
        cat = feature_map.of_kind("categorical")
        num = feature_map.of_kind("numeric")
        multi = feature_map.of_kind("multi")
        self.dim = dim
        self.num_cat, self.num_num, self.num_multi = len(cat), len(num), len(multi)
        sizes = [f.vocab_size for f in cat + multi]
        offsets = torch.tensor([0] + sizes[:-1], dtype=torch.int64).cumsum(0)
        self.register_buffer("cat_offsets", offsets[: self.num_cat], persistent=False)  # F_cat
        self.register_buffer("multi_offsets", offsets[self.num_cat:].view(1, -1, 1), persistent=False)  # 1 x F_m x 1
        self.table = nn.Parameter(torch.empty(max(sum(sizes), 1), dim))  # V_total x d
        self.numeric_weight = nn.Parameter(torch.empty(self.num_num, dim))  # F_num x d
        nn.init.normal_(self.table, std=init_std)
        nn.init.normal_(self.numeric_weight, std=init_std)

    @property
    def num_fields(self) -> int:
        return self.num_cat + self.num_num + self.num_multi

    def unused_parameters(self) -> list[nn.Parameter]:
        """The parameters forward never reads on this data: the numeric vectors without numeric fields (0 x d), the
        table without categorical and multi-valued ones (its placeholder row). DDP must not wait for their
        gradients (it failed at the second step of every multi-process run on data without numeric fields)."""
        return ([] if self.num_cat + self.num_multi else [self.table]) + ([] if self.num_num else [self.numeric_weight])

    def lookup(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows of the fused table (... x d), with a sparse gradient when `self.sparse`."""
        return F.embedding(rows, self.table, sparse=self.sparse)

    def batch_rows(self, batch: Batch) -> torch.Tensor:
        """The distinct table rows `batch` looks up (padding ids excluded), sorted."""
        parts = [self.table.new_empty(0, dtype=torch.int64)]
        if self.num_cat:
            parts.append((batch.categorical + self.cat_offsets).flatten())
        if self.num_multi:
            parts.append((batch.multi + self.multi_offsets)[batch.multi != PAD_ID])
        return torch.unique(torch.cat(parts))

    def forward(self, batch: Batch) -> torch.Tensor:
        """Returns E1, B x F x d, tokens ordered categorical, numeric, multi-valued."""
        tokens = []
        if self.num_cat:
            tokens.append(self.lookup(batch.categorical + self.cat_offsets))  # B x F_cat x d
        if self.num_num:
            tokens.append(batch.numeric.unsqueeze(-1) * self.numeric_weight)  # B x F_num x d
        if self.num_multi:
            ids = batch.multi  # B x F_m x L
            rows = self.lookup(ids + self.multi_offsets)  # B x F_m x L x d
            mask = (ids != PAD_ID).to(rows.dtype).unsqueeze(-1)  # B x F_m x L x 1
            count = mask.sum(2).clamp_min(1.0)  # an empty list gives a zero token, not NaN
            tokens.append((rows * mask).sum(2) / count)  # B x F_m x d
        return torch.cat(tokens, dim=1)
