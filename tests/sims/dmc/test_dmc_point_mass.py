"""dmc/point_mass-easy: inside-the-target success and a PD demonstrator."""

import numpy as np
import pytest

import sims
from sims.conformance import success_rate
from sims.rendering import mujoco_rendering_problem


def test_zero_and_random_actions_fail():
    env = sims.make("dmc/point_mass-easy")
    rng = np.random.default_rng(0)
    assert success_rate(env, lambda obs: np.zeros(2), range(10)) <= 0.1
    assert success_rate(env, lambda obs: rng.uniform(-1, 1, 2), range(10)) <= 0.1


def test_success_means_within_the_target_radius():
    env = sims.make("dmc/point_mass-easy")
    demo = env.demonstrator()
    obs, info = env.reset(seed=0)
    assert env.target_radius() == pytest.approx(0.015)
    while not info["success"]:
        assert env.mass_to_target_dist() > env.target_radius()
        obs, _, _, truncated, info = env.step(demo(obs))
        assert not truncated
    assert env.mass_to_target_dist() <= env.target_radius()


@pytest.mark.skipif(mujoco_rendering_problem() is not None, reason="no offscreen MuJoCo rendering here")
def test_enlarged_markers_are_drawn_only():
    env = sims.make("dmc/point_mass-easy", camera=True)
    sizes = env.model.geom_size.copy()
    obs, _ = env.reset(seed=0)
    env.step(np.ones(2))
    np.testing.assert_array_equal(env.model.geom_size, sizes)
    # The mass is visible: several pixels differ from a frame with the mass elsewhere.
    other, _ = env.reset(seed=1)
    assert (np.abs(obs["image"].astype(int) - other["image"].astype(int)).sum(-1) > 30).sum() >= 8
    env.close()
