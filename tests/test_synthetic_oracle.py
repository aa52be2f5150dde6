"""The oracle probabilities are the ones the labels were drawn from, and config edge values are refused clearly."""
import numpy as np
import pytest

from dlf.data.synthetic import SyntheticConfig, expected_sigmoid


def _dense_expectation(logit: float, noise: float) -> float:
    """E[sigmoid(logit + noise * eps)] on a fine uniform grid (slow, but exact far past float32)."""
    x = np.linspace(-40, 40, 800_001)
    w = np.exp(-x * x / 2)
    return float((w * 0.5 * (1 + np.tanh((logit + noise * x) / 2))).sum() / w.sum())


@pytest.mark.parametrize("noise", [0.0, 0.3, 1.0, 2.0])
def test_expected_sigmoid_is_exact_over_the_allowed_noise_range(noise):
    logits = np.array([-8.0, -2.0, 0.5, 3.0, 9.0])
    got = expected_sigmoid(logits, noise)
    assert np.abs(got - [_dense_expectation(l, noise) for l in logits]).max() < 1e-9


@pytest.mark.parametrize("noise", [2.5, 10.0, 30.0])
def test_noise_beyond_what_the_quadrature_resolves_is_refused(noise):
    """48 Gauss-Hermite nodes cannot follow sigmoid(logit + noise * eps) once it is steep in eps: at noise 10
    the 'oracle' was 0.005 off the probabilities the labels were drawn from, at 30 0.04."""
    with pytest.raises(ValueError, match=r"data\.synthetic\.noise must be in \[0, 2\]"):
        SyntheticConfig(noise=noise).validate()


@pytest.mark.parametrize("rows, splits", [(10, (0.9, 0.09, 0.01)), (10, (0.98, 0.01, 0.01)), (40, (0.98, 0.01, 0.01))])
def test_a_split_left_without_rows_is_refused(rows, splits):
    """rows=10 with splits 0.9/0.09/0.01 made a test split of 0 rows: the run trained, then printed undefined
    test and oracle metrics."""
    with pytest.raises(ValueError, match=r"data\.synthetic\.rows=\d+ with splits .* leaves the (valid|test) split"):
        SyntheticConfig(rows=rows, splits=splits).validate()
