"""Temperature scaling, expected calibration error, Brier score and reliability bins, on synthetic logits."""

import numpy as np
import pytest

from attrfit.evaluation.calibration import BINS, brier, ece, fit_temperature, log_probs, reliability, scaled


def sample(rng, logits: np.ndarray, temperature: float) -> np.ndarray:
    """Labels drawn from softmax(logits / temperature): logits whose true temperature is known."""
    p = np.exp(logits / temperature - (logits / temperature).max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return (rng.random(len(p))[:, None] > p.cumsum(1)).sum(1)


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_the_fitted_temperature_recovers_the_one_the_labels_were_drawn_with(true_t):
    rng = np.random.default_rng(7)
    z = rng.normal(0, 3, (20000, 4))
    y = sample(rng, z, true_t)
    assert fit_temperature(z, y) == pytest.approx(true_t, rel=0.05)


def test_missing_labels_are_skipped_and_none_at_all_means_no_change():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 3, (8000, 3))
    y = sample(rng, z, 2.0)
    with_missing = np.where(np.arange(len(y)) % 3 == 0, -1, y)
    assert fit_temperature(z, with_missing) == pytest.approx(fit_temperature(z[with_missing >= 0], y[with_missing >= 0]))
    assert fit_temperature(z, np.full(len(y), -1)) == 1.0


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_scaling_probabilities_is_scaling_the_logits_and_keeps_the_most_probable_class():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 3, (200, 5))
    p = softmax(z).astype(np.float32)
    np.testing.assert_allclose(scaled(p, 2.5), softmax(z / 2.5), atol=1e-6)
    assert scaled(p, 1.0) is p  # temperature 1: the model's own probabilities, untouched
    assert np.array_equal(scaled(p, 0.3).argmax(1), p.argmax(1)) and np.array_equal(scaled(p, 7).argmax(1), p.argmax(1))
    # a temperature fitted on log-probabilities is the one fitted on the logits
    y = sample(rng, z, 1.8)
    assert fit_temperature(log_probs(p), y) == pytest.approx(fit_temperature(z, y), rel=1e-3)


def test_ece_and_brier_by_their_definitions():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    labels = np.array([0, 1, 0, 1, -1])
    # bins of 1/15: 0.95 -> bin 14 (one right, one wrong), 0.6 -> bin 9 (right), 0.7 -> bin 10 (right)
    expected = (2 * abs(0.5 - 0.95) + abs(1 - 0.6) + abs(1 - 0.7)) / 4
    assert ece(probs, labels) == pytest.approx(expected)
    assert brier(probs, labels) == pytest.approx(np.mean([2 * 0.05**2, 2 * 0.95**2, 2 * 0.4**2, 2 * 0.3**2]))
    assert np.isnan(ece(probs, np.full(5, -1))) and np.isnan(brier(probs, np.full(5, -1)))


def test_a_top_probability_of_one_falls_in_the_last_bin_and_heads_pool():
    r = reliability(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0]))
    assert r.count[-1] == 2 and r.count.sum() == 2 and len(r.edges) == BINS + 1
    pooled = reliability([np.array([[0.9, 0.1]]), np.array([[0.2, 0.8]])], np.array([[0, -1]]))
    assert pooled.count.sum() == 1  # the second head's row is unlabelled
    assert pooled.ece == pytest.approx(0.1)


def test_scaling_a_confident_model_down_lowers_its_calibration_error():
    rng = np.random.default_rng(5)
    z = rng.normal(0, 2, (10000, 3))
    y = sample(rng, z, 1.0)
    overconfident = z * 3  # the same ranking, three times as sure
    t = fit_temperature(overconfident, y)
    before = ece(softmax(overconfident), y)
    after = ece(scaled(softmax(overconfident), t), y)
    assert t == pytest.approx(3, rel=0.05) and after < 0.02 < before
