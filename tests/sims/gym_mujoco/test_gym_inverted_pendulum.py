"""mujoco/inverted-pendulum: demonstrator, success, agreement with InvertedPendulum-v5 (exact state:
``test_gym_restore.py``)."""

import numpy as np
import pytest
from gymnasium.envs.mujoco.inverted_pendulum_v5 import InvertedPendulumEnv

import sims

NAME = "mujoco/inverted-pendulum"
SEEDS = range(20)


def run_episode(env, policy, seed):
    obs, info = env.reset(seed=seed)
    succeeded = info["success"]
    done = terminated = False
    while not done:
        obs, _, terminated, truncated, info = env.step(policy(obs))
        succeeded |= info["success"]
        done = terminated or truncated
    return succeeded, terminated


def test_registered_with_tags_and_embodiment():
    assert {"mujoco", "gymnasium"} <= set(sims.tags_of(NAME))
    env = sims.make(NAME)
    emb = env.embodiment
    assert (emb.proprio_dim, emb.action_dim) == (4, 1)
    assert emb.action_low == (-1.0,) and emb.action_high == (1.0,)  # upstream's [-3, 3], normalized


@pytest.mark.parametrize("fidelity", [1.0, 0.5])
def test_demonstrator_balances(fidelity):
    env = sims.make(NAME, fidelity=fidelity, run_seed=2)
    demo = env.demonstrator()
    results = []
    for seed in SEEDS:
        demo.reset()
        succeeded, terminated = run_episode(env, demo, seed)
        results.append(succeeded and not terminated)
    assert np.mean(results) >= 0.9, results


def test_success_arrives_after_hold_steps_of_balance():
    env = sims.make(NAME)
    demo = env.demonstrator()
    obs, info = env.reset(seed=0)
    flags = [info["success"]]
    while len(flags) <= env.hold_steps + 5:
        obs, _, terminated, _, info = env.step(demo(obs))
        assert not terminated
        flags.append(info["success"])
    assert flags.index(True) == env.hold_steps  # first true after exactly hold_steps steps


def test_do_nothing_and_random_policies_fall():
    env = sims.make(NAME)
    rng = np.random.default_rng(0)
    for policy in (lambda obs: np.zeros(1), lambda obs: rng.uniform(-1, 1, 1)):
        runs = [run_episode(env, policy, seed) for seed in SEEDS]
        assert not any(succeeded for succeeded, _ in runs)
        assert all(terminated for _, terminated in runs)  # falling ends the episode
    # After a fall the episode is over.
    with pytest.raises(RuntimeError):
        env.step(np.zeros(1))


def test_matches_upstream_gymnasium_at_fidelity_one():
    env = sims.make(NAME)
    upstream = InvertedPendulumEnv()
    rng = np.random.default_rng(0)
    falls = 0
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        up_obs, _ = upstream.reset(seed=seed)
        assert np.array_equal(obs["proprio"], up_obs.astype(np.float32))
        demo = env.demonstrator()
        for _ in range(60):
            # Even seeds balance (wobbly), odd seeds push at random and fall within a few steps.
            action = demo(obs) + rng.normal(0, 0.35, 1) if seed % 2 == 0 else rng.uniform(-1, 1, 1)
            obs, reward, terminated, truncated, _ = env.step(action)
            up_obs, up_reward, up_terminated, _, _ = upstream.step(3.0 * np.clip(action, -1, 1))
            assert np.array_equal(env.data.qpos, upstream.data.qpos)
            assert np.array_equal(env.data.qvel, upstream.data.qvel)
            assert np.array_equal(obs["proprio"], up_obs.astype(np.float32))
            assert (reward, terminated) == (up_reward, up_terminated)
            if terminated or truncated:
                falls += terminated
                break
    assert falls == 2
