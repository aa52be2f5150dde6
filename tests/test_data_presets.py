"""Every preset on a tiny fixture in its native format, and on the real samples in ../shared/data when present."""
import math
import re
from pathlib import Path

import numpy as np
import pytest

from dlf.data.features import OOV_ID, PAD_ID
from dlf.data.preprocess import KNOWN_OPTIONS, preprocess
from dlf.data.presets import get_preset, read_feature_index
from dlf.data.readers import BadRows
from dlf.data.schema import DataError, FieldOptions, Schema
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
    # price standardised on train, a missing price read as 0 first (FuxiCTR's fill_na default for dtype float)
    raw = [l.split(",") for l in lines(d / "train.csv")[1:]]
    price = np.array([float(r[4] or 0) for r in raw])
    assert "" in [r[4] for r in raw]
    np.testing.assert_allclose(np.asarray(tr.numeric)[:, 0], (price - price.mean()) / price.std(), rtol=1e-5)
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


# ---- kkbox, ipinyou, kdd12: tiny files written here in each native layout ---------------------

def write_lines(path, rows, sep=","):
    path.write_text("".join(sep.join(map(str, r)) + "\n" for r in rows))
    return path


KKBOX_HEADER = ["label", "msno", "song_id", "source_system_tab", "source_screen_name", "source_type", "city", "bd",
                "gender", "registered_via", "registration_init_time", "expiration_date", "song_length", "genre_ids",
                "artist_name", "composer", "lyricist", "language", "name", "isrc"]


def kkbox_row(label, msno, bd, genres, artists, isrc, song="71008"):
    return [label, msno, song, "my library", "Local playlist more", "local-library", 13, bd, "female", 9, 20110525,
            20170911, 229982, genres, artists, "", "", 3, 1037753, isrc]


def test_kkbox_x1_layout(tmp_path):
    d = tmp_path / "KKBox_x1"
    d.mkdir()
    train = [kkbox_row(1, 19274, 24, "465", "409001 91116 354288 77", "TWA531400512"),
             kkbox_row(0, 31395, 0, "2022 465", "370313", "USUM70759544"),
             kkbox_row(1, 31395, 96, "", "255604", ""),
             kkbox_row(0, 1475, 61, "465", "", "HKI499327206"),
             kkbox_row(1, 1475, 10, "921 458", "199290", "TWD951043108"),
             kkbox_row(0, 1475, "", "465", "199290", "TWD951043108")]
    write_lines(d / "train.csv", [KKBOX_HEADER] + train)
    write_lines(d / "valid.csv", [KKBOX_HEADER, kkbox_row(0, 19274, 35, "465", "370313", "TWA531400512")])
    write_lines(d / "test.csv", [KKBOX_HEADER, kkbox_row(1, 424242, 30, "465", "409001", "GBAYE1000769")])
    fm, tr, va, te = run("kkbox", [d], tmp_path / "o", options={"min_count": 1})
    assert (len(tr), len(va), len(te)) == (6, 1, 1)
    names = [f.name for f in fm.fields]
    assert names == ["msno", "song_id", "source_system_tab", "source_screen_name", "source_type", "city", "gender",
                     "registered_via", "language", "isrc", "bd", "genre_ids", "artist_name"]
    np.testing.assert_array_equal(np.asarray(tr.label), [r[0] for r in train])
    # isrc -> country code; bd -> FuxiCTR's age buckets (missing outside 1..95)
    isrc, bd = vocabulary(tmp_path / "o", "isrc"), vocabulary(tmp_path / "o", "bd")
    assert sorted(isrc) == ["HK", "TW", "US"]
    bucket = {24: "3", 61: "7", 35: "4", 10: "1"}
    for i, r in enumerate(train):
        want = bd[bucket[r[7]]] if r[7] in bucket else 2  # 0, 96 and '' are missing
        assert tr.categorical[i, names.index("bd")] == want
        want = isrc[r[19][:2]] if r[19] else 2
        assert tr.categorical[i, names.index("isrc")] == want
    assert te.categorical[0, names.index("bd")] == bd["3"]
    assert te.categorical[0, names.index("isrc")] == OOV_ID and te.categorical[0, 0] == OOV_ID  # unseen in train
    # space-separated lists, at most 3 kept
    artists = vocabulary(tmp_path / "o", "artist_name")
    assert fm.fields[-1].max_len == 3
    assert list(tr.multi[0, 1]) == [artists[a] for a in ["409001", "91116", "354288"]]
    genres = vocabulary(tmp_path / "o", "genre_ids")
    assert list(tr.multi[1, 0]) == [genres["2022"], genres["465"], PAD_ID]
    # the BARS setting by default: min_count 10 on every field
    fm10, _, _, _ = run("kkbox", [d], tmp_path / "o10")
    assert {s["min_count"] for s in fm10.meta["fields"].values()} == {10}


def test_kkbox_age_that_is_not_a_number_names_the_line(tmp_path):
    d = tmp_path / "k"
    d.mkdir()
    write_lines(d / "train.csv", [KKBOX_HEADER, kkbox_row(1, 1, 24, "465", "1", "TW"), kkbox_row(0, 2, "old", "", "",
                                                                                                 "")])
    with pytest.raises(DataError, match=r"train.csv:3: field 'bd': expected an age"):
        preprocess("kkbox", [d / "train.csv"], tmp_path / "o")


IPINYOU_HEADER = ["click", "weekday", "hour", "IP", "region", "city", "adexchange", "domain", "slotid", "slotwidth",
                  "slotheight", "slotvisibility", "slotformat", "creative", "advertiser", "useragent", "slotprice"]


def test_ipinyou_x1_csv_layout(tmp_path):
    d = tmp_path / "iPinYou_x1"
    d.mkdir()
    rng = np.random.default_rng(0)
    train = [[int(rng.random() < 0.3)] + [int(rng.integers(1, 4)) + 10 * j for j in range(16)] for _ in range(40)]
    write_lines(d / "train.csv", [IPINYOU_HEADER] + train)
    write_lines(d / "test.csv", [IPINYOU_HEADER] + train[:5])
    fm, tr, va, te = run("ipinyou", [d], tmp_path / "o")
    assert [f.name for f in fm.fields] == IPINYOU_HEADER[1:] and all(f.kind == "categorical" for f in fm.fields)
    assert len(tr) + len(va) == 40 and len(va) > 0 and len(te) == 5  # valid carved from train
    np.testing.assert_array_equal(np.asarray(te.label), [r[0] for r in train[:5]])
    slotid = vocabulary(tmp_path / "o", "slotid")
    assert [te.categorical[i, 7] for i in range(5)] == [slotid[str(r[8])] for r in train[:5]]


def make_ipinyou_campaign(d):
    """make-ipinyou-data's layout: featindex.txt ('column:value<TAB>index', indices of a field
    interleaved with other fields'), yzx lines 'click payprice index:1 ...'."""
    d.mkdir()
    (d / "featindex.txt").write_text("truncate\t0\n1:other\t1\n2:other\t2\n7:other\t3\n26:other\t4\n"
                                     "1:5\t5\n2:09\t6\n7:windows_ie\t7\n26:10006\t8\n26:13776\t9\n"
                                     "1:3\t10\n2:10\t11\n7:android_chrome\t12\n26:10063\t13\n")
    (d / "train.yzx.txt").write_text("0 238 0:1 5:1 6:1 7:1 8:1 9:1\n1 300 0:1 10:1 11:1 12:1 13:1\n"
                                     "0 20 0:1 5:1 11:1 7:1\n")
    (d / "test.yzx.txt").write_text("1 77 0:1 10:1 6:1 12:1 4:1\n")
    return d


def test_ipinyou_make_ipinyou_data_feature_index(tmp_path):
    d = make_ipinyou_campaign(tmp_path / "1458")
    fm, tr, _, te = run("ipinyou", [d], tmp_path / "o", options=IN_ORDER)
    names = [f.name for f in fm.fields]
    assert names == IPINYOU_HEADER[1:] + ["usertag"] and fm.fields[-1].kind == "multi"
    np.testing.assert_array_equal(np.asarray(tr.label), [0, 1, 0])  # 0/1 labels; the paying price is skipped
    np.testing.assert_array_equal(np.asarray(te.label), [1])
    weekday, hour, ua, tag = (vocabulary(tmp_path / "o", n) for n in ("weekday", "hour", "useragent", "usertag"))
    rows = [(5, 6, 7, [8, 9]), (10, 11, 12, [13]), (5, 11, 7, [])]  # feature indices per row, by field
    for i, (w, h, u, tags) in enumerate(rows):
        assert tr.categorical[i, names.index("weekday")] == weekday[str(w)]
        assert tr.categorical[i, names.index("hour")] == hour[str(h)]
        assert tr.categorical[i, names.index("useragent")] == ua[str(u)]
        assert list(tr.multi[i, 0, :len(tags)]) == [tag[str(t)] for t in tags]
    assert list(tr.multi[2, 0]) == [2, 0]  # no tag: missing
    assert te.multi[0, 0, 0] == OOV_ID  # '26:other' never seen in train
    assert tr.categorical[:, names.index("IP")].tolist() == [2, 2, 2]  # no IP feature in these lines: missing
    assert "truncate" not in names and "0" not in vocabulary(tmp_path / "o", "weekday")


def test_ipinyou_yzx_index_missing_from_featindex_names_the_line(tmp_path):
    d = make_ipinyou_campaign(tmp_path / "c")
    (d / "train.yzx.txt").write_text("0 238 0:1 5:1\n0 238 0:1 99:1\n")
    with pytest.raises(DataError, match=r"train.yzx.txt:2: feature '99:1': expected index:value with an index "
                                        r"listed in .*featindex.txt"):
        preprocess("ipinyou", [d], tmp_path / "o")


def kdd12_files(d, profile=True):
    d.mkdir()
    rows = [[0, 1, "4298118681424644510", 7686695, 385, 3, 3, 1601, 5521, 7709, 576, 490234],
            [2, 5, "4860571499428580850", 21560664, 37484, 2, 2, 2255103, 317424, 48989, 44771, 0],
            [1, 12, "4298118681424644510", 7686695, 385, 1, 1, 1601, 5521, 7709, 576, 12],
            [0, 3, "4298118681424644510", 7686695, 385, 2, 1, 1601, 5521, 7709, 576, 31]]
    write_lines(d / "training.txt", rows, "\t")
    if profile:
        write_lines(d / "userid_profile.txt", [[490234, 1, 3], [12, 2, 5], [7, 1, 1]], "\t")
    return rows


def test_kdd12_training_txt_with_user_profile(tmp_path):
    rows = kdd12_files(tmp_path / "track2")
    fm, tr, _, _ = run("kdd12", [tmp_path / "track2"], tmp_path / "o", options={**IN_ORDER, "min_count": 1})
    names = [f.name for f in fm.fields]
    assert names == ["impression", "display_url", "ad_id", "advertiser_id", "depth", "position", "query_id",
                     "keyword_id", "title_id", "description_id", "user_id", "gender", "age"]
    np.testing.assert_array_equal(np.asarray(tr.label), [float(r[0] > 0) for r in rows])  # clicks > 0
    imp = vocabulary(tmp_path / "o", "impression")
    for i, r in enumerate(rows):  # the Criteo treatment of counts: v > 2 -> floor(ln(v)^2)
        assert tr.categorical[i, 0] == imp[str(math.floor(math.log(r[1]) ** 2) if r[1] > 2 else r[1])]
    user, gender, age = (vocabulary(tmp_path / "o", n) for n in ("user_id", "gender", "age"))
    j = names.index("user_id")
    assert tr.categorical[1, j] == 2 and "0" not in user  # user 0 is unknown: missing
    assert [tr.categorical[i, j + 1] for i in range(4)] == [gender["1"], 2, gender["2"], 2]  # 31: not in the profile
    assert [tr.categorical[i, j + 2] for i in range(4)] == [age["3"], 2, age["5"], 2]
    # without userid_profile.txt: no gender/age; numeric=log makes impression a numeric input
    kdd12_files(tmp_path / "bare", profile=False)
    fm, tr, _, _ = run("kdd12", [tmp_path / "bare" / "training.txt"], tmp_path / "o2",
                       options={**IN_ORDER, "numeric": "log"})
    assert [f.name for f in fm.fields] == names[1:11] + ["impression"] and fm.fields[-1].kind == "numeric"
    np.testing.assert_allclose(np.asarray(tr.numeric)[:, 0], np.log1p([r[1] for r in rows]), rtol=1e-6)


def test_kdd12_click_that_is_not_a_count_names_the_line(tmp_path):
    kdd12_files(tmp_path / "t", profile=False)
    p = tmp_path / "t" / "training.txt"
    p.write_text(p.read_text().replace("1\t12\t", "x\t12\t", 1))
    with pytest.raises(DataError, match=r"training.txt:3: field 'click': expected a click count"):
        preprocess("kdd12", [p], tmp_path / "o")


# ---- libFM with a feature-index file ------------------------------------------------------------

def read_preset(preset, inputs, schema=None, options=None):
    """A preset's schema and its derived text columns (every chunk of every source, concatenated)."""
    sch, sources = get_preset(preset).build([("train", Path(p)) for p in inputs], schema, options or {})
    cols = {}
    for src in sources:
        for chunk in src.read(BadRows(), 1 << 20):
            for k, v in chunk.columns.items():
                cols.setdefault(k, []).extend(v.to_pylist())
    return sch, sources, cols


def test_libfm_feature_index_gives_non_contiguous_fields(tmp_path):
    index = write_lines(tmp_path / "fields.txt", [["user", 0], ["item", 1], ["user", 2], ["item", 3], ["ctx", 7],
                                                  ["user", 5]], " ")
    data = write_lines(tmp_path / "a.libfm", [["1 0:1 1:1 7:1"], ["-1 3:1 2:1"], ["1 5:1 3:1 7:1"]])
    sch, sources, cols = read_preset("libfm", [data], options={"feature_index": str(index)})
    assert [f.name for f in sch.fields] == ["user", "item", "ctx"] and sch.label_values == "pm1"
    assert cols == {"label": ["1", "-1", "1"], "user": ["0", "2", "5"], "item": ["1", "3", "3"], "ctx": ["7", "", "7"]}
    assert sources[0].depends == [str(index)]  # the index is an input of the dataset


def test_feature_index_reads_the_featindex_layout(tmp_path):
    """make-ipinyou-data's `column:value<TAB>index`: the field is the text before the first ':'."""
    index = tmp_path / "featindex.txt"
    index.write_text("truncate\t0\n8:115.45.195.*\t1\n9:1\t2\n8:other\t3\n9:216\t4\n")
    names, idx, owner = read_feature_index(index)
    assert names == ["truncate", "8", "9"]
    assert dict(zip(idx.tolist(), owner.tolist())) == {0: 0, 1: 1, 2: 2, 3: 1, 4: 2}
    data = write_lines(tmp_path / "a.libfm", [["1 0:1 1:1 4:1"], ["-1 0:1 3:1 2:1"]])
    _, _, cols = read_preset("libfm", [data], options={"feature_index": str(index)})
    assert cols["8"] == ["1", "3"] and cols["9"] == ["4", "2"]


@pytest.mark.parametrize("text, needle", [
    ("user 0\nitem\n", r"fields.txt:2: expected 'FIELD INDEX' or 'FIELD:VALUE INDEX', got 'item'"),
    ("user 0\nitem 1\nctx 0\n", r"fields.txt:3: index 0 is listed twice"),
    ("\n\n", r"fields.txt: feature index has no entries"),
])
def test_feature_index_errors_name_the_line(tmp_path, text, needle):
    (tmp_path / "fields.txt").write_text(text)
    with pytest.raises(DataError, match=needle):
        read_feature_index(tmp_path / "fields.txt")


@pytest.mark.skipif("feature_index" not in KNOWN_OPTIONS,
                    reason="dlf.data.preprocess does not accept --option feature_index yet")
def test_libfm_feature_index_end_to_end(tmp_path):
    index = write_lines(tmp_path / "fields.txt", [["user", 0], ["item", 1], ["user", 2], ["item", 3]], " ")
    data = write_lines(tmp_path / "a.libfm", [["1 0:1 1:1"], ["-1 3:1 2:1"], ["1 2:1 1:1"]])
    fm, tr, _, _ = run("libfm", [data], tmp_path / "o", options={**IN_ORDER, "feature_index": str(index)})
    user = vocabulary(tmp_path / "o", "user")
    assert [f.name for f in fm.fields] == ["user", "item"]
    assert [tr.categorical[i, 0] for i in range(3)] == [user["0"], user["2"], user["2"]]


def test_libfm_files_labelled_0_1_read_with_the_labels_option(tmp_path):
    """A 0/1-labelled libFM file (as some iPinYou and Avazu conversions are) could not be read with a feature index:
    the label 0 was a bad value and a schema (label_values: binary) cannot be combined with feature_index."""
    index = write_lines(tmp_path / "fields.txt", [["user", 0], ["item", 1], ["user", 2], ["item", 3]], " ")
    indexed = write_lines(tmp_path / "a.libfm", [["1 0:1 1:1"], ["0 3:1 2:1"], ["0 2:1 1:1"]])
    ranged = write_lines(tmp_path / "b.libfm", [["1 0:1 2:1"], ["0 1:1 3:1"], ["0 0:1 3:1"]])  # user 0-1, item 2-3
    for k, (data, option) in enumerate([(indexed, {"feature_index": str(index)}),
                                        (ranged, {"fields": "user:2,item:2"})]):
        _, tr, _, _ = run("libfm", [data], tmp_path / f"o{k}", options={**IN_ORDER, **option, "labels": "binary"})
        np.testing.assert_array_equal(np.asarray(tr.label), [1.0, 0.0, 0.0])
        # the default stays libFM's -1/1; the hint was a schema's label_values only, which feature_index refuses
        with pytest.raises(DataError, match=r"expected label -1 or 1 \(libFM labels; 0/1 labels are preprocessed "
                                            r"with --option labels=binary, or label_values: binary in a schema\), "
                                            r"got '0'"):
            run("libfm", [data], tmp_path / f"pm1{k}", options={**IN_ORDER, **option})
    with pytest.raises(DataError, match="expected pm1 .labels -1/1. or binary"):
        run("libfm", [ranged], tmp_path / "x", options={**IN_ORDER, "fields": "user:2,item:2", "labels": "01"})
    with pytest.raises(DataError, match="--option labels applies to preset"):
        run("criteo", [data], tmp_path / "y", options={"labels": "binary"})


def _same_output(a: Path, b: Path) -> None:
    for split in ("train", "valid", "test"):
        for p in (a / split).glob("*.npy"):
            np.testing.assert_array_equal(np.load(p), np.load(b / split / p.name), err_msg=f"{split}/{p.name}")
    for p in (a / "vocab").glob("*.arrow"):
        assert vocabulary(a, p.stem) == vocabulary(b, p.stem), p.stem


def test_a_utf8_bom_is_never_part_of_the_first_value(tmp_path):
    """An editor's "UTF-8 with BOM": ISO-8859-1 ratings.dat read user '\\xef\\xbb\\xbf2' (a new user), users.dat
    user 1 lost its attributes, a feature index had fields '\\ufeffuser' and 'user', a headerless CSV's inferred
    label column was '\\ufefflabel' (no label column). Every file gets the same output with a BOM as without."""
    bom = b"\xef\xbb\xbf"

    def with_bom(src: Path, dst: Path) -> Path:
        dst.write_bytes(bom + src.read_bytes())
        return dst

    ml = tmp_path / "ml"
    ml.mkdir()
    for name in ("ratings.dat", "users.dat", "movies.dat"):
        with_bom(FIX / "movielens_tiny" / name, ml / name)
    preprocess("movielens-1m", [FIX / "movielens_tiny" / "ratings.dat"], tmp_path / "a", options=IN_ORDER)
    preprocess("movielens-1m", [ml], tmp_path / "b", options=IN_ORDER)
    _same_output(tmp_path / "a", tmp_path / "b")

    for preset, src, opts in (("criteo", FIX / "criteo_tiny.txt", {"min_count": 1}),
                              ("libfm", FIX / "tiny.libfm", {"fields": "user:4,item:5,ctx:3"})):
        preprocess(preset, [src], tmp_path / f"{preset}_a", options=opts)
        preprocess(preset, [with_bom(src, tmp_path / src.name)], tmp_path / f"{preset}_b", options=opts)
        _same_output(tmp_path / f"{preset}_a", tmp_path / f"{preset}_b")

    index = tmp_path / "fields.txt"
    index.write_bytes(bom + b"user 0\nitem 1\nuser 2\nitem 3\n")
    (tmp_path / "t.libfm").write_text("1 0:1 1:1\n-1 2:1 3:1\n1 2:1 1:1\n")
    fm, *_ = run("libfm", [tmp_path / "t.libfm"], tmp_path / "fi", options={"feature_index": str(index)})
    assert [f.name for f in fm.fields] == ["user", "item"]

    d = tmp_path / "fx"
    d.mkdir()
    for role in ("train", "valid", "test"):
        with_bom(FIX / "fuxictr_tiny" / f"{role}.csv", d / f"{role}.csv")
    preprocess("fuxictr", [FIX / "fuxictr_tiny"], tmp_path / "fx_a")
    preprocess("fuxictr", [d], tmp_path / "fx_b")
    _same_output(tmp_path / "fx_a", tmp_path / "fx_b")


@pytest.mark.parametrize("line", ["1\t1\t5\t978300760", "1:1:5:978300760", "1::1::5", "1::1:7:5::978300760"])
def test_movielens_line_with_other_separators_names_the_layout(tmp_path, line):
    """The '::' files are read as ':' columns: the error said 'expected 7 columns separated by ':', got 4'
    (or 'expected 4 fields' with no line) for a tab-separated or single-colon line."""
    d = tmp_path / "ml"
    d.mkdir()
    for name in ("users.dat", "movies.dat"):
        (d / name).write_bytes((FIX / "movielens_tiny" / name).read_bytes())
    (d / "ratings.dat").write_text(f"2::1::1::978300000\n{line}\n")
    want = f"ratings.dat:2: expected 4 fields separated by '::' (user_id::movie_id::rating::timestamp), got {line!r}"
    with pytest.raises(DataError, match=re.escape(want)):
        preprocess("movielens-1m", [d], tmp_path / "o")


def _fuxictr_yaml(tmp_path, extra: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text("X:\n    feature_cols:\n        - {name: [cat], active: true, dtype: str, type: categorical}\n"
                 f"        {extra}\n    label_col: {{name: label, dtype: float}}\n    group_id: userid\n")
    return p


@pytest.mark.parametrize("extra, needle", [
    # Avazu_x4's YAML: hour stayed the raw YYMMDDHH (FuxiCTR makes it the hour of day)
    ("- {name: itemid, type: categorical, preprocess: convert_hour}",
     "(itemid): preprocess 'convert_hour' is not supported here (the fuxictr preset does convert_to_bucket on "
     "categorical columns and copy_from(COLUMN)); --preset avazu applies it"),
    ("- {name: price, type: numeric, normalizer: MinMaxScaler}",  # was read as no normalizer
     "(price): normalizer 'MinMaxScaler' is not supported (StandardScaler, or none)"),
    ("- {name: itemid, type: categorical, category_processor: quantile_bucket}",
     "category_processor 'quantile_bucket' is not supported"),
    ("- {name: itemid, type: categorical, min_categr_count: ten}", "min_categr_count: expected an integer >= 0"),
    ("- {name: price, type: numeric, preprocess: convert_to_bucket}",
     "preprocess 'convert_to_bucket' is not supported"),
    # FuxiCTR keeps the last max_len items with padding: pre (truncating on that side); this reader the first
    ("- {name: tags, type: sequence, max_len: 2, padding: pre}", "(tags): padding 'pre' is not supported"),
    ("- {name: tags, type: sequence, fill_na: x}", "(tags): fill_na 'x' on a sequence is not supported"),
    ("- {name: price, type: numeric, fill_na: abc}", "fill_na of a numeric field must be a finite number, got 'abc'"),
])
def test_fuxictr_yaml_steps_the_preset_cannot_do_are_errors(tmp_path, extra, needle):
    with pytest.raises(DataError, match=re.escape(needle)):
        preprocess("fuxictr", [FIX / "fuxictr_tiny"], tmp_path / "o", schema=_fuxictr_yaml(tmp_path, extra))


def test_fuxictr_yaml_copy_from_meta_group_id_and_hash_bucket(tmp_path):
    extra = ("- {name: c2, type: categorical, preprocess: copy_from(itemid), category_processor: hash_bucket, "
             "num_buckets: 7}\n        - {name: userid, type: meta}")
    fm, tr, _, _ = run("fuxictr", [FIX / "fuxictr_tiny"], tmp_path / "o", schema=_fuxictr_yaml(tmp_path, extra))
    assert [f.name for f in fm.fields] == ["cat", "c2"] and fm.group == "userid"
    stats = fm.meta["fields"]["c2"]
    assert stats["source"] == "itemid" and stats["buckets"] == 7 and fm.fields[1].vocab_size == 3 + 7


def test_fuxictr_fill_na_is_applied_before_fitting(tmp_path):
    """FuxiCTR fills missing values before anything else (fill_na; by default 0 for dtype int/float, '' for str);
    the fuxictr preset gave every missing value the missing id instead. A filled categorical value is a value
    like any other (here "none" and a missing city share its id), a filled number is that number (in the
    StandardScaler's fit too), and Criteo_x4's float counts with convert_to_bucket make a missing count bucket 0."""
    d = tmp_path / "in"
    d.mkdir()
    rows = ["1,a,1,2,0", "0,,,,", "1,none,3,,5", "0,b,4,6,", "1,a,,2,0"]
    for role in ("train", "valid", "test"):
        (d / f"{role}.csv").write_text("label,city,age,price,count\n" + "\n".join(rows) + "\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("X:\n    feature_cols:\n"
                   "        - {name: city, dtype: str, type: categorical, fill_na: none}\n"
                   "        - {name: count, dtype: float, type: categorical, preprocess: convert_to_bucket}\n"
                   "        - {name: age, dtype: float, type: numeric, fill_na: -1.5}\n"
                   "        - {name: price, dtype: float, type: numeric, normalizer: StandardScaler}\n"
                   "    label_col: {name: label, dtype: float}\n")
    fm, tr, _, _ = run("fuxictr", [d], tmp_path / "o", schema=cfg)
    city = vocabulary(tmp_path / "o", "city")
    assert set(city) == {"a", "b", "none"} and not fm.meta["fields"]["city"]["has_missing"]
    assert list(np.asarray(tr.categorical)[:, 0]) == [city[v] for v in ("a", "none", "none", "b", "a")]
    count = np.asarray(tr.categorical)[:, 1]
    assert count[1] == count[0] == count[4] and count[3] == count[1] and not fm.meta["fields"]["count"]["has_missing"]
    np.testing.assert_array_equal(np.asarray(tr.numeric)[:, 0], [1, -1.5, 3, 4, -1.5])
    price = np.array([2, 0, 0, 6, 2.0])
    np.testing.assert_allclose(np.asarray(tr.numeric)[:, 1], (price - price.mean()) / price.std(), rtol=1e-6)


def test_a_libfm_range_in_a_table_schema_is_an_error(tmp_path):
    """`range` belongs to libFM fields; in a CSV schema the field had no column: KeyError traceback."""
    schema = Schema(fields=[FieldOptions("city"), FieldOptions("x", range=(1, 2))], label="label")
    with pytest.raises(DataError, match=re.escape("field(s) ['x']: `range` is for libFM input")):
        preprocess("generic", [FIX / "fuxictr_tiny" / "train.csv"], tmp_path / "o", schema=schema)


def test_fuxictr_without_yaml_finds_a_capitalised_label(tmp_path):
    """BARS Criteo_x4's CSV header starts with 'Label': "no label column (label, click or clicked)"."""
    d = tmp_path / "x4"
    d.mkdir()
    for role in ("train", "valid", "test"):
        text = (FIX / "fuxictr_tiny" / f"{role}.csv").read_text()
        (d / f"{role}.csv").write_text("Label" + text[len("label"):])
    fm, tr, _, _ = run("fuxictr", [d], tmp_path / "o")
    assert fm.label == "Label" and [f.name for f in fm.fields] == ["userid", "itemid", "cat", "price", "tags"]


def test_a_time_column_the_preset_does_not_read_is_one_line(tmp_path):
    """--option split=time with a time_column the preset's reader does not give (avazu's dropped id): KeyError."""
    with pytest.raises(DataError, match=r"avazu_tiny\.csv: no column 'id' among the columns this preset reads: "):
        preprocess("avazu", [FIX / "avazu_tiny.csv"], tmp_path / "o", options={"split": "time", "time_column": "id"})


def test_generic_reads_a_folder_of_parts_as_its_files(tmp_path):
    """Spark or Hive write a log as a folder of part files beside _SUCCESS and .crc files: 'is a directory,
    expected a file'. The folder is its data files in name order; one holding a partition folder stops."""
    rows = [f"{i % 2},c{i % 5}\n" for i in range(40)]
    parts = tmp_path / "log"
    parts.mkdir()
    for k in range(2):
        (parts / f"part-0000{k}.csv").write_text("y,c\n" + "".join(rows[20 * k:20 * (k + 1)]))
    (parts / "part-00002.csv").write_text("")  # Spark writes empty parts
    (parts / "_SUCCESS").write_text("")
    (parts / ".part-00000.csv.crc").write_bytes(b"\0\1")
    schema = Schema(fields=[FieldOptions("c")], label="y")
    a = preprocess("generic", [parts], tmp_path / "a", schema=schema)
    b = preprocess("generic", sorted(parts.glob("part-0000[01].csv")), tmp_path / "b", schema=schema)
    assert a.feature_map.meta["splits"] == b.feature_map.meta["splits"] and a.rows == 40
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(np.load(tmp_path / "a" / split / "categorical.npy"),
                                      np.load(tmp_path / "b" / split / "categorical.npy"))
    (parts / "part-00003.csv").symlink_to(tmp_path / "gone.csv")  # a broken link: named, not skipped
    with pytest.raises(DataError, match=r"part-00003\.csv: no such file"):
        preprocess("generic", [parts], tmp_path / "c", schema=schema)
    (parts / "dt=2024-01-01").mkdir()
    with pytest.raises(DataError, match=r"log: holds folders \(dt=2024-01-01\); give each with its own --input"):
        preprocess("generic", [parts], tmp_path / "c", schema=schema)


def test_a_folder_skips_a_compressed_empty_part_as_it_skips_an_empty_one(tmp_path):
    """Spark's gzip CSV of an empty partition (header off) is a 20-byte part-00001.csv.gz holding no bytes: it
    stopped the folder with "header has no column(s) ['y', 'c']; it has []" where a 0-byte part is skipped."""
    import gzip
    parts = tmp_path / "log"
    parts.mkdir()
    with gzip.open(parts / "part-00000.csv.gz", "wt") as fh:
        fh.write("y,c\n" + "".join(f"{i % 2},c{i % 5}\n" for i in range(20)))
    gzip.open(parts / "part-00001.csv.gz", "wb").close()
    schema = Schema(fields=[FieldOptions("c")], label="y")
    assert preprocess("generic", [parts], tmp_path / "a", schema=schema).rows == 20
    (parts / "part-00002.csv.gz").write_bytes(b"not gzip")  # a broken part is named, not skipped
    with pytest.raises(DataError, match=r"part-00002\.csv\.gz: cannot read: "):
        preprocess("generic", [parts], tmp_path / "c", schema=schema)
    # given by itself it is an empty input, which stops as before
    with pytest.raises(DataError, match=r"part-00001\.csv\.gz"):
        preprocess("generic", [parts / "part-00001.csv.gz"], tmp_path / "b", schema=schema)


def test_a_parquet_file_read_as_csv_says_so(tmp_path):
    """FuxiCTR YAML with data_format: csv on parquet splits said "header is not valid utf-8"."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"label": [0, 1], "cat": ["a", "b"]}), tmp_path / "t.parquet")
    schema = Schema(fields=[FieldOptions("cat")], label="label", format="csv")
    with pytest.raises(DataError, match=r"t\.parquet: a Parquet file, but the schema says format 'csv'"):
        preprocess("generic", [tmp_path / "t.parquet"], tmp_path / "o", schema=schema)
    # format auto: the name says csv, not the schema (which it claimed)
    (tmp_path / "t.parquet").rename(tmp_path / "t.csv")
    with pytest.raises(DataError, match=r"t\.csv: a Parquet file, but its name says csv; name it \.parquet"):
        preprocess("generic", [tmp_path / "t.csv"], tmp_path / "o",
                   schema=Schema(fields=[FieldOptions("cat")], label="label"))


def test_movielens_ratings_csv_without_timestamp(tmp_path):
    """The timestamp only orders a time split: 'header has no column(s) ['timestamp']' for a ratings.csv without it."""
    d = tmp_path / "ml"
    d.mkdir()
    for name in ("users.dat", "movies.dat"):
        (d / name).write_bytes((FIX / "movielens_tiny" / name).read_bytes())
    rows = [l.split(",")[:3] for l in lines(FIX / "movielens_tiny" / "ratings.csv")]
    (d / "ratings.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    a = preprocess("movielens-1m", [d / "ratings.csv"], tmp_path / "a", options=IN_ORDER)
    b = preprocess("movielens-1m", [FIX / "movielens_tiny" / "ratings.csv"], tmp_path / "b", options=IN_ORDER)
    assert a.rows == b.rows
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "train" / "categorical.npy"),
                                  np.load(tmp_path / "b" / "train" / "categorical.npy"))
    with pytest.raises(DataError, match="no column 'timestamp' among the columns"):
        preprocess("movielens-1m", [d / "ratings.csv"], tmp_path / "c", options={"split": "time",
                                                                               "time_column": "timestamp"})
