"""Presets against their sources (BARS / FuxiCTR configs): the differences found in the audit of docs/data.md."""
from pathlib import Path

import numpy as np
import pytest

from dlf.data.preprocess import preprocess
from dlf.data.schema import DataError
from dlf.data.store import load_processed, vocabulary


def _split_folder(tmp_path: Path, header: str, rows: list[str]) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    for role in ("train", "valid", "test"):
        (d / f"{role}.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return d


def test_fuxictr_1x_na_value_fills_missing_values(tmp_path):
    """FuxiCTR 1.x, whose YAML the BARS x4 benchmarks carry, names the fill value `na_value` (2.x: `fill_na`):
    it was ignored, so a missing city took the missing id instead of reading as 'none'."""
    d = _split_folder(tmp_path, "label,city,age", ["1,a,1", "0,,", "1,none,3", "0,b,"])
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("X:\n    feature_cols:\n"
                   "        - {name: city, dtype: str, type: categorical, na_value: none}\n"
                   "        - {name: age, dtype: float, type: numeric, na_value: -1.5}\n"
                   "    label_col: {name: label, dtype: float}\n")
    preprocess("fuxictr", [d], tmp_path / "o", schema=cfg)
    fm, tr, _, _ = load_processed(tmp_path / "o")
    city = vocabulary(tmp_path / "o", "city")
    assert set(city) == {"a", "b", "none"} and not fm.meta["fields"]["city"]["has_missing"]
    assert list(np.asarray(tr.categorical)[:, 0]) == [city[v] for v in ("a", "none", "none", "b")]
    np.testing.assert_array_equal(np.asarray(tr.numeric)[:, 0], [1, -1.5, 3, -1.5])


def test_fuxictr_1x_na_value_on_a_sequence_is_refused(tmp_path):
    d = _split_folder(tmp_path, "label,tags", ["1,a^b", "0,"])
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("X:\n    feature_cols:\n"
                   "        - {name: tags, dtype: str, type: sequence, na_value: x}\n"
                   "    label_col: {name: label, dtype: float}\n")
    with pytest.raises(DataError, match="na_value 'x' on a sequence is not supported"):
        preprocess("fuxictr", [d], tmp_path / "o", schema=cfg)


FIX = Path(__file__).parent / "fixtures" / "data"


def test_avazu_time_split_orders_by_date_and_hour(tmp_path):
    """A time split on Avazu's `hour` ordered the rows by the derived hour of day (0-23): train held the early
    hours of every day, valid/test the late ones. `hour` is refused; `time` (the raw YYMMDDHH) orders by day."""
    with pytest.raises(DataError, match="time_column=time"):
        preprocess("avazu", [FIX / "avazu_tiny.csv"], tmp_path / "h", options={"split": "time", "time_column": "hour"})
    preprocess("avazu", [FIX / "avazu_tiny.csv"], tmp_path / "o",
               options={"split": "time", "time_column": "time", "ratios": "0.35,0.45,0.2", "min_count": 1})
    fm, tr, va, te = load_processed(tmp_path / "o")
    # the fixture's 2014-10-21 rows (7, Tuesday) train, the 25th's (9) valid, the 26th's (4) test
    assert (len(tr), len(va), len(te)) == (7, 9, 4) and set(vocabulary(tmp_path / "o", "weekday")) == {"1"}
    hours = {i: v for v, i in vocabulary(tmp_path / "o", "hour").items()}
    got = np.asarray(tr.categorical)[:, [f.name for f in fm.fields].index("hour")]
    assert sorted(int(hours[i]) for i in got) == [0, 7, 8, 10, 11, 13, 19]
