"""dmc/cartpole-swingup: success needs 1 s of balancing, and the demonstrator gets there."""

import numpy as np

import sims
from sims.conformance import success_rate
from sims.dmc.cartpole import HOLD_STEPS


def test_zero_and_random_actions_fail():
    env = sims.make("dmc/cartpole-swingup")
    rng = np.random.default_rng(0)
    assert success_rate(env, lambda obs: np.zeros(1), range(5)) == 0.0
    assert success_rate(env, lambda obs: rng.uniform(-1, 1, 1), range(5)) == 0.0


def test_success_needs_the_pole_held_upright_for_the_hold_period():
    env = sims.make("dmc/cartpole-swingup")
    demo = env.demonstrator()
    obs, info = env.reset(seed=3)
    upright, success = [env.upright_and_centred()], [info["success"]]
    while not success[-1]:
        obs, _, _, truncated, info = env.step(demo(obs))
        upright.append(env.upright_and_centred())
        success.append(info["success"])
        assert not truncated
    t = len(success) - 1
    assert all(upright[t - HOLD_STEPS + 1 : t + 1]) and not upright[t - HOLD_STEPS]
    assert not any(success[:t])


def test_hold_count_survives_restore():
    env = sims.make("dmc/cartpole-swingup")
    demo = env.demonstrator()
    obs, _ = env.reset(seed=0)
    while not env.upright_and_centred():
        obs, *_ = env.step(demo(obs))
    for _ in range(HOLD_STEPS // 2):
        obs, *_ = env.step(demo(obs))
    saved, saved_obs = env.get_state(), obs
    first = []
    for _ in range(HOLD_STEPS):
        obs, _, _, _, info = env.step(demo(obs))
        first.append(info["success"])
    assert any(first) and not first[0]

    other = sims.make("dmc/cartpole-swingup")
    other.reset(seed=9)
    other.set_state(saved)
    obs, second = saved_obs, []
    demo2 = other.demonstrator()
    for _ in range(HOLD_STEPS):
        obs, _, _, _, info = other.step(demo2(obs))
        second.append(info["success"])
    assert first == second
