"""Where a run goes, checked before Ray starts: a new run never writes into a directory that
holds one, ``resume=`` continues only the run's own configuration, the directory actors get is
absolute, and a run on another task is scored against that task."""

import dataclasses
import errno
import json
import os

import pytest

import flywheel.controller as controller
from configs.errors import ConfigError
from configs.run_schema import RayConfig, RunConfig
from configs.schema import SimConfig
from flywheel.cli import main
from flywheel.controller import check_same_run, json_config, run, run_directory, validate, with_own_reference



def tiny_config(run_dir, **changes) -> RunConfig:
    """``test_run.tiny_config``'s run, with ``run_dir`` None for the default directory."""
    sim = SimConfig(name="mujoco/reacher-twin", max_episode_steps=16)
    base = dict(run_dir=None if run_dir is None else str(run_dir), cycles=1, pretrained="scratch",
                num_rollout_workers=2, envs_per_worker=2, episodes_per_cycle=4, n_candidates=2, sim=sim,
                reference=sim, ray=RayConfig(num_cpus=2))
    config = RunConfig(**{**base, **changes})
    config.learner.steps, config.learner.batch_size, config.eval.episodes = 3, 8, 2
    return config


def existing_run(run_dir, config):
    """A directory holding a run: the first thing a run writes is its config.json."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(json_config(config)))
    return (run_dir / "config.json").read_bytes()


@pytest.fixture
def no_ray(monkeypatch):
    monkeypatch.setattr(controller, "start_ray", lambda config, *_: pytest.fail("Ray started"))


def test_a_new_run_into_a_named_directory_holding_a_run_fails_naming_it(tmp_path, no_ray, monkeypatch):
    saved = existing_run(tmp_path / "run", tiny_config(tmp_path / "run"))
    with pytest.raises(ConfigError, match=rf"run_dir={tmp_path / 'run'}: .* already holds a run; pass resume="):
        run(tiny_config(tmp_path / "run", seed=7), console=lambda *a: None)
    assert (tmp_path / "run" / "config.json").read_bytes() == saved  # not rewritten with seed=7
    monkeypatch.chdir(tmp_path)
    existing_run(tmp_path / "runs" / "flywheel" / "mine", RunConfig(name="mine"))
    with pytest.raises(ConfigError, match=r"name=mine: .*runs/flywheel/mine already holds a run"):
        run_directory(RunConfig(name="mine"))


def test_the_default_directory_is_followed_by_fresh_timestamped_ones(tmp_path, monkeypatch):
    # `make run` twice, or a multirun with no run directory: each run gets its own directory.
    monkeypatch.chdir(tmp_path)
    first, resuming = run_directory(RunConfig())
    assert first == tmp_path / "runs" / "flywheel" / "default" and not resuming
    existing_run(first, RunConfig())
    claimed = [run_directory(RunConfig()) for _ in range(3)]
    dirs = [d for d, _ in claimed]
    assert not any(resuming for _, resuming in claimed) and len(set(dirs)) == 3
    for d in dirs:
        assert d.parent == first.parent and d.name.startswith("default-") and d.is_dir() and not any(d.iterdir())


def test_if_exists_resume_and_resume_continue_the_run_there(tmp_path):
    existing_run(tmp_path / "run", tiny_config(tmp_path / "run"))
    assert run_directory(tiny_config(tmp_path / "run", if_exists="resume")) == (tmp_path / "run", True)
    assert run_directory(tiny_config(None, resume=str(tmp_path / "run"))) == (tmp_path / "run", True)
    with pytest.raises(ConfigError, match="if_exists must be one of error, resume"):
        tiny_config(tmp_path / "run", if_exists="overwrite")


def test_resume_refuses_another_configuration_naming_the_fields(tmp_path, no_ray):
    original = tiny_config(tmp_path / "run")
    existing_run(tmp_path / "run", original)
    changed = tiny_config(tmp_path / "run", seed=3, cycles=5, resume=str(tmp_path / "run"))
    changed.learner.lr = 1e-3
    with pytest.raises(ConfigError) as refused:
        run(changed, console=lambda *a: None)
    message = str(refused.value)
    assert "learner.lr=0.001 (the run has 0.0003)" in message and "seed=3 (the run has 0)" in message
    assert "cycles" not in message.split(";")[0]  # the cycle count may change
    # What the run is, only: how long, where, and on which Ray may change.
    check_same_run(tmp_path / "run", dataclasses.replace(original, cycles=9, name="elsewhere", run_dir="/x",
                                                         ray=RayConfig(address="auto")))
    with pytest.raises(ConfigError, match=r"if_exists=resume, and .* holds a run: seed=3 \(the run has 0\)"):
        check_same_run(tmp_path / "run", dataclasses.replace(original, seed=3, if_exists="resume"))


def test_resume_on_the_command_line_refuses_a_changed_setting(tmp_path, capsys, no_ray):
    existing_run(tmp_path / "run", tiny_config(tmp_path / "run"))
    assert main(["run", f"resume={tmp_path / 'run'}", "cycles=2", "learner.batch_size=16"]) == 2
    assert "learner.batch_size=16 (the run has 8)" in capsys.readouterr().err
    assert main(["run", f"resume={tmp_path / 'run'}", "+cycels=2"]) == 2
    assert "no setting cycels (did you mean cycles?)" in capsys.readouterr().err


def test_actors_get_the_run_directory_as_an_absolute_path(tmp_path, monkeypatch, actors_spied):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(actors_spied.stopped):
        run(tiny_config(None, name="relative"), console=lambda *a: None)  # run_dir unset: runs/flywheel/relative
    run_dir = tmp_path / "runs" / "flywheel" / "relative"
    assert actors_spied.spec.store_root == str(run_dir / "store")
    assert json.loads((run_dir / "config.json").read_text())["run_dir"] == str(run_dir)


CARTPOLE = "mujoco/cartpole-swingup-twin"


def test_a_run_on_another_task_defaults_its_reference_to_that_task():
    config = with_own_reference(RunConfig(sim=SimConfig(name=CARTPOLE, max_episode_steps=50), ray=RayConfig(num_cpus=2)),
                                console=lambda *a: None)
    assert config.reference == SimConfig(name=CARTPOLE, max_episode_steps=50)
    validate(config)  # the probe set can measure it now
    learned = with_own_reference(RunConfig(sim=SimConfig(name=f"learned/{CARTPOLE}")), console=lambda *a: None)
    assert learned.reference.name == CARTPOLE
    # The default reference's cross-engine twin is measured against it, as the fidelity sweep does.
    twin = RunConfig(sim=SimConfig(name="pybullet/reacher"))
    assert with_own_reference(twin, console=lambda *a: None) is twin


def test_a_reference_set_to_another_task_names_the_override():
    config = RunConfig(sim=SimConfig(name=CARTPOLE), reference=SimConfig(name="dmc/reacher-easy"),
                       ray=RayConfig(num_cpus=2))
    assert with_own_reference(config, console=lambda *a: None) is config  # set, so not changed
    with pytest.raises(ConfigError, match=rf"reference.name=dmc/reacher-easy: .*set reference.name={CARTPOLE}"):
        validate(config)


@pytest.mark.parametrize("errno_, advice", [(errno.ENOSPC, "free space there"), (errno.EROFS, "make it writable"),
                                            (errno.EACCES, "make it writable")])
def test_a_full_disk_or_read_only_run_dir_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch, no_ray,
                                                                      errno_, advice):
    import sims.files

    def fail(*args, **kwargs):  # what the first write of a run meets on a full or read-only disk
        raise OSError(errno_, os.strerror(errno_))

    monkeypatch.setattr(sims.files.tempfile, "mkstemp", fail)
    run_dir = tmp_path / "run"
    assert main(["run", f"run_dir={run_dir}", "pretrained=scratch", "sim.max_episode_steps=16"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"flywheel: error: {run_dir / 'config.json'}: {os.strerror(errno_)}: {advice}")


def test_a_missing_pretrained_checkpoint_is_refused_before_the_run_claims_its_directory(tmp_path, capsys, no_ray):
    run_dir, missing = tmp_path / "run", tmp_path / "nowhere"
    assert main(["run", f"run_dir={run_dir}", f"pretrained={missing}", "sim.max_episode_steps=16"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"pretrained={missing}: no pretrained checkpoint there" in line
    assert not run_dir.exists()  # a rerun under the same directory is a new run, not a resume of nothing
