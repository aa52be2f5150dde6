"""On-disk format of a processed dataset and its memory-mapped loader.

    DIR/feature_map.json          FeatureMap (fields, vocab sizes, label, group) + meta: counts, label rate,
                                  transforms, schema, fingerprint of inputs + schema, store version
    DIR/vocab/<field>.arrow       each vocabulary field's values in id order (id = base + row)
    DIR/{train,valid,test}/
        categorical.npy           int32   N x F_cat
        numeric.npy               float32 N x F_num  (transformed; missing -> 0)
        multi.npy                 int32   N x F_multi x L (0 = padding)
        label.npy                 float32 N  (0/1)
        group.npy                 int64   N  (only when the schema has a group column)

Plain .npy files, written contiguous, opened with `np.load(mmap_mode="r")`: nothing is read
until a batch touches it. `feature_map.json` is written last and the whole folder is
renamed into place, so a folder with a feature map is complete.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from dlf.data.features import Batch, FeatureMap
from dlf.data.schema import DataError

STORE_VERSION = 1
SPLITS = ("train", "valid", "test")
# each column's dtype and number of dimensions (rows first)
LAYOUT = {"categorical": (np.int32, 2), "numeric": (np.float32, 2), "multi": (np.int32, 3), "label": (np.float32, 1),
          "group": (np.int64, 1)}
DEFAULT_BLOCK_ROWS = 1 << 16
LABEL_CHECK_ROWS = 1 << 20  # labels checked this many at a time: masks of 1 MiB, not of every row (45M on Criteo)


class MappedDataset:
    """A split held in (memory-mapped) arrays; the same interface as `ArrayDataset`.

    Ids stay int32 on disk and are widened per batch. Shuffling permutes blocks of
    `block_rows` contiguous rows, then rows inside each block (one contiguous read per
    block), so an epoch touches the file sequentially in big pieces; the order is a pure
    function of (seed, epoch).
    """

    def __init__(self, categorical: np.ndarray, numeric: np.ndarray, multi: np.ndarray, label: np.ndarray,
                 group: np.ndarray | None = None, block_rows: int = DEFAULT_BLOCK_ROWS) -> None:
        n = len(label)
        for name, arr in (("categorical", categorical), ("numeric", numeric), ("multi", multi), ("group", group)):
            if arr is not None and len(arr) != n:
                raise ValueError(f"column {name!r} has {len(arr)} rows, label has {n}")
        self.categorical, self.numeric, self.multi = categorical, numeric, multi
        self.label, self.group, self.prob = label, group, None
        self.block_rows = max(1, int(block_rows))

    def __len__(self) -> int:
        return len(self.label)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)

    def _read(self, lo: int, hi: int) -> dict:
        return {"categorical": np.asarray(self.categorical[lo:hi]), "numeric": np.asarray(self.numeric[lo:hi]),
                "multi": np.asarray(self.multi[lo:hi]), "label": np.asarray(self.label[lo:hi]),
                "group": None if self.group is None else np.asarray(self.group[lo:hi])}

    @staticmethod
    def _batch(cols: dict, idx=None) -> Batch:
        import torch  # here, not at the top: `dlf preprocess` (which writes this format) runs without torch

        def t(a, dtype):
            if a is None:
                return None
            if idx is not None:
                a = a[idx]
            return torch.from_numpy(a.astype(dtype))  # one copy: widened, writable, contiguous
        return Batch(t(cols["categorical"], np.int64), t(cols["numeric"], np.float32),
                     t(cols["multi"], np.int64), t(cols["label"], np.float32), t(cols["group"], np.int64))

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                drop_last: bool = False, skip: int = 0) -> Iterator[Batch]:
        """skip: leave out the first `skip` batches without reading their rows (resume mid-epoch); the others are
        those of the whole iteration, bit for bit."""
        n = len(self)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        stop = n - n % batch_size if drop_last else n
        if not shuffle:
            for start in range(skip * batch_size, stop, batch_size):
                yield self._batch(self._read(start, min(start + batch_size, stop)))
            return
        # seed % 2**64: numpy refuses negative seeds (train.seed may be one); the same order for seeds >= 0
        rng = np.random.default_rng([seed % 2**64, epoch, 0x5EED])
        block = self.block_rows
        order = rng.permutation(-(-n // block)) if n else np.empty(0, dtype=np.int64)
        pending: list[dict] = []
        pending_rows = 0
        emitted = unread = skip * batch_size  # the skipped batches' rows count as emitted, and are not read
        for b in order:
            lo, hi = int(b) * block, min(n, (int(b) + 1) * block)
            perm = rng.permutation(hi - lo)  # drawn for a skipped block too: the later blocks' draws stay the same
            if unread >= hi - lo:
                unread -= hi - lo
                continue
            cols = self._read(lo, hi)
            pending.append({k: (None if v is None else v[perm[unread:]]) for k, v in cols.items()})
            pending_rows += hi - lo - unread
            unread = 0
            while pending_rows >= batch_size and emitted + batch_size <= stop:
                merged = _concat(pending)
                yield self._batch({k: (None if v is None else v[:batch_size]) for k, v in merged.items()})
                emitted += batch_size
                pending = [{k: (None if v is None else v[batch_size:]) for k, v in merged.items()}]
                pending_rows -= batch_size
        if pending_rows and emitted < stop:
            yield self._batch(_concat(pending))

    def shard(self, rank: int, world: int) -> "MappedDataset":
        """Rows rank, rank + world, ... (strided, so every shard sees the same mix of rows)."""
        if not 0 <= rank < world:
            raise ValueError(f"shard rank {rank} is outside 0..{world - 1}")
        pick = lambda a: None if a is None else a[rank::world]  # noqa: E731
        return MappedDataset(pick(self.categorical), pick(self.numeric), pick(self.multi), pick(self.label),
                             pick(self.group), self.block_rows)


def _concat(parts: list[dict]) -> dict:
    if len(parts) == 1:
        return parts[0]
    return {k: (None if parts[0][k] is None else np.concatenate([p[k] for p in parts])) for k in parts[0]}


# ---- writing ------------------------------------------------------------------------------

class SplitWriter:
    """The .npy columns of one split, written front to back chunk by chunk in input order.

    Plain sequential file writes, not a memory map: the written pages are not kept in the
    process's memory, so memory stays flat however many rows are written."""

    def __init__(self, folder: Path, rows: int, n_cat: int, n_num: int, n_multi: int, max_len: int,
                 with_group: bool) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        shapes = {"categorical": (rows, n_cat), "numeric": (rows, n_num), "multi": (rows, n_multi, max_len),
                  "label": (rows,)}
        if with_group:
            shapes["group"] = (rows,)
        self.files, self.dtypes = {}, {}
        for name, shape in shapes.items():
            dtype = LAYOUT[name][0]
            fh = open(folder / f"{name}.npy", "wb")  # closed in close()
            np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                      "fortran_order": False, "shape": shape})
            self.files[name], self.dtypes[name] = fh, dtype
        self.rows, self.pos = rows, 0

    def write(self, cols: dict[str, np.ndarray]) -> None:
        n = len(cols["label"])
        if self.pos + n > self.rows:
            raise RuntimeError("more rows than counted in the first pass (input changed while reading?)")
        for name, fh in self.files.items():
            fh.write(np.ascontiguousarray(cols[name], dtype=self.dtypes[name]).data)
        self.pos += n

    def close(self) -> None:
        if self.pos != self.rows:
            raise RuntimeError(f"wrote {self.pos} rows, expected {self.rows} (input changed while reading?)")
        for fh in self.files.values():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        self.files = {}


# ---- reading ------------------------------------------------------------------------------

def is_processed(folder: str | Path) -> bool:
    fm = Path(folder) / "feature_map.json"
    if not fm.is_file():
        return False
    try:
        meta = json.loads(fm.read_text()).get("meta", {})
    except (OSError, ValueError, AttributeError):  # AttributeError: JSON that is not an object
        return False
    return isinstance(meta, dict) and meta.get("store_version") is not None


def load_split(folder: str | Path, split: str, feature_map: FeatureMap | None = None,
               mmap: bool = True) -> MappedDataset:
    folder = Path(folder) / split
    arrays = {}
    for name, (dtype, ndim) in LAYOUT.items():
        path = folder / f"{name}.npy"
        if not path.exists():
            if name == "group":
                arrays[name] = None
                continue
            raise DataError(f"{folder}: missing {name}.npy; "
                            "the processed dataset is incomplete (re-run dlf preprocess)")
        try:
            arrays[name] = np.load(path, mmap_mode="r" if mmap else None)
        except (ValueError, OSError, EOFError) as exc:  # EOFError: an empty file
            raise DataError(f"{path}: cannot read ({exc}); re-run dlf preprocess") from None
        # another dtype was cast per batch (float ids truncated), another shape a traceback or wrong batches
        if arrays[name].dtype != dtype or arrays[name].ndim != ndim:
            raise DataError(f"{path}: {arrays[name].dtype} array of shape {arrays[name].shape}, expected "
                            f"{np.dtype(dtype)} with {ndim} dimension(s); re-run dlf preprocess")
    try:
        return MappedDataset(**arrays)
    except ValueError as exc:
        raise DataError(f"{folder}: {exc}; the processed dataset is damaged (re-run dlf preprocess)") from None


def _feature_map(folder: Path) -> FeatureMap:
    """The checked feature map of a processed dataset folder, or a DataError naming what is wrong."""
    fm_path = folder / "feature_map.json"
    if not folder.is_dir():
        raise DataError(f"{folder}: no such processed dataset directory (run dlf preprocess first)")
    if not fm_path.is_file():
        raise DataError(f"{folder}: no feature_map.json: not a complete processed dataset (run dlf preprocess)")
    try:
        fm = FeatureMap.load(fm_path)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{fm_path}: unreadable feature map: {exc}") from None
    try:
        fm.check()
    except ValueError as exc:
        raise DataError(f"{fm_path}: {exc}; re-run dlf preprocess") from None
    return fm


def load_processed(folder: str | Path, mmap: bool = True
                   ) -> tuple[FeatureMap, MappedDataset, MappedDataset, MappedDataset]:
    """(feature map, train, valid, test) of a folder written by `dlf preprocess`."""
    folder = Path(folder)
    fm = _feature_map(folder)
    fm_path = folder / "feature_map.json"
    version = fm.meta.get("store_version")
    if version != STORE_VERSION:
        raise DataError(f"{fm_path}: store version {version!r} is not supported (expected {STORE_VERSION}); "
                        "re-run dlf preprocess")
    splits = [load_split(folder, s, fm, mmap) for s in SPLITS]
    n_cat, n_num, n_multi = (len(fm.of_kind(k)) for k in ("categorical", "numeric", "multi"))
    max_len = max((f.max_len for f in fm.of_kind("multi")), default=1)  # as preprocess pads
    widths = {"categorical": (n_cat,), "numeric": (n_num,), "multi": (n_multi, max_len)}
    for name, ds in zip(SPLITS, splits):
        want = fm.meta.get("splits", {}).get(name, {}).get("rows")
        if want is not None and len(ds) != want:
            raise DataError(f"{folder / name}: has {len(ds)} rows, feature map says {want}; re-run dlf preprocess")
        for column, width in widths.items():
            shape = getattr(ds, column).shape
            if shape[1:] != width:
                raise DataError(f"{folder / name / column}.npy: shape {shape}, feature_map.json expects "
                                f"(rows, {', '.join(map(str, width))}); re-run dlf preprocess")
        if (fm.group is None) != (ds.group is None):  # gAUC silently left out, or computed on a stale column
            found = (f"no group.npy, feature_map.json has the group column {fm.group!r}" if ds.group is None
                     else "group.npy, feature_map.json has no group column")
            raise DataError(f"{folder / name}: {found}; re-run dlf preprocess")
        _check_ids(folder / name, "categorical", ds.categorical, fm.of_kind("categorical"))
        _check_ids(folder / name, "multi", ds.multi, fm.of_kind("multi"))
        _check_labels(folder / name, ds.label)
    return fm, splits[0], splits[1], splits[2]


def _check_labels(where: Path, label: np.ndarray) -> None:
    """Every label 0 or 1: another coding (-1/1) or NaN trained on silently wrong BCE targets."""
    for start in range(0, len(label), LABEL_CHECK_ROWS):
        chunk = label[start:start + LABEL_CHECK_ROWS]
        off = (chunk != 0) & (chunk != 1)
        if off.any():
            row = start + int(off.argmax())
            raise DataError(f"{where}/label.npy: labels must be 0 or 1, row {row} holds {label[row]:g}; "
                            "re-run dlf preprocess")


def _check_ids(where: Path, column: str, ids: np.ndarray, fields: list) -> None:
    """Every id within its field's vocabulary: one out of range silently read another field's rows of the fused
    embedding table (or was an IndexError deep in torch), e.g. after feature_map.json was swapped or edited.
    One pass per column over the mapped file, a fraction of one training epoch's reads."""
    if not len(ids) or not fields:
        return
    axes = (0, 2) if ids.ndim == 3 else 0  # multi: N x fields x max_len
    low, high = ids.min(axis=axes), ids.max(axis=axes)
    for f, lo, hi in zip(fields, low, high):
        if lo < 0 or hi >= f.vocab_size:
            raise DataError(f"{where}/{column}.npy: field {f.name!r} holds ids {int(lo)}..{int(hi)}, its vocabulary "
                            f"in feature_map.json has {f.vocab_size} (ids 0..{f.vocab_size - 1}): the data and the "
                            "feature map do not belong together; re-run dlf preprocess")


@dataclass
class ProcessedData:
    """What `dlf.api.train` needs from a dataset (the same shape as the synthetic generator's result)."""

    feature_map: FeatureMap
    train: MappedDataset
    valid: MappedDataset
    test: MappedDataset


def load_dataset(folder: str | Path) -> ProcessedData:
    fm, train, valid, test = load_processed(folder)
    if len(train) == 0 or len(valid) == 0 or len(test) == 0:
        empty = [n for n, d in zip(SPLITS, (train, valid, test)) if len(d) == 0]
        split = fm.meta.get("schema", {}).get("split", {})
        hint = ("other --option ratios=... or input files" if split.get("method") != "time" else
                f"--input valid=FILE / test=FILE: a time split keeps the rows of one {split.get('time_column')!r} "
                "value together, so too few distinct times leave a split empty whatever the ratios")
        raise DataError(f"{folder}: split(s) {empty} are empty; training needs rows in train, valid and test "
                        f"(re-run dlf preprocess with {hint})")
    return ProcessedData(fm, train, valid, test)


def vocabulary(folder: str | Path, name: str) -> dict[str, int]:
    """value -> id of a vocabulary field of a processed dataset (missing values: id 2 when the field had any)."""
    import pyarrow.feather as feather

    folder = Path(folder)
    fm = _feature_map(folder)  # a folder that is not a processed dataset: one line, not FileNotFoundError
    info = fm.meta.get("fields", {}).get(name)
    path = folder / "vocab" / f"{name}.arrow"
    if info is None or not path.exists():
        raise DataError(f"{folder}: field {name!r} has no vocabulary (numeric, hashed or unknown field)")
    values = feather.read_table(path)["value"].to_pylist()
    base = int(info["first_value_id"])
    return {v: base + i for i, v in enumerate(values)}
