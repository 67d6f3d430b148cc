"""``flywheel run`` end to end on an embedded Ray, with a tiny agent and a short reacher."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from configs.errors import ConfigError
from configs.run_schema import EvalConfig, LearnerConfig, RayConfig, Resources, RunConfig
from configs.schema import SimConfig
from flywheel.cli import main
from flywheel.controller import check_embodiment, run, validate
from flywheel.logger import read_cycles, read_start
from flywheel.store import RolloutStore

pytestmark = pytest.mark.xdist_group("ray-run")

PNG = b"\x89PNG\r\n\x1a\n"

TINY = ["pretrained=scratch", "num_rollout_workers=2", "envs_per_worker=2", "episodes_per_cycle=4",
        "learner.steps=3", "learner.batch_size=8", "eval.episodes=2", "sim.max_episode_steps=16",
        "reference.max_episode_steps=16", "ray.num_cpus=2", "n_candidates=2"]


def tiny_config(run_dir, cycles=1, **changes) -> RunConfig:
    """``TINY``'s run, and one cycle of ``tiny_two_cycle_run`` (conftest.py)."""
    sim = SimConfig(name="mujoco/reacher-twin", max_episode_steps=16)
    base = dict(run_dir=str(run_dir), cycles=cycles, pretrained="scratch", num_rollout_workers=2, envs_per_worker=2,
                episodes_per_cycle=4, n_candidates=2, sim=sim, reference=sim, ray=RayConfig(num_cpus=2))
    config = RunConfig(**{**base, **changes})
    config.learner.steps, config.learner.batch_size, config.eval.episodes = 3, 8, 2
    return config


def manifests(run_dir):
    store = RolloutStore(Path(run_dir) / "store")
    return {c: store.manifest(c).to_json() for c in store.committed_cycles()}


def test_one_cycle_of_the_real_entry_point(tmp_path, capsys):
    run_dir = tmp_path / "run"
    # learner.steps unset: the steps follow from the update-to-data ratio and the cycle's env steps.
    assert main(["run", f"run_dir={run_dir}", "cycles=1", *TINY, "learner.steps=null", "learner.utd=0.05"]) == 0
    out = capsys.readouterr().out
    assert "cycle 0: capability" in out and "TensorBoard" in out
    # The curve's first point: the starting weights, evaluated once before cycle 0.
    start = read_start(run_dir)
    assert start["cycle"] == -1 and start["weight_version"] == 0 and start["eval"]["episodes"] == 2
    assert f"start: capability {start['capability']:.3f} ± {start['capability_stderr']:.3f}" in out
    assert (run_dir / "capability.png").read_bytes().startswith(PNG) and f"capability plot: {run_dir}" in out
    (record,) = read_cycles(run_dir)
    assert record["cycle"] == 0 and record["weight_version"] == 1
    assert f"cycle 0: capability {record['capability']:.3f} ± {record['capability_stderr']:.3f}" in out
    assert record["capability_stderr"] == record["eval"]["success_stderr"]  # the reacher defines success
    assert record["rollout"]["episodes"] == 4 and record["eval"]["episodes"] == 2
    assert 0.0 <= record["fidelity"] <= 1.0 and record["fidelity"] == pytest.approx(1.0)  # training sim = reference
    assert (run_dir / "checkpoints" / "latest").read_text() == "cycle-000000"
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    rows, report = RolloutStore(run_dir / "store").read([0])
    assert not report.corrupt_shards
    assert set(rows["weight_version"]) == {0}  # every rollout of cycle 0 used the weights broadcast for it
    assert {"weight", "grade_imagination"} <= set(rows)
    assert main(["status", str(run_dir)]) == 0
    status = capsys.readouterr().out
    assert status.startswith("cycle\tcapability") and "sim steps" in status and f"{record['sim_steps']:,}" in status
    assert f"{record['capability']:.3f} ± {record['capability_stderr']:.3f}" in status and "start" in status
    # Every engine step is counted: the grader's replays come on top of the executed steps.
    assert record["sim_steps_total"] == record["sim_steps"] > rows["sim_steps"].sum() > record["env_steps_total"]
    # What no row holds is the actors' grader start-up (each built its probe set once).
    assert record["sim_steps"] == rows["sim_steps"].sum() + record["rollout"]["sim_steps_outside_rows"]
    assert record["eval"]["sim_steps"] >= record["eval"]["env_steps"] > 0
    learner = record["learner"]
    assert learner["steps"] == math.ceil(0.05 * record["env_steps"]) == 4  # 4 episodes of 16 steps
    assert learner["utd"] == learner["steps"] / record["env_steps"]
    assert learner["samples_per_env_step"] == learner["steps"] * 8 / record["env_steps"]
    # The replay was sampled, not read whole: every drawn row held once, memory reported.
    replay = record["replay"]
    assert replay["cycles"] == [0] and replay["chunks"] == rows.n and replay["sampled_chunks"] <= 4 * 8
    assert replay["driver_peak_rss_mb"] > 0 and learner["peak_rss_mb"] > 0 and not replay["corrupt_shards"]
    assert f"{record['env_steps']} env steps ({record['sim_steps']:,} sim steps)" in out


@pytest.fixture(scope="module")
def one_cycle_run(tmp_path_factory):
    """One cycle of ``tiny_config``, choose=sim; only read (a test that resumes it copies it first)."""
    return run(tiny_config(tmp_path_factory.mktemp("one-cycle") / "run", choose="sim"), console=lambda *a: None)


def test_tensorboard_has_what_rl_practitioners_read_first(one_cycle_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = one_cycle_run
    (record,) = read_cycles(run_dir)
    events = EventAccumulator(str(run_dir / "tb")).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"rollout/sim_steps_total", "rollout/sim_steps_per_env_step", "rollout/env_steps_per_second",
            "rollout/episodic_return", "rollout/episode_length", "eval/sim_steps"} <= scalars
    assert {"rollout/episodic_returns", "rollout/episode_lengths"} <= set(events.Tags()["histograms"])
    # Per learner step, at the global learner step; the cycle's means stay per cycle.
    for tag in ("learner/loss_total_step", "learner/grad_norm", "learner/lr"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3], tag
    assert "learner/loss_total" in scalars and record["learner"]["grad_norm_max"] >= record["learner"]["grad_norm_mean"]
    ratio = events.Scalars("rollout/sim_steps_per_env_step")[0].value
    # choose=sim with 2 candidates: each executed step was run twice more ahead of it, then graded.
    assert ratio == pytest.approx(record["sim_steps"] / record["env_steps"]) and ratio > 3


def test_a_resumed_run_matches_an_uninterrupted_one(tiny_two_cycle_run, one_cycle_run, tmp_path, capsys):
    import shutil

    from flywheel.logger import write_cycles

    straight = tiny_two_cycle_run
    # A run stopped after its first cycle: the directory is all a resume reads, so a copy of one is one.
    interrupted = Path(shutil.copytree(one_cycle_run, tmp_path / "resumed"))
    start = (interrupted / "start.json").read_bytes()
    # The worst moment to stop: cycle 0's checkpoint is written, its cycles.jsonl line is not.
    lost = (interrupted / "cycles.jsonl").read_text()
    write_cycles(interrupted, [])
    assert main(["run", f"resume={interrupted}", "cycles=2"]) == 0
    assert "no line for cycle 0" in capsys.readouterr().out
    assert (interrupted / "start.json").read_bytes() == start  # the start is evaluated once, never again
    assert [r["cycle"] for r in read_cycles(interrupted)] == [0, 1]
    assert (interrupted / "cycles.jsonl").read_text().startswith(lost)  # the very line, rebuilt
    assert [r["env_steps_total"] for r in read_cycles(interrupted)] == [r["env_steps_total"] for r in read_cycles(straight)]
    assert manifests(straight) == manifests(interrupted)
    saved = json.loads((interrupted / "config.json").read_text())
    assert saved["cycles"] == 2 and saved["num_rollout_workers"] == 2  # the run's own config, plus the override


def test_a_rollout_actor_that_dies_is_replaced_and_the_cycle_completes(tmp_path):
    # choose=sim: the replacement actor must get every rollout knob, not just the defaults.
    run_dir = run(tiny_config(tmp_path / "faulty", choose="sim"), console=lambda *a: None,
                  fault={"worker": 1, "cycle": 0})
    manifest = RolloutStore(run_dir / "store").manifest(0)
    assert manifest.episodes == 4 and manifest.meta["retries"] == 1
    assert len(manifest.shards) == 2


@pytest.mark.parametrize("change,field", [({"num_rollout_workers": 0}, "num_rollout_workers"),
                                          ({"episodes_per_cycle": 0}, "episodes_per_cycle"),
                                          ({"sim": SimConfig(name="mujoco/nope")}, "sim.name"),
                                          ({"choose": "oracle"}, "choose"),
                                          (lambda: {"planning": False, "choose": "sim", "learner": LearnerConfig(act_on="realized")},
                                           "choose=sim"),
                                          (lambda: {"planning": False, "choose": "model",
                                                    "learner": LearnerConfig(act_on="imagined")}, "act_on=imagined"),
                                          (lambda: {"eval": EvalConfig(n_candidates=0)}, "eval.n_candidates"),
                                          (lambda: {"learner": LearnerConfig(steps=0)}, "learner.steps"),
                                          (lambda: {"learner": LearnerConfig(utd=0)}, "learner.utd"),
                                          (lambda: {"learner": LearnerConfig(utd=float("nan"))}, "learner.utd"),
                                          ({"replay_cycles": 0}, "replay_cycles"),
                                          (lambda: {"num_learners": 2, "learner": LearnerConfig(batch_size=1)},
                                           "learner.batch_size=1"),
                                          ({"episodes_per_cycle": 1}, "episodes_per_cycle=1"),  # 2 workers
                                          (lambda: {"learner": LearnerConfig(lr=0)}, "learner.lr"),
                                          (lambda: {"learner": LearnerConfig(lr=-1e-3)}, "learner.lr"),
                                          (lambda: {"ray": RayConfig(num_cpus=0)}, "ray.num_cpus"),
                                          (lambda: {"rollout_resources": Resources(num_cpus=-0.5)},
                                           "rollout_resources.num_cpus"),
                                          (lambda: {"learner_resources": Resources(num_cpus=-1)},
                                           "learner_resources.num_cpus"),
                                          (lambda: {"learner_resources": Resources(num_gpus=-1)},
                                           "learner_resources.num_gpus"),
                                          ({"sim": SimConfig(name="mujoco/reacher-twin", max_episode_steps=0)},
                                           "sim.max_episode_steps"),
                                          ({"reference": SimConfig(name="mujoco/reacher-twin", max_episode_steps=0)},
                                           "reference.max_episode_steps")])
def test_config_errors_name_the_field_before_ray_starts(tmp_path, change, field):
    # Some are caught as the config is built (RunConfig and its sections check themselves), the
    # rest by validate: either way before Ray starts. A callable builds its change inside the check.
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        validate(tiny_config(tmp_path, **(change() if callable(change) else change)))


@pytest.mark.parametrize("field,bad", [("learner.act_on", "dream"), ("learner.advantage", "luck"),
                                       ("learner.temperature", 0.0), ("grade.reward_scale", 0.0),
                                       ("eval.n_candidates", 0), ("learner.discount", 0), ("learner.discount", 1.5),
                                       ("learner.target_tau", 0), ("learner.target_tau", 2),
                                       ("learner.expectile", 0.5), ("learner.expectile", 1.0),
                                       ("learner.critic_coef", -1), ("learner.ensemble", 0), ("learner.utd", 0), ("learner.candidate_samples", -1),
                                       ("learner.utd", -0.5), ("replay_cycles", 0), ("learner.lr", 0), ("learner.weight_decay", -0.1),
                                       ("rollout_resources.num_cpus", -1), ("learner_resources.num_gpus", -1)])
def test_a_bad_objective_or_grade_knob_names_the_field_before_ray_starts(tmp_path, capsys, field, bad):
    # The schema dataclasses check themselves as Hydra builds them ...
    assert main(["run", f"run_dir={tmp_path}", f"{field}={bad}", *TINY]) == 2
    assert f"{field} must be" in capsys.readouterr().err
    # ... and validate checks the objective again, in case it changed after it was built.
    if field in ("learner.act_on", "learner.advantage", "learner.temperature"):
        config = tiny_config(tmp_path)
        setattr(config.learner, field.removeprefix("learner."), bad)
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            validate(config)


def test_bad_run_config_is_one_line_on_the_command_line(tmp_path, capsys):
    assert main(["run", f"run_dir={tmp_path}", "num_learners=0", *TINY]) == 2
    assert "num_learners must be >= 1" in capsys.readouterr().err
    assert main(["status", str(tmp_path / "nothing")]) == 2


@pytest.mark.parametrize("field", ["sim", "reference"])
def test_an_episode_shorter_than_the_chunk_is_a_config_error(tmp_path, capsys, field):
    """The critic's n-step backup is a whole chunk: an episode shorter than one never reaches the next."""
    from policies.agent import Agent

    agent = Agent("tiny")
    config = tiny_config(tmp_path)
    check_embodiment(agent, config)  # 16 steps hold two chunks of 8
    setattr(config, field, SimConfig(name="mujoco/reacher-twin", max_episode_steps=agent.cfg.chunk - 1))
    with pytest.raises(ConfigError, match=rf"{field}\.max_episode_steps=7 is shorter than the model's chunk of 8"):
        check_embodiment(agent, config)
    # a full run stops there too, before Ray starts
    assert main(["run", f"run_dir={tmp_path / 'run'}", *TINY, f"{field}.max_episode_steps=7"]) == 2
    assert f"{field}.max_episode_steps=7 is shorter" in capsys.readouterr().err


def test_a_body_the_model_cannot_pad_is_a_config_error(tmp_path):
    from policies.agent import Agent
    from policies.config import SIZES, ModelConfig

    narrow = Agent(ModelConfig(**{**SIZES["tiny"].to_dict(), "proprio_pad": 4}))
    with pytest.raises(ConfigError, match=r"sim\.name='mujoco/reacher-twin': its body \(8 proprio"):
        check_embodiment(narrow, tiny_config(tmp_path))


def test_actors_that_cannot_all_fit_are_a_config_error(tmp_path):
    config = tiny_config(tmp_path, num_rollout_workers=4)
    config.rollout_resources.num_cpus = 1.0
    config.ray.num_cpus = 2
    with pytest.raises(ConfigError, match=r"need 5 CPUs, but Ray has 2"):
        validate(config)


def test_grade_summary_averages_each_answer_only_where_it_applies():
    from flywheel.rows import GRADE_COLUMNS, grade_summary

    columns = {c.name: np.zeros(2, dtype=c.dtype) for c in GRADE_COLUMNS}
    columns |= {"weight": np.array([0.2, 0.4]), "grade_physics_applies": np.array([True, False]),
                "grade_physics": np.array([0.9, 0.0]), "grade_obeys_physics": np.array([True, False]),
                "grade_imagination_applies": np.array([True, True]), "grade_imagination": np.array([0.5, 0.7]),
                "grade_progress": np.array([0.1, 0.3])}
    summary = grade_summary(columns)
    assert summary["physics"] == 0.9 and summary["obeys_physics"] == 1.0
    assert summary["imagination"] == pytest.approx(0.6) and summary["progress"] == pytest.approx(0.2)
    assert summary["weight"] == pytest.approx(0.3)
    assert "success" not in summary  # applies nowhere


def test_sigint_finishes_the_phase_checkpoints_and_resumes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "stopped"
    flywheel = Path(sys.executable).parent / "flywheel"
    proc = subprocess.Popen([str(flywheel), "run", f"run_dir={run_dir}", "cycles=6", *TINY],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("cycle 0:"):
            proc.send_signal(signal.SIGINT)
            break
        assert time.monotonic() < deadline, "".join(lines)
    out = proc.communicate(timeout=240)[0]
    assert proc.returncode == 130, "".join(lines) + out  # 128 + SIGINT: an early stop, not a finished run
    assert "finishing the current phase" in out
    done = [r["cycle"] for r in read_cycles(run_dir)]
    assert done and done == list(range(len(done))) and len(done) < 6
    assert (run_dir / "checkpoints" / "latest").read_text() == f"cycle-{done[-1]:06d}"
    assert main(["run", f"resume={run_dir}", f"cycles={len(done) + 1}"]) == 0
    assert [r["cycle"] for r in read_cycles(run_dir)] == list(range(len(done) + 1))


@pytest.mark.parametrize("signum,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_run_stopped_early_exits_with_its_signals_code(tmp_path, monkeypatch, capsys, signum, code):
    import signal

    import flywheel.controller
    from flywheel.controller import RunStopped

    def stopped(config, console=print):  # what run raises after a stop before the last cycle
        Path(config.run_dir).mkdir(parents=True)
        raise RunStopped(Path(config.run_dir), getattr(signal, signum))

    monkeypatch.setattr(flywheel.controller, "run", stopped)
    assert main(["run", f"run_dir={tmp_path / 'run'}", *TINY]) == code
    assert f"stopped by {signum} before the last cycle; resume={tmp_path / 'run'}" in capsys.readouterr().out


def test_imagination_figure_draws_imagined_against_realized(tmp_path):
    from flywheel.report import imagination_figure

    rng = np.random.default_rng(0)
    rows = {"steps": np.array([8, 5]), "proprio_dim": np.array([8, 8]), "sim": np.array(["a", "b"], dtype=object),
            "episode": np.array([1, 2]), "chunk": np.array([0, 3]), "realized": rng.normal(size=(2, 8, 64)),
            "imagined": rng.normal(size=(2, 8, 64)), "return": np.array([1.0, 2.0])}
    fig = imagination_figure(rows, chunks=2)
    lines = fig.axes[1].get_lines()
    assert len(lines) == 4 and len(lines[0].get_xdata()) == 5  # only the steps that ran
    assert [ln.get_linestyle() for ln in lines[:2]] == ["-", "--"]


def test_the_logger_writes_the_line_the_scalars_and_the_imagination_figure(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from flywheel.logger import CycleLogger

    rng = np.random.default_rng(0)
    rows = {"steps": np.array([8, 5]), "proprio_dim": np.array([8, 8]), "sim": np.array(["a", "b"], dtype=object),
            "episode": np.array([1, 2]), "chunk": np.array([0, 3]), "realized": rng.normal(size=(2, 8, 64)),
            "imagined": rng.normal(size=(2, 8, 64)), "return": np.array([1.0, 2.0])}
    record = {"cycle": 0, "capability": 0.5, "capability_stderr": 0.125, "eval": {"mean_return": 1.0}, "fidelity": 1.0,
              "grades": {"weight": 0.25},
              "rollout": {"success_rate": 0.5, "quarantined_episodes": 0}, "learner": {"loss": 0.1},
              "policy_lag": 0.0, "env_steps": 13, "env_steps_total": 13, "sim_steps": 1300, "sim_steps_total": 1300,
              "seconds": {"cycle": 1.0, "rollout": 0.5}}
    config = {"sim": {"name": "a"}, "reference": {"name": "a"}}
    lines = []
    logger = CycleLogger(tmp_path, config, start_cycle=0, console=lines.append)
    logger.log_start({"capability": 0.25, "capability_stderr": 0.0766, "episodes": 32}, seconds=2.0)
    assert (tmp_path / "capability.png").read_bytes().startswith(PNG)
    logger.log(record, rows, began=0.0, series={"grad_norm": [1.0, None, 3.0]})
    logger.close()
    assert read_cycles(tmp_path) == [record] and (logger.env_steps_total, logger.sim_steps_total) == (13, 1300)
    assert read_start(tmp_path)["cycle"] == -1 and read_start(tmp_path)["capability_stderr"] == 0.0766
    assert lines[0].startswith("start: capability 0.250 ± 0.077 (the starting weights, before cycle 0, 32 ")
    assert lines[1].startswith("cycle 0: capability 0.500 ± 0.125, grade weight 0.250, 13 env steps (1,300 sim steps), ")
    assert (tmp_path / "capability.png").read_bytes().startswith(PNG)
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert {"eval/capability", "grade/weight", "learner/policy_lag", "time/cycle"} <= set(events.Tags()["scalars"])
    assert [(e.step, e.value) for e in events.Scalars("eval/capability_stderr")] == [(0, pytest.approx(0.0766)),
                                                                                  (13, 0.125)]
    assert events.Scalars("rollout/env_steps_per_second")[0].value == 26.0
    assert events.Scalars("rollout/sim_steps_per_env_step")[0].value == 100.0
    assert [(e.step, e.value) for e in events.Scalars("learner/grad_norm")] == [(1, 1.0), (3, 3.0)]  # None: skipped
    assert events.Tags()["images"] == ["rollout/imagined_vs_realized"]
    again = CycleLogger(tmp_path, config, start_cycle=0)  # a resume from cycle 0 drops the line
    again.close()
    assert again.records == []
    assert read_cycles(tmp_path) == []


def test_a_critic_advantage_without_the_critic_names_the_field(tmp_path, capsys):
    assert main(["run", f"run_dir={tmp_path}", "learner.advantage=critic", *TINY]) == 2
    assert "learner.advantage=critic needs learner.critic=true" in capsys.readouterr().err


def test_a_critic_asked_of_a_checkpoint_that_cannot_grow_one_fails_before_ray_starts(tmp_path, capsys, monkeypatch):
    from policies.agent import Agent
    from policies.config import DEFAULT_MODALITIES, model_config

    import flywheel.controller as controller

    blind = model_config("tiny", modalities=tuple(p for p in DEFAULT_MODALITIES if p[0] != "proprio"))
    Agent(blind).save(tmp_path / "blind")
    monkeypatch.setattr(controller, "start_ray", lambda config, *_: pytest.fail("Ray started"))
    args = ["run", f"run_dir={tmp_path / 'run'}", *TINY, f"pretrained={tmp_path / 'blind'}", "learner.critic=true"]
    assert main(args) == 2
    assert "learner.critic=true: the starting checkpoint has no critic and cannot grow one" in capsys.readouterr().err


# ---------------------------------------------------------------------- frames and the critic in the loop


# One run has the camera and the critic on: each is checked on it, and its resume covers both
# (a run start costs the suite ~10 s; the two features share no code).
CAMERA_AND_CRITIC = ["camera=true", "learner.critic=true", "learner.advantage=critic"]


@pytest.fixture(scope="module")
def camera_run(tmp_path_factory):
    """Two cycles of the real entry point with camera=true and the critic on, uninterrupted; only read."""
    run_dir = tmp_path_factory.mktemp("camera") / "straight"
    assert main(["run", f"run_dir={run_dir}", "cycles=2", "choose=sim", *CAMERA_AND_CRITIC, *TINY]) == 0
    return run_dir


def test_a_cycle_of_the_real_entry_point_learns_the_sims_candidates_and_ranks_them(tmp_path, capsys):
    """Both knobs that learn from the sim's candidates in one real cycle (one Ray start for two)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from flywheel import checkpoint as run_checkpoint
    from flywheel.objective import CANDIDATES
    from flywheel.rows import CANDIDATE_IMAGINED
    from policies.ranker import RANK

    run_dir = tmp_path / "run"
    assert main(["run", f"run_dir={run_dir}", "cycles=1", *TINY, "learner.candidate_samples=2", "learner.ranker=true",
                 "eval.n_candidates=2"]) == 0
    (record,) = read_cycles(run_dir)
    for term in (CANDIDATES, RANK):
        assert np.isfinite(record["learner"][f"loss_{term}"]) and record["learner"][f"loss_{term}"] > 0, term
    rows, _ = RolloutStore(run_dir / "store").read([0])
    assert rows[CANDIDATE_IMAGINED].shape[1] == 2 and rows[CANDIDATE_IMAGINED].any()
    events = EventAccumulator(str(run_dir / "tb")).Reload()
    for term in (CANDIDATES, RANK):
        assert len(events.Scalars(f"learner/loss_{term}_step")) == 3, term  # one point per learner step
    model, _, _ = run_checkpoint.load(run_checkpoint.latest(run_dir))
    assert model.has_ranker  # grown at the start, trained, saved: the evaluation planned with it


def test_each_cycle_with_the_critic_on_trains_it(camera_run):
    from flywheel import checkpoint as run_checkpoint

    for record in read_cycles(camera_run):
        learner = record["learner"]
        for key in ("loss_q", "loss_value", "q_mean", "v_mean", "td_error"):
            assert np.isfinite(learner[key]), (record["cycle"], key)
    rows, _ = RolloutStore(camera_run / "store").read([0])
    assert "candidate_actions" in rows
    model, _, _ = run_checkpoint.load(run_checkpoint.latest(camera_run))
    assert model.has_critic and model.cfg.critic_ensemble == 2


def test_a_camera_run_keeps_every_chunks_frames_and_they_are_the_engines(camera_run):
    """The real entry point with camera=true: the frames read back from the shards are those a
    fresh env renders, reset with the same seed and stepped with the recorded actions."""
    import pyarrow.parquet as pq
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import sims
    from configs.schema import SimConfig
    from flywheel.cycle import rollout_seed
    from flywheel.rollout import env_kwargs, reset_seed
    from flywheel.rows import (ACTIONS, CHUNK, EPISODE, FRAME, IMAGINED_FRAMES, REALIZED_FRAMES, STEPS, WORKER,
                               episode_index)
    from flywheel.store import MANIFEST
    from policies.config import SIZES

    run_dir = camera_run
    rows, report = RolloutStore(run_dir / "store").read([0])
    assert not report.corrupt_shards
    size, chunk = SIZES["tiny"].image_size, SIZES["tiny"].chunk
    assert rows[FRAME].shape == (rows.n, size, size, 3) and rows[FRAME].dtype == np.uint8
    for column in (REALIZED_FRAMES, IMAGINED_FRAMES):  # the tiny model imagines frames (future_frames)
        assert rows[column].shape == (rows.n, chunk, size, size, 3) and rows[column].dtype == np.uint8
    unran = np.arange(chunk)[None, :] >= rows[STEPS][:, None]
    assert not rows[REALIZED_FRAMES][unran].any() and rows[REALIZED_FRAMES][~unran].any()
    # Each episode's frames, against a fresh env rendering its seed and the actions its rows record.
    sim = SimConfig(name="mujoco/reacher-twin", max_episode_steps=16)
    env = sims.make(sim.name, **env_kwargs(sim, True, size))
    for episode in np.unique(rows[EPISODE])[:2]:
        mine = np.flatnonzero(rows[EPISODE] == episode)
        mine = mine[np.argsort(rows[CHUNK][mine])]
        env.reset(seed=reset_seed(rollout_seed(0, 0, int(rows[WORKER][mine[0]])), int(episode_index(episode))))
        for i in mine:
            assert np.array_equal(env.render(), rows[FRAME][i])
            for t, action in enumerate(env.embodiment.to_env_action(env.embodiment.unpad_action(rows[ACTIONS][i]))
                                       [: rows[STEPS][i]]):
                env.step(action)
                assert np.array_equal(env.render(), rows[REALIZED_FRAMES][i, t])
    env.close()
    # Plain Parquet: zstd-compressed, each frame a nested fixed-size list that keeps its shape.
    shard = next(p for p in (run_dir / "store" / "cycle-000000").glob("worker-*.parquet"))
    parquet = pq.ParquetFile(shard)
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    kind, sizes = parquet.schema_arrow.field(FRAME).type, []
    while hasattr(kind, "list_size"):
        sizes.append(kind.list_size)
        kind = kind.value_type
    assert sizes == [size, size, 3] and str(kind) == "uint8"
    cell = parquet.read().column(FRAME).to_pandas()[0]
    assert np.stack([np.stack(r) for r in cell]).shape == (size, size, 3)
    assert (run_dir / "store" / "cycle-000000" / MANIFEST).is_file()
    # TensorBoard shows the frames beside the imagined-vs-realized proprio.
    images = EventAccumulator(str(run_dir / "tb")).Reload().Tags()["images"]
    assert {"rollout/frames", "rollout/imagined_vs_realized"} <= set(images)


def test_a_resumed_camera_run_with_the_critic_matches_an_uninterrupted_one(camera_run, tmp_path):
    """Frames and the critic change nothing about resuming: the same shards (frames included, by
    their checksums in the manifests), the same numbers, the same weights (the critic's heads and
    its EMA target are in the model state)."""
    import torch

    from flywheel import checkpoint as run_checkpoint

    straight = camera_run
    interrupted = tmp_path / "resumed"
    assert main(["run", f"run_dir={interrupted}", "cycles=1", "choose=sim", *CAMERA_AND_CRITIC, *TINY]) == 0
    assert main(["run", f"resume={interrupted}", "cycles=2"]) == 0
    assert manifests(straight) == manifests(interrupted)
    assert [r["learner"]["loss_total"] for r in read_cycles(straight)] == \
        [r["learner"]["loss_total"] for r in read_cycles(interrupted)]
    weights = [run_checkpoint.load(run_checkpoint.latest(d))[0].state_dict() for d in (straight, interrupted)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_camera_frames_the_agent_cannot_take_fail_before_ray_naming_the_field(tmp_path, capsys, monkeypatch):
    import flywheel.controller as controller

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started")

    monkeypatch.setattr(controller, "start_ray", no_ray)
    assert main(["run", f"run_dir={tmp_path / 'a'}", "camera=true", "sim.image_size=32", *TINY]) == 2
    assert "sim.image_size=32: the agent takes 16x16 frames" in capsys.readouterr().err
    assert main(["run", f"run_dir={tmp_path / 'b'}", "camera=true", "reference.image_size=64", *TINY]) == 2
    assert "reference.image_size=64: the agent takes 16x16 frames" in capsys.readouterr().err
    # The camera is one knob for both sims: a sim's own is refused, pointing at it.
    assert main(["run", f"run_dir={tmp_path / 'c'}", "sim.camera=true", *TINY]) == 2
    assert "sim.camera=true: a run's frames are one knob" in capsys.readouterr().err
    # The tiny model imagines frames, which no row keeps of the sim's candidates.
    assert main(["run", f"run_dir={tmp_path / 'f'}", "camera=true", "learner.candidate_samples=2", *TINY]) == 2
    assert "learner.candidate_samples=2: this model imagines frames" in capsys.readouterr().err
    # The agent's own size is taken; without the camera the size is never read.
    config = tiny_config(tmp_path / "d", camera=True, sim=SimConfig(name="mujoco/reacher-twin", max_episode_steps=16,
                                                                     image_size=16))
    from policies.agent import Agent

    controller.check_camera(Agent("tiny"), config)
    controller.check_camera(Agent("tiny"), tiny_config(tmp_path / "e", sim=SimConfig(name="mujoco/reacher-twin",
                                                                                    image_size=32)))
