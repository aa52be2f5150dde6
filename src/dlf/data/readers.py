"""Stream raw files chunk by chunk as columns of text, with the line number of every row.

Every reader yields `Chunk`s: a dict of raw column name -> `pyarrow.Array` (strings), the
file and the physical line (or Parquet row) number of each row, so later steps can say
exactly where a bad value is. Malformed rows (wrong column count, bad encoding) are
reported through `BadRows`: by default the first one stops the run with a `DataError`
naming file and line; with `on_bad_row="skip"` they are dropped and counted.
"""
from __future__ import annotations

import bisect
import codecs
import csv
import io
import itertools
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Iterator, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from dlf.data.schema import DataError

T = TypeVar("T")
DEFAULT_BLOCK_BYTES = 16 << 20  # text per chunk (about 60k Criteo rows)
# Arrow parses 1 MiB blocks (faster than big ones: they stay in cache) and reads about 32 of
# them ahead, whatever their size; a chunk joins the blocks of `block_bytes` of text.
PARSE_BLOCK_BYTES = 1 << 20
MAX_LINE_BYTES = 64 << 20  # a longer line is an error (Arrow needs a whole line in one parse block)
BOM = b"\xef\xbb\xbf"  # UTF-8 byte order mark (Excel's "CSV UTF-8", Notepad): never data


def strip_bom(data: bytes) -> bytes:
    return data[len(BOM):] if data.startswith(BOM) else data


Problem = tuple[int | None, str, bool]  # a bad row: (line, what is wrong, whether it stops the run in either mode)


def _location(file: str, line: int | None, unit: str) -> str:
    return f"{file}:{line}" if unit == "line" else f"{file} row {line}"


@dataclass
class Chunk:
    file: str
    lines: np.ndarray  # int64, 1-based physical line (or Parquet row) of each row
    columns: dict[str, pa.Array]
    unit: str = "line"
    header_lines: int = 0  # lines before the first data row

    def __len__(self) -> int:
        return len(self.lines)

    def where(self, row: int) -> str:
        return _location(self.file, self.lines[row], self.unit)

    def problem(self, row: int, message: str) -> Problem:
        """Row `row` is bad for `message`, as `in_line_order` takes it."""
        return int(self.lines[row]), message, False

    def take(self, keep: np.ndarray) -> "Chunk":
        if keep.all():
            return self
        mask = pa.array(keep)
        return Chunk(self.file, self.lines[keep], {k: pc.filter(v, mask) for k, v in self.columns.items()}, self.unit,
                     self.header_lines)


@dataclass
class BadRows:
    """Collects malformed rows: raises on the first one (mode 'error') or counts them (mode 'skip'), keeping the
    first ten as examples."""

    mode: str = "error"
    count: int = 0
    examples: list[str] = field(default_factory=list)
    by_file: dict[str, int] = field(default_factory=dict)
    _keys: list[tuple[int, int]] = field(default_factory=list, repr=False)  # (file, line) of each example

    def __post_init__(self) -> None:
        if self.mode not in ("error", "skip"):
            raise DataError(f"on_bad_row must be 'error' or 'skip', got {self.mode!r}")

    def add(self, where: str, message: str, file: str, line: int | None = None) -> None:
        """`line`: the row's line (or row number), which orders the examples; a row given without it counts as
        coming after those reported before it."""
        text = f"{where}: {message}"
        if self.mode == "error":
            raise DataError(text)
        self.count += 1
        self.by_file[file] = self.by_file.get(file, 0) + 1
        # a chunk's rows are checked by the reader, the preset, then the parser, each reporting its own: the
        # examples are kept in file and line order, so they are the first ten bad rows whichever check found them
        rank = list(self.by_file).index(file)
        if line is None:  # after the rows of its file reported before it
            line = self._keys[-1][1] if self._keys and self._keys[-1][0] == rank else 0
        key = (rank, line)
        if len(self.examples) == 10 and key >= self._keys[-1]:
            return
        i = bisect.bisect_right(self._keys, key)
        self._keys.insert(i, key)
        self.examples.insert(i, text)
        del self._keys[10:], self.examples[10:]

    def summary(self) -> dict:
        return {"count": self.count, "by_file": self.by_file, "examples": self.examples}


def header_names(line: str, delimiter: str, quote: bool) -> list[str]:
    """Column names of a header line; quoted names may hold the delimiter or '""' (was split on every
    delimiter: '"clicks, total"' made two names, and every data row had a column too many)."""
    if quote:
        cells = next(csv.reader([line], delimiter=delimiter), [])
    else:
        cells = line.split(delimiter)
    # a pair of quotes around a name is taken off (a TSV's, or one after a blank, which the csv module keeps); a
    # quote that is part of the name stays (CSV's "the ""city""" is the name 'the "city"', was 'the "city')
    names = [c.strip() for c in cells]
    return [n[1:-1] if len(n) >= 2 and n[0] == n[-1] == '"' else n for n in names]


def _other_case(absent: list[str], names: list[str]) -> str:
    """A hint naming the columns that are there in another case ('Click' for 'click'), or ''."""
    lower = {n.lower(): n for n in names}
    other = [f"{lower[c.lower()]!r} for {c!r}" for c in absent if c.lower() in lower]
    return f" (names are case-sensitive: {', '.join(other)})" if other else ""


def check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    if not path.is_file():  # a pipe's size reads 0, and every input is read more than once (header, then rows)
        raise DataError(f"{path}: not a regular file (a pipe or a device), which dlf reads more than once; save the "
                        "rows to a file first (a .gz, .bz2, .zst or .lz4 file is read decompressed)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return path


def _shift_lines(start: int, n: int, skipped: list[int]) -> np.ndarray:
    """Physical lines of n good rows from line `start` on, hopping over the `skipped` lines."""
    s = np.sort(np.array([b for b in skipped if b >= start], dtype=np.int64))
    before = s - start - np.arange(len(s))  # good rows ahead of each skipped line
    i = np.arange(n, dtype=np.int64)
    return start + i + np.searchsorted(before, i, side="right")


def _as_text(arr: pa.Array) -> pa.Array:
    """Binary -> UTF-8 strings (validated, not copied); left binary when some bytes do not decode."""
    try:
        return arr.cast(pa.string())
    except pa.ArrowInvalid:
        return arr


def _decode(columns: dict[str, pa.Array], encoding: str,
            lenient: Collection[str] = ()) -> tuple[dict[str, pa.Array], dict[int, str]]:
    """Columns still binary (not valid UTF-8 as a whole, see `_as_text`) -> strings, and what is wrong with
    each row whose bytes do not decode (a bad row); in `lenient` columns such bytes are only replaced."""
    out, undecodable = dict(columns), {}
    for name, arr in columns.items():
        if not pa.types.is_binary(arr.type):
            continue
        values = arr.to_pylist()  # error path only: find the rows that do not decode
        for i, v in enumerate(values if name not in lenient else ()):
            try:
                v.decode("utf-8")
            except UnicodeDecodeError as exc:
                undecodable.setdefault(i, f"column {name!r}: bytes that are not valid {encoding} ({exc.reason} at "
                                          f"byte {exc.start}); pass the right encoding in the schema")
        out[name] = pa.array([v.decode("utf-8", "replace") for v in values], pa.string())
    return out, undecodable


def in_line_order(file: str, chunk: Chunk | None, problems: list[Problem], bad: BadRows) -> Iterator[Chunk]:
    """A chunk's good rows (if any) and its bad rows' `problems`, reported to `bad`. In stop mode the good rows
    before the first problem come out first: a later check (the preset's, the parser's) may find a bad value on
    one of them, and the first bad line of the file is the one to report."""
    unit = chunk.unit if chunk is not None else "line"
    problems = sorted(problems, key=lambda p: p[0] or 0)
    if problems and bad.mode == "error" and chunk is not None:
        head = chunk.take(chunk.lines < (problems[0][0] or 0))
        if len(head):
            yield head
    for line, message, fatal in problems:
        if fatal:
            raise DataError(f"{_location(file, line, unit)}: {message}")
        bad.add(_location(file, line, unit), message, file, line)
    if chunk is not None and len(chunk):
        yield chunk


def read_delimited(path: str | Path, *, delimiter: str, header: bool, columns: list[str] | None,
                   use: list[str] | None, bad: BadRows, encoding: str = "utf-8", quote: bool = False,
                   block_bytes: int = DEFAULT_BLOCK_BYTES, layout: str | None = None,
                   blank_lines: str = "skip", lenient: Collection[str] = ()) -> Iterator[Chunk]:
    """CSV/TSV as text columns. `columns`: names of all columns when there is no header;
    `use`: the columns to keep (all when None); `lenient`: columns of `use` read only to tell empty values, whose
    bytes that are not text are replaced (U+FFFD), not a bad row; `layout`: what a line should look like, for the error
    on a line with the wrong number of columns (default: N columns separated by the delimiter);
    `blank_lines`: "skip" (not rows, as pandas reads them) or "bad" (a bad row, unless it ends the file)."""
    path = check_file(path)
    name = str(path)
    if header:
        with open_input(path) as raw:
            first = _read_or_fail(raw, 1 << 20, name)
        try:  # decoded as text: a UTF-16 header's bytes end in "\n\0" (Excel's "Unicode Text"), not "\n"
            try:
                head = codecs.getincrementaldecoder(encoding)().decode(first, final=False)
            except UnicodeDecodeError as exc:  # a bad byte after the header line is its row's problem
                head = codecs.getincrementaldecoder(encoding)().decode(first[:exc.start], final=False)
                if not re.search(r"[\r\n]", head):
                    raise
            if first.startswith(BOM):  # '\ufeff' in UTF-8, 'ï»¿' in ISO-8859-1
                head = head.removeprefix(BOM.decode(encoding, errors="ignore"))
            # the whole file is a header line without its newline: no rows (Arrow "could not skip initial 1 rows")
            header_only = len(first) < 1 << 20 and not re.search(r"[\r\n]", head)
            head = re.split(r"\r\n|\r|\n", head, maxsplit=1)[0]
        except UnicodeError:
            raise DataError(f"{name}:1: header is not valid {encoding}") from None
        names = header_names(head, delimiter, quote)
        if use:
            absent = [c for c in use if c not in names]
            if absent:
                raise DataError(f"{name}:1: header has no column(s) {absent}; it has {names}"
                                f"{_other_case(absent, names)}")
    else:
        names = list(columns or [])
    twice = sorted({c for i, c in enumerate(names) if c in names[:i]})
    used_twice = [c for c in twice if not use or c in use]
    if used_twice:
        raise DataError(f"{name}{':1' if header else ''}: column name(s) {used_twice} appear more than once in "
                        f"{names}; which one is meant?")
    if header and header_only:
        return
    # columns not read may share a name (Excel's trailing ',,' header cells): Arrow needs unique ones
    names = [f"{c}\0{i}" if c in twice else c for i, c in enumerate(names)]
    use = list(use) if use else names
    utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    skipped: list[tuple[int | None, str, int]] = []

    def on_invalid(row) -> str:
        skipped.append((row.number, row.text, row.actual_columns))
        return "skip"

    # quote: a quoted value may hold a newline; without newlines_in_values Arrow's chunker cut such a row at a
    # block edge ("CSV parser got out of sync with chunker", an option the user cannot set). It costs little.
    parse_opts = pcsv.ParseOptions(delimiter=delimiter, quote_char='"' if quote else False, newlines_in_values=quote,
                                   ignore_empty_lines=False, invalid_row_handler=on_invalid)
    kind = pa.binary() if utf8 else pa.string()
    # a quoted CSV: every column, to count the newlines in the values of those not read too
    conv_opts = pcsv.ConvertOptions(column_types={c: kind for c in names}, include_columns=names if quote else use,
                                    strings_can_be_null=False, quoted_strings_can_be_null=False)
    # A UTF-8 BOM is skipped here whatever the encoding: Arrow drops it only from UTF-8 input, and an
    # ISO-8859-1 file (MovieLens) saved by an editor "as UTF-8 with BOM" kept it in its first value.
    fh = open_input(path)
    start = len(BOM) if _read_or_fail(fh, len(BOM), name) == BOM else 0
    compressed = not isinstance(fh, pa.OSFile)
    end = None if compressed else fh.size() - _blank_tail(fh, encoding)
    next_record = 2 if header else 1

    def open_reader(parse_block: int):
        """Arrow's reader from record `next_record` on (rows before it were delivered already)."""
        nonlocal fh
        if compressed:  # a stream: read again from the start
            fh.close()
            fh = open_input(path)
            fh.read(start)
        else:
            fh.seek(start)
        source = fh if end is None or end == fh.size() else _Head(fh, end)
        read_opts = pcsv.ReadOptions(column_names=names, skip_rows=1 if header else 0,
                                     skip_rows_after_names=next_record - 1 - int(header), block_size=parse_block,
                                     use_threads=False, encoding="utf8" if utf8 else encoding)
        return pcsv.open_csv(source, read_options=read_opts, parse_options=parse_opts, convert_options=conv_opts)

    def problems(rows: list[tuple[int | None, str, int]], line_of: Callable[[int], int],
                 blank: np.ndarray = np.zeros(0, np.int64)) -> list[Problem]:
        """Malformed rows from Arrow (by record number, `line_of` gives the line), and the lines of `blank`
        (empty lines), as `in_line_order` takes them."""
        found = [(int(b), "empty line (blank lines may only end a file)", False) for b in blank]
        for record, text, actual in rows:
            number = None if record is None else line_of(record)
            if quote and text and "\n" in text:
                # a '"' that is not closed where its value ends makes Arrow read on to the next '"', maybe
                # thousands of lines on: not one bad row to skip (it dropped them all), the quoting is broken
                found.append((number, f"expected {len(names)} columns separated by {delimiter!r}, got {actual} in "
                              f"{text.count(chr(10)) + 1} lines read as one row ({text[:60]!r}): a '\"' opened here "
                              "is not closed where the value ends, so the lines after it were read into it; close "
                              "the quote or drop the '\"'", True))
                continue
            got = f"got {actual}" + (f" ({text[:60]!r})" if text else " (empty line)")
            if layout:  # the columns are the reader's, not the user's: show the line
                got = f"got {text[:60]!r}" if text else "got an empty line"
            found.append((number, f"expected {layout or f'{len(names)} columns separated by {delimiter!r}'}, {got}",
                          False))
        return found

    def blocks(reader) -> Iterator[tuple[int | None, dict[str, pa.Array], list, np.ndarray | None]]:
        """Parsed blocks joined into about `block_bytes` of text: (rows, columns, malformed rows
        reported meanwhile, newlines in each row's values or None); (None, {}, rest, None) at the end."""
        parts, size, done = [], 0, False
        while not done:
            try:
                parts.append(reader.read_next_batch())
                size += parts[-1].nbytes
            except StopIteration:
                done = True
            if parts and (done or size >= block_bytes):
                table = pa.Table.from_batches(parts)
                rows = skipped[:]
                skipped.clear()
                cols = {c: table.column(c).combine_chunks() for c in use}
                yield (table.num_rows, {c: _as_text(a) for c, a in cols.items()} if utf8 else cols, rows,
                       _newlines(table) if quote else None)
                parts, size = [], 0
        rows = skipped[:]
        skipped.clear()
        yield None, {}, rows, None

    # Arrow numbers rows by record; lines (what an editor shows) are records + the newlines inside the values
    # (quoted) of the rows before. Arrow may report a malformed row while parsing ahead, before the batch that
    # precedes it is returned: keep them pending and place them by their record numbers.
    pending: list[tuple[int | None, str, int]] = []
    parse_block = min(block_bytes, PARSE_BLOCK_BYTES)
    stream = None
    newline_is_byte = "\n".encode(encoding, errors="replace") == b"\n"
    cursor: _LineCursor | None = None  # opened at the first row that may be a blank line
    held = np.zeros(0, np.int64)  # blank lines not reported yet
    extra = 0  # newlines inside the values of the rows before `next_record`
    try:
        while True:
            try:
                if stream is None:
                    stream = _read_ahead(blocks(open_reader(parse_block)))
                n, cols, rows, newlines = next(stream)
            except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as exc:  # OSError: e.g. a bad .gz
                # A line longer than Arrow's parse block: read on from the first line not delivered yet with
                # bigger blocks (a restart: Arrow cannot grow the block of a running reader).
                if "straddl" in str(exc) and parse_block < MAX_LINE_BYTES:
                    if stream is not None:
                        stream.close()
                    stream, parse_block = None, parse_block * 8
                    pending.clear()
                    skipped.clear()  # rows from next_record on are read again (`extra` counts those before)
                    continue
                where = (f"{name}:{next_record + extra}" if "straddl" in str(exc) else
                         name if next_record == 2 - (not header) else f"{name} (after line {next_record - 1 + extra})")
                what = (f"a line from here on is longer than {MAX_LINE_BYTES >> 20} MiB" if "straddl" in str(exc)
                        else f"cannot read as {'CSV' if delimiter == ',' else 'delimited text'}: {_short(exc)}")
                raise DataError(f"{where}: {what}") from None
            pending += rows
            if n is None:
                last = max([r[0] + extra for r in pending if r[0] is not None], default=0)  # the last row's line
                # the blank lines after it end the file: not rows
                yield from in_line_order(name, None, problems(pending, lambda r: r + extra, held[held < last]), bad)
                break
            records = _shift_lines(next_record, n, [r[0] for r in pending if r[0] is not None])
            if len(records):
                next_record = int(records[-1]) + 1
            starts = np.full(n + 1, extra, dtype=np.int64)  # newlines inside values before each row (n: after all)
            if newlines is not None:
                starts[1:] += np.cumsum(newlines)
            lines = records + starts[:-1]  # the line each row starts on
            # Arrow reads a blank line as a row of empty values ("field 'label': expected label ..., got ''")
            blank = _empty_rows(cols)
            if len(blank) and newline_is_byte:
                cursor = cursor or (_RecordCursor(path, start, delimiter, encoding) if quote else
                                    _LineCursor(path, start))
                blank = blank[[cursor.is_blank(int(records[i])) for i in blank]]
            else:
                blank = blank[:0]
            shown = blank[:0]  # the blank lines to report as bad rows now
            if blank_lines == "bad":
                # those after the last row so far may end the file (a compressed one: `end` cannot cut them off):
                # held until a row follows
                tail = blank == np.arange(len(lines) - len(blank), len(lines))
                if tail.sum() < len(lines):
                    shown, held = np.concatenate([held, lines[blank[~tail]]]), lines[blank[tail]]
                else:
                    held = np.concatenate([held, lines[blank]])
            found = problems([r for r in pending if r[0] is None or r[0] < next_record],
                             lambda r: r + int(starts[np.searchsorted(records, r)]), shown)
            extra = int(starts[-1])
            pending = [r for r in pending if r[0] is not None and r[0] >= next_record]
            drop = np.zeros(len(lines), dtype=bool)
            drop[blank] = True
            if utf8:
                cols, undecodable = _decode(cols, encoding, lenient)
                drop[list(undecodable)] = True
                found += [(int(lines[i]), message, False) for i, message in undecodable.items()]
            if drop.any():
                lines, cols = lines[~drop], {c: pc.filter(a, pa.array(~drop)) for c, a in cols.items()}
            # CRLF files: the last column keeps its '\r'
            last = names[-1]
            if last in cols:
                cols[last] = pc.utf8_rtrim(cols[last], characters="\r")
            yield from in_line_order(name, Chunk(name, lines, cols, "line", 1 if header else 0), found, bad)
    finally:
        if stream is not None:
            stream.close()  # waits for the helper thread, then the file can go
        if cursor is not None:
            cursor.close()
        fh.close()


def _newlines(table: pa.Table) -> np.ndarray | None:
    """Newlines inside each row's values (a quoted CSV's), or None when there are none (the usual case)."""
    counts = [pc.count_substring(c, "\n") for c in table.columns if pc.any(pc.match_substring(c, "\n")).as_py()]
    return np.sum([c.to_numpy() for c in counts], axis=0) if counts else None


def _empty_rows(cols: dict[str, pa.Array]) -> np.ndarray:
    """Rows whose every column read is empty (a blank line, or one of empty values): each column is tested
    only on the rows still empty, so clean data costs one length test of its first column."""
    rows = None
    for arr in cols.values():
        values = arr if rows is None else arr.take(pa.array(rows))
        empty = np.flatnonzero(pc.equal(pc.binary_length(values), 0).to_numpy(zero_copy_only=False))
        rows = empty if rows is None else rows[empty]
        if not len(rows):
            break
    return np.zeros(0, np.int64) if rows is None else rows


class _LineCursor:
    """Reads a file forward from byte `start` to tell whether physical lines are blank (asked in increasing
    order): Arrow gives a blank line and one of empty values (',,', or columns not read) the same row."""

    def __init__(self, path: Path, start: int) -> None:
        self.fh = open_input(path)
        self.fh.read(start)
        self.line, self.buf = 1, b""  # `buf` starts at the beginning of line `line`

    def is_blank(self, n: int) -> bool:
        while True:
            if self.line < n:
                k = self.buf.count(b"\n")
                if k >= n - self.line:  # line n starts in `buf`
                    self.buf, self.line = self.buf.split(b"\n", n - self.line)[-1], n
                elif k:  # all of `buf` but its last (unfinished) line is before line n
                    self.line += k
                    self.buf = self.buf[self.buf.rfind(b"\n") + 1:]
            if self.line == n and len(self.buf) >= 2 or not (more := self.fh.read(1 << 20)):
                break
            self.buf += more
        return self.line == n and (self.buf[:1] == b"\n" or self.buf[:2] == b"\r\n" or self.buf in (b"", b"\r"))

    def close(self) -> None:
        self.fh.close()


class _RecordCursor(_LineCursor):
    """`_LineCursor` for a quoted CSV, whose rows are numbered by record (a quoted value may hold newlines)."""

    def __init__(self, path: Path, start: int, delimiter: str, encoding: str) -> None:
        super().__init__(path, start)
        self.records = csv.reader(io.TextIOWrapper(self.fh, encoding=encoding, errors="replace", newline=""),
                                  delimiter=delimiter)

    def is_blank(self, n: int) -> bool:
        try:
            next(itertools.islice(self.records, n - self.line, n - self.line), None)  # skip to record n
            self.line = n + 1
            return next(self.records, None) == []  # the csv module's blank line
        except csv.Error:  # e.g. a value over its field size limit: told as not blank
            return False


SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".parquet": "parquet", ".pq": "parquet"}
COMPRESSIONS = (".gz", ".bz2", ".zst", ".lz4")  # what open_input decompresses


def format_from_name(path: Path) -> str | None:
    """csv, tsv or parquet from the file name, through a compression suffix (train.csv.gz: csv); None when the
    name does not say."""
    name = path.name.lower()
    compressed = name.endswith(COMPRESSIONS)
    found = SUFFIX_FORMATS.get(Path(name.rsplit(".", 1)[0] if compressed else name).suffix)
    return None if compressed and found == "parquet" else found  # Parquet compresses inside; read_parquet cannot


def open_input(path: Path) -> pa.NativeFile:
    """The file's bytes; .gz, .bz2, .zst, .lz4 decompressed (as Arrow did when given the path: a Criteo
    train.txt.gz read fine until the reader opened the file itself)."""
    return pa.input_stream(str(path), compression="detect")


def _read_or_fail(fh: pa.NativeFile, n: int, name: str) -> bytes:
    try:
        return fh.read(n)
    except OSError as exc:  # a file named .gz that is not gzip: the error named no file
        raise DataError(f"{name}: cannot read: {_short(exc)}") from None


def _blank_tail(fh: pa.NativeFile, encoding: str) -> int:
    """Bytes of the blank lines that end a file ("...\\n\\n", an editor's or `echo >>`'s last line): not rows.
    Arrow reads a blank line as a row of empty values, so a trailing one stopped a run at its very end
    ("field 'label': expected label 0 or 1, got ''"). Only for encodings where a newline is the byte 0x0A."""
    if "\n".encode(encoding, errors="replace") != b"\n":
        return 0
    size = fh.size()
    n = min(size, 1 << 16)
    fh.seek(size - n)
    tail = fh.read(n)
    fh.seek(0)
    rest = tail[len(tail.rstrip(b"\r\n")):]  # the newline of the last line, then the blank lines
    return max(len(rest) - (2 if rest.startswith(b"\r\n") else 1), 0)


class _Head(io.RawIOBase):
    """The bytes of a file before `end`, from its current position (a file without its blank tail)."""

    def __init__(self, fh: pa.NativeFile, end: int) -> None:
        self.fh, self.left = fh, end - fh.tell()

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self.fh.read(min(len(buf), max(self.left, 0)))
        buf[:len(data)] = data
        self.left -= len(data)
        return len(data)


def _read_ahead(items: Iterator[T]) -> Iterator[T]:
    """`items`, computed one step ahead in a helper thread: Arrow parses the next block (without
    the GIL) while the caller works on this one, so the two cores are both busy."""
    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(next, items)
        while True:
            try:
                item = ahead.result()
            except StopIteration:
                return
            ahead = pool.submit(next, items)
            yield item


def _parquet_text(arr: pa.Array) -> pa.Array:
    """A Parquet column as text, null where missing."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_floating(arr.type):
        if pa.types.is_float16(arr.type):
            arr = arr.cast(pa.float32())  # float16 has no compute kernels (and is exact in float32)
        # NaN is how pandas writes a missing number: missing, as an empty CSV cell
        arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, arr.type), arr)
        # Other values: the shortest text of the value in its own type (float32 0.3 is '0.3', as a CSV or a
        # request writes it, not float64's '0.30000001192092896', an unseen category)
        text = pc.cast(arr, pa.string())
        arr = arr.cast(pa.float64())
        # Integral floats -> the integer's text (3.0 -> "3", 2^60 -> "1152921504606846976", not
        # "1.152921504606847e+18") so that ids written as floats (pandas stores an int column with missing
        # values as float64) match the same ids written as integers. Every float of 2^53 and beyond is
        # integral and exact in int64/uint64; inf and larger values stay as text for the parser to judge.
        integral = pc.equal(pc.floor(arr), arr)
        signed = pc.and_(integral, pc.and_(pc.greater_equal(arr, -2.0 ** 63), pc.less(arr, 2.0 ** 63)))
        unsigned = pc.and_(integral, pc.and_(pc.greater_equal(arr, 2.0 ** 63), pc.less(arr, 2.0 ** 64)))
        as_int = pc.cast(pc.cast(pc.if_else(signed, arr, 0.0), pa.int64()), pa.string())
        as_uint = pc.cast(pc.cast(pc.if_else(unsigned, arr, 0.0), pa.uint64()), pa.string())
        return pc.if_else(signed, as_int, pc.if_else(unsigned, as_uint, text))
    if pa.types.is_boolean(arr.type):  # "1"/"0", not "true"/"false": a valid label and number
        return pc.cast(pc.cast(arr, pa.int8()), pa.string())
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr
    return pc.cast(arr, pa.string())


def seconds(arr: pa.Array) -> pa.Array:
    """A timestamp, date, time or duration column as seconds (since the epoch, or midnight), float64."""
    t = arr.type
    # of days (date32) or of the type's unit; not a safe cast: a nanosecond timestamp (pandas' unit) is beyond
    # 2^53, and rounding it to a float64 keeps the order (it was "Integer value ... not in range")
    count = pc.cast(pc.cast(arr, pa.int32() if pa.types.is_date32(t) or pa.types.is_time32(t) else pa.int64()),
                    pa.float64(), safe=False)
    if pa.types.is_date32(t):
        return pc.multiply(count, 86400.0)
    return pc.divide(count, {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}["ms" if pa.types.is_date64(t) else t.unit])


def _is_temporal(t: pa.DataType) -> bool:
    return pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t) or pa.types.is_duration(t)


def read_parquet(path: str | Path, *, use: list[str] | None, rows: int = 262_144,
                 separators: dict[str, str] | None = None, times: tuple[str, ...] = ()) -> Iterator[Chunk]:
    """Parquet columns as text. `separators`: column -> separator of a multi-valued field; such a column may
    hold lists (FuxiCTR's parquet sequences), joined into that field's text (an ArrowNotImplementedError before).
    `times`: columns read as numbers when temporal (seconds since the epoch: the time split orders rows by them;
    their text '2020-01-01 00:00:00' was "expected a number")."""
    import pyarrow.parquet as pq

    path = check_file(path)
    name = str(path)
    separators = separators or {}
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{name}: not a readable Parquet file: {_short(exc)}") from None
    have = pf.schema_arrow.names
    if use:
        absent = [c for c in use if c not in have]
        if absent:
            raise DataError(f"{name}: Parquet file has no column(s) {absent}; it has {have}{_other_case(absent, have)}")
    twice = sorted({c for i, c in enumerate(have) if c in have[:i] and (not use or c in use)})
    if twice:  # (Arrow's KeyError 'Field "a" exists 2 times in schema', a traceback)
        raise DataError(f"{name}: Parquet column name(s) {twice} appear more than once in {have}; which one is meant?")
    start = 1
    for batch in pf.iter_batches(batch_size=rows, columns=use):
        cols = {}
        for c in batch.schema.names:
            arr = batch.column(c)
            try:
                if pa.types.is_fixed_size_list(arr.type):  # (Polars' Array, NumPy 2-D columns): as a list column
                    arr = arr.cast(pa.list_(arr.type.value_field))
                if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
                    if c not in separators:
                        raise DataError(f"{name}: column {c!r} holds lists ({arr.type}); only a multi-valued field "
                                        "(kind: multi, FuxiCTR type: sequence) can read it")
                    items = pc.fill_null(_parquet_text(arr.values), "")
                    found = _item_with(arr, items, separators[c])
                    if found:  # joined with the separator and split again, it would silently be several items
                        raise DataError(f"{name} row {start + found[0]}: column {c!r}: the list item {found[1]!r} "
                                        f"holds the field's separator {separators[c]!r}, so it would read as "
                                        "several items; give the field a separator that no item holds")
                    arr = pc.binary_join(type(arr).from_arrays(arr.offsets, items, mask=arr.is_null()), separators[c])
                elif c in times and _is_temporal(arr.type):
                    arr = _parquet_text(seconds(arr))
                else:
                    arr = _parquet_text(arr)
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as exc:
                row = _not_utf8(arr)
                where = name if row is None else f"{name} row {start + row}"
                raise DataError(f"{where}: column {c!r} of type {arr.type} cannot be read as text: "
                                f"{_short(exc)}") from None
            cols[c] = pc.fill_null(arr, "")
        n = batch.num_rows
        yield Chunk(name, np.arange(start, start + n, dtype=np.int64), cols, unit="row")
        start += n


def _not_utf8(arr: pa.Array) -> int | None:
    """The first row of a binary column whose bytes are not UTF-8 text (None: no such row, or not binary)."""
    if not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
        return None
    for i, v in enumerate(arr.to_pylist()):  # the error path only
        try:
            if v is not None:
                v.decode("utf-8")
        except UnicodeDecodeError:
            return i
    return None


def _item_with(arr: pa.Array, items: pa.Array, separator: str) -> tuple[int, str] | None:
    """(row, item) of the first item of list column `arr` (`items`: the text of its values) that holds
    `separator`, or None."""
    holds = np.flatnonzero(pc.match_substring(items, separator).to_numpy(zero_copy_only=False))
    if not len(holds):
        return None
    rows = np.searchsorted(arr.offsets.to_numpy(), holds, side="right") - 1  # -1, len(arr): outside the slice
    inside = np.flatnonzero((rows >= 0) & (rows < len(arr)))
    return (int(rows[inside[0]]), items[int(holds[inside[0]])].as_py()) if len(inside) else None


def read_lines(path: str | Path, *, bad: BadRows, encoding: str = "utf-8",
               block_bytes: int = DEFAULT_BLOCK_BYTES) -> Iterator[Chunk]:
    """Whole lines as one column 'line' (trailing '\\r' removed)."""
    for chunk in read_delimited(path, delimiter="\x1f", header=False, columns=["line"], use=None, bad=bad,
                                encoding=encoding, block_bytes=block_bytes, blank_lines="bad",
                                layout="a line without the control character \\x1f (one column)"):
        yield chunk


def read_double_colon(path: str | Path, *, columns: list[str], bad: BadRows, encoding: str = "iso-8859-1",
                      block_bytes: int = DEFAULT_BLOCK_BYTES) -> Iterator[Chunk]:
    """MovieLens `a::b::c` files: read with ':' as separator, keep every other column."""
    raw = []
    for i, c in enumerate(columns):
        raw.append(c)
        if i < len(columns) - 1:
            raw.append(f"__sep{i}")
    layout = f"{len(columns)} fields separated by '::' ({'::'.join(columns)})"  # not the ':' columns read
    for chunk in read_delimited(path, delimiter=":", header=False, columns=raw, use=None, bad=bad,
                                encoding=encoding, block_bytes=block_bytes, layout=layout, blank_lines="bad"):
        keep = np.ones(len(chunk), dtype=bool)
        found = []
        for i in range(len(columns) - 1):
            nonempty = pc.not_equal(pc.utf8_length(chunk.columns[f"__sep{i}"]), 0).to_numpy(zero_copy_only=False)
            for row in np.flatnonzero(nonempty & keep):
                keep[row] = False
                line = ":".join(chunk.columns[c][row].as_py() for c in raw)
                found.append(chunk.problem(row, f"expected {layout}, got {line[:60]!r}"))
        chunk = chunk.take(keep)
        yield from in_line_order(chunk.file, Chunk(chunk.file, chunk.lines, {c: chunk.columns[c] for c in columns},
                                                   chunk.unit, chunk.header_lines), found, bad)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
