"""PyBullet engine behaviour the generic conformance suite does not pin down.

Exact state through PyBullet's serializer (contacts, file caching, history), parameters
relative to nominal, one physics client per env, the camera, and bad input raised the way
the foundation issue asks for every sim.
"""

import math

import numpy as np
import pytest

import sims
from sims.state import SimState

PYBULLET_SIMS = ["pybullet/cartpole-swingup", "pybullet/cartpole-balance", "pybullet/reacher", "pybullet/panda-lift"]


def test_every_pybullet_task_is_registered_with_its_engine_tag():
    assert set(PYBULLET_SIMS) <= set(sims.names(tag="pybullet"))


# ---------------------------------------------------------------------- clients


def test_each_env_owns_its_physics_client():
    a, b = sims.make("pybullet/cartpole-swingup"), sims.make("pybullet/cartpole-swingup")
    assert a.client._client != b.client._client
    a.reset(seed=0)
    b.reset(seed=0)
    before = b.joint_state()
    for _ in range(20):
        a.step(np.ones(1))
    after = b.joint_state()
    np.testing.assert_array_equal(before[0], after[0])
    assert not np.array_equal(a.joint_state()[0], before[0])
    a.close()
    b.step(np.ones(1))  # closing one env leaves the other running


# ---------------------------------------------------------------------- exact state


def _grasping_panda():
    """A Panda mid-lift: fingers and table touching the cup, so contacts are cached."""
    env = sims.make("pybullet/panda-lift")
    obs, _ = env.reset(seed=7)
    demo = env.demonstrator()
    demo.reset()
    while demo.phase != "lift":
        obs, *_ = env.step(demo(obs))
    for _ in range(3):
        obs, *_ = env.step(demo(obs))
    assert len(env.client.getContactPoints(env.robot, env.cup)) >= 2
    return env, demo, obs


def test_panda_state_mid_grasp_replays_bit_identically_in_another_env():
    env, demo, obs = _grasping_panda()
    saved = env.get_state()
    actions = [demo(obs)]
    first = []
    for _ in range(12):
        obs, *_ = env.step(actions[-1])
        first.append(obs["proprio"])
        actions.append(demo(obs))
    end = env.get_state()

    other = sims.make("pybullet/panda-lift")  # with contacts of its own to forget
    other.reset(seed=1)
    for _ in range(15):
        other.step(np.array([0.3, 0.2, -1.0, 1.0]))
    other.set_state(saved)
    assert other.get_state().equals(saved)
    second = [other.step(a)[0]["proprio"] for a in actions[:-1]]
    assert all(np.array_equal(x, y) for x, y in zip(first, second))
    assert other.get_state().equals(end)


def test_restoring_several_states_in_turn_restores_each():
    # PyBullet caches files by name: with caching on, every restore from the one state
    # file would bring back the first state ever restored.
    env = sims.make("pybullet/reacher")
    env.reset(seed=0)
    states, observations = [], []
    for _ in range(3):
        for _ in range(5):
            obs, *_ = env.step(np.array([1.0, -1.0]))
        states.append(env.get_state())
        observations.append(obs["proprio"])
    for i in (0, 2, 1, 0):
        env.set_state(states[i])
        np.testing.assert_array_equal(env._observation()["proprio"], observations[i])


def test_reset_does_not_depend_on_the_previous_episode():
    fresh = sims.make("pybullet/panda-lift")
    fresh.reset(seed=3)
    used, _, _ = _grasping_panda()
    used.reset(seed=3)
    assert used.get_state().equals(fresh.get_state())
    action = np.array([0.5, -0.5, -0.5, 1.0])
    for _ in range(10):
        np.testing.assert_array_equal(fresh.step(action)[0]["proprio"], used.step(action)[0]["proprio"])


@pytest.mark.parametrize("name", ["pybullet/reacher", "pybullet/cartpole-balance"])
def test_twin_reset_is_byte_identical_after_an_episode_against_the_joint_limits(name):
    fresh = sims.make(name)
    fresh.reset(seed=2)
    used = sims.make(name)
    used.reset(seed=5)
    for _ in range(60):  # full push: the arm's elbow / the cart end up on their limits
        used.step(np.ones(used.embodiment.action_dim))
    used.reset(seed=2)
    assert used.get_state().equals(fresh.get_state())


def test_state_arrays_have_one_layout_per_sim():
    # Contacts lengthen PyBullet's serialized world; the state pads it to one fixed size.
    quiet = sims.make("pybullet/panda-lift")
    quiet.reset(seed=0)
    busy, _, _ = _grasping_panda()
    assert busy.get_state().layout() == quiet.get_state().layout()
    assert int(busy.get_state().arrays["bullet_bytes"]) > int(quiet.get_state().arrays["bullet_bytes"])


# ---------------------------------------------------------------------- parameters


def test_params_scale_the_nominal_dynamics_without_compounding():
    env = sims.make("pybullet/panda-lift")
    c, cup = env.client, env.cup
    mass, friction = c.getDynamicsInfo(cup, -1)[0], c.getDynamicsInfo(cup, -1)[1]
    changed = {"mass_scale": 1.3, "friction_scale": 0.5, "gravity": 7.0, "timestep": 0.003}
    env.set_params(changed)
    env.set_params(changed)  # twice: still relative to nominal
    info = c.getDynamicsInfo(cup, -1)
    assert info[0] == pytest.approx(1.3 * mass)
    assert info[1] == pytest.approx(0.5 * friction)
    engine = c.getPhysicsEngineParameters()
    assert engine["fixedTimeStep"] == pytest.approx(0.003)
    assert engine["gravityAccelerationZ"] == pytest.approx(-7.0)
    assert env.dt == pytest.approx(0.003 * env.frame_skip)
    env.set_params(env.nominal_params)
    assert c.getDynamicsInfo(cup, -1)[:2] == (mass, friction)


def test_actuator_gain_scales_the_motor_torque():
    speeds = []
    for gain in (1.0, 2.0):
        env = sims.make("pybullet/cartpole-balance", params={"actuator_gain": gain, "gravity": 0.0})
        env.reset(seed=0)
        env.set_joint_state(np.zeros(2), np.zeros(2))
        env.step(np.ones(1))
        speeds.append(env.joint_state()[1][0])
    assert speeds[0] > 0
    assert speeds[1] == pytest.approx(2.0 * speeds[0], rel=1e-9)


def test_low_fidelity_changes_the_pybullet_dynamics():
    env = sims.make("pybullet/cartpole-swingup", fidelity=0.2, run_seed=5)
    params = env.get_params()
    assert params != env.nominal_params
    assert env.client.getPhysicsEngineParameters()["fixedTimeStep"] == pytest.approx(params.timestep)
    assert env.client.getDynamicsInfo(env.body, 1)[0] == pytest.approx(0.1 * params.mass_scale)


# ---------------------------------------------------------------------- camera


@pytest.mark.parametrize("name", ["pybullet/cartpole-swingup", "pybullet/reacher"])
def test_camera_frames_have_the_requested_size_and_follow_the_robot(name):
    env = sims.make(name, camera=True, image_size=40)
    obs, _ = env.reset(seed=0)
    image = obs["image"]
    assert image.shape == (40, 40, 3) and image.dtype == np.uint8 and image.std() > 1.0
    env.set_joint_state(np.array([1.0, 0.5]), np.zeros(2))
    assert not np.array_equal(env._observation()["image"], image)


def test_the_panda_camera_changes_nothing_physical():
    # With the camera on the Panda is drawn with lighter meshes, without it with none.
    blind, seeing = sims.make("pybullet/panda-lift"), sims.make("pybullet/panda-lift", camera=True, image_size=32)
    obs_blind, _ = blind.reset(seed=3)
    obs_seeing, _ = seeing.reset(seed=3)
    demo = blind.demonstrator()
    for _ in range(40):
        action = demo(obs_blind)
        obs_blind, obs_seeing = blind.step(action)[0], seeing.step(action)[0]
        np.testing.assert_array_equal(obs_blind["proprio"], obs_seeing["proprio"])
    assert obs_seeing["image"].shape == (32, 32, 3) and obs_seeing["image"].std() > 1.0
    blind.set_state(seeing.get_state())
    assert blind.get_state().equals(seeing.get_state())


def test_render_returns_a_frame_in_rgb_array_mode():
    env = sims.make("pybullet/reacher", render_mode="rgb_array", image_size=32)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", PYBULLET_SIMS)
def test_bad_input_is_rejected_the_same_way_as_every_sim(name):
    env = sims.make(name)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(env.action_space.sample())
    env.reset(seed=0)
    dim = env.embodiment.action_dim
    with pytest.raises(ValueError, match=f"{name}.*NaN or inf"):
        env.step(np.full(dim, np.nan))
    with pytest.raises(ValueError, match=f"{name}.*shape"):
        env.step(np.zeros(dim + 1))
    with pytest.raises(ValueError, match="unknown physical parameter"):
        env.set_params({"stiffness": 2.0})
    with pytest.raises(ValueError, match="fidelity must be in"):
        sims.make(name, fidelity=1.5)
    with pytest.raises(ValueError, match="fidelity must be in"):
        sims.make(name, fidelity=math.nan)
    with pytest.raises(TypeError, match="SimState"):
        env.set_state({"bullet": np.zeros(3)})
    state = env.get_state()
    with pytest.raises(ValueError, match="saved from sim"):
        env.set_state(SimState("pybullet/other", state.step, state.arrays, state.rng))
    foreign = sims.make("pybullet/reacher" if name != "pybullet/reacher" else "pybullet/cartpole-swingup")
    foreign.reset(seed=0)
    alien = foreign.get_state()
    with pytest.raises(ValueError, match="do not fit"):
        env.set_state(SimState(name, alien.step, alien.arrays, alien.rng))
    env.step(np.zeros(dim))  # the env still works after all of that


def test_a_corrupt_state_is_refused_before_reaching_pybullet():
    env = sims.make("pybullet/reacher")
    env.reset(seed=0)
    state = env.get_state()
    arrays = dict(state.arrays)
    arrays["bullet_bytes"] = np.array(10**9, dtype=np.int64)
    with pytest.raises(ValueError, match="corrupt state"):
        env.set_state(SimState(state.sim, state.step, arrays, state.rng))
