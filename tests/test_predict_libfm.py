"""`dlf predict` / `dlf evaluate` on libFM lines, for a model trained on them (preset libfm or frappe): the lines are
split into fields as preprocessing split them, so scoring the run's test file gives the run's test metrics, and the
probabilities are those of the same rows given one column per field."""
import gzip
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dlf.cli import app
from dlf.data.preprocess import preprocess
from dlf.data.presets import FRAPPE_FIELDS, IPINYOU_FIELDS
from dlf.data.schema import DataError
from dlf.serve.bundle import BundleError, export_bundle, load_bundle
from dlf.serve.demo import build_demo_run
from dlf.serve.evaluate import evaluate_file
from dlf.serve.predict import predict_file
from conftest import SHARED
from test_evaluate import METRICS, train_lr

FIELDS = {"fields": "user:20,item:30,ctx:3"}  # indices 0-19, 20-49, 50-52
FRAPPE = SHARED / "data" / "frappe"


def libfm_lines(n: int, seed: int, labels=("-1", "1")) -> str:
    """n lines `label user:1 item:1 ctx:1`, users 0-9 clicking more often."""
    rng = np.random.default_rng(seed)
    user, item, ctx = rng.integers(0, 20, n), rng.integers(0, 30, n), rng.integers(0, 3, n)
    click = (rng.random(n) < np.where(user < 10, 0.7, 0.2)).astype(int)
    return "".join(f"{labels[c]} {u}:1 {20 + i}:1 {50 + x}:1\n" for c, u, i, x in zip(click, user, item, ctx))


def libfm_run(folder: Path, options: dict, labels=("-1", "1")) -> tuple[Path, Path]:
    """A run preprocessed from generated libFM files, its test split given as a file: (its bundle, the test file)."""
    train_file, test_file = folder / "train.libfm", folder / "test.libfm"
    train_file.write_text(libfm_lines(300, 0, labels))
    test_file.write_text(libfm_lines(80, 1, labels))
    preprocess("libfm", [f"train={train_file}", f"test={test_file}"], folder / "data", options=options)
    train_lr(folder)
    return export_bundle(folder / "run", folder / "bundle"), test_file


def per_field_csv(lines: Path, out: Path, names: list[str]) -> Path:
    """The lines as one column per field (its feature index), with a header: the input dlf predict read before."""
    rows = [[tok.split(":")[0] for tok in line.split()[1:]] for line in lines.read_text().splitlines()]
    out.write_text(",".join(names) + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return libfm_run(tmp_path_factory.mktemp("libfm"), FIELDS)


@pytest.mark.parametrize("labels", ["pm1", "binary"])
def test_evaluate_on_the_runs_test_file_gives_its_test_metrics(labels, tmp_path):
    options, values = (FIELDS, ("-1", "1")) if labels == "pm1" else ({**FIELDS, "labels": "binary"}, ("0", "1"))
    bundle, test_file = libfm_run(tmp_path, options, values)
    want = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    res = evaluate_file(load_bundle(bundle), test_file)  # format from the suffix
    positives = sum(line.split()[0] == values[1] for line in test_file.read_text().splitlines())
    assert res.rows == 80 and res.positives == positives and set(res.metrics) == set(METRICS)
    for k in METRICS:
        assert res.metrics[k] == pytest.approx(want[k], abs=1e-6), k
    r = CliRunner().invoke(app, ["evaluate", str(bundle), "--input", str(test_file)])
    assert r.exit_code == 0 and f"{test_file}: 80 rows" in r.stdout, r.output


def test_predict_scores_each_line_as_its_per_field_columns(run, tmp_path):
    bundle, test_file = run
    runner = CliRunner()
    want = tmp_path / "columns.csv"
    src = per_field_csv(test_file, tmp_path / "fields.csv", ["user", "item", "ctx"])
    assert runner.invoke(app, ["predict", str(bundle), "-i", str(src), "-o", str(want), "--header"]).exit_code == 0
    want = pcsv.read_csv(want)["probability"].to_numpy()
    assert len(want) == 80 and np.ptp(want) > 0.01
    packed = tmp_path / "test.libfm.gz"  # through a compression suffix too, as CSV input
    packed.write_bytes(gzip.compress(test_file.read_bytes()))
    plain = tmp_path / "test.txt"  # any name, with --format libfm
    plain.write_bytes(test_file.read_bytes())
    for src, more in ((test_file, []), (packed, []), (plain, ["--format", "libfm"])):
        out = tmp_path / "scores.csv"
        r = runner.invoke(app, ["predict", str(bundle), "-i", str(src), "-o", str(out), *more])
        assert r.exit_code == 0 and f"wrote {out}: 80 rows scored" in r.output, r.output
        np.testing.assert_array_equal(pcsv.read_csv(out)["probability"].to_numpy(), want)
    r = runner.invoke(app, ["predict", str(bundle), "-i", str(plain), "-o", str(out)])  # read as TSV: say the option
    assert r.exit_code == 2 and "or --format libfm for libFM lines" in r.output, r.output


def test_bad_lines_are_bad_rows_at_their_line(run, tmp_path):
    bundle, _ = run
    src = tmp_path / "new.libfm"
    src.write_text("1 2:1 21:1 50:1\n"
                   "1 2:1 21:7 50:1\n"  # a one-hot value other than 0/1
                   "-1 2:1 99:1\n"  # an index in no field
                   "-1 2:1 3:1 50:1\n"  # user twice
                   "2:1 21:1 50:1\n"  # no label: its first feature would be lost
                   "-1 5:1 30:1 51:1\n")
    runner = CliRunner()
    out = tmp_path / "scores.csv"
    r = runner.invoke(app, ["predict", str(bundle), "-i", str(src), "-o", str(out)])
    assert r.exit_code == 2 and r.output.strip() == (f"error: {src}:2: feature '21:7': field 'item' is one-hot: "
                                                     "expected value 1, or 0 for an absent feature"), r.output
    assert not out.exists()
    r = runner.invoke(app, ["predict", str(bundle), "-i", str(src), "-o", str(out), "--on-bad-row", "skip"])
    assert r.exit_code == 0 and "2 rows scored" in r.output and "skipped 4 bad row(s)" in r.output, r.output
    res = predict_file(load_bundle(bundle), src, tmp_path / "s.parquet", on_bad_row="skip")
    assert [e.split(": ", 1)[0] for e in res.bad_rows["examples"]] == [f"{src}:{n}" for n in (2, 3, 4, 5)]
    assert "field 'user' appears more than once" in res.bad_rows["examples"][2]
    assert "expected 'label index:value ...' (a label first" in res.bad_rows["examples"][3]
    assert len(pq.read_table(tmp_path / "s.parquet")) == 2
    r = runner.invoke(app, ["evaluate", str(bundle), "-i", str(src), "--on-bad-row", "skip"])
    assert r.exit_code == 0 and "2 rows (50.0% positive)" in r.stdout, r.output


def test_what_cannot_read_libfm_lines_is_one_clear_line(run, tmp_path):
    bundle, test_file = run
    runner = CliRunner()
    out = str(tmp_path / "s.csv")

    def error(*args):
        r = runner.invoke(app, list(args))
        assert r.exit_code == 2 and r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1, \
            r.output
        return r.output

    assert "libFM lines have no columns, so no --id-column: the output has one row per line, in input order" in \
        error("predict", str(bundle), "-i", str(test_file), "-o", out, "--id-column", "user")
    assert "--header/--no-header and --columns are for CSV/TSV input; libFM lines have no columns" in \
        error("predict", str(bundle), "-i", str(test_file), "-o", out, "--columns", "user,item,ctx")
    assert re.search(r"libFM lines have no column\(s\) \['site'\]: they hold the label and the fields",
                     error("evaluate", str(bundle), "-i", str(test_file), "--group-column", "site"))
    # a field as group column is read from the lines
    r = runner.invoke(app, ["evaluate", str(bundle), "-i", str(test_file), "--group-column", "user"])
    assert r.exit_code == 0 and "(gAUC by user)" in r.stdout, r.output

    # a model of another preset
    paths = build_demo_run(tmp_path / "demo", rows=200, test_rows=20, epochs=1)
    demo = export_bundle(paths["run"], tmp_path / "demo_bundle")
    for more in ([], ["--format", "libfm"]):
        assert f"{test_file}: libFM lines are read for a model trained on libFM files (preset libfm or frappe, or " \
               "ipinyou's yzx files); this bundle's preset is generic" in \
               error("predict", str(demo), "-i", str(test_file), "-o", out, *more)


def indexed_run(tmp_path: Path) -> tuple[Path, Path]:
    """libfm_run's data with the fields given by a feature-index file whose indices interleave the fields (as
    make-ipinyou-data writes them): (its bundle, the test file)."""
    index = tmp_path / "featindex.txt"
    owner = ["user"] * 20 + ["item"] * 30 + ["ctx"] * 3
    order = np.random.default_rng(0).permutation(53)  # index i -> the field of entry order[i]
    index.write_text("".join(f"{owner[e]}:{e} {i}\n" for i, e in enumerate(order)))
    position = np.argsort(order)  # entry e (libfm_lines' index e) has index position[e]
    folder = tmp_path / "indexed"
    folder.mkdir()
    train_file, test_file = folder / "train.libfm", folder / "test.libfm"
    for path, n, seed in ((train_file, 300, 0), (test_file, 80, 1)):
        path.write_text("".join(line.split()[0] + "".join(f" {position[int(t.split(':')[0])]}:1" for t in
                                                          line.split()[1:]) + "\n"
                                for line in libfm_lines(n, seed).splitlines()))
    preprocess("libfm", [f"train={train_file}", f"test={test_file}"], folder / "data",
               options={"feature_index": str(index)})
    train_lr(folder)
    return export_bundle(folder / "run", folder / "bundle"), test_file


def test_fields_from_a_feature_index_file(tmp_path):
    """--option feature_index=FILE: no field has an index range, so the bundle keeps preprocessing's layout (which
    field owns each index). Before, scoring libFM lines was refused. The lines give the run's test metrics and the
    probabilities of one column per field."""
    path, test_file = indexed_run(tmp_path)
    bundle = load_bundle(path)
    want = json.loads((tmp_path / "indexed" / "run" / "metrics.json").read_text())["test"]
    res = evaluate_file(bundle, test_file)
    assert res.rows == 80 and 0.6 < res.metrics["auc"] < 1
    for k in METRICS:
        assert res.metrics[k] == pytest.approx(want[k], abs=1e-6), k
    columns = tmp_path / "fields.csv"  # the fields' columns hold the feature indices
    columns.write_text("label,user,item,ctx\n" + "".join(",".join(tok.split(":")[0] for tok in line.split()) + "\n"
                                                         for line in test_file.read_text().splitlines()))
    predict_file(bundle, test_file, tmp_path / "lines.parquet")
    predict_file(bundle, columns, tmp_path / "columns.parquet", header=True)
    got, want = (pq.read_table(tmp_path / f"{n}.parquet")["probability"].to_numpy() for n in ("lines", "columns"))
    assert len(got) == 80 and np.ptp(got) > 0.01
    np.testing.assert_array_equal(got, want)


def test_a_bundle_without_its_layout_says_how_to_get_one(tmp_path):
    """A run whose dataset was preprocessed before dlf kept the layout: with fields from a feature-index file (no
    ranges in its schema) its bundle cannot split lines, and the error names the fix, which works: preprocess again
    with --force, export the same run again. A bundle's layout file is verified like its other files."""
    bundle, test_file = indexed_run(tmp_path)
    folder = tmp_path / "indexed"
    for fm_path in (folder / "data" / "feature_map.json", folder / "run" / "feature_map.json"):  # as an older dlf
        fm = json.loads(fm_path.read_text())
        del fm["meta"]["libfm_layout"]
        fm_path.write_text(json.dumps(fm))
    (folder / "data" / "libfm_layout.arrow").unlink()
    old = load_bundle(export_bundle(folder / "run", tmp_path / "old"))
    with pytest.raises(DataError, match="the bundle does not keep which field owns each libFM index .* re-run the "
                                        "same dlf preprocess command with --force and export the run again"):
        predict_file(old, test_file, tmp_path / "s.parquet")
    preprocess("libfm", [f"train={folder / 'train.libfm'}", f"test={test_file}"], folder / "data",
               options={"feature_index": str(tmp_path / "featindex.txt")}, force=True)
    new = load_bundle(export_bundle(folder / "run", tmp_path / "new"))
    predict_file(new, test_file, tmp_path / "s.parquet")
    assert len(pq.read_table(tmp_path / "s.parquet")) == 80
    (bundle / "libfm_layout.arrow").write_bytes(b"not arrow")
    with pytest.raises(BundleError, match="libfm_layout.arrow: checksum does not match bundle.json"):
        predict_file(load_bundle(bundle), test_file, tmp_path / "s.parquet")


def test_ipinyou_yzx_lines(tmp_path):
    """A model trained on make-ipinyou-data's yzx files ('click payprice index:1 ...', fields from featindex.txt)
    scores yzx lines: the paying price is skipped as in preprocessing, and each line scores as its fields' columns."""
    from test_data_presets import make_ipinyou_campaign

    d = make_ipinyou_campaign(tmp_path / "1458")
    (d / "train.yzx.txt").write_text((d / "train.yzx.txt").read_text() * 10)  # rows for a valid split too
    preprocess("ipinyou", [d], tmp_path / "data")
    train_lr(tmp_path)
    bundle = load_bundle(export_bundle(tmp_path / "run", tmp_path / "bundle"))
    lines = tmp_path / "score.yzx.txt"
    lines.write_text("0 238 0:1 5:1 6:1 7:1 8:1 9:1\n1 77 0:1 10:1 6:1 12:1 4:1\n0 20 0:1 5:1 11:1 7:1\n")
    columns = tmp_path / "fields.csv"  # weekday, hour, useragent and usertag as featindex.txt numbers them
    names = ["label"] + IPINYOU_FIELDS + ["usertag"]
    rows = [{"weekday": "5", "hour": "6", "useragent": "7", "usertag": '"8,9"'},
            {"weekday": "10", "hour": "6", "useragent": "12", "usertag": "4"},
            {"weekday": "5", "hour": "11", "useragent": "7"}]
    columns.write_text(",".join(names) + "\n" + "".join(",".join(r.get(n, "") for n in names) + "\n" for r in rows))
    predict_file(bundle, lines, tmp_path / "lines.parquet", fmt="libfm")
    predict_file(bundle, columns, tmp_path / "columns.parquet", header=True)
    got, want = (pq.read_table(tmp_path / f"{n}.parquet")["probability"].to_numpy() for n in ("lines", "columns"))
    assert len(got) == 3 and len(set(got)) == 3
    np.testing.assert_array_equal(got, want)
    res = evaluate_file(bundle, lines, fmt="libfm")
    assert res.rows == 3 and res.positives == 1  # the click, not the paying price, is the label


@pytest.mark.skipif(not (FRAPPE / "frappe.test.libfm").exists(), reason="no ../shared/data/frappe")
def test_real_frappe_test_file(tmp_path):
    """A frappe run (trained on 5,000 of the validation lines) scores the real test file as its training run did."""
    train_file = tmp_path / "train.libfm"
    with open(FRAPPE / "frappe.validation.libfm") as fh:
        train_file.write_text("".join(itertools.islice(fh, 5000)))
    test_file = FRAPPE / "frappe.test.libfm"
    preprocess("frappe", [f"train={train_file}", f"test={test_file}"], tmp_path / "data")
    train_lr(tmp_path)
    want = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    bundle = load_bundle(export_bundle(tmp_path / "run", tmp_path / "bundle"))
    res = evaluate_file(bundle, test_file)
    assert res.rows == 28860 and 0.6 < res.metrics["auc"] < 1
    for k in METRICS:
        assert res.metrics[k] == pytest.approx(want[k], abs=1e-6), k
    predict_file(bundle, test_file, tmp_path / "lines.parquet")
    columns = per_field_csv(test_file, tmp_path / "fields.csv", [name for name, _ in FRAPPE_FIELDS])
    predict_file(bundle, columns, tmp_path / "columns.parquet", header=True)
    got, want = (pq.read_table(tmp_path / f"{n}.parquet")["probability"].to_numpy() for n in ("lines", "columns"))
    assert len(got) == 28860
    np.testing.assert_array_equal(got, want)


def test_evaluate_names_the_models_label_convention(run, tmp_path):
    """A 0/1 file given to a model trained on libFM's -1/1 labels: the error said 'for 0/1 labels: --option
    labels=binary', an option dlf evaluate does not have; it says that is how 0/1 labels are preprocessed."""
    bundle, _ = run
    src = tmp_path / "zero-one.libfm"
    src.write_text("0 2:1 21:1 50:1\n1 5:1 30:1 51:1\n")
    r = CliRunner().invoke(app, ["evaluate", str(bundle), "-i", str(src)])
    assert r.exit_code == 2 and r.output.strip() == (
        f"error: {src}:1: field 'label': expected label -1 or 1 (libFM labels; 0/1 labels are preprocessed with "
        "--option labels=binary, or label_values: binary in a schema), got '0'"), r.output
