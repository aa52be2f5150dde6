"""Analyses: the planted synthetic components, grad-norm logging, the linear probe, `dlf analyze`."""
import numpy as np

from dlf.data.synthetic import SyntheticConfig, generate


def test_synthetic_components_rebuild_the_true_logit():
    # noise 0: prob = sigmoid(b + s1 first + s2 pair + s3 triple) exactly, so logit(prob) - signal is one constant
    cfg = SyntheticConfig(rows=3_000, max_cardinality=200, noise=0.0, first_order=0.7, pairwise=1.1,
                          higher_order=0.5)
    d = generate(cfg)
    biases = []
    for split in ("train", "valid", "test"):
        ds, comp = getattr(d, split), d.components[split]
        assert set(comp) == {"first", "pair", "triple"}
        assert all(len(c) == len(ds) for c in comp.values())
        signal = 0.7 * comp["first"] + 1.1 * comp["pair"] + 0.5 * comp["triple"]
        p = ds.prob.astype(np.float64)
        b = np.log(p / (1 - p)) - signal
        assert b.std() < 1e-6
        biases.append(b.mean())
    assert np.ptp(biases) < 1e-6
    # each component is standardised over all rows and they are distinct signals
    allrows = {k: np.concatenate([d.components[s][k] for s in ("train", "valid", "test")]) for k in ("first", "pair")}
    assert abs(allrows["first"].std() - 1) < 1e-6 and abs(allrows["pair"].mean()) < 1e-6
    assert abs(np.corrcoef(allrows["first"], allrows["pair"])[0, 1]) < 0.2
