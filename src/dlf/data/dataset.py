"""In-memory split of encoded columns and a batch iterator that slices tensors.

Batches are cut from whole tensors with one gather (np.take) per column (no per-row Python);
shuffling is a seeded permutation drawn once per epoch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from dlf.data.features import Batch


@dataclass
class ArrayDataset:
    categorical: np.ndarray  # N x F_cat int
    numeric: np.ndarray  # N x F_num float32
    multi: np.ndarray  # N x F_multi x L int
    label: np.ndarray  # N float32
    group: np.ndarray | None = None  # N int
    prob: np.ndarray | None = None  # N float: true click probability (synthetic data only)

    def __post_init__(self) -> None:
        n = len(self.label)
        for name in ("categorical", "numeric", "multi", "group", "prob"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise ValueError(f"column {name!r} has {len(arr)} rows, label has {n}")
        # Torch views share memory with the numpy arrays. int32 ids stay int32 here (half the memory of a widened
        # copy: 100 MB per million Criteo rows) and are widened per batch; other integer types are widened once.
        ids = lambda a: torch.as_tensor(a if a.dtype in (np.int32, np.int64) else a.astype(np.int64))  # noqa: E731
        self._t = {
            "categorical": ids(self.categorical),
            "numeric": torch.as_tensor(self.numeric, dtype=torch.float32),
            "multi": ids(self.multi),
            "label": torch.as_tensor(self.label, dtype=torch.float32),
            "group": None if self.group is None else torch.as_tensor(self.group, dtype=torch.int64),
        }

    def __len__(self) -> int:
        return len(self.label)

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                drop_last: bool = False, skip: int = 0) -> Iterator[Batch]:
        """skip: leave out the first `skip` batches without building them (resume mid-epoch); the others are those
        of the whole iteration, bit for bit (the epoch's permutation is drawn whole either way)."""
        n = len(self)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = None
        if shuffle:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=gen).numpy()
        stop = n - n % batch_size if drop_last else n
        for start in range(skip * batch_size, stop, batch_size):
            if order is None:
                take = lambda t: None if t is None else t[start:start + batch_size]  # noqa: E731
            else:  # np.take on rows: ~30x faster than torch's index_select here (0.3 vs 8 ms for 10,000 x 26 ids)
                idx = order[start:start + batch_size]
                take = lambda t: None if t is None else torch.from_numpy(np.take(t.numpy(), idx, axis=0))  # noqa: E731
            t = self._t
            yield Batch(take(t["categorical"]).long(), take(t["numeric"]), take(t["multi"]).long(), take(t["label"]),
                        take(t["group"]))

    def shard(self, rank: int, world: int) -> "ArrayDataset":
        """Rows rank, rank + world, ... (strided, so every shard sees the same mix of rows)."""
        if not 0 <= rank < world:
            raise ValueError(f"shard rank {rank} is outside 0..{world - 1}")
        pick = lambda a: None if a is None else a[rank::world]  # noqa: E731
        return ArrayDataset(pick(self.categorical), pick(self.numeric), pick(self.multi), pick(self.label),
                            pick(self.group), pick(self.prob))

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)
