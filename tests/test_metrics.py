import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from dlf.train.metrics import calibration, classification_metrics, group_auc, log_loss, roc_auc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_logloss_match_sklearn_including_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 5000)
    p = rng.random(5000).astype(np.float32)
    p[:2000] = np.round(p[:2000], 2)  # many tied scores
    assert abs(roc_auc(y, p) - roc_auc_score(y, p)) < 1e-9
    assert abs(log_loss(y, p) - sk_log_loss(y, p)) < 1e-6
    p[0], p[1] = 0.0, 1.0  # clipped, not infinite
    assert abs(log_loss(y, p) - sk_log_loss(y, p)) < 1e-6


def test_group_auc_is_impression_weighted_mean_of_group_aucs():
    rng = np.random.default_rng(3)
    g = rng.integers(0, 40, 4000)
    y = rng.integers(0, 2, 4000)
    p = np.round(rng.random(4000) + 0.2 * y, 2)
    g[g == 7] = 1000  # group ids need not be contiguous
    y[g == 5] = 1  # a single-class group is left out
    expected_all, weight_all = 0.0, 0
    for k in np.unique(g):
        m = g == k
        if 0 < y[m].sum() < m.sum():
            expected_all += roc_auc_score(y[m], p[m]) * m.sum()
            weight_all += m.sum()
    assert abs(group_auc(y, p, g) - expected_all / weight_all) < 1e-9


def test_degenerate_inputs_and_calibration():
    assert np.isnan(roc_auc(np.ones(5), np.arange(5)))
    assert calibration(np.array([0, 1, 0, 1]), np.array([0.25] * 4)) == pytest.approx(0.5)
    m = classification_metrics(np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.8, 0.3]), np.array([1, 1, 2, 2]))
    assert m["auc"] == 1.0 and m["gauc"] == 1.0


def test_an_empty_split_has_every_metric_undefined_without_numpy_warnings():
    import warnings
    empty = np.array([], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # was RuntimeWarning: Mean of empty slice (twice)
        m = classification_metrics(empty, empty, np.array([], dtype=np.int64))
    assert set(m) == {"auc", "logloss", "calibration", "gauc"} and all(np.isnan(v) for v in m.values())
