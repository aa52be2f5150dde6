"""Batch scoring: `dlf predict BUNDLE --input FILE --output FILE`.

The input (CSV, TSV, Parquet, or libFM lines for a model trained on them) is streamed chunk by chunk with
dlf.data.readers (the same readers, line numbers and bad-row handling as `dlf preprocess`), each chunk is encoded
with the bundle's frozen encoders (dlf.serve.encoding), scored by PyTorch or ONNX Runtime in sub-batches, and
appended to the output (Parquet or CSV) before the next chunk is read: memory holds one chunk (and, for Parquet, the
scores of at most one row group of ROW_GROUP_ROWS rows), whatever the file size. The output is written to a hidden
temporary sibling, synced to disk and renamed into place when complete, so a failed run leaves no half-written file.

Output columns: the `--id-column` (as text) when asked, then `probability` (float32 in Parquet; in
CSV the float32 value written in full, so it reads back exactly).
Bad rows (wrong column count, text in a numeric field, bytes that are not UTF-8, ...): by
default the first one stops the run with `FILE:LINE: field 'X': expected ...`; with
`--on-bad-row skip` they are dropped from the output and counted.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dlf.data.features import Batch
from dlf.data.presets import read_libfm
from dlf.data.readers import (BOM, COMPRESSIONS, SUFFIX_FORMATS, BadRows, Chunk, check_file, format_from_name,
                              header_names, in_line_order, open_input, read_delimited, read_parquet)
from dlf.data.schema import DataError, Schema
from dlf.serve.bundle import Bundle, BundleError
from dlf.serve.encoding import UnseenCounts

DEFAULT_BLOCK_BYTES = 4 << 20
DEFAULT_BATCH_SIZE = 8192
# Parquet output rows per row group: one per chunk grew the writer's footer (~1.7 KB per row group, held in memory until
# the file is closed) with the number of chunks, unbounded for a long file read in small chunks
ROW_GROUP_ROWS = 1 << 17
LIBFM_PRESETS = ("libfm", "frappe")  # models trained on libFM lines, which `--format libfm` reads


@dataclass
class PredictResult:
    output: Path
    rows: int  # rows scored (written)
    bad_rows: dict = field(default_factory=dict)  # BadRows.summary()
    seconds: float = 0.0
    unseen: dict = field(default_factory=dict)  # UnseenCounts.summary(): per vocabulary field, its unseen values


# ---- scoring --------------------------------------------------------------------------------------

class Scorer:
    """Batch -> probabilities with PyTorch (the bundle's model) or ONNX Runtime (model.onnx).

    precision "bf16" runs the PyTorch model under bf16 autocast (as `train.precision=bf16` does); probabilities then
    differ from fp32 by a few tenths of a per cent of their value, a few per cent on single rows (docs/serving.md).
    The ONNX model is fp32 only.
    """

    def __init__(self, bundle: Bundle, engine: str = "torch", batch_size: int = DEFAULT_BATCH_SIZE,
                 threads: int = 0, precision: str = "fp32") -> None:
        if engine not in ("torch", "onnx"):
            raise BundleError(f"--engine must be torch or onnx, got {engine!r}")
        if batch_size < 1:
            raise BundleError(f"--batch-size must be >= 1, got {batch_size}")
        if precision not in ("fp32", "bf16"):
            raise BundleError(f"--precision must be fp32 or bf16, got {precision!r}")
        if precision != "fp32" and engine != "torch":
            raise BundleError(f"--precision {precision} needs --engine torch (the ONNX model is fp32)")
        self.engine, self.batch_size, self.precision = engine, batch_size, precision
        self.model = bundle.model
        self.onnx = None
        if engine == "onnx":
            if bundle.onnx_path is None:
                raise BundleError(f"{bundle.path}: the bundle has no model.onnx; export it with "
                                  "dlf export RUN --out BUNDLE --format onnx")
            from dlf.serve.onnx import OnnxRunner
            self.onnx = OnnxRunner(bundle.onnx_path, threads, bundle.feature_map)
        elif self.model is None:
            raise BundleError("the bundle was loaded without its model")

    def __call__(self, batch: Batch) -> np.ndarray:
        import torch

        from dlf._runtime import autocast

        n = len(batch)
        out = np.empty(n, dtype=np.float32)
        for lo in range(0, n, self.batch_size):
            hi = min(lo + self.batch_size, n)
            part = Batch(batch.categorical[lo:hi], batch.numeric[lo:hi], batch.multi[lo:hi], batch.label[lo:hi])
            if self.onnx is not None:
                out[lo:hi] = self.onnx.run(part)
            else:
                with torch.inference_mode(), autocast(torch.device("cpu"), self.precision):
                    out[lo:hi] = torch.sigmoid(self.model(part).float()).numpy()
        return out


def drop_unscorable(probs: np.ndarray, batch: Batch, keep: np.ndarray, chunk: Chunk, columns: list[str],
                    bad: BadRows) -> tuple[np.ndarray, np.ndarray]:
    """Rows the model scores as NaN are bad rows, never a silent NaN: a finite numeric input far outside the
    training range (age 1e30 -> a z-score of 5e28) overflows inside the model. The message names the numeric
    input with the largest model input (`columns`: the input column of each of `batch.numeric`'s fields).
    Returns the finite probabilities and the chunk rows they belong to."""
    ok = np.isfinite(probs)
    if ok.all():
        return probs, keep
    rows = np.flatnonzero(keep)  # chunk row of each batch row
    num = batch.numeric.numpy()
    for r in np.flatnonzero(~ok):
        if num.shape[1]:
            j = int(np.abs(num[r]).argmax())
            msg = (f"field {columns[j]!r}: value too far outside the training range, the model's output is NaN "
                   f"(model input {num[r, j]:.4g})")
        else:
            msg = "the model's output is NaN for this row"
        bad.add(chunk.where(rows[r]), msg, chunk.file)
    keep = keep.copy()
    keep[rows[~ok]] = False
    return probs[ok], keep


def scored_chunks(bundle: Bundle, input: str | Path, bad: BadRows, scorer: Scorer, *, labels: bool = False,
                  group: str | None = None, unseen: UnseenCounts | None = None, **read) -> Iterator[tuple]:
    """Read (`read_input`'s options), encode and score INPUT chunk by chunk: (chunk, the probabilities of the rows
    kept, the mask of those rows in the chunk, their labels: zeros unless labels=True, their group ids: None unless
    a `group` column is given, see Encoder.encode_chunk). Chunks with no row kept are not yielded. `unseen` counts
    the unseen values of the rows kept."""
    if scorer.engine == "torch":
        from dlf._runtime import reuse_freed_memory
        reuse_freed_memory()  # every sub-batch allocates and frees the same large activations, as in training
    for chunk in read_input(bundle, input, bad, labels=labels, **read):
        batch, keep = bundle.encoder.encode_chunk(chunk, bad, labels=labels, group=group, unseen=unseen)
        if batch is None:
            continue
        raw = scorer(batch)
        probs, keep = drop_unscorable(raw, batch, keep, chunk, bundle.encoder.numeric_columns, bad)
        ok = np.isfinite(raw)
        yield chunk, probs, keep, batch.label.numpy()[ok], None if group is None else batch.group.numpy()[ok]


# ---- reading --------------------------------------------------------------------------------------

def check_input(path: str | Path) -> Path:
    """check_file, with the way on for a folder (a Spark or Hive job's output), which dlf preprocess reads whole:
    scoring reads one file, so that each output row stays with its input file's."""
    path = Path(path)
    if path.is_dir():
        parts = sorted(p.name for p in path.iterdir() if p.is_file() and not p.name.startswith(("_", ".")))
        raise DataError(f"{path}: is a directory; dlf predict and evaluate read one file: give its parts one at a time"
                        + (f" (e.g. {path / parts[0]})" if parts else ""))
    return check_file(path)


def _input_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        if fmt not in ("csv", "tsv", "parquet", "libfm"):
            raise DataError(f"--format must be auto, csv, tsv, parquet or libfm, got {fmt!r}")
        found = fmt
    else:
        # '.libfm' (frappe.test.libfm) is not in SUFFIX_FORMATS, the table readers': preprocessing reads it by preset
        name = path.name.lower()
        stem = name.rsplit(".", 1)[0] if name.endswith(COMPRESSIONS) else name
        found = format_from_name(path) or ("libfm" if stem.endswith(".libfm") else None)
        if found is None:
            raise DataError(f"{path}: cannot tell the format from the name; pass --format csv|tsv|parquet|libfm")
    if found != "parquet" and path.is_file():
        with open(path, "rb") as fh:
            if fh.read(4) == b"PAR1":  # (was "header is not valid utf-8")
                raise DataError(f"{path}: a Parquet file, read as {found} (from "
                                f"{'--format' if fmt != 'auto' else 'its name'}); pass --format parquet")
    return found


def read_input(bundle: Bundle, path: str | Path, bad: BadRows, *, labels: bool = False, fmt: str = "auto",
               header: bool | None = None, columns: list[str] | None = None, delimiter: str | None = None,
               extra: list[str] | None = None, block_bytes: int = DEFAULT_BLOCK_BYTES) -> Iterator[Chunk]:
    """Chunks of the bundle's input columns (the label column too with labels=True, and `extra` columns, e.g. an id)
    from a CSV/TSV/Parquet file, or from libFM lines (see _read_libfm).

    header None: as the training files were (the bundle's schema), e.g. no header for Criteo TSV,
    whose columns are then the schema's `columns` (without the label when the file has one column
    fewer: test files carry no label). `columns` names the columns of a file without header."""
    path = check_input(path)
    named = fmt == "auto"  # the format from the file's name
    fmt = _input_format(path, fmt)
    label = bundle.feature_map.label
    need = list(dict.fromkeys(list(bundle.encoder.columns) + ([label] if labels else []) + list(extra or [])))
    if fmt == "libfm":
        if header is not None or columns is not None:
            raise DataError(f"{path}: --header/--no-header and --columns are for CSV/TSV input; libFM lines have no "
                            "columns")
        yield from _read_libfm(bundle, path, bad, need, block_bytes)
        return
    if fmt == "parquet":
        if header is not None or columns is not None:  # were ignored silently
            raise DataError(f"{path}: --header/--no-header and --columns are for CSV/TSV input; a Parquet file names "
                            "its columns itself")
        # a list column of a multi-valued field is joined with its separator, as preprocessing reads it
        seps = {i.name: i.separator or "|" for i in bundle.encoder.inputs if i.kind == "multi"}
        # and a time split's timestamp column as seconds, which the fields reading it were trained on (the stored
        # schema: the encoder's has its split reset)
        stored = bundle.feature_map.meta.get("schema")
        times = Schema.from_dict(stored).seconds_columns() if stored else ()
        yield from read_parquet(path, use=need, rows=max(1024, block_bytes // 256), separators=seps, times=times)
        return
    schema = getattr(bundle.encoder, "schema", None)
    if (named and schema is not None and schema.format in ("csv", "tsv") and schema.format != fmt
            and schema.delimiter == ("\t" if fmt == "tsv" else ",")):
        # a quoted TSV (`format: csv`, `delimiter: "\t"`) named .tsv: read with CSV quoting, as preprocessing read the
        # training files (its values kept their quotes, unseen categories, and a quoted tab split a row)
        fmt = schema.format
    if delimiter is None:
        # as preprocessing split the training files: the schema's delimiter for its format, and under `format: auto`
        # for every CSV/TSV file (a ';' CSV of such a schema was split at ',', its header one column)
        own = schema is not None and schema.delimiter and schema.format in (fmt, "auto")
        delimiter = schema.delimiter if own else ("\t" if fmt == "tsv" else ",")
    encoding = schema.encoding if schema is not None else "utf-8"
    quote = fmt == "csv"
    if header is None and columns is not None and _header_names(path, delimiter, encoding, quote) == list(columns):
        header = True  # --columns naming a file whose first line is those names: a header, not a record to score
    elif header is None and columns is None and schema is not None and not schema.header and schema.columns:
        # training files without header, this one with one (the schema's columns, or those less the label, as an
        # export of the same table writes it): its first line was scored as a record, every value an unseen one
        first = _header_names(path, delimiter, encoding, quote)
        header = True if first in (list(schema.columns), [c for c in schema.columns if c != label]) else None
    if header is None:
        header = columns is None and (schema is None or schema.header)
    names = None
    if not header:
        names = list(columns or (schema.columns if schema is not None and schema.columns else []))
        if not names:
            raise DataError(f"{path}: a file without header needs --columns NAME,NAME,... (all columns in order)")
        if columns is None and label in names:
            first = _first_line(path, encoding, skip_blank=True)  # the first record (blank lines are skipped)
            # as CSV: a quoted delimiter was counted as a column, and the file taken for a labelled one
            if first is not None and len(header_names(first, delimiter, quote)) == len(names) - 1:  # without labels
                if labels:  # was 'the columns [39 names] do not include ['label']'
                    raise DataError(f"{path}: no label column {label!r}: its {len(names) - 1} columns are the inputs "
                                    "alone, as in a file to score (dlf predict); dlf evaluate needs labelled rows, as "
                                    "in training")
                names.remove(label)
        missing = [c for c in need if c not in names]
        if missing:
            # the schema's columns are the training files' (a libFM file's: ['label'],
            # its lines were split by the preset)
            where = "" if columns is not None else " (the training files', from the bundle's schema)"
            hint = ("" if set(missing) - set(bundle.encoder.columns) else
                    "; the model's inputs must be columns of the file: pass --header if its first line names them, "
                    "or --columns" + (", or --format libfm for libFM lines" if _trained_on_libfm(bundle) else ""))
            raise DataError(f"{path}: the columns {names}{where} do not include {missing}{hint}")
    # Arrow reads an empty line as a row whose every column is empty, which scored as an all-missing record (a
    # trailing blank line added a row to the output): read every column, and skip rows with no value in any of them,
    # as pandas and Arrow's default do. When the header lacks an input, read_delimited names it (use=need).
    every = names or _header_names(path, delimiter, encoding, quote) or []
    every = [c for c in every if every.count(c) == 1]  # a repeated name is never read (Excel's trailing ',,' cells)
    use = every if set(need) <= set(every) else need
    # the other columns are read only to tell such rows: bytes in them that are not text are no bad row (preprocessing
    # never reads them; every row of a file with a Latin-1 comment column was one)
    lenient = [c for c in use if c not in need]
    for chunk in read_delimited(path, delimiter=delimiter, header=header, columns=names, use=use, bad=bad,
                                encoding=encoding, quote=quote, block_bytes=block_bytes, lenient=lenient):
        if use is every:
            blank = np.logical_and.reduce([pc.equal(pc.utf8_length(a), 0).to_numpy(zero_copy_only=False)
                                           for a in chunk.columns.values()])
            chunk = chunk.take(~blank)
            chunk.columns = {c: chunk.columns[c] for c in need}
        yield chunk


def _trained_on_libfm(bundle: Bundle) -> bool:
    meta = bundle.feature_map.meta
    return bool(meta.get("libfm_layout")) or (meta.get("preset") in LIBFM_PRESETS and bundle.encoder.mode == "raw"
                                               and all(f.range is not None for f in bundle.encoder.schema.fields))


def _read_libfm(bundle: Bundle, path: Path, bad: BadRows, need: list[str], block_bytes: int) -> Iterator[Chunk]:
    """libFM lines, split into the label and a column per field by the preset's own reader (read_libfm) with the
    layout the bundle keeps from preprocessing (which field owns each index; older bundles: the index ranges of its
    schema). The label comes first on every line: predict ignores it, evaluate reads it with the bundle's label
    convention (pm1 or binary)."""
    layout = bundle.libfm_layout()
    preset = bundle.feature_map.meta.get("preset")
    if layout is None and not _trained_on_libfm(bundle):
        if preset in LIBFM_PRESETS:  # fields from a feature-index file, preprocessed before dlf kept the layout
            raise DataError(f"{path}: the bundle does not keep which field owns each libFM index (its dataset was "
                            "preprocessed by an older dlf): re-run the same dlf preprocess command with --force and "
                            "export the run again (its vocabularies and model stay valid)")
        raise DataError(f"{path}: libFM lines are read for a model trained on libFM files (preset libfm or frappe, "
                        f"or ipinyou's yzx files); this bundle's preset is {preset or 'none (synthetic ids)'}: score "
                        "a CSV/TSV/Parquet file of its input columns")
    schema = bundle.encoder.schema
    names = [f.name for f in schema.fields]
    missing = [c for c in need if c not in names + [schema.label]]
    if missing:
        raise DataError(f"{path}: libFM lines have no column(s) {missing}: they hold the label and the fields {names}")
    for chunk in read_libfm(path, schema, bad, block_bytes, layout):
        # a line without its label (first token 'index:value') would be scored without its first feature
        unlabelled = pc.match_substring(chunk.columns[schema.label], ":").to_numpy(zero_copy_only=False)
        problems = [chunk.problem(r, f"expected 'label index:value ...' (a label first, e.g. 0 on lines to score), "
                                     f"got {chunk.columns[schema.label][r].as_py()!r} first")
                    for r in np.flatnonzero(unlabelled)]
        yield from in_line_order(chunk.file, chunk.take(~unlabelled), problems, bad)


def _first_line(path: Path, encoding: str, skip_blank: bool = False) -> str | None:
    """The file's first (non-blank) line, decompressed as read_delimited reads it (a .gz input was looked at as
    compressed bytes); None if it cannot be read (an unknown encoding, a .gz that is not gzip): read_delimited says
    why. Bad bytes are replaced: text mode decodes a whole buffer, later rows' too, which read_delimited reports by
    line (the header's too); failing here read lines of separators only as records."""
    try:
        with io.TextIOWrapper(open_input(path), encoding=encoding, errors="replace", newline="") as fh:
            return next((line for line in fh if not skip_blank or line.strip("\r\n")), "").rstrip("\r\n")
    except (LookupError, OSError):
        return None


def _header_names(path: Path, delimiter: str, encoding: str, quote: bool) -> list[str] | None:
    """The column names of a CSV/TSV header, as read_delimited reads them (None if it cannot: it says why)."""
    head = _first_line(path, encoding)
    return None if head is None else header_names(head.removeprefix(BOM.decode(encoding, errors="ignore")),
                                                  delimiter, quote)


# ---- writing --------------------------------------------------------------------------------------

def os_reason(exc: OSError) -> str:
    """'File exists: new.csv' (a file where a folder of the path belongs), or Arrow's own first line."""
    if exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return exc.strerror or str(exc).splitlines()[0]


@contextlib.contextmanager
def folder_for(path: Path, what: str) -> Iterator[None]:
    """PATH's folder, created (with its missing parents) for a command that writes PATH. When the command then fails
    (a bad row, Ctrl-C) the folders it created are removed while empty: a failed command leaves nothing new behind.
    A folder that existed before is never removed. `what` the file is, for the error line."""
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # deepest first
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"{path}: cannot write the {what}: {os_reason(exc)}") from None
        yield
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:  # not empty: someone wrote there meanwhile
                break
        raise


class _Writer:
    """The output file; an OSError (no such folder, a file in the path, disk full) is one line naming `name`, the
    output the user gave, not the temporary file (they were tracebacks)."""

    def __init__(self, path: Path, fmt: str, schema: pa.Schema, name: Path) -> None:
        self.path, self.name = path, name
        self.pending: list[pa.Table] | None = [] if fmt == "parquet" else None  # Parquet: rows of the next row group
        self.pending_rows = 0
        with self._errors():
            if fmt == "parquet":
                import pyarrow.parquet as pq
                self.writer = pq.ParquetWriter(str(path), schema)
            else:
                import pyarrow.csv as pcsv
                opts = pcsv.WriteOptions(delimiter="\t" if fmt == "tsv" else ",")
                self.writer = pcsv.CSVWriter(str(path), schema, write_options=opts)

    @contextlib.contextmanager
    def _errors(self):
        try:
            yield
        except OSError as exc:
            raise DataError(f"{self.name}: cannot write the output: {os_reason(exc)}") from None

    def write(self, table: pa.Table) -> None:
        if self.pending is not None:
            self.pending.append(table)
            self.pending_rows += table.num_rows
            if self.pending_rows < ROW_GROUP_ROWS:
                return
            table, self.pending, self.pending_rows = pa.concat_tables(self.pending), [], 0
        with self._errors():
            self.writer.write_table(table)

    def close(self, rename_to: Path | None = None) -> None:
        with self._errors():
            if self.pending:
                self.writer.write_table(pa.concat_tables(self.pending))
                self.pending = []
            self.writer.close()
            if rename_to is not None:
                with open(self.path, "rb") as fh:  # on disk before it takes the name: a power cut leaves the whole file
                    os.fsync(fh.fileno())
                if rename_to.exists():  # a replaced output keeps its permissions (private scores stay private)
                    shutil.copymode(rename_to, self.path)
                os.replace(self.path, rename_to)


def _output_format(path: Path, fmt: str) -> str:
    if fmt == "auto":
        if not path.suffix:  # /dev/stdout, a FIFO, a name without suffix: CSV
            return "csv"
        found = SUFFIX_FORMATS.get(path.suffix.lower())  # written uncompressed: no look through '.gz'
        if found is None:  # 'scores.csv.gz' or 'scores.json' would silently be plain CSV under that name
            raise DataError(f"{path}: cannot tell the output format from the suffix {path.suffix!r}; name it .csv, "
                            ".tsv or .parquet, or pass --output-format csv|tsv|parquet")
        return found
    if fmt not in ("csv", "tsv", "parquet"):
        raise DataError(f"--output-format must be auto, csv, tsv or parquet, got {fmt!r}")
    return fmt


def predict_file(bundle: Bundle, input: str | Path, output: str | Path, *, id_column: str | None = None,
                 on_bad_row: str = "error", engine: str = "torch", fmt: str = "auto", header: bool | None = None,
                 columns: list[str] | None = None, delimiter: str | None = None, output_format: str = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE, block_bytes: int = DEFAULT_BLOCK_BYTES, precision: str = "fp32",
                 scorer: Scorer | None = None, log: Callable[[str], None] | None = None) -> PredictResult:
    """Score every row of INPUT into OUTPUT (see module doc). Raises DataError / BundleError."""
    started = time.perf_counter()
    log = log or (lambda msg: None)
    bad = BadRows(on_bad_row)
    scorer = scorer or Scorer(bundle, engine, batch_size, precision=precision)
    if id_column == "probability":  # two columns of one name: pyarrow cannot read such a Parquet file back
        raise DataError("--id-column must not be 'probability', the name of the output's score column")
    output = Path(output)
    ofmt = _output_format(output, output_format)
    if output.exists() and output.is_dir():
        raise DataError(f"{output}: is a directory; --output must be a file")
    if Path(input).resolve() == output.resolve():
        raise DataError(f"{output}: --output must not be the input file")
    check_input(input)  # before the output's folder is made: a mistyped --input left an empty new folder behind
    if id_column and _input_format(Path(input), fmt) == "libfm":
        raise DataError(f"{input}: libFM lines have no columns, so no --id-column: the output has one row per line, "
                        "in input order (with --on-bad-row skip, the skipped lines are left out)")
    # CSV: float32 values written as float64 text, which round-trips them exactly (pyarrow prints float32 at 6 digits)
    ptype = pa.float32() if ofmt == "parquet" else pa.float64()
    fields = ([pa.field(id_column, pa.string())] if id_column else []) + [pa.field("probability", ptype)]
    schema = pa.schema(fields)
    # a FIFO, /dev/null or /dev/stdout (a link to the pipe) is written in place: renaming the temporary file over it
    # replaced the FIFO or device node itself with a regular file (and the reader got nothing)
    direct = output.exists() and not output.is_file()
    tmp = output if direct else output.parent / f".{output.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with folder_for(output, "output"):  # removed again if the run fails
        writer = _Writer(tmp, ofmt, schema, output)
        rows = chunks = 0
        unseen = UnseenCounts()
        try:
            for chunk, probs, keep, *_ in scored_chunks(bundle, input, bad, scorer, unseen=unseen, fmt=fmt,
                                                        header=header, columns=columns, delimiter=delimiter,
                                                        block_bytes=block_bytes,
                                                        extra=[id_column] if id_column else None):
                chunks += 1
                cols = []
                if id_column:
                    ids = chunk.columns[id_column]
                    cols.append(ids if keep.all() else ids.filter(pa.array(keep)))
                cols.append(pa.array(probs.astype(ptype.to_pandas_dtype()), ptype))
                writer.write(pa.Table.from_arrays(cols, schema=schema))
                rows += len(probs)
                if chunks % 20 == 0:
                    log(f"{rows:,} rows scored")
            writer.close(rename_to=None if direct else output)
        except BaseException:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - already failing; the temporary file goes anyway
                pass
            if not direct:
                tmp.unlink(missing_ok=True)
            raise
    return PredictResult(output, rows, bad.summary(), time.perf_counter() - started,
                         unseen.summary(bundle.feature_map))


def predict_records(bundle: Bundle, records, *, engine: str = "torch", precision: str = "fp32",
                    batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Click probabilities of raw records in memory (a notebook's, an application's), encoded and scored as POST
    /predict scores a request: a list of dicts of input values (strings, numbers, booleans; a list or a
    separator-joined string for a multi-valued field; None or absent = missing), or a table, pyarrow (to_pylist) or
    pandas (to_dict; NaN = missing), whose input columns are read and the others (a label, an id) ignored.
    One float32 probability per record, in order. A bad value is a DataError naming the record and field."""
    from dlf.serve.server import RequestError, validate_records

    inputs = bundle.encoder.inputs
    names = [f.name for f in inputs]
    if hasattr(records, "to_pylist"):  # pyarrow Table / RecordBatch
        records = records.select([c for c in names if c in records.column_names]).to_pylist()
    elif hasattr(records, "to_dict") and hasattr(records, "columns"):  # pandas DataFrame
        frame = records[[c for c in names if c in records.columns]].astype(object)  # Python scalars
        records = frame.where(frame.notna(), None).to_dict("records")  # NaN, None, pd.NA: missing
    if isinstance(records, list) and not records:
        return np.empty(0, dtype=np.float32)
    try:
        text = validate_records(records, inputs, max_batch=len(records) if isinstance(records, list) else 1)
    except RequestError as exc:
        first = exc.detail[0] if isinstance(exc.detail, list) else {"loc": [], "msg": exc.detail}
        where = "".join(f"record {p}" if isinstance(p, int) else f", field {p!r}" for p in first["loc"][1:])
        more = f" (and {len(exc.detail) - 1} more)" if isinstance(exc.detail, list) and len(exc.detail) > 1 else ""
        raise DataError(f"{where}: {first['msg']}{more}" if where else f"{first['msg']}{more}") from None
    bad = BadRows("error")  # the first bad record stops, as a bad row of a file does
    chunk = bundle.encoder.records_chunk(text, "record")
    batch, keep = bundle.encoder.encode_chunk(chunk, bad)
    probs = Scorer(bundle, engine, batch_size, precision=precision)(batch)
    return drop_unscorable(probs, batch, keep, chunk, bundle.encoder.numeric_columns, bad)[0]
