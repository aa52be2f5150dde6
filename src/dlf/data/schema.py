"""A small typed description of a raw dataset: which column is the label, which are
categorical, numeric or multi-valued fields, an optional group id, per-field options,
how the input files are laid out and how rows are split into train/valid/test.

Readable from YAML (`Schema.from_yaml`); an unknown key, a wrong type or a bad value
raises `DataError` naming the file and the dotted key. Two ways to list fields:

    label: label
    fields:
      - {name: I1, kind: numeric, transform: log}
      - {name: C1, kind: categorical, min_count: 10}
      - {name: genres, kind: multi, separator: "|", max_len: 6}

or the shorthand `categorical: [C1, C2]`, `numeric: [...]`, `multi: [...]` with shared
`defaults: {min_count: 2}`.
"""
from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml


class DataError(ValueError):
    """Bad input data or a bad dataset description; the message names file, line and field."""


KINDS = ("categorical", "numeric", "multi")
TRANSFORMS = ("none", "log", "standardize", "criteo-bucket")
SPLIT_METHODS = ("random", "time", "sequential")
LABEL_VALUES = ("binary", "pm1")
FORMATS = ("auto", "csv", "tsv", "parquet")
MAX_NAME_BYTES = 255 - len(".arrow")  # a field's vocabulary file, vocab/<name>.arrow


@dataclass
class FieldOptions:
    """One model input field and how it is built from the raw columns."""

    name: str
    kind: Literal["categorical", "numeric", "multi"] = "categorical"
    source: str | None = None  # raw column; defaults to `name`
    min_count: int = 1  # values seen fewer times in train map to OOV
    buckets: int = 0  # > 0: hash values into this many buckets instead of a vocabulary
    transform: str = "none"  # numeric: none | log | standardize; categorical: criteo-bucket (numeric text -> bins)
    separator: str = "|"  # multi-valued fields
    max_len: int = 0  # multi-valued fields: padded length; 0 = longest list seen in train
    range: tuple[int, int] | None = None  # libFM: inclusive index range owned by this field
    fill_na: str | None = None  # a missing value reads as this text (FuxiCTR's fill_na); None: it stays missing

    @property
    def column(self) -> str:
        return self.source or self.name

    def validate(self, where: str) -> None:
        # a field's vocabulary is the file vocab/<name>.arrow: 'site/app' died after all the work (FileNotFoundError)
        # (a name over 249 bytes: 'File name too long' once every row was encoded)
        n = self.name
        if not n or n in (".", "..") or any(c in n for c in "/\\\0") or len(n.encode()) > MAX_NAME_BYTES:
            raise DataError(f"{where}: the name {n!r} cannot name a file (vocab/<name>.arrow): no '/', '\\' or NUL, "
                            f"at most {MAX_NAME_BYTES} bytes; keep the column as `source`: "
                            f"{{name: {_safe(n)}, source: {n}}}")
        if self.kind not in KINDS:
            raise DataError(f"{where}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.transform not in TRANSFORMS:
            raise DataError(f"{where}: transform must be one of {', '.join(TRANSFORMS)}, got {self.transform!r}")
        if self.kind != "categorical" and self.transform == "criteo-bucket":  # a multi field's was ignored
            raise DataError(f"{where}: transform 'criteo-bucket' makes categories; use kind: categorical")
        if self.kind != "numeric" and self.transform in ("log", "standardize"):
            raise DataError(f"{where}: transform {self.transform!r} applies to numeric fields only")
        if self.min_count < 1 or self.buckets < 0 or self.max_len < 0:
            raise DataError(f"{where}: min_count must be >= 1, buckets and max_len >= 0")
        if self.kind == "multi" and not self.separator:
            raise DataError(f"{where}: a multi-valued field needs a non-empty separator")
        if self.fill_na is not None:
            if self.kind == "multi" or self.fill_na == "":
                raise DataError(f"{where}: fill_na gives a missing categorical or numeric value a non-empty text, "
                                f"got {self.fill_na!r} on a {self.kind} field")
            if self.kind == "numeric" and not _is_number(self.fill_na):
                raise DataError(f"{where}: fill_na of a numeric field must be a finite number, got {self.fill_na!r}")


@dataclass
class SplitOptions:
    method: Literal["random", "time", "sequential"] = "random"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train / valid / test
    seed: int = 2025
    time_column: str | None = None  # method: time

    def validate(self, where: str = "split") -> None:
        if self.method not in SPLIT_METHODS:
            raise DataError(f"{where}.method must be one of {', '.join(SPLIT_METHODS)}, got {self.method!r}")
        # `not ... <= ...` so that NaN fails too (ratios nan,0.5,0.5 sent every row to train)
        if (len(self.ratios) != 3 or not min(self.ratios) >= 0 or not abs(sum(self.ratios) - 1) <= 1e-6
                or not self.ratios[0] > 0):
            raise DataError(f"{where}.ratios must be three fractions >= 0 summing to 1 (train > 0), got {self.ratios}")
        if self.method == "time" and not self.time_column:
            raise DataError(f"{where}: method 'time' needs time_column")


@dataclass
class Schema:
    fields: list[FieldOptions]
    label: str = "label"
    label_values: Literal["binary", "pm1"] = "binary"  # {0,1} or {-1,1} (mapped to 0/1)
    group: str | None = None  # raw column giving the group id for gAUC
    format: Literal["auto", "csv", "tsv", "parquet"] = "auto"
    delimiter: str | None = None  # default from format
    header: bool = True
    columns: list[str] | None = None  # names of all columns, in order, when the file has no header
    encoding: str = "utf-8"
    split: SplitOptions = field(default_factory=SplitOptions)

    def validate(self, where: str = "schema") -> "Schema":
        if not self.fields:
            raise DataError(f"{where}: no fields")
        names = [f.name for f in self.fields]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DataError(f"{where}: duplicate field name(s) {dup}")
        for i, f in enumerate(self.fields):
            f.validate(f"{where}: fields[{i}] ({f.name!r})")
            if f.column == self.label and f.range is None:  # the model would be fed its own target
                raise DataError(f"{where}: label: column {self.label!r} is also the feature {f.name!r}; "
                                "the label cannot be a feature")
        if self.group is not None and self.group == self.label:  # every group one class: gAUC never defined
            raise DataError(f"{where}: group: column {self.label!r} is the label; the group is a user (or query) "
                            "id column")
        if self.split.method == "time" and self.split.time_column == self.label:  # train all 0s, test all 1s
            raise DataError(f"{where}: split.time_column: column {self.label!r} is the label; a time split orders "
                            "rows by a time column")
        if self.label_values not in LABEL_VALUES:
            raise DataError(f"{where}: label_values must be one of {', '.join(LABEL_VALUES)}, "
                            f"got {self.label_values!r}")
        if self.format not in FORMATS:
            raise DataError(f"{where}: format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.delimiter is not None and (len(self.delimiter) != 1 or self.delimiter in '"\r\n'):
            raise DataError(f"{where}: delimiter must be one character other than '\"' and a newline (e.g. ',', "
                            f"'\\t', ';', '|'), got {self.delimiter!r}")
        try:
            codecs.lookup(self.encoding)
        except LookupError:  # was a LookupError traceback when the first file was opened
            raise DataError(f"{where}: encoding: unknown encoding {self.encoding!r} (e.g. utf-8, iso-8859-1, "
                            "cp1252)") from None
        if not self.header and not self.columns:
            raise DataError(f"{where}: a file without header needs `columns` (all column names in order)")
        if self.columns:
            missing = [c for c in self.raw_columns() if c not in self.columns]
            if missing:
                raise DataError(f"{where}: column(s) {missing} are used but not listed in `columns`")
        self.split.validate(f"{where}: split")
        return self

    def raw_columns(self) -> list[str]:
        cols = [self.label] + [f.column for f in self.fields if f.range is None]
        if self.group:
            cols.append(self.group)
        if self.split.method == "time" and self.split.time_column:
            cols.append(self.split.time_column)
        return list(dict.fromkeys(cols))

    def seconds_columns(self) -> tuple[str, ...]:
        """Columns whose Parquet temporal type is read as seconds since the epoch: a time split's time column, for
        its order and for every field reading it, so in scoring too (the schema a bundle keeps)."""
        return (self.split.time_column,) if self.split.method == "time" and self.split.time_column else ()

    def of_kind(self, kind: str) -> list[FieldOptions]:
        """Fields by output kind (criteo-bucket numeric sources are categorical outputs)."""
        return [f for f in self.fields if f.kind == kind]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for f in d["fields"]:  # left out when unset: the digest (and fingerprint) of other schemas stays as it was
            if f["fill_na"] is None:
                del f["fill_na"]
        return d

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()

    @classmethod
    def from_dict(cls, raw: dict, where: str = "schema", written: bool = False) -> "Schema":
        """written: `raw` is a schema a person wrote, where a field's key its kind does not read is refused
        (a stored schema, `to_dict`'s, holds every key of every field)."""
        return _schema_from_dict(raw, where, written)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Schema":
        path = Path(path)
        raw = read_schema_yaml(path)
        if not isinstance(raw, dict):
            raise DataError(f"schema file {str(path)!r} must hold a mapping (label, fields, ...)")
        return cls.from_dict(raw, f"schema file {str(path)!r}", written=True)


def fill_text(value) -> str:
    """A fill_na value as text: an integral number as the integer a file holds (0.0 -> "0")."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _safe(name: str) -> str:
    return "".join("_" if c in "/\\\0" else c for c in name).strip(".")[:60] or "field"


# ---- YAML -> dataclasses, strict -------------------------------------------------------------

_FIELD_KEYS = [f.name for f in dataclasses.fields(FieldOptions)]
_SPLIT_KEYS = [f.name for f in dataclasses.fields(SplitOptions)]
_SCHEMA_KEYS = [f.name for f in dataclasses.fields(Schema)] + ["categorical", "numeric", "multi", "defaults"]


def _check_keys(raw: dict, valid: list[str], where: str) -> None:
    for key in raw:
        if key not in valid:
            raise DataError(f"{where}: unknown key {key!r}; valid keys: {', '.join(valid)}")


def _typed(value, tp, where: str):
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataError(f"{where}: expected an integer, got {value!r}")
    elif tp is str:
        if not isinstance(value, str):
            raise DataError(f"{where}: expected a string, got {value!r}")
    elif tp is bool:
        if not isinstance(value, bool):
            raise DataError(f"{where}: expected true or false, got {value!r}")
    return value


# keys a field of each kind does not read: given on the field itself (not in `defaults`, shared by every kind),
# they were silently ignored (a numeric field with `buckets` was neither hashed nor refused)
_NOT_READ = {"numeric": ("min_count", "buckets", "separator", "max_len"), "categorical": ("separator", "max_len"),
             "multi": ()}
_FIELD_TYPES = {"name": str, "kind": str, "source": str, "min_count": int, "buckets": int, "transform": str,
                "separator": str, "max_len": int, "fill_na": str}


def _field(raw, where: str, defaults: dict, kind: str | None = None, written: bool = False) -> FieldOptions:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected a field name or a mapping, got {raw!r}")
    _check_keys(raw, _FIELD_KEYS, where)
    values = {**defaults, **({"kind": kind} if kind else {}), **raw}
    if "name" not in values:
        raise DataError(f"{where}: a field needs a name")
    if isinstance(values.get("fill_na"), (int, float)) and not isinstance(values["fill_na"], bool):
        values["fill_na"] = fill_text(values["fill_na"])  # `fill_na: 0` in YAML is a number
    for key, value in values.items():
        if key in _FIELD_TYPES and value is not None:
            _typed(value, _FIELD_TYPES[key], f"{where}.{key}")
    if values.get("range") is not None:
        r = values["range"]
        if not (isinstance(r, (list, tuple)) and len(r) == 2 and all(isinstance(x, int) for x in r) and r[0] <= r[1]):
            raise DataError(f"{where}.range: expected [first_index, last_index], got {r!r}")
        values["range"] = (int(r[0]), int(r[1]))
    stray = [k for k in _NOT_READ.get(values.get("kind", "categorical"), ()) if k in raw]
    if raw.get("buckets") and "min_count" in raw:
        stray.append("min_count (with buckets: hashed values have no counts)")
    if written and stray:
        raise DataError(f"{where}.{stray[0]}: does not apply to a {values.get('kind', 'categorical')} field "
                        f"({values['name']!r}) and would be ignored")
    f = FieldOptions(**values)
    f.validate(f"{where} ({f.name!r})")  # here, where the file's own key is known (Schema.validate's is fields[i])
    return f


def _schema_from_dict(raw: dict, where: str, written: bool) -> Schema:
    _check_keys(raw, _SCHEMA_KEYS, where)
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise DataError(f"{where}.defaults: expected a mapping")
    _check_keys(defaults, _FIELD_KEYS, f"{where}.defaults")
    for key in ("fields", *KINDS):  # a string would be read character by character
        if raw.get(key) is not None and not isinstance(raw[key], list):
            raise DataError(f"{where}: {key} must be a list of " + ("fields" if key == "fields" else "column names"))
    fields: list[FieldOptions] = []
    for i, item in enumerate(raw.get("fields") or []):
        fields.append(_field(item, f"{where}: fields[{i}]", defaults, written=written))
    for kind in KINDS:
        for i, item in enumerate(raw.get(kind) or []):
            fields.append(_field(item, f"{where}: {kind}[{i}]", defaults, kind, written))
    split_raw = raw.get("split") or {}
    if not isinstance(split_raw, dict):
        raise DataError(f"{where}.split: expected a mapping")
    _check_keys(split_raw, _SPLIT_KEYS, f"{where}: split")
    # typed here: a string seed or ratios [a, b, c] were TypeError/ValueError tracebacks deep in preprocess
    for key, tp in (("method", str), ("seed", int), ("time_column", str)):
        if split_raw.get(key) is not None:
            _typed(split_raw[key], tp, f"{where}: split.{key}")
    ratios = split_raw.get("ratios")
    if ratios is not None:
        if not (isinstance(ratios, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                 for x in ratios)):
            raise DataError(f"{where}: split.ratios: expected three numbers [train, valid, test], got {ratios!r}")
        split_raw = {**split_raw, "ratios": tuple(float(x) for x in ratios)}
    if written:  # vocab/City.arrow and vocab/city.arrow are one file on macOS and Windows: a vocabulary overwritten
        folded: dict[str, str] = {}
        for f in fields:
            other = folded.setdefault(f.name.casefold(), f.name)
            if other != f.name:
                raise DataError(f"{where}: field names {other!r} and {f.name!r} differ only in case, and their "
                                "vocabulary files vocab/<name>.arrow would be one file on macOS and Windows; rename "
                                f"one, keeping its column as `source`: {{name: {f.name}_2, source: {f.name}}}")
    split = SplitOptions(**split_raw)
    if written:  # read by one method only: the split was silently another (random for a log meant to split by time)
        for key, method in (("time_column", "time"), ("seed", "random")):
            if split_raw.get(key) is not None and split.method != method:
                raise DataError(f"{where}: split.{key} is read by method {method} only, and the split is "
                                f"{split.method!r}; add method: {method} to split, or leave {key} out")
    top = {k: v for k, v in raw.items() if k not in ("fields", "split", "defaults", *KINDS)}
    for key, tp in (("label", str), ("group", str), ("delimiter", str), ("header", bool), ("encoding", str)):
        if top.get(key) is not None:
            _typed(top[key], tp, f"{where}: {key}")
    if top.get("columns") is not None and not (isinstance(top["columns"], list)
                                                and all(isinstance(c, str) for c in top["columns"])):
        raise DataError(f"{where}: columns must be a list of names")
    return Schema(fields=fields, split=split, **top).validate(where)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line report as one line: 'line N: what is wrong'."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or problem is None:
        return str(exc).strip().splitlines()[0]
    return f"line {mark.line + 1}: {problem}"


def read_schema_yaml(path: Path):
    """The parsed YAML of a schema file, or a DataError naming the file."""
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"schema file {str(path)!r} does not exist") from None
    except OSError as exc:  # a directory, no permission: was a traceback
        raise DataError(f"schema file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:  # (PyYAML's report spans lines, with a caret under the offending text)
        raise DataError(f"schema file {str(path)!r} is not valid YAML: {yaml_problem(exc)}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"schema file {str(path)!r} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
