import re
import numpy as np
import pytest

from dlf.data.schema import DataError
from dlf.data.synthetic import SyntheticConfig, expected_sigmoid, generate
from dlf.train.metrics import roc_auc

SMALL = SyntheticConfig(rows=20_000, max_cardinality=2_000)


def test_deterministic_for_a_seed_and_different_across_seeds():
    a, b = generate(SMALL), generate(SMALL)
    np.testing.assert_array_equal(a.train.categorical, b.train.categorical)
    np.testing.assert_array_equal(a.test.prob, b.test.prob)
    np.testing.assert_array_equal(a.valid.label, b.valid.label)
    c = generate(SyntheticConfig(rows=20_000, max_cardinality=2_000, seed=7))
    assert not np.array_equal(a.test.prob, c.test.prob)


def test_the_truth_does_not_depend_on_the_row_count():
    """More rows are a bigger sample of the same world: rows with the same features get the same true
    probability (up to the per-sample standardisation and click-rate bias); another seed is another world."""
    kw = {"categorical": 3, "max_cardinality": 5, "numeric": 0, "multi_valued": False, "pairs": 2, "triples": 1,
          "noise": 0.0}

    def prob_by_features(d):
        return dict(zip((d.train.categorical @ np.array([100, 10, 1])).tolist(), d.train.prob.tolist()))

    small = prob_by_features(generate(SyntheticConfig(rows=5_000, **kw)))
    big = prob_by_features(generate(SyntheticConfig(rows=20_000, **kw)))
    other = prob_by_features(generate(SyntheticConfig(rows=20_000, seed=7, **kw)))
    assert len(small.keys() & big.keys()) > 40
    assert max(abs(small[x] - big[x]) for x in small.keys() & big.keys()) < 0.03
    assert max(abs(small[x] - other[x]) for x in small.keys() & other.keys()) > 0.2


def test_shapes_splits_ids_and_missing_values():
    d = generate(SMALL)
    assert (len(d.train), len(d.valid), len(d.test)) == (16_000, 2_000, 2_000)
    fm = d.feature_map
    assert [f.kind for f in fm.fields] == ["categorical"] * 16 + ["numeric"] * 4 + ["multi"]
    vocab = np.array([f.vocab_size for f in fm.of_kind("categorical")])
    assert (d.train.categorical >= 2).all() and (d.train.categorical < vocab).all()
    assert vocab.min() == 3 + 2 and vocab.max() == 2_000 + 2
    zero_rate = (d.train.numeric == 0).mean(0)
    assert (zero_rate > 0.1).all()  # ~15% missing (plus true zeros)
    raw = np.expm1(d.train.numeric)  # inputs are log1p(count); the counts are heavy-tailed
    assert (raw.max(0) > 50 * np.nanmedian(np.where(raw > 0, raw, np.nan), axis=0)).all()
    lengths = (d.train.multi[:, 0] > 0).sum(1)
    assert lengths.min() >= 1 and lengths.max() == 5
    # Zipf: the most frequent value of the biggest field is far more common than the median one
    counts = np.bincount(d.train.categorical[:, -1])
    assert counts.max() > 50 * np.median(counts[counts > 0])


def test_labels_follow_the_true_probabilities():
    d = generate(SyntheticConfig(rows=60_000, max_cardinality=2_000))
    assert abs(d.train.label.mean() - 0.25) < 0.01
    assert abs(d.train.prob.mean() - d.train.label.mean()) < 0.01
    hi, lo = d.train.prob > 0.6, d.train.prob < 0.1  # calibrated in the extremes too
    assert abs(d.train.label[hi].mean() - d.train.prob[hi].mean()) < 0.03
    assert abs(d.train.label[lo].mean() - d.train.prob[lo].mean()) < 0.02
    assert roc_auc(d.test.label, d.test.prob) > 0.75


def test_expected_sigmoid_matches_monte_carlo():
    rng = np.random.default_rng(0)
    logit = np.array([-3.0, -0.5, 0.0, 1.0, 4.0])
    mc = (1 / (1 + np.exp(-(logit[:, None] + 0.8 * rng.standard_normal((5, 400_000)))))).mean(1)
    np.testing.assert_allclose(expected_sigmoid(logit, 0.8), mc, atol=2e-3)
    np.testing.assert_allclose(expected_sigmoid(logit, 0.0), 1 / (1 + np.exp(-logit)))


def test_interaction_strength_controls_what_a_linear_model_can_reach():
    """With only first-order signal the truth is additive; with interactions it is not."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder

    def linear_gap(**kw):
        d = generate(SyntheticConfig(rows=40_000, categorical=6, max_cardinality=30, numeric=0,
                                     multi_valued=False, pairs=8, triples=4, noise=0.0, **kw))
        enc = OneHotEncoder(handle_unknown="ignore").fit(d.train.categorical)
        clf = LogisticRegression(max_iter=2000).fit(enc.transform(d.train.categorical), d.train.label)
        p = clf.predict_proba(enc.transform(d.test.categorical))[:, 1]
        return roc_auc(d.test.label, d.test.prob) - roc_auc(d.test.label, p)

    assert linear_gap(pairwise=0.0, higher_order=0.0) < 0.01
    assert linear_gap(pairwise=1.5, higher_order=1.5) > 0.04


def test_pairwise_term_holds_no_first_order_part():
    """The planted pair term is a pure interaction: the best linear function of the features (one-hot ids,
    numeric values, tag shares) explains the first-order term fully and none of the pair term."""
    from scipy import sparse
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import OneHotEncoder

    d = generate(SyntheticConfig(rows=40_000, categorical=6, max_cardinality=30, numeric=2, pairs=8, triples=4))
    enc = OneHotEncoder(handle_unknown="ignore").fit(d.train.categorical)

    def features(ds):
        tags = ds.multi[:, 0]
        share = np.stack([(tags == t).sum(1) for t in range(2, 2 + 40)], 1) / (tags > 0).sum(1, keepdims=True)
        return sparse.hstack([enc.transform(ds.categorical), ds.numeric, share]).tocsr()

    def linear_r2(name):
        fit = Ridge(alpha=1e-3).fit(features(d.train), d.components["train"][name])
        target = d.components["test"][name]
        return 1 - (target - fit.predict(features(d.test))).var() / target.var()

    assert linear_r2("first") > 0.99
    assert linear_r2("pair") < 0.02


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="splits"):
        generate(SyntheticConfig(splits=(0.5, 0.5, 0.5)))
    with pytest.raises(ValueError, match="may interact"):
        generate(SyntheticConfig(rows=1000, min_cardinality=100, numeric=0, multi_valued=False))
    with pytest.raises(DataError, match="4 distinct groups of 2 asked for, but only 3 field"):  # P is a set
        generate(SyntheticConfig(rows=1000, categorical=3, max_cardinality=5, numeric=0, multi_valued=False,
                                 pairs=4, triples=1))


@pytest.mark.parametrize("kw, needle", [
    ({"multi_vocab": 0}, "multi_vocab must be >= 1"),  # IndexError deep in generate
    ({"multi_max_len": 0}, "multi_max_len must be >= 1"),  # "low >= high"
    ({"min_cardinality": 0}, "need 1 <= min_cardinality <= max_cardinality"),  # "Geometric sequence ..."
    ({"min_cardinality": 50, "max_cardinality": 10}, "need 1 <= min_cardinality <= max_cardinality"),  # ran
    ({"numeric": -1}, "numeric must be >= 0"),
    ({"latent_dim": 0}, "latent_dim must be >= 1"),
    ({"zipf": -2}, "zipf must be >= 0"),
])
def test_config_values_the_generator_cannot_use_are_refused(kw, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        SyntheticConfig(rows=200, **kw).validate()
