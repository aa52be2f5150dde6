"""`dlf predict` from the command line, as a user runs it: what it prints for the rows, values and paths it is
given, and how it replaces an output file."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dlf.cli import app
from dlf.serve.bundle import export_bundle
from dlf.serve.demo import build_demo_run, write_demo_csv


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("predict_cli")
    paths = build_demo_run(folder, rows=600, test_rows=50, epochs=1)
    return export_bundle(paths["run"], folder / "bundle")


def demo_rows(path: Path, age: str) -> Path:
    """Two rows to score, the second with `age` as given."""
    path.write_text("id,city,device,age,tags,site,visits\n"
                    "a,city1,phone,34,t1;t3,s17,12\n"
                    f"b,city0,tv,{age},,s81,\n")
    return path


def test_values_and_paths_with_brackets_are_printed_verbatim(bundle, tmp_path):
    # the lines went through rich markup: a value '4[/i]' was a MarkupError traceback instead of the error line,
    # '[i]45' printed as '45', and an output 'scores[v2].csv' as 'scores.csv'
    runner = CliRunner()
    src = demo_rows(tmp_path / "in.csv", "4[/i]")
    res = runner.invoke(app, ["predict", str(bundle), "--input", str(src), "--output", str(tmp_path / "s.csv")])
    assert res.exit_code == 2 and f"error: {src}:3: field 'age': expected a number, got '4[/i]'" in res.output
    src = demo_rows(tmp_path / "in.csv", "[i]45")
    out = tmp_path / "scores[v2].csv"
    res = runner.invoke(app, ["predict", str(bundle), "--input", str(src), "--output", str(out), "--on-bad-row",
                              "skip"])
    assert res.exit_code == 0, res.output
    assert f"wrote {out}: 1 rows scored" in res.output
    assert f"skipped 1 bad row(s); first: {src}:3: field 'age': expected a number, got '[i]45'" in res.output


def test_output_is_on_disk_before_it_is_renamed_into_place(bundle, tmp_path, monkeypatch):
    # the temporary file was renamed without an fsync: after a power cut the new name could hold an empty or
    # truncated file (delayed allocation), a run that looked complete
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(a), str(b))), replace(a, b)))
    out = tmp_path / "scores.csv"
    out.write_text("old scores\n")
    res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(demo_rows(tmp_path / "in.csv", "40")),
                                   "--output", str(out)])
    assert res.exit_code == 0, res.output
    renames = [e for e in events if e[0] == "replace" and e[2] == str(out)]
    assert len(renames) == 1 and ("fsync", renames[0][1]) in events[:events.index(renames[0])]
    assert out.read_text().startswith('"probability"')


def test_sigterm_mid_run_removes_the_temporary_output(bundle, tmp_path):
    # Ctrl-C removed the temporary file, but `kill`, `timeout` or a job scheduler (SIGTERM) ended the process on the
    # spot: every stopped run left a hidden .scores.csv.tmp-PID-XXXX as large as the output written so far
    src = write_demo_csv(tmp_path / "in.csv", 40_000, seed=3, label=False)
    out = tmp_path / "scores.csv"
    out.write_text("old scores\n")
    proc = subprocess.Popen([sys.executable, "-m", "dlf", "predict", str(bundle), "--input", str(src), "--output",
                             str(out), "--chunk-mb", "0.01"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size > 1000 for p in tmp_path.glob(".scores.csv.tmp-*")):  # some chunks written
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM
    assert "interrupted: no output was written" in proc.stderr.read()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "scores.csv"]
    assert out.read_text() == "old scores\n"


def test_ctrl_c_is_one_line_and_the_sigterm_handler_ends_with_the_command(bundle, tmp_path, monkeypatch):
    """Ctrl-C was typer's silent exit 130, and the command's SIGTERM handler stayed installed after it returned: a
    later SIGTERM to the process that ran it (a test run, a notebook) raised SystemExit wherever it was."""
    import dlf.serve.predict

    args = ["predict", str(bundle), "--input", str(demo_rows(tmp_path / "in.csv", "40")), "--output",
            str(tmp_path / "o.csv")]
    handler = signal.getsignal(signal.SIGTERM)
    assert CliRunner().invoke(app, args).exit_code == 0 and signal.getsignal(signal.SIGTERM) is handler

    def ctrl_c(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dlf.serve.predict, "predict_file", ctrl_c)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 130 and res.output.strip() == "interrupted: no output was written", res.output


def test_parquet_output_of_many_small_chunks_has_few_row_groups(bundle, tmp_path):
    # each chunk was written as its own row group: with a small --chunk-mb the writer's footer, held in memory until
    # the file is closed, grew ~1.7 KB per chunk (memory unbounded in the file's length) and readers crawled
    src = write_demo_csv(tmp_path / "in.csv", 3000, seed=4, label=False)
    out = tmp_path / "scores.parquet"
    res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(src), "--output", str(out), "--id-column",
                                   "id", "--chunk-mb", "0.002"])
    assert res.exit_code == 0, res.output
    table = pq.read_table(out)
    assert pq.ParquetFile(out).num_row_groups == 1 and table.num_rows == 3000
    assert table["id"].to_pylist() == pcsv.read_csv(src)["id"].to_pylist()


def test_replacing_an_output_keeps_its_permissions(bundle, tmp_path):
    # the new file took the default mode: scores kept private (0600) became readable by everyone on the next run
    out = tmp_path / "scores.csv"
    out.write_text("old scores\n")
    out.chmod(0o600)
    res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(demo_rows(tmp_path / "in.csv", "40")),
                                   "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith('"probability"') and out.stat().st_mode & 0o777 == 0o600


def test_a_missing_input_leaves_no_new_output_folder_behind(bundle, tmp_path):
    out = tmp_path / "new" / "scores.csv"
    res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(tmp_path / "typo.csv"), "--output", str(out)])
    assert res.exit_code == 2 and "typo.csv" in res.output, res.output
    assert not out.parent.exists()


def test_a_folder_of_parts_as_input_names_a_part_to_give(bundle, tmp_path):
    """A Spark job's output folder (which dlf preprocess reads whole) given to predict/evaluate: the error said only
    'is a directory, expected a file'; it now says to give the parts one at a time, naming one."""
    parts = tmp_path / "scores_in"
    parts.mkdir()
    (parts / "_SUCCESS").write_text("")
    demo_rows(parts / "part-00000.csv", "34")
    runner = CliRunner()
    for args in (["predict", str(bundle), "-i", str(parts), "-o", str(tmp_path / "s.csv")],
                 ["evaluate", str(bundle), "-i", str(parts)]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and r.output.strip() == (
            f"error: {parts}: is a directory; dlf predict and evaluate read one file: give its parts one at a time "
            f"(e.g. {parts / 'part-00000.csv'})"), r.output
    assert not (tmp_path / "s.csv").exists()


def test_a_pipe_as_input_is_refused_by_name(bundle, tmp_path):
    """`--input /dev/stdin` or `<(zcat ...)` said 'file is empty' (a pipe's size is 0); read once for its first line
    and again for the rows, a pipe would lose them."""
    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    for command in (["predict", str(bundle), "--input", str(fifo), "--output", str(tmp_path / "s.csv")],
                    ["evaluate", str(bundle), "--input", str(fifo), "--json", str(tmp_path / "m.json")]):
        res = CliRunner().invoke(app, command)
        assert res.exit_code == 2 and f"error: {fifo}: not a regular file (a pipe or a device)" in res.output, \
            res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv"]


def test_csv_options_on_a_parquet_input_are_refused(bundle, tmp_path):
    """--columns and --header/--no-header were ignored silently on a Parquet input."""
    src = tmp_path / "rows.parquet"
    res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(demo_rows(tmp_path / "in.csv", "34")),
                                   "--output", str(src)])  # any Parquet file
    assert res.exit_code == 0, res.output
    for extra in (["--columns", "a,b"], ["--no-header"], ["--header"]):
        for command in ("predict", "evaluate"):
            args = [command, str(bundle), "--input", str(src)] + (["--output", str(tmp_path / "s.csv")]
                                                                    if command == "predict" else []) + extra
            res = CliRunner().invoke(app, args)
            assert res.exit_code == 2 and f"error: {src}: --header/--no-header and --columns are for CSV/TSV " \
                "input" in res.output, (extra, res.output)
    assert not (tmp_path / "s.csv").exists()


def test_a_libfm_file_to_score_is_told_to_name_the_inputs(tmp_path):
    """A libFM model's inputs are its fields' feature indices, as columns; scoring its libFM file said only 'the
    columns ['label'] do not include [...]' (the schema's one column: the preset splits the lines)."""
    import random

    from rich.console import Console

    from dlf.api import train
    from dlf.data.preprocess import preprocess
    rng = random.Random(0)
    src = tmp_path / "train.libfm"
    src.write_text("".join(f"{rng.choice(['-1', '1'])} {rng.randrange(3)}:1 {3 + rng.randrange(4)}:1\n"
                           for _ in range(300)))
    preprocess("libfm", [src], tmp_path / "data", options={"fields": "user:3,item:4"})
    train({"model": {"name": "lr"}, "data": {"path": str(tmp_path / "data")},
           "train": {"epochs": 1, "progress": False, "tensorboard": False}}, out=tmp_path / "run",
          console=Console(quiet=True))
    bundle = str(export_bundle(tmp_path / "run", tmp_path / "bundle"))
    res = CliRunner().invoke(app, ["predict", bundle, "--input", str(src), "--format", "tsv", "--output",
                                   str(tmp_path / "s.csv")])
    assert res.exit_code == 2 and "the columns ['label'] (the training files', from the bundle's schema) do not " \
        "include ['user', 'item']; the model's inputs must be columns of the file: pass --header if its first line " \
        "names them, or --columns" in " ".join(res.output.split()), res.output
    (tmp_path / "rows.csv").write_text("user,item\n1,5\n")
    res = CliRunner().invoke(app, ["predict", bundle, "--input", str(tmp_path / "rows.csv"), "--output",
                                   str(tmp_path / "s.csv"), "--header"])
    assert res.exit_code == 0 and pcsv.read_csv(tmp_path / "s.csv").num_rows == 1, res.output


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""], ids=["lf", "crlf", "no-newline"])
def test_a_header_only_input_gives_a_header_only_output(bundle, tmp_path, ending):
    # without the header's newline Arrow could not skip the header: "cannot read as CSV: Could not skip initial 1 rows"
    src = tmp_path / "empty.csv"
    src.write_text("id,city,device,age,tags,site,visits" + ending)
    out = tmp_path / "scores.csv"
    res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(src), "--output", str(out),
                                   "--id-column", "id"])
    assert res.exit_code == 0 and "0 rows scored" in res.output, res.output
    assert pcsv.read_csv(out).column_names == ["id", "probability"] and pcsv.read_csv(out).num_rows == 0


def test_a_bad_row_leaves_no_new_output_folder_behind(bundle, tmp_path):
    """The output's folder was created before scoring and left behind, empty, when a bad row stopped the run: the
    folders the command created go (if still empty), one that existed before stays."""
    src = demo_rows(tmp_path / "rows.csv", "forty")
    out = tmp_path / "new" / "day2" / "scores.csv"
    res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(src), "--output", str(out)])
    assert res.exit_code == 2 and "rows.csv:3: field 'age'" in res.output, res.output
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    out = tmp_path / "kept" / "day2" / "scores.parquet"
    res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(src), "--output", str(out)])
    assert res.exit_code == 2 and list(tmp_path.glob("kept/*")) == []
    res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(src), "--output", str(out),
                                   "--on-bad-row", "skip"])
    assert res.exit_code == 0 and pq.read_table(out).num_rows == 1, res.output


@pytest.fixture(scope="module")
def headerless(tmp_path_factory) -> Path:
    """A bundle of a run on a CSV without header (the schema's `columns`, the label first)."""
    from rich.console import Console

    from dlf.api import train
    from dlf.data.preprocess import preprocess

    folder = tmp_path_factory.mktemp("headerless")
    fixtures = Path(__file__).parent / "fixtures" / "data"
    (folder / "train.csv").write_text("".join((fixtures / "generic_tiny.csv").read_text().splitlines(True)[1:]))
    (folder / "schema.yaml").write_text((fixtures / "generic_schema.yaml").read_text()
                                        + "header: false\ncolumns: [click, user, city, age, tags, ts]\n")
    preprocess("generic", [folder / "train.csv"], folder / "data", schema=folder / "schema.yaml")
    train({"model": {"name": "lr"}, "data": {"dataset": "processed", "path": str(folder / "data")},
           "train": {"epochs": 1, "monitor": "logloss", "progress": False, "tensorboard": False}},
          out=folder / "run", console=Console(quiet=True))
    return export_bundle(folder / "run", folder / "bundle")


@pytest.mark.parametrize("first", ['u3,"lyon, fr",,news,1700000000\n', "\n"], ids=["quoted-comma", "blank"])
def test_a_file_without_header_and_label_is_told_by_its_first_record(headerless, tmp_path, first):
    """A file without header and one column fewer than the schema's is a file to score (no label). Its columns were
    counted on the first line split at every comma: a quoted comma in it (or a blank first line, which is skipped)
    made it look labelled, and every row was 'expected 6 columns, got 5'."""
    src = tmp_path / "new.csv"
    src.write_text(first + "u1,nice,50,music;film,1700000060\n")
    out = tmp_path / "scores.csv"
    res = CliRunner().invoke(app, ["predict", str(headerless), "--input", str(src), "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert pcsv.read_csv(out).num_rows == (1 if first == "\n" else 2)


def test_bytes_that_are_not_utf8_in_a_row_are_that_rows_error_not_the_headers(bundle, tmp_path):
    """The header check decoded the first MiB of the file: a bad byte in any row in it was 'FILE:1: header is not
    valid utf-8', and --on-bad-row skip could not score the file at all; and predict, whose look at the header failed
    the same way, scored a line of separators only as a record."""
    src = tmp_path / "rows.csv"
    src.write_bytes(demo_rows(src, "50").read_bytes().replace(b"city0", b"city\xff") + b",,,,,,\n")
    out = tmp_path / "scores.csv"
    res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(src), "--output", str(out)])
    assert res.exit_code == 2 and "rows.csv:3:" in res.output and "header" not in res.output, res.output
    res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(src), "--output", str(out), "--id-column",
                                   "id", "--on-bad-row", "skip"])
    assert res.exit_code == 0 and "skipped 1 bad row(s); first: " in res.output, res.output
    assert pcsv.read_csv(out)["id"].to_pylist() == ["a"]
    src.write_bytes(b"id,c\xffty\n")
    res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(src), "--output", str(out)])
    assert res.exit_code == 2 and "rows.csv:1: header is not valid utf-8" in res.output, res.output



@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_bytes_that_are_not_utf8_in_a_column_not_read_are_no_bad_row(bundle, tmp_path, command):
    """Only the input columns (and the label, --id-column) are read: a Latin-1 comment column beside them made every
    row a bad row ("column 'note': bytes that are not valid utf-8"; with --on-bad-row skip 0 rows scored), where
    dlf preprocess reads such a file. Bad bytes in an input column stay a bad row."""
    src = tmp_path / "rows.csv"
    src.write_bytes(b"id,click,city,device,age,tags,site,visits,note\n"
                    b"a,1,city1,phone,34,t1;t3,s17,12,caf\xe9\n"
                    b"b,0,city0,tv,50,,s81,,na\xefve\n"
                    b",,,,,,,,\xe9\n")  # a value in no column read, but a value: scored as a record
    args = ["--output", str(tmp_path / "scores.csv")] if command == "predict" else []
    res = CliRunner().invoke(app, [command, str(bundle), "--input", str(src), *args])
    assert res.exit_code == (0 if command == "predict" else 2), res.output
    if command == "predict":
        assert pcsv.read_csv(tmp_path / "scores.csv").num_rows == 3
    else:  # the third row's label is missing, not its note's bytes
        assert "rows.csv:4: field 'click': expected label 0 or 1, got ''" in res.output, res.output
    src.write_bytes(src.read_bytes().replace(b"city0", b"city\xff"))
    res = CliRunner().invoke(app, [command, str(bundle), "--input", str(src), *args])
    assert res.exit_code == 2 and "rows.csv:3: column 'city': bytes that are not valid utf-8" in res.output, res.output


def test_a_parquet_file_read_as_csv_is_told_so(bundle, tmp_path):
    """A Parquet file named .csv (or given --format csv) was 'FILE:1: header is not valid utf-8'."""
    pq.write_table(pcsv.read_csv(demo_rows(tmp_path / "rows.csv", "50")), tmp_path / "rows.parquet")
    (tmp_path / "rows.parquet").rename(tmp_path / "rows.csv")
    for fmt in ([], ["--format", "tsv"]):
        res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(tmp_path / "rows.csv"), *fmt,
                                       "--output", str(tmp_path / "scores.csv")])
        assert res.exit_code == 2, res.output
        assert "rows.csv: a Parquet file, read as " in res.output and "pass --format parquet" in res.output
    res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(tmp_path / "rows.csv"), "--format",
                                   "parquet", "--output", str(tmp_path / "scores.csv")])
    assert res.exit_code == 0 and pcsv.read_csv(tmp_path / "scores.csv").num_rows == 2, res.output


def test_a_compressed_input_is_read_as_the_uncompressed_one(bundle, headerless, tmp_path):
    """A .gz input (read by the readers through Arrow's decompression) had its header and first record looked at as
    compressed bytes: a line of separators only was scored as a record, and a file without header and label taken
    for a labelled one (every row 'expected 6 columns, got 5')."""
    import gzip

    src = tmp_path / "rows.csv.gz"
    src.write_bytes(gzip.compress(demo_rows(tmp_path / "rows.csv", "50").read_bytes() + b",,,,,,\n"))
    out = tmp_path / "scores.csv"
    for fmt in (["--format", "csv"], []):  # the format from the name, through its compression suffix
        res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(src), *fmt, "--output", str(out)])
        assert res.exit_code == 0 and pcsv.read_csv(out).num_rows == 2, res.output
    src.write_bytes(gzip.compress(b"u3,lyon,,news,1700000000\nu1,nice,50,music;film,1700000060\n"))
    res = CliRunner().invoke(app, ["predict", str(headerless), "--input", str(src), "--format", "csv", "--output",
                                   str(out)])
    assert res.exit_code == 0 and pcsv.read_csv(out).num_rows == 2, res.output
    src.write_bytes(b"u3,lyon,,news,1700000000\n")  # not gzip: read_delimited says so
    res = CliRunner().invoke(app, ["predict", str(headerless), "--input", str(src), "--format", "csv", "--output",
                                   str(out)])
    assert res.exit_code == 2 and "rows.csv.gz: cannot read: " in res.output, res.output


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_header_naming_the_schemas_columns_is_not_scored_as_a_record(headerless, tmp_path, command):
    """Training files without header (the schema's `columns`), the file to score with one, as an export of the same
    table writes it: its first line was read as a record ('age': expected a number, got 'age'; a model of categorical
    fields alone scored it, every value unseen, as one more output row)."""
    src = tmp_path / "new.csv"
    names = "click,user,city,age,tags,ts" if command == "evaluate" else "user,city,age,tags,ts"
    row = "u1,nice,50,music;film,1700000060"
    src.write_text(f"{names}\n{'1,' if command == 'evaluate' else ''}{row}\n")
    args = ["--output", str(tmp_path / "scores.csv")] if command == "predict" else []
    res = CliRunner().invoke(app, [command, str(headerless), "--input", str(src), *args])
    assert res.exit_code == 0 and "1 rows" in res.output, res.output


def bundle_of(folder: Path, src: Path, schema: str) -> Path:
    """The bundle of one epoch of LR on SRC, preprocessed with the schema text SCHEMA."""
    from rich.console import Console

    from dlf.api import train
    from dlf.data.preprocess import preprocess

    (folder / "schema.yaml").write_text(schema)
    preprocess("generic", [src], folder / "data", schema=folder / "schema.yaml")
    train({"model": {"name": "lr"}, "data": {"dataset": "processed", "path": str(folder / "data")},
           "train": {"epochs": 1, "monitor": "logloss", "progress": False, "tensorboard": False}},
          out=folder / "run", console=Console(quiet=True))
    return export_bundle(folder / "run", folder / "bundle")


def test_a_schemas_delimiter_under_format_auto_splits_the_file_to_score(tmp_path):
    """`format: auto` with `delimiter: ";"`: dlf preprocess split the .csv training file at ';', dlf predict and
    evaluate at ',' (the delimiter was the schema's only when its format was the file's), so the training file itself
    could not be scored: 'header has no column(s) ['city', 'price']; it has ['click;city;price']'."""
    src = tmp_path / "log.csv"
    src.write_text("click;city;price\n" + "".join(f"{i % 2};{'a,b' if i % 3 else 'c'};{i % 5}.5\n" for i in range(40)))
    bundle = bundle_of(tmp_path, src, 'format: auto\ndelimiter: ";"\nlabel: click\ncategorical: [city]\n'
                                      "numeric: [price]\n")
    res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(src), "--output", str(tmp_path / "s.csv")])
    assert res.exit_code == 0 and "40 rows scored" in res.output, res.output
    res = CliRunner().invoke(app, ["evaluate", str(bundle), "--input", str(src)])
    assert res.exit_code == 0 and "40 rows" in res.output, res.output


def test_a_quoted_tsv_named_tsv_is_read_with_the_training_files_quoting(tmp_path):
    """`format: csv` with `delimiter: "\\t"` (a TSV with CSV quoting, as pandas and the csv module write one): a
    file named .tsv was read as a TSV without quoting, so a quoted value kept its quotes (an unseen category: a silent
    other score) and a quoted tab split the row ('expected 2 columns separated by '\\t', got 3')."""
    src = tmp_path / "log.tsv"
    quoted = ['0\t"a\tb"', '1\t"say ""hi"""']  # the values 'a<TAB>b' and 'say "hi"'
    rows = [quoted[i % 2] if i % 3 == 0 else f"{i % 2}\tc" for i in range(40)]
    src.write_text("click\tcity\n" + "".join(row + "\n" for row in rows))
    bundle = bundle_of(tmp_path, src, 'format: csv\ndelimiter: "\\t"\nlabel: click\ncategorical: [city]\n')
    scores = {}
    for name in ("log.tsv", "same.csv"):
        (tmp_path / name).write_bytes(src.read_bytes())
        out = tmp_path / f"{name}.scores.csv"
        res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(tmp_path / name), "--output", str(out)])
        assert res.exit_code == 0, res.output
        scores[name] = pcsv.read_csv(out)["probability"].to_pylist()
    assert scores["log.tsv"] == scores["same.csv"] and len(set(scores["log.tsv"])) == 3
