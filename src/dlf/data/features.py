"""The two contracts every part of dlf meets at: `FeatureMap` and `Batch`.

A `FeatureMap` describes the model's input fields (what preprocessing wrote, what
the embedding layer is built from, what a bundle carries). A `Batch` holds one
batch of encoded tensors; loaders produce it and models consume it.

Id conventions for categorical and multi-valued fields: id 0 is padding (masked
out of multi-valued means), id 1 is out-of-vocabulary, real values start at 2.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal

from dlf._io import atomic_write_json

if TYPE_CHECKING:  # data code does not import torch: `dlf preprocess` starts without it
    import torch

FORMAT_VERSION = 1
PAD_ID = 0
OOV_ID = 1

FieldKind = Literal["categorical", "numeric", "multi"]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: FieldKind
    vocab_size: int = 0  # categorical/multi: number of ids including PAD and OOV; numeric: 0
    max_len: int = 0  # multi: padded list length


@dataclass
class FeatureMap:
    fields: list[FieldSpec]
    label: str = "label"
    group: str | None = None  # column used for gAUC, if any
    meta: dict = field(default_factory=dict)  # counts, label rate, schema hash, ...
    format_version: int = FORMAT_VERSION

    def of_kind(self, kind: FieldKind) -> list[FieldSpec]:
        return [f for f in self.fields if f.kind == kind]

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureMap":
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"feature map format version {version!r} is not supported (expected {FORMAT_VERSION})")
        fields = [FieldSpec(**f) for f in d["fields"]]
        return cls(fields=fields, label=d.get("label", "label"), group=d.get("group"),
                   meta=d.get("meta", {}), format_version=version)

    def check(self) -> None:
        """ValueError naming what is off in the types the loaders, the encoder and the models rely on: a hand-edited
        feature map was a traceback deep inside them (or a TypeError at a server's first request)."""
        stats = self.meta.get("fields", {}) if isinstance(self.meta, dict) else None
        if not isinstance(stats, dict) or not all(isinstance(v, dict) for v in stats.values()):
            raise ValueError("malformed feature map: 'meta' and its 'fields' must be objects of objects")
        if not self.fields:
            raise ValueError("malformed feature map: no fields")
        for f in self.fields:
            sizes = (f.vocab_size, f.max_len)
            if (not isinstance(f.name, str) or f.kind not in ("categorical", "numeric", "multi")
                    or not all(type(v) is int and v >= 0 for v in sizes) or f.kind == "multi" and f.max_len < 1):
                raise ValueError(f"malformed feature map: field {f.name!r}: expected a name, a kind (categorical, "
                                 f"numeric or multi) and integer vocab_size/max_len >= 0 (max_len >= 1 for multi), "
                                 f"got kind {f.kind!r}, vocab_size {f.vocab_size!r}, max_len {f.max_len!r}")

    def save(self, path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> "FeatureMap":
        with open(path) as fh:
            return cls.from_dict(json.load(fh))


@dataclass
class Batch:
    """One batch of encoded inputs. Fields of each kind appear in FeatureMap order."""

    categorical: torch.Tensor  # B x F_cat, int64 ids
    numeric: torch.Tensor  # B x F_num, float32 (already transformed; missing -> 0)
    multi: torch.Tensor  # B x F_multi x L, int64 ids, PAD_ID = padding
    label: torch.Tensor  # B, float32 in {0, 1}
    group: torch.Tensor | None = None  # B, int64 group ids for gAUC

    def __len__(self) -> int:
        return self.label.shape[0]

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.categorical), move(self.numeric), move(self.multi), move(self.label), move(self.group))
