"""Bundles and batch scoring: export -> load round trip, `predict` on a file equals the trainer's
evaluation on the same rows, the bundle's encoders reproduce the preprocessing's ids, bad rows,
version/integrity checks, and a bundle crafted to run code on load does not run it."""
import hashlib
import json
import logging
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from dlf.cli import app
from dlf.config import load_config
from dlf.data.readers import BadRows
from dlf.data.schema import DataError
from dlf.data.store import load_processed
from dlf.models import build_model
from dlf.serve.bundle import BundleError, export_bundle, load_bundle
from dlf.serve.demo import build_demo_run
from dlf.serve.predict import predict_file, read_input
from dlf.train.trainer import predict_proba

try:
    import onnxruntime  # noqa: F401
    HAS_ORT = True
except ImportError:  # the [serve] extra is not installed: the ONNX parts are skipped
    HAS_ORT = False
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnxruntime not installed (pip install 'dlf[serve]')")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve_bundle")
    paths = build_demo_run(folder, rows=2500, test_rows=400)
    paths["bundle"] = export_bundle(paths["run"], folder / "bundle", format="onnx" if HAS_ORT else "torch")
    return paths


def run_model(run: Path):
    cfg = load_config(run / "config.yaml")
    fm = load_processed(cfg.data.path)[0]
    model = build_model(cfg.model_name, fm, cfg.model)
    model.load_state_dict(load_file(str(run / "model.safetensors")))
    return model.eval()


def test_bundle_layout_and_round_trip(demo):
    b = load_bundle(demo["bundle"])
    files = {p.relative_to(demo["bundle"]).as_posix() for p in demo["bundle"].rglob("*") if p.is_file()}
    assert {"bundle.json", "model.safetensors", "feature_map.json", "vocab/city.arrow",
            "vocab/tags.arrow", "vocab/visits_bucket.arrow"} <= files
    assert ("model.onnx" in files) == HAS_ORT
    assert "vocab/site.arrow" not in files  # hashed field: no vocabulary
    m = b.manifest
    assert m["format_version"] == 1 and m["dlf_version"] and m["model"]["name"] == "dlf"
    assert m["preprocessing"]["mode"] == "raw" and b.encoder.columns == ["site", "visits", "city", "device", "age",
                                                                           "tags"]
    assert not list(demo["bundle"].parent.glob(".bundle.tmp-*"))  # the temporary folder was renamed away
    _, _, _, test = load_processed(demo["data"])
    want = predict_proba(run_model(demo["run"]), test, 4096)
    got = predict_proba(b.model, test, 4096)
    assert np.array_equal(want, got)


def test_the_trained_model_of_a_run_loads_from_python(demo, tmp_path):
    """dlf.load_run_model(RUN): the model dlf.train trained, with its best weights (a notebook had to export a bundle
    and load it to get it); its test AUC is the run's."""
    import dlf
    from dlf.train.metrics import roc_auc

    _, _, _, test = load_processed(demo["data"])
    model = dlf.load_run_model(demo["run"])
    assert not model.training
    got = predict_proba(model, test, 4096)
    np.testing.assert_array_equal(got, predict_proba(run_model(demo["run"]), test, 4096))
    want = json.loads((demo["run"] / "metrics.json").read_text())["test"]["auc"]
    assert roc_auc(np.asarray(test.label), got) == pytest.approx(want, abs=1e-6)
    unfinished = tmp_path / "run"
    shutil.copytree(demo["run"], unfinished)
    (unfinished / "model.safetensors").unlink()
    with pytest.raises(dlf.BundleError, match=r"no model.safetensors \(training not finished\?\)"):
        dlf.load_run_model(unfinished)


def test_encoder_reproduces_preprocessing_ids(demo):
    """Encoding test.csv with the bundle gives exactly the ids/values dlf preprocess wrote for the test split
    (unseen categories -> OOV, missing -> the missing id, standardized numerics, hashed and bucketed fields)."""
    b = load_bundle(demo["bundle"], build_model=False)
    _, _, _, test = load_processed(demo["data"])
    parts = [b.encoder.encode_chunk(c, BadRows())[0] for c in read_input(b, demo["test_csv"], BadRows())]
    cat = np.concatenate([p.categorical.numpy() for p in parts])
    num = np.concatenate([p.numeric.numpy() for p in parts])
    mul = np.concatenate([p.multi.numpy() for p in parts])
    assert np.array_equal(cat, test.categorical) and np.array_equal(mul, test.multi)
    assert np.allclose(num, test.numeric, atol=0, rtol=0)
    city = [f.name for f in b.feature_map.of_kind("categorical")].index("city")
    assert (cat[:, city] == 2).any()  # missing cities have the missing id


def test_unseen_and_missing_values(demo):
    b = load_bundle(demo["bundle"], build_model=False)
    chunk = b.encoder.records_chunk([{"city": "atlantis", "device": "phone"}, {"city": "", "device": "toaster"},
                                     {"city": "city3", "device": "phone", "age": "40", "tags": "t1;nope"}])
    batch, keep = b.encoder.encode_chunk(chunk, BadRows())
    assert keep.all()
    names = [f.name for f in b.feature_map.of_kind("categorical")]
    city, device = names.index("city"), names.index("device")
    assert batch.categorical[0, city] == 1 and batch.categorical[1, city] == 2  # unseen -> OOV, missing -> 2
    assert batch.categorical[1, device] == 1  # device never missing in train: unseen -> OOV
    assert batch.categorical[2, city] >= 3
    assert batch.multi[2, 0, 1] == 1 and batch.multi[2, 0, 0] >= 3 and batch.multi[2, 0, 2] == 0
    assert batch.multi[0, 0, 0] == 2  # an empty list is the missing id, as in training


def test_predict_file_equals_trainer_evaluation(demo, tmp_path):
    b = load_bundle(demo["bundle"])
    _, _, _, test = load_processed(demo["data"])
    want = predict_proba(run_model(demo["run"]), test, 16384)
    out = predict_file(b, demo["test_csv"], tmp_path / "p.parquet", id_column="id", block_bytes=2048)
    got = pq.read_table(out.output)
    assert out.rows == len(test) == got.num_rows and got.column_names == ["id", "probability"]
    assert got["id"].to_pylist()[:2] == ["r1000000", "r1000001"]
    np.testing.assert_allclose(got["probability"].to_numpy(), want, rtol=0, atol=1e-6)
    # a CSV whose header starts with a BOM (Excel's "CSV UTF-8") gives the same
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + demo["test_csv"].read_bytes())
    bom = predict_file(b, tmp_path / "bom.csv", tmp_path / "bom.parquet", id_column="id")
    back = pq.read_table(bom.output)
    assert back["id"].equals(got["id"])
    np.testing.assert_allclose(back["probability"].to_numpy(), want, rtol=0, atol=1e-6)
    # CSV output, read back exactly; the same rows from a Parquet input (numbers typed, missing = null)
    pq.write_table(pcsv.read_csv(demo["test_csv"]), tmp_path / "in.parquet")
    out = predict_file(b, tmp_path / "in.parquet", tmp_path / "p.csv")
    back = pcsv.read_csv(out.output)
    assert back.column_names == ["probability"]
    np.testing.assert_allclose(back["probability"].to_numpy().astype(np.float32), want, rtol=0, atol=1e-6)


def test_records_in_memory_score_as_the_same_rows_of_a_file(demo, tmp_path):
    """dlf.predict_records: records from Python (a pyarrow table, dicts with typed values as a JSON client sends them)
    score as predict_file scores the same rows; other columns (id, label) are ignored; a bad value names its record
    and field."""
    import dlf

    b = load_bundle(demo["bundle"])
    want = pq.read_table(predict_file(b, demo["test_csv"], tmp_path / "p.parquet").output)["probability"].to_numpy()
    table = pcsv.read_csv(demo["test_csv"])  # typed by Arrow: ints, floats with nulls, the id and label too
    np.testing.assert_array_equal(dlf.predict_records(b, table), want)
    records = table.to_pylist()[:5]
    for r in records:
        r["tags"] = r["tags"].split(";") if r["tags"] else None  # a list, as a JSON client sends a multi field
    got = dlf.predict_records(b, [{k: v for k, v in r.items() if k in b.encoder.columns} for r in records])
    np.testing.assert_allclose(got, want[:5], rtol=0, atol=1e-6)  # 5 rows, not 400: another product's rounding
    assert dlf.predict_records(b, []).shape == (0,)
    pd = pytest.importorskip("pandas")  # (the dev extra installs it) NaN in a float column is missing, as in the file
    np.testing.assert_array_equal(dlf.predict_records(b, pd.read_csv(demo["test_csv"])), want)
    nullable = pd.read_csv(demo["test_csv"]).convert_dtypes()  # Int64 / string columns: missing is pd.NA
    np.testing.assert_array_equal(dlf.predict_records(b, nullable), want)
    with pytest.raises(dlf.DataError, match=r"^record 1, field 'age': expected a number, got 'old'$"):
        dlf.predict_records(b, [{"age": 30}, {"age": "old"}])
    with pytest.raises(dlf.DataError, match=r"^record 0, field 'colour': unknown field; the inputs are: site, "):
        dlf.predict_records(b, [{"colour": "red"}])


def test_predict_bf16_matches_trainer_bf16_evaluation(demo, tmp_path):
    b = load_bundle(demo["bundle"])
    _, _, _, test = load_processed(demo["data"])
    model = run_model(demo["run"])
    want = predict_proba(model, test, 16384, precision="bf16")
    fp32 = predict_proba(model, test, 16384)
    out = predict_file(b, demo["test_csv"], tmp_path / "p.parquet", precision="bf16", block_bytes=2048)
    got = pq.read_table(out.output)["probability"].to_numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)  # the same autocast as the trainer's bf16 evaluation
    assert np.abs(got - fp32).max() > 0  # ... which is not fp32
    np.testing.assert_allclose(got, fp32, rtol=0, atol=0.02)
    with pytest.raises(BundleError, match="needs --engine torch"):
        predict_file(b, demo["test_csv"], tmp_path / "o.parquet", engine="onnx", precision="bf16")
    with pytest.raises(BundleError, match="fp32 or bf16"):
        predict_file(b, demo["test_csv"], tmp_path / "o.parquet", precision="fp16")


def test_evaluate_says_how_a_bf16_trained_runs_metrics_were_computed(demo, tmp_path):
    """A run trained with train.precision=bf16 evaluated its test split under bf16 autocast; dlf evaluate scores in
    fp32 by default, and its figures differed from the run's (gAUC by 4e-3) without a word why."""
    import yaml

    run = tmp_path / "run"
    shutil.copytree(demo["run"], run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["train"]["precision"] = "bf16"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    bundle = export_bundle(run, tmp_path / "bundle", data=demo["data"])
    assert load_bundle(bundle).manifest["training"] == {"precision": "bf16"}
    note = "note: the run's own test metrics were computed under bf16 autocast"
    r = CliRunner().invoke(app, ["evaluate", str(bundle), "-i", str(demo["test_csv"])])
    assert r.exit_code == 0 and note in r.output, r.output
    r = CliRunner().invoke(app, ["evaluate", str(bundle), "-i", str(demo["test_csv"]), "--precision", "bf16"])
    assert r.exit_code == 0 and note not in r.output, r.output
    r = CliRunner().invoke(app, ["evaluate", str(demo["bundle"]), "-i", str(demo["test_csv"])])  # trained in fp32
    assert r.exit_code == 0 and note not in r.output, r.output


@needs_ort
def test_predict_onnx_engine_matches_torch(demo, tmp_path):
    b = load_bundle(demo["bundle"])
    t = predict_file(b, demo["test_csv"], tmp_path / "t.parquet")
    o = predict_file(b, demo["test_csv"], tmp_path / "o.parquet", engine="onnx")
    np.testing.assert_allclose(pq.read_table(o.output)["probability"].to_numpy(),
                               pq.read_table(t.output)["probability"].to_numpy(), rtol=0, atol=1e-5)


def test_bad_rows_error_or_skip(demo, tmp_path):
    b = load_bundle(demo["bundle"])
    lines = demo["test_csv"].read_text().splitlines()
    lines[3] += ",extra"  # one column too many
    cols = lines[5].split(",")
    cols[4] = "forty"  # age must be a number
    lines[5] = ",".join(cols)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bad\.csv:4: "):
        predict_file(b, bad, tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists() and not list(tmp_path.glob(".o.csv.tmp-*"))
    res = predict_file(b, bad, tmp_path / "o.csv", on_bad_row="skip", id_column="id")
    assert res.bad_rows["count"] == 2 and res.rows == len(lines) - 3
    assert res.bad_rows["examples"][0].endswith("bad.csv:4: expected 8 columns separated by ',', got 9 "
                                                f"({lines[3][:60]!r})")
    assert res.bad_rows["examples"][1].endswith("bad.csv:6: field 'age': expected a number, got 'forty'")
    ids = pcsv.read_csv(res.output)["id"].to_pylist()
    assert lines[3].split(",")[0] not in ids and lines[5].split(",")[0] not in ids and lines[4].split(",")[0] in ids


def test_empty_lines_are_not_scored(demo, tmp_path):
    """Arrow reads an empty line as a row whose every column is empty: it was scored as an all-missing record, so a
    blank line in the middle or at the end of the file added a row (with an empty id) to the output."""
    b = load_bundle(demo["bundle"])
    header, *rows = demo["test_csv"].read_text().splitlines()
    bad = rows[6].split(",")
    bad[4] = "forty"
    # line 6 is empty; line 9 holds an id and nothing else (a record with every input missing: scored)
    body = rows[:4] + [""] + rows[4:6] + ["only-id" + "," * 7] + [",".join(bad)] + rows[7:]
    want_ids = [r.split(",")[0] for r in rows[:6]] + ["only-id"] + [r.split(",")[0] for r in rows[7:]]
    for eol in ("\n", "\r\n"):
        (tmp_path / "blank.csv").write_text(eol.join([header] + body) + eol * 3, newline="")
        res = predict_file(b, tmp_path / "blank.csv", tmp_path / "o.csv", id_column="id", on_bad_row="skip")
        assert res.bad_rows["examples"] == [f"{tmp_path / 'blank.csv'}:10: field 'age': expected a number, got 'forty'"]
        got = pcsv.read_csv(res.output, convert_options=pcsv.ConvertOptions(strings_can_be_null=False))
        assert res.rows == got.num_rows and got["id"].to_pylist() == want_ids
    # also with a quoted header name holding the delimiter, and Excel's empty trailing header cells
    (tmp_path / "excel.csv").write_text("\n".join([header + ',"note, free",,'] + [r + ",x,," for r in rows[:3]]
                                                  + ["", rows[3] + ",,,"]) + "\n")
    res = predict_file(b, tmp_path / "excel.csv", tmp_path / "e.csv", id_column="id")
    assert pcsv.read_csv(res.output)["id"].to_pylist() == want_ids[:4]


def test_columns_repeating_the_header_do_not_score_it(demo, tmp_path):
    """--columns on a file that has a header read that header as a record: scored (a bundle of text fields only)
    or, here, a bad row 'expected a number, got 'age''."""
    b = load_bundle(demo["bundle"])
    want = pq.read_table(predict_file(b, demo["test_csv"], tmp_path / "w.parquet").output)["probability"]
    header = demo["test_csv"].read_text().splitlines()[0].split(",")
    got = predict_file(b, demo["test_csv"], tmp_path / "o.parquet", columns=header)
    assert got.rows == 400 and pq.read_table(got.output)["probability"].equals(want)


def test_parquet_list_columns_and_columns_that_are_not_text(demo, tmp_path):
    """A list column for the multi-valued field scores as its separator-joined text (was an Arrow traceback, then
    refused); a struct, or bytes that are not UTF-8, are one line naming the file and column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    b = load_bundle(demo["bundle"])
    table = pcsv.read_csv(demo["test_csv"], convert_options=pcsv.ConvertOptions(
        column_types={c: pa.string() for c in ["id", "city", "tags"]}, strings_can_be_null=False))
    want = pq.read_table(predict_file(b, demo["test_csv"], tmp_path / "w.parquet").output)["probability"]
    lists = pc.split_pattern(table["tags"], ";")
    lists = pc.if_else(pc.equal(table["tags"], ""), pa.scalar([], lists.type), lists)  # '' is no tag, not ['']
    pq.write_table(table.set_column(table.column_names.index("tags"), "tags", lists), tmp_path / "list.parquet")
    got = predict_file(b, tmp_path / "list.parquet", tmp_path / "l.parquet")
    assert pq.read_table(got.output)["probability"].equals(want)
    cases = {"struct": ("age", pa.array([{"a": 1}] * table.num_rows), r"column 'age' of type struct<a: int64> "),
             "bytes": ("city", pa.array([b"\xff"] * table.num_rows, pa.binary()),
                       r"bytes\.parquet row 1: column 'city' of type binary cannot be read as text: Invalid UTF8")}
    for name, (col, values, message) in cases.items():
        pq.write_table(table.set_column(table.column_names.index(col), col, values), tmp_path / f"{name}.parquet")
        with pytest.raises(DataError, match=message):
            predict_file(b, tmp_path / f"{name}.parquet", tmp_path / "o.csv")
        assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("engine", ["torch", pytest.param("onnx", marks=needs_ort)])
def test_numbers_the_model_cannot_score_are_bad_rows(demo, tmp_path, engine):
    """age 1e30 standardizes to 5e28: the model's output was NaN, written with exit status 0; 1e400 was missing."""
    b = load_bundle(demo["bundle"])
    lines = demo["test_csv"].read_text().splitlines()
    bad = tmp_path / "big.csv"
    for i, age in ((2, "1e30"), (4, "1e400")):
        cols = lines[i].split(",")
        cols[4] = age
        lines[i] = ",".join(cols)
        bad.write_text("\n".join(lines) + "\n")
        if i == 2:
            with pytest.raises(DataError, match=r"big\.csv:3: field 'age': value too far outside the training range"):
                predict_file(b, bad, tmp_path / "o.csv", engine=engine)
    res = predict_file(b, bad, tmp_path / "o.csv", engine=engine, on_bad_row="skip", id_column="id")
    assert res.bad_rows["count"] == 2
    assert any("big.csv:5: field 'age': expected a finite number" in e for e in res.bad_rows["examples"])
    got = pcsv.read_csv(res.output)
    assert got.num_rows == len(lines) - 3 and np.isfinite(got["probability"].to_numpy()).all()
    assert lines[2].split(",")[0] not in got["id"].to_pylist()


def test_incompatible_or_modified_bundles_are_refused(demo, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(demo["bundle"], copy)
    manifest = json.loads((copy / "bundle.json").read_text())
    (copy / "bundle.json").write_text(json.dumps({**manifest, "format_version": 99, "dlf_version": "9.0"}))
    with pytest.raises(BundleError, match=r"bundle format version 99 \(written by dlf 9.0\) is not supported"):
        load_bundle(copy)
    (copy / "bundle.json").write_text(json.dumps(manifest))
    vocab = copy / "vocab" / "city.arrow"
    vocab.write_bytes(vocab.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(BundleError, match="checksum does not match"):
        load_bundle(copy)
    with pytest.raises(BundleError, match="no such bundle directory"):
        load_bundle(tmp_path / "nothing")
    # hand-edited manifests: a file entry that is not an object was an AttributeError traceback; without
    # dlf_version the bundle loaded and `dlf serve` died with a KeyError
    edits = {"files": lambda m: m["files"].__setitem__("feature_map.json", "abc"),
             "dlf_version": lambda m: m.pop("dlf_version"), "model.name": lambda m: m["model"].__setitem__("name", 3),
             "model.config": lambda m: m["model"].__setitem__("config", [1])}
    for key, edit in edits.items():
        edited = json.loads(json.dumps(manifest))
        edit(edited)
        (copy / "bundle.json").write_text(json.dumps(edited))
        with pytest.raises(BundleError, match=rf"bundle\.json: missing or malformed '{key}'"):
            load_bundle(copy)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_crafted_bundle_does_not_run_code(demo, tmp_path):
    evil = tmp_path / "evil"
    shutil.copytree(demo["bundle"], evil)
    marker = tmp_path / "MARKER"
    payload = pickle.dumps({"state": _Exploit(str(marker))})
    pickle.loads(pickle.dumps(_Exploit(str(tmp_path / "control"))))  # the payload does run when unpickled
    assert (tmp_path / "control").exists()
    for name in ("model.pkl", "weights.pt", "model.pt", "vocab/city.pkl"):
        (evil / name).write_bytes(payload)
    (evil / "model.safetensors").write_bytes(payload)  # where the weights would be
    # ... with a manifest that vouches for it, as an attacker would write
    manifest = json.loads((evil / "bundle.json").read_text())
    manifest["files"]["model.safetensors"] = {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
    (evil / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="model.safetensors: not a valid safetensors file"):
        load_bundle(evil)
    assert not marker.exists()
    # the weights file is fine but a vocabulary is a pickle: also refused without running it
    shutil.copyfile(demo["bundle"] / "model.safetensors", evil / "model.safetensors")
    (evil / "vocab" / "city.arrow").write_bytes(payload)
    manifest["files"]["model.safetensors"] = json.loads((demo["bundle"] / "bundle.json").read_text())["files"][
        "model.safetensors"]
    manifest["files"]["vocab/city.arrow"] = manifest["files"]["model.safetensors"] | {
        "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
    (evil / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not a readable vocabulary"):
        load_bundle(evil)
    assert not marker.exists()


def test_cli_export_and_predict(demo, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["export", str(demo["run"]), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "wrote bundle" in res.output and not (tmp_path / "b" / "model.onnx").exists()
    res = runner.invoke(app, ["export", str(demo["run"]), "--out", str(tmp_path / "b[v2]")])  # not rich markup
    assert res.exit_code == 0 and f"wrote bundle {tmp_path / 'b[v2]'}:" in res.output.replace("\n", ""), res.output
    res = runner.invoke(app, ["export", str(demo["run"]), "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "already holds a bundle" in res.output
    res = runner.invoke(app, ["predict", str(tmp_path / "b"), "--input", str(demo["test_csv"]), "--output",
                              str(tmp_path / "p.csv"), "--id-column", "id"])
    assert res.exit_code == 0, res.output
    assert "400 rows scored" in res.output
    res = runner.invoke(app, ["predict", str(tmp_path / "b"), "--input", str(demo["test_csv"]), "--output",
                              str(tmp_path / "p16.csv"), "--precision", "bf16"])
    assert res.exit_code == 0 and "bf16" in res.output, res.output
    p16, p32 = (pcsv.read_csv(tmp_path / f)["probability"].to_numpy() for f in ("p16.csv", "p.csv"))
    assert len(p16) == 400 and 0 < np.abs(p16 - p32).max() < 0.02
    res = runner.invoke(app, ["predict", str(tmp_path / "b"), "--input", str(demo["test_csv"]), "--output",
                              str(tmp_path / "p.csv"), "--engine", "onnx"])
    assert res.exit_code == 2 and "no model.onnx" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["predict", str(tmp_path / "b"), "--input", str(demo["test_csv"]), "--output",
                              str(tmp_path / "p.csv"), "--id-column", "nope"])
    assert res.exit_code == 2 and "header has no column(s) ['nope']" in res.output
    res = runner.invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "not a finished dlf run directory" in res.output
    # an input column named like the score column: was an output with two 'probability' columns, unreadable
    (tmp_path / "scored.csv").write_text(demo["test_csv"].read_text().replace("id,", "probability,", 1))
    res = runner.invoke(app, ["predict", str(tmp_path / "b"), "--input", str(tmp_path / "scored.csv"), "--output",
                              str(tmp_path / "twice.parquet"), "--id-column", "probability"])
    assert res.exit_code == 2 and "--id-column must not be 'probability'" in res.output, res.output


def test_output_to_a_fifo_or_device_is_written_in_place(demo, tmp_path):
    """The temporary file was renamed over the output even when that was a FIFO or a device: the FIFO (or, as
    root, /dev/null or /dev/stdout) became a regular file and its reader got nothing. The CLI's summary line went
    to stdout, into the scores of `--output /dev/stdout`."""
    import os
    import stat
    import threading

    fifo = tmp_path / "scores.csv"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("text", fifo.read_text()), daemon=True)
    reader.start()
    predict_file(load_bundle(demo["bundle"]), demo["test_csv"], fifo, id_column="id")
    reader.join(20)
    assert stat.S_ISFIFO(fifo.stat().st_mode) and got["text"].count("\n") == 401
    res = CliRunner().invoke(app, ["predict", str(demo["bundle"]), "--input", str(demo["test_csv"]), "--output",
                                   str(tmp_path / "p.csv")])
    assert res.exit_code == 0 and "400 rows scored" in res.stderr and res.stdout == "", res.output


def test_outputs_that_cannot_be_written_are_one_line(demo, tmp_path):
    """A file where a folder of --output/--out belongs, or a folder that cannot be created: were FileExistsError /
    FileNotFoundError tracebacks from mkdir and Arrow's file open."""
    runner = CliRunner()
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file" / "o.csv", tmp_path / "file" / "o.parquet"):
        res = runner.invoke(app, ["predict", str(demo["bundle"]), "--input", str(demo["test_csv"]), "--output",
                                  str(out)])
        assert res.exit_code == 2 and f"{out}: cannot write the output: File exists: " in res.output, res.output
    res = runner.invoke(app, ["export", str(demo["run"]), "--out", str(tmp_path / "file" / "b")])
    assert res.exit_code == 2 and "cannot write the bundle: File exists: " in res.output, res.output
    assert (tmp_path / "file").read_text() == "x"


def test_output_format_comes_from_a_known_suffix_or_the_option(demo, tmp_path):
    """An unknown suffix ('scores.csv.gz', 'scores.json') silently wrote plain CSV under that name."""
    import pyarrow.parquet as pq
    runner = CliRunner()
    predict = ["predict", str(demo["bundle"]), "--input", str(demo["test_csv"]), "--output"]
    for name in ("scores.csv.gz", "scores.json"):
        res = runner.invoke(app, predict + [str(tmp_path / name)])
        assert res.exit_code == 2 and f"cannot tell the output format from the suffix '{Path(name).suffix}'" \
            in res.output, res.output
        assert not (tmp_path / name).exists()
    res = runner.invoke(app, predict + [str(tmp_path / "scores.out"), "--output-format", "parquet"])
    assert res.exit_code == 0, res.output
    assert pq.read_table(tmp_path / "scores.out").num_rows == 400
    res = runner.invoke(app, predict + [str(tmp_path / "scores"), "--id-column", "id"])  # no suffix: CSV
    assert res.exit_code == 0 and pcsv.read_csv(tmp_path / "scores").num_rows == 400, res.output


def test_cli_option_values_are_checked_in_one_line(demo, tmp_path):
    """--chunk-mb / --max-body-mb nan or inf were int() tracebacks, a tiny --chunk-mb an Arrow block-size error,
    a tiny --max-body-mb create_app's ValueError, and --threads -1 torch's RuntimeError traceback."""
    runner = CliRunner()
    bundle = str(demo["bundle"])
    predict = ["predict", bundle, "--input", str(demo["test_csv"]), "--output", str(tmp_path / "o.csv")]
    for value in ("nan", "inf", "1e-9"):
        res = runner.invoke(app, predict + ["--chunk-mb", value])
        assert res.exit_code == 2 and "--chunk-mb must be a number >= 0.001" in res.output, res.output
        res = runner.invoke(app, ["serve", bundle, "--max-body-mb", value])
        assert res.exit_code == 2 and "--max-body-mb must be a number > 0" in res.output, res.output
    res = runner.invoke(app, ["serve", bundle, "--log-level", "verbose"])  # was logging.config's ValueError traceback
    assert res.exit_code == 2 and "--log-level must be one of critical, error, warning, info, debug, trace, got " \
        "'verbose'" in res.output, res.output
    for args in (predict + ["--threads", "-1"], ["serve", bundle, "--threads", "-1"], predict + ["--batch-size", "0"],
                 ["serve", bundle, "--max-batch", "0"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "Invalid value for '--" in res.output, res.output
    assert not (tmp_path / "o.csv").exists()


@needs_ort
def test_synthetic_run_exports_an_ids_bundle(tmp_path):
    """Synthetic runs have no raw values: the bundle takes encoded ids / numeric values."""
    from rich.console import Console

    from dlf.api import train
    from dlf.data.synthetic import SyntheticConfig, generate

    cfg = {"model": {"name": "lr"}, "data": {"synthetic": {"rows": 1500, "categorical": 4, "numeric": 2,
                                                             "max_cardinality": 50, "seed": 3}},
           "train": {"epochs": 1, "batch_size": 256, "progress": False, "tensorboard": False}}
    train(cfg, out=tmp_path / "run", console=Console(quiet=True))
    bundle = load_bundle(export_bundle(tmp_path / "run", tmp_path / "b", format="onnx"))
    assert bundle.mode == "ids" and not (tmp_path / "b" / "vocab").exists()
    test = generate(SyntheticConfig(rows=1500, categorical=4, numeric=2, max_cardinality=50, seed=3)).test
    fm = bundle.feature_map
    header = [f.name for f in fm.of_kind("categorical")] + [f.name for f in fm.of_kind("numeric")] + \
        [f.name for f in fm.of_kind("multi")]
    rows = []
    for i in range(len(test)):
        vals = [str(v) for v in test.categorical[i]] + [repr(float(v)) for v in test.numeric[i]]
        vals += ["|".join(str(v) for v in test.multi[i, j] if v) for j in range(test.multi.shape[1])]
        rows.append(",".join(vals))
    (tmp_path / "ids.csv").write_text(",".join(header) + "\n" + "\n".join(rows) + "\n")
    out = predict_file(bundle, tmp_path / "ids.csv", tmp_path / "p.parquet")
    want = predict_proba(bundle.model, test, 4096)
    np.testing.assert_allclose(pq.read_table(out.output)["probability"].to_numpy(), want, rtol=0, atol=1e-6)
    onnx = predict_file(bundle, tmp_path / "ids.csv", tmp_path / "o.parquet", engine="onnx")
    np.testing.assert_allclose(pq.read_table(onnx.output)["probability"].to_numpy(), want, rtol=0, atol=1e-5)
    # an id outside the vocabulary is OOV, also beyond int64 (was ArrowInvalid); text is a bad row
    rest = rows[0].split(",")[1:]
    (tmp_path / "odd.csv").write_text(",".join(header) + "\n" + ",".join(["999999"] + rest) + "\n"
                                      + ",".join(["abc"] + rest) + "\n" + ",".join(["1" + "0" * 23] + rest) + "\n")
    with pytest.raises(DataError, match=r"odd\.csv:3: field 'c1': expected an integer id, got 'abc'"):
        predict_file(bundle, tmp_path / "odd.csv", tmp_path / "q.parquet")
    res = predict_file(bundle, tmp_path / "odd.csv", tmp_path / "q.parquet", on_bad_row="skip")
    assert res.rows == 2 and res.bad_rows["count"] == 1
    p = pq.read_table(res.output)["probability"].to_numpy()
    assert p[0] == p[1]


def fake_run(data: Path, run: Path, model: str = "lr") -> Path:
    """A run directory with untrained weights (export needs no training)."""
    import yaml

    cfg = load_config(None, [f"data.path={data}"], model=model)
    fm = load_processed(data)[0]
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    fm.save(run / "feature_map.json")
    save_file(build_model(cfg.model_name, fm, cfg.model).state_dict(), str(run / "model.safetensors"))
    return run


FIX = Path(__file__).parent / "fixtures" / "data"


@pytest.mark.parametrize("preset,path,options", [("criteo", "criteo_tiny.txt", {"min_count": 2}),
                                                 ("avazu", "avazu_tiny.csv", {}),
                                                 ("movielens-1m", "movielens_tiny", {}),
                                                 ("kkbox", "kkbox_tiny.csv", {"min_count": 2}),
                                                 ("kdd12", "kdd12_tiny/training.txt", {"min_count": 2})])
def test_preset_bundles_reproduce_preprocessing(preset, path, options, tmp_path):
    """The test split is the whole file (a copy given as test=COPY): encoding the file with the bundle gives the same
    ids (avazu, kkbox and kdd12 through their preset's own derivation of hour, isrc/bd and user 0)."""
    from dlf.data.presets import get_preset
    from dlf.data.preprocess import parse_inputs, preprocess

    src = FIX / path
    copy = tmp_path / "test" / path  # one file may not be train and test (b898079): the test split is a copy
    if src.is_dir():
        shutil.copytree(src, copy)
    else:
        copy.parent.mkdir(parents=True)
        shutil.copyfile(src, copy)
    preprocess(preset, [src, f"test={copy}"], tmp_path / "d", options=options)
    b = load_bundle(export_bundle(fake_run(tmp_path / "d", tmp_path / "run"), tmp_path / "b"), build_model=False)
    if preset == "movielens-1m":  # inputs are the joined records: take them from the preset's reader
        _, sources = get_preset(preset).build(parse_inputs([src]), None, {})
        chunks = [c for s in sources for c in s.read(BadRows(), 1 << 20)]
    else:  # the raw file, as a user scores it (criteo: no header, label column present)
        chunks = list(read_input(b, src, BadRows()))
    parts = [b.encoder.encode_chunk(c, BadRows())[0] for c in chunks]
    test = load_processed(tmp_path / "d")[3]
    assert np.array_equal(np.concatenate([p.categorical.numpy() for p in parts]), test.categorical)
    assert np.array_equal(np.concatenate([p.multi.numpy() for p in parts]), test.multi)
    assert np.array_equal(np.concatenate([p.numeric.numpy() for p in parts]), test.numeric)


def test_json_booleans_are_encoded_as_parquet_bools(tmp_path):
    """The data pipeline reads a Parquet bool column as "1"/"0" (categorical, numeric, list items), but the server
    refused JSON true/false ("expected a string or a number, got a boolean"): a model trained on Parquet bools
    could not be sent them. Now true/false are "1"/"0" there too: the same ids as preprocessing, the same scores
    as `dlf predict` on the Parquet file."""
    pytest.importorskip("fastapi")
    import warnings

    import pyarrow as pa
    with warnings.catch_warnings():  # starlette's deprecation of httpx, as in test_serve_server
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from dlf.data.preprocess import preprocess
    from dlf.data.schema import FieldOptions, Schema
    from dlf.serve.server import create_app, validate_records

    flags = [True, False, None, True, False, True, True, False]
    lists = pa.array([[True], [False, True], [], None, [True, True], [False], [True, False], [False]],
                     pa.list_(pa.bool_()))
    table = pa.table({"click": [1, 0, 1, 0, 1, 0, 1, 0], "member": flags, "promo": flags, "seen": lists})
    (tmp_path / "test").mkdir()
    for path in (tmp_path / "t.parquet", tmp_path / "test" / "t.parquet"):
        pq.write_table(table, path)
    schema = Schema(fields=[FieldOptions("member"), FieldOptions("promo", "numeric"),
                            FieldOptions("seen", "multi", separator="^")], label="click")
    preprocess("generic", [tmp_path / "t.parquet", f"test={tmp_path / 'test' / 't.parquet'}"], tmp_path / "d",
               schema=schema)
    bundle = load_bundle(export_bundle(fake_run(tmp_path / "d", tmp_path / "run", model="dlf"), tmp_path / "b"))
    records = [{k: v for k, v in r.items() if k != "click"} for r in table.to_pylist()]
    assert records[0] == {"member": True, "promo": True, "seen": [True]}
    # the encoder, given the server's text of the JSON records, writes the ids preprocessing wrote
    rows = validate_records(records, bundle.encoder.inputs, 100)
    batch, keep = bundle.encoder.encode_chunk(bundle.encoder.records_chunk(rows), BadRows())
    test = load_processed(tmp_path / "d")[3]
    assert keep.all() and np.array_equal(batch.categorical.numpy(), test.categorical)
    assert np.array_equal(batch.numeric.numpy(), test.numeric) and np.array_equal(batch.multi.numpy(), test.multi)
    # the HTTP API answers as batch scoring of the Parquet file does
    want = pq.read_table(predict_file(bundle, tmp_path / "t.parquet", tmp_path / "p.parquet").output)
    with TestClient(create_app(bundle)) as client:
        r = client.post("/predict", json=records)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["probabilities"], want["probability"].to_numpy(), rtol=0, atol=1e-6)


def test_kdd12_bundle_with_joined_user_profile_is_refused(tmp_path):
    """gender/age come from userid_profile.txt, which a bundle does not carry: export says so, before the model."""
    from dlf.data.preprocess import preprocess

    d = tmp_path / "track2"
    d.mkdir()
    shutil.copyfile(FIX / "kdd12_tiny" / "training.txt", d / "training.txt")
    (d / "userid_profile.txt").write_text("490234\t1\t3\n12\t2\t5\n")
    preprocess("kdd12", [d], tmp_path / "d", options={"min_count": 1})
    with pytest.raises(BundleError, match=r"a kdd12 model cannot score raw rows: its fields gender, age were joined "
                                          r"from userid_profile.txt at preprocessing"):
        export_bundle(fake_run(tmp_path / "d", tmp_path / "run"), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_weights_of_another_model_are_named_not_torch_traceback(demo, tmp_path):
    # a run whose model.safetensors holds another model's weights: export says which keys do not fit, in one line
    run = tmp_path / "run"
    shutil.copytree(demo["run"], run)
    cfg = load_config(run / "config.yaml")
    fm = load_processed(cfg.data.path)[0]
    other = build_model("lr", fm, load_config(None, model="lr").model).state_dict()
    save_file(other, str(run / "model.safetensors"))
    with pytest.raises(BundleError, match=r"model\.safetensors: does not fit model 'dlf': \d+ missing key\(s\) "
                                          r"\(.+\); \d+ unexpected key\(s\)") as exc:
        export_bundle(run, tmp_path / "b")
    assert "\n" not in str(exc.value)
    # the same check when a bundle's weights were swapped after export (checksums updated to match)
    bundle = tmp_path / "bundle"
    shutil.copytree(demo["bundle"], bundle)
    save_file(other, str(bundle / "model.safetensors"))
    manifest = json.loads((bundle / "bundle.json").read_text())
    payload = (bundle / "model.safetensors").read_bytes()
    manifest["files"]["model.safetensors"] = {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"weights do not fit model 'dlf': \d+ missing key\(s\)"):
        load_bundle(bundle)


def _vouch(bundle: Path, *names: str) -> None:
    """Rewrite the manifest's checksums of `names` to match the files, as someone editing a bundle would."""
    manifest = json.loads((bundle / "bundle.json").read_text())
    for name in names:
        payload = (bundle / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
    (bundle / "bundle.json").write_text(json.dumps(manifest))


def test_a_bundle_claiming_a_huge_vocabulary_fails_before_building_the_model(demo, tmp_path):
    """A feature map edited to claim 10^10 rows for the hashed field (no vocabulary file to contradict it) made
    load_bundle allocate the embedding table (10^10 x d floats) before comparing it with the weights: an OOM or a
    RuntimeError from torch's allocator. The model is now built on the meta device and compared first."""
    bundle = tmp_path / "b"
    shutil.copytree(demo["bundle"], bundle)
    fmap = json.loads((bundle / "feature_map.json").read_text())
    site = next(f for f in fmap["fields"] if f["name"] == "site")
    site["vocab_size"] = 10 ** 10
    (bundle / "feature_map.json").write_text(json.dumps(fmap))
    _vouch(bundle, "feature_map.json")
    with pytest.raises(BundleError, match=r"model\.safetensors: weights do not fit model 'dlf': "
                                          r"1 shape mismatch\(es\), saved vs model "
                                          r"\(embedding\.table \(\d+, \d+\) vs \(100000\d+, \d+\)\)"):
        load_bundle(bundle)
    # weights of the right shapes but another dtype (load_state_dict would cast them silently)
    shutil.copyfile(demo["bundle"] / "feature_map.json", bundle / "feature_map.json")
    _vouch(bundle, "feature_map.json")
    state = load_file(str(bundle / "model.safetensors"))
    save_file({k: v.double() if k == "head.0.weight" else v for k, v in state.items()},
              str(bundle / "model.safetensors"))
    _vouch(bundle, "model.safetensors")
    with pytest.raises(BundleError, match=r"1 dtype mismatch\(es\), saved vs model \(head\.0\.weight torch\.float64 "
                                          r"vs torch\.float32\)"):
        load_bundle(bundle)


@needs_ort
def test_a_swapped_model_onnx_is_one_line(demo, tmp_path):
    """The ONNX engine does not build the torch model, so a model.onnx of another model (checksum updated) was only
    found by ONNX Runtime at the first batch: a traceback from dlf predict, a 500 for every request from dlf serve."""
    from dlf.data import FeatureMap, FieldSpec
    from dlf.serve.onnx import export_onnx

    bundle = tmp_path / "b"
    shutil.copytree(demo["bundle"], bundle)
    fm = FeatureMap([FieldSpec("c", "categorical", vocab_size=5), FieldSpec("n", "numeric")])
    export_onnx(build_model("lr", fm), fm, bundle / "model.onnx")
    _vouch(bundle, "model.onnx")
    res = CliRunner().invoke(app, ["predict", str(bundle), "--input", str(demo["test_csv"]), "--output",
                                   str(tmp_path / "p.csv"), "--engine", "onnx"])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "model.onnx: graph input 'categorical' of shape ['batch', 1] does not fit" in res.output
    assert not (tmp_path / "p.csv").exists()


FEATURE_MAP_EDITS = {  # what a hand-edited feature map (checksums recomputed) did, and the message now
    "stats not objects": (lambda m: m["meta"].__setitem__("fields", []), "'meta' and its 'fields' must be objects"),
    "meta not an object": (lambda m: m.__setitem__("meta", 3), "'meta' and its 'fields' must be objects"),  # Attribute
    "no fields": (lambda m: m.__setitem__("fields", []), "no fields"),  # ids bundle of dcnv2: ZeroDivisionError
    "vocab_size not a number": (lambda m: m["fields"][0].__setitem__("vocab_size", "many"),
                                "field 'site': expected a name, a kind"),  # a 500 at the first request (ONNX engine)
    "max_len < 1": (lambda m: m["fields"][-1].__setitem__("max_len", -1), "field 'tags': expected"),
    "mean not a number": (lambda m: m["meta"]["fields"]["age"].__setitem__("mean", "abc"),
                          "ValueError: could not convert string to float: 'abc'"),
    "first_value_id missing": (lambda m: m["meta"]["fields"]["city"].pop("first_value_id"),
                               "KeyError: 'first_value_id'"),
}


@pytest.mark.parametrize("edit", FEATURE_MAP_EDITS, ids=str)
def test_a_hand_edited_feature_map_is_one_line(demo, tmp_path, edit):
    """These were AttributeError/KeyError/ValueError/ZeroDivisionError tracebacks from load_bundle (or, for a
    vocab_size that is not a number with the ONNX engine, a TypeError at every request)."""
    change, message = FEATURE_MAP_EDITS[edit]
    bundle = tmp_path / "b"
    shutil.copytree(demo["bundle"], bundle)
    fmap = json.loads((bundle / "feature_map.json").read_text())
    change(fmap)
    (bundle / "feature_map.json").write_text(json.dumps(fmap))
    _vouch(bundle, "feature_map.json")
    for build in (False, True):
        with pytest.raises(BundleError, match=r"feature_map\.json: malformed feature map: .*" + re.escape(message)):
            load_bundle(bundle, build_model=build)


@pytest.mark.parametrize("max_len", [1, 9])
def test_a_feature_map_with_another_max_len_is_refused(demo, tmp_path, max_len):
    """The torch engine encoded requests' lists to the edited max_len (the weights average any length, so they cannot
    tell): 1 dropped all but the first tag, 9 averaged tags the model never saw past the 4th, silently. The ONNX graph
    only pins the longest field's length. The field's training statistics say what preprocessing padded to."""
    bundle = tmp_path / "b"
    shutil.copytree(demo["bundle"], bundle)
    fmap = json.loads((bundle / "feature_map.json").read_text())
    tags = next(f for f in fmap["fields"] if f["name"] == "tags")
    assert tags["max_len"] == fmap["meta"]["fields"]["tags"]["max_len"] == 4
    tags["max_len"] = max_len
    (bundle / "feature_map.json").write_text(json.dumps(fmap))
    _vouch(bundle, "feature_map.json")
    for build in (False, True):
        with pytest.raises(BundleError, match=rf"feature_map\.json: field 'tags' has max_len {max_len}, but its "
                                              r"training rows were padded to 4 \(meta\.fields\.tags\.max_len\)"):
            load_bundle(bundle, build_model=build)


def test_export_of_a_damaged_run_is_one_line(demo, tmp_path):
    """Truncated weights were a SafetensorError traceback, a non-UTF-8 config.yaml a UnicodeDecodeError one, and
    a YAML syntax error printed YAML's multi-line message with a caret."""
    run = tmp_path / "run"
    shutil.copytree(demo["run"], run)
    weights = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(weights[:100])
    with pytest.raises(BundleError, match=r"model\.safetensors: does not load into model 'dlf': .*header"):
        export_bundle(run, tmp_path / "b")
    (run / "model.safetensors").write_bytes(weights)
    config = (run / "config.yaml").read_text()
    for text, message in ((config + "model: [\n", r"config\.yaml: not valid YAML: line \d+: expected "),
                          (b"\xff\xfe", r"config\.yaml: 'utf-8' codec can't decode"),
                          ("- a\n", r"config\.yaml: expected a mapping with model/data/train sections")):
        if isinstance(text, bytes):
            (run / "config.yaml").write_bytes(text)
        else:
            (run / "config.yaml").write_text(text)
        with pytest.raises(BundleError, match=message) as exc:
            export_bundle(run, tmp_path / "b")
        assert "\n" not in str(exc.value)
    assert not (tmp_path / "b").exists()


def test_serve_on_a_port_in_use_or_a_foreign_host_is_one_line(demo):
    """uvicorn logged '[Errno 98] address already in use' as a JSON line after loading, and exited with status 3."""
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = CliRunner().invoke(app, ["serve", str(demo["bundle"]), "--port", str(port)])
    assert res.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}: Address already in use" in res.output, \
        res.output
    res = CliRunner().invoke(app, ["serve", str(demo["bundle"]), "--host", "192.0.2.1"])  # TEST-NET: not ours
    assert res.exit_code == 2 and "cannot listen on 192.0.2.1:8000: Cannot assign requested address" in res.output, \
        res.output


def test_serve_logs_the_url_it_listens_on(demo, monkeypatch, capsys):
    """An IPv6 host was logged as 'http://::1:PORT', not a URL."""
    import socket

    import uvicorn

    from dlf.serve.server import serve
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    loggers = [logging.getLogger(name) for name in ("dlf.serve", "dlf.serve.access")]
    saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    try:
        for host, url in (("127.0.0.1", "http://127.0.0.1:8123"), ("::1", "http://[::1]:8123")):
            try:
                serve(demo["bundle"], host=host, port=8123)
            except DataError as exc:  # ::1 where the machine has no IPv6 loopback
                pytest.skip(str(exc))
            assert f"on {url}" in capsys.readouterr().err
    finally:  # serve() configures its loggers for the process: the other tests read them through caplog
        for lg, (handlers, propagate, level) in zip(loggers, saved):
            lg.handlers[:], lg.propagate = handlers, propagate
            lg.setLevel(level)


def test_a_bundle_from_another_pipeline_version_is_scored_with_a_warning(demo, tmp_path, monkeypatch):
    """Raw rows are encoded by this dlf's code; data preprocessed by another pipeline version may have been encoded
    differently (Parquet bools became "1"/"0" in version 7): said on stderr by dlf predict and in dlf serve's log."""
    import dlf.data.preprocess as preprocess
    bundle = load_bundle(demo["bundle"])
    assert bundle.feature_map.meta["pipeline_version"] == preprocess.PIPELINE_VERSION and bundle.warnings == []
    monkeypatch.setattr(preprocess, "PIPELINE_VERSION", preprocess.PIPELINE_VERSION + 1)
    assert "preprocessed by pipeline version" in load_bundle(demo["bundle"]).warnings[0]
    res = CliRunner().invoke(app, ["predict", str(demo["bundle"]), "--input", str(demo["test_csv"]), "--output",
                                   str(tmp_path / "p.csv")])
    assert res.exit_code == 0 and "warning:" in res.stderr and "pipeline version" in res.stderr, res.output


def test_folders_left_by_a_dead_export_are_removed(demo, tmp_path, dead_pid):
    """An export killed while swapping folders left .OUT.old-PID-* (the previous bundle) or .OUT.tmp-PID-*
    beside the bundle, which nothing removed."""
    for kind in ("old", "tmp"):
        (tmp_path / f".b.{kind}-{dead_pid}-0123abcd").mkdir()
    export_bundle(demo["run"], tmp_path / "b", format="torch")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


@needs_ort
def test_a_numeric_field_without_train_values_is_scored_as_in_training(tmp_path):
    """A numeric column empty in every train row (logged only from some date on) was fed to the model as the request
    held it, through a weight training never updated (every train row fed it 0, the missing value): its value moved
    the score. The encoder now feeds it 0 whatever the input, in dlf predict (torch and ONNX), evaluate and serve."""
    from dlf.data.preprocess import preprocess
    from dlf.data.schema import FieldOptions, Schema
    from dlf.serve.evaluate import evaluate_file

    rng = np.random.default_rng(0)

    def write(path, late):  # click, city, age (always logged) and late (logged from the test rows on)
        lines = ["click,city,age,late"] + [f"{i % 2},c{i % 5},{20 + i % 40},{f'{v:.3f}' if late else ''}"
                                           for i, v in enumerate(rng.normal(50, 30, 60))]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return path
    train, test = write(tmp_path / "train.csv", False), write(tmp_path / "test" / "test.csv", True)
    blank = tmp_path / "blank.csv"  # the test rows without their late values
    header, *rows = test.read_text().splitlines()
    blank.write_text(header + "\n" + "".join(row.rsplit(",", 1)[0] + ",\n" for row in rows))
    schema = Schema(fields=[FieldOptions("city"), FieldOptions("age", "numeric", transform="standardize"),
                            FieldOptions("late", "numeric", transform="standardize")], label="click")
    preprocess("generic", [train, f"test={test}"], tmp_path / "d", schema=schema)
    assert json.loads((tmp_path / "d" / "feature_map.json").read_text())["meta"]["fields"]["late"]["train_count"] == 0
    b = load_bundle(export_bundle(fake_run(tmp_path / "d", tmp_path / "run", model="dlf"), tmp_path / "b",
                                  format="onnx"))
    batch, _ = b.encoder.encode_chunk(next(read_input(b, test, BadRows())), BadRows())
    assert (batch.numeric[:, 1] == 0).all() and (batch.numeric[:, 0] != 0).any()
    # said where dlf predict / evaluate / serve print the bundle's warnings
    assert b.warnings == [f"{b.path}: numeric field(s) 'late' had no value in the training rows, so the model "
                          "learned nothing from them: they are scored as missing whatever the input holds"]
    for engine in ("torch", "onnx"):
        got, want = (pq.read_table(predict_file(b, f, tmp_path / f"{engine}-{f.stem}.parquet", engine=engine).output)
                     ["probability"].to_numpy() for f in (test, blank))
        assert np.array_equal(got, want), engine
    assert evaluate_file(b, test).metrics == evaluate_file(b, blank).metrics
    pytest.importorskip("fastapi")
    import warnings
    with warnings.catch_warnings():  # starlette's deprecation of httpx, as in test_serve_server
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from dlf.serve.server import create_app
    with TestClient(create_app(b)) as client:
        answers = [client.post("/predict", json=[{"city": "c1", "age": 30} | late]).json()["probabilities"]
                   for late in ({}, {"late": 1e6}, {"late": -3}, {"late": "0.5"})]
    assert answers[1:] == answers[:1] * 3
    with TestClient(create_app(b)) as client:  # a value that is not a number is still an error
        assert client.post("/predict", json=[{"late": "abc"}]).status_code == 422
