"""Probe sets and ``fidelity``: 1 against itself, falling with the knob, any pair that can start alike."""

import numpy as np
import pytest

import sims
import world_model as wm
from world_model.probes import start_candidate

KNOB = (1.0, 0.8, 0.5, 0.2)


def test_probe_sets_are_reproducible_from_sim_and_seed():
    a = wm.probe_set("mujoco/reacher-twin", seed=3, probes=3, horizon=20)
    b = wm.probes._probe_set.__wrapped__("mujoco/reacher-twin", 3, 3, 20, 20)  # built afresh, not from the cache
    assert a.reset_seeds == b.reset_seeds
    assert all(x.equals(y) for x, y in zip(a.starts, b.starts))
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.reference, b.reference)
    other = wm.probe_set("mujoco/reacher-twin", seed=4, probes=3, horizon=20)
    assert not np.array_equal(a.actions, other.actions)
    assert a.actions.shape == (3, 20, 2) and a.reference.shape == (3, 20, 8)


@pytest.mark.parametrize("sim", ["dmc/cartpole-swingup", "mujoco/inverted-pendulum"])
def test_a_sim_against_itself_has_fidelity_exactly_one(sim):
    result = wm.fidelity(sim, sim, probes=3, horizon=30)
    assert result.fidelity == 1.0
    assert result.score.mean_error == 0.0 and result.score.diverges_at is None


@pytest.mark.parametrize("sim", ["dmc/cartpole-swingup", "mujoco/reacher-twin"])
def test_measured_fidelity_falls_as_the_knob_falls(sim):
    probes = wm.probe_set(sim, probes=4, horizon=40)
    measured = [wm.fidelity(sim, probes, fidelity=knob).fidelity for knob in KNOB]
    assert measured[0] == 1.0
    assert all(a > b for a, b in zip(measured, measured[1:])), dict(zip(KNOB, measured))
    assert 0.0 <= measured[-1] < 1.0


def test_the_pybullet_twin_is_measured_against_its_mujoco_original():
    result = wm.fidelity("pybullet/reacher", "mujoco/reacher-twin", probes=3, horizon=60)
    assert result.reference == "mujoco/reacher-twin" and result.candidate == "pybullet/reacher"
    assert 0.0 < result.fidelity <= 1.0
    assert result.curve.shape == (60,)


def test_a_probe_set_from_another_sim_is_a_clear_error():
    probes = wm.probe_set("dmc/point_mass-easy", probes=2, horizon=10)
    with pytest.raises(ValueError, match="probe set of 'dmc/point_mass-easy' cannot start candidate 'mujoco/reacher'"):
        wm.fidelity("mujoco/reacher", probes)
    env = sims.make("dmc/cartpole-swingup")
    with pytest.raises(ValueError, match="cannot start candidate"):
        start_candidate(env, probes, 0)


def test_bad_probe_arguments_are_rejected():
    with pytest.raises(ValueError, match="horizon must be an int >= 1"):
        wm.probe_set("dmc/point_mass-easy", horizon=0)
    with pytest.raises(sims.UnknownSimError):
        wm.probe_set("nope/nothing")
    with pytest.raises(ValueError, match="tolerance"):
        wm.fidelity("dmc/point_mass-easy", "dmc/point_mass-easy", probes=1, horizon=5, tolerance=0)
