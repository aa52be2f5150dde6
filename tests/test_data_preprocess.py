"""Preprocessing guarantees: bad input errors (file, line, field), skip mode, no-op re-runs,
atomic output, vocabularies fit on train only, hashing, splits."""
import dataclasses
import gzip
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from dlf.data.features import OOV_ID
from dlf.data.preprocess import (_NUMBER, NUMBER_LIMIT, ChunkParser, VocabIndex, hash_strings, parse_times,
                                 preprocess)
from dlf.data.readers import BadRows, Chunk
from dlf.data.schema import DataError, FieldOptions, Schema
from dlf.data.store import load_dataset, load_processed, vocabulary

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
    # criteo-bucket fields: inf was cast to int64 into a garbage bucket
    (9, lambda l: replace_field(l, 5, "1e400"), "in.txt:9: field 'I5': expected a finite number"),
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


def test_libfm_value_zero_is_an_absent_feature_and_other_values_are_bad(tmp_path):
    """libFM's x_i is the value: `4:0` is absent (it was read as present, item '4'); a one-hot field has no
    meaning for 0.5 or 2 (they were silently read as 1); a numeric field keeps its value."""
    schema = Schema(fields=[FieldOptions("user", range=(0, 3)), FieldOptions("item", range=(4, 8)),
                            FieldOptions("tags", "multi", range=(9, 11), separator=","),
                            FieldOptions("price", "numeric", range=(12, 12))],
                    label="label", label_values="pm1", header=False, columns=["label"])
    p = write(tmp_path / "v.libfm", "1 0:1 4:0 9:1 10:0 12:0.5\n-1 1:1.0 5:1 10:1 12:0\n1 2:1 4:1 4:0 11:1\n")
    preprocess("libfm", [p], tmp_path / "o", schema=schema, options={"ratios": "1,0,0"})
    _, tr, _, _ = load_processed(tmp_path / "o")
    item, tags = vocabulary(tmp_path / "o", "item"), vocabulary(tmp_path / "o", "tags")
    assert "4" in item and np.asarray(tr.categorical)[:, 1].tolist() == [2, item["5"], item["4"]]  # 2: missing
    assert np.asarray(tr.multi)[:, 0, 0].tolist() == [tags["9"], tags["10"], tags["11"]]
    assert (np.asarray(tr.multi)[:, 0, 1:] == 0).all()  # 10:0 is not in row 1's list
    np.testing.assert_array_equal(np.asarray(tr.numeric)[:, 0], [0.5, 0, 0])
    for token, needle in (("4:0.5", "feature '4:0.5': field 'item' is one-hot: expected value 1, or 0"),
                          ("10:2", "feature '10:2': field 'tags' is one-hot"),
                          ("4:", "feature '4:': expected index:value with a number as value"),
                          ("4:x", "feature '4:x': expected index:value with a number as value")):
        p = write(tmp_path / "b.libfm", f"1 0:1 5:1\n-1 1:1 {token}\n")
        with pytest.raises(DataError, match=re.escape(f"b.libfm:2: {needle}")):
            preprocess("libfm", [p], tmp_path / "o2", schema=schema)


def test_empty_missing_and_badly_encoded_files(tmp_path):
    with pytest.raises(DataError, match="empty.txt: file is empty"):
        preprocess("criteo", [write(tmp_path / "empty.txt", "")], tmp_path / "o")
    with pytest.raises(DataError, match="nope.txt: no such file"):
        preprocess("criteo", [tmp_path / "nope.txt"], tmp_path / "o")
    os.mkfifo(tmp_path / "pipe.txt")  # `--input <(zcat train.txt.gz)`: its size reads 0, and it is read twice
    with pytest.raises(DataError, match=r"pipe.txt: not a regular file \(a pipe or a device\)"):
        preprocess("criteo", [tmp_path / "pipe.txt"], tmp_path / "o")
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


@pytest.mark.parametrize("preset, options, needle", [
    ("criteo", {"min_count": "abc"}, "--option min_count=abc: expected an integer"),  # was a ValueError traceback
    ("criteo", {"seed": "1.5"}, "--option seed=1.5: expected an integer"),
    # options a preset does not read were silently ignored
    ("avazu", {"numeric": "log"}, "--option numeric applies to preset(s) criteo, kdd12, not 'avazu'"),
    ("criteo", {"fields": "a:3"}, "--option fields applies to preset(s) libfm, not 'criteo'"),
    ("criteo", {"dataset_id": "x"}, "--option dataset_id picks a dataset of a FuxiCTR dataset_config.yaml"),
])
def test_options_that_are_not_integers_or_do_not_apply_are_errors(tmp_path, preset, options, needle):
    with pytest.raises(DataError, match=re.escape(needle)):
        preprocess(preset, [FIX / "criteo_tiny.txt"], tmp_path / "o", options=options)


def test_options_for_the_presets_own_fields_with_a_schema_are_errors(tmp_path):
    """With a schema, the preset's own fields (which numeric/fields shape) are not used: the option was ignored."""
    with pytest.raises(DataError, match="--option numeric shapes the preset's own fields; with --schema"):
        preprocess("criteo", [FIX / "criteo_tiny.txt"], tmp_path / "o", options={"numeric": "log"},
                   schema=Schema(fields=[FieldOptions("C1")], label="label", header=False, columns=["label", "C1"]))


def test_a_directory_given_as_a_file_or_schema_is_one_line(tmp_path):
    """Both were IsADirectoryError tracebacks (the fingerprint, the schema reader opened them)."""
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match=r"d: is a directory, expected a file"):
        preprocess("criteo", [tmp_path / "d"], tmp_path / "o")
    with pytest.raises(DataError, match=r"schema file '.*d' cannot be read"):
        preprocess("generic", [FIX / "criteo_tiny.txt"], tmp_path / "o", schema=tmp_path / "d")


def test_an_input_file_given_twice_is_an_error(tmp_path):
    """The same file twice doubled its rows, or put them in train and test alike (test AUC on training rows)."""
    with pytest.raises(DataError, match=r"criteo_tiny\.txt: given twice \(as train and as test\)"):
        preprocess("criteo", [FIX / "criteo_tiny.txt", f"test={FIX / 'criteo_tiny.txt'}"], tmp_path / "o")
    with pytest.raises(DataError, match="given twice"):
        preprocess("criteo", [FIX / "criteo_tiny.txt", FIX / ".." / "data" / "criteo_tiny.txt"], tmp_path / "o")


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


@pytest.mark.parametrize("damage", [{"format_version": 99}, {"fields": "garbage"}, {"meta": {"store_version": 1,
                                                                                           "fingerprint": []}}])
def test_a_damaged_feature_map_in_the_output_is_rebuilt(tmp_path, damage):
    """A feature_map.json of another version or damaged made the re-run die with ValueError/TypeError."""
    out = tmp_path / "out"
    preprocess("criteo", [FIX / "criteo_tiny.txt"], out, options={"min_count": 1})
    fm = json.loads((out / "feature_map.json").read_text())
    (out / "feature_map.json").write_text(json.dumps({**fm, **damage}))
    r = preprocess("criteo", [FIX / "criteo_tiny.txt"], out, options={"min_count": 1})
    assert not r.skipped and load_processed(out)[0].meta["fingerprint"] == r.feature_map.meta["fingerprint"]


def test_an_output_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    """A file where the output folder's parent should be, or a full disk, were OSError tracebacks."""
    import errno

    from dlf.data import store
    write(tmp_path / "f", "x")
    with pytest.raises(DataError, match=r"f/out: cannot write the output there"):
        preprocess("criteo", [FIX / "criteo_tiny.txt"], tmp_path / "f" / "out", options={"min_count": 1})

    def full(self, cols):
        raise OSError(errno.ENOSPC, "No space left on device", "label.npy")
    monkeypatch.setattr(store.SplitWriter, "write", full)
    with pytest.raises(DataError, match="label.npy: No space left on device"):
        preprocess("criteo", [FIX / "criteo_tiny.txt"], tmp_path / "out", options={"min_count": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_an_output_that_is_a_symlink_stays_one(tmp_path):
    """--out LINK (to a folder on a bigger disk) was replaced by a new folder beside the link; the target kept the
    old data and the link itself was left as .LINK.old-*."""
    (tmp_path / "big").mkdir()
    preprocess("criteo", [FIX / "criteo_tiny.txt"], tmp_path / "big" / "data", options={"min_count": 1})
    (tmp_path / "link").symlink_to(tmp_path / "big" / "data")
    r = preprocess("criteo", [FIX / "criteo_tiny.txt"], tmp_path / "link", options={"min_count": 2})
    assert not r.skipped and (tmp_path / "link").is_symlink()
    assert load_processed(tmp_path / "link")[0].meta["fingerprint"] == r.feature_map.meta["fingerprint"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big", "link"]
    assert sorted(p.name for p in (tmp_path / "big").iterdir()) == ["data"]


def test_folders_left_by_a_dead_run_are_removed(tmp_path, dead_pid):
    """A run killed while swapping folders left .OUT.old-PID-* (a whole dataset) that nothing removed; an output
    name with glob characters ('out[1]') never matched its own leftovers."""
    out = tmp_path / "out[1]"
    for kind in ("old", "tmp"):
        (tmp_path / f".out[1].{kind}-{dead_pid}-0123abcd").mkdir()
        (tmp_path / f".out[1].{kind}-{dead_pid}-0123abcd" / "categorical.npy").write_bytes(b"x" * 100)
    preprocess("criteo", [FIX / "criteo_tiny.txt"], out, options={"min_count": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out[1]"]


def test_a_previous_output_left_by_a_run_killed_mid_swap_is_put_back(tmp_path, dead_pid):
    """A run killed in publish_dir between `out -> .OUT.old-PID-*` and `tmp -> out` leaves no `out`: the next run
    deleted the .old folder, the previous dataset, whole on disk. It is put back at `out` when there is none."""
    from dlf._io import remove_dead_siblings

    out = tmp_path / "out"
    preprocess("criteo", [FIX / "criteo_tiny.txt"], out, options={"min_count": 1})
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    out.rename(tmp_path / f".out.old-{dead_pid}-0123abcd")  # what the killed run left: the old output, renamed
    (tmp_path / f".out.tmp-{dead_pid}-4567ef01").mkdir()  # and its new one, complete or not
    remove_dead_siblings(out)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    load_processed(out)
    (tmp_path / f".out.old-{dead_pid}-0123abcd").mkdir()  # beside an `out`, an .old folder is the one replaced
    remove_dead_siblings(out)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


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


@pytest.mark.parametrize("options, needle", [
    ({"time_column": "ts"}, "--option time_column is read by a time split only, and the split is 'random'"),
    ({"split": "sequential", "seed": "3"}, "--option seed is read by a random split only"),
])
def test_a_split_option_the_split_method_does_not_read_stops(tmp_path, options, needle):
    """--option time_column=ts without split=time gave a random split (the rows of a log meant to be split by time
    shuffled across train and test); a seed with a sequential split was ignored as well."""
    src = write(tmp_path / "t.csv", "y,u,ts\n" + "".join(f"{i % 2},u{i % 3},{i}\n" for i in range(20)))
    schema = write(tmp_path / "s.yaml", "label: y\ncategorical: [u]\n")
    with pytest.raises(DataError, match=re.escape(needle)):
        preprocess("generic", [src], tmp_path / "o", schema=schema, options=options)
    # a schema's time split taken back to random by the option is no conflict
    write(tmp_path / "time.yaml", "label: y\ncategorical: [u]\nsplit: {method: time, time_column: ts}\n")
    preprocess("generic", [src], tmp_path / "o", schema=tmp_path / "time.yaml", options={"split": "random"})


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_header_in_another_case_is_pointed_out(tmp_path, suffix):
    """A log exported with 'Click,Device' for a schema naming click and device: the error listed both spellings
    without saying that case is what differs."""
    if suffix == "csv":
        write(tmp_path / "t.csv", "Click,Device\n1,ios\n0,web\n")
    else:
        pytest.importorskip("pyarrow.parquet").write_table(pa.table({"Click": [1, 0], "Device": ["ios", "web"]}),
                                                           tmp_path / "t.parquet")
    schema = Schema(fields=[FieldOptions("device")], label="click")
    with pytest.raises(DataError, match=r"\(names are case-sensitive: 'Click' for 'click', 'Device' for 'device'\)"):
        preprocess("generic", [tmp_path / f"t.{suffix}"], tmp_path / "o", schema=schema)


@pytest.mark.parametrize("texts", [["2024-01-01 00:00:00", "", "2024-01-01T00:00:01"],  # one cast: all naive
                                   ["2024-01-01T01:00:00+01:00", None, "2024-01-01T00:00:01Z"],  # all zoned
                                   ["2024-01-01", " ", "1704067201"]])  # mixed forms: value by value
def test_parse_times_reads_iso_text_and_numbers_as_seconds(texts):
    v, wrong, _ = parse_times(pa.array(texts, pa.string()))
    assert len(wrong) == 0
    np.testing.assert_array_equal(v, [1704067200.0, np.nan, 1704067201.0])


def test_iso_times_in_a_csv_order_a_time_split_as_their_seconds(tmp_path):
    """A CSV log's timestamps are ISO 8601 text: every row stopped with "field 'ts': expected a number". Naive,
    zoned (their UTC instant) and date-only forms order the rows as the same times in seconds do."""
    import datetime as dt
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    times = [start + dt.timedelta(hours=(i * 7) % 40) for i in range(40)]  # not in file order
    forms = [lambda t: t.strftime("%Y-%m-%d %H:%M:%S"), lambda t: t.astimezone(dt.timezone(dt.timedelta(hours=2)))
             .isoformat(), lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")]
    iso = [t.strftime("%Y-%m-%d") if t.hour == 0 else forms[i % 3](t) for i, t in enumerate(times)]
    secs = [str(int(t.timestamp())) for t in times]
    schema = write(tmp_path / "s.yaml", "label: y\ncategorical: [u]\nsplit: {method: time, time_column: ts, "
                                        "ratios: [0.5, 0.25, 0.25]}\n")
    labels = []
    for name, column in (("iso", iso), ("secs", secs)):
        src = write(tmp_path / f"{name}.csv", "y,u,ts\n" + "".join(f"{i % 2},u{i % 3},{t}\n" for i, t in
                                                                 enumerate(column)))
        r = preprocess("generic", [src], tmp_path / name, schema=schema)
        assert [r.feature_map.meta["splits"][k]["rows"] for k in ("train", "valid", "test")] == [20, 10, 10]
        labels.append([np.load(tmp_path / name / split / "label.npy") for split in ("train", "valid", "test")])
    for a, b in zip(*labels):
        np.testing.assert_array_equal(a, b)
    bad = write(tmp_path / "bad.csv", "y,u,ts\n1,a,2024-01-01\n0,b,yesterday\n")
    with pytest.raises(DataError, match=r"bad\.csv:3: field 'ts': expected a number or an ISO 8601 time .* got "
                                        r"'yesterday'"):
        preprocess("generic", [bad], tmp_path / "bad", schema=schema)


def test_a_time_split_that_leaves_a_split_empty_says_why(tmp_path):
    """Two distinct times (a daily log of two days) cannot fill three splits: valid and test came out empty without
    a word, and training then stopped suggesting other ratios, which cannot help."""
    src = write(tmp_path / "t.csv", "y,u,day\n" + "".join(f"{i % 2},u{i % 3},{20240101 + i % 2}\n" for i in range(40)))
    schema = write(tmp_path / "s.yaml", "label: y\ncategorical: [u]\nsplit: {method: time, time_column: day}\n")
    said = []
    r = preprocess("generic", [src], tmp_path / "o", schema=schema, log=said.append)
    assert [r.feature_map.meta["splits"][k]["rows"] for k in ("train", "valid", "test")] == [40, 0, 0]
    assert ("note: the time split left valid and test empty: rows of one time stay together, and 'day' has 2 "
            "distinct value(s) in the train files") in said
    with pytest.raises(DataError, match=r"split\(s\) \['valid', 'test'\] are empty; .* \(re-run dlf preprocess with "
                                        r"--input valid=FILE / test=FILE: a time split keeps the rows of one 'day' "
                                        r"value together, so too few distinct times leave a split empty whatever"):
        load_dataset(tmp_path / "o")  # what dlf train --data says


def test_a_field_without_train_values_is_noted(tmp_path):
    """A column logged only from some date on (empty in every train row of a time split), or ids all rarer than
    min_count, give a field the model cannot learn from; it was built without a word."""
    rows = "".join(f"{i % 2},u{i % 3},{i if i >= 30 else ''},id{i},{i}\n" for i in range(40))
    src = write(tmp_path / "t.csv", "y,u,late,rare,t\n" + rows)
    schema = write(tmp_path / "s.yaml", "label: y\ncategorical: [u, {name: rare, min_count: 2}]\nnumeric: [late]\n"
                                        "split: {method: time, time_column: t, ratios: [0.7, 0.1, 0.2]}\n")
    said = []
    preprocess("generic", [src], tmp_path / "o", schema=schema, log=said.append)
    notes = [s for s in said if s.startswith("note: field(s)")]
    assert notes == ["note: field(s) 'rare', 'late' have no value in the train rows (every one missing, or seen fewer "
                     "than min_count times): the model learns nothing from them"], said
    # its valid/test values would reach the model through a weight training never moved (every train row fed 0):
    # they are written as 0 too, as the bundle's encoder feeds them when scoring
    _, tr, va, te = load_processed(tmp_path / "o")
    assert all(not np.asarray(ds.numeric).any() for ds in (tr, va, te)) and len(te)


def test_max_len_0_sized_by_a_few_outlier_lists_is_noted(tmp_path):
    """max_len 0 takes the longest train list: one row of 1,000 items among lists of at most 3 padded every row of
    multi.npy to 1,000 without a word. The note names the field and the sizes; the length stays the longest."""
    rows = [f"{i % 2},{';'.join(f't{j}' for j in range(i % 4))},{'x' * (i % 80 > 0)},{';'.join(['w'] * 100)}"
            for i in range(2000)]
    rows.insert(7, "1," + ";".join(f"t{j}" for j in range(1000)) + ",x," + "w")
    src = write(tmp_path / "t.csv", "y,tags,short,wide\n" + "\n".join(rows) + "\n")
    schema = ("label: y\nmulti:\n  - {name: tags, separator: ';'}\n  - {name: short, separator: ';'}\n"
              "  - {name: wide, separator: ';'}\nsplit: {method: random, ratios: [1, 0, 0]}\n")
    said = []
    r = preprocess("generic", [src], tmp_path / "o", schema=write(tmp_path / "s.yaml", schema), log=said.append)
    assert [s for s in said if s.startswith("note:")] == [
        "note: multi-valued field(s) 'tags' (longest train list 1,000 items, 99.9% of them at most 3): max_len 0 pads "
        "every list to the longest, so multi.npy takes 22.9 MiB (2.3 MiB with max_len at those 99.9th percentiles); "
        "set the field's max_len in the schema to cut the longer lists"], said  # 2,001 rows x 3 fields x 4 bytes
    assert r.feature_map.fields[0].max_len == 1000
    said.clear()  # a max_len given is what the user chose: no note
    preprocess("generic", [src], tmp_path / "o2", log=said.append,
               schema=write(tmp_path / "s2.yaml", schema.replace("name: tags,", "name: tags, max_len: 1000,")))
    assert not [s for s in said if s.startswith("note:")], said


@pytest.mark.parametrize("kind", ["timestamp", "timestamp_tz", "timestamp_ns", "date"])
def test_a_parquet_timestamp_or_date_column_orders_a_time_split(tmp_path, kind):
    """A Parquet timestamp or date column as `time_column` was read as its text ('2020-01-01 00:00:00'): every row
    stopped with "expected a number". It orders the rows as the same times in seconds since the epoch do.
    Nanoseconds (pandas' unit) stopped with Arrow's "Integer value ... not in range" (a count beyond 2^53)."""
    import datetime as dt

    import pyarrow.parquet as pq
    start = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc if kind == "timestamp_tz" else None)
    step = dt.timedelta(days=1) if kind == "date" else dt.timedelta(seconds=90)
    times = [start + step * ((i * 7) % 40) for i in range(40)]  # not in file order
    when = (pa.array([t.date() for t in times], pa.date32()) if kind == "date" else
            pa.array(times, pa.timestamp("ns" if kind == "timestamp_ns" else "us",
                                         tz="UTC" if kind == "timestamp_tz" else None)))
    seconds = [int((t.replace(tzinfo=None) - dt.datetime(1970, 1, 1)).total_seconds()) for t in times]
    pq.write_table(pa.table({"y": [i % 2 for i in range(40)], "u": [f"u{i % 3}" for i in range(40)], "when": when,
                             "seconds": seconds}), tmp_path / "t.parquet")
    outs = []
    for column in ("when", "seconds"):
        schema = Schema(fields=[FieldOptions("u")], label="y", format="parquet")
        schema.split = dataclasses.replace(schema.split, method="time", time_column=column, ratios=(0.5, 0.25, 0.25))
        r = preprocess("generic", [tmp_path / "t.parquet"], tmp_path / column, schema=schema.validate())
        assert [r.feature_map.meta["splits"][k]["rows"] for k in ("train", "valid", "test")] == [20, 10, 10]
        outs.append([np.load(tmp_path / column / split / "label.npy") for split in ("train", "valid", "test")])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_a_time_split_by_option_reads_the_time_column_of_a_schema(tmp_path):
    """--option split=time --option time_column=ts with a schema that does not name ts: the column was not read
    ("no column 'ts' among the columns this preset reads"); it gives the split the schema would."""
    rows = "\n".join(f"{i % 2},u{i % 3},{(i * 7) % 40}" for i in range(40))
    src = write(tmp_path / "t.csv", "y,u,ts\n" + rows + "\n")
    write(tmp_path / "a.yaml", "label: y\ncategorical: [u]\nsplit: {method: time, time_column: ts}\n")
    write(tmp_path / "b.yaml", "label: y\ncategorical: [u]\n")
    preprocess("generic", [src], tmp_path / "a", schema=tmp_path / "a.yaml")
    preprocess("generic", [src], tmp_path / "b", schema=tmp_path / "b.yaml",
               options={"split": "time", "time_column": "ts"})
    for split in ("train", "valid", "test"):
        for name in ("label", "categorical"):
            np.testing.assert_array_equal(np.load(tmp_path / "a" / split / f"{name}.npy"),
                                          np.load(tmp_path / "b" / split / f"{name}.npy"))


# ---- the fast paths give what the exact rules give -----------------------------------------

NUMBER_CASES = ["1", "-2", "+3", " 4 ", "\t5", "6.", ".5", "-.5", "1e2", "1E-2", "2.5e+3", "0", "-0", "", "  ",
                "nan", "NaN", "inf", "-inf", "Infinity", "abc", "1,5", "0x10", "1e", "e5", "--1", "1.2.3", "1_000",
                "\u0661", "12abc", "- 1", ".", "1e400", "-1e39", "3e38", "1e200"]


@pytest.mark.parametrize("value", NUMBER_CASES)
def test_number_parsing_matches_the_exact_rule(value):
    """Arrow's cast (fast path) must accept exactly what the number regex accepts, with the same value."""
    parser = ChunkParser(Schema(fields=[FieldOptions("x", "numeric")], label="y").validate())
    chunk = Chunk("f.csv", np.array([2, 3]), {"y": pa.array(["1", "0"]), "x": pa.array(["7", value])})
    bad = BadRows("skip")
    parsed = parser.parse(chunk, bad)
    text = value.strip(" \t")
    if text and not re.fullmatch(_NUMBER, text):
        assert bad.examples == [f"f.csv:3: field 'x': expected a number, got {text!r}"]
        assert list(parsed.num[0]) == [7.0]
    elif text and not abs(float(text)) <= NUMBER_LIMIT:  # beyond float32 (1e400 reads as inf)
        assert bad.examples == [f"f.csv:3: field 'x': expected a finite number within +-3.403e+38 (float32), "
                                f"got {text!r}"]
        assert list(parsed.num[0]) == [7.0]
    else:
        assert bad.count == 0
        np.testing.assert_array_equal(parsed.num[0], [7.0, float(text) if text else np.nan])


@pytest.mark.parametrize("label_values, regex", [("binary", r"[01](\.0*)?"), ("pm1", r"(-1|\+?1)(\.0*)?")])
@pytest.mark.parametrize("value", ["0", "1", "-1", "+1", " 1", "1 ", "1.0", "0.", "-1.00", "2", "1e0", "", "yes"])
def test_label_parsing_matches_the_exact_rule(label_values, regex, value):
    """Labels are checked against their usual spellings first; anything else must meet the regex."""
    parser = ChunkParser(Schema(fields=[FieldOptions("x")], label="y", label_values=label_values).validate())
    chunk = Chunk("f.csv", np.array([2, 3]), {"y": pa.array(["1", value]), "x": pa.array(["a", "b"])})
    bad = BadRows("skip")
    parsed = parser.parse(chunk, bad)
    text = value.strip()
    if re.fullmatch(regex, text):
        assert bad.count == 0 and list(parsed.label) == [1.0, float(float(text) > 0)]
    else:
        assert bad.count == 1 and bad.examples[0].startswith("f.csv:3: field 'y': expected label")
        assert list(parsed.label) == [1.0]


def test_vocab_index_is_exact_when_hashes_collide():
    swap = str.maketrans("ab", "ba")
    a = "a"
    for _ in range(11):  # Thue-Morse: a string and its a<->b swap collide in any polynomial hash mod 2^64
        a += a.translate(swap)
    b = a.translate(swap)
    assert hash_strings(pa.array([a]))[0] == hash_strings(pa.array([b]))[0]  # the premise of this test
    index = VocabIndex(pa.array(["x", a, b, "y"]))
    assert list(index.find(pa.array([b, a, "y", "zz", "x", a[:-1] + b[-1]]))) == [2, 1, 3, -1, 0, -1]
    assert list(VocabIndex(pa.array([], pa.string())).find(pa.array(["x"]))) == [-1]


def _messy_criteo(rng, rows: int, bad: bool) -> list[str]:
    ints = ["", "0", "1", "2", "3", "-1", "7", "20", "150", "4000", " 9 ", "+3", "2.5", "1e2"]
    cats = ["", "a1", "b2", "c3", "d4", "e5", "f6", "x7", "\u00e9t\u00e9"]
    out = []
    for i in range(rows):
        fields = [str(rng.integers(2))] + list(rng.choice(ints, 13)) + list(rng.choice(cats[:3 + i % 6], 26))
        if bad and i % 37 == 5:
            fields[1 + i % 13] = "n/a"
        if bad and i % 53 == 7:
            fields = fields[:20]
        out.append("\t".join(fields))
    return out


def _reference_ids(train: list[list[str]], rows: list[list[str]], min_count: int) -> np.ndarray:
    """The encoding rules of docs/data.md written out in plain Python, one field at a time."""
    def key(j, v):
        if j > 13 or not v.strip():
            return v or None
        x = float(v)
        return str(math.floor(math.log(x) ** 2)) if x > 2 else str(int(x))

    out = np.zeros((len(rows), 39), dtype=np.int32)
    for j in range(1, 40):
        counts: dict[str, int] = {}
        keys = [key(j, r[j]) for r in train]
        for k in keys:
            if k is not None:
                counts[k] = counts.get(k, 0) + 1
        vocab = sorted((k for k, c in counts.items() if c >= min_count), key=lambda k: (-counts[k], k))
        has_missing = None in keys
        ids = {k: 2 + has_missing + i for i, k in enumerate(vocab)}
        for i, r in enumerate(rows):
            k = key(j, r[j])
            out[i, j - 1] = (2 if has_missing else OOV_ID) if k is None else ids.get(k, OOV_ID)
    return out


@pytest.mark.parametrize("block_bytes, index_in_ratio", [(1500, 0), (1 << 20, 10 ** 9)])
def test_encoding_matches_a_plain_python_reference(tmp_path, monkeypatch, block_bytes, index_in_ratio):
    """Vocabularies fit on train (counts merged over many chunks), ids by count then value, missing and
    OOV ids, criteo buckets, bad rows skipped with the right line numbers: the same for any block size
    and either vocabulary lookup (VocabIndex, pc.index_in)."""
    monkeypatch.setattr("dlf.data.preprocess.INDEX_IN_RATIO", index_in_ratio)
    rng = np.random.default_rng(0)
    train_lines, test_lines = _messy_criteo(rng, 400, bad=True), _messy_criteo(rng, 60, bad=False)
    train = write(tmp_path / "train.txt", "\n".join(train_lines) + "\n")
    test = write(tmp_path / "test.txt", "\n".join(test_lines) + "\n")
    r = preprocess("criteo", [f"train={train}", f"test={test}"], tmp_path / "o", on_bad_row="skip",
                   options={"min_count": 2, "ratios": "1,0,0"}, block_bytes=block_bytes)
    problem = {i + 1: "expected 40 columns" if l.count("\t") != 39 else
               f"field 'I{1 + i % 13}': expected a number, got 'n/a'"
               for i, l in enumerate(train_lines) if "n/a" in l or l.count("\t") != 39}
    bad = r.feature_map.meta["bad_rows"]
    assert bad["count"] == len(problem) > 10 and len(bad["examples"]) == 10
    for e in bad["examples"]:
        assert problem[int(e.split(":")[1])] in e
    good = [l.split("\t") for i, l in enumerate(train_lines) if i + 1 not in problem]
    tests = [l.split("\t") for l in test_lines]
    _, tr, _, te = load_processed(tmp_path / "o")
    np.testing.assert_array_equal(np.asarray(tr.categorical), _reference_ids(good, good, 2))
    np.testing.assert_array_equal(np.asarray(te.categorical), _reference_ids(good, tests, 2))
    np.testing.assert_array_equal(np.asarray(tr.label), [float(r[0]) for r in good])


@pytest.mark.parametrize("later", ["malformed", "value"])
def test_with_many_chunks_in_flight_the_first_bad_line_is_the_one_reported(tmp_path, later):
    # chunks of ~2 lines are parsed by helper threads while later ones are read: whichever check finds the later
    # problem (the reader's column count, or a value), the error must still name the earlier line
    lines = list(CRITEO)
    lines[3] = replace_field(lines[3], 2, "x")  # line 4: a bad number
    lines[5] = "\t".join(lines[5].split("\t")[:20]) if later == "malformed" else replace_field(lines[5], 0, "7")
    path = write(tmp_path / "in.txt", "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"in.txt:4: field 'I2': expected a number"):
        preprocess("criteo", [path], tmp_path / "out", options={"min_count": 1}, block_bytes=600)
    r = preprocess("criteo", [path], tmp_path / "out", options={"min_count": 1}, block_bytes=600, on_bad_row="skip")
    bad = r.feature_map.meta["bad_rows"]
    assert bad["count"] == 2 and [e.split(":")[1] for e in bad["examples"]] == ["4", "6"]


LINE_PROBLEMS = {  # what makes a Criteo line bad, each found by another check
    "columns": lambda l: "\t".join(l.split("\t")[:20]),  # the reader's (Arrow's) column count
    "blank": lambda l: "",  # the reader's empty line
    "encoding": lambda l: replace_field(l, 20, "caf\xe9"),  # the reader's UTF-8 check (Latin-1 bytes)
    "value": lambda l: replace_field(l, 2, "x"),  # the parser's, on a field checked after the label
    "label": lambda l: replace_field(l, 0, "x"),  # the parser's first check
}


@pytest.mark.parametrize("block_bytes", [600, 1 << 24])
@pytest.mark.parametrize("first", ["value", "columns", "encoding"])
@pytest.mark.parametrize("later", sorted(LINE_PROBLEMS))
def test_the_first_bad_line_is_reported_whichever_check_finds_it(tmp_path, later, first, block_bytes):
    """In one chunk, the reader's problems (column count, empty line, encoding) were raised before the parser
    looked at the rows ahead of them, and the parser raised field by field (label first): a bad value on line 3
    was reported as line 7's problem."""
    lines = [l.encode() for l in CRITEO]
    lines[2] = LINE_PROBLEMS[first](CRITEO[2]).encode("latin-1")
    lines[6] = LINE_PROBLEMS[later](CRITEO[6]).encode("latin-1")
    path = write(tmp_path / "in.txt", b"\n".join(lines) + b"\n")
    options = {"min_count": 1}
    with pytest.raises(DataError) as exc:
        preprocess("criteo", [path], tmp_path / "out", options=options, block_bytes=block_bytes)
    assert str(exc.value).startswith(f"{path}:3: ")
    r = preprocess("criteo", [path], tmp_path / "out", options=options, block_bytes=block_bytes, on_bad_row="skip")
    bad = r.feature_map.meta["bad_rows"]
    assert bad["count"] == 2 and sorted(e.split(":")[1] for e in bad["examples"]) == ["3", "7"]
    assert r.rows == len(CRITEO) - 2


# ---- numbers out of range, Parquet floats, streaming statistics ------------------------------

def generic_csv(tmp_path, ages: list[str]) -> Path:
    rows = [f"{i % 2},c{i % 3},{a}" for i, a in enumerate(ages)]
    return write(tmp_path / "in.csv", "click,city,age\n" + "\n".join(rows) + "\n")


AGE_SCHEMA = Schema(fields=[FieldOptions("city"), FieldOptions("age", "numeric", transform="standardize")],
                    label="click")


@pytest.mark.parametrize("huge", ["1e400", "-1e200", "1e39"])
def test_numbers_beyond_float32_are_bad_values(tmp_path, huge):
    """1e400 was read as inf (mean Infinity, std NaN in feature_map.json, every value 0); 1e200 died with
    OverflowError in freeze."""
    src = generic_csv(tmp_path, ["30", "40", huge] + [str(20 + i) for i in range(7)])
    with pytest.raises(DataError, match=rf"in.csv:4: field 'age': expected a finite number .*got '{huge}'"):
        preprocess("generic", [src], tmp_path / "o", schema=AGE_SCHEMA, options={"ratios": "1,0,0"})
    r = preprocess("generic", [src], tmp_path / "o", schema=AGE_SCHEMA, options={"ratios": "1,0,0"},
                   on_bad_row="skip")
    assert r.feature_map.meta["bad_rows"]["count"] == 1
    json.loads((tmp_path / "o" / "feature_map.json").read_text(), parse_constant=pytest.fail)  # no NaN/Infinity
    ages = np.array([30, 40] + [20 + i for i in range(7)], dtype=np.float64)
    _, tr, _, _ = load_processed(tmp_path / "o")
    np.testing.assert_allclose(np.asarray(tr.numeric)[:, 0], (ages - ages.mean()) / ages.std(), rtol=1e-6)


def test_standardize_is_stable_for_large_offsets_across_chunks(tmp_path):
    """Microsecond timestamps: E[x^2] - mean^2 cancelled to 0 (std fell back to 1.0)."""
    rng = np.random.default_rng(0)
    ts = 1_700_000_000_000_000 + rng.integers(0, 100_000, 3000)
    src = generic_csv(tmp_path, [str(t) for t in ts])
    r = preprocess("generic", [src], tmp_path / "o", schema=AGE_SCHEMA, options={"ratios": "1,0,0"},
                   block_bytes=4096)  # many chunks: their statistics are merged
    stats = r.feature_map.meta["fields"]["age"]
    assert stats["mean"] == pytest.approx(ts.mean(), abs=1) and stats["std"] == pytest.approx(ts.std(), rel=1e-6)


def test_parquet_float_columns_nan_missing_inf_bad(tmp_path):
    """NaN (pandas' missing number), inf and values beyond 2^53 crashed the reader with ArrowInvalid."""
    pq = pytest.importorskip("pyarrow.parquet")
    ages = [30.0, float("nan"), 2.0 ** 60, 41.5, 52.0, None]
    table = pa.table({"click": [0, 1, 0, 1, 0, 1], "city": [1.0, 2.0, 3.0, float("nan"), 1.0, 2.0], "age": ages})
    pq.write_table(table, tmp_path / "t.parquet")
    schema = Schema(fields=[FieldOptions("city"), FieldOptions("age", "numeric")], label="click")
    r = preprocess("generic", [tmp_path / "t.parquet"], tmp_path / "o", schema=schema, options={"ratios": "1,0,0"})
    _, tr, _, _ = load_processed(tmp_path / "o")
    np.testing.assert_array_equal(np.asarray(tr.numeric)[:, 0], np.array([30, 0, 2.0 ** 60, 41.5, 52, 0], np.float32))
    assert sorted(vocabulary(tmp_path / "o", "city")) == ["1", "2", "3"]  # 1.0 reads as "1"
    assert r.feature_map.meta["fields"]["city"]["has_missing"]  # NaN is missing
    pq.write_table(table.set_column(2, "age", pa.array(ages[:4] + [float("-inf"), 1.0])), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t.parquet row 5: field 'age': expected a number, got '-inf'"):
        preprocess("generic", [tmp_path / "t.parquet"], tmp_path / "o2", schema=schema, options={"ratios": "1,0,0"})


def test_parquet_float_ids_beyond_2_53_match_the_same_ids_written_as_integers(tmp_path):
    """pandas writes an int id column with a missing value as float64: 2^60 was the text '1.152921504606847e+18',
    which is not the token '1152921504606846976' of the same id in an int64 column (it read as out of vocabulary)."""
    pq = pytest.importorskip("pyarrow.parquet")
    ids = [2 ** 60, 2 ** 62 + 2 ** 40, 3, 2 ** 63 + 2 ** 11, 7]
    train = pa.table({"label": [0, 1, 0, 1, 0, 1], "uid": pa.array([float(i) for i in ids] + [None], pa.float64())})
    test = pa.table({"label": [1, 0, 1, 0, 1], "uid": pa.array(ids, pa.uint64())})
    d = tmp_path / "bars"
    d.mkdir()
    pq.write_table(train, d / "train.parquet")
    pq.write_table(train, d / "valid.parquet")
    pq.write_table(test, d / "test.parquet")
    preprocess("fuxictr", [d], tmp_path / "o")
    fm, tr, _, te = load_processed(tmp_path / "o")
    vocab = vocabulary(tmp_path / "o", "uid")
    assert sorted(vocab) == sorted(str(i) for i in ids)
    np.testing.assert_array_equal(np.asarray(te.categorical)[:, 0], [vocab[str(i)] for i in ids])  # none OOV
    np.testing.assert_array_equal(np.asarray(tr.categorical)[:5, 0], np.asarray(te.categorical)[:, 0])


def test_a_parquet_column_name_twice_stops_when_it_is_read(tmp_path):
    """A Parquet file may repeat a column name: reading it was Arrow's KeyError 'Field "city" exists 2 times in
    schema' (a traceback). A repeated name that is not read is no problem, as in a CSV header."""
    pq = pytest.importorskip("pyarrow.parquet")
    columns = [pa.array([0, 1, 0]), pa.array(["a", "b", "a"]), pa.array(["x", "y", "z"]), pa.array([1, 2, 3])]
    pq.write_table(pa.Table.from_arrays(columns, names=["click", "city", "city", "n"]), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t\.parquet: Parquet column name\(s\) \['city'\] appear more than once"):
        preprocess("generic", [tmp_path / "t.parquet"], tmp_path / "o",
                   schema=Schema(fields=[FieldOptions("city")], label="click"))
    preprocess("generic", [tmp_path / "t.parquet"], tmp_path / "o", options={"ratios": "1,0,0"},
               schema=Schema(fields=[FieldOptions("n")], label="click"))


def test_parquet_float32_values_read_as_a_csv_writes_them(tmp_path):
    """A float32 column (pandas' downcast, Spark's FloatType) read as float64's text: the category 0.3 was
    '0.30000001192092896', so the same value from a CSV or a request was out of vocabulary."""
    pq = pytest.importorskip("pyarrow.parquet")
    score = pa.array(np.array([0.3, 0.1, 1.5, np.nan, 2.0, 0.3], dtype=np.float32))
    pq.write_table(pa.table({"click": [0, 1, 0, 1, 1, 0], "score": score}), tmp_path / "t.parquet")
    preprocess("generic", [tmp_path / "t.parquet"], tmp_path / "o", options={"ratios": "1,0,0"},
               schema=Schema(fields=[FieldOptions("score")], label="click"))
    assert sorted(vocabulary(tmp_path / "o", "score")) == ["0.1", "0.3", "1.5", "2"]


def test_parquet_bool_columns_are_0_and_1(tmp_path):
    """pandas' bool columns: a bool label said "expected label 0 or 1, got 'true'", a bool numeric field
    "expected a number, got 'false'"."""
    pq = pytest.importorskip("pyarrow.parquet")
    flags = [True, False, None, True, False, True]
    pq.write_table(pa.table({"click": [True, False, True, False, True, False], "city": flags, "age": flags}),
                   tmp_path / "b.parquet")
    schema = Schema(fields=[FieldOptions("city"), FieldOptions("age", "numeric")], label="click")
    preprocess("generic", [tmp_path / "b.parquet"], tmp_path / "o", schema=schema, options={"ratios": "1,0,0"})
    _, tr, _, _ = load_processed(tmp_path / "o")
    np.testing.assert_array_equal(np.asarray(tr.label), [1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(np.asarray(tr.numeric)[:, 0], [1, 0, 0, 1, 0, 1])
    assert sorted(vocabulary(tmp_path / "o", "city")) == ["0", "1"]


def test_parquet_list_columns_are_multi_valued_fields(tmp_path):
    """FuxiCTR's parquet sequences are list columns: ArrowNotImplementedError 'Unsupported cast from list<element:
    int64> to utf8' (a traceback); a list column read by another kind of field is a one-line error."""
    pq = pytest.importorskip("pyarrow.parquet")
    hist = pa.array([[1, 2], [3], [], None, [2, 2, 1]], pa.list_(pa.int64()))
    # a fixed-size list (Polars' Array) was "Unsupported cast from fixed_size_list<...>[2] to utf8"
    pair = pa.array([[1, None], [3, 3], [None, None], None, [2, 1]], pa.list_(pa.int64(), 2))
    pq.write_table(pa.table({"click": [0, 1, 0, 1, 1], "user": ["a", "b", "a", "c", "b"], "hist": hist,
                             "pair": pair}), tmp_path / "t.parquet")
    schema = Schema(fields=[FieldOptions("user"), FieldOptions("hist", "multi", separator="^"),
                            FieldOptions("pair", "multi")], label="click")
    preprocess("generic", [tmp_path / "t.parquet"], tmp_path / "o", schema=schema, options={"ratios": "1,0,0"})
    _, tr, _, _ = load_processed(tmp_path / "o")
    v = vocabulary(tmp_path / "o", "hist")
    want = [[v["1"], v["2"], 0], [v["3"], 0, 0], [2, 0, 0], [2, 0, 0], [v["2"], v["2"], v["1"]]]  # 2: missing
    np.testing.assert_array_equal(np.asarray(tr.multi)[:, 0], want)
    v = vocabulary(tmp_path / "o", "pair")
    want = [[v["1"], 0, 0], [v["3"], v["3"], 0], [2, 0, 0], [2, 0, 0], [v["2"], v["1"], 0]]
    np.testing.assert_array_equal(np.asarray(tr.multi)[:, 1], want)
    with pytest.raises(DataError, match=r"t\.parquet: column 'hist' holds lists .* only a multi-valued field"):
        preprocess("generic", [tmp_path / "t.parquet"], tmp_path / "o2",
                   schema=Schema(fields=[FieldOptions("hist")], label="click"))


def test_a_parquet_binary_column_that_is_not_utf8_names_the_row(tmp_path):
    """A binary column with bytes that are not UTF-8 stopped naming the file and the column only; the row too."""
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"click": [0, 1, 0], "city": pa.array([b"Paris", None, b"M\xfcnchen"])}),
                   tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t\.parquet row 3: column 'city' of type binary cannot be read as text"):
        preprocess("generic", [tmp_path / "t.parquet"], tmp_path / "o",
                   schema=Schema(fields=[FieldOptions("city")], label="click"))


def test_a_parquet_list_item_holding_the_separator_stops(tmp_path):
    """List items are joined with the field's separator and split again: an item 'a|b' silently became the two
    items 'a' and 'b'. It stops, naming the row, the column and the item."""
    pq = pytest.importorskip("pyarrow.parquet")
    hist = pa.array([["x"], ["y", "a|b"], None], pa.list_(pa.string()))
    pq.write_table(pa.table({"click": [0, 1, 0], "hist": hist}), tmp_path / "t.parquet")
    schema = Schema(fields=[FieldOptions("hist", "multi", separator="|")], label="click")
    with pytest.raises(DataError, match=r"t\.parquet row 2: column 'hist': the list item 'a\|b' holds the field's "
                                        r"separator '\|'"):
        preprocess("generic", [tmp_path / "t.parquet"], tmp_path / "o", schema=schema, options={"ratios": "1,0,0"})


@pytest.mark.parametrize("encoding, bom", [("utf-16", b""), ("iso-8859-1", b"\xef\xbb\xbf"), ("utf-8", b"")])
def test_header_in_the_schemas_encoding(tmp_path, encoding, bom):
    """Excel's "Unicode Text" is UTF-16: its header was read up to the byte 0x0A and decoded alone, "header is
    not valid utf-16" even with `encoding: utf-16` in the schema."""
    text = "click\tcity\tage\n" + "".join(f"{i % 2}\tParís{i % 3}\t{20 + i}\n" for i in range(12))
    write(tmp_path / "t.tsv", bom + text.encode(encoding))
    schema = Schema(fields=[FieldOptions("city"), FieldOptions("age", "numeric")], label="click", format="tsv",
                    encoding=encoding)
    preprocess("generic", [tmp_path / "t.tsv"], tmp_path / "o", schema=schema, options={"ratios": "1,0,0"})
    assert sorted(vocabulary(tmp_path / "o", "city")) == ["París0", "París1", "París2"]
    np.testing.assert_array_equal(np.asarray(load_processed(tmp_path / "o")[1].numeric)[:, 0], np.arange(20, 32))


def test_compressed_inputs_are_read(tmp_path):
    """A Criteo train.txt.gz was read (Arrow decompressed it when given the path) until the reader opened the file
    itself; a .csv.gz header was never decompressed ("header is not valid utf-8")."""
    write(tmp_path / "in.txt.gz", gzip.compress(("\n".join(CRITEO) + "\n").encode()))
    a = preprocess("criteo", [tmp_path / "in.txt.gz"], tmp_path / "a", options={"min_count": 1})
    b = preprocess("criteo", [FIX / "criteo_tiny.txt"], tmp_path / "b", options={"min_count": 1})
    assert a.rows == b.rows == 24
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "train" / "categorical.npy"),
                                  np.load(tmp_path / "b" / "train" / "categorical.npy"))
    plain = generic_csv(tmp_path, [str(20 + i) for i in range(10)]).read_bytes()
    write(tmp_path / "in.csv.gz", gzip.compress(plain))
    schema = Schema(fields=AGE_SCHEMA.fields, label="click", format="csv")
    assert preprocess("generic", [tmp_path / "in.csv.gz"], tmp_path / "c", schema=schema).rows == 10
    # format auto: the name says csv through its compression suffix (was 'cannot tell the format from the name')
    schema = Schema(fields=AGE_SCHEMA.fields, label="click")
    assert preprocess("generic", [tmp_path / "in.csv.gz"], tmp_path / "e", schema=schema).rows == 10
    write(tmp_path / "not.txt.gz", "\n".join(CRITEO))  # a name that lies: the error named the output folder
    with pytest.raises(DataError, match=r"not\.txt\.gz: cannot read: zlib inflate failed"):
        preprocess("criteo", [tmp_path / "not.txt.gz"], tmp_path / "d")


def test_csv_header_with_a_bom_and_header_only_files(tmp_path):
    """Excel's "CSV UTF-8" starts with a BOM: header has no column(s) ['click'] before; a header-only file's
    error did not name it."""
    ages = [str(20 + i) for i in range(10)]
    plain = generic_csv(tmp_path, ages).read_bytes()
    write(tmp_path / "bom.csv", b"\xef\xbb\xbf" + plain)
    a = preprocess("generic", [tmp_path / "in.csv"], tmp_path / "a", schema=AGE_SCHEMA)
    b = preprocess("generic", [tmp_path / "bom.csv"], tmp_path / "b", schema=AGE_SCHEMA)
    assert a.rows == b.rows == 10
    for name in ("label", "categorical", "numeric"):
        np.testing.assert_array_equal(np.load(tmp_path / "a" / "train" / f"{name}.npy"),
                                      np.load(tmp_path / "b" / "train" / f"{name}.npy"))
    write(tmp_path / "head.csv", "click,city,age\n")
    with pytest.raises(DataError, match=r"head\.csv: no training rows"):
        preprocess("generic", [tmp_path / "head.csv"], tmp_path / "c", schema=AGE_SCHEMA)


def test_header_names_repeated_only_in_columns_not_read_are_fine(tmp_path):
    """Excel's `click,city,age,,` header (empty names for trailing empty cells) stopped with 'duplicate column
    names' though neither is read; a repeated name that is read is still an error naming it."""
    write(tmp_path / "x.csv", "click,city,age,,\n" + "".join(f"{i % 2},c{i % 3},{20 + i},,\n" for i in range(10)))
    r = preprocess("generic", [tmp_path / "x.csv"], tmp_path / "o", schema=AGE_SCHEMA)
    assert r.rows == 10
    write(tmp_path / "d.csv", "click,city,age,city\n1,a,3,b\n")
    with pytest.raises(DataError, match=re.escape("d.csv:1: column name(s) ['city'] appear more than once")):
        preprocess("generic", [tmp_path / "d.csv"], tmp_path / "o2", schema=AGE_SCHEMA)


def test_a_column_whose_name_cannot_name_a_file_is_used_through_source(tmp_path):
    """A field named 'site/app' died in pass 2 with FileNotFoundError (its vocab/site/app.arrow); the schema now
    refuses it up front, and the column works under another name."""
    write(tmp_path / "s.csv", "click,site/app\n" + "".join(f"{i % 2},s{i % 3}\n" for i in range(10)))
    bad = Schema(fields=[FieldOptions("site/app")], label="click")
    with pytest.raises(DataError, match=re.escape("{name: site_app, source: site/app}")):
        preprocess("generic", [tmp_path / "s.csv"], tmp_path / "o", schema=bad)
    assert not list(tmp_path.glob(".o.tmp-*"))
    good = Schema(fields=[FieldOptions("site_app", source="site/app")], label="click")
    preprocess("generic", [tmp_path / "s.csv"], tmp_path / "o", schema=good, options={"ratios": "1,0,0"})
    assert sorted(vocabulary(tmp_path / "o", "site_app")) == ["s0", "s1", "s2"]


def test_long_lines_and_quoted_newlines_at_block_edges(tmp_path):
    """A line longer than Arrow's parse block died with "straddling object straddles two block boundaries (try to
    increase block size?)" and a quoted value holding a newline at a block edge with "CSV parser got out of sync
    with chunker ... enabling the option 'newlines_in_values'" (options the user cannot set). Both read now, with
    the same rows, bad rows and line numbers as when everything fits one block."""
    rows = []
    for i in range(400):
        city = ("x" * 9000) if i in (120, 121, 300) else (f'"c{i % 7}\nnext\nand\nmore"' if i % 5 == 0 else f"c{i % 7}")
        rows.append(f"{i % 2},{city},{20 + i % 50 if i not in (150, 350) else 'old'}")
    src = write(tmp_path / "in.csv", "click,city,age\n" + "\n".join(rows[:200]) + "\n1,c1\n" + "\n".join(rows[200:])
                + "\n")
    small = preprocess("generic", [src], tmp_path / "small", schema=AGE_SCHEMA, on_bad_row="skip", block_bytes=2048)
    whole = preprocess("generic", [src], tmp_path / "whole", schema=AGE_SCHEMA, on_bad_row="skip")
    assert small.rows == whole.rows == 398
    assert small.feature_map.meta["bad_rows"] == whole.feature_map.meta["bad_rows"]
    for split in ("train", "valid", "test"):
        for name in ("label", "categorical", "numeric"):
            np.testing.assert_array_equal(np.load(tmp_path / "small" / split / f"{name}.npy"),
                                          np.load(tmp_path / "whole" / split / f"{name}.npy"))
    assert vocabulary(tmp_path / "small", "city") == vocabulary(tmp_path / "whole", "city")
    assert "c0\nnext\nand\nmore" in vocabulary(tmp_path / "small", "city")
    errors = []
    for block in (2048, 1 << 24):
        with pytest.raises(DataError) as exc:
            preprocess("generic", [src], tmp_path / "err", schema=AGE_SCHEMA, block_bytes=block)
        errors.append(str(exc.value))
    # records 152, 202 and 353, after 29, 39 and 68 values of 4 lines: lines 239, 319, 557; 239 is the first bad one
    assert sorted(int(e.split(":")[1]) for e in whole.feature_map.meta["bad_rows"]["examples"]) == [239, 319, 557]
    assert any(e.endswith("in.csv:319: expected 3 columns separated by ',', got 2 ('1,c1')")
               for e in whole.feature_map.meta["bad_rows"]["examples"])
    assert errors[0] == errors[1] and errors[0].endswith("in.csv:239: field 'age': expected a number, got 'old'")


@pytest.mark.parametrize("ending", [b"\n\n", b"\n\n\n", b"\r\n\r\n", b"\n\r\n"])
def test_blank_lines_at_the_end_of_a_file_are_not_rows(tmp_path, ending):
    """A trailing blank line (`echo >> file`, an editor) was a row of empty values: the run stopped at its very
    end with "field 'label': expected label 0 or 1, got ''"; a blank line inside the data is still a bad row."""
    text = "\n".join(CRITEO).encode()
    if ending.startswith(b"\r"):
        text = text.replace(b"\n", b"\r\n")
    preprocess("criteo", [write(tmp_path / "a.txt", text + b"\n")], tmp_path / "a", options={"min_count": 1})
    preprocess("criteo", [write(tmp_path / "b.txt", text + ending)], tmp_path / "b", options={"min_count": 1})
    for split in ("train", "valid", "test"):
        for name in ("label", "categorical"):
            np.testing.assert_array_equal(np.load(tmp_path / "a" / split / f"{name}.npy"),
                                          np.load(tmp_path / "b" / split / f"{name}.npy"))
    r = preprocess("libfm", [write(tmp_path / "c.libfm", b"1 0:1 4:1\n-1 1:1 5:1" + ending)], tmp_path / "c",
                   options={"fields": "a:4,b:5", "ratios": "1,0,0"})
    assert r.rows == 2
    write(tmp_path / "d.txt", "\n".join(CRITEO[:3]) + "\n\n" + "\n".join(CRITEO[3:]) + "\n")
    with pytest.raises(DataError, match=r"d\.txt:4: empty line"):
        preprocess("criteo", [tmp_path / "d.txt"], tmp_path / "d")


BLANK_INPUTS = {  # (preset, file name, text with blank lines 3 and 6, options, rows)
    "csv": ("generic", "in.csv", "click,city,age\n1,a,20\n\n0,b,30\n1,a,40\n\n0,b,50\n1,\"a\",60\n", {}, 5),
    # a quoted value holding a newline (lines 4-5): the line of the second blank one is still 6
    "csv-multiline": ("generic", "in.csv", "click,city,age\n1,a,20\n\n0,\"b\nc\",30\n\n0,b,50\n1,a,40\n", {}, 4),
    "tsv": ("criteo", "in.txt", "\n".join(CRITEO[:2]) + "\n\n" + "\n".join(CRITEO[2:4]) + "\n\n"
            + "\n".join(CRITEO[4:7]) + "\n", {"min_count": 1}, 7),
    "libfm": ("libfm", "in.libfm", "1 0:1 4:1\n-1 1:1 5:1\n\n1 2:1 6:1\n-1 3:1 7:1\n\n1 0:1 8:1\n",
              {"fields": "a:4,b:5"}, 5),
}


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("kind", sorted(BLANK_INPUTS))
def test_a_blank_line_inside_the_data_is_reported_as_an_empty_line(tmp_path, kind, crlf):
    """A blank line in the middle of a file was reported as "field 'label': expected label ..., got ''" (Arrow
    reads it as a row of empty values); it is "FILE:LINE: empty line" in both modes, CSV, TSV and libFM alike."""
    preset, name, text, options, rows = BLANK_INPUTS[kind]
    src = write(tmp_path / name, text.replace("\n", "\r\n") if crlf else text)
    schema = AGE_SCHEMA if preset == "generic" else None
    with pytest.raises(DataError, match=rf"^{re.escape(str(src))}:3: empty line \(blank lines may only end a file\)$"):
        preprocess(preset, [src], tmp_path / "err", schema=schema, options=options)
    r = preprocess(preset, [src], tmp_path / "skip", schema=schema, options=options, on_bad_row="skip")
    assert r.rows == rows
    assert r.feature_map.meta["bad_rows"]["examples"] == [f"{src}:{n}: empty line (blank lines may only end a file)"
                                                          for n in (3, 6)]


def test_blank_lines_in_a_compressed_file(tmp_path):
    """A compressed file cannot be cut before its blank tail: blank lines are held until a row follows, so those
    that end the file are not rows and those inside it are empty lines."""
    src = write(tmp_path / "in.csv.gz", gzip.compress(b"click,city,age\n1,a,20\n\n0,b,30\n\n\n"))
    for block in (16, 1 << 20):
        r = preprocess("generic", [src], tmp_path / "o", schema=dataclasses.replace(AGE_SCHEMA, format="csv"),
                       on_bad_row="skip", block_bytes=block, force=True)
        assert r.rows == 2 and r.feature_map.meta["bad_rows"]["examples"] == [
            f"{src}:3: empty line (blank lines may only end a file)"]


def test_a_line_of_empty_values_is_not_an_empty_line(tmp_path):
    """A line of delimiters only (Excel's ',,') or with values in columns not read is a row of empty values to
    judge, not a blank line: reading the raw line tells them apart."""
    src = write(tmp_path / "in.csv", "click,city,age,unused\n1,a,20,x\n,,,\n,,,y\n0,b,30,x\n")
    r = preprocess("generic", [src], tmp_path / "o", schema=AGE_SCHEMA, on_bad_row="skip")
    assert r.feature_map.meta["bad_rows"]["examples"] == [f"{src}:{n}: field 'click': expected label 0 or 1, got ''"
                                                          for n in (3, 4)]


def test_an_unclosed_quote_stops_even_in_skip_mode(tmp_path):
    """`"broken` (a '"' never closed) made Arrow read the next 990 lines as one row: --on-bad-row skip dropped
    them all and reported 1 bad row."""
    rows = [f"{i % 2},{'c' if i != 10 else chr(34)}broken{i % 5},{20 + i % 50}" for i in range(1000)]
    src = write(tmp_path / "in.csv", "click,city,age\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"in\.csv:12: expected 3 columns separated by ',', got 2 in 990 lines read "
                                        r"as one row .*: a '\"' opened here is not closed"):
        preprocess("generic", [src], tmp_path / "o", schema=AGE_SCHEMA, on_bad_row="skip")


@pytest.mark.parametrize("block_bytes", [64, 1 << 24])
def test_errors_after_a_quoted_newline_name_the_physical_line(tmp_path, block_bytes):
    """Lines were counted by record: after a quoted value holding newlines (here in a column read, 'city', and in
    one that is not, 'note'), every error named a line too small, not the one an editor shows."""
    text = ('click,city,age,note\n'
            '1,"a\nb\nc",20,x\n'  # lines 2-4
            '0,b,30,"two\nlines"\n'  # lines 5-6
            '1,a,old,x\n'  # line 7: a bad value
            '0,b\n'  # line 8: too few columns
            '\n'  # line 9: empty
            '1,"x\r\ny",40,x\n'  # lines 10-11
            '1,c,big,x\n'  # line 12
            '0,c,50,x\n')
    src = write(tmp_path / "in.csv", text)
    with pytest.raises(DataError, match=rf"^{re.escape(str(src))}:7: field 'age': expected a number, got 'old'$"):
        preprocess("generic", [src], tmp_path / "o", schema=AGE_SCHEMA, block_bytes=block_bytes)
    r = preprocess("generic", [src], tmp_path / "o", schema=AGE_SCHEMA, block_bytes=block_bytes, on_bad_row="skip",
                   options={"split": "sequential", "ratios": "1,0,0"})
    bad = r.feature_map.meta["bad_rows"]
    assert bad["count"] == 4 and sorted(int(e.split(":")[1]) for e in bad["examples"]) == [7, 8, 9, 12]
    assert r.rows == 4 and "x\r\ny" in vocabulary(tmp_path / "o", "city")


def test_quoted_header_names_may_hold_the_delimiter(tmp_path):
    """'"clicks, total"' was split into two names: every data row then had a column too many."""
    write(tmp_path / "h.csv", 'click,"clicks, total",city\n' + "".join(f"{i % 2},{i},c{i % 3}\n" for i in range(10)))
    schema = Schema(fields=[FieldOptions("city"), FieldOptions("total", "numeric", source="clicks, total")],
                    label="click")
    r = preprocess("generic", [tmp_path / "h.csv"], tmp_path / "o", schema=schema, options={"ratios": "1,0,0"})
    assert r.rows == 10
    np.testing.assert_array_equal(np.asarray(load_processed(tmp_path / "o")[1].numeric)[:, 0], np.arange(10))


def test_quoted_header_names_may_hold_quotes(tmp_path):
    """A name with a quote at either end lost it (the CSV name "the \"\"city\"\"" is 'the "city"', read as
    'the "city'), so no schema could name the column: header has no column(s). A quoted name's quotes still go."""
    write(tmp_path / "h.csv", 'click,"the ""city""",screen 15", "age"\n'
          + "".join(f"{i % 2},c{i % 3},{i},{i}\n" for i in range(10)))
    schema = Schema(fields=[FieldOptions("city", source='the "city"'), FieldOptions("screen", source='screen 15"'),
                            FieldOptions("age", "numeric")], label="click")
    r = preprocess("generic", [tmp_path / "h.csv"], tmp_path / "o", schema=schema, options={"ratios": "1,0,0"})
    assert r.rows == 10 and sorted(vocabulary(tmp_path / "o", "city")) == ["c0", "c1", "c2"]


def test_vocabulary_of_a_folder_that_is_not_a_processed_dataset_is_one_line(tmp_path):
    # it was a FileNotFoundError traceback from reading feature_map.json
    with pytest.raises(DataError, match="no such processed dataset directory"):
        vocabulary(tmp_path / "nope", "a")
    with pytest.raises(DataError, match="no feature_map.json"):
        vocabulary(tmp_path, "a")
