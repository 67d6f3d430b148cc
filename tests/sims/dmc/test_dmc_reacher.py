"""dmc/reacher-easy: dm-control's own success, a reaching demonstrator, and exact restore of a
target that lives in the MuJoCo model rather than in its data."""

import numpy as np

import sims
from sims.conformance import success_rate


def test_zero_and_random_actions_fail_on_most_seeds():
    # A random start can put the fingertip on the target (about 1 seed in 20).
    env = sims.make("dmc/reacher-easy")
    rng = np.random.default_rng(0)
    assert success_rate(env, lambda obs: np.zeros(2), range(20)) <= 0.3
    assert success_rate(env, lambda obs: rng.uniform(-1, 1, 2), range(20)) <= 0.3


def test_success_is_dm_controls_sparse_reward():
    env = sims.make("dmc/reacher-easy")
    demo = env.demonstrator()
    obs, info = env.reset(seed=4)
    seen = set()
    for _ in range(60):
        obs, reward, _, _, info = env.step(demo(obs))
        assert info["success"] == (reward == 1.0)
        assert info["success"] == (env.finger_to_target_dist() < 0.06)
        seen.add(info["success"])
    assert seen == {True, False}


def test_restore_brings_back_a_target_that_moved():
    env = sims.make("dmc/reacher-easy")
    env.reset(seed=0)
    target = env.physics.named.model.geom_pos["target"].copy()
    actions = np.random.default_rng(1).uniform(-1, 1, (40, 2))
    for action in actions[:10]:
        env.step(action)
    saved = env.get_state()
    first = [env.step(a) for a in actions[10:]]
    end = env.get_state()

    env.reset(seed=1)
    assert not np.array_equal(env.physics.named.model.geom_pos["target"], target)
    env.set_state(saved)
    np.testing.assert_array_equal(env.physics.named.model.geom_pos["target"], target)
    second = [env.step(a) for a in actions[10:]]
    assert env.get_state().equals(end)
    for (o1, r1, *rest1), (o2, r2, *rest2) in zip(first, second):
        np.testing.assert_array_equal(o1["proprio"], o2["proprio"])  # includes to_target
        assert r1 == r2 and rest1 == rest2

    # And into a fresh env whose own episode has another target.
    fresh = sims.make("dmc/reacher-easy")
    fresh.reset(seed=2)
    fresh.set_state(saved)
    third = [fresh.step(a) for a in actions[10:]]
    for (o1, *_), (o3, *_) in zip(first, third):
        np.testing.assert_array_equal(o1["proprio"], o3["proprio"])
