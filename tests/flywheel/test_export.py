"""``flywheel export``: a run's store, collected by the real rollout loop, loaded back with Minari's own loader."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import sims
import world_model as wm
from configs.run_schema import RunConfig
from configs.schema import SimConfig
from flywheel.cli import main
from flywheel.export import FRAME_INDEX, RUN_EPISODE, dataset_id, export_minari
from flywheel.rollout import RolloutSpec, collect, reset_seed
from flywheel.rows import SIM as SIM_COLUMN
from flywheel.rows import (ACTIONS, CHUNK, CYCLE, EPISODE, PROPRIO, REALIZED, REWARDS, STEPS, TASK, TERMINATED,
                           WEIGHT, WORKER, ChunkRows, episode_index)
from flywheel.store import RolloutStore
from policies.agent import Agent

minari = pytest.importorskip("minari")

SIM = "mujoco/reacher-twin"
STEPS_PER_EPISODE = 12  # a chunk of 8, then one the time limit cuts to 4


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Two cycles of two workers' planned, graded rollouts; one episode of cycle 1 quarantined."""
    run_dir = tmp_path_factory.mktemp("run")
    sim = SimConfig(name=SIM, max_episode_steps=STEPS_PER_EPISODE)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(RunConfig(run_dir=str(run_dir), sim=sim,
                                                                                 reference=sim))))
    store, agent, grader = RolloutStore(run_dir / "store"), Agent("tiny").eval(), wm.ChunkGrader(probes=2, horizon=10)
    torch.manual_seed(0)
    for cycle in range(2):
        shards, quarantined = [], []
        for worker in range(2):
            envs = [sims.make(SIM, max_episode_steps=STEPS_PER_EPISODE) for _ in range(2)]
            rows = collect(agent, envs, RolloutSpec(episodes=2, cycle=cycle, worker=worker, seed=10 * cycle + worker,
                                                    n_candidates=2), grader)
            if (cycle, worker) == (1, 0):  # a NaN the store quarantines, episode and all
                rows = {k: v.copy() for k, v in rows.items()}
                rows[REALIZED][0, 0, 0] = np.nan
            shard, bad = store.write_shard(cycle, worker, rows)
            shards.append(shard)
            quarantined.append(bad)
        store.commit_cycle(cycle, shards, quarantined)
    return run_dir


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "minari"
    return export_minari(run_dir, out), out


@pytest.fixture
def dataset(exported, monkeypatch):
    report, out = exported
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(out))
    return minari.load_dataset(dataset_id(SIM))


def store_rows(run_dir) -> ChunkRows:
    store = RolloutStore(run_dir / "store")
    return store.read(store.committed_cycles())[0]


def test_minari_loads_every_clean_episode_and_step(run_dir, exported, dataset):
    report, _ = exported
    rows = store_rows(run_dir)
    episodes = np.unique(rows[EPISODE])
    assert report.quarantined_episodes == 1 and len(episodes) == 7
    assert report.datasets == {dataset_id(SIM): 7}
    assert dataset.total_episodes == 7 and dataset.total_steps == report.steps == rows[STEPS].sum() == 7 * 12
    exported_ids = [int(e.infos[EPISODE][0]) for e in dataset.iterate_episodes()]
    assert exported_ids == sorted(exported_ids) and set(exported_ids) == set(episodes.tolist())


def test_an_episode_is_its_executed_steps_in_env_units(run_dir, dataset):
    rows = store_rows(run_dir)
    episode = dataset[3]
    chunks = rows.take(rows[EPISODE] == episode.infos[EPISODE][0])
    chunks = chunks.take(np.argsort(chunks[CHUNK]))
    emb = sims.make(SIM).embodiment
    p, a = emb.proprio_dim, emb.action_dim
    assert chunks[STEPS].tolist() == [8, 4]
    assert episode.observations.shape == (13, p) and episode.actions.shape == (12, a)
    # The first observation is the episode's reset, made again from its seed.
    run_episode = int(episode.infos[EPISODE][0])
    reset, _ = sims.make(SIM, max_episode_steps=STEPS_PER_EPISODE).reset(
        seed=reset_seed(10 * int(chunks[CYCLE][0]) + int(chunks[WORKER][0]), int(episode_index(run_episode))))
    assert np.array_equal(episode.observations[0], reset["proprio"])
    assert np.array_equal(episode.observations[0], chunks[PROPRIO][0, -1, :p])
    assert np.array_equal(episode.observations[1:9], chunks[REALIZED][0, :, :p])
    assert np.array_equal(episode.observations[9:], chunks[REALIZED][1, :4, :p])
    # The second chunk started where the first left off: the steps are the executed ones, no padding.
    assert np.array_equal(episode.observations[8], chunks[PROPRIO][1, -1, :p])
    assert np.allclose(episode.actions[8:], emb.to_env_action(chunks[ACTIONS][1, :4, :a]))
    assert np.all(episode.actions >= np.array(emb.action_low)) and np.all(episode.actions <= np.array(emb.action_high))
    assert np.array_equal(episode.rewards, np.concatenate([chunks[REWARDS][0], chunks[REWARDS][1, :4]]))
    assert not chunks[TERMINATED].any()  # reacher's time limit ends it: a truncation at the last step only
    assert episode.truncations.tolist() == [False] * 11 + [True] and not episode.terminations.any()
    # Infos: entry 0 is the reset's, entry t+1 step t's; grades repeat over their chunk's steps.
    assert episode.infos[FRAME_INDEX].tolist() == list(range(13))
    assert episode.infos[CHUNK].tolist() == [-1] + [0] * 8 + [1] * 4
    assert np.array_equal(episode.infos[WEIGHT], np.repeat(np.concatenate([[0.0], chunks[WEIGHT]]), [1, 8, 4]))
    metadata = next(iter(dataset.storage.get_episode_metadata([dataset.episode_indices[3]])))
    assert metadata[SIM_COLUMN] == SIM and metadata[TASK] == chunks[TASK][0]
    assert metadata[RUN_EPISODE] == run_episode and metadata[CYCLE] == chunks[CYCLE][0]
    assert dataset.action_space.shape == (a,) and dataset.observation_space.shape == (p,)


def test_an_existing_output_is_refused_unless_forced(run_dir, exported, capsys):
    _, out = exported
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main(["export", str(run_dir), "--format", "minari", "--out", str(out)]) == 2
    assert f"{out}: already exists (--force replaces it)" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--format", "minari", "--out", str(out), "--force"]) == 0
    printed = capsys.readouterr().out
    assert f"{dataset_id(SIM)}: 7 episodes" in printed and "1 quarantined episode(s)" in printed
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".minari.")]  # no staging left behind


def test_a_directory_that_is_not_a_run_is_named(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "minari"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"flywheel: error: {tmp_path}: not a flywheel run directory (no config.json)"
    assert not (tmp_path / "export").exists()


def test_a_run_with_no_committed_cycle_is_refused_and_writes_nothing(run_dir, tmp_path, capsys):
    empty = tmp_path / "empty-run"
    (empty / "store").mkdir(parents=True)
    (empty / "config.json").write_text((run_dir / "config.json").read_text())
    assert main(["export", str(empty), "--format", "minari"]) == 2
    assert f"{empty}: no rollouts to export" in capsys.readouterr().err
    assert not (empty / "export").exists() or not any((empty / "export").iterdir())


def test_a_camera_runs_frames_are_exported_beside_the_proprio(tmp_path, monkeypatch):
    """A camera run's dataset: a dict observation, its frames the first chunk's start frame, then
    the frame after each executed step, aligned with the proprio."""
    from flywheel.export import OBS_FRAMES, OBS_PROPRIO
    from flywheel.rollout import env_kwargs
    from flywheel.rows import FRAME, REALIZED_FRAMES

    sim = SimConfig(name=SIM, max_episode_steps=STEPS_PER_EPISODE)
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.asdict(RunConfig(run_dir=str(tmp_path), sim=sim,
                                                                                  reference=sim, camera=True))))
    torch.manual_seed(0)
    agent, store = Agent("tiny").eval(), RolloutStore(tmp_path / "store")
    envs = [sims.make(SIM, **env_kwargs(sim, True, agent.cfg.image_size)) for _ in range(2)]
    rows = collect(agent, envs, RolloutSpec(episodes=2, seed=3, n_candidates=2, camera=True),
                   wm.ChunkGrader(probes=2, horizon=10))
    shard, bad = store.write_shard(0, 0, rows)
    store.commit_cycle(0, [shard], [bad])
    export_minari(tmp_path, tmp_path / "minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    dataset = minari.load_dataset(dataset_id(SIM))

    size, p = agent.cfg.image_size, sims.make(SIM).embodiment.proprio_dim
    assert dataset.observation_space[OBS_FRAMES].shape == (size, size, 3)
    assert dataset.observation_space[OBS_PROPRIO].shape == (p,)
    rows = store_rows(tmp_path)
    for episode in dataset.iterate_episodes():
        chunks = rows.take(rows[EPISODE] == episode.infos[EPISODE][0])
        chunks = chunks.take(np.argsort(chunks[CHUNK]))
        frames = episode.observations[OBS_FRAMES]
        assert frames.shape == (13, size, size, 3) and frames.dtype == np.uint8
        assert np.array_equal(frames[0], chunks[FRAME][0])
        assert np.array_equal(frames[1:9], chunks[REALIZED_FRAMES][0])
        assert np.array_equal(frames[9:], chunks[REALIZED_FRAMES][1, :4])
        assert np.array_equal(frames[8], chunks[FRAME][1])  # the second chunk started from the first's last frame
        assert np.array_equal(episode.observations[OBS_PROPRIO][1:9], chunks[REALIZED][0, :, :p])
