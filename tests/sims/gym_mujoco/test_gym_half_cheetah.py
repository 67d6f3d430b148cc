"""mujoco/half-cheetah: demonstrator, success, and agreement with HalfCheetah-v5 (exact state:
``test_gym_restore.py``)."""

import mujoco
import numpy as np
import pytest
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

import sims
from sims.conformance import episode_succeeded

NAME = "mujoco/half-cheetah"
SEEDS = range(20)


def test_registered_with_tags_and_embodiment():
    assert {"mujoco", "gymnasium"} <= set(sims.tags_of(NAME))
    env = sims.make(NAME)
    emb = env.embodiment
    assert (emb.proprio_dim, emb.action_dim) == (17, 6)
    assert emb.action_low == (-1.0,) * 6 and emb.action_high == (1.0,) * 6


@pytest.mark.parametrize("fidelity", [1.0, 0.5])
def test_demonstrator_runs_far_enough(fidelity):
    env = sims.make(NAME, fidelity=fidelity, run_seed=0)
    demo = env.demonstrator()
    results = []
    for seed in SEEDS:
        demo.reset()
        results.append(episode_succeeded(env, demo, seed))
    assert np.mean(results) >= 0.9, results


def test_do_nothing_and_random_policies_do_not_succeed():
    env = sims.make(NAME)
    rng = np.random.default_rng(0)
    assert not any(episode_succeeded(env, lambda obs: np.zeros(6), seed) for seed in SEEDS)
    assert not any(episode_succeeded(env, lambda obs: rng.uniform(-1, 1, 6), seed) for seed in range(10))


def test_success_is_distance_from_start_and_upright():
    env = sims.make(NAME)
    _, info = env.reset(seed=3)
    start = float(env.data.qpos[0])
    assert not info["success"] and env.progress() == 0.0

    def moved(dx, pitch):
        env.data.qpos[0] = start + dx
        env.data.qpos[2] = pitch
        mujoco.mj_forward(env.model, env.data)
        env.set_state(env.get_state())
        return env._update_success()

    assert not moved(env.success_distance - 0.01, 0.0)
    assert moved(env.success_distance + 0.01, 0.0)
    assert not moved(env.success_distance + 5.0, np.pi)  # on its back does not count
    # The start position is part of the saved state.
    saved = env.get_state()
    env.reset(seed=4)
    env.set_state(saved)
    assert env.progress() == pytest.approx(env.success_distance + 5.0)


def test_matches_upstream_gymnasium_at_fidelity_one():
    env = sims.make(NAME)
    upstream = HalfCheetahEnv()
    rng = np.random.default_rng(0)
    for seed in range(2):
        obs, _ = env.reset(seed=seed)
        up_obs, _ = upstream.reset(seed=seed)
        assert np.array_equal(obs["proprio"], up_obs.astype(np.float32))
        demo = env.demonstrator()
        for k in range(100):
            # Every other action from the gait, for the contacts of real running. float64, as
            # the env validates actions to float64 (upstream squares what it is given).
            action = np.float64(demo(obs)) if k % 2 else rng.uniform(-1, 1, 6)
            obs, reward, *_ = env.step(action)
            up_obs, up_reward, *_ = upstream.step(action)
            assert np.array_equal(env.data.qpos, upstream.data.qpos)
            assert np.array_equal(env.data.qvel, upstream.data.qvel)
            assert np.array_equal(obs["proprio"], up_obs.astype(np.float32))
            assert reward == up_reward
