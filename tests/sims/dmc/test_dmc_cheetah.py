"""dmc/cheetah-run: success is a forward displacement only a real gait reaches."""

import numpy as np

import sims
from sims.conformance import success_rate
from sims.dmc.cheetah import FORWARD_DISTANCE


def test_zero_and_random_actions_fail():
    env = sims.make("dmc/cheetah-run")
    rng = np.random.default_rng(0)
    assert success_rate(env, lambda obs: np.zeros(6), range(5)) == 0.0
    assert success_rate(env, lambda obs: rng.uniform(-1, 1, 6), range(5)) == 0.0


def test_success_is_the_forward_displacement():
    env = sims.make("dmc/cheetah-run")
    demo = env.demonstrator()
    obs, info = env.reset(seed=0)
    assert abs(env.forward_displacement()) < 1e-12 and not info["success"]
    while not info["success"]:
        assert env.forward_displacement() < FORWARD_DISTANCE
        obs, _, _, truncated, info = env.step(demo(obs))
        assert not truncated
    assert env.forward_displacement() >= FORWARD_DISTANCE


def test_start_position_is_part_of_the_state():
    env = sims.make("dmc/cheetah-run")
    demo = env.demonstrator()
    obs, _ = env.reset(seed=0)
    for _ in range(150):
        obs, *_ = env.step(demo(obs))
    saved, displacement = env.get_state(), env.forward_displacement()
    actions = [demo(obs)]
    first = [env.step(actions[0])]
    for _ in range(50):
        actions.append(demo(first[-1][0]))
        first.append(env.step(actions[-1]))

    env.reset(seed=1)
    env.step(np.zeros(6))
    env.set_state(saved)
    assert env.forward_displacement() == displacement
    second = [env.step(a) for a in actions]
    for (o1, r1, *rest1), (o2, r2, *rest2) in zip(first, second):
        np.testing.assert_array_equal(o1["proprio"], o2["proprio"])
        assert r1 == r2 and rest1 == rest2
