"""Fitting the learned simulator: it beats constant velocity, its checkpoint round-trips exactly,
its error estimate tracks its error, and bad data or checkpoints are clear errors."""

import json

import numpy as np
import pytest

import world_model as wm

SIM = "dmc/point_mass-easy"


@pytest.fixture(scope="module")
def fitted():
    train = wm.collect(SIM, 2000, seed=0)
    held_out = wm.collect(SIM, 800, seed=1)
    simulator = wm.fit(train, wm.WorldModelNetConfig(ensemble=4, hidden=64), wm.WorldModelTrainConfig(steps=300, horizon=1))
    return simulator, held_out


def test_collected_transitions_are_consecutive_steps_and_reproducible():
    a, b = wm.collect(SIM, 300, seed=5), wm.collect(SIM, 300, seed=5)
    np.testing.assert_array_equal(a.proprio, b.proprio)
    inside = a.episode[1:] == a.episode[:-1]
    np.testing.assert_array_equal(a.proprio[1:][inside], a.next_proprio[:-1][inside])
    assert len(a) == 300 and a.sim == SIM


@pytest.mark.parametrize("k", [1, 10])
def test_a_learned_simulator_on_a_small_dataset_beats_constant_velocity(fitted, k):
    simulator, held_out = fitted
    errors = wm.k_step_errors(simulator, held_out, k, wm.spread(held_out.proprio))
    assert errors["windows"] > 300
    assert errors["learned"] < errors["constant_velocity"], errors


def test_the_error_estimate_tracks_the_true_error(fitted):
    """Calibration in its weakest useful form: bigger spread, bigger error (rank correlation)."""
    simulator, held_out = fitted
    starts = held_out.windows(10)[::5]
    actions = np.stack([held_out.action[starts + h] for h in range(10)], axis=1)
    truth = np.stack([held_out.next_proprio[starts + h] for h in range(10)], axis=1)
    mean, spread_, _ = simulator.rollout(held_out.proprio[starts], actions)
    error = np.abs(mean - truth).mean(axis=2).ravel()
    estimate = spread_.mean(axis=2).ravel()
    ranks = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    assert np.corrcoef(ranks(error), ranks(estimate))[0, 1] > 0.3


def test_checkpoints_round_trip_bit_for_bit_without_pickle(fitted, tmp_path):
    simulator, held_out = fitted
    wm.save_checkpoint(simulator, tmp_path / "wm")
    header = json.loads((tmp_path / "wm" / "config.json").read_text())
    assert header["reference"] == SIM and header["format"] == "physics-flywheel/world-model"
    assert (tmp_path / "wm" / "checkpoint.safetensors").read_bytes()[8:9] == b"{"  # safetensors header, not a pickle
    loaded = wm.load_checkpoint(tmp_path / "wm", reference=SIM)
    actions = held_out.action[:8][:, None].repeat(5, axis=1)
    for a, b in zip(simulator.rollout(held_out.proprio[:8], actions), loaded.rollout(held_out.proprio[:8], actions)):
        np.testing.assert_array_equal(a, b)


def test_bad_checkpoints_are_clear_errors(fitted, tmp_path):
    simulator, _ = fitted
    with pytest.raises(wm.CheckpointError, match="no world-model checkpoint"):
        wm.load_checkpoint(tmp_path / "missing")
    wm.save_checkpoint(simulator, tmp_path / "wm")
    with pytest.raises(wm.CheckpointError, match=f"fitted on sim '{SIM}', not on 'mujoco/reacher'"):
        wm.load_checkpoint(tmp_path / "wm", reference="mujoco/reacher")
    weights = tmp_path / "wm" / "checkpoint.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(wm.CheckpointError, match="does not match the hash"):
        wm.load_checkpoint(tmp_path / "wm")


def test_bad_data_is_rejected():
    good = wm.collect(SIM, 50, seed=0)
    with pytest.raises(ValueError, match="NaN"):
        wm.Transitions(SIM, np.full_like(good.proprio, np.nan), good.action, good.next_proprio, good.reward,
                       good.episode)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        wm.Transitions(SIM, good.proprio, good.action[:-1], good.next_proprio, good.reward, good.episode)
    other = wm.collect("mujoco/inverted-pendulum", 20, seed=0)
    with pytest.raises(ValueError, match="different sims"):
        wm.Transitions.concat([good, other])
    with pytest.raises(ValueError, match="ensemble needs at least 2"):
        wm.WorldModelNetConfig(ensemble=1)


def test_fine_tuning_starts_from_the_given_simulator_and_leaves_it_unchanged(fitted):
    simulator, held_out = fitted
    before = {k: v.clone() for k, v in simulator.net.state_dict().items()}
    tuned = wm.fit(held_out, config=wm.WorldModelTrainConfig(steps=20, horizon=1, seed=1), init=simulator)
    after = simulator.net.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # the given one is untouched
    # Its units (normalization) are the given simulator's, not held_out's: the members step in them.
    for name in ("proprio_mean", "proprio_std", "delta_std", "reward_mean"):
        np.testing.assert_array_equal(tuned.net.state_dict()[name], before[name])
    assert not np.array_equal(tuned.net.state_dict()["skip"], before["skip"])  # and it was trained
    scale = wm.spread(held_out.proprio)
    assert wm.k_step_errors(tuned, held_out, 1, scale)["learned"] <= wm.k_step_errors(simulator, held_out, 1, scale)["learned"]
    with pytest.raises(ValueError, match="cannot fine-tune the simulator of dmc/point_mass-easy"):
        wm.fit(wm.collect("dmc/reacher-easy", 50, seed=0), init=simulator)
