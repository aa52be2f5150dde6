"""Every preset on a tiny fixture in its native format, and on the real samples in ../shared/data when present."""
import math
from pathlib import Path

import numpy as np
import pytest

from dlf.data.features import OOV_ID, PAD_ID
from dlf.data.preprocess import preprocess
from dlf.data.store import load_processed, vocabulary

FIX = Path(__file__).parent / "fixtures" / "data"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
IN_ORDER = {"ratios": "1,0,0"}  # every row to train, in input order


def run(preset, inputs, out, **kw):
    preprocess(preset, inputs, out, **kw)
    return load_processed(out)


def lines(path, encoding="utf-8"):
    return [l.rstrip("\r\n") for l in open(path, encoding=encoding)]


def test_criteo_bucket_treatment_and_missing(tmp_path):
    fm, tr, va, te = run("criteo", [FIX / "criteo_tiny.txt"], tmp_path / "o", options={**IN_ORDER, "min_count": 1})
    assert len(tr) == 24 and len(va) == len(te) == 0
    assert [f.name for f in fm.fields][:2] == ["I1", "I2"] and len(fm.fields) == 39
    assert all(f.kind == "categorical" for f in fm.fields)
    raw = [l.split("\t") for l in lines(FIX / "criteo_tiny.txt")]
    np.testing.assert_array_equal(np.asarray(tr.label), [float(r[0]) for r in raw])
    for j in (1, 2, 5, 14):  # I1, I2 (negative values), I5, C1
        name = fm.fields[j - 1].name
        vocab = vocabulary(tmp_path / "o", name)
        for i, r in enumerate(raw):
            v = r[j]
            if v == "":
                assert tr.categorical[i, j - 1] == 2  # missing has its own id
                continue
            if j <= 13:
                x = float(v)
                v = str(math.floor(math.log(x) ** 2)) if x > 2 else str(int(x))
            assert tr.categorical[i, j - 1] == vocab[v], (i, name, r[j])
    # 4000 -> floor(ln(4000)^2) = 68; 3 -> floor(ln(3)^2) = 1, the same category as 1
    assert "68" in vocabulary(tmp_path / "o", "I5")


def test_criteo_log_numeric_option(tmp_path):
    fm, tr, _, _ = run("criteo", [FIX / "criteo_tiny.txt"], tmp_path / "o",
                       options={**IN_ORDER, "numeric": "log", "min_count": 1})
    # FeatureMap order is by kind: categorical C1-C26, then numeric I1-I13
    assert [f.name for f in fm.of_kind("numeric")] == [f"I{i}" for i in range(1, 14)] and tr.numeric.shape == (24, 13)
    raw = [l.split("\t") for l in lines(FIX / "criteo_tiny.txt")]
    want = np.array([[0.0 if r[j] == "" else np.sign(float(r[j])) * np.log1p(abs(float(r[j]))) for j in range(1, 14)]
                     for r in raw], dtype=np.float32)
    np.testing.assert_allclose(np.asarray(tr.numeric), want, rtol=1e-6)


def test_avazu_hour_split_into_hour_weekday_weekend(tmp_path):
    fm, tr, _, _ = run("avazu", [FIX / "avazu_tiny.csv"], tmp_path / "o", options={**IN_ORDER, "min_count": 1})
    names = [f.name for f in fm.fields]
    assert "id" not in names and names[-3:] == ["hour", "weekday", "weekend"] and len(names) == 24
    raw = [l.split(",") for l in lines(FIX / "avazu_tiny.csv")[1:]]
    wd, we, hr = (vocabulary(tmp_path / "o", n) for n in ("weekday", "weekend", "hour"))
    day = {"21": "1", "25": "5", "26": "6"}  # 2014-10-21 Tuesday, 25 Saturday, 26 Sunday
    for i, r in enumerate(raw):
        d = r[2][4:6]
        assert tr.categorical[i, names.index("weekday")] == wd[day[d]]
        assert tr.categorical[i, names.index("weekend")] == we["1" if d in ("25", "26") else "0"]
        assert tr.categorical[i, names.index("hour")] == hr[str(int(r[2][6:]))]
    np.testing.assert_array_equal(np.asarray(tr.label), [float(r[1]) for r in raw])


def test_fuxictr_splits_with_dataset_yaml_and_test_only_value_is_oov(tmp_path):
    d = FIX / "fuxictr_tiny"
    fm, tr, va, te = run("fuxictr", [d], tmp_path / "o", schema=d / "dataset_config.yaml")
    assert (len(tr), len(va), len(te)) == (20, 6, 6)
    assert [(f.name, f.kind) for f in fm.fields] == [("userid", "categorical"), ("itemid", "categorical"),
                                                     ("cat", "categorical"), ("price", "numeric"), ("tags", "multi")]
    assert fm.fields[-1].max_len == 3 and tr.multi.shape == (20, 1, 3)
    # "zz_test_only" appears only in test.csv: it must map to OOV, not get an id
    assert "zz_test_only" not in vocabulary(tmp_path / "o", "itemid")
    assert te.categorical[0, 1] == OOV_ID
    assert (np.asarray(tr.categorical)[:, 1] >= 2).all()
    # price standardised on train: mean ~0 over train rows that have a price
    raw = [l.split(",") for l in lines(d / "train.csv")[1:]]
    has = np.array([r[4] != "" for r in raw])
    assert abs(np.asarray(tr.numeric)[has, 0].mean()) < 1e-5
    tags = vocabulary(tmp_path / "o", "tags")
    for i, r in enumerate(raw):
        want = [tags[t] for t in r[5].split("^")]
        assert list(tr.multi[i, 0, :len(want)]) == want and (tr.multi[i, 0, len(want):] == PAD_ID).all()


def test_fuxictr_without_yaml_infers_label_and_categoricals(tmp_path):
    d = FIX / "fuxictr_tiny"
    fm, tr, va, te = run("fuxictr", [f"train={d / 'train.csv'}", f"valid={d / 'valid.csv'}", f"test={d / 'test.csv'}"],
                         tmp_path / "o")
    assert [f.name for f in fm.fields] == ["userid", "itemid", "cat", "price", "tags"] and len(te) == 6


def test_libfm_ranges_and_pm1_labels(tmp_path):
    fm, tr, _, _ = run("libfm", [FIX / "tiny.libfm"], tmp_path / "o",
                       options={**IN_ORDER, "fields": "user:4,item:5,ctx:3"})
    assert [f.name for f in fm.fields] == ["user", "item", "ctx"]
    raw = [l.split() for l in lines(FIX / "tiny.libfm")]
    np.testing.assert_array_equal(np.asarray(tr.label), [1.0 if r[0] == "1" else 0.0 for r in raw])
    for j, name in enumerate(["user", "item", "ctx"]):
        vocab = vocabulary(tmp_path / "o", name)
        got = [tr.categorical[i, j] for i in range(len(raw))]
        assert got == [vocab[r[1 + j].split(":")[0]] for r in raw]


def test_movielens_dat_join_label_rule_genres_and_year(tmp_path):
    d = FIX / "movielens_tiny"
    fm, tr, _, _ = run("movielens-1m", [d], tmp_path / "o", options=IN_ORDER)
    ratings = [l.split("::") for l in lines(d / "ratings.dat")]
    kept = [r for r in ratings if r[2] != "3"]
    assert len(tr) == len(kept) and fm.group == "user_id"
    np.testing.assert_array_equal(np.asarray(tr.label), [1.0 if int(r[2]) >= 4 else 0.0 for r in kept])
    names = [f.name for f in fm.fields]
    year, genres, gender = (vocabulary(tmp_path / "o", n) for n in ("year", "genres", "gender"))
    movies = {l.split("::")[0]: l.split("::") for l in lines(d / "movies.dat", "iso-8859-1")}
    users = {l.split("::")[0]: l.split("::") for l in lines(d / "users.dat")}
    for i, r in enumerate(kept):
        title, g = movies[r[1]][1], movies[r[1]][2].split("|")
        y = title[-5:-1] if title.endswith(")") else None
        assert tr.categorical[i, names.index("year")] == (year[y] if y else 2)
        assert tr.categorical[i, names.index("gender")] == gender[users[r[0]][1]]
        assert list(tr.multi[i, 0, :len(g)]) == [genres[x] for x in g]
    assert np.asarray(tr.group).dtype == np.int64 and len(set(np.asarray(tr.group))) == len({r[0] for r in kept})


def test_movielens_csv_ratings(tmp_path):
    d = FIX / "movielens_tiny"
    fm, tr, _, _ = run("movielens-1m", [d / "ratings.csv"], tmp_path / "o", options=IN_ORDER)
    assert len(tr) == sum(1 for l in lines(d / "ratings.csv")[1:] if l.split(",")[2] != "3")


def test_generic_csv_with_schema(tmp_path):
    fm, tr, va, te = run("generic", [FIX / "generic_tiny.csv"], tmp_path / "o", schema=FIX / "generic_schema.yaml")
    assert len(tr) + len(va) + len(te) == 30 and len(va) > 0 and len(te) > 0
    assert [f.kind for f in fm.fields] == ["categorical", "categorical", "numeric", "multi"]
    assert tr.group is not None and fm.meta["fields"]["age"]["std"] > 0


def test_generic_parquet_equals_csv(tmp_path):
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq
    table = pcsv.read_csv(FIX / "generic_tiny.csv")
    pq.write_table(table, tmp_path / "g.parquet")
    schema = (FIX / "generic_schema.yaml").read_text().replace("format: csv", "format: auto")
    (tmp_path / "s.yaml").write_text(schema)
    a = run("generic", [FIX / "generic_tiny.csv"], tmp_path / "a", schema=tmp_path / "s.yaml")
    b = run("generic", [tmp_path / "g.parquet"], tmp_path / "b", schema=tmp_path / "s.yaml")
    for x, y in zip(a[1:], b[1:]):
        np.testing.assert_array_equal(np.asarray(x.categorical), np.asarray(y.categorical))
        np.testing.assert_allclose(np.asarray(x.numeric), np.asarray(y.numeric))
        np.testing.assert_array_equal(np.asarray(x.multi), np.asarray(y.multi))


# ---- the real samples (skipped when ../shared/data is absent) ----------------------------------

needs = lambda p: pytest.mark.skipif(not (SHARED / p).exists(), reason=f"{SHARED / p} not present")  # noqa: E731


@needs("criteo/dac_sample_8k.txt")
def test_real_criteo_sample(tmp_path):
    fm, tr, va, te = run("criteo", [SHARED / "criteo/dac_sample_8k.txt"], tmp_path / "o")
    assert len(tr) + len(va) + len(te) == 8000 and len(fm.fields) == 39
    assert abs(fm.meta["splits"]["train"]["label_rate"] - 0.216) < 0.02
    assert 6000 < len(tr) < 6800  # 80 % of 8000, seeded
    assert np.asarray(tr.categorical).max() < max(f.vocab_size for f in fm.fields)


@needs("frappe/frappe.validation.libfm")
def test_real_frappe_files(tmp_path):
    fm, tr, va, te = run("frappe", [f"train={SHARED / 'frappe/frappe.validation.libfm'}",
                                    f"test={SHARED / 'frappe/frappe.test.libfm'}"], tmp_path / "o")
    assert len(tr) + len(va) == 57722 and len(te) == 28860
    assert [f.name for f in fm.fields][0] == "user" and len(fm.fields) == 10
    assert abs(fm.meta["splits"]["test"]["label_rate"] - 1 / 3) < 0.01
    # each of the 10 fields is present in every row: no OOV/missing ids in train
    assert (np.asarray(tr.categorical) >= 2).all()
    assert fm.fields[2].vocab_size <= 7 + 2  # daytime: 7 values


@needs("movielens-1m/ratings.csv")
def test_real_movielens(tmp_path):
    fm, tr, va, te = run("movielens-1m", [SHARED / "movielens-1m"], tmp_path / "o")
    n = len(tr) + len(va) + len(te)
    assert n + fm.meta["filtered_rows"]["rating 3"] == 423764
    assert fm.fields[-1].name == "genres" and fm.fields[-1].max_len == 6
    assert 0.7 < fm.meta["splits"]["train"]["label_rate"] < 0.8
    fm2, tr2, _, _ = run("movielens-1m", [SHARED / "movielens-1m/ratings_100k_sample.dat"], tmp_path / "d",
                         options={"split": "time", "time_column": "timestamp"})
    assert len(tr2) > 0 and fm2.meta["filtered_rows"]["rating 3"] > 0
