"""`dlf preprocess`: raw files -> vocabularies fit on train -> encoded columns on disk.

Two streaming passes (time/sequential splits first read the train files once more for the order):
  pass 1  parse + validate each chunk of text, assign rows to splits, count train values per
          field (vocabularies, numeric statistics, longest lists) and rows per split; the
          parsed chunk (categorical columns dictionary-encoded) goes to a temporary Arrow file;
  pass 2  read that file back, encode with the frozen vocabularies, append each split's rows
          to its .npy columns.
The text is parsed once: parsing is the largest cost. Everything per chunk is vectorised per
column (PyArrow compute / NumPy), and categorical work (counting, criteo buckets, vocabulary
lookups) is done on each chunk's distinct values. Memory holds a few chunks plus the value
counts, so it grows with vocabulary size, not with rows; the temporary file takes about as
much disk as the input.

Ids (see dlf.data.features): 0 = padding, 1 = out of vocabulary (and values under
min_count), 2 = missing when the field had missing values in train, then real values
by decreasing train count. Hashed fields: 2 = missing, 3 + hash % buckets.

Output goes to a temporary sibling folder that is renamed to OUT only once complete;
re-running with unchanged inputs (path, size, mtime, head/tail bytes) and unchanged
schema/options returns at once.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

from dlf._io import publish_dir, remove_dead_siblings
from dlf.data.features import OOV_ID, FeatureMap, FieldSpec
from dlf.data.presets import LIBFM_LAYOUT, ROLES, Source, get_preset
from dlf.data.readers import DEFAULT_BLOCK_BYTES, BadRows, Chunk, check_file, seconds
from dlf.data.schema import DataError, FieldOptions, Schema, read_schema_yaml
from dlf.data.store import SPLITS, STORE_VERSION, SplitWriter, is_processed

MISSING_ID = 2
# Encoding a chunk's distinct values: below this many vocabulary values per distinct value, pc.index_in
# (which builds a hash table of the whole vocabulary per call) is cheaper than VocabIndex.
INDEX_IN_RATIO = 4
PIPELINE_VERSION = 13  # bump when outputs can change, so old ones are rebuilt (2: line numbers after malformed rows;
# 3: standardize's std by a stable per-chunk merge; 4: a UTF-8 BOM is skipped in ISO-8859-1 and side files;
# 5: libFM `idx:0` is an absent feature; 6: Parquet floats beyond 2^53 read as the integer, not 1.15e+18;
# 7: Parquet bools read as "1"/"0", not "true"/"false"; 8: the version is in feature_map.json's meta, for bundles;
# 9: the fuxictr preset fills missing values as FuxiCTR does, fill_na or 0 for int/float columns;
# 10: a quoted CSV's rows are numbered by physical line, not record: the random split's key after a quoted newline;
# 11: Parquet float32 values read as their own shortest text ('0.3'), not float64's ('0.30000001192092896');
# 12: a CSV label true/false (any case) is 1/0, not a bad row (--on-bad-row skip dropped those rows);
# 13: a numeric field with no value in the train rows is 0 in every split, as in train, not its valid/test values)
_NUMBER = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
# numbers beyond float32's range are bad values: the model computes in float32 (and squares of such
# values keep the float64 statistics finite)
NUMBER_LIMIT = float(np.finfo(np.float32).max)


@dataclass
class Result:
    out: Path
    skipped: bool  # True when the output was already up to date
    feature_map: FeatureMap
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(s["rows"] for s in self.feature_map.meta["splits"].values())


# ---- hashing helpers (vectorised) ----------------------------------------------------------

def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64, copy=True)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def hash_strings(arr: pa.Array) -> np.ndarray:
    """A stable 64-bit hash of each string (polynomial over bytes, then mixed); nulls hash as ''."""
    arr = pc.fill_null(arr, "").cast(pa.large_string())
    arr = pa.concat_arrays([arr]) if arr.offset else arr
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[: len(arr) + 1]
    data = arr.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8)[offsets[0]:offsets[-1]] if data is not None else np.zeros(0, np.uint8)
    offsets = offsets - offsets[0]
    lengths = np.diff(offsets)
    out = lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    if len(raw):
        with np.errstate(over="ignore"):
            pos = np.arange(len(raw), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
            maxlen = int(lengths.max())
            powers = np.cumprod(np.full(maxlen, np.uint64(1099511628211), dtype=np.uint64), dtype=np.uint64)
            terms = (raw.astype(np.uint64) + np.uint64(1)) * powers[pos]
            nonempty = lengths > 0
            sums = np.add.reduceat(terms, offsets[:-1][nonempty])
            out[nonempty] += sums
    return _mix64(out)


def _uniform(seed: int, source: int, lines: np.ndarray) -> np.ndarray:
    key = ((lines.astype(np.uint64) << np.uint64(20)) ^ np.uint64(source)
           ^ (np.uint64(seed & 0xFFFFFFFF) << np.uint64(44)))
    return (_mix64(_mix64(key)) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


# ---- parsing one chunk ---------------------------------------------------------------------

@dataclass
class Keys:
    """A categorical column of a chunk, dictionary-encoded: row -> index into `values` (-1 = missing).

    Counting and vocabulary lookups then touch each distinct value of the chunk once."""

    codes: np.ndarray  # int32
    values: pa.Array  # string; may hold entries no row uses

    def take(self, keep: np.ndarray) -> "Keys":
        return Keys(self.codes[keep], self.values)


@dataclass
class Parsed:
    label: np.ndarray  # float32 0/1
    cat: list[Keys]  # per categorical field
    num: list[np.ndarray]  # per numeric field: float64, NaN = missing
    multi: list[pa.Array]  # per multi field: list<string>, empty list = missing
    group: np.ndarray | None
    time: np.ndarray | None
    rows: np.ndarray  # line of the row less the header's (1-based, unique in its file), the key of the random split


def _to_np_bool(arr) -> np.ndarray:
    return pc.fill_null(arr, False).to_numpy(zero_copy_only=False)


def _empty(arr: pa.Array) -> np.ndarray:
    """Entries that are '' or null (byte length from the offsets: the text is not scanned)."""
    return pc.equal(pc.fill_null(pc.binary_length(arr), 0), 0).to_numpy(zero_copy_only=False)


def _keys(text: pa.Array) -> Keys:
    """Dictionary-encode a text column; '' and null are missing."""
    d = pc.dictionary_encode(text)
    codes = pc.fill_null(d.indices, -1).to_numpy(zero_copy_only=False)
    empty = np.flatnonzero(_empty(d.dictionary))  # at most one entry: ''
    if len(empty):
        codes = np.where(codes == empty[0], np.int32(-1), codes)
    return Keys(codes, d.dictionary)


def _filled(keys: Keys, value: str | None) -> Keys:
    """Missing entries read as `value` (a field's fill_na), when it is set."""
    missing = keys.codes < 0
    if value is None or not missing.any():
        return keys
    values = pa.concat_arrays([keys.values, pa.array([value], keys.values.type)])
    return Keys(np.where(missing, len(keys.values), keys.codes).astype(keys.codes.dtype), values)


def parse_numbers(text: pa.Array) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(float64 value of each entry, NaN = missing or bad; indices of the bad entries; what is wrong with each).

    Arrow's cast is the fast path; the exact rule (the regex, after trimming spaces) runs only on
    the entries it fails on or reads as non-finite ('nan', 'inf' are not numbers here) or beyond
    NUMBER_LIMIT (1e400 reads as inf: a bad value, not a missing one)."""
    missing = _empty(text)
    try:
        v = pc.cast(_null_where(text, missing), pa.float64()).to_numpy(zero_copy_only=False, writable=True)
        check = ~missing & ~(np.abs(v) <= NUMBER_LIMIT)  # NaN compares false
    except pa.ArrowInvalid:
        v, check = np.full(len(text), np.nan), ~missing
    if not check.any():
        return v, np.zeros(0, dtype=np.int64), []
    rows = np.flatnonzero(check)
    trimmed = pc.utf8_trim_whitespace(text.take(rows))
    good = _to_np_bool(pc.match_substring_regex(trimmed, _NUMBER))
    v[rows] = np.nan
    if good.any():
        v[rows[good]] = pc.cast(pc.filter(trimmed, pa.array(good)), pa.float64()).to_numpy()
    huge = good & ~(np.abs(v[rows]) <= NUMBER_LIMIT)
    v[rows[huge]] = np.nan
    wrong = np.flatnonzero((~good & ~_empty(trimmed)) | huge)  # blank after trimming = missing
    problems = [f"expected a finite number within +-{NUMBER_LIMIT:.4g} (float32), got {t!r}" if h
                else f"expected a number, got {t!r}" for t, h in zip(trimmed.take(wrong).to_pylist(), huge[wrong])]
    return v, rows[wrong], problems


def parse_times(text: pa.Array) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`parse_numbers` for a time split's column, which also reads ISO 8601 text ('2024-01-31 23:59:59',
    '2024-01-31T23:59:59.5+01:00', '2024-01-31') as seconds since the epoch: of its UTC instant when zoned, a
    time without a zone as UTC (a CSV log's timestamps were "expected a number")."""
    missing = _empty(text)
    iso = _iso_seconds(pc.utf8_trim_whitespace(_null_where(text, missing)))  # the usual case: all ISO, one cast
    if iso is not None:
        return iso, np.zeros(0, dtype=np.int64), []
    v, wrong, problems = parse_numbers(text)
    if not len(wrong):
        return v, wrong, problems
    rest = pc.utf8_trim_whitespace(text.take(wrong))  # ISO text among numbers, zoned and not, or bad values
    t = np.array([np.nan if (x := _iso_seconds(rest.slice(i, 1))) is None else x[0] for i in range(len(rest))])
    ok = ~np.isnan(t)
    v[wrong[ok]] = t[ok]
    bad = np.flatnonzero(~ok)
    return v, wrong[bad], [f"expected a number or an ISO 8601 time (e.g. '2024-01-31 23:59:59'), got {x!r}"
                           for x in rest.take(bad).to_pylist()]


def _iso_seconds(text: pa.Array) -> np.ndarray | None:
    """Seconds since the epoch of ISO 8601 texts (NaN where null), or None when one is not ISO 8601."""
    for tz in (None, "UTC"):  # Arrow reads a text without a zone as a naive time only, one with a zone as zoned
        try:
            return seconds(pc.cast(text, pa.timestamp("ns", tz))).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            pass
    return None


def _null_where(arr: pa.Array, null: np.ndarray) -> pa.Array:
    """The same strings with the rows `null` set to null; the text buffers are shared, not copied."""
    if not null.any():
        return arr
    valid = ~null
    if arr.null_count:
        valid &= _to_np_bool(pc.is_valid(arr))
    bits = np.packbits(np.concatenate([np.ones(arr.offset, dtype=bool), valid]), bitorder="little")
    return pa.Array.from_buffers(arr.type, len(arr), [pa.py_buffer(bits), *arr.buffers()[1:]], offset=arr.offset)


def _criteo_bucket(v: np.ndarray) -> np.ndarray:
    """The standard Criteo treatment: v > 2 -> floor(ln(v)^2), else int(v)."""
    out = np.maximum(np.trunc(v), -2.0 ** 63)  # below int64's range: the lowest bucket, not a wrapped-around one
    big = v > 2
    with np.errstate(divide="ignore", invalid="ignore"):
        out[big] = np.floor(np.log(v[big]) ** 2)
    return out


class Rejects:
    """A chunk's bad rows as its checks find them (`keep`: the rows none found bad), handed to `BadRows` in row
    order once every check ran, so that in stop mode the first bad line is the one reported, whichever field is
    bad on it."""

    def __init__(self, n: int) -> None:
        self.keep = np.ones(n, dtype=bool)
        self.found: list[tuple[int, str]] = []  # (row, what is wrong)

    def reject(self, rows: np.ndarray, message: Callable[[int], str]) -> None:
        """Bad chunk rows `rows` (those not found yet); message(i) describes rows[i]."""
        self.found.extend((rows[i], message(i)) for i in np.flatnonzero(self.keep[rows]))
        self.keep[rows] = False

    def report(self, chunk: Chunk, bad: BadRows) -> None:
        for row, message in sorted(self.found):
            bad.add(chunk.where(row), message, chunk.file, int(chunk.lines[row]))


# label_values -> (the usual spellings, checked first; the exact rule; what the error says is expected)
LABELS = {"binary": (pa.array(["0", "1"]), r"^[01](\.0*)?$", "0 or 1"),
          "pm1": (pa.array(["-1", "1", "+1"]), r"^(-1|\+?1)(\.0*)?$",
                  "-1 or 1 (libFM labels; 0/1 labels are preprocessed with --option labels=binary, or "
                  "label_values: binary in a schema)")}


def parse_labels(text: pa.Array, name: str, label_values: str,
                 reject: Callable[[np.ndarray, Callable[[int], str]], None]) -> np.ndarray:
    """A label column's text -> 0/1 float32 per row; bad rows are handed to `reject` (and read 0)."""
    spellings, regex, expected = LABELS[label_values]
    ok = _to_np_bool(pc.is_in(text, value_set=spellings))
    if not ok.all():
        text = pc.utf8_trim_whitespace(text)
        if label_values == "binary":  # pandas writes a bool column as True/False (a Parquet bool reads 1/0 already)
            text = pc.replace_substring_regex(text, "(?i)^true$", "1")
            text = pc.replace_substring_regex(text, "(?i)^false$", "0")
        ok = _to_np_bool(pc.match_substring_regex(text, regex))
        rows = np.flatnonzero(~ok)
        reject(rows, lambda i: f"field {name!r}: expected label {expected}, got {text[rows[i]].as_py()!r}")
    label = np.zeros(len(text), dtype=np.float32)
    if ok.any():
        label[ok] = pc.cast(pc.filter(text, pa.array(ok)), pa.float64()).to_numpy()
    return (label > 0).astype(np.float32) if label_values == "pm1" else label


class ChunkParser:
    """Text columns of a chunk -> label, keys and numbers, with every bad value reported by file:line:field.

    Validation is cheap when the data is clean: labels are matched against their usual spellings,
    numbers cast by Arrow (the exact rules run only where those fail), and categorical columns
    are dictionary-encoded first, so that criteo buckets are computed once per distinct text.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.cat = schema.of_kind("categorical")
        self.num = schema.of_kind("numeric")
        self.multi = schema.of_kind("multi")

    def parse(self, chunk: Chunk, bad: BadRows) -> Parsed | None:
        s = self.schema
        n = len(chunk)
        rejects = Rejects(n)
        keep, reject = rejects.keep, rejects.reject

        def col(name: str) -> pa.Array:
            if name not in chunk.columns:  # e.g. --option time_column=NAME a preset does not read: was a KeyError
                raise DataError(f"{chunk.file}: no column {name!r} among the columns this preset reads: "
                                f"{', '.join(chunk.columns)}")
            return chunk.columns[name]
        label = parse_labels(col(s.label), s.label, s.label_values, reject)

        def numbers(name: str, fill_na: str | None = None, parse=parse_numbers) -> np.ndarray:
            v, wrong, problems = parse(col(name))
            reject(wrong, lambda i: f"field {name!r}: {problems[i]}")
            if fill_na is not None:  # (bad values are NaN too, but their rows are dropped)
                v[np.isnan(v)] = float(fill_na)
            return v

        cat = []
        for f in self.cat:
            keys = _filled(_keys(col(f.column)), f.fill_na)
            if f.transform == "criteo-bucket":  # on the distinct texts, then rows -> their bucket
                v, wrong, problems = parse_numbers(keys.values)
                if len(wrong):
                    entry = np.full(len(keys.values) + 1, -1)  # + 1: code -1 (missing) reads the last
                    entry[wrong] = np.arange(len(wrong))
                    rows = np.flatnonzero(entry[keys.codes] >= 0)
                    reject(rows, lambda i: f"field {f.column!r}: {problems[entry[keys.codes[rows[i]]]]}")
                missing = np.isnan(v)
                d = pc.dictionary_encode(pa.array(np.where(missing, 0, _criteo_bucket(v)).astype(np.int64),
                                                  mask=missing))
                bucket = pc.fill_null(d.indices, -1).to_numpy(zero_copy_only=False)
                keys = Keys(np.append(bucket, np.int32(-1))[keys.codes], pc.cast(d.dictionary, pa.string()))
            cat.append(keys)
        num = [numbers(f.column, f.fill_na) for f in self.num]
        multi = []
        for f in self.multi:
            lists = pc.split_pattern(col(f.column), f.separator)
            flat = pc.list_flatten(lists)
            nonempty = ~_empty(flat)
            if not nonempty.all():  # drop empty items ('a||b', '') without a row loop
                parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
                counts = np.bincount(parents[nonempty], minlength=n)
                offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
                lists = pa.ListArray.from_arrays(pa.array(offsets), pc.filter(flat, pa.array(nonempty)))
            multi.append(lists)
        group = None
        if s.group:
            d = pc.dictionary_encode(pc.fill_null(col(s.group), ""))
            group = (hash_strings(d.dictionary) >> np.uint64(1)).astype(np.int64)[d.indices.to_numpy()]
        tvals = None
        if s.split.method == "time":
            tvals = numbers(s.split.time_column, parse=parse_times)
            rows = np.flatnonzero(np.isnan(tvals))
            reject(rows, lambda i: f"field {s.split.time_column!r}: missing time value (split by time)")
        rejects.report(chunk, bad)
        if not keep.all():
            if not keep.any():
                return None
            mask = pa.array(keep)
            label = label[keep]
            cat = [k.take(keep) for k in cat]
            num = [a[keep] for a in num]
            multi = [pc.filter(a, mask) for a in multi]
            group = None if group is None else group[keep]
            tvals = None if tvals is None else tvals[keep]
        return Parsed(label, cat, num, multi, group, tvals, chunk.lines[keep] - chunk.header_lines)


# ---- per-field state ----------------------------------------------------------------------

class Counter:
    """Value counts merged chunk by chunk (memory ~ number of distinct values)."""

    def __init__(self, value_type=pa.string()) -> None:
        self.value_type = value_type
        self.parts: list[pa.Table] = []
        self.pending = 0
        self.table = pa.table({"v": pa.array([], value_type), "c": pa.array([], pa.int64())})

    def add(self, values: pa.Array, counts: np.ndarray) -> None:
        seen = counts > 0
        if not seen.any():
            return
        t = pa.table({"v": values.filter(pa.array(seen)), "c": counts[seen].astype(np.int64)})
        self.parts.append(t)
        self.pending += len(t)
        if self.pending > max(1_000_000, 2 * len(self.table)):
            self._merge()

    def _merge(self) -> None:
        if self.parts:
            t = pa.concat_tables([self.table] + [p.cast(self.table.schema) for p in self.parts])
            self.table = t.group_by("v").aggregate([("c", "sum")]).rename_columns(["v", "c"])
            self.parts, self.pending = [], 0

    def result(self) -> pa.Table:
        self._merge()
        return self.table


class VocabIndex:
    """Exact value -> position lookup in a frozen vocabulary, built once.

    `pc.index_in` rebuilds its hash table from the whole vocabulary on every call, a cost per
    chunk that grows with the vocabulary; here the vocabulary's 64-bit hashes are sorted once
    and each chunk only hashes and searches its own distinct values. A hash match is confirmed
    by comparing the text, so a collision can never give a wrong id.
    """

    def __init__(self, values: pa.Array) -> None:
        self.values = values
        h = hash_strings(values)
        self.order = np.argsort(h, kind="stable")
        self.hashes = h[self.order]

    def find(self, keys: pa.Array) -> np.ndarray:
        """Position of each key (strings, no nulls) in the vocabulary, -1 when absent."""
        out = np.full(len(keys), -1, dtype=np.int64)
        h = hash_strings(keys)
        at = np.searchsorted(self.hashes, h)
        todo = np.arange(len(keys))
        while True:  # one round unless two values share a hash
            inside = at[todo] < len(self.hashes)
            todo = todo[inside]
            todo = todo[self.hashes[at[todo]] == h[todo]]
            if not len(todo):
                return out
            pos = self.order[at[todo]]
            same = _to_np_bool(pc.equal(self.values.take(pos), keys.take(todo)))
            out[todo[same]] = pos[same]
            todo = todo[~same]
            at[todo] += 1


@dataclass
class FieldState:
    opts: FieldOptions
    out_kind: str
    counter: Counter | None = None
    has_missing: bool = False
    max_len: int = 0
    lengths: Counter | None = None  # multi: train list length -> rows (for the long-list note)
    n: int = 0
    m2: float = 0.0  # numeric: sum of squared deviations from `mean` (the running mean while fitting)
    vocab: pa.Array | None = None
    base: int = 0
    vocab_size: int = 0
    mean: float = 0.0
    std: float = 1.0
    index: VocabIndex | None = None  # built from `vocab` at the first encode
    eval_values: int = 0  # vocabulary fields: values of the valid/test rows (pass 2), and those out of vocabulary
    eval_unseen: int = 0

    def stats(self) -> dict:
        d = {"source": self.opts.column, "transform": self.opts.transform, "min_count": self.opts.min_count,
             "buckets": self.opts.buckets}
        if self.out_kind != "numeric":
            d.update(has_missing=self.has_missing, first_value_id=self.base,
                     values=0 if self.vocab is None else len(self.vocab))
        if self.out_kind == "multi":
            d.update(separator=self.opts.separator, max_len=self.max_len)
        if self.opts.transform == "standardize":
            d.update(mean=self.mean, std=self.std)
        if self.out_kind == "numeric":
            d.update(train_count=self.n)
        elif not self.opts.buckets:  # the baseline of dlf predict's unseen-values note (None: no valid/test value)
            d.update(oov_share_eval=self.eval_unseen / self.eval_values if self.eval_values else None)
        return d

    # fitting (train rows only)
    def fit(self, keys, train: np.ndarray) -> None:
        """Count the values of the rows where `train` is set."""
        if self.out_kind == "numeric":
            v = keys[train]
            v = v[~np.isnan(v)]
            if not len(v):
                return
            # merge this chunk's (count, mean, M2) into the running ones (Chan et al.): stable for values
            # with a large offset, where E[x^2] - mean^2 cancels to nothing
            n, mean = len(v), float(v.mean())
            m2 = float(np.square(v - mean).sum())
            delta, total = mean - self.mean, self.n + n
            self.mean += delta * n / total
            self.m2 += m2 + delta * delta * self.n * n / total
            self.n = total
            return
        if self.out_kind == "multi":
            lengths = pc.list_value_length(keys).to_numpy(zero_copy_only=False)[train]
            if len(lengths):
                self.max_len = max(self.max_len, int(lengths.max()))
                self.has_missing |= bool((lengths == 0).any())
                values, counts = np.unique(lengths, return_counts=True)
                self.lengths.add(pa.array(values), counts)
            train = train[pc.list_parent_indices(keys).to_numpy(zero_copy_only=False)]
            keys = _keys(pc.list_flatten(keys))
        counts = np.bincount(keys.codes[train] + 1, minlength=len(keys.values) + 1)  # bin 0: missing
        self.has_missing |= self.out_kind == "categorical" and bool(counts[0])
        if not self.opts.buckets:
            self.counter.add(keys.values, counts[1:])

    def length_quantile(self, q: float) -> int:
        """Multi: the shortest list length that a fraction q of the train rows' lists do not exceed."""
        t = self.lengths.result().sort_by("v")
        rows = np.cumsum(t["c"].to_numpy())
        return int(t["v"].to_numpy()[np.searchsorted(rows, q * rows[-1])])

    def freeze(self) -> None:
        o = self.opts
        if self.out_kind == "numeric":
            if self.n:
                self.std = float(np.sqrt(self.m2 / self.n)) or 1.0
            return
        if self.out_kind == "multi" and o.max_len:
            self.max_len = o.max_len
        self.max_len = max(self.max_len, 1) if self.out_kind == "multi" else 0
        if o.buckets:
            self.base = MISSING_ID + 1
            self.vocab_size = self.base + o.buckets
            return
        t = self.counter.result()
        t = t.filter(pc.greater_equal(t["c"], o.min_count))
        t = t.sort_by([("c", "descending"), ("v", "ascending")])
        self.vocab = t["v"].combine_chunks() if t.num_rows else pa.array([], self.counter.value_type)
        self.base = MISSING_ID + int(self.has_missing)
        self.vocab_size = self.base + len(self.vocab)
        self.counter = None

    # encoding
    def encode_keys(self, keys: Keys) -> np.ndarray:
        if self.opts.buckets:
            ids = (hash_strings(keys.values) % np.uint64(self.opts.buckets)).astype(np.int64) + self.base
        elif len(self.vocab) <= INDEX_IN_RATIO * len(keys.values):  # Arrow's own hash table is cheaper to build
            pos = pc.index_in(keys.values, value_set=self.vocab)
            ids = pc.fill_null(pc.add(pos, self.base), OOV_ID).to_numpy(zero_copy_only=False)
        else:
            if self.index is None or self.index.values is not self.vocab:
                self.index = VocabIndex(self.vocab)
            pos = self.index.find(keys.values)
            ids = np.where(pos >= 0, pos + self.base, OOV_ID)
        missing = MISSING_ID if (self.has_missing or self.opts.buckets) else OOV_ID
        return np.append(ids, missing).astype(np.int32)[keys.codes]  # code -1 (missing) reads the last

    def encode(self, keys):
        if self.out_kind == "numeric":
            if not self.n:  # no value in the train rows: training fed 0 (missing) in every row, so the field's
                # weight never moved from its initial value; any other value would move the score through it
                return np.zeros(len(keys), dtype=np.float32)
            v = keys
            t = self.opts.transform
            if t == "log":
                v = np.sign(v) * np.log1p(np.abs(v))
            elif t == "standardize":
                v = (v - self.mean) / self.std
            # missing -> 0; values are within NUMBER_LIMIT (see parse_numbers), so only a standardized value
            # over a tiny train std can leave float32: clipped, never inf (nor 0, as if missing)
            return np.nan_to_num(np.clip(v, -NUMBER_LIMIT, NUMBER_LIMIT), nan=0.0).astype(np.float32)
        if self.out_kind == "categorical":
            return self.encode_keys(keys)
        n = len(keys)
        out = np.zeros((n, self.max_len), dtype=np.int32)
        lengths = pc.list_value_length(keys).to_numpy(zero_copy_only=False)
        missing = lengths == 0
        flat = pc.list_flatten(keys)
        if len(flat):
            ids = self.encode_keys(_keys(flat))
            rows = pc.list_parent_indices(keys).to_numpy(zero_copy_only=False)
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            pos = np.arange(len(flat)) - np.repeat(starts, lengths)
            sel = pos < self.max_len
            out[rows[sel], pos[sel]] = ids[sel]
        if missing.any():
            out[missing, 0] = MISSING_ID if self.has_missing else OOV_ID
        return out


def unseen_values(st: FieldState, keys, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, str | None]:
    """A vocabulary field's chunk (`keys`) and its ids (`st.encode(keys)`) -> per row, the values encoded (missing
    ones are not values; a multi field's first max_len) and those of them that got OOV_ID, and the first such raw
    value (None: none). A serving file that writes a column otherwise than the training files ('283.0' for '283')
    scores every value as unseen, silently: dlf predict and evaluate count them (dlf.serve.encoding)."""
    if st.out_kind == "categorical":
        values = keys.codes >= 0
        unseen = values & (ids == OOV_ID)
        first = np.flatnonzero(unseen)[:1]
        example = keys.values[int(keys.codes[first[0]])].as_py() if len(first) else None
        return values.astype(np.int64), unseen.astype(np.int64), example
    lengths = pc.fill_null(pc.list_value_length(keys), 0).to_numpy(zero_copy_only=False)
    hits = (ids == OOV_ID) & (lengths > 0)[:, None]  # a missing list's OOV_ID (no missing id in train) is no value
    unseen = hits.sum(axis=1)
    first = np.flatnonzero(unseen)[:1]
    example = keys[int(first[0])].values[int(hits[first[0]].argmax())].as_py() if len(first) else None
    return np.minimum(lengths, ids.shape[1]).astype(np.int64), unseen.astype(np.int64), example


# ---- inputs, fingerprint, atomic output ----------------------------------------------------

def parse_inputs(items: list[str | Path]) -> list[tuple[str, Path]]:
    """'train=a.csv', 'test=b.csv' or plain paths (role train: split by ratios)."""
    out = []
    for item in items:
        text = str(item)
        role, sep, path = text.partition("=")
        if sep and role in ROLES:
            out.append((role, Path(path)))
        else:
            out.append(("train", Path(text)))
    if not out:
        raise DataError("no input given (--input PATH, or --input train=PATH --input test=PATH)")
    for _, p in out:
        if not p.exists():
            raise DataError(f"{p}: no such file or directory")
    return out


def _file_digest(path: Path) -> dict:
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        if st.st_size > 2 << 20:
            fh.seek(-(1 << 20), os.SEEK_END)
            h.update(fh.read(1 << 20))
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sample_sha256": h.hexdigest()}


def fingerprint(preset: str, schema: Schema, sources: list[Source], extra_files: list[Path], options: dict) -> str:
    payload = {"pipeline": PIPELINE_VERSION, "store": STORE_VERSION, "preset": preset, "schema": schema.to_dict(),
               "options": {k: str(v) for k, v in sorted(options.items())},
               "inputs": [(s.role, _file_digest(Path(s.path))) for s in sources],
               "extra": [_file_digest(p) for p in extra_files]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()




# ---- the pipeline --------------------------------------------------------------------------

def apply_options(schema: Schema, options: dict) -> Schema:
    """Generic --option overrides: min_count, buckets, split, ratios, seed, time_column."""
    import dataclasses
    fields = list(schema.fields)
    if "min_count" in options:
        fields = [dataclasses.replace(f, min_count=int(options["min_count"])) if f.kind != "numeric" else f
                  for f in fields]
    if "buckets" in options:
        fields = [dataclasses.replace(f, buckets=int(options["buckets"])) if f.kind != "numeric" else f
                  for f in fields]
    split = schema.split
    if "split" in options:
        split = dataclasses.replace(split, method=str(options["split"]))
    if "ratios" in options:
        try:
            ratios = tuple(float(x) for x in str(options["ratios"]).split(","))
        except ValueError:
            raise DataError("--option ratios=TRAIN,VALID,TEST expects three numbers, "
                            f"got {options['ratios']!r}") from None
        split = dataclasses.replace(split, ratios=ratios)
    if "seed" in options:
        split = dataclasses.replace(split, seed=int(options["seed"]))
    if "time_column" in options:
        split = dataclasses.replace(split, time_column=str(options["time_column"]))
    for key, method in (("time_column", "time"), ("seed", "random")):  # ignored by the other split methods
        if key in options and split.method != method:
            raise DataError(f"--option {key} is read by a {method} split only, and the split is {split.method!r}; "
                            f"add --option split={method}, or leave {key} out")
    return dataclasses.replace(schema, fields=fields, split=split).validate("schema with --option overrides")


# options only some presets read
PRESET_OPTIONS = {"numeric": ("criteo", "kdd12"), "fields": ("libfm",), "feature_index": ("libfm",),
                  "labels": ("libfm", "frappe")}
# `--option KEY=VALUE` keys: the form of the value and what it sets (listed by `dlf preprocess --help`)
KNOWN_OPTIONS = {
    "min_count": ("N", "values seen fewer than N times in train -> out of vocabulary (default: the preset's)"),
    "buckets": ("N", "hash categorical and multi-valued fields into N buckets instead of a vocabulary"),
    "split": ("random|time|sequential", "how train files are split into the splits not given as files (time: by "
              "time_column; sequential: in file order)"),
    "ratios": ("TRAIN,VALID,TEST", "fractions of that split, e.g. 0.8,0.1,0.1"),
    "seed": ("N", "seed of the random split"),
    "time_column": ("NAME", "the column the time split orders rows by"),
    "numeric": ("bucket|log|standardize|none", "integer count columns (criteo, kdd12; default bucket)"),
    "fields": ("NAME:SIZE,...", "libFM fields and how many indices each has, in index order (libfm)"),
    "feature_index": ("FILE", "libFM feature index, one 'FIELD INDEX' or 'FIELD:VALUE INDEX' per line (libfm)"),
    "labels": ("pm1|binary", "libFM labels: -1/1 (the default) or 0/1 (libfm, frappe)"),
    "dataset_id": ("NAME", "which dataset of a FuxiCTR dataset_config.yaml holding several (--schema)"),
}


def preprocess(preset: str, inputs: list[str | Path], out: str | Path, schema: str | Path | Schema | None = None,
               options: dict | None = None, on_bad_row: str = "error", block_bytes: int = DEFAULT_BLOCK_BYTES,
               force: bool = False, log: Callable[[str], None] | None = None, _fail_after_chunks: int = -1) -> Result:
    """Preprocess raw files into OUT (see module doc). Raises DataError on bad input."""
    started = time.perf_counter()
    log = log or (lambda msg: None)
    options = dict(options or {})
    unknown = set(options) - KNOWN_OPTIONS.keys()
    if unknown:
        raise DataError(f"unknown option(s) {sorted(unknown)}; known: {', '.join(sorted(KNOWN_OPTIONS))}")
    p = get_preset(preset)
    for key, presets in PRESET_OPTIONS.items():  # elsewhere they were silently ignored
        if key in options and preset not in presets:
            raise DataError(f"--option {key} applies to preset(s) {', '.join(presets)}, not {preset!r}")
    if options.get("labels", "pm1") not in ("pm1", "binary"):
        raise DataError(f"--option labels={options['labels']}: expected pm1 (labels -1/1) or binary (labels 0/1)")
    both = sorted({"numeric", "fields", "labels"} & options.keys()) if schema is not None else []
    if both:  # the preset's built-in fields are not used then: the option was silently ignored
        raise DataError(f"--option {both[0]} shapes the preset's own fields; with --schema, say it in the schema "
                        "(a field's transform, libFM ranges, label_values)")
    if "dataset_id" in options and schema is None:
        raise DataError("--option dataset_id picks a dataset of a FuxiCTR dataset_config.yaml given with --schema")
    for key in ("min_count", "buckets", "seed"):  # int('abc') was a ValueError traceback
        if key in options:
            try:
                options[key] = int(str(options[key]).strip())
            except ValueError:
                raise DataError(f"--option {key}={options[key]}: expected an integer") from None
    bad = BadRows(on_bad_row)
    parsed_inputs = parse_inputs(inputs)
    user_schema = None
    extra_files: list[Path] = []
    if isinstance(schema, Schema):
        user_schema = schema
    elif schema is not None:
        extra_files.append(Path(schema))
        user_schema = _load_schema_file(Path(schema), options)
    split_options = {k: v for k, v in options.items() if k in ("split", "ratios", "seed", "time_column")}
    if user_schema is not None and split_options:  # before build: the sources then read the time column
        user_schema = apply_options(user_schema, split_options)
    sch, sources = p.build(parsed_inputs, user_schema, options)
    seen: dict[Path, str] = {}
    for src in sources:  # a train file twice doubled its rows, or put them in train and valid/test alike
        check_file(src.path)  # a directory (was IsADirectoryError from the fingerprint) or an empty file
        key = Path(src.path).resolve()  # (valid and test may be one file: a dataset with no validation split)
        if key in seen and "train" in (seen[key], src.role):
            raise DataError(f"{src.path}: given twice (as {seen[key]} and as {src.role}); the rows of a train "
                            "file must not be counted twice or be in valid/test too")
        seen.setdefault(key, src.role)
    sch = apply_options(sch, {k: v for k, v in options.items()
                              if k not in ("numeric", "fields", "dataset_id", "feature_index")})
    # files the rows are built from besides the inputs (joined tables, feature index): a change rebuilds
    extra_files += sorted({Path(d) for src in sources for d in src.depends})
    out = Path(out)
    if out.is_symlink():  # a link to a folder on another disk: rebuild the folder it points to, keep the link
        out = out.resolve()  # (the link was replaced by a new folder beside it, the old data left behind)
    fp = fingerprint(preset, sch, sources, extra_files, options | {"on_bad_row": on_bad_row})
    if out.exists() and not is_processed(out) and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} exists and is not a dlf processed dataset; choose another --out")
    if not force and is_processed(out):
        try:
            fm = FeatureMap.load(out / "feature_map.json")
        except (ValueError, TypeError, KeyError, AttributeError):  # damaged or another version: rebuilt
            fm = None  # (was a TypeError traceback)
        if fm is not None and fm.meta.get("fingerprint") == fp:
            log(f"{out} is up to date (same inputs and schema); nothing to do")
            return Result(out, True, fm, time.perf_counter() - started)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:  # an output that cannot be written (a file in the path, no permission) was an OSError traceback
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_siblings(out)
        tmp.mkdir()
    except OSError as exc:
        raise DataError(f"{out}: cannot write the output there: {exc.strerror or exc} ({exc.filename})") from None
    try:
        fm = _run(sch, sources, tmp, bad, block_bytes, log, _fail_after_chunks)
        layout = sources[0].layout  # a preset's sources share one
        if layout is not None:  # libFM lines: scoring splits them into fields with it (the index is in no schema)
            layout.save(tmp / LIBFM_LAYOUT)
            fm.meta["libfm_layout"] = LIBFM_LAYOUT
        fm.meta.update(fingerprint=fp, pipeline_version=PIPELINE_VERSION, preset=preset,
                       options={k: str(v) for k, v in options.items()},
                       inputs=[{"role": s.role, "path": s.path} for s in sources],
                       bad_rows=bad.summary(), seconds=round(time.perf_counter() - started, 3))
        fm.save(tmp / "feature_map.json")  # written last: its presence marks a complete dataset
        if out.exists() and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        publish_dir(tmp, out)
    except OSError as exc:  # e.g. the disk filled up: one line, and the partial output goes
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{exc.filename or out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Result(out, False, fm, time.perf_counter() - started)


def _load_schema_file(path: Path, options: dict) -> Schema:
    raw = read_schema_yaml(path)
    if isinstance(raw, dict) and ("feature_cols" in raw or any(isinstance(v, dict) and "feature_cols" in v
                                                               for v in raw.values())):
        from dlf.data.presets import schema_from_fuxictr
        return schema_from_fuxictr(raw, f"dataset config {str(path)!r}", options.get("dataset_id"))
    if "dataset_id" in options:
        raise DataError(f"--option dataset_id: schema file {str(path)!r} is not a FuxiCTR dataset_config.yaml "
                        "(no feature_cols)")
    if not isinstance(raw, dict):
        raise DataError(f"schema file {str(path)!r} must hold a mapping (label, fields, ...)")
    return Schema.from_dict(raw, f"schema file {str(path)!r}", written=True)


def _split_of(parsed: Parsed, src_index: int, source: Source, schema: Schema, given: set[str],
              time_cdf, seq_state: dict) -> np.ndarray:
    """Split id (0 train, 1 valid, 2 test) of each row."""
    n = len(parsed.label)
    if source.role != "train":
        return np.full(n, SPLITS.index(source.role), dtype=np.int8)
    r = np.array(schema.split.ratios, dtype=np.float64)
    for i, role in enumerate(SPLITS[1:], 1):
        if role in given:
            r[i] = 0.0
    r = np.cumsum(r / r.sum())
    method = schema.split.method
    if method == "random":
        u = _uniform(schema.split.seed, src_index, parsed.rows)
    elif method == "time":
        values, before, counts, total = time_cdf
        pos = np.searchsorted(values, parsed.time)
        u = (before[pos] + 0.5 * counts[pos]) / total
    else:
        start = seq_state["pos"]
        u = (np.arange(start, start + n) + 0.5) / seq_state["total"]
        seq_state["pos"] = start + n
    return np.minimum(np.searchsorted(r, u, side="right"), 2).astype(np.int8)


def _chunks(sources: list[Source], bad: BadRows, block: int, parser: ChunkParser):
    for i, src in enumerate(sources):
        for chunk in src.read(bad, block):
            parsed = parser.parse(chunk, bad)
            if parsed is not None:
                yield i, src, parsed


def _spill_batch(parsed: Parsed, split: np.ndarray) -> pa.RecordBatch:
    """What pass 2 needs of a parsed chunk, as one Arrow record batch (categorical keys stay dictionary-encoded)."""
    cols = {"label": parsed.label, "split": split}
    if parsed.group is not None:
        cols["group"] = parsed.group
    for j, k in enumerate(parsed.cat):
        cols[f"cat{j}"] = pa.DictionaryArray.from_arrays(pa.array(k.codes, pa.int32(), mask=k.codes < 0), k.values)
    for j, v in enumerate(parsed.num):
        cols[f"num{j}"] = v
    for j, m in enumerate(parsed.multi):
        cols[f"multi{j}"] = m
    return pa.record_batch(cols)


def _long_lists_note(multi: list[FieldState], rows: int, max_len: int) -> str | None:
    """A note when `max_len: 0` (the longest train list) sized multi.npy by a few lists far longer than nearly all
    (longer than 64 and 4x the 99.9th percentile): every row of every split is padded to that length."""
    cut = {}  # field -> its 99.9th percentile length
    for st in multi:
        if not st.opts.max_len and st.max_len > 64:
            q = max(st.length_quantile(0.999), 1)
            if st.max_len > 4 * q:
                cut[st.opts.name] = q
    if not cut:
        return None

    def size(length: int) -> str:  # multi.npy is int32 rows x fields x length, over all splits
        return f"{rows * len(multi) * length * 4 / 2**20:,.1f} MiB"
    shorter = max(cut.get(st.opts.name, st.max_len) for st in multi)
    fields = ", ".join(f"{st.opts.name!r} (longest train list {st.max_len:,} items, 99.9% of them at most "
                       f"{cut[st.opts.name]:,})" for st in multi if st.opts.name in cut)
    return (f"note: multi-valued field(s) {fields}: max_len 0 pads every list to the longest, so multi.npy takes "
            f"{size(max_len)} ({size(shorter)} with max_len at those 99.9th percentiles); set the field's max_len "
            "in the schema to cut the longer lists")


def _count_held_out(st: FieldState, keys, ids: np.ndarray, held_out: np.ndarray) -> None:
    """Add the valid/test rows' values and unseen values of a vocabulary field to its `eval_*` counts."""
    if st.opts.buckets or not held_out.any():
        return
    values, unseen, _ = unseen_values(st, keys, ids)
    st.eval_values += int(values[held_out].sum())
    st.eval_unseen += int(unseen[held_out].sum())


def _run(schema: Schema, sources: list[Source], tmp: Path, bad: BadRows, block: int, log,
         fail_after: int) -> FeatureMap:
    parser = ChunkParser(schema)
    states = ([FieldState(f, "categorical", Counter()) for f in parser.cat]
              + [FieldState(f, "numeric") for f in parser.num]
              + [FieldState(f, "multi", Counter(), lengths=Counter(pa.int64())) for f in parser.multi])
    given = {s.role for s in sources}
    time_cdf, seq_total = None, 0
    if schema.split.method in ("time", "sequential"):
        log("pass 0: split order")
        counter = Counter(pa.float64())
        for _, src, parsed in _chunks([s for s in sources if s.role == "train"], BadRows(bad.mode), block, parser):
            seq_total += len(parsed.label)
            if parsed.time is not None:
                values, counts = np.unique(parsed.time, return_counts=True)
                counter.add(pa.array(values), counts)
        if schema.split.method == "time":
            t = counter.result().sort_by("v")
            values, counts = t["v"].to_numpy(), t["c"].to_numpy().astype(np.float64)
            before = np.concatenate([[0], np.cumsum(counts)[:-1]])
            time_cdf = (values, before, counts, counts.sum() or 1.0)
    # Pass 1 keeps every parsed chunk in a temporary Arrow file (keys dictionary-encoded, about the
    # size of the input), so that pass 2 does not parse and validate the text a second time.
    log("pass 1: parse, split and fit vocabularies on train")
    for s in sources:
        s.filtered.clear()  # counted in pass 1 only
    rows = np.zeros(3, dtype=np.int64)
    positives = np.zeros(3)
    seq = {"pos": 0, "total": max(seq_total, 1)}
    spill_path, spill = tmp / "parsed.arrow", None
    with pa.OSFile(str(spill_path), "wb") as sink:
        for i, src, parsed in _chunks(sources, bad, block, parser):
            split = _split_of(parsed, i, src, schema, given, time_cdf, seq)
            rows += np.bincount(split, minlength=3)
            positives += np.bincount(split, weights=parsed.label, minlength=3)
            train = split == 0
            if train.any():
                for st, k in zip(states, parsed.cat + parsed.num + parsed.multi):
                    st.fit(k, train)
            batch = _spill_batch(parsed, split)
            spill = spill or pa.ipc.new_stream(sink, batch.schema)
            spill.write_batch(batch)
        if spill is not None:
            spill.close()
    filtered: dict[str, int] = {}
    for s in sources:
        for k, v in s.filtered.items():
            filtered[k] = filtered.get(k, 0) + v
    if rows[0] == 0:
        files = [s.path for s in sources if s.role == "train"] or [s.path for s in sources]
        raise DataError(f"{', '.join(map(str, files))}: no training rows: the inputs are empty after dropping bad "
                        "rows, or the split sends nothing to train")
    if time_cdf is not None:  # rows of one time stay together: a few distinct times cannot fill every split
        empty = [SPLITS[k] for k in (1, 2) if not rows[k] and SPLITS[k] not in given and schema.split.ratios[k] > 0]
        if empty:  # (training then stopped on the empty split, suggesting other ratios, which do not help)
            log(f"note: the time split left {' and '.join(empty)} empty: rows of one time stay together, and "
                f"{schema.split.time_column!r} has {len(time_cdf[0])} distinct value(s) in the train files")
    for st in states:
        st.freeze()
    # A column logged only later (a time split) or ids all rarer than min_count: the field's embedding cannot learn
    blank = [st.opts.name for st in states if (st.n == 0 if st.out_kind == "numeric" else
                                                   not st.opts.buckets and not len(st.vocab))]
    if blank:
        log(f"note: field(s) {', '.join(map(repr, blank))} have no value in the train rows (every one missing, or "
            "seen fewer than min_count times): the model learns nothing from them")
    n_cat, n_num, n_multi = len(parser.cat), len(parser.num), len(parser.multi)
    max_len = max([st.max_len for st in states if st.out_kind == "multi"], default=1)
    note = _long_lists_note([st for st in states if st.out_kind == "multi"], int(rows.sum()), max_len)
    if note:
        log(note)
    log(f"pass 2: encode and write {int(rows.sum()):,} rows")
    writers = [SplitWriter(tmp / name, int(rows[k]), n_cat, n_num, n_multi, max_len, schema.group is not None)
               for k, name in enumerate(SPLITS)]
    with pa.OSFile(str(spill_path)) as source:  # read, not mapped: memory stays one batch
        for written, batch in enumerate(pa.ipc.open_stream(source)):
            if written == fail_after:
                raise RuntimeError("simulated crash while writing (test hook)")
            n, col = batch.num_rows, batch.column
            split, label = col("split").to_numpy(), col("label").to_numpy()
            held_out = split > 0  # valid/test rows: their share of unseen values is the baseline of dlf predict's
            cat = np.zeros((n, n_cat), dtype=np.int32)
            num = np.zeros((n, n_num), dtype=np.float32)
            mul = np.zeros((n, n_multi, max_len), dtype=np.int32)
            for j in range(n_cat):
                d = col(f"cat{j}")
                keys = Keys(pc.fill_null(d.indices, -1).to_numpy(zero_copy_only=False), d.dictionary)
                cat[:, j] = states[j].encode(keys)
                _count_held_out(states[j], keys, cat[:, j], held_out)
            for j in range(n_num):
                num[:, j] = states[n_cat + j].encode(col(f"num{j}").to_numpy())
            for j in range(n_multi):
                enc = states[n_cat + n_num + j].encode(col(f"multi{j}"))
                mul[:, j, :enc.shape[1]] = enc
                _count_held_out(states[n_cat + n_num + j], col(f"multi{j}"), enc, held_out)
            group = col("group").to_numpy() if schema.group else None
            for k in range(3):
                sel = split == k
                if sel.any():
                    writers[k].write({"categorical": cat[sel], "numeric": num[sel], "multi": mul[sel],
                                      "label": label[sel], "group": None if group is None else group[sel]})
    spill_path.unlink()
    for w in writers:
        w.close()
    # vocabularies, in id order
    (tmp / "vocab").mkdir()
    for st in states:
        if st.vocab is not None:
            feather.write_feather(pa.table({"value": st.vocab}), tmp / "vocab" / f"{st.opts.name}.arrow")
    specs = [FieldSpec(st.opts.name, st.out_kind, vocab_size=st.vocab_size,
                       max_len=st.max_len if st.out_kind == "multi" else 0) for st in states]
    meta = {"store_version": STORE_VERSION,
            "splits": {name: {"rows": int(rows[k]), "label_rate": float(positives[k] / rows[k]) if rows[k] else None}
                       for k, name in enumerate(SPLITS)},
            "fields": {st.opts.name: st.stats() for st in states},
            "schema": schema.to_dict(), "schema_hash": schema.digest(), "filtered_rows": filtered,
            "ids": {"pad": 0, "oov": OOV_ID, "missing": MISSING_ID}}
    return FeatureMap(fields=specs, label=schema.label, group=schema.group, meta=meta)
