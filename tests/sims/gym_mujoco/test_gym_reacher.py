"""mujoco/reacher: demonstrator, success, exact state, and agreement with gymnasium Reacher-v5."""

import mujoco
import numpy as np
import pytest
from gymnasium.envs.mujoco.reacher_v5 import ReacherEnv

import sims
from sims.conformance import episode_succeeded
from sims.rendering import mujoco_rendering_problem

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


def test_restore_and_replay_is_bit_identical():
    camera = mujoco_rendering_problem() is None
    env = sims.make(NAME, fidelity=0.6, run_seed=3, camera=camera)  # noise on: the RNG is restored too
    demo = env.demonstrator()
    obs, _ = env.reset(seed=5)
    for _ in range(8):
        obs, *_ = env.step(demo(obs))
    saved = env.get_state()
    before = (env._proprio().copy(), env._render_camera() if camera else None)
    actions = np.random.default_rng(1).uniform(-1, 1, (15, 2))

    def replay():
        out = []
        for a in actions:
            obs, reward, terminated, truncated, info = env.step(a)
            out.append((obs, reward, terminated, truncated, info, env.get_state()))
        return out

    first = replay()
    env.set_state(saved)
    assert np.array_equal(env._proprio(), before[0])
    if camera:
        assert np.array_equal(env._render_camera(), before[1])
    second = replay()
    for (o1, *rest1, s1), (o2, *rest2, s2) in zip(first, second):
        assert np.array_equal(o1["proprio"], o2["proprio"])
        if camera:
            assert np.array_equal(o1["image"], o2["image"])
        assert rest1 == rest2
        assert s1.equals(s2)


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
