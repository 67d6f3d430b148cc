"""``score``: normalized per-step error, error against horizon, divergence; bad input is an error."""

import numpy as np
import pytest

from world_model.metrics import DIVERGENCE, normalized_error, score, spread


def _trajectory(t=20, d=3, seed=0):
    return np.cumsum(np.random.default_rng(seed).normal(size=(t, d)), axis=0)


def test_identical_trajectories_score_zero_and_never_diverge():
    realized = _trajectory()
    result = score(realized.copy(), realized)
    assert result.mean_error == 0.0 and result.diverges_at is None
    assert result.curve.shape == (20,) and result.error.shape == (20, 3)


def test_error_is_normalized_per_dimension_by_the_given_scale():
    realized = np.zeros((4, 2))
    imagined = np.tile([[0.5, 10.0]], (4, 1))
    error = normalized_error(imagined, realized, np.array([0.5, 100.0]))
    np.testing.assert_allclose(error, np.tile([[1.0, 0.1]], (4, 1)))


def test_the_curve_rises_with_horizon_and_divergence_is_its_first_crossing():
    realized = _trajectory(t=30)
    drift = np.linspace(0, 1, 30)[:, None] * np.ones(3)
    result = score(realized + drift, realized, np.ones(3))
    assert np.all(np.diff(result.curve) > 0)
    assert result.diverges_at == int(np.flatnonzero(result.curve > DIVERGENCE)[0]) + 1
    batched = score(np.stack([realized + drift, realized]), np.stack([realized, realized]), np.ones(3))
    np.testing.assert_allclose(batched.curve, result.curve / 2)


def test_spread_floors_dimensions_that_do_not_move():
    values = np.stack([np.linspace(0, 1, 50), np.full(50, 3.0)], axis=1)
    scale = spread(values)
    assert scale[1] > 0 and scale[1] < scale[0]


@pytest.mark.parametrize(
    "imagined, realized, message",
    [
        (np.zeros((5, 3)), np.zeros((6, 3)), "differ in shape"),  # mismatched length
        (np.zeros((5, 3)), np.zeros((5, 4)), "differ in shape"),  # mismatched dimension
        (np.full((5, 3), np.nan), np.zeros((5, 3)), "NaN"),
        (np.zeros((5, 3)), np.array([[0, 0, np.inf]] * 5), "NaN or inf"),
        (np.zeros((0, 3)), np.zeros((0, 3)), "at least one step"),
        ([["a", "b", "c"]], [[0, 0, 0]], "numeric"),
    ],
)
def test_bad_trajectories_are_clear_errors_never_a_score(imagined, realized, message):
    with pytest.raises(ValueError, match=message):
        score(imagined, realized, np.ones(np.asarray(realized).shape[-1]) if np.asarray(realized).size else np.ones(3))


def test_bad_scales_are_rejected():
    with pytest.raises(ValueError, match="one entry per proprio dimension"):
        score(np.zeros((4, 3)), np.zeros((4, 3)), np.ones(2))
    with pytest.raises(ValueError, match="positive"):
        score(np.zeros((4, 3)), np.zeros((4, 3)), np.array([1.0, 0.0, 1.0]))
