"""Randomized checks of the metrics against scikit-learn, and inputs scikit-learn refuses."""
import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from dlf.train.metrics import classification_metrics, group_auc, log_loss, roc_auc


@pytest.mark.parametrize("seed", range(4))
def test_auc_logloss_and_gauc_match_sklearn_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    for trial in range(50):
        n = int(rng.integers(2, 300))
        y = rng.integers(0, 2, n)
        p = rng.random(n)
        if trial % 3 == 1:
            p = np.round(p, 1)  # heavy ties
        if trial % 3 == 2:
            p[rng.random(n) < 0.2], p[rng.random(n) < 0.2] = 0.0, 1.0  # extreme probabilities, clipped
        g = rng.integers(0, int(rng.integers(1, 15)), n) * 7 - 3
        for scores in (p, p.astype(np.float32)):
            if 0 < y.sum() < n:
                assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
            # float32: scikit-learn sums in float32, we in float64 (more exact): equal to float32 rounding
            tol = 1e-12 if scores.dtype == np.float64 else 1e-6
            assert log_loss(y, scores) == pytest.approx(sk_log_loss(y, scores, labels=[0, 1]), rel=tol, abs=tol)
            weights = [(roc_auc_score(y[g == k], scores[g == k]), (g == k).sum())
                       for k in np.unique(g) if 0 < y[g == k].sum() < (g == k).sum()]
            expected = sum(a * w for a, w in weights) / sum(w for _, w in weights) if weights else np.nan
            assert group_auc(y, scores, g) == pytest.approx(expected, abs=1e-12, nan_ok=True)


def test_nan_scores_give_an_undefined_auc_not_a_ranking_with_nan_on_top():
    """scikit-learn refuses NaN scores; argsort put them last, so a model whose predictions had gone NaN got an
    AUC (0.5 or better) and the trainer's guard against non-finite validation metrics never fired."""
    y = np.array([0, 1, 0, 1])
    p = np.array([0.1, np.nan, 0.2, 0.3])
    assert np.isnan(roc_auc(y, p))
    assert np.isnan(roc_auc(y, np.full(4, np.nan)))
    assert np.isnan(group_auc(y, p, np.array([1, 1, 2, 2])))
    assert np.isnan(classification_metrics(y, p)["auc"])
