"""``learned/<sim>``: a registered sim like any other, corrected by its engine every ``correct_every`` steps."""

import importlib.metadata
from dataclasses import dataclass

import numpy as np
import pytest

import sims
import world_model as wm
from sims.conformance import CheckContext, rollout, run_one
from sims.rendering import mujoco_rendering_problem

SIM = "dmc/cartpole-swingup"
LEARNED = f"learned/{SIM}"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    data = wm.collect(SIM, 1500, seed=0)
    simulator = wm.fit(data, wm.WorldModelNetConfig(ensemble=3, hidden=32), wm.WorldModelTrainConfig(steps=150, horizon=1))
    return str(wm.save_checkpoint(simulator, tmp_path_factory.mktemp("wm") / "cartpole"))


def _episode(env, actions, seed=3):
    obs, info = env.reset(seed=seed)
    steps = [(obs, 0.0, False, False, info)] + list(rollout(env, actions))
    return ([s[0]["proprio"] for s in steps], [s[1] for s in steps], [s[4].get("success") for s in steps],
            [(s[2], s[3]) for s in steps])


def test_correct_every_1_is_the_engine_bit_for_bit(checkpoint):
    actions = wm.probe_set(SIM, probes=1, horizon=120).actions[0]
    engine = _episode(sims.make(SIM), actions)
    learned = _episode(sims.make(LEARNED, checkpoint=checkpoint, correct_every=1), actions)
    for ours, theirs in zip(learned, engine):
        assert len(ours) == len(theirs)
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))  # observations, rewards, success, ends
    assert wm.fidelity(LEARNED, SIM, probes=2, horizon=30, checkpoint=checkpoint, correct_every=1).fidelity == 1.0


def test_between_anchors_the_state_is_learned_and_at_anchors_it_is_the_engine(checkpoint):
    env = sims.make(LEARNED, checkpoint=checkpoint, correct_every=4)
    engine = sims.make(SIM)
    env.reset(seed=1)
    engine.reset(seed=1)
    actions = wm.probe_set(SIM, probes=1, horizon=12).actions[0]
    for t, action in enumerate(actions, start=1):
        obs, _, _, _, info = env.step(action)
        truth = engine.step(action)[0]["proprio"]
        assert info["anchored"] == (t % 4 == 0)
        if t % 4 == 0:
            np.testing.assert_array_equal(obs["proprio"], truth)
            assert not any(info["error_estimate"])
        else:
            assert not np.array_equal(obs["proprio"], truth)
            assert len(info["error_estimate"]) == 5 and min(info["error_estimate"]) >= 0 < max(info["error_estimate"])
    # Every step's engine transition and the learned prediction beside it are kept for the next fit.
    assert len(env.corrections) == 12 and env.corrections.anchored().sum() == 3
    assert env.corrections.residuals().shape == (12, 5)
    more = env.corrections.transitions()
    assert more.sim == SIM and len(more) == 12
    wm.fit([wm.collect(SIM, 100, seed=9), more], wm.WorldModelNetConfig(ensemble=2, hidden=8), wm.WorldModelTrainConfig(steps=2))


def test_purely_learned_is_less_faithful_than_corrected(checkpoint):
    probes = wm.probe_set(SIM, probes=3, horizon=40)
    values = {k: wm.fidelity(LEARNED, probes, checkpoint=checkpoint, correct_every=k).fidelity for k in (4, "never")}
    assert 0.0 < values["never"] < values[4] < 1.0


def test_batched_stepping_matches_one_env_at_a_time(checkpoint):
    simulator = wm.load_checkpoint(checkpoint)
    probes = wm.probe_set(SIM, probes=4, horizon=10)
    starts = probes.reference[:, 0]
    batch = wm.LearnedBatch(simulator, starts)
    together = [batch.step(probes.actions[:, t])[0] for t in range(1, 10)]
    for i in range(4):
        one = wm.LearnedBatch(simulator, starts[i : i + 1])
        alone = [one.step(probes.actions[i : i + 1, t])[0][0] for t in range(1, 10)]
        np.testing.assert_allclose(np.array(alone), np.array(together)[:, i], rtol=1e-6, atol=1e-7)


def test_state_save_and_restore_replays_exactly(checkpoint):
    env = sims.make(LEARNED, checkpoint=checkpoint, correct_every=3)
    env.reset(seed=0)
    actions = wm.probe_set(SIM, probes=1, horizon=20).actions[0]
    list(rollout(env, actions[:5]))
    saved = env.get_state()
    first = [(s[0]["proprio"], s[1]) for s in rollout(env, actions[5:])]
    env.reset(seed=7)
    env.set_state(saved)
    second = [(s[0]["proprio"], s[1]) for s in rollout(env, actions[5:])]
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, second))


@dataclass(frozen=True)
class _LearnedContext(CheckContext):
    checkpoint: str = ""

    def make(self, **config):
        return sims.make(self.name, checkpoint=self.checkpoint, correct_every=4, **config)


@pytest.mark.parametrize("check", ["finite", "gymnasium", "seeding", "state_replay", "params", "fidelity", "actions",
                                   "success_flag"])
def test_the_learned_sim_passes_the_sims_conformance_checks(checkpoint, check):
    result = run_one(_LearnedContext(LEARNED, checkpoint=checkpoint), check)
    assert result.status == "pass", result.detail


def test_bad_checkpoints_and_settings_are_clear_errors(checkpoint, tmp_path):
    with pytest.raises(wm.CheckpointError, match="no world-model checkpoint"):
        sims.make(LEARNED, checkpoint=str(tmp_path / "none"))
    with pytest.raises(wm.CheckpointError, match=f"fitted on sim '{SIM}', not on 'dmc/point_mass-easy'"):
        sims.make("learned/dmc/point_mass-easy", checkpoint=checkpoint)
    with pytest.raises(ValueError, match="correct_every must be a positive int or 'never'"):
        sims.make(LEARNED, checkpoint=checkpoint, correct_every=0)
    with pytest.raises(ValueError, match="needs checkpoint="):
        sims.make(LEARNED)


@pytest.mark.skipif(bool(mujoco_rendering_problem()), reason="no headless MuJoCo rendering here")
def test_frames_are_the_engine_drawn_at_the_learned_state_where_proprio_allows(checkpoint, tmp_path):
    env = sims.make(LEARNED, checkpoint=checkpoint, correct_every="never", camera=True, image_size=32)
    try:
        obs, _ = env.reset(seed=0)
        obs = env.step(np.zeros(1))[0]
        assert obs["image"].shape == (32, 32, 3) and obs["image"].std() > 1.0
    finally:
        env.close()
    cheetah = wm.fit(wm.collect("mujoco/half-cheetah", 40), wm.WorldModelNetConfig(ensemble=2, hidden=8), wm.WorldModelTrainConfig(steps=1))
    with pytest.raises(ValueError, match="models proprio only"):
        sims.make("learned/mujoco/half-cheetah", checkpoint=cheetah, camera=True)


def test_the_learned_family_resolves_through_its_entry_point(checkpoint, isolated_registry):
    """What a fresh process sees before importing world_model: only the installed entry point."""
    declared = [ep for ep in importlib.metadata.entry_points(group=sims.ENTRY_POINT_GROUP) if ep.name == "learned/*"]
    assert [ep.value for ep in declared] == ["world_model.learned_env:make_learned_env"]
    isolated_registry.families = [f for f in isolated_registry.families if f.name != wm.PREFIX]
    isolated_registry.entries = {k: v for k, v in isolated_registry.entries.items() if v.entry_point is None}
    isolated_registry.loaded = False
    assert "entry point 'learned/* = world_model.learned_env:make_learned_env'" in sims.origin_of(LEARNED)
    env = sims.make(LEARNED, checkpoint=checkpoint, correct_every=8)
    assert type(env).__name__ == "LearnedSimEnv" and env.name == LEARNED
    assert env.reset(seed=0)[0]["proprio"].shape == (5,)
