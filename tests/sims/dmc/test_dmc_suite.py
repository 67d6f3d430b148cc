"""The generic dm-control suite adapter: the ``dmc/`` family, fidelity-1 equivalence with
dm-control's own ``step``, exact state and the registry's error for unknown names."""

import numpy as np
import pytest
from dm_control import suite

import sims
from sims.dmc import DmcSuiteEnv, all_task_names, parse_name
from sims.rendering import mujoco_rendering_problem

CURATED = ["dmc/cartpole-swingup", "dmc/reacher-easy", "dmc/point_mass-easy", "dmc/cheetah-run"]


def _actions(env, n, seed):
    return np.random.default_rng(seed).uniform(env.action_space.low, env.action_space.high, (n, env.embodiment.action_dim))


def _flat(env, observation):
    return np.concatenate([np.asarray(observation[k], dtype=np.float64).ravel() for k in env.proprio_keys])


@pytest.mark.parametrize("name", ["dmc/walker-walk", "dmc/ball_in_cup-catch"])
def test_family_makes_and_steps_any_suite_task(name):
    env = sims.make(name)
    assert isinstance(env, DmcSuiteEnv) and env.name == name
    assert "dmc" in sims.tags_of(name)
    assert not env.defines_success
    obs, info = env.reset(seed=0)
    assert "success" not in info
    assert obs["proprio"].shape == (env.embodiment.proprio_dim,) and obs["proprio"].dtype == np.float32
    assert obs["task"] == env.task_text
    for action in _actions(env, 10, seed=1):
        obs, reward, terminated, truncated, info = env.step(action)
        assert np.all(np.isfinite(obs["proprio"])) and np.isfinite(reward) and "success" not in info
    with pytest.raises(NotImplementedError):
        env.demonstrator()


def test_generic_task_text_and_layout_come_from_the_suite():
    env = sims.make("dmc/ball_in_cup-catch")
    assert env.task_text == "ball in cup: catch"
    assert (env.dmc_domain, env.dmc_task) == ("ball_in_cup", "catch")
    assert env.embodiment.name == "dmc/ball_in_cup"
    assert env.proprio_keys == ("position", "velocity")
    assert env.n_sub_steps == 10  # ball_in_cup: 0.02 s control period over 0.002 s physics steps
    assert env.max_episode_steps == 1000  # the suite's own 20 s time limit


def test_every_suite_pair_parses_including_underscored_names():
    assert len(all_task_names()) == len(suite.ALL_TASKS)
    for domain, task in suite.ALL_TASKS:
        assert parse_name(f"dmc/{domain}-{task}") == (domain, task)
    assert parse_name("dmc/lqr-lqr_2_1") == ("lqr", "lqr_2_1")


@pytest.mark.parametrize("bad", ["dmc/foo-bar", "dmc/walker", "dmc/walker-wlak", "dmc/"])
def test_unknown_names_raise_listing_the_valid_pairs(bad):
    with pytest.raises(sims.UnknownSimError) as excinfo:
        sims.make(bad)
    message = str(excinfo.value)
    assert repr(bad) in message
    assert "dmc/walker-walk" in message and "dmc/ball_in_cup-catch" in message and "dmc/lqr-lqr_2_1" in message
    if bad == "dmc/walker-wlak":
        assert "Did you mean dmc/walker-walk" in message


def test_curated_tasks_are_registered_by_name_with_success():
    registered = sims.names(tag="dmc")
    for name in CURATED:
        assert name in registered
        assert sims.make(name).defines_success


@pytest.mark.parametrize("name", ["dmc/walker-walk", "dmc/reacher-easy", "dmc/cartpole-swingup", "dmc/cheetah-run"])
def test_fidelity_one_reproduces_dm_control_step_bit_for_bit(name):
    env = sims.make(name, fidelity=1.0, run_seed=5)
    obs, _ = env.reset(seed=7)
    reference = suite.load(env.dmc_domain, env.dmc_task, task_kwargs={"random": env.task_seed})
    step = reference.reset()
    np.testing.assert_array_equal(obs["proprio"], _flat(env, step.observation).astype(np.float32))
    for action in _actions(env, 60, seed=3):
        obs, reward, *_ = env.step(action)
        step = reference.step(action)
        np.testing.assert_array_equal(_flat(env, env.observation_dict()), _flat(env, step.observation))
        assert reward == step.reward
    np.testing.assert_array_equal(env.data.qpos, reference.physics.data.qpos)
    np.testing.assert_array_equal(env.data.qvel, reference.physics.data.qvel)
    assert env.data.time == reference.physics.data.time


@pytest.mark.parametrize("name", ["dmc/walker-walk", "dmc/finger-turn_easy", "dmc/swimmer-swimmer6"])
def test_restore_and_replay_is_bit_identical(name):
    """finger keeps its target in site_pos, swimmer its target light in light_pos: model data."""
    env = sims.make(name)
    env.reset(seed=0)
    actions = _actions(env, 30, seed=2)
    for action in actions[:10]:
        env.step(action)
    saved = env.get_state()
    first = [env.step(a) for a in actions[10:]]
    end = env.get_state()

    env.reset(seed=1)  # a different episode: new targets, new state
    env.step(actions[0])
    env.set_state(saved)
    assert env.get_state().equals(saved)
    second = [env.step(a) for a in actions[10:]]
    assert env.get_state().equals(end)
    for (o1, r1, *rest1), (o2, r2, *rest2) in zip(first, second):
        np.testing.assert_array_equal(o1["proprio"], o2["proprio"])
        assert r1 == r2 and rest1 == rest2


def test_restore_gives_back_acceleration_sensor_readings():
    """quadruped's IMU and force/torque sensors are acceleration-stage: the snapshot keeps them."""
    env = sims.make("dmc/quadruped-walk")
    env.reset(seed=1)
    for action in _actions(env, 5, seed=0):
        env.step(action)
    saved, before = env.get_state(), env._observation()["proprio"]
    env.reset(seed=2)
    env.set_state(saved)
    np.testing.assert_array_equal(env._observation()["proprio"], before)


def test_reset_seed_is_deterministic_and_varies():
    env = sims.make("dmc/walker-walk")
    a, _ = env.reset(seed=11)
    seed_a = env.task_seed
    b, _ = env.reset(seed=11)
    assert env.task_seed == seed_a
    np.testing.assert_array_equal(a["proprio"], b["proprio"])
    c, _ = env.reset(seed=12)
    assert not np.array_equal(a["proprio"], c["proprio"])


def test_timestep_changes_the_control_period_not_the_substeps():
    env = sims.make("dmc/walker-walk", params={"timestep": 0.003})
    assert env.n_sub_steps == 10
    assert env.control_timestep == pytest.approx(0.03)
    nominal = sims.make("dmc/walker-walk")
    assert nominal.control_timestep == pytest.approx(0.025)


def test_dm_control_rendering_contexts_are_never_created():
    env = sims.make("dmc/walker-walk")
    env.reset(seed=0)
    assert env.physics.contexts is None


@pytest.mark.skipif(mujoco_rendering_problem() is not None, reason="no offscreen MuJoCo rendering here")
@pytest.mark.parametrize("name", CURATED)
def test_curated_cameras_show_a_frame(name):
    env = sims.make(name, camera=True)
    obs, _ = env.reset(seed=0)
    image = obs["image"]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and image.std() > 5
    env.close()
