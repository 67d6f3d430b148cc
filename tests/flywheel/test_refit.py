"""The learned training sim learns from the flywheel (``flywheel.refit``): the rows of a learned
sim keep its engine's steps, a refit on them does not lower the world model's fidelity on the
probe set (a seeded toy case), and a tiny real run refits every cycle, records the fidelity and
resumes exactly."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import sims
import world_model as wm
from configs.errors import ConfigError
from configs.run_schema import LearnedSimConfig, RunConfig, TaskConfig
from configs.schema import SimConfig
from flywheel.cli import main
from flywheel.controller import run, training_fidelity, validate
from flywheel.learned_sim import fit
from flywheel.logger import read_cycles
from flywheel.refit import Refit, engine_transitions, version_dir
from flywheel.rollout import RolloutSpec, collect, reset_seed
from flywheel.rows import CHUNK, EPISODE, REALIZED, episode_index
from flywheel.store import RolloutStore
from policies.agent import Agent

REF = "mujoco/reacher-twin"


def recipe(root, **changes) -> LearnedSimConfig:
    """A deliberately poor world model: few transitions, few steps."""
    config = LearnedSimConfig(root=str(root), **changes)
    config.collect.steps, config.train.steps = 300, 60
    config.report.probes, config.report.horizon, config.report.correct_every = 1, 5, ["never"]
    return config


@pytest.fixture(scope="module")
def poor_world_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wm") / "reacher"
    fit(REF, path, recipe(path.parent))
    return path


def learned_rows(checkpoint: Path, correct_every: str, episodes=2, seed=0):
    sim = SimConfig(name=f"learned/{REF}", correct_every=correct_every, checkpoint=str(checkpoint),
                    max_episode_steps=40)
    envs = [sims.make(sim.name, **sim.make_kwargs()) for _ in range(2)]
    torch.manual_seed(0)
    rows = collect(Agent("tiny"), envs, RolloutSpec(episodes=episodes, seed=seed, planning=False, engine=True))
    return sim, rows, envs[0].embodiment


def test_a_learned_sims_rows_keep_its_engines_steps(poor_world_model):
    _, rows, embodiment = learned_rows(poor_world_model, "never")
    assert rows.engine
    transitions = engine_transitions(rows, REF, embodiment)
    assert len(transitions) == rows["steps"].sum() == 80
    # Replayed in the engine from each episode's seeded reset, the same actions give the very states.
    engine = sims.make(REF, max_episode_steps=40)
    for episode in np.unique(transitions.episode):
        mine = transitions.episode == episode
        obs, _ = engine.reset(seed=reset_seed(0, int(episode_index(episode))))
        replayed = [obs["proprio"]]
        for action in transitions.action[mine]:
            replayed.append(engine.step(action)[0]["proprio"])
        np.testing.assert_array_equal(transitions.proprio[mine], np.array(replayed[:-1], np.float64))
        np.testing.assert_array_equal(transitions.next_proprio[mine], np.array(replayed[1:], np.float64))
    # Never corrected, the learned sim showed something else: the engine's steps are new information.
    order = np.lexsort((rows[CHUNK], rows[EPISODE]))
    shown = np.concatenate([rows[REALIZED][i, :rows["steps"][i], :embodiment.proprio_dim] for i in order])
    assert np.abs(shown - transitions.next_proprio).max() > 1e-3


def test_a_refit_on_flywheel_rows_does_not_lower_fidelity_on_the_probe_set(poor_world_model, tmp_path):
    sim, rows, _ = learned_rows(poor_world_model, "8", episodes=4, seed=3)
    config = RunConfig(sim=sim, reference=SimConfig(name=REF), seed=0,
                       world_model=recipe(tmp_path, refit=True, refit_steps=60))
    before = training_fidelity(config)["fidelity"]
    refitted, record = Refit(config, tmp_path)(wm.load_checkpoint(poor_world_model), rows, 0)
    assert record["version"] == 1 and record["flywheel_transitions"] == rows["steps"].sum()
    # Written as the next version, read back (hash checked) as the very weights returned.
    path = version_dir(tmp_path, 1)
    assert record["checkpoint"] == "world_models/v0001"
    again = wm.load_checkpoint(path, reference=REF)
    assert all(torch.equal(a, b) for a, b in zip(again.net.state_dict().values(), refitted.net.state_dict().values()))
    assert json.loads((path / "config.json").read_text())["metadata"]["refit"]["cycle"] == 0
    assert 0 < before < 1 and record["fidelity"] >= before
    # Its measurement is the run's own, of the new checkpoint.
    assert record["fidelity"] == training_fidelity(dataclasses.replace(
        config, sim=dataclasses.replace(sim, checkpoint=str(path))))["fidelity"]


@pytest.mark.parametrize("world_model,sim,field", [
    (dict(refit=True), SimConfig(name=REF), r"world_model[.]refit=true .* is an engine"),
    (dict(refit_steps=0), SimConfig(name=f"learned/{REF}", correct_every="8"), r"world_model[.]refit_steps"),
])
def test_a_refit_asked_of_an_engine_names_the_field_before_ray_starts(tmp_path, world_model, sim, field):
    with pytest.raises(ConfigError, match=field):
        validate(RunConfig(sim=sim, reference=SimConfig(name=REF), world_model=recipe(tmp_path, **world_model)))


def test_a_refit_of_a_multi_task_run_names_the_field_before_ray_starts(tmp_path):
    tasks = [TaskConfig(SimConfig(name=f"learned/{REF}", correct_every="8"), SimConfig(name=REF)),
             TaskConfig(SimConfig(name="mujoco/cartpole-swingup-twin"))]
    with pytest.raises(ConfigError, match="world_model[.]refit=true.*multi-task"):
        validate(RunConfig(tasks=tasks, world_model=recipe(tmp_path, refit=True)))


@pytest.mark.xdist_group("ray-refit")
def test_a_tiny_run_refits_every_cycle_records_fidelity_and_resumes_exactly(poor_world_model, tmp_path, capsys):
    def config(run_dir, cycles):
        sim = SimConfig(name=f"learned/{REF}", correct_every="8", checkpoint=str(poor_world_model),
                        max_episode_steps=16)
        config = RunConfig(run_dir=str(run_dir), cycles=cycles, pretrained="scratch", num_rollout_workers=2,
                           envs_per_worker=2, episodes_per_cycle=4, n_candidates=2, sim=sim,
                           reference=SimConfig(name=REF, max_episode_steps=16),
                           world_model=recipe(tmp_path, refit=True, refit_steps=20))
        config.learner.steps, config.learner.batch_size, config.eval.episodes = 3, 8, 2
        return config

    straight = run(config(tmp_path / "straight", 2), console=lambda *a: None)
    records = read_cycles(straight)
    first = training_fidelity(config(tmp_path / "x", 1))["fidelity"]
    # Each cycle practised in the world model the cycle before it refitted, and says so.
    assert records[0]["fidelity"] == first
    assert records[1]["fidelity"] == records[0]["world_model"]["fidelity"]
    assert [r["world_model"]["checkpoint"] for r in records] == ["world_models/v0001", "world_models/v0002"]
    assert all(r["world_model"]["flywheel_transitions"] == r["env_steps"] for r in records)
    rows, _ = RolloutStore(straight / "store").read([1])
    assert rows.engine
    assert main(["status", str(straight)]) == 0  # its fidelity column: the world model each cycle practised in
    status = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[2] for line in status[-2:]] == [f"{r['fidelity']:.3f}" for r in records]
    # Stopped after one cycle and resumed: the same rollouts, the same refits, byte for byte.
    resumed = run(config(tmp_path / "resumed", 1), console=lambda *a: None)
    run(dataclasses.replace(config(tmp_path / "resumed", 2), resume=str(resumed)), console=lambda *a: None)
    again = read_cycles(resumed)
    assert [r["world_model"] for r in again] == [r["world_model"] for r in records]
    assert [r["fidelity"] for r in again] == [r["fidelity"] for r in records]
    for version in (1, 2):
        weights = [version_dir(d, version) / "checkpoint.safetensors" for d in (straight, resumed)]
        assert weights[0].read_bytes() == weights[1].read_bytes()
    store = lambda d: {c: RolloutStore(d / "store").manifest(c).to_json() for c in (0, 1)}  # noqa: E731
    assert store(straight) == store(resumed)
