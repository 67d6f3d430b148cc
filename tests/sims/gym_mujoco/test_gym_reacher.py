"""mujoco/reacher: demonstrator, success, and agreement with gymnasium Reacher-v5 (exact state:
``test_gym_restore.py``)."""

import mujoco
import numpy as np
import pytest
from gymnasium.envs.mujoco.reacher_v5 import ReacherEnv

import sims
from sims.conformance import episode_succeeded

NAME = "mujoco/reacher"
SEEDS = range(20)


def test_registered_with_tags_and_embodiment():
    assert {"mujoco", "gymnasium"} <= set(sims.tags_of(NAME))
    env = sims.make(NAME)
    emb = env.embodiment
    assert (emb.proprio_dim, emb.action_dim) == (10, 2)
    assert emb.action_low == (-1.0, -1.0) and emb.action_high == (1.0, 1.0)
    assert env.max_episode_steps == 50


@pytest.mark.parametrize("fidelity", [1.0, 0.5])
def test_demonstrator_succeeds(fidelity):
    env = sims.make(NAME, fidelity=fidelity, run_seed=1)
    demo = env.demonstrator()
    results = []
    for seed in SEEDS:
        demo.reset()
        results.append(episode_succeeded(env, demo, seed))
    assert np.mean(results) >= 0.9, results


def test_do_nothing_and_random_policies_do_not_succeed():
    env = sims.make(NAME)
    rng = np.random.default_rng(0)
    zero = [episode_succeeded(env, lambda obs: np.zeros(2), seed) for seed in SEEDS]
    rand = [episode_succeeded(env, lambda obs: rng.uniform(-1, 1, 2), seed) for seed in SEEDS]
    assert not any(zero)
    assert np.mean(rand) <= 0.15


def test_success_needs_a_hold_not_a_sweep():
    env = sims.make(NAME)
    _, info = env.reset(seed=0)
    assert not info["success"] and env.distance() > env.success_radius
    # Put the target on the fingertip and let the arm rest there.
    fingertip = env.data.body("fingertip").xpos
    env.data.qpos[2:4] = fingertip[:2]  # the target's slide joints are its world x, y
    env.data.qvel[:] = 0
    mujoco.mj_forward(env.model, env.data)
    assert env.distance() < 1e-9
    flags = [env.step(np.zeros(2))[4]["success"] for _ in range(env.hold_steps)]
    assert flags == [False] * (env.hold_steps - 1) + [True]
    # Swinging the arm away ends success at once.
    for _ in range(5):
        _, _, _, _, info = env.step(np.array([1.0, 0.0]))
    assert env.distance() > env.success_radius and not info["success"]


def test_matches_upstream_gymnasium_at_fidelity_one():
    env = sims.make(NAME)
    upstream = ReacherEnv()
    rng = np.random.default_rng(0)
    for seed in range(3):
        env.reset(seed=seed)
        upstream.reset(seed=seed)
        assert np.array_equal(env.data.qpos, upstream.data.qpos)
        assert np.array_equal(env.data.qvel, upstream.data.qvel)
        for _ in range(env.max_episode_steps):
            action = rng.uniform(-1, 1, 2)
            obs, reward, *_ = env.step(action)
            upstream.step(action)
            assert np.array_equal(env.data.qpos, upstream.data.qpos)
            assert np.array_equal(env.data.qvel, upstream.data.qvel)
            # Upstream observes positions one substep stale; once brought up to date they agree.
            mujoco.mj_forward(upstream.model, upstream.data)
            assert np.array_equal(obs["proprio"], upstream._get_obs().astype(np.float32))
            assert reward == upstream._get_rew(action)[0]
