"""The optional ``state_from_proprio`` hook: proprio back to an exact state, where it can be."""

import numpy as np
import pytest

import sims
from sims.conformance import random_actions

DETERMINED = [
    "mujoco/inverted-pendulum",
    "mujoco/reacher",
    "dmc/cartpole-swingup",
    "dmc/point_mass-easy",
    "dmc/reacher-easy",
    "mujoco/cartpole-swingup-twin",
    "pybullet/cartpole-swingup",
    "mujoco/reacher-twin",
    "pybullet/reacher",
]
NOT_DETERMINED = ["mujoco/half-cheetah", "dmc/cheetah-run", "pybullet/panda-lift"]


def _visited_states(env, steps=12):
    """A few states along a demonstrator-driven (so long-lived) episode, with their actions."""
    obs, _ = env.reset(seed=2)
    demo = env.demonstrator()
    demo.reset()
    states, actions = [], []
    for _ in range(steps):
        states.append(env.get_state())
        actions.append(demo(obs))
        obs, *_ = env.step(actions[-1])
    return states, actions


@pytest.mark.parametrize("name", DETERMINED)
def test_proprio_round_trips_to_a_state_that_moves_on_alike(name):
    env = sims.make(name)
    states, actions = _visited_states(env)
    target, like = states[-1], states[3]  # joints from one time, everything else from another
    env.set_state(target)
    proprio = env._proprio()
    before = env.get_state()
    rebuilt = env.state_from_proprio(proprio.astype(np.float32), like=like)
    assert env.get_state().equals(before), "state_from_proprio must leave the env as it found it"
    assert rebuilt.step == like.step
    env.set_state(rebuilt)
    np.testing.assert_allclose(env._proprio(), proprio, atol=1e-5)  # float32 proprio in
    rebuilt_next = env.step(actions[-1])[0]["proprio"]
    env.set_state(target)
    true_next = env.step(actions[-1])[0]["proprio"]
    np.testing.assert_allclose(rebuilt_next, true_next, atol=1e-4)


@pytest.mark.parametrize("name", DETERMINED)
def test_setting_the_state_from_proprio_in_place_is_setting_the_state_it_returns(name):
    env = sims.make(name)
    states, actions = _visited_states(env)
    env.set_state(states[-1])
    proprio = env._proprio().astype(np.float32)
    rebuilt = env.state_from_proprio(proprio, like=states[3])
    env.set_state_from_proprio(proprio, like=states[3])
    assert env.get_state().equals(rebuilt)
    in_place = env.step(actions[-1])[0]["proprio"]
    env.set_state(rebuilt)
    np.testing.assert_array_equal(in_place, env.step(actions[-1])[0]["proprio"])


@pytest.mark.parametrize("name", NOT_DETERMINED)
def test_tasks_whose_proprio_misses_state_say_so(name):
    env = sims.make(name)
    env.reset(seed=0)
    with pytest.raises(sims.StateNotDetermined, match=name):
        env.state_from_proprio(env._proprio(), like=env.get_state())


def test_bad_proprio_and_foreign_states_are_rejected():
    env = sims.make("dmc/cartpole-swingup")
    env.reset(seed=0)
    like = env.get_state()
    with pytest.raises(ValueError, match="shape"):
        env.state_from_proprio(np.zeros(4), like=like)
    with pytest.raises(ValueError, match="NaN"):
        env.state_from_proprio(np.full(5, np.nan), like=like)
    other = sims.make("mujoco/cartpole-swingup-twin")
    other.reset(seed=0)
    with pytest.raises(ValueError, match="saved from sim"):
        env.state_from_proprio(env._proprio(), like=other.get_state())
    env.step(random_actions(env, 1, seed=0)[0])  # still usable afterwards
