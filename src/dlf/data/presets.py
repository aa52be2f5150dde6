"""Presets: the schema and the reader of each public CTR dataset in its native format.

A preset turns the user's `--input` paths into a `Schema` and a list of `Source`s (one per
file, each tagged train/valid/test). A source yields `Chunk`s whose columns are text named
as the schema's raw columns ("" = missing), derived columns (Avazu's weekday, MovieLens'
joined user/movie attributes, libFM's fields) already computed, vectorised per chunk. A derivation returns
the rows it could derive and the problems of those it could not, which `in_line_order` reports so that in
stop mode the first bad line of a file is reported whichever check finds it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.feather as feather

from dlf.data.readers import (COMPRESSIONS, BadRows, Chunk, Problem, check_file, format_from_name, header_names,
                              in_line_order, open_input, read_delimited, read_double_colon, read_lines, read_parquet,
                              strip_bom)
from dlf.data.schema import DataError, FieldOptions, Schema, fill_text

ROLES = ("train", "valid", "test")


@dataclass
class Source:
    role: str  # train | valid | test; train files are split by the schema's split ratios into what is not given
    path: str
    read: Callable[[BadRows, int], Iterator[Chunk]]  # (bad rows, block bytes) -> chunks
    filtered: dict = field(default_factory=dict)  # rows a preset rule dropped on purpose (e.g. rating 3)
    depends: list[str] = field(default_factory=list)  # other files its rows are built from (joined tables, index)
    layout: "LibfmLayout | None" = None  # libFM lines: how they split into fields (kept for scoring)


@dataclass
class Preset:
    """A dataset's reader. Serving (dlf.serve.encoding) looks up `derive`, `derived` and `joined` here to
    encode raw rows exactly as preprocessing did; a preset whose sources transform raw values per chunk
    must declare that derivation here (its sources apply the same function). MovieLens' joined attributes
    and libFM's per-field indices are not derivations: serving takes those columns as its inputs."""

    name: str
    description: str
    build: Callable[[list[tuple[str, Path]], "Schema | None", dict], tuple[Schema, list[Source]]]
    # per-chunk derivation of model columns from raw ones: (the rows derived, the problems of the others)
    derive: Callable[[Chunk], tuple[Chunk, list[Problem]]] | None = None
    derived: tuple[str, ...] = ()  # columns `derive` adds (a caller does not send them)
    joined: dict[str, str] = field(default_factory=dict)  # column -> the side table preprocessing joins it from

    def check_servable(self, schema: Schema) -> None:
        """Raw rows cannot be encoded as in training when a field reads a column joined from a side table
        that a bundle does not carry."""
        joined = [c for c in dict.fromkeys(f.column for f in schema.fields) if c in self.joined]
        if joined:
            tables = ", ".join(sorted({self.joined[c] for c in joined}))
            raise DataError(f"a {self.name} model cannot score raw rows: its fields {', '.join(joined)} were joined "
                            f"from {tables} at preprocessing, which a bundle does not carry; preprocess without "
                            f"{tables} to serve the model")


# ---- generic delimited / parquet -------------------------------------------------------------

def _format_of(path: Path, schema: Schema) -> tuple[str, str]:
    fmt = schema.format
    if fmt == "auto":
        fmt = format_from_name(path)
        if fmt is None:
            raise DataError(f"{path}: cannot tell the format from the name; "
                            "set `format: csv|tsv|parquet` in the schema")
    if fmt != "parquet" and path.is_file():
        with open(path, "rb") as fh:
            if fh.read(4) == b"PAR1":  # (was "header is not valid utf-8", e.g. FuxiCTR's data_format: csv)
                if schema.format == "auto":  # (it said "the schema says format 'csv'" of a schema without one)
                    raise DataError(f"{path}: a Parquet file, but its name says {fmt}; name it .parquet or set "
                                    "`format: parquet` in the schema")
                raise DataError(f"{path}: a Parquet file, but the schema says format {fmt!r}; set `format: parquet` "
                                "(or `auto`; FuxiCTR YAML: data_format: parquet)")
    delimiter = schema.delimiter or {"csv": ",", "tsv": "\t"}.get(fmt, ",")
    return fmt, delimiter


def table_sources(inputs: list[tuple[str, Path]], schema: Schema,
                  derive: Callable[[Chunk], tuple[Chunk, list[Problem]]] | None = None, use: list[str] | None = None,
                  columns: list[str] | None = None, depends: list[str] | None = None) -> list[Source]:
    """`columns`: the file's columns when they are not `schema.columns` (which then also names derived ones)."""
    ranged = [f.name for f in schema.fields if f.range is not None]
    if ranged:  # libFM index ranges: the field has no column here (was a KeyError traceback)
        raise DataError(f"field(s) {ranged}: `range` is for libFM input (preset libfm); a table field reads a column")
    use = use or schema.raw_columns()
    columns = columns or schema.columns
    sources = []
    for role, path in inputs:
        fmt, delimiter = _format_of(path, schema)

        def read(bad: BadRows, block: int, path=path, fmt=fmt, delimiter=delimiter):
            if fmt == "parquet":
                chunks = read_parquet(path, use=use, rows=max(4096, block // 64),
                                      separators={f.column: f.separator for f in schema.of_kind("multi")},
                                      times=schema.seconds_columns())
            else:
                chunks = read_delimited(path, delimiter=delimiter, header=schema.header, columns=columns,
                                        use=use, bad=bad, encoding=schema.encoding, quote=fmt == "csv",
                                        block_bytes=block, blank_lines="bad")
            for chunk in chunks:
                if derive:
                    yield from in_line_order(chunk.file, *derive(chunk), bad)
                else:
                    yield chunk
        sources.append(Source(role, str(path), read, depends=list(depends or [])))
    return sources


def _expand_inputs(inputs: list[tuple[str, Path]], names: dict[str, tuple[str, ...]]) -> list[tuple[str, Path]]:
    """A directory input becomes its train/valid/test files (first name found for each role)."""
    out = []
    for role, path in inputs:
        if path.is_dir():
            found = False
            for r, candidates in names.items():
                for c in candidates:
                    if (path / c).exists():
                        out.append((r, path / c))
                        found = True
                        break
            if not found:
                raise DataError(f"{path}: directory has none of the expected files "
                                f"{sorted({c for cs in names.values() for c in cs})}")
        else:
            out.append((role, path))
    return out


def _empty_part(path: Path) -> bool:
    """No bytes, or none once decompressed: Spark's and Hive's gzip output of an empty partition is a 20-byte
    part-00003.csv.gz holding nothing, an empty part like the 0-byte one written without compression."""
    if path.stat().st_size == 0:
        return True
    if not path.name.lower().endswith(COMPRESSIONS):
        return False
    try:
        with open_input(path) as fh:
            return not fh.read(1)
    except OSError:  # not the compression its name says: the reader names it
        return False


def _folder_files(inputs: list[tuple[str, Path]], schema: Schema) -> list[tuple[str, Path]]:
    """A folder input (Spark's or Hive's output: part-00000-*.parquet beside _SUCCESS and .crc files) stands for
    its data files in name order: not empty (Spark writes empty parts), not named '_*' or '.*' and, with format
    auto, named with a format. A folder inside it (a partition, dt=2024-01-01/) stops: its rows would be left out."""
    out = []
    for role, path in inputs:
        if not path.is_dir():
            out.append((role, path))
            continue
        entries = sorted(p for p in path.iterdir() if not p.name.startswith(("_", ".")))
        folders = [p.name for p in entries if p.is_dir()]
        if folders:
            raise DataError(f"{path}: holds folders ({', '.join(folders[:3])}{', ...' if len(folders) > 3 else ''}); "
                            "give each with its own --input")
        # (a broken link is kept: check_file names it)
        files = [p for p in entries if not (p.is_file() and _empty_part(p))
                 and (schema.format != "auto" or format_from_name(p))]
        if not files:
            raise DataError(f"{path}: a folder without data files (non-empty, not named '_*' or '.*'"
                            + (", named .csv, .tsv, .txt or .parquet, or set the schema's format)" if
                               schema.format == "auto" else ")"))
        out += [(role, p) for p in files]
    return out


def _generic(inputs, schema, options):
    if schema is None:
        raise DataError("preset 'generic' needs a schema: --schema my_schema.yaml (label, fields, format)")
    return schema, table_sources(_folder_files(inputs, schema), schema)


# ---- Criteo ---------------------------------------------------------------------------------

CRITEO_COLUMNS = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]


def _count_fields(names: list[str], numeric: str, min_count: int, preset: str) -> list[FieldOptions]:
    """Integer count columns: categories by the standard Criteo treatment (bucket), or numeric inputs."""
    if numeric not in ("bucket", "log", "standardize", "none"):
        raise DataError(f"{preset} numeric treatment must be bucket, log, standardize or none, got {numeric!r}")
    if numeric == "bucket":
        return [FieldOptions(n, "categorical", transform="criteo-bucket", min_count=min_count) for n in names]
    return [FieldOptions(n, "numeric", transform=numeric) for n in names]


def criteo_schema(numeric: str = "bucket", min_count: int = 10) -> Schema:
    ints = _count_fields([f"I{i}" for i in range(1, 14)], numeric, min_count, "criteo")
    cats = [FieldOptions(f"C{i}", "categorical", min_count=min_count) for i in range(1, 27)]
    return Schema(fields=ints + cats, label="label", format="tsv", delimiter="\t", header=False,
                  columns=list(CRITEO_COLUMNS)).validate("criteo preset")


def _criteo(inputs, schema, options):
    schema = schema or criteo_schema(options.get("numeric", "bucket"), int(options.get("min_count", 10)))
    return schema, table_sources(inputs, schema)


# ---- Avazu ----------------------------------------------------------------------------------

AVAZU_COLUMNS = ["id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
                 "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type",
                 "device_conn_type"] + [f"C{i}" for i in range(14, 22)]


def avazu_schema(min_count: int = 2) -> Schema:
    names = [c for c in AVAZU_COLUMNS if c not in ("id", "click", "hour")] + ["hour", "weekday", "weekend"]
    return Schema(fields=[FieldOptions(n, "categorical", min_count=min_count) for n in names], label="click",
                  format="csv", header=True).validate("avazu preset")


AVAZU_TIME = "time"  # the raw YYMMDDHH, kept for a time split: `hour` becomes the hour of day


def _avazu_derive(chunk: Chunk) -> tuple[Chunk, list[Problem]]:
    """hour YYMMDDHH -> hour (of day), weekday (0 = Monday), weekend (0/1); the YYMMDDHH as `time`."""
    raw = chunk.columns["hour"]
    ts = pc.strptime(raw, format="%y%m%d%H", unit="s", error_is_null=True)
    bad_mask = pc.is_null(ts).to_numpy(zero_copy_only=False) | (pc.utf8_length(raw).to_numpy(zero_copy_only=False) != 8)
    problems = [chunk.problem(row, f"field 'hour': expected YYMMDDHH, got {raw[row].as_py()!r}")
                for row in np.flatnonzero(bad_mask)]
    ts = pc.fill_null(ts, pa.scalar(0, pa.timestamp("s")))
    hour = pc.cast(pc.hour(ts), pa.string())
    weekday = pc.day_of_week(ts)
    weekend = pc.cast(pc.greater_equal(weekday, 5), pa.int8())
    cols = dict(chunk.columns)
    cols.update({"hour": hour, "weekday": pc.cast(weekday, pa.string()), "weekend": pc.cast(weekend, pa.string()),
                 AVAZU_TIME: raw})
    return Chunk(chunk.file, chunk.lines, cols, chunk.unit, chunk.header_lines).take(~bad_mask), problems


def _avazu(inputs, schema, options):
    schema = schema or avazu_schema(int(options.get("min_count", 2)))
    if (options.get("split", schema.split.method) == "time"
            and options.get("time_column", schema.split.time_column) == "hour"):  # (the split ordered by hour of day)
        raise DataError(f"avazu: a time split cannot order rows by `hour`, which becomes the hour of day (0-23); "
                        f"order them by the date and hour YYMMDDHH: time_column={AVAZU_TIME}")
    use = [c for c in AVAZU_COLUMNS if c != "id"]
    return schema, table_sources(inputs, schema, derive=_avazu_derive, use=use)


# ---- FuxiCTR / BARS splits --------------------------------------------------------------------

FUXI_FILES = {r: (f"{r}.csv", f"{r}.parquet") for r in ROLES}


def schema_from_fuxictr(cfg: dict, where: str, dataset_id: str | None = None) -> Schema:
    """A FuxiCTR dataset_config.yaml (one dataset id -> {feature_cols, label_col, ...}) as a Schema."""
    if "feature_cols" not in cfg:
        ids = [k for k, v in cfg.items() if isinstance(v, dict) and "feature_cols" in v]
        if dataset_id:
            if dataset_id not in ids:
                raise DataError(f"{where}: no dataset {dataset_id!r}; it has {ids}")
            ids = [dataset_id]
        if len(ids) != 1:
            raise DataError(f"{where}: holds {len(ids)} dataset ids {ids}; pick one with --option dataset_id=NAME")
        cfg = cfg[ids[0]]
    def count(value, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DataError(f"{where}: {key}: expected an integer >= 0, got {value!r}")
        return value

    default_min = count(cfg.get("min_categr_count", 1), "min_categr_count")
    fields = []
    for i, col in enumerate(cfg.get("feature_cols") or []):
        if not isinstance(col, dict) or "name" not in col:
            raise DataError(f"{where}: feature_cols[{i}] needs a name")
        if col.get("active", True) is False:
            continue
        names = col["name"] if isinstance(col["name"], list) else [col["name"]]
        ftype = col.get("type", "categorical")
        key = f"feature_cols[{i}] ({', '.join(map(str, names))})"
        # Anything this reader does not do is an error, never skipped: the data would silently differ from
        # what FuxiCTR builds from the same YAML (convert_hour ignored left Avazu's hour as raw YYMMDDHH).
        prep = str(col.get("preprocess") or "")
        source = None
        if prep.startswith("copy_from(") and prep.endswith(")"):
            source, prep = prep[len("copy_from("):-1].strip(), ""
        if prep and not (ftype == "categorical" and prep == "convert_to_bucket"):
            owner = {"convert_hour": "avazu", "convert_weekday": "avazu", "convert_weekend": "avazu",
                     "extract_country_code": "kkbox", "bucketize_age": "kkbox"}.get(prep.split("(")[0])
            raise DataError(f"{where}: {key}: preprocess {prep!r} is not supported here (the fuxictr preset does "
                            "convert_to_bucket on categorical columns and copy_from(COLUMN))"
                            + (f"; --preset {owner} applies it to these files" if owner else ""))
        norm = col.get("normalizer")
        if ftype == "numeric" and norm not in (None, "StandardScaler"):
            raise DataError(f"{where}: {key}: normalizer {norm!r} is not supported (StandardScaler, or none)")
        if ftype == "sequence" and col.get("padding", "post") != "post":
            # FuxiCTR truncates on the padding side: 'pre' keeps the last max_len items, this reader the first
            raise DataError(f"{where}: {key}: padding {col['padding']!r} is not supported (post: the first max_len "
                            "items are kept; FuxiCTR's 'pre' keeps the last)")
        processor = col.get("category_processor")
        if processor not in (None, "hash_bucket"):
            raise DataError(f"{where}: {key}: category_processor {processor!r} is not supported (hash_bucket)")
        buckets = max(count(col.get("num_buckets", cfg.get("num_buckets", 10)), f"{key}: num_buckets"), 1) \
            if processor else 0
        min_count = max(count(col.get("min_categr_count", default_min), f"{key}: min_categr_count"), 1)
        fill = _fuxictr_fill(col, ftype)
        na_key = _na_key(col)
        if ftype == "sequence" and col.get(na_key) not in (None, ""):  # FuxiCTR pads the items equal to it
            raise DataError(f"{where}: {key}: {na_key} {col[na_key]!r} on a sequence is not supported (a missing "
                            "list is missing here)")
        for n in names:
            if ftype == "numeric":
                fields.append(FieldOptions(n, "numeric", source=source, transform="standardize" if norm else "none",
                                           fill_na=fill))
            elif ftype == "categorical":
                fields.append(FieldOptions(n, "categorical", source=source, min_count=min_count, buckets=buckets,
                                           transform="criteo-bucket" if prep else "none", fill_na=fill))
            elif ftype == "sequence":
                fields.append(FieldOptions(n, "multi", source=source, min_count=min_count,
                                           separator=str(col.get("splitter", "^")),
                                           max_len=count(col.get("max_len", 0) or 0, f"{key}: max_len")))
            elif ftype != "meta":  # meta columns (a group id) are not model inputs in FuxiCTR either
                raise DataError(f"{where}: {key}: type {ftype!r} is not supported (categorical, numeric, sequence, "
                                "meta)")
    label = cfg.get("label_col", {"name": "label"})
    if isinstance(label, list):  # multi-task configs list several; dlf trains one
        if len(label) != 1:
            raise DataError(f"{where}: label_col lists {len(label)} labels; dlf trains on one: keep one in the YAML")
        label = label[0]
    if not isinstance(label, dict) or not isinstance(label.get("name"), str):
        raise DataError(f"{where}: label_col: expected {{name: COLUMN, dtype: float}}, got {label!r}")
    group = cfg.get("group_id")
    fmt = str(cfg.get("data_format", "auto"))
    return Schema(fields=fields, label=label["name"], group=str(group) if group else None,
                  format=fmt if fmt in ("csv", "parquet") else "auto", header=True).validate(where)


def _na_key(col: dict) -> str:
    """FuxiCTR 1.x (the BARS x4 configs, e.g. Criteo_x4's `na_value: 0`) names the fill value `na_value`, 2.x
    `fill_na`."""
    return "fill_na" if "fill_na" in col else "na_value"


def _fuxictr_fill(col: dict, ftype: str) -> str | None:
    """The text a missing value of a feature_cols entry reads as: FuxiCTR fills missing values before anything
    else with `fill_na` (1.x: `na_value`), by default 0 for dtype int/float (Criteo_x4's I1-I13: missing is
    bucket 0) and '' for str, which stays missing here (None)."""
    dtype = str(col.get("dtype", "float" if ftype == "numeric" else "str"))
    key = _na_key(col)
    if key not in col and dtype not in ("int", "float"):
        return None
    value = col.get(key, 0)
    return None if value in ("", None) else fill_text(value)


def _fuxictr(inputs, schema, options):
    inputs = _expand_inputs(inputs, FUXI_FILES)
    if schema is None:
        schema = _infer_schema(inputs)
    return schema, table_sources(inputs, schema)


def _infer_schema(inputs) -> Schema:
    """No YAML given: label is the column named label/click/clicked, every other column categorical."""
    path = inputs[0][1]
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq
        names = pq.ParquetFile(check_file(path)).schema_arrow.names
    else:
        with open(check_file(path), encoding="utf-8-sig", errors="replace") as fh:  # -sig: a BOM is not a name
            names = header_names(fh.readline().rstrip("\r\n"), ",", True)
    # any case: BARS Criteo_x4's column is 'Label'
    label = next((c for want in ("label", "click", "clicked") for c in names if c.lower() == want), None)
    if label is None:
        raise DataError(f"{path}: no label column (label, click or clicked) in {names}; pass the dataset YAML "
                        "with --schema")
    return Schema(fields=[FieldOptions(c, "categorical") for c in names if c != label], label=label,
                  header=True).validate(f"schema inferred from {path}")


# ---- libFM (Frappe, iPinYou release) ---------------------------------------------------------

FRAPPE_FIELDS = [("user", 957), ("item", 4082), ("daytime", 7), ("weekday", 7), ("isweekend", 2),
                 ("homework", 3), ("cost", 2), ("weather", 9), ("country", 80), ("city", 233)]


@dataclass
class FieldIndex:
    """Which field owns each libFM feature index: sorted, disjoint, inclusive intervals
    [starts[i], ends[i]] owned by field position owner[i] (-1: indices read and ignored)."""

    starts: np.ndarray
    ends: np.ndarray
    owner: np.ndarray
    known: str  # what a valid index is, for error messages

    @classmethod
    def from_ranges(cls, fields: list[FieldOptions]) -> "FieldIndex":
        order = sorted(range(len(fields)), key=lambda j: fields[j].range[0])
        starts = np.array([fields[j].range[0] for j in order], dtype=np.int64)
        ends = np.array([fields[j].range[1] for j in order], dtype=np.int64)
        if np.any(starts[1:] <= ends[:-1]):
            raise DataError("libFM field ranges overlap")
        first = fields[order[0]].name
        return cls(starts, ends, np.array(order, dtype=np.int64),
                   f"an index inside one field's range ({first} starts at {starts[0]}, last index {ends[-1]})")

    @classmethod
    def from_pairs(cls, index: np.ndarray, owner: np.ndarray, known: str) -> "FieldIndex":
        """One owner per feature index: runs of consecutive indices with one owner become one interval."""
        order = np.argsort(index, kind="stable")
        index, owner = index[order], owner[order]
        new = np.ones(len(index), dtype=bool)
        new[1:] = (index[1:] != index[:-1] + 1) | (owner[1:] != owner[:-1])
        last = np.append(np.flatnonzero(new)[1:] - 1, len(index) - 1)
        return cls(index[new], index[last], owner[new], known)

    def lookup(self, idx: np.ndarray) -> np.ndarray:
        """Owner of each index; -2 where no interval holds it."""
        pos = np.maximum(np.searchsorted(self.starts, idx, side="right") - 1, 0)
        inside = (idx >= self.starts[pos]) & (idx <= self.ends[pos])
        return np.where(inside, self.owner[pos], -2)


@dataclass
class LibfmLayout:
    """How libFM lines split into fields. Preprocessing keeps it beside the data (LIBFM_LAYOUT) and export in the
    bundle, so that scoring splits lines as training did, also when the fields came from a feature-index file."""

    index: FieldIndex
    skip: int = 0  # tokens after the label to ignore (the paying price of make-ipinyou-data's yzx files)

    def save(self, path: Path) -> None:
        table = pa.table({"start": self.index.starts, "end": self.index.ends, "owner": self.index.owner})
        feather.write_feather(table.replace_schema_metadata({"skip": str(self.skip), "known": self.index.known}),
                              str(path))

    @classmethod
    def load(cls, path: Path) -> "LibfmLayout":
        try:
            table = feather.read_table(str(path))
            meta = table.schema.metadata or {}
            index = FieldIndex(*(table[c].to_numpy().astype(np.int64) for c in ("start", "end", "owner")),
                               meta[b"known"].decode())
            return cls(index, int(meta[b"skip"]))
        except (pa.ArrowInvalid, OSError, KeyError, ValueError) as exc:
            raise DataError(f"{path}: not a readable libFM layout (Arrow IPC with start, end, owner and skip): "
                            f"{str(exc).splitlines()[0]}") from None


LIBFM_LAYOUT = "libfm_layout.arrow"


def read_feature_index(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A feature-index file: one `KEY INDEX` per line (whitespace-separated), KEY a field name or
    `field:value` (make-ipinyou-data's featindex.txt: `8:115.45.195.*<TAB>29`); a KEY without ':' is a
    field of its own. Returns the field names (in order of first appearance), and each line's index and
    field position."""
    path = check_file(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM made the first field '\ufeffuser', apart from 'user'
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: feature index is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    lines = pa.array(text.split("\n"), pa.string())
    blank = pc.equal(pc.utf8_trim_whitespace(lines), "").to_numpy(zero_copy_only=False)
    parts = pc.extract_regex(lines, r"^\s*(?P<key>[^:\s].*?)\s+(?P<index>[0-9]{1,18})\s*$")
    wrong = pc.is_null(parts).to_numpy(zero_copy_only=False) & ~blank
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise DataError(f"{path}:{i + 1}: expected 'FIELD INDEX' or 'FIELD:VALUE INDEX', got {lines[i].as_py()!r}")
    rows = np.flatnonzero(~blank)
    if not len(rows):
        raise DataError(f"{path}: feature index has no entries")
    parts = parts.take(pa.array(rows))
    index = pc.cast(pc.struct_field(parts, "index"), pa.int64()).to_numpy()
    fields = pc.dictionary_encode(pc.replace_substring_regex(pc.struct_field(parts, "key"), ":.*$", ""))
    order = np.argsort(index, kind="stable")
    twice = np.flatnonzero(np.diff(index[order]) == 0)
    if len(twice):
        i = int(rows[order[twice[0] + 1]])
        raise DataError(f"{path}:{i + 1}: index {index[order[twice[0]]]} is listed twice")
    return fields.dictionary.to_pylist(), index, fields.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def libfm_schema(sizes: list[tuple[str, int]], label_values: str = "pm1") -> Schema:
    fields, start = [], 0
    for name, size in sizes:
        fields.append(FieldOptions(name, "categorical", range=(start, start + size - 1)))
        start += size
    return Schema(fields=fields, label="label", label_values=label_values, header=False, columns=["label"]).validate()


def indexed_schema(fields: list[FieldOptions], label_values: str = "pm1") -> Schema:
    """libFM lines whose fields come from a feature-index file (no `range`)."""
    return Schema(fields=fields, label="label", label_values=label_values, header=False,
                  columns=["label"] + [f.name for f in fields]).validate()


def parse_sizes(text: str) -> list[tuple[str, int]]:
    """'user:957,item:4082' -> [('user', 957), ('item', 4082)]"""
    out = []
    for part in text.split(","):
        name, _, size = part.strip().partition(":")
        if not name or not size.isdigit() or int(size) < 1:
            raise DataError(f"libFM fields must look like name:size,name:size; got {part!r}")
        out.append((name, int(size)))
    return out


def _libfm_derive(fields: list[FieldOptions], index: FieldIndex, skip: int = 0):
    """`label idx:val idx:val ...` lines -> a text column per field (the feature index; numeric fields: the
    value; multi fields: the indices joined by the separator). `skip`: tokens after the label to ignore
    (the paying price of make-ipinyou-data's yzx files)."""
    from dlf.data.preprocess import parse_numbers  # here: preprocess imports this module
    names = [f.name for f in fields]
    nf = len(fields)
    single = np.array([f.kind != "multi" for f in fields])
    numeric = np.array([f.kind == "numeric" for f in fields])
    layout = "label " + "z " * skip + "index:value ..."

    def derive(chunk: Chunk) -> tuple[Chunk, list[Problem]]:
        n = len(chunk)
        line = pc.utf8_trim_whitespace(chunk.columns["line"])  # a blank at either end split off an empty token
        toks = pc.utf8_split_whitespace(line)
        keep = ((pc.list_value_length(toks).to_numpy(zero_copy_only=False) >= 1 + skip)
                & pc.not_equal(line, "").to_numpy(zero_copy_only=False))
        problems = [chunk.problem(row, f"expected '{layout}', got {chunk.columns['line'][row].as_py()!r}")
                    for row in np.flatnonzero(~keep)]
        label = pc.replace_substring_regex(line, r"\s.*$", "")
        feats = pc.list_slice(toks, 1 + skip)
        rows = pc.list_parent_indices(feats).to_numpy(zero_copy_only=False)
        flat = pc.list_flatten(feats)
        kv = pc.split_pattern(flat, ":", max_splits=1)
        ok = pc.equal(pc.list_value_length(kv), 2).to_numpy(zero_copy_only=False)
        # a token without ':' has no element 1 to take
        kv = pc.if_else(pa.array(ok), kv, pa.scalar(["", ""], pa.list_(pa.string())))
        idx_txt, val_txt = pc.list_element(kv, 0), pc.list_element(kv, 1)
        ok &= pc.match_substring_regex(idx_txt, r"^[0-9]{1,18}$").to_numpy(zero_copy_only=False)
        idx = np.zeros(len(ok), dtype=np.int64)
        if ok.any():
            idx[ok] = pc.cast(pc.filter(idx_txt, pa.array(ok)), pa.int64()).to_numpy()
        owner = index.lookup(idx)
        ok &= owner > -2
        field = np.maximum(owner, 0)
        # libFM values: x_i = value, so 0 is an absent feature (sparse zero) and 1 a present one; a one-hot
        # (categorical or multi) field has no meaning for other values (a weight, a count): a bad row
        value, wrong, _ = parse_numbers(val_txt)
        number = ~np.isnan(value)  # '' ('4:') is NaN, not in `wrong`
        number[wrong] = False
        onehot = ok & (owner >= 0) & ~numeric[field]
        other = onehot & number & (value != 0) & (value != 1)
        for t in np.flatnonzero(~(ok & number) | other):
            if keep[rows[t]]:
                keep[rows[t]] = False
                what = (f"expected index:value with {index.known}" if not ok[t] else
                        "expected index:value with a number as value" if not number[t] else
                        f"field {names[field[t]]!r} is one-hot: expected value 1, or 0 for an absent feature")
                problems.append(chunk.problem(rows[t], f"feature {flat[t].as_py()!r}: {what}"))
        use = ok & (owner >= 0) & ~(onehot & (value == 0))
        one = use & single[field]  # tokens of single-valued fields: one (row, field) cell each
        dup = np.bincount(rows[one] * nf + field[one], minlength=n * nf) > 1
        for s in np.flatnonzero(dup):
            r = s // nf
            if keep[r]:
                keep[r] = False
                problems.append(chunk.problem(r, f"field {names[s % nf]!r} appears more than once in the row"))
        key = np.full((n, nf), -1, dtype=np.int64)  # the feature index of each (row, field), -1 absent
        key[rows[one], field[one]] = idx[one]
        cols = {"label": label}
        for j, f in enumerate(fields):
            if f.kind == "multi":  # tokens are in row order: the selected ones form each row's list
                sel = use & (owner == j)
                offsets = np.concatenate([[0], np.cumsum(np.bincount(rows[sel], minlength=n))]).astype(np.int32)
                lists = pa.ListArray.from_arrays(pa.array(offsets), pc.cast(pa.array(idx[sel]), pa.string()))
                cols[f.name] = pc.binary_join(lists, f.separator)
            elif f.kind == "numeric":  # the value, not the index
                sel = use & (owner == j)
                text = np.full(n, "", dtype=object)
                if sel.any():
                    text[rows[sel]] = pc.filter(val_txt, pa.array(sel)).to_numpy(zero_copy_only=False)
                cols[f.name] = pa.array(text, pa.string())
            else:
                cols[f.name] = pc.if_else(pa.array(key[:, j] >= 0), pc.cast(pa.array(key[:, j]), pa.string()), "")
        return Chunk(chunk.file, chunk.lines, cols, chunk.unit, chunk.header_lines).take(keep), problems
    return derive


def _libfm(inputs, schema, options):
    if "feature_index" in options:
        if schema is not None:
            raise DataError("libfm: give the fields either by --option feature_index=FILE or by --schema, not both")
        path = Path(options["feature_index"])
        names, idx, owner = read_feature_index(path)
        schema = indexed_schema([FieldOptions(n, "categorical") for n in names], options.get("labels", "pm1"))
        index = FieldIndex.from_pairs(idx, owner, f"an index listed in {path}")
        return schema, _line_sources(inputs, schema, LibfmLayout(index), depends=[str(path)])
    if schema is None:
        if "fields" not in options:
            raise DataError("preset 'libfm' needs the fields' index ranges: --option fields=name:size,name:size,... "
                            "or --option feature_index=FILE, or a schema with `range` per field (preset 'frappe' "
                            "has Frappe's built in)")
        schema = libfm_schema(parse_sizes(options["fields"]), options.get("labels", "pm1"))
    if any(f.range is None for f in schema.fields):
        raise DataError("libFM input needs every field's index range: fields with range: [first, last] in the "
                        "schema, or --option fields=name:size,name:size,... (sizes in index order)")
    return schema, _line_sources(inputs, schema, LibfmLayout(FieldIndex.from_ranges(schema.fields)))


def _frappe(inputs, schema, options):
    return _libfm(inputs, schema or libfm_schema(FRAPPE_FIELDS, options.get("labels", "pm1")), options)


def read_libfm(path: str | Path, schema: Schema, bad: BadRows, block_bytes: int,
               layout: LibfmLayout | None = None) -> Iterator[Chunk]:
    """libFM lines as preprocessing reads them: chunks of the label and a text column per field, a bad line a bad row
    at FILE:LINE. `layout`: how the lines split into fields, by default the schema fields' index ranges (`range`)."""
    layout = layout or LibfmLayout(FieldIndex.from_ranges(schema.fields))
    derive = _libfm_derive(schema.fields, layout.index, layout.skip)
    for chunk in read_lines(path, bad=bad, encoding=schema.encoding, block_bytes=block_bytes):
        yield from in_line_order(chunk.file, *derive(chunk), bad)


def _line_sources(inputs, schema: Schema, layout: LibfmLayout, depends: list[str] | None = None) -> list[Source]:
    sources = []
    for role, path in inputs:
        def read(bad: BadRows, block: int, path=path):
            return read_libfm(path, schema, bad, block, layout)
        sources.append(Source(role, str(path), read, depends=list(depends or []), layout=layout))
    return sources


# ---- MovieLens-1M -----------------------------------------------------------------------------

ML_FIELDS = ["user_id", "movie_id", "gender", "age", "occupation", "zip", "year", "genres"]


def movielens_schema(min_count: int = 1) -> Schema:
    fields = [FieldOptions(n, "categorical", min_count=min_count) for n in ML_FIELDS[:-1]]
    fields.append(FieldOptions("genres", "multi", separator="|", min_count=min_count))
    return Schema(fields=fields, label="label", group="user_id", header=True).validate("movielens-1m preset")


def _read_table(path: Path, columns: list[str]) -> dict[str, list[str]]:
    """A small '::' table (users.dat, movies.dat), ISO-8859-1; read whole (a few thousand lines)."""
    check_file(path)
    data = {c: [] for c in columns}
    # a UTF-8 BOM (an editor's "save as UTF-8") would start the first id: user 1 lost its attributes
    text = strip_bom(path.read_bytes()).decode("iso-8859-1")
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line:
            continue
        parts = line.split("::")
        if len(parts) != len(columns):
            raise DataError(f"{path}:{number}: expected {len(columns)} fields separated by '::' "
                            f"({', '.join(columns)}), got {len(parts)}")
        for c, v in zip(columns, parts):
            data[c].append(v)
    return data


def _movielens(inputs, schema, options):
    schema = schema or movielens_schema(int(options.get("min_count", 1)))
    ratings, folder = [], None
    for role, path in inputs:
        if path.is_dir():
            folder = path
            for name in ("ratings.dat", "ratings.csv", "ratings_100k_sample.dat"):
                if (path / name).exists():
                    ratings.append((role, path / name))
                    break
            else:
                raise DataError(f"{path}: no ratings.dat or ratings.csv in the directory")
        elif path.name in ("users.dat", "movies.dat"):
            folder = path.parent
        else:
            ratings.append((role, path))
            folder = folder or path.parent
    if not ratings:
        raise DataError("movielens-1m: no ratings file among the inputs")
    users = _read_table(folder / "users.dat", ["user_id", "gender", "age", "occupation", "zip"])
    movies = _read_table(folder / "movies.dat", ["movie_id", "title", "genres"])
    years = [(m.group(1) if (m := re.search(r"\((\d{4})\)\s*$", t)) else "") for t in movies["title"]]
    user_keys = pa.array(users["user_id"])
    movie_keys = pa.array(movies["movie_id"])
    user_cols = {c: pa.array(users[c]) for c in ("gender", "age", "occupation", "zip")}
    movie_cols = {"year": pa.array(years), "genres": pa.array(movies["genres"])}

    def derive(chunk: Chunk, source: Source) -> tuple[Chunk, list[Problem]]:
        rating = chunk.columns["rating"]
        valid = pc.match_substring_regex(rating, r"^\s*[1-5](\.0)?\s*$").to_numpy(zero_copy_only=False)
        problems = [chunk.problem(row, f"field 'rating': expected 1-5, got {rating[row].as_py()!r}")
                    for row in np.flatnonzero(~valid)]
        r = np.zeros(len(chunk), dtype=np.int64)
        if valid.any():
            r[valid] = pc.cast(pc.cast(pc.filter(rating, pa.array(valid)), pa.float64()), pa.int64()).to_numpy()
        three = valid & (r == 3)
        source.filtered["rating 3"] = source.filtered.get("rating 3", 0) + int(three.sum())
        cols = {"user_id": chunk.columns["user_id"], "movie_id": chunk.columns["movie_id"],
                "label": pa.array(np.where(r >= 4, "1", "0"))}
        if "timestamp" in chunk.columns:
            cols["timestamp"] = chunk.columns["timestamp"]
        u = pc.index_in(chunk.columns["user_id"], value_set=user_keys)
        m = pc.index_in(chunk.columns["movie_id"], value_set=movie_keys)
        for name, arr in user_cols.items():
            cols[name] = pc.fill_null(pc.take(arr, u), "")
        for name, arr in movie_cols.items():
            cols[name] = pc.fill_null(pc.take(arr, m), "")
        return Chunk(chunk.file, chunk.lines, cols, chunk.unit, chunk.header_lines).take(valid & ~three), problems

    sources = []
    for role, path in ratings:
        src = Source(role, str(path), None, depends=[str(folder / "users.dat"), str(folder / "movies.dat")])

        def read(bad: BadRows, block: int, path=path, src=src):
            if path.suffix.lower() == ".csv":
                with open(check_file(path), encoding="utf-8-sig", errors="replace") as fh:
                    head = header_names(fh.readline().rstrip("\r\n"), ",", True)
                # the timestamp only orders a time split: a ratings.csv without it is fine (was "header has no
                # column(s) ['timestamp']"); a time split on it then names the missing column
                use = ["user_id", "movie_id", "rating"] + (["timestamp"] if "timestamp" in head else [])
                chunks = read_delimited(path, delimiter=",", header=True, columns=None, use=use, bad=bad,
                                        quote=True, block_bytes=block, blank_lines="bad")
            else:
                chunks = read_double_colon(path, columns=["user_id", "movie_id", "rating", "timestamp"], bad=bad,
                                           block_bytes=block)
            for chunk in chunks:
                yield from in_line_order(chunk.file, *derive(chunk, src), bad)
        src.read = read
        sources.append(src)
    return schema, sources


# ---- KKBox (BARS KKBox_x1) ----------------------------------------------------------------------

KKBOX_CATEGORICAL = ["msno", "song_id", "source_system_tab", "source_screen_name", "source_type", "city", "gender",
                     "registered_via", "language", "isrc", "bd"]
KKBOX_MULTI = ["genre_ids", "artist_name"]


def kkbox_schema(min_count: int = 10) -> Schema:
    """KKBox_x1 as in its FuxiCTR dataset config: isrc -> country code, bd -> age bucket, genre_ids and
    artist_name space-separated lists of at most 3, min_count 10 for every field."""
    fields = [FieldOptions(n, "categorical", min_count=min_count) for n in KKBOX_CATEGORICAL]
    fields += [FieldOptions(n, "multi", separator=" ", max_len=3, min_count=min_count) for n in KKBOX_MULTI]
    return Schema(fields=fields, label="label", header=True).validate("kkbox preset")


def _kkbox_derive(chunk: Chunk) -> tuple[Chunk, list[Problem]]:
    """isrc -> its country code (first 2 letters); bd (age) -> '1' (<= 10), '2' (<= 20) ... '6' (<= 60),
    '7' (older), missing outside 1-95: FuxiCTR's extract_country_code and bucketize_age for KKBox."""
    cols = dict(chunk.columns)
    keep, problems = np.ones(len(chunk), dtype=bool), []
    if "isrc" in cols:
        cols["isrc"] = pc.utf8_slice_codeunits(pc.utf8_trim_whitespace(cols["isrc"]), 0, 2)
    if "bd" in cols:
        bd = pc.utf8_trim_whitespace(cols["bd"])
        number = pc.match_substring_regex(bd, r"^[-+]?[0-9]+(\.[0-9]*)?$").to_numpy(zero_copy_only=False)
        keep = number | pc.equal(bd, "").to_numpy(zero_copy_only=False)
        problems = [chunk.problem(row, f"field 'bd': expected an age (a number), got {bd[row].as_py()!r}")
                    for row in np.flatnonzero(~keep)]
        age = np.zeros(len(chunk))
        if number.any():
            age[number] = pc.cast(pc.filter(bd, pa.array(number)), pa.float64()).to_numpy()
        bucket = np.minimum(np.ceil(age / 10), 7).astype(np.int64)
        cols["bd"] = pc.if_else(pa.array(number & (age >= 1) & (age <= 95)), pc.cast(pa.array(bucket), pa.string()),
                                "")
    return Chunk(chunk.file, chunk.lines, cols, chunk.unit, chunk.header_lines).take(keep), problems


def _kkbox(inputs, schema, options):
    schema = schema or kkbox_schema(int(options.get("min_count", 10)))
    return schema, table_sources(_expand_inputs(inputs, FUXI_FILES), schema, derive=_kkbox_derive)


# ---- iPinYou (BARS iPinYou_x1, or make-ipinyou-data) --------------------------------------------

IPINYOU_FIELDS = ["weekday", "hour", "IP", "region", "city", "adexchange", "domain", "slotid", "slotwidth",
                  "slotheight", "slotvisibility", "slotformat", "creative", "advertiser", "useragent", "slotprice"]
# the columns of make-ipinyou-data's train.log.txt: its featindex.txt names each feature's column by number
IPINYOU_LOG_COLUMNS = ["click", "weekday", "hour", "bidid", "timestamp", "logtype", "ipinyouid", "useragent", "IP",
                       "region", "city", "adexchange", "domain", "url", "urlid", "slotid", "slotwidth", "slotheight",
                       "slotvisibility", "slotformat", "slotprice", "creative", "bidprice", "payprice", "keypage",
                       "advertiser", "usertag"]
IPINYOU_FILES = {"train": ("train.csv", "train.yzx.txt"), "valid": ("valid.csv",),
                 "test": ("test.csv", "test.yzx.txt")}


def ipinyou_schema(min_count: int = 1) -> Schema:
    """iPinYou_x1 CSV: label `click` and 16 categorical fields (values are the release's feature indices)."""
    return Schema(fields=[FieldOptions(n, "categorical", min_count=min_count) for n in IPINYOU_FIELDS],
                  label="click", format="csv", header=True).validate("ipinyou preset")


def _ipinyou_yzx(inputs, featindex: Path, min_count: int):
    """make-ipinyou-data's `click payprice index:1 ...` lines with the fields of featindex.txt: the 16
    fields above plus usertag (multi-valued); its constant 'truncate' feature is ignored."""
    names, idx, owner = read_feature_index(featindex)
    wanted = IPINYOU_FIELDS + ["usertag"]
    position = []
    for n in names:
        column = IPINYOU_LOG_COLUMNS[int(n)] if n.isdigit() and int(n) < len(IPINYOU_LOG_COLUMNS) else None
        if column is None and n != "truncate":
            raise DataError(f"{featindex}: field {n!r} is not a column number of make-ipinyou-data's train.log.txt")
        position.append(wanted.index(column) if column in wanted else -1)
    fields = [FieldOptions(n, "categorical", min_count=min_count) for n in IPINYOU_FIELDS]
    fields.append(FieldOptions("usertag", "multi", separator=",", min_count=min_count))
    schema = indexed_schema(fields, label_values="binary")
    index = FieldIndex.from_pairs(idx, np.array(position, dtype=np.int64)[owner], f"an index listed in {featindex}")
    return schema, _line_sources(inputs, schema, LibfmLayout(index, skip=1), depends=[str(featindex)])


def _ipinyou(inputs, schema, options):
    inputs = _expand_inputs(inputs, IPINYOU_FILES)
    min_count = int(options.get("min_count", 1))
    yzx = [p for _, p in inputs if p.suffix.lower() not in (".csv", ".parquet")]
    if not yzx:
        schema = schema or ipinyou_schema(min_count)
        return schema, table_sources(inputs, schema)
    if len(yzx) != len(inputs) or schema is not None:
        raise DataError("ipinyou: give either iPinYou_x1 CSV files or make-ipinyou-data yzx files (featindex.txt "
                        "beside them), not both; --schema applies to the CSV layout only")
    featindex = yzx[0].parent / "featindex.txt"
    if not featindex.exists():
        raise DataError(f"{featindex}: no such file; make-ipinyou-data writes it beside train.yzx.txt")
    return _ipinyou_yzx(inputs, featindex, min_count)


# ---- KDD Cup 2012 track 2 -------------------------------------------------------------------------

KDD12_COLUMNS = ["click", "impression", "display_url", "ad_id", "advertiser_id", "depth", "position", "query_id",
                 "keyword_id", "title_id", "description_id", "user_id"]
KDD12_PROFILE = "userid_profile.txt"  # UserID<TAB>Gender<TAB>Age, beside training.txt


def kdd12_schema(numeric: str = "bucket", min_count: int = 10, profile: bool = True) -> Schema:
    """training.txt as AutoInt uses it: label = click count > 0; impression (a count) bucketed like Criteo's
    integers (or numeric); the ids categorical; gender and age joined from userid_profile.txt if present."""
    joined = ["gender", "age"] if profile else []
    fields = _count_fields(["impression"], numeric, min_count, "kdd12")
    fields += [FieldOptions(n, "categorical", min_count=min_count) for n in KDD12_COLUMNS[2:] + joined]
    # `columns` also names the joined columns; the file itself has KDD12_COLUMNS (see _kdd12)
    return Schema(fields=fields, label="click", format="tsv", delimiter="\t", header=False,
                  columns=KDD12_COLUMNS + joined).validate("kdd12 preset")


def _read_profile(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """userid_profile.txt as arrays (user id, gender, age), sorted by user id for vectorised joins."""
    types = {"user_id": pa.int64(), "gender": pa.int8(), "age": pa.int8()}
    try:
        t = pcsv.read_csv(check_file(path), read_options=pcsv.ReadOptions(column_names=list(types)),
                          parse_options=pcsv.ParseOptions(delimiter="\t"),
                          convert_options=pcsv.ConvertOptions(column_types=types))
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: expected lines 'UserID<TAB>Gender<TAB>Age' (integers): {exc}") from None
    if not t.num_rows:
        raise DataError(f"{path}: no users")
    ids, gender, age = (pc.fill_null(t[c], -1).to_numpy() for c in types)
    order = np.argsort(ids, kind="stable")
    return ids[order], gender[order], age[order]


def _kdd12_derive(profile_path: Path | None):
    """Click count -> 0/1 label; user 0 (unknown) -> missing; gender and age joined by user id. The
    profile (23.6M users) is read on first use, so an up-to-date rerun does not read it."""
    profile: list = []

    def derive(chunk: Chunk) -> tuple[Chunk, list[Problem]]:
        cols = dict(chunk.columns)
        keep, problems = np.ones(len(chunk), dtype=bool), []
        if "click" in cols:  # scoring requests carry no label
            click = pc.utf8_trim_whitespace(cols["click"])
            keep = pc.match_substring_regex(click, r"^[0-9]{1,18}$").to_numpy(zero_copy_only=False)
            problems = [chunk.problem(row, f"field 'click': expected a click count (an integer >= 0), got "
                                           f"{click[row].as_py()!r}") for row in np.flatnonzero(~keep)]
            cols["click"] = pc.if_else(pc.match_substring_regex(click, r"^0+$"), "0", "1")
        user = pc.utf8_trim_whitespace(cols["user_id"])
        unknown = pc.equal(user, "0")
        cols["user_id"] = pc.if_else(unknown, "", user)
        if profile_path is not None:
            if not profile:
                profile.extend(_read_profile(profile_path))
            ids, gender, age = profile
            number = pc.and_not(pc.match_substring_regex(user, r"^[0-9]{1,18}$"), unknown).to_numpy(
                zero_copy_only=False)
            uid = np.full(len(chunk), -1, dtype=np.int64)
            if number.any():
                uid[number] = pc.cast(pc.filter(user, pa.array(number)), pa.int64()).to_numpy()
            pos = np.minimum(np.searchsorted(ids, uid), len(ids) - 1)
            found = pa.array(number & (ids[pos] == uid))
            cols["gender"] = pc.if_else(found, pc.cast(pa.array(gender[pos]), pa.string()), "")
            cols["age"] = pc.if_else(found, pc.cast(pa.array(age[pos]), pa.string()), "")
        return Chunk(chunk.file, chunk.lines, cols, chunk.unit, chunk.header_lines).take(keep), problems
    return derive


def _kdd12(inputs, schema, options):
    inputs = _expand_inputs(inputs, {"train": ("training.txt",)})
    profile = inputs[0][1].parent / KDD12_PROFILE
    profile = profile if profile.exists() else None
    schema = schema or kdd12_schema(options.get("numeric", "bucket"), int(options.get("min_count", 10)),
                                    profile is not None)
    return schema, table_sources(inputs, schema, derive=_kdd12_derive(profile), use=KDD12_COLUMNS,
                                 columns=KDD12_COLUMNS, depends=[str(profile)] if profile else [])


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("criteo", "Criteo Kaggle train.txt (TSV, no header: label, I1-I13, C1-C26); "
           "--option numeric=bucket|log|standardize|none, min_count=10", _criteo),
    Preset("avazu", "Avazu Kaggle CSV (header; id dropped; hour -> hour, weekday, weekend); --option min_count=2",
           _avazu, derive=_avazu_derive, derived=("weekday", "weekend")),
    Preset("fuxictr", "BARS/FuxiCTR splits: a folder with train/valid/test .csv or .parquet; "
           "--schema dataset_config.yaml", _fuxictr),
    Preset("libfm", "libFM 'label idx:val ...' files, label -1/1 (--option labels=binary: 0/1); --option "
           "fields=name:size,... or feature_index=FILE", _libfm),
    Preset("frappe", "Frappe in libFM format (10 one-hot fields, label -1/1)", _frappe),
    Preset("movielens-1m", "MovieLens-1M ratings.dat/users.dat/movies.dat (or ratings.csv); "
           "4-5 -> 1, 1-2 -> 0, 3 dropped", _movielens),
    Preset("kkbox", "BARS KKBox_x1 train/valid/test CSV (isrc -> country, bd -> age bucket, genre_ids and "
           "artist_name lists); --option min_count=10", _kkbox, derive=_kkbox_derive),
    Preset("ipinyou", "BARS iPinYou_x1 train/test CSV, or make-ipinyou-data yzx files with featindex.txt; "
           "--option min_count=1", _ipinyou),
    # serving: kdd12's derivation without the profile join, which `joined` refuses
    Preset("kdd12", "KDD Cup 2012 track 2 training.txt (TSV, label = clicks > 0; gender/age from "
           "userid_profile.txt beside it); --option numeric=bucket|log|standardize|none, min_count=10", _kdd12,
           derive=_kdd12_derive(None), joined={"gender": KDD12_PROFILE, "age": KDD12_PROFILE}),
    Preset("generic", "any CSV/TSV/Parquet with --schema my_schema.yaml", _generic),
]}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise DataError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name]
