"""Cross-engine twins: one description, the same robot and task in MuJoCo and PyBullet."""

import mujoco
import numpy as np
import pytest

import sims
from sims.twins.descriptions import CartpoleDescription, ReacherDescription, to_mjcf
from sims.twins.drift import AGREEMENT, TWIN_PAIRS, format_drift, main, twin_drift

PAIRS = sorted(TWIN_PAIRS)
# Same start, same actions: while no joint limit is reached both engines integrate the same
# articulated-body dynamics with semi-implicit Euler, so they agree to rounding (~1e-15).
# The stated tolerance, in proprio error per dimension normalized by that dimension's spread.
EARLY_STEPS = 25
EARLY_TOLERANCE = AGREEMENT  # 1e-6


@pytest.mark.parametrize("description", [CartpoleDescription(), ReacherDescription()])
def test_both_builds_carry_the_described_masses_and_inertias(description):
    chain = description.chain()
    model = mujoco.MjModel.from_xml_string(to_mjcf(chain))
    for link in chain.links:
        body = model.body(link.name)
        assert body.mass[0] == pytest.approx(link.mass)
        np.testing.assert_allclose(body.inertia, link.inertia)
        np.testing.assert_allclose(body.ipos, link.com)
    twin = sims.make(f"pybullet/{'reacher' if chain.name == 'reacher' else 'cartpole-swingup'}")
    for j, link in enumerate(chain.links):
        info = twin.client.getDynamicsInfo(twin.body, j)
        assert info[0] == pytest.approx(link.mass)
        np.testing.assert_allclose(info[2], link.inertia)
        np.testing.assert_allclose(info[3], link.com)
        joint = twin.client.getJointInfo(twin.body, j)
        assert joint[6] == pytest.approx(link.damping)  # joint damping
        if link.joint_range:
            assert joint[8:10] == pytest.approx(link.joint_range)


@pytest.mark.parametrize("pair", PAIRS)
def test_twins_share_layout_text_success_and_demonstrator(pair):
    ref, twin = (sims.make(n) for n in TWIN_PAIRS[pair])
    assert ref.embodiment == twin.embodiment
    assert ref.task_text == twin.task_text
    assert ref.observation_space == twin.observation_space
    assert type(ref.demonstrator()) is type(twin.demonstrator())
    for seed in range(3):
        a, info_a = ref.reset(seed=seed)
        b, info_b = twin.reset(seed=seed)
        np.testing.assert_array_equal(a["proprio"], b["proprio"])
        assert info_a == info_b


@pytest.mark.parametrize("pair", ["cartpole-balance", "reacher"])
def test_one_demonstrator_succeeds_in_both_engines(pair):
    for name in TWIN_PAIRS[pair]:
        env = sims.make(name)
        wins = 0
        for seed in range(3):
            obs, info = env.reset(seed=seed)
            demo = env.demonstrator()
            while not info["success"]:
                obs, _, terminated, truncated, info = env.step(demo(obs))
                if terminated or truncated:
                    break
            wins += info["success"]
        assert wins == 3, name


@pytest.mark.parametrize("pair", PAIRS)
def test_set_joint_state_is_exact_in_both_engines(pair):
    qpos, qvel = np.array([0.3, -1.1]), np.array([0.7, -2.5])
    for name in TWIN_PAIRS[pair]:
        env = sims.make(name)
        env.reset(seed=0)
        env.set_joint_state(qpos, qvel)
        got = env.joint_state()
        np.testing.assert_array_equal(got[0], qpos)
        np.testing.assert_array_equal(got[1], qvel)


@pytest.mark.parametrize("pair", PAIRS)
def test_twin_trajectories_agree_early_and_report_the_later_drift(pair):
    drift = twin_drift(pair, probes=4, horizon=150, seed=0, measure_speed=False)
    early = drift.error[: EARLY_STEPS + 1]
    assert np.all(np.isfinite(drift.error))
    assert early.max() < EARLY_TOLERANCE, (
        f"{pair}: the twins disagree by {early.max():.2e} (normalized) within {EARLY_STEPS} steps"
    )
    beyond = drift.first_step_beyond(EARLY_TOLERANCE)
    assert beyond is None or beyond > EARLY_STEPS
    print(f"\n{pair}: agree to {early.max():.1e} over {EARLY_STEPS} steps; mean drift at t=50 "
          f"{drift.mean_error()[50]:.1e}, t=100 {drift.mean_error()[100]:.1e}, t=150 {drift.mean_error()[150]:.1e}; "
          f"first beyond {EARLY_TOLERANCE:g} at step {beyond}")


@pytest.mark.parametrize("pair", PAIRS)
def test_the_fidelity_knob_perturbs_both_engines_alike(pair):
    # Same run seed, same fidelity: the same masses, gravity, gear and timestep in both
    # engines, so the perturbed twins still agree (observation noise included: both draw
    # it from the same seeded generator).
    ref, twin = (sims.make(n, fidelity=0.3, run_seed=4) for n in TWIN_PAIRS[pair])
    assert ref.get_params() == twin.get_params() != ref.nominal_params
    ref.reset(seed=1)
    twin.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(EARLY_STEPS):
        action = rng.uniform(-1.0, 1.0, ref.embodiment.action_dim)
        a, b = ref.step(action)[0]["proprio"], twin.step(action)[0]["proprio"]
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)  # float32 observations
        np.testing.assert_allclose(ref._proprio(), twin._proprio(), rtol=0, atol=1e-12)


def test_drift_grows_once_a_joint_limit_is_hit():
    # Joint limits are where the engines really differ (soft in MuJoCo, hard in PyBullet):
    # drive the reacher's elbow into its limit and the twins must part.
    ref, twin = sims.make("mujoco/reacher-twin"), sims.make("pybullet/reacher")
    for env in (ref, twin):
        env.reset(seed=0)
        env.set_joint_state(np.array([0.0, 2.6]), np.zeros(2))
    for _ in range(20):
        ref.step(np.array([0.0, 1.0]))
        twin.step(np.array([0.0, 1.0]))
    gap = np.abs(ref.joint_state()[0] - twin.joint_state()[0]).max()
    assert gap > 1e-6


def test_drift_report_and_command_line(capsys):
    result = twin_drift("reacher", probes=1, horizon=12, speed_steps=50)
    assert result.error.shape == (13, 8)
    assert set(result.steps_per_second) == set(TWIN_PAIRS["reacher"])
    assert all(v > 0 for v in result.steps_per_second.values())
    table = format_drift([result])
    assert "reacher" in table and "t=10" in table
    main(["--pairs", "cartpole-balance", "--probes", "1", "--horizon", "3"])
    assert "cartpole-balance" in capsys.readouterr().out
    assert set(result.as_dict()) >= {"pair", "mean_error", "steps_per_second"}


def test_drift_rejects_bad_requests():
    with pytest.raises(ValueError, match="unknown twin pair"):
        twin_drift("hopper")
    with pytest.raises(ValueError, match="must be >= 1"):
        twin_drift("reacher", probes=0)


@pytest.mark.parametrize(("name", "fidelity", "run_seed"),
                         [("pybullet/cartpole-swingup", 0.0, 2), ("mujoco/reacher-twin", 0.5, 1)])
def test_demonstrators_also_solve_low_fidelity_training_sims(name, fidelity, run_seed):
    # The flywheel practises in perturbed sims; demonstrators tuned to nominal physics alone
    # failed these (the swing-up's model missed the lighter pole, the reacher's PD chattered
    # once the arm was lighter).
    from sims.conformance import demo_success_rate

    assert demo_success_rate(sims.make(name, fidelity=fidelity, run_seed=run_seed), 4) == 1.0
