"""A cycle's quarantine, end to end on an embedded Ray: episodes with a NaN or inf are dropped
and counted, and only a phase with nothing left fails, naming the sim (or the checkpoint)."""

import os

import pytest
import torch

from configs.run_schema import RunConfig
from configs.schema import SimConfig
from flywheel.cli import main
from flywheel.controller import run
from flywheel.cycle import EveryEpisodeQuarantined
from flywheel.logger import read_cycles
from flywheel.store import RolloutStore
from policies import checkpoint
from policies.config import model_config
from policies.model import Model

pytestmark = pytest.mark.xdist_group("ray-cycle")

TINY = ["pretrained=scratch", "num_rollout_workers=2", "envs_per_worker=2", "episodes_per_cycle=4",
        "learner.steps=3", "learner.batch_size=8", "eval.episodes=2", "ray.num_cpus=2", "n_candidates=2"]


def tiny_config(run_dir, sim: str, **changes) -> RunConfig:
    """``test_run.tiny_config``'s run on ``sim``, scored in ``sim`` itself."""
    sim = SimConfig(name=sim, max_episode_steps=16)
    config = RunConfig(**{**dict(run_dir=str(run_dir), cycles=1, pretrained="scratch", num_rollout_workers=2,
                                 envs_per_worker=2, episodes_per_cycle=4, n_candidates=2, sim=sim, reference=sim),
                          **changes})
    config.learner.steps, config.learner.batch_size, config.eval.episodes = 3, 8, 2
    return config


# First in the file: it runs on whatever Ray the suite has, before the NaN tests' own restart it.
def test_weights_with_nan_fail_at_the_first_evaluation_naming_the_checkpoint(tmp_path):
    model = Model(model_config("tiny"))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    weights = tmp_path / "nan-weights"
    checkpoint.save(model, weights)
    with pytest.raises(EveryEpisodeQuarantined) as caught:
        run(tiny_config(tmp_path / "run", "mujoco/reacher-twin", pretrained=str(weights)), console=lambda *a: None)
    message = str(caught.value)
    assert message.startswith("evaluation: every one of its 2 episodes in mujoco/reacher-twin was quarantined")
    # Planning imagines before it acts: the imagined future is the first NaN the rollout meets.
    assert "imagined proprio (the model's) contains NaN" in message
    assert f"the model produced it: the weights come from {weights}, which hold NaN" in message


@pytest.fixture
def ray_sees_nan_sims(nan_sims, example_plugin_src, monkeypatch):
    """The ``test/nan-*`` plug-in in the rollout actors too: a fresh Ray whose workers' path has it."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    paths = [str(nan_sims), str(example_plugin_src), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    yield
    ray.shutdown()  # the next test's Ray must not keep this one's path


def test_episodes_that_turn_nan_are_quarantined_counted_and_never_trained_on(tmp_path, ray_sees_nan_sims):
    # Seed 0: worker 0 resets its episodes with seeds 0 and 1, worker 1 with 100003 and 100004;
    # test/nan-3-odd turns the odd ones NaN from step 3. Evaluation's seeds stay finite.
    run_dir = run(tiny_config(tmp_path / "run", "test/nan-3-odd"), console=lambda *a: None)
    (record,) = read_cycles(run_dir)
    rollout = record["rollout"]
    assert rollout["episodes"] == 2 and rollout["quarantined_episodes"] == 2
    assert rollout["quarantined_by_sim"] == {"test/nan-3-odd": 2}
    manifest = RolloutStore(run_dir / "store").manifest(0)
    assert [(d.sim, d.field, d.step) for d in manifest.dropped] == [("test/nan-3-odd", "proprio", 3)] * 2
    assert "test/nan-3-odd: proprio contains NaN at step 3" in manifest.dropped[0].error
    rows, _ = RolloutStore(run_dir / "store").read([0])
    assert not set(rows["episode"]) & {d.episode for d in manifest.dropped}  # never trained on
    assert record["eval"]["quarantined_episodes"] == 0 and record["env_steps"] == 2 * 16


def test_a_cycle_whose_every_episode_turns_nan_fails_naming_the_sim(tmp_path, ray_sees_nan_sims, capsys):
    run_dir = tmp_path / "run"
    overrides = [f"run_dir={run_dir}", "cycles=1", *TINY, "sim.name=test/nan-3-all", "sim.max_episode_steps=16",
                 "reference.name=test/nan-3-all", "reference.max_episode_steps=16"]
    assert main(["run", *overrides]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("flywheel: error: cycle 0: every one of its 4 episodes in test/nan-3-all was quarantined")
    assert "proprio contains NaN at step 3" in line and "flywheel sims check test/nan-3-all" in line
    assert RolloutStore(run_dir / "store").manifest(0) is None  # not committed: a resume collects it again
