"""mujoco/inverted-pendulum: demonstrator, success, exact state, agreement with InvertedPendulum-v5."""

import numpy as np
import pytest
from gymnasium.envs.mujoco.inverted_pendulum_v5 import InvertedPendulumEnv

import sims
from sims.rendering import mujoco_rendering_problem

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


def test_restore_and_replay_is_bit_identical():
    camera = mujoco_rendering_problem() is None
    env = sims.make(NAME, fidelity=0.6, run_seed=3, camera=camera)
    demo = env.demonstrator()
    obs, _ = env.reset(seed=5)
    for _ in range(20):
        obs, *_ = env.step(demo(obs))
    saved = env.get_state()
    before = (env._proprio().copy(), env._render_camera() if camera else None)
    noise = np.random.default_rng(1).normal(0, 0.1, 100)

    def replay():
        out = []
        obs = {"proprio": before[0]}
        for k in range(100):  # crosses the success hold, so the counter must be restored too
            obs, reward, terminated, truncated, info = env.step(demo(obs) + noise[k])
            out.append((obs, reward, terminated, truncated, info, env.get_state()))
            if terminated or truncated:
                break
        return out

    first = replay()
    assert any(info["success"] for _, _, _, _, info, _ in first)
    env.set_state(saved)
    assert np.array_equal(env._proprio(), before[0])
    if camera:
        assert np.array_equal(env._render_camera(), before[1])
    second = replay()
    assert len(first) == len(second)
    for (o1, *rest1, s1), (o2, *rest2, s2) in zip(first, second):
        assert np.array_equal(o1["proprio"], o2["proprio"])
        if camera:
            assert np.array_equal(o1["image"], o2["image"])
        assert rest1 == rest2
        assert s1.equals(s2)


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
