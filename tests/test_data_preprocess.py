"""Preprocessing guarantees: bad input errors (file, line, field), skip mode, no-op re-runs,
atomic output, vocabularies fit on train only, hashing, splits."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from dlf.data.features import OOV_ID
from dlf.data.preprocess import hash_strings, preprocess
from dlf.data.schema import DataError
from dlf.data.store import load_processed, vocabulary

FIX = Path(__file__).parent / "fixtures" / "data"
CRITEO = (FIX / "criteo_tiny.txt").read_text().splitlines()


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def criteo_with(tmp_path, line_no: int, new_line: str) -> Path:
    lines = list(CRITEO)
    lines[line_no - 1] = new_line
    return write(tmp_path / "in.txt", "\n".join(lines) + "\n")


def replace_field(line: str, j: int, value: str) -> str:
    parts = line.split("\t")
    parts[j] = value
    return "\t".join(parts)


@pytest.mark.parametrize("line_no, make, needle", [
    (5, lambda l: "\t".join(l.split("\t")[:-1]), "in.txt:5: expected 40 columns"),
    (7, lambda l: replace_field(l, 3, "abc"), "in.txt:7: field 'I3': expected a number, got 'abc'"),
    (4, lambda l: replace_field(l, 0, "2"), "in.txt:4: field 'label': expected label 0 or 1, got '2'"),
    (9, lambda l: replace_field(l, 5, "nan"), "in.txt:9: field 'I5': expected a number, got 'nan'"),
])
def test_bad_rows_stop_with_file_line_and_field(tmp_path, line_no, make, needle):
    path = criteo_with(tmp_path, line_no, make(CRITEO[line_no - 1]))
    with pytest.raises(DataError) as exc:
        preprocess("criteo", [path], tmp_path / "out", options={"min_count": 1})
    assert needle in str(exc.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_skip_mode_drops_and_reports_bad_rows(tmp_path):
    lines = list(CRITEO)
    lines[2] = replace_field(lines[2], 3, "x1")
    lines[10] = "\t".join(lines[10].split("\t")[:30])
    path = write(tmp_path / "in.txt", "\n".join(lines) + "\n")
    r = preprocess("criteo", [path], tmp_path / "out", options={"min_count": 1, "ratios": "1,0,0"}, on_bad_row="skip")
    bad = r.feature_map.meta["bad_rows"]
    assert bad["count"] == 2 and bad["by_file"] == {str(path): 2}
    assert any("in.txt:3:" in e for e in bad["examples"]) and any("in.txt:11:" in e for e in bad["examples"])
    fm, tr, _, _ = load_processed(tmp_path / "out")
    assert len(tr) == 22
    keep = [l for i, l in enumerate(CRITEO) if i not in (2, 10)]
    np.testing.assert_array_equal(np.asarray(tr.label), [float(l.split("\t")[0]) for l in keep])


def test_libfm_label_and_index_errors(tmp_path):
    opts = {"fields": "user:4,item:5,ctx:3"}
    p = write(tmp_path / "a.libfm", "1 0:1 4:1 9:1\n0 1:1 5:1 10:1\n")
    with pytest.raises(DataError, match=r"a.libfm:2: field 'label': expected label -1 or 1"):
        preprocess("libfm", [p], tmp_path / "o", options=opts)
    p = write(tmp_path / "b.libfm", "1 0:1 4:1 9:1\n-1 1:1 5:1 99:1\n")
    with pytest.raises(DataError, match=r"b.libfm:2: feature '99:1'"):
        preprocess("libfm", [p], tmp_path / "o", options=opts)
    p = write(tmp_path / "c.libfm", "1 0:1 1:1 9:1\n")
    with pytest.raises(DataError, match=r"c.libfm:1: field 'user' appears more than once"):
        preprocess("libfm", [p], tmp_path / "o", options=opts)
    with pytest.raises(DataError, match="needs the fields' index ranges"):
        preprocess("libfm", [p], tmp_path / "o")


def test_empty_missing_and_badly_encoded_files(tmp_path):
    with pytest.raises(DataError, match="empty.txt: file is empty"):
        preprocess("criteo", [write(tmp_path / "empty.txt", "")], tmp_path / "o")
    with pytest.raises(DataError, match="nope.txt: no such file"):
        preprocess("criteo", [tmp_path / "nope.txt"], tmp_path / "o")
    lines = list(CRITEO)
    lines[5] = replace_field(lines[5], 20, "ab\xff\xfe")
    data = "\n".join(lines).encode("latin-1") + b"\n"
    with pytest.raises(DataError, match=r"enc.txt:6: column 'C7': bytes that are not valid utf-8"):
        preprocess("criteo", [write(tmp_path / "enc.txt", data)], tmp_path / "o", options={"min_count": 1})
    r = preprocess("criteo", [tmp_path / "enc.txt"], tmp_path / "o", options={"min_count": 1}, on_bad_row="skip")
    assert r.feature_map.meta["bad_rows"]["count"] == 1


def test_unknown_preset_option_and_non_dataset_output(tmp_path):
    with pytest.raises(DataError, match="unknown preset 'critteo'; available: criteo"):
        preprocess("critteo", [FIX / "criteo_tiny.txt"], tmp_path / "o")
    with pytest.raises(DataError, match="unknown option"):
        preprocess("criteo", [FIX / "criteo_tiny.txt"], tmp_path / "o", options={"min_cnt": 2})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="is not a dlf processed dataset"):
        preprocess("criteo", [FIX / "criteo_tiny.txt"], tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_rerun_is_noop_and_changes_rebuild(tmp_path):
    src = write(tmp_path / "in.txt", "\n".join(CRITEO) + "\n")
    out = tmp_path / "out"
    r1 = preprocess("criteo", [src], out, options={"min_count": 1})
    assert not r1.skipped
    stamp = (out / "train" / "label.npy").stat().st_mtime_ns
    r2 = preprocess("criteo", [src], out, options={"min_count": 1})
    assert r2.skipped and (out / "train" / "label.npy").stat().st_mtime_ns == stamp
    r3 = preprocess("criteo", [src], out, options={"min_count": 2})  # schema change
    assert not r3.skipped and r3.feature_map.meta["fingerprint"] != r1.feature_map.meta["fingerprint"]
    write(src, "\n".join(CRITEO[:20]) + "\n")  # input change
    r4 = preprocess("criteo", [src], out, options={"min_count": 2})
    assert not r4.skipped and r4.rows == 20


def test_crash_mid_write_leaves_previous_output_intact(tmp_path):
    out = tmp_path / "out"
    preprocess("criteo", [FIX / "criteo_tiny.txt"], out, options={"min_count": 1})
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="simulated crash"):
        preprocess("criteo", [FIX / "criteo_tiny.txt"], out, options={"min_count": 2}, block_bytes=4096,
                   _fail_after_chunks=1)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert before == after
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no half-written folder left
    # a killed run leaves a temporary folder without feature_map.json: never loadable, never `out`
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        preprocess("criteo", [FIX / "criteo_tiny.txt"], fresh, options={"min_count": 1}, _fail_after_chunks=0)
    assert not fresh.exists()
    with pytest.raises(DataError, match="no such processed dataset"):
        load_processed(fresh)


def test_value_seen_only_outside_train_maps_to_oov(tmp_path):
    train = write(tmp_path / "train.csv", "y,a\n1,x\n0,y\n1,x\n0,z\n")
    test = write(tmp_path / "test.csv", "y,a\n1,x\n0,only_in_test\n1,\n")
    schema = tmp_path / "s.yaml"
    schema.write_text("label: y\ncategorical: [a]\n")
    preprocess("generic", [f"train={train}", f"valid={test}", f"test={test}"], tmp_path / "o", schema=schema)
    fm, tr, va, te = load_processed(tmp_path / "o")
    vocab = vocabulary(tmp_path / "o", "a")
    assert set(vocab) == {"x", "y", "z"} and vocab["x"] == 2  # most frequent first; no missing in train
    assert list(te.categorical[:, 0]) == [vocab["x"], OOV_ID, OOV_ID]  # unseen and (unseen) missing -> OOV
    assert fm.fields[0].vocab_size == 2 + 3


def test_min_count_and_missing_id(tmp_path):
    train = write(tmp_path / "t.csv", "y,a\n1,x\n0,x\n1,rare\n0,\n1,x\n")
    schema = write(tmp_path / "s.yaml", "label: y\nfields: [{name: a, min_count: 2}]\nsplit: {ratios: [1, 0, 0]}\n")
    preprocess("generic", [train], tmp_path / "o", schema=schema)
    fm, tr, _, _ = load_processed(tmp_path / "o")
    assert list(tr.categorical[:, 0]) == [3, 3, OOV_ID, 2, 3]  # missing = 2, x = 3, rare (< min_count) = OOV
    assert fm.meta["fields"]["a"]["has_missing"] is True


def test_hash_buckets(tmp_path):
    out = tmp_path / "o"
    preprocess("criteo", [FIX / "criteo_tiny.txt"], out, options={"buckets": 16, "ratios": "1,0,0"})
    fm, tr, _, _ = load_processed(out)
    assert all(f.vocab_size == 16 + 3 for f in fm.fields)
    cats = np.asarray(tr.categorical)
    assert cats.min() >= 2 and cats.max() < 19
    c1 = [l.split("\t")[14] for l in CRITEO]
    import pyarrow as pa
    want = [2 if v == "" else 3 + int(h % 16) for v, h in zip(c1, hash_strings(pa.array(c1)))]
    assert list(cats[:, 13]) == want
    assert hash_strings(pa.array(["abc"]))[0] == hash_strings(pa.array(["x", "abc"]))[1]  # stable, position-free
    assert len(set(hash_strings(pa.array([f"v{i}" for i in range(1000)])))) == 1000


def test_random_split_is_seeded_and_disjoint(tmp_path):
    a = preprocess("criteo", [FIX / "criteo_tiny.txt"], tmp_path / "a", options={"min_count": 1, "seed": 1})
    b = preprocess("criteo", [FIX / "criteo_tiny.txt"], tmp_path / "b", options={"min_count": 1, "seed": 1})
    c = preprocess("criteo", [FIX / "criteo_tiny.txt"], tmp_path / "c", options={"min_count": 1, "seed": 2,
                                                                                 "ratios": "0.5,0.25,0.25"})
    assert a.feature_map.meta["splits"] == b.feature_map.meta["splits"]
    assert sum(s["rows"] for s in c.feature_map.meta["splits"].values()) == 24
    for name in ("train", "valid", "test"):
        assert np.array_equal(np.load(tmp_path / "a" / name / "categorical.npy"),
                              np.load(tmp_path / "b" / name / "categorical.npy"))


def test_time_split_orders_by_time(tmp_path):
    rows = "\n".join(f"{i % 2},u{i % 3},{1000 - i}" for i in range(40))
    src = write(tmp_path / "t.csv", "y,u,ts\n" + rows + "\n")
    schema = write(tmp_path / "s.yaml", "label: y\ncategorical: [u]\nsplit: {method: time, time_column: ts, "
                                        "ratios: [0.5, 0.25, 0.25]}\n")
    r = preprocess("generic", [src], tmp_path / "o", schema=schema)
    assert [r.feature_map.meta["splits"][k]["rows"] for k in ("train", "valid", "test")] == [20, 10, 10]
    _, tr, va, te = load_processed(tmp_path / "o")
    # rows are written in file order, which is reverse time: test holds the first 10 lines (latest times)
    assert list(np.asarray(te.label)) == [float(i % 2) for i in range(10)]
