"""dlf predict / evaluate count, per vocabulary field, the values unseen in training and print a note when a field is
mostly unseen, far more than in the training data's own valid/test rows: a file that writes an id column as floats
('3.0' for '3') was scored as all-OOV rows without a word."""
import json
import shutil

import pytest
from typer.testing import CliRunner

from dlf.cli import app
from dlf.data.preprocess import preprocess
from dlf.data.schema import FieldOptions, Schema
from dlf.serve.bundle import export_bundle, load_bundle
from dlf.serve.evaluate import evaluate_file
from dlf.serve.predict import predict_file
from test_serve_bundle import fake_run

SCHEMA = Schema(fields=[FieldOptions("user"), FieldOptions("age", "numeric", transform="standardize"),
                        FieldOptions("tags", "multi", separator=";"), FieldOptions("site", buckets=16)],
                label="click")


def write(path, rows, user=lambda i: str(i % 40), tags=lambda i: f"t{i % 3};t{3 + i % 2}"):
    lines = ["click,user,age,tags,site"] + [f"{i % 2},{user(i)},{20 + i % 30},{tags(i)},s{i % 7}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("unseen")
    # test rows: 5 of 100 users unseen in train (the baseline is not 0)
    test = write(d / "test.csv", 100, user=lambda i: "999" if i < 5 else str(i % 40))
    preprocess("generic", [write(d / "train.csv", 400), f"test={test}"], d / "data", schema=SCHEMA)
    return d


def bundle_of(data, old: bool = False):
    """The bundle of an untrained lr run; old: of a dataset preprocessed before oov_share_eval was recorded."""
    name = "old" if old else "new"
    if not (data / f"b-{name}").exists():
        src = data / f"data-{name}"
        shutil.copytree(data / "data", src)
        if old:
            fm = json.loads((src / "feature_map.json").read_text())
            for stats in fm["meta"]["fields"].values():
                stats.pop("oov_share_eval", None)
            (src / "feature_map.json").write_text(json.dumps(fm))
        export_bundle(fake_run(src, data / f"run-{name}"), data / f"b-{name}")
    return data / f"b-{name}"


def test_preprocessing_records_the_valid_test_share_of_unseen_values(data):
    meta = json.loads((data / "data" / "feature_map.json").read_text())["meta"]
    held_out = meta["splits"]["valid"]["rows"] + meta["splits"]["test"]["rows"]
    stats = meta["fields"]
    assert stats["user"]["oov_share_eval"] == pytest.approx(5 / held_out)
    assert stats["tags"]["oov_share_eval"] == 0.0
    assert "oov_share_eval" not in stats["site"] and "oov_share_eval" not in stats["age"]  # hashed, numeric


def test_an_id_column_written_as_floats_gets_a_note(data):
    b = bundle_of(data)
    floats = write(data / "floats.csv", 50, user=lambda i: f"{i % 40}.0", tags=lambda i: f"t{i % 3};zz")
    res = CliRunner().invoke(app, ["predict", str(b), "--input", str(floats), "--output", str(data / "p.csv")])
    assert res.exit_code == 0, res.output
    baseline = json.loads((data / "data" / "feature_map.json").read_text())["meta"]["fields"]["user"]["oov_share_eval"]
    assert (f"note: field 'user': 100.0% of its values were unseen in training (training's valid/test: "
            f"{baseline:.1%}), e.g. '0.0': check how the file writes this column") in res.output.replace("\n", "")
    assert "field 'tags'" not in res.output  # half of its values unseen: not over 0.5
    unseen = predict_file(load_bundle(b), floats, data / "p.parquet").unseen
    assert unseen["user"] == {"values": 50, "unseen": 50, "share": 1.0, "baseline": baseline, "example": "0.0"}
    assert unseen["tags"] | {"baseline": None} == {"values": 100, "unseen": 50, "share": 0.5, "baseline": None,
                                                    "example": "zz"}
    assert set(unseen) == {"user", "tags"}  # no hashed or numeric field
    assert evaluate_file(load_bundle(b), floats).to_dict()["unseen"] == unseen
    res = CliRunner().invoke(app, ["evaluate", str(b), "--input", str(floats)])
    assert res.exit_code == 0 and "note: field 'user': 100.0%" in res.output.replace("\n", ""), res.output


def test_a_file_written_as_in_training_gets_no_note(data):
    res = CliRunner().invoke(app, ["predict", str(bundle_of(data)), "--input", str(data / "test.csv"), "--output",
                                   str(data / "q.csv")])
    assert res.exit_code == 0 and "note:" not in res.output, res.output
    assert predict_file(load_bundle(bundle_of(data)), data / "test.csv", data / "q.parquet").unseen["user"] == {
        "values": 100, "unseen": 5, "share": 0.05, "baseline": pytest.approx(0.05, abs=0.05), "example": "999"}


def test_a_feature_map_without_the_baseline_notes_over_half_unseen(data):
    b = bundle_of(data, old=True)
    floats = write(data / "floats-old.csv", 10, user=lambda i: f"{i}.0")
    res = CliRunner().invoke(app, ["predict", str(b), "--input", str(floats), "--output", str(data / "r.csv")])
    assert res.exit_code == 0, res.output
    assert ("note: field 'user': 100.0% of its values were unseen in training, e.g. '0.0': check how the file writes "
            "this column") in res.output.replace("\n", "")
    assert predict_file(load_bundle(b), floats, data / "r.parquet").unseen["user"]["baseline"] is None
