"""Raw feature values -> the model's `Batch`, with the encoders the preprocessing froze on train.

Nothing here re-implements an encoding: a bundle's encoder is `dlf.data.preprocess`'s own
`ChunkParser` (text -> keys and numbers, criteo buckets, multi-value splitting, bad-value
checks) and `FieldState.encode` (vocabulary lookup with OOV/missing ids, hashing, numeric
transforms), rebuilt from the saved feature map and `vocab/<field>.arrow` files instead of
being fit, after the preset's own per-chunk derivation (`Preset.derive`: avazu's hour, kkbox's
isrc and age buckets, kdd12's unknown user). So a value is encoded exactly as `dlf preprocess` encoded it for training:
unseen categories -> OOV (id 1), missing values -> the missing id (2) when the field had
missing values in train (else OOV), numeric missing -> 0 after the transform; a numeric field with
no value in the train rows -> 0 whatever the input, as training saw it.

Two modes:
  raw  (a run trained on `dlf preprocess` output): inputs are raw column values (text).
  ids  (a run trained on the built-in synthetic data, which has no raw values): inputs are
       already-encoded ids and numeric values; categorical ids outside [0, vocab_size) -> OOV,
       empty -> OOV, numeric empty -> 0, multi-valued: '|'-separated ids.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from dlf.data.features import OOV_ID, Batch, FeatureMap
from dlf.data.preprocess import (ChunkParser, FieldState, Rejects, hash_strings, parse_labels, parse_numbers,
                                 unseen_values)
from dlf.data.presets import get_preset
from dlf.data.readers import BadRows, Chunk, in_line_order
from dlf.data.schema import DataError, Schema, SplitOptions

NUMBER_RE = re.compile(r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$")  # as dlf.data.preprocess
INT_RE = re.compile(r"^\s*[-+]?[0-9]+\s*$")
IDS_SEPARATOR = "|"


@dataclass
class InputField:
    """One input column a caller sends: for /metadata and request validation."""

    name: str  # the raw column
    kind: str  # categorical | numeric | multi
    number: bool = False  # the text must be a number (numeric fields, criteo-bucket, ids)
    integer: bool = False  # ids mode: an integer id
    separator: str | None = None  # multi-valued fields


@dataclass
class UnseenCounts:
    """Per vocabulary field (categorical or multi-valued, not hashed) of the rows encoded: its values, those that got
    OOV_ID and the first such raw value. A column written otherwise than in the training files (an id as '283.0' for
    '283', 'True' for '1') makes every value unseen and moves every score without an error: dlf predict and evaluate
    print a note (`notes`). Raw bundles only: an ids bundle has no raw values."""

    counts: dict = field(default_factory=dict)  # field -> [values, unseen, example]

    def add(self, st: FieldState, keys, ids: np.ndarray) -> None:
        if st.opts.buckets:  # a hashed field has no vocabulary: no value of it is unseen
            return
        values, unseen, example = unseen_values(st, keys, ids)
        c = self.counts.setdefault(st.opts.name, [0, 0, None])
        c[0] += int(values.sum())
        c[1] += int(unseen.sum())
        c[2] = c[2] if c[2] is not None else example

    def summary(self, feature_map: FeatureMap) -> dict:
        """{field: {values, unseen, share, baseline, example}}; baseline: the share in the training data's valid/test
        rows (meta.fields.F.oov_share_eval), None for a dataset preprocessed before it was recorded."""
        stats = feature_map.meta.get("fields", {})
        return {name: {"values": v, "unseen": u, "share": u / v if v else 0.0,
                       "baseline": stats.get(name, {}).get("oov_share_eval"), "example": ex}
                for name, (v, u, ex) in self.counts.items()}


def unseen_notes(summary: dict) -> list[str]:
    """A note per field of `UnseenCounts.summary` whose share of unseen values is over half and 30 points over its
    baseline (a field of many new ids, as users, is often half unseen in valid/test too)."""
    notes = []
    for name, c in summary.items():
        base = c["baseline"]
        if c["share"] > 0.5 and (base is None or c["share"] > base + 0.3):
            was = "" if base is None else f" (training's valid/test: {base:.1%})"
            notes.append(f"note: field {name!r}: {c['share']:.1%} of its values were unseen in training{was}, e.g. "
                         f"{c['example']!r}: check how the file writes this column")
    return notes


class Encoder:
    """Encodes chunks of raw text columns (or request records) into a `Batch`."""

    def __init__(self, feature_map: FeatureMap, vocabularies: dict[str, pa.Array]) -> None:
        self.feature_map = feature_map
        meta = feature_map.meta or {}
        self.mode = "raw" if meta.get("schema") else "ids"
        self.label = feature_map.label  # the label column of a labelled file (to evaluate)
        self.cat = feature_map.of_kind("categorical")
        self.num = feature_map.of_kind("numeric")
        self.multi = feature_map.of_kind("multi")
        self.max_len = max([f.max_len for f in self.multi], default=1) if self.multi else 1
        if self.mode == "ids":
            self.derive, self.derived = None, ()
            self.inputs = ([InputField(f.name, "categorical", number=True, integer=True) for f in self.cat]
                           + [InputField(f.name, "numeric", number=True) for f in self.num]
                           + [InputField(f.name, "multi", separator=IDS_SEPARATOR) for f in self.multi])
            self.columns = [i.name for i in self.inputs]
            self.numeric_columns = [f.name for f in self.num]
            return
        try:
            schema = Schema.from_dict(meta["schema"], "bundle feature map schema")
        except (DataError, TypeError, KeyError) as exc:
            raise DataError(f"the bundle's preprocessing schema is unreadable: {exc}") from None
        # raw rows get the preset's own per-chunk derivation, as in preprocessing
        preset = get_preset(meta.get("preset") or "generic")
        preset.check_servable(schema)
        self.derive, self.derived = preset.derive, preset.derived  # derived: columns `derive` adds
        # scoring needs no group column and no split; the label is read only to evaluate (see encode_chunk)
        self.schema = dataclasses.replace(schema, group=None, split=SplitOptions())
        self.parser = ChunkParser(self.schema)
        stats = meta.get("fields", {})
        self.states: list[FieldState] = []
        specs = {f.name: f for f in feature_map.fields}
        for kind, opts_list in (("categorical", self.parser.cat), ("numeric", self.parser.num),
                                ("multi", self.parser.multi)):
            for opts in opts_list:
                spec, st = specs.get(opts.name), stats.get(opts.name)
                if spec is None or st is None or spec.kind != kind:
                    raise DataError(f"the bundle's feature map has no {kind} field {opts.name!r} matching its schema")
                state = FieldState(opts, kind)
                if kind == "numeric":
                    state.mean, state.std = float(st.get("mean", 0.0)), float(st.get("std", 1.0)) or 1.0
                    state.n = int(st.get("train_count", 1))  # 0: fed 0 whatever the input, as in training
                else:
                    state.has_missing = bool(st.get("has_missing", False))
                    state.base = int(st["first_value_id"])
                    state.vocab_size = spec.vocab_size
                    state.max_len = spec.max_len
                    if not opts.buckets:
                        vocab = vocabularies.get(opts.name)
                        if vocab is None:
                            raise DataError(f"the bundle has no vocabulary for field {opts.name!r}")
                        if state.base + len(vocab) != spec.vocab_size:
                            raise DataError(f"vocabulary of field {opts.name!r} has {len(vocab)} values; the feature "
                                            f"map expects {spec.vocab_size - state.base}")
                        state.vocab = vocab
                self.states.append(state)
        if [s.opts.name for s in self.states] != [f.name for f in feature_map.fields]:
            raise DataError("the bundle's schema and feature map list different fields")
        # numeric fields without a value in the train rows, which FieldState.encode feeds 0 (for the bundle's warning)
        numeric = [st for st in self.states if st.out_kind == "numeric"]
        self.untrained = [j for j, st in enumerate(numeric) if not st.n]
        self.inputs = []
        by_column: dict[str, InputField] = {}
        for st in self.states:
            col = st.opts.column
            if col in preset.derived:
                continue
            number = st.out_kind == "numeric" or st.opts.transform == "criteo-bucket"
            if col in by_column:  # two fields from one column (e.g. numeric and bucketed)
                by_column[col].number |= number
                continue
            by_column[col] = InputField(col, st.out_kind, number=number,
                                        separator=st.opts.separator if st.out_kind == "multi" else None)
            self.inputs.append(by_column[col])
        self.columns = [i.name for i in self.inputs]
        self.numeric_columns = [st.opts.column for st in self.states if st.out_kind == "numeric"]  # Batch.numeric's

    # ---- chunks of text columns -> Batch ------------------------------------------------------

    def encode_chunk(self, chunk: Chunk, bad: BadRows, labels: bool = False, group: str | None = None,
                     unseen: UnseenCounts | None = None) -> tuple[Batch | None, np.ndarray]:
        """Encode one chunk (columns: `self.columns`, text, '' = missing). Returns the batch of the
        rows kept and a boolean mask of them (bad rows are reported to `bad`: raised or counted).
        labels=True: the chunk also has the label column (`self.label`), checked and read as in preprocessing
        into `Batch.label` (a bad label is a bad row); otherwise the labels are zeros.
        group: a column of the chunk whose values become `Batch.group`, the ids preprocessing writes for a group
        column: of the value after the preset's derivation (kdd12's user 0 is the missing user), as gAUC groups.
        unseen: counts the kept rows' unseen values into it (raw mode)."""
        n = len(chunk)
        if self.mode == "ids":
            return self._encode_ids(chunk, bad, labels, group)
        work, problems = Chunk(chunk.file, chunk.lines, dict(chunk.columns), chunk.unit, 0), []
        if self.derive is not None:
            work, problems = self.derive(work)
        if not labels:  # the label is not an input: give the parser a valid constant label column
            one = "1" if self.schema.label_values == "pm1" else "0"
            work.columns[self.schema.label] = pa.array(np.full(len(work), one, dtype=object), pa.string())
        parser = self.parser if group is None else ChunkParser(dataclasses.replace(self.schema, group=group))
        parsed = None
        # the rows kept come out once, last; in stop mode the rows ahead of the derivation's first bad row come out
        # (and are parsed) first, so that a bad value on one of them is the one reported
        for part in in_line_order(chunk.file, work, problems, bad):
            parsed = parser.parse(part, bad)
        if parsed is None:
            return None, np.zeros(n, dtype=bool)
        keep = np.isin(chunk.lines, parsed.rows)
        m = len(parsed.label)
        n_cat, n_num = len(self.parser.cat), len(self.parser.num)
        cat = np.zeros((m, n_cat), dtype=np.int64)
        num = np.zeros((m, n_num), dtype=np.float32)
        mul = np.zeros((m, len(self.parser.multi), self.max_len), dtype=np.int64)
        for j, k in enumerate(parsed.cat):
            cat[:, j] = self.states[j].encode(k)
            if unseen is not None:
                unseen.add(self.states[j], k, cat[:, j])
        for j, k in enumerate(parsed.num):
            num[:, j] = self.states[n_cat + j].encode(k)
        for j, k in enumerate(parsed.multi):
            enc = self.states[n_cat + n_num + j].encode(k)
            mul[:, j, :enc.shape[1]] = enc
            if unseen is not None:
                unseen.add(self.states[n_cat + n_num + j], k, enc)
        return _batch(cat, num, mul, parsed.label if labels else None, parsed.group), keep

    def _encode_ids(self, chunk: Chunk, bad: BadRows, labels: bool,
                    group: str | None) -> tuple[Batch | None, np.ndarray]:
        n = len(chunk)
        rejects = Rejects(n)  # reported in row order once every field is checked (a row is reported once)
        keep, reject = rejects.keep, rejects.reject
        label = parse_labels(chunk.columns[self.label], self.label, "binary", reject) if labels else None

        def text(name):
            return pc.utf8_trim_whitespace(chunk.columns[name])

        def check(name, arr, regex, what):
            empty = pc.equal(pc.utf8_length(arr), 0).to_numpy(zero_copy_only=False)
            ok = pc.fill_null(pc.match_substring_regex(arr, regex), False).to_numpy(zero_copy_only=False) | empty
            rows = np.flatnonzero(~ok)
            reject(rows, lambda i: f"field {name!r}: expected {what}, got {arr[rows[i]].as_py()!r}")
            return empty

        cat = np.full((n, len(self.cat)), OOV_ID, dtype=np.int64)
        for j, f in enumerate(self.cat):
            arr = text(f.name)
            empty = check(f.name, arr, INT_RE.pattern, "an integer id")
            good = ~empty & keep  # rows that failed a check are neither empty nor kept
            if good.any():
                cat[good, j] = _ids(pc.filter(arr, pa.array(good)), f.vocab_size)
        num = np.zeros((n, len(self.num)), dtype=np.float32)
        for j, f in enumerate(self.num):
            v, wrong, problems = parse_numbers(chunk.columns[f.name])  # as preprocessing: finite, within float32
            reject(wrong, lambda i: f"field {f.name!r}: {problems[i]}")
            num[:, j] = np.nan_to_num(v, nan=0.0)
        mul = np.zeros((n, len(self.multi), self.max_len), dtype=np.int64)
        for j, f in enumerate(self.multi):
            lists = pc.split_pattern(text(f.name), IDS_SEPARATOR)
            flat = pc.utf8_trim_whitespace(pc.list_flatten(lists))
            rows = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
            nonempty = pc.greater(pc.utf8_length(flat), 0).to_numpy(zero_copy_only=False)
            ok = pc.fill_null(pc.match_substring_regex(flat, INT_RE.pattern), False).to_numpy(zero_copy_only=False)
            items = np.flatnonzero(nonempty & ~ok)
            items = items[np.unique(rows[items], return_index=True)[1]]  # a row's first bad item
            reject(rows[items], lambda i: f"field {f.name!r}: expected ids separated by {IDS_SEPARATOR!r}, got item "
                                          f"{flat[items[i]].as_py()!r}")
            sel = nonempty & ok
            if sel.any():
                ids = _ids(pc.filter(flat, pa.array(sel)), f.vocab_size)
                r = rows[sel]
                starts = np.searchsorted(r, r, side="left")
                pos = np.arange(len(r)) - starts
                fits = pos < f.max_len
                mul[r[fits], j, pos[fits]] = ids[fits]
        rejects.report(chunk, bad)
        if not keep.any():
            return None, keep
        # ids data has no derivation: the group is its text, hashed as preprocessing hashes a group value
        ids = None if group is None else (hash_strings(pc.filter(chunk.columns[group], pa.array(keep)))
                                          >> np.uint64(1)).astype(np.int64)
        return _batch(cat[keep], num[keep], mul[keep], None if label is None else label[keep], ids), keep

    # ---- request records -> text columns ------------------------------------------------------

    def records_chunk(self, records: list[dict[str, str]], name: str = "request") -> Chunk:
        """Request records (already validated and converted to text, see server) as a Chunk."""
        cols = {c: pa.array([r.get(c, "") for r in records], pa.string()) for c in self.columns}
        return Chunk(name, np.arange(len(records), dtype=np.int64), cols, unit="row")


def _ids(text: pa.Array, vocab_size: int) -> np.ndarray:
    """Integer id texts -> ids, OOV outside [0, vocab_size). Read as float64, which any integer text fits
    (int64 does not: 10**23 is just another id outside the vocabulary); exact below 2^53, far above any vocabulary."""
    v = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
    inside = (v >= 0) & (v < vocab_size)
    return np.where(inside, v, OOV_ID).astype(np.int64)


def _batch(cat: np.ndarray, num: np.ndarray, mul: np.ndarray, label: np.ndarray | None,
           group: np.ndarray | None = None) -> Batch:
    n = len(cat)
    return Batch(torch.from_numpy(np.ascontiguousarray(cat, dtype=np.int64)),
                 torch.from_numpy(np.ascontiguousarray(num, dtype=np.float32)),
                 torch.from_numpy(np.ascontiguousarray(mul, dtype=np.int64)),
                 torch.zeros(n, dtype=torch.float32) if label is None
                 else torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32)),
                 None if group is None else torch.from_numpy(group))
