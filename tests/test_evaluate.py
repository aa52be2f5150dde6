"""`dlf evaluate BUNDLE --input FILE`: on the run's own test rows it gives the run's test metrics (raw and ids
bundles), gAUC groups rows across chunks, bad labels are bad rows, and the CLI prints and writes the metrics."""
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dlf.cli import app
from dlf.data.schema import DataError
from dlf.serve.bundle import export_bundle, load_bundle
from dlf.serve.demo import build_demo_run
from dlf.serve.evaluate import evaluate_file
from dlf.serve.predict import predict_file
from dlf.train.metrics import group_auc

METRICS = ("auc", "logloss", "calibration")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    paths = build_demo_run(folder, rows=2000, test_rows=400)
    paths["bundle"] = export_bundle(paths["run"], folder / "bundle", format="torch")
    paths["test_metrics"] = json.loads((paths["run"] / "metrics.json").read_text())["test"]
    return paths


def test_raw_bundle_on_its_test_file_gives_the_runs_test_metrics(demo):
    b = load_bundle(demo["bundle"])
    res = evaluate_file(b, demo["test_csv"], block_bytes=2048)  # many chunks
    labels = pcsv.read_csv(demo["test_csv"])["click"].to_numpy()
    assert res.rows == 400 and res.positives == int(labels.sum()) and res.group_column is None
    assert set(res.metrics) == set(METRICS)
    for k in METRICS:
        assert res.metrics[k] == pytest.approx(demo["test_metrics"][k], abs=1e-6), k
    # the same rows as Parquet
    pq.write_table(pcsv.read_csv(demo["test_csv"], convert_options=pcsv.ConvertOptions(
        column_types={c: pa.string() for c in ("id", "click", "city", "device", "age", "tags", "site", "visits")})),
        demo["test_csv"].with_suffix(".parquet"))
    par = evaluate_file(b, demo["test_csv"].with_suffix(".parquet"))
    assert par.rows == 400 and par.metrics == pytest.approx(res.metrics, abs=1e-6)


def test_group_auc_groups_rows_across_chunks(demo, tmp_path):
    b = load_bundle(demo["bundle"])
    res = evaluate_file(b, demo["test_csv"], group_column="city", block_bytes=2048)
    table = pcsv.read_csv(demo["test_csv"], convert_options=pcsv.ConvertOptions(strings_can_be_null=False,
                                                                                column_types={"city": pa.string()}))
    probs = pq.read_table(predict_file(b, demo["test_csv"], tmp_path / "p.parquet").output)["probability"].to_numpy()
    want = group_auc(table["click"].to_numpy(), probs, np.asarray(table["city"].to_pylist()))
    assert res.group_column == "city" and res.metrics["gauc"] == pytest.approx(want, abs=1e-6)
    assert res.metrics["gauc"] != pytest.approx(res.metrics["auc"], abs=1e-4)  # not the ungrouped AUC
    with pytest.raises(DataError, match="label column"):
        evaluate_file(b, demo["test_csv"], group_column="click")


def test_bad_and_missing_labels(demo, tmp_path):
    b = load_bundle(demo["bundle"])
    lines = demo["test_csv"].read_text().splitlines()
    cells = lines[5].split(",")
    cells[1] = "yes"
    lines[5] = ",".join(cells)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bad\.csv:6: field 'click': expected label 0 or 1, got 'yes'"):
        evaluate_file(b, bad)
    res = evaluate_file(b, bad, on_bad_row="skip")
    assert res.rows == 399 and res.bad_rows["count"] == 1
    # a file to score (no label column) cannot be evaluated
    unlabelled = tmp_path / "new.csv"
    pcsv.write_csv(pcsv.read_csv(demo["test_csv"]).drop_columns(["click"]), unlabelled)
    with pytest.raises(DataError, match=r"no column\(s\) \['click'\]"):
        evaluate_file(b, unlabelled)
    header_only = tmp_path / "empty.csv"
    header_only.write_text(lines[0] + "\n")
    with pytest.raises(DataError, match="no rows to evaluate"):
        evaluate_file(b, header_only)


def test_ids_bundle_on_its_test_split_gives_the_runs_test_metrics(tmp_path):
    """A synthetic run's bundle takes encoded ids: its test split written as a CSV of ids evaluates to the run's
    test metrics."""
    from rich.console import Console

    from dlf.api import load_data, train
    from dlf.config import load_config

    cfg = {"model": {"name": "lr"}, "data": {"synthetic": {"rows": 600, "categorical": 3, "numeric": 2,
                                                             "max_cardinality": 20, "pairs": 2, "triples": 1,
                                                             "seed": 3}},
           "train": {"epochs": 1, "batch_size": 64, "progress": False, "tensorboard": False}}
    train(cfg, out=tmp_path / "run", console=Console(quiet=True))
    b = load_bundle(export_bundle(tmp_path / "run", tmp_path / "bundle", format="torch"))
    assert b.mode == "ids"
    test = load_data(load_config(tmp_path / "run" / "config.yaml")).test
    fm = b.feature_map
    cols = {f.name: test.categorical[:, j].astype(str) for j, f in enumerate(fm.of_kind("categorical"))}
    cols |= {f.name: test.numeric[:, j].astype(str) for j, f in enumerate(fm.of_kind("numeric"))}
    cols |= {f.name: ["|".join(map(str, r)) for r in test.multi[:, j]] for j, f in enumerate(fm.of_kind("multi"))}
    cols[fm.label] = test.label.astype(int).astype(str)
    pcsv.write_csv(pa.table({k: pa.array(list(v), pa.string()) for k, v in cols.items()}), tmp_path / "test.csv")
    res = evaluate_file(b, tmp_path / "test.csv")
    want = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert res.rows == len(test.label)
    for k in METRICS:
        assert res.metrics[k] == pytest.approx(want[k], abs=1e-6), k
    # gAUC by an input column: its text is the group
    c = fm.of_kind("categorical")[0].name
    probs = pq.read_table(predict_file(b, tmp_path / "test.csv", tmp_path / "p.parquet").output)["probability"]
    grouped = evaluate_file(b, tmp_path / "test.csv", group_column=c, block_bytes=1024)
    assert grouped.metrics["gauc"] == pytest.approx(group_auc(test.label, probs.to_numpy(), cols[c]), abs=1e-6)


def test_cli_prints_and_writes_the_metrics(demo, tmp_path):
    out = tmp_path / "m.json"
    r = CliRunner().invoke(app, ["evaluate", str(demo["bundle"]), "--input", str(demo["test_csv"]), "--json",
                                 str(out)])
    assert r.exit_code == 0, r.output
    assert "400 rows" in r.stdout and f"AUC {demo['test_metrics']['auc']:.4f}" in r.stdout
    saved = json.loads(out.read_text())
    assert saved["rows"] == 400 and saved["metrics"]["auc"] == pytest.approx(demo["test_metrics"]["auc"], abs=1e-6)
    # one class: AUC is undefined, shown as n/a and saved as null (JSON has no NaN)
    lines = demo["test_csv"].read_text().splitlines()
    ones = [l for l in lines[1:] if l.split(",")[1] == "1"]
    (tmp_path / "ones.csv").write_text("\n".join([lines[0]] + ones) + "\n")
    r = CliRunner().invoke(app, ["evaluate", str(demo["bundle"]), "-i", str(tmp_path / "ones.csv"), "--json",
                                 str(out)])
    assert r.exit_code == 0, r.output
    assert "AUC n/a" in r.stdout and json.loads(out.read_text())["metrics"]["auc"] is None
    r = CliRunner().invoke(app, ["evaluate", str(demo["bundle"]), "-i", str(tmp_path / "missing.csv")])
    assert r.exit_code == 2 and "missing.csv" in r.output and "Traceback" not in r.output


def test_json_path_is_checked_before_scoring(demo, tmp_path):
    """--json's folder is created as predict's --output folder is (it failed only after the whole file was scored),
    and --json naming the input file is refused (it overwrote the labelled data with the metrics)."""
    args = ["evaluate", str(demo["bundle"]), "-i"]
    out = tmp_path / "new" / "day2" / "m.json"
    r = CliRunner().invoke(app, args + [str(demo["test_csv"]), "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["rows"] == 400
    data = tmp_path / "data.csv"
    data.write_text(demo["test_csv"].read_text())
    r = CliRunner().invoke(app, args + [str(data), "--json", str(data)])
    assert r.exit_code == 2 and "--json must not be the input file" in r.output, r.output
    assert data.read_text() == demo["test_csv"].read_text()
    r = CliRunner().invoke(app, args + [str(tmp_path / "typo.csv"), "--json", str(tmp_path / "typo" / "m.json")])
    assert r.exit_code == 2 and "typo.csv: no such file" in r.output
    assert not (tmp_path / "typo").exists()  # a mistyped --input or bundle leaves no empty folder behind
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "nobundle"), "-i", str(data), "--json",
                                 str(tmp_path / "typo" / "m.json")])
    assert r.exit_code == 2 and "nobundle: no such bundle directory" in r.output and not (tmp_path / "typo").exists()
    r = CliRunner().invoke(app, args + [str(data), "--precision", "fp16", "--json", str(tmp_path / "typo" / "m.json")])
    assert r.exit_code == 2 and "--precision must be fp32 or bf16" in r.output and not (tmp_path / "typo").exists()


def test_a_failed_evaluation_leaves_no_new_json_folder_behind(demo, tmp_path):
    """--json's folder is created before scoring; a bad row (or any failure) then left it behind, empty: the folders
    the command created go (if still empty), one that existed before stays."""
    lines = demo["test_csv"].read_text().splitlines()
    cells = lines[3].split(",")
    cells[1] = "yes"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines[:3] + [",".join(cells)] + lines[4:]) + "\n")
    args = ["evaluate", str(demo["bundle"]), "-i", str(bad), "--json"]
    r = CliRunner().invoke(app, args + [str(tmp_path / "new" / "day2" / "m.json")])
    assert r.exit_code == 2 and "bad.csv:4: field 'click'" in r.output, r.output
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    r = CliRunner().invoke(app, args + [str(tmp_path / "kept" / "day2" / "m.json")])
    assert r.exit_code == 2 and list(tmp_path.glob("kept/*")) == []
    r = CliRunner().invoke(app, args + [str(tmp_path / "kept" / "day2" / "m.json"), "--on-bad-row", "skip"])
    assert r.exit_code == 0 and json.loads((tmp_path / "kept" / "day2" / "m.json").read_text())["rows"] == 399


def test_json_into_a_fifo_is_written_in_place(demo, tmp_path):
    """--json /dev/stdout (a link to the pipe) or a FIFO: the metrics go to the reader; renaming a temporary file over
    it replaced the FIFO (as root, even /dev/null or /dev/stdout) with a regular file and the reader got nothing."""
    import os
    import stat

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so that the writer's open does not block
    try:
        r = CliRunner().invoke(app, ["evaluate", str(demo["bundle"]), "-i", str(demo["test_csv"]), "--json",
                                     str(fifo)])
        assert r.exit_code == 0, r.output
        assert stat.S_ISFIFO(fifo.stat().st_mode)
        assert json.loads(os.read(reader, 1 << 16))["rows"] == 400
    finally:
        os.close(reader)


def test_ctrl_c_and_sigterm_stop_with_one_line(demo, monkeypatch):
    """Ctrl-C was typer's silent exit 130 and `kill` (SIGTERM) a silent death by the signal: both now say so in one
    line (exit 130 / 143)."""
    import os
    import signal

    import dlf.serve.evaluate

    args = ["evaluate", str(demo["bundle"]), "-i", str(demo["test_csv"])]

    def ctrl_c(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dlf.serve.evaluate, "evaluate_file", ctrl_c)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 130 and r.output.strip() == "interrupted: no metrics were written", r.output
    monkeypatch.setattr(dlf.serve.evaluate, "evaluate_file", lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM))
    # without the command's own handler the test's one fails the test instead of ending pytest
    previous = signal.signal(signal.SIGTERM, lambda *_: pytest.fail("SIGTERM was not handled"))
    try:
        r = CliRunner().invoke(app, args)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert r.exit_code == 143 and r.output.strip() == "interrupted: no metrics were written", r.output
    # the command's handler ends with it: a SIGTERM to the process that ran it (pytest here) raised Terminated after
    handler = signal.getsignal(signal.SIGTERM)
    monkeypatch.undo()
    assert CliRunner().invoke(app, args).exit_code == 0 and signal.getsignal(signal.SIGTERM) is handler


FIXTURES = Path(__file__).parent / "fixtures" / "data"


def train_lr(folder: Path) -> None:
    """One epoch of LR on FOLDER/data (a processed dataset), the run in FOLDER/run."""
    from rich.console import Console

    from dlf.api import train
    train({"model": {"name": "lr"}, "data": {"dataset": "processed", "path": str(folder / "data")},
           "train": {"epochs": 1, "batch_size": 8, "monitor": "logloss", "progress": False, "tensorboard": False}},
          out=folder / "run", console=Console(quiet=True))


@pytest.mark.parametrize("preset,source,header,schema", [
    ("criteo", "criteo_tiny.txt", False, None),  # no header: the label is the first of the schema's columns
    ("kdd12", "kdd12_tiny/training.txt", False, None),  # the label is derived from a click count
    ("avazu", "avazu_tiny.csv", True, None),  # weekday and weekend are derived from the hour
    ("generic", "generic_tiny.csv", True, "pm1"),  # labels -1/1, and gAUC by the schema's group column
])
def test_preset_bundle_on_its_test_file_gives_the_runs_test_metrics(preset, source, header, schema, tmp_path):
    """A run preprocessed with its test split given as a file: evaluating that file with the run's bundle gives the
    run's test metrics."""
    from dlf.data.preprocess import preprocess

    lines = (FIXTURES / source).read_text().splitlines(keepends=True)
    head, body = (lines[:1], lines[1:]) if header else ([], lines)
    options = {"min_count": "1"}
    if schema == "pm1":  # the fixture's 0/1 labels as -1/1
        body = [("-1" + line[1:]) if line.startswith("0,") else line for line in body]
        schema = tmp_path / "schema.yaml"
        schema.write_text((FIXTURES / "generic_schema.yaml").read_text() + "label_values: pm1\n")
        options = {}
    suffix = (FIXTURES / source).suffix
    train_file, test_file = tmp_path / f"training{suffix}", tmp_path / f"test{suffix}"
    train_file.write_text("".join(head + body[:-8]))
    test_file.write_text("".join(head + body[-8:]))
    preprocess(preset, [f"train={train_file}", f"test={test_file}"], tmp_path / "data", schema=schema,
               options=options)
    train_lr(tmp_path)
    want = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    res = evaluate_file(load_bundle(export_bundle(tmp_path / "run", tmp_path / "bundle")), test_file)
    assert res.rows == 8 and set(res.metrics) == set(METRICS) | ({"gauc"} if preset == "generic" else set())
    assert np.isfinite(res.metrics["auc"])  # both classes among the 8 test rows
    for k in res.metrics:
        assert res.metrics[k] == pytest.approx(want[k], abs=1e-6, nan_ok=True), k


def test_a_file_without_the_training_group_column_evaluates_with_an_empty_group_column(tmp_path):
    """The training data's group column is the default for gAUC; when it is no model input (here `ts`) a file without
    it could not be evaluated at all (--group-column '' fell back to it): '' now means no gAUC."""
    from rich.console import Console

    from dlf.api import train
    from dlf.data.preprocess import preprocess

    schema = tmp_path / "schema.yaml"
    schema.write_text((FIXTURES / "generic_schema.yaml").read_text().replace("group: user", "group: ts"))
    preprocess("generic", [FIXTURES / "generic_tiny.csv"], tmp_path / "data", schema=schema)
    train({"model": {"name": "lr"}, "data": {"dataset": "processed", "path": str(tmp_path / "data")},
           "train": {"epochs": 1, "monitor": "logloss", "progress": False, "tensorboard": False}},
          out=tmp_path / "run", console=Console(quiet=True))
    bundle = export_bundle(tmp_path / "run", tmp_path / "bundle")
    rows = tmp_path / "no_ts.csv"
    pcsv.write_csv(pcsv.read_csv(FIXTURES / "generic_tiny.csv").drop_columns(["ts"]), rows)
    with pytest.raises(DataError, match=r"no column\(s\) \['ts'\].* --group-column '' evaluates without gAUC"):
        evaluate_file(load_bundle(bundle), rows)
    with pytest.raises(DataError, match=r"no column\(s\) \['ts'\]; it has \[[^]]*\]$"):  # asked for: no hint
        evaluate_file(load_bundle(bundle), rows, group_column="ts")
    r = CliRunner().invoke(app, ["evaluate", str(bundle), "-i", str(rows), "--group-column", ""])
    assert r.exit_code == 0 and "30 rows" in r.stdout and "gAUC" not in r.stdout, r.output


def test_evaluate_tunes_the_allocator_as_predict_does(demo, monkeypatch):
    """Scoring allocates and frees the same large activations every sub-batch: evaluate, as predict, has glibc keep
    freed memory for reuse (it scored with glibc's defaults, each sub-batch's activations a fresh mmap)."""
    import dlf._runtime

    calls = []
    monkeypatch.setattr(dlf._runtime, "reuse_freed_memory", lambda: calls.append(1))
    evaluate_file(load_bundle(demo["bundle"]), demo["test_csv"])
    assert calls


def test_evaluate_restarts_on_tcmalloc_as_predict_does(monkeypatch):
    """`dlf evaluate` runs the model over a whole file as `dlf predict` does: it restarts on TCMalloc when installed
    too (main() left it out of the commands that run models)."""
    import sys

    import dlf.cli

    calls = []
    monkeypatch.setattr(dlf.cli, "restart_with_tcmalloc", lambda: calls.append(1))
    monkeypatch.setattr(sys, "argv", ["dlf", "evaluate", "--help"])
    with pytest.raises(SystemExit):
        dlf.cli.main()
    assert calls


def test_gauc_groups_by_the_derived_group_value_as_training_does(tmp_path):
    """kdd12 turns user 0 (unknown) into a missing user: training's gAUC groups users '0' and '' together, and so must
    evaluate (it grouped by the raw text, two groups, so that on the run's own test file its gAUC differed)."""
    import dataclasses

    from dlf.data.presets import kdd12_schema
    from dlf.data.preprocess import preprocess

    lines = (FIXTURES / "kdd12_tiny" / "training.txt").read_text().splitlines(keepends=True)
    test = []
    for line in lines[-8:]:  # the positives' user 0, the negatives' user missing: one group with both classes
        cells = line.rstrip("\n").split("\t")
        cells[-1] = "0" if cells[0] != "0" else ""
        test.append("\t".join(cells) + "\n")
    (tmp_path / "training.txt").write_text("".join(lines[:-8]))
    (tmp_path / "test.txt").write_text("".join(test))
    schema = dataclasses.replace(kdd12_schema(min_count=1, profile=False), group="user_id")
    preprocess("kdd12", [f"train={tmp_path / 'training.txt'}", f"test={tmp_path / 'test.txt'}"], tmp_path / "data",
               schema=schema)
    train_lr(tmp_path)
    want = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert np.isfinite(want["gauc"])  # the one group has both classes
    bundle = load_bundle(export_bundle(tmp_path / "run", tmp_path / "bundle"))
    res = evaluate_file(bundle, tmp_path / "test.txt", block_bytes=1024)
    assert res.rows == 8 and res.group_column == "user_id" and set(res.metrics) == set(METRICS) | {"gauc"}
    for k in res.metrics:
        assert res.metrics[k] == pytest.approx(want[k], abs=1e-6), k
    # without its click column, the file is one to score (KDD Cup's test.txt): one clear line, as for Criteo
    (tmp_path / "new.txt").write_text("".join(line.split("\t", 1)[1] for line in test))
    with pytest.raises(DataError, match=r"new.txt: no label column 'click': its 11 columns are the inputs alone"):
        evaluate_file(bundle, tmp_path / "new.txt")


@pytest.fixture(scope="module")
def criteo(tmp_path_factory):
    """A bundle of a run on the Criteo fixture (TSV without header, the label first)."""
    from dlf.data.preprocess import preprocess

    folder = tmp_path_factory.mktemp("criteo")
    preprocess("criteo", [FIXTURES / "criteo_tiny.txt"], folder / "data", options={"min_count": "1"})
    train_lr(folder)
    return export_bundle(folder / "run", folder / "bundle")


def test_a_file_to_score_without_its_label_column_is_one_clear_line(criteo, tmp_path):
    """A Criteo file without the label (the 39 columns `dlf predict` scores) got 'the columns [...39 names...] do not
    include ['label']': now one line naming the file and saying it has no label column."""
    unlabelled = tmp_path / "new.txt"
    unlabelled.write_text("".join(line.split("\t", 1)[1] for line in
                                  (FIXTURES / "criteo_tiny.txt").read_text().splitlines(keepends=True)))
    msg = (f"{unlabelled}: no label column 'label': its 39 columns are the inputs alone, as in a file to score "
           "(dlf predict); dlf evaluate needs labelled rows, as in training")
    with pytest.raises(DataError, match=re.escape(msg)):
        evaluate_file(load_bundle(criteo), unlabelled)
    r = CliRunner().invoke(app, ["evaluate", str(criteo), "-i", str(unlabelled)])
    assert r.exit_code == 2 and msg in " ".join(r.output.split()), r.output


def test_a_group_column_the_preset_derives_is_not_read_from_the_file(tmp_path):
    """A run whose group is a column the preset derives (avazu's weekday, from the hour): evaluate read it from the
    file, which has no such column ('header has no column(s) ['weekday']'); it now groups by the derived value, as
    training does."""
    import dataclasses

    from dlf.data.presets import avazu_schema
    from dlf.data.preprocess import preprocess

    lines = (FIXTURES / "avazu_tiny.csv").read_text().splitlines(keepends=True)
    (tmp_path / "train.csv").write_text("".join(lines[:-8]))
    (tmp_path / "test.csv").write_text("".join(lines[:1] + lines[-8:]))
    schema = dataclasses.replace(avazu_schema(min_count=1), group="weekday")
    preprocess("avazu", [f"train={tmp_path / 'train.csv'}", f"test={tmp_path / 'test.csv'}"], tmp_path / "data",
               schema=schema)
    train_lr(tmp_path)
    want = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    res = evaluate_file(load_bundle(export_bundle(tmp_path / "run", tmp_path / "bundle")), tmp_path / "test.csv")
    assert res.rows == 8 and res.group_column == "weekday" and set(res.metrics) == set(METRICS) | {"gauc"}
    for k in res.metrics:
        assert res.metrics[k] == pytest.approx(want[k], abs=1e-6, nan_ok=True), k


def test_a_file_without_a_group_column_that_is_a_model_input_is_not_told_to_drop_gauc(tmp_path):
    """The training group column `user` is also a model input: a file without it cannot be scored at all, so the
    error must not suggest --group-column '' (which then failed on the same missing column)."""
    from dlf.data.preprocess import preprocess

    preprocess("generic", [FIXTURES / "generic_tiny.csv"], tmp_path / "data", schema=FIXTURES / "generic_schema.yaml")
    train_lr(tmp_path)
    bundle = load_bundle(export_bundle(tmp_path / "run", tmp_path / "bundle"))
    rows = tmp_path / "no_user.csv"
    pcsv.write_csv(pcsv.read_csv(FIXTURES / "generic_tiny.csv").drop_columns(["user"]), rows)
    with pytest.raises(DataError, match=r"no column\(s\) \['user'\]") as err:
        evaluate_file(bundle, rows)
    assert "--group-column" not in str(err.value)
