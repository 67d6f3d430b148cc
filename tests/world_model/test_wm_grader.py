"""The grader's three questions: task, imagination, physics; and the one training weight."""

import math

import numpy as np
import pytest

import sims
import world_model as wm

SIM = "dmc/cartpole-swingup"
CHUNK = 8


@pytest.fixture(scope="module")
def chunk():
    """A realized chunk in the reference engine: start state, actions, proprio, rewards, success."""
    env = sims.make(SIM)
    probes = wm.probe_set(SIM, probes=1, horizon=CHUNK)
    env.set_state(probes.starts[0])
    start = env.get_state()
    steps = [env.step(a) for a in probes.actions[0]]
    realized = np.array([s[0]["proprio"] for s in steps], dtype=np.float64)
    return env, start, probes.actions[0], realized, np.array([s[1] for s in steps]), probes.scale


def _grade(chunk, imagined, physics=True, **config):
    env, start, actions, realized, rewards, scale = chunk
    gaps = wm.physics_gaps(env, start, imagined, actions, scale) if physics else None
    return wm.grade(imagined=imagined, realized=realized, rewards=rewards, success=False, scale=scale,
                    physics=gaps, config=wm.GradeConfig(**config))


def test_a_perfect_imagination_is_at_the_top_of_the_scale(chunk):
    g = _grade(chunk, chunk[3].copy())
    assert g.imagination == 1.0 and g.imagination_error == 0.0
    assert g.obeys_physics and g.physics > 0.999  # float32 proprio back to a state: rounding only


def test_random_noise_is_near_the_bottom(chunk):
    _, _, _, realized, _, scale = chunk
    noise = np.random.default_rng(0).normal(realized.mean(axis=0), scale, realized.shape)
    g = _grade(chunk, noise)
    assert g.imagination < 0.05
    assert not g.obeys_physics and g.physics < 0.05
    assert g.weight < _grade(chunk, realized.copy()).weight


def test_the_physics_question_flags_a_teleport(chunk):
    env, start, actions, realized, _, scale = chunk
    teleported = realized.copy()
    teleported[4:, 0] += 0.3  # the cart jumps 30 cm between two steps and carries on from there
    gaps = wm.physics_gaps(env, start, teleported, actions, scale)
    assert gaps.argmax() == 4 and gaps[4] > 0.1
    assert np.all(np.delete(gaps, 4) < 0.01)  # from the new place, the motion is lawful again
    g = _grade(chunk, teleported)
    assert g.obeys_physics is False and g.imagination < 1.0
    assert env.get_state().equals(env.get_state())  # the engine is usable and left as found


def test_where_proprio_does_not_determine_the_state_physics_is_not_applicable():
    env = sims.make("mujoco/half-cheetah")
    env.reset(seed=0)
    start = env.get_state()
    actions = np.zeros((4, 6))
    realized = np.array([env.step(a)[0]["proprio"] for a in actions], dtype=np.float64)
    scale = np.ones(realized.shape[1])
    assert wm.physics_gaps(env, start, realized, actions, scale) is None
    g = wm.grade(imagined=realized, realized=realized, rewards=np.zeros(4), success=None, scale=scale, physics=None)
    assert g.physics is None and g.physics_gap is None and g.obeys_physics is None and g.success is None
    assert g.weight == pytest.approx((g.progress + g.imagination) / 2)  # only the terms that apply


def test_the_weight_is_the_documented_weighted_mean(chunk):
    _, _, _, realized, rewards, scale = chunk
    config = wm.GradeConfig(success_weight=2.0, progress_weight=1.0, imagination_weight=3.0, physics_weight=0.5)
    g = wm.grade(imagined=realized + 0.1 * scale, realized=realized, rewards=rewards, success=True, scale=scale,
                 physics=np.full(CHUNK, 0.02), config=config)
    progress = 0.5 * (1 + math.tanh(rewards.mean()))
    imagination = math.exp(-0.1 / config.imagination_tolerance)
    physics = math.exp(-0.02 / config.physics_tolerance)
    expected = (2.0 * 1 + 1.0 * progress + 3.0 * imagination + 0.5 * physics) / 6.5
    assert g.weight == pytest.approx(expected)
    assert g.reward == pytest.approx(rewards.sum()) and g.success is True and g.obeys_physics is True


def test_batched_grades_equal_one_at_a_time(chunk):
    _, _, _, realized, rewards, scale = chunk
    imagined = np.stack([realized, realized + 0.05 * scale, realized - 0.2 * scale])
    batch = wm.grade_batch(imagined=imagined, realized=np.stack([realized] * 3), rewards=np.stack([rewards] * 3),
                           success=[True, False, None], scale=scale)
    for i, g in enumerate(batch):
        one = wm.grade(imagined=imagined[i], realized=realized, rewards=rewards, success=[True, False, None][i],
                       scale=scale)
        assert g == one


@pytest.mark.parametrize("bad, message", [
    ({"imagined": np.zeros((CHUNK - 1, 5))}, "differ in shape"),
    ({"imagined": np.zeros((CHUNK, 4))}, "differ in shape"),
    ({"imagined": np.full((CHUNK, 5), np.nan)}, "NaN"),
    ({"rewards": np.zeros(CHUNK - 1)}, "rewards"),
    ({"physics": np.zeros(3)}, "physics gaps must be"),
])
def test_bad_input_is_a_clear_error_never_a_grade(chunk, bad, message):
    _, _, _, realized, rewards, scale = chunk
    args = dict(imagined=realized, realized=realized, rewards=rewards, success=False, scale=scale, physics=None)
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        wm.grade(**args)


def test_physics_gaps_reject_a_start_state_of_another_sim(chunk):
    _, _, actions, realized, _, scale = chunk
    other = sims.make("dmc/point_mass-easy")
    other.reset(seed=0)
    with pytest.raises(ValueError, match="start state must be a state of"):
        wm.physics_gaps(chunk[0], other.get_state(), realized, actions, scale)


def test_the_chunk_grader_asks_the_reference_engine_for_every_kind_of_training_sim(chunk, tmp_path):
    """The rollout callback: perturbed and learned training sims are graded against reference physics."""
    _, _, actions, _, _, _ = chunk
    simulator = wm.fit(wm.collect(SIM, 200, seed=0), wm.WorldModelNetConfig(ensemble=2, hidden=8), wm.WorldModelTrainConfig(steps=2))
    grader = wm.ChunkGrader(probes=2, horizon=CHUNK)
    for env in (sims.make(SIM, fidelity=0.5), sims.make(f"learned/{SIM}", checkpoint=simulator, correct_every=4)):
        env.reset(seed=2)
        start = env.get_state()
        steps = [env.step(a) for a in actions]
        realized = np.array([s[0]["proprio"] for s in steps], dtype=np.float64)
        g = grader(env, start, realized, realized, actions, np.array([s[1] for s in steps]), False)
        assert isinstance(g, wm.Grade) and g.physics is not None and g.imagination == 1.0
        assert all(np.isfinite(v) for v in g.as_dict().values() if v is not None)
        assert 0.0 <= g.weight <= 1.0
    none = grader(env, start, None, realized, actions, np.zeros(CHUNK), None)
    assert none.imagination is None and none.physics is None
    grader.close()
