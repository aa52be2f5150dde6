"""The memory-mapped loader: same interface and rows as ArrayDataset, seeded block shuffle, shards."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dlf.data.dataset import ArrayDataset
from dlf.data.preprocess import preprocess
from dlf.data.schema import DataError
from dlf.data.store import MappedDataset, load_processed

FIX = Path(__file__).parent / "fixtures" / "data"


def make(n=1000, block=64):
    rng = np.random.default_rng(0)
    cat = rng.integers(0, 50, (n, 3)).astype(np.int32)
    num = rng.standard_normal((n, 2)).astype(np.float32)
    mul = rng.integers(0, 9, (n, 1, 4)).astype(np.int32)
    lab = (np.arange(n) % 2).astype(np.float32)
    grp = np.arange(n, dtype=np.int64)
    return MappedDataset(cat, num, mul, lab, grp, block_rows=block), ArrayDataset(cat, num, mul, lab, grp)


def test_unshuffled_batches_match_array_dataset():
    m, a = make()
    assert len(m) == len(a) and m.num_batches(128) == a.num_batches(128) == 8 and m.prob is None
    for bm, ba in zip(m.batches(128), a.batches(128)):
        for k in ("categorical", "numeric", "multi", "label", "group"):
            x, y = getattr(bm, k), getattr(ba, k)
            assert x.dtype == y.dtype and torch.equal(x, y)


@pytest.mark.parametrize("drop_last", [False, True])
def test_block_shuffle_is_a_seeded_permutation(drop_last):
    m, _ = make(n=1000, block=64)
    ids = lambda **kw: torch.cat([b.group for b in m.batches(100, shuffle=True, drop_last=drop_last, **kw)])  # noqa
    first = ids(seed=1, epoch=1)
    sizes = [len(b) for b in m.batches(100, shuffle=True, seed=1, epoch=1, drop_last=drop_last)]
    assert len(sizes) == m.num_batches(100, drop_last) and all(s == 100 for s in sizes[:-1])
    if not drop_last:
        assert sorted(first.tolist()) == list(range(1000))
    assert len(set(first.tolist())) == len(first)
    assert torch.equal(first, ids(seed=1, epoch=1))
    assert not torch.equal(first, ids(seed=1, epoch=2)) and not torch.equal(first, ids(seed=2, epoch=1))
    assert not torch.equal(first[:200], torch.arange(200))
    # rows stay aligned across columns
    for b in m.batches(100, shuffle=True, seed=3):
        assert torch.equal(b.label, (b.group % 2).float())
        assert torch.equal(b.categorical, torch.from_numpy(m.categorical[b.group.numpy()]).long())


def test_shards_partition_rows():
    m, a = make(n=103)
    parts = [m.shard(r, 3) for r in range(3)]
    assert sorted(np.concatenate([np.asarray(p.group) for p in parts]).tolist()) == list(range(103))
    assert np.array_equal(np.asarray(parts[1].group), np.asarray(a.shard(1, 3).group))
    assert len(list(parts[0].batches(10, shuffle=True))) == parts[0].num_batches(10)
    with pytest.raises(ValueError):
        m.shard(3, 3)


def test_load_processed_memory_maps_and_checks_integrity(tmp_path):
    out = tmp_path / "o"
    preprocess("criteo", [FIX / "criteo_tiny.txt"], out, options={"min_count": 1, "ratios": "0.5,0.25,0.25"})
    fm, tr, va, te = load_processed(out)
    assert isinstance(tr.categorical, np.memmap) and tr.categorical.dtype == np.int32
    assert len(tr) + len(va) + len(te) == 24 and fm.meta["store_version"] == 1 and fm.meta["schema_hash"]
    b = next(tr.batches(4, shuffle=True))
    assert b.categorical.dtype == torch.int64 and b.categorical.shape == (4, 39) and b.multi.shape[:2] == (4, 0)
    # a truncated split is detected, not silently loaded
    np.save(out / "valid" / "label.npy", np.zeros(1, np.float32))
    with pytest.raises(DataError, match="re-run dlf preprocess"):
        load_processed(out)
    (out / "feature_map.json").unlink()
    with pytest.raises(DataError, match="no feature_map.json"):
        load_processed(out)


def test_ids_outside_a_fields_vocabulary_are_refused_at_load(tmp_path):
    """A feature map that does not belong to the arrays (swapped or edited): an id past a field's vocabulary read the
    next field's rows of the fused embedding table, silently (or an IndexError inside torch for the last field)."""
    out = tmp_path / "o"
    preprocess("movielens-1m", [FIX / "movielens_tiny"], out)
    fm, tr, _, _ = load_processed(out)
    doc = json.loads((out / "feature_map.json").read_text())
    fields = {f["name"]: f for f in doc["fields"]}
    first_cat = fm.of_kind("categorical")[0].name
    multi = fm.of_kind("multi")[0].name
    for name, column in ((first_cat, "categorical"), (multi, "multi")):
        edited = json.loads(json.dumps(doc))
        for f in edited["fields"]:
            if f["name"] == name:
                f["vocab_size"] = 3  # pad, OOV, missing: every real value's id is now out of range
        (out / "feature_map.json").write_text(json.dumps(edited))
        with pytest.raises(DataError, match=rf"{column}\.npy: field '{name}' holds ids \d+\.\.\d+, its vocabulary in "
                                            r"feature_map.json has 3 \(ids 0\.\.2\)"):
            load_processed(out)
    assert fields[first_cat]["vocab_size"] > 3 and fields[multi]["vocab_size"] > 3


def test_an_output_folder_with_someone_elses_json_is_not_replaced(tmp_path):
    """A feature_map.json holding a JSON list (not an object) was an AttributeError traceback."""
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "feature_map.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="is not a dlf processed dataset"):
        preprocess("criteo", [FIX / "criteo_tiny.txt"], tmp_path / "o", options={"min_count": 1})
    assert (tmp_path / "o" / "feature_map.json").read_text() == "[1, 2]"


def test_block_shuffle_takes_a_negative_seed():
    """train.seed may be negative (the config allows -2**32 < seed < 2**32), and numpy's seed sequence refuses
    negative integers: `dlf train --data DIR --set train.seed=-1` was a ValueError traceback on the first batch."""
    m, _ = make(n=300, block=64)
    ids = lambda seed: torch.cat([b.group for b in m.batches(50, shuffle=True, seed=seed, epoch=1)])  # noqa: E731
    assert sorted(ids(-1).tolist()) == list(range(300)) and torch.equal(ids(-1), ids(-1))
    assert not torch.equal(ids(-1), ids(1)) and not torch.equal(ids(-1), ids(-2))


@pytest.fixture(scope="module")
def movielens(tmp_path_factory):
    out = tmp_path_factory.mktemp("ml") / "o"
    preprocess("movielens-1m", [FIX / "movielens_tiny"], out)  # categorical, multi (genres) and group columns
    return out


def _edit_npy(column, change):
    def edit(folder):
        path = folder / "train" / f"{column}.npy"
        np.save(path, change(np.load(path)))
    return edit


def _truncate(column, keep):
    def edit(folder):
        path = folder / "train" / f"{column}.npy"
        path.write_bytes(path.read_bytes()[:keep])
    return edit


NPY_EDITS = {  # each was loaded and trained on silently (ids cast from floats, a N x 1 label), or a traceback
    "categorical float32": (_edit_npy("categorical", lambda a: a.astype(np.float32) + 0.5),
                            r"categorical\.npy: float32 array of shape \(\d+, 7\), expected int32 with 2 dimension"),
    "categorical int64": (_edit_npy("categorical", lambda a: a.astype(np.int64)), r"int64 .*, expected int32"),
    "categorical 1-D": (_edit_npy("categorical", lambda a: a[:, 0].copy()),  # was IndexError: tuple index
                        r"categorical\.npy: int32 array of shape \(\d+,\), expected int32 with 2 dimension"),
    "label N x 1": (_edit_npy("label", lambda a: a[:, None].copy()), r"label\.npy: .*expected float32 with 1 dim"),
    "label float64": (_edit_npy("label", lambda a: a.astype(np.float64)), r"label\.npy: float64 .*expected float32"),
    "numeric int32": (_edit_npy("numeric", lambda a: a.astype(np.int32)), r"numeric\.npy: int32 .*expected float32"),
    "group float64": (_edit_npy("group", lambda a: a.astype(np.float64)), r"group\.npy: float64 .*expected int64"),
    "multi 2-D": (_edit_npy("multi", lambda a: a[:, :, 0].copy()), r"multi\.npy: .*expected int32 with 3 dim"),
    "multi longer lists": (_edit_npy("multi", lambda a: np.concatenate([a, a], axis=2)),
                           r"multi\.npy: shape \(\d+, 1, 6\), feature_map.json expects \(rows, 1, 3\)"),
    "categorical one column short": (_edit_npy("categorical", lambda a: a[:, :-1].copy()),
                                     r"categorical\.npy: shape \(\d+, 6\), feature_map.json expects \(rows, 7\)"),
    "group missing": (lambda folder: (folder / "train" / "group.npy").unlink(),
                      r"train: no group\.npy, feature_map.json has the group column 'user_id'"),
    "label -1/1": (_edit_npy("label", lambda a: a * 2 - 1),  # trained on as BCE targets -1 and 1, silently
                   r"train/label\.npy: labels must be 0 or 1, row \d+ holds -1"),
    "empty file": (_truncate("label", 0), r"label\.npy: cannot read"),  # was EOFError: No data left in file
    "truncated data": (_truncate("label", -4), r"label\.npy: cannot read"),
}


@pytest.mark.parametrize("edit", NPY_EDITS, ids=str)
def test_a_damaged_or_hand_edited_npy_is_one_line_naming_the_file(movielens, tmp_path, edit):
    change, message = NPY_EDITS[edit]
    out = tmp_path / "o"
    shutil.copytree(movielens, out)
    change(out)
    with pytest.raises(DataError, match=message) as info:
        load_processed(out)
    assert "\n" not in str(info.value) and str(info.value).endswith("re-run dlf preprocess")


def test_a_bad_label_in_a_later_chunk_is_found_with_its_row(movielens, tmp_path, monkeypatch):
    """Labels are checked chunk by chunk (the whole-array masks were 3 bytes a row: 135 MB on Criteo's 45M rows);
    a bad label past the first chunks is still found, with its row in the whole file."""
    from dlf.data import store

    out = tmp_path / "o"
    shutil.copytree(movielens, out)
    label = np.load(out / "train" / "label.npy")
    row = len(label) - 2
    assert row >= 3 * 4  # in the fourth chunk
    label[row] = 0.5
    np.save(out / "train" / "label.npy", label)
    monkeypatch.setattr(store, "LABEL_CHECK_ROWS", 4)
    with pytest.raises(DataError, match=rf"train/label\.npy: labels must be 0 or 1, row {row} holds 0\.5; "
                                        r"re-run dlf preprocess$"):
        load_processed(out)


FEATURE_MAP_EDITS = {  # AttributeError / numpy UFuncTypeError tracebacks before
    "a list": (lambda doc: [doc], r"feature_map\.json: unreadable feature map: expected a JSON object, got list"),
    "meta a list": (lambda doc: {**doc, "meta": []}, r"feature_map\.json: malformed feature map: 'meta' and its"),
    "vocab_size a string": (lambda doc: {**doc,
                                         "fields": [{**doc["fields"][0], "vocab_size": "100"}] + doc["fields"][1:]},
                            r"feature_map\.json: malformed feature map: field 'user_id': expected a name, a kind"),
}


@pytest.mark.parametrize("edit", FEATURE_MAP_EDITS, ids=str)
def test_a_malformed_feature_map_is_one_line(movielens, tmp_path, edit):
    change, message = FEATURE_MAP_EDITS[edit]
    out = tmp_path / "o"
    shutil.copytree(movielens, out)
    (out / "feature_map.json").write_text(json.dumps(change(json.loads((out / "feature_map.json").read_text()))))
    with pytest.raises(DataError, match=message):
        load_processed(out)


@pytest.mark.parametrize("kind", ["mapped", "array"])
def test_a_batch_size_below_one_is_one_line_for_both_loaders(kind):
    """ArrayDataset (the synthetic data's loader) said 'range() arg 3 must not be zero' (or yielded nothing for a
    negative size); MappedDataset already refused it: the same interface, the same error."""
    ds = make(n=10)[0 if kind == "mapped" else 1]
    for size in (0, -1):
        with pytest.raises(ValueError, match=f"batch_size must be >= 1, got {size}"):
            next(ds.batches(size))
