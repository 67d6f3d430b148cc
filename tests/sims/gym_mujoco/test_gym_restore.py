"""The gymnasium-derived sims restore their exact state: a replay after ``set_state`` is bit
for bit the first one (observations, rewards, flags, infos, states, and images where MuJoCo
can render), with observation noise on, so the noise RNG must be restored too."""

import numpy as np
import pytest

import sims
from sims.rendering import mujoco_rendering_problem

PENDULUM = "mujoco/inverted-pendulum"


# name, demonstrator steps before the state is saved, steps replayed after it
@pytest.mark.parametrize("name, warmup, steps", [
    ("mujoco/half-cheetah", 30, 15),
    (PENDULUM, 20, 100),
    ("mujoco/reacher", 8, 15),
])
def test_restore_and_replay_is_bit_identical(name, warmup, steps):
    camera = mujoco_rendering_problem() is None
    env = sims.make(name, fidelity=0.6, run_seed=3, camera=camera)
    demo = env.demonstrator()
    obs, _ = env.reset(seed=5)
    for _ in range(warmup):
        obs, *_ = env.step(demo(obs))
    saved = env.get_state()
    before = (env._proprio().copy(), env._render_camera() if camera else None)
    rng = np.random.default_rng(1)
    if name == PENDULUM:
        # Balancing long enough to cross the success hold, so the hold counter must be restored too.
        noise = rng.normal(0, 0.1, steps)

        def action(k, obs):
            return demo(obs) + noise[k]
    else:
        actions = rng.uniform(-1, 1, (steps, env.embodiment.action_dim))

        def action(k, obs):
            return actions[k]

    def replay():
        out = []
        obs = {"proprio": before[0]}
        for k in range(steps):
            obs, reward, terminated, truncated, info = env.step(action(k, obs))
            out.append((obs, reward, terminated, truncated, info, env.get_state()))
            if terminated or truncated:
                break
        return out

    first = replay()
    if name == PENDULUM:
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
