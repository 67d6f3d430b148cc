"""A multi-task ``flywheel run``: the reacher twin and the cartpole swing-up twin in one run of
the real entry point (embedded Ray, a tiny agent, short episodes), and the task lists it refuses
before Ray starts."""

import json
from pathlib import Path

import numpy as np
import pytest

from flywheel.cli import main
from flywheel.logger import read_cycles, read_start
from flywheel.rows import SIM
from flywheel.store import RolloutStore

pytestmark = pytest.mark.xdist_group("ray-run-multitask")

REACHER, CARTPOLE = "mujoco/reacher-twin", "mujoco/cartpole-swingup-twin"
TASKS = (f"tasks=[{{sim:{{name:{REACHER},max_episode_steps:16}}}},"
         f"{{sim:{{name:{CARTPOLE},max_episode_steps:16}},weight:0.5}}]")
TINY = ["pretrained=scratch", "num_rollout_workers=2", "envs_per_worker=2", "episodes_per_cycle=6",
        "learner.steps=3", "learner.batch_size=12", "eval.episodes=2", "ray.num_cpus=2", "n_candidates=2"]


def manifests(run_dir):
    store = RolloutStore(Path(run_dir) / "store")
    return {c: store.manifest(c).to_json() for c in store.committed_cycles()}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Two cycles of the two tasks, uninterrupted."""
    run_dir = tmp_path_factory.mktemp("multitask") / "straight"
    assert main(["run", f"run_dir={run_dir}", "cycles=2", TASKS, *TINY]) == 0
    return run_dir


def test_both_tasks_are_collected_trained_on_and_evaluated_each_in_its_reference(straight, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = json.loads((straight / "config.json").read_text())
    # an unset reference is the training sim's own engine at full fidelity
    assert [t["reference"]["name"] for t in config["tasks"]] == [REACHER, CARTPOLE]
    # sim and reference are the first task's (episodes of 16 steps: not the default sim's)
    assert config["sim"] == config["tasks"][0]["sim"] and config["sim"]["max_episode_steps"] == 16
    assert config["reference"] == config["tasks"][0]["reference"]
    store = RolloutStore(straight / "store")
    for cycle in (0, 1):
        rows, report = store.read([cycle])
        assert not report.corrupt_shards
        episodes = {sim: len(np.unique(rows["episode"][rows[SIM] == sim])) for sim in (REACHER, CARTPOLE)}
        assert episodes == {REACHER: 4, CARTPOLE: 2}  # 6 episodes split 1 : 0.5
        counts = {}
        for shard in store.manifest(cycle).shards:  # each worker's rows, grouped by sim and counted
            for sim, n in shard.sims.items():
                counts[sim] = counts.get(sim, 0) + n
        assert counts == {sim: int(np.sum(rows[SIM] == sim)) for sim in (REACHER, CARTPOLE)}
    records = read_cycles(straight)
    for record in [read_start(straight), *records]:
        tasks = record["tasks"]
        assert list(tasks) == [REACHER, CARTPOLE]
        # the record's capability is the tasks' mean; its standard error the mean's
        assert record["capability"] == pytest.approx(np.mean([t["capability"] for t in tasks.values()]))
        assert record["capability_stderr"] == pytest.approx(
            np.sqrt(sum(t["capability_stderr"] ** 2 for t in tasks.values())) / 2)
        assert {t: e["episodes"] for t, e in record["eval"]["tasks"].items()} == {REACHER: 2, CARTPOLE: 2}
    for record in records:
        assert record["tasks"][CARTPOLE]["weight"] == 0.5 and record["tasks"][CARTPOLE]["reference"] == CARTPOLE
        assert record["tasks"][REACHER]["episodes"] == 4 and record["tasks"][CARTPOLE]["episodes"] == 2
        assert 0 <= record["tasks"][CARTPOLE]["fidelity"] <= 1
    for record in records:  # the learners' draws (learner.steps * batch_size = 36), by task weight 1 : 0.5
        assert record["replay"]["drawn_by_task"] == {REACHER: 24, CARTPOLE: 12}
    scalars = set(EventAccumulator(str(straight / "tb")).Reload().Tags()["scalars"])
    assert {f"eval/{REACHER}/capability", f"eval/{CARTPOLE}/capability", "eval/capability"} <= scalars
    assert main(["status", str(straight)]) == 0
    status = capsys.readouterr().out
    assert f"capability {REACHER}" in status and f"capability {CARTPOLE}" in status
    assert main(["status", str(straight), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["cycles"][0]["capability_by_task"]) == {REACHER, CARTPOLE}
    # The report: one run per task, each in its own reference's report, with the tasks' mean beside.
    from flywheel.report import load_runs

    views = {view.sim: view for view in load_runs(straight)}
    for task in (REACHER, CARTPOLE):  # the start's evaluation is the task's, like each cycle's
        assert views[task].start["eval"] == read_start(straight)["eval"]["tasks"][task]
        assert views[task].cycles[-1]["eval"] == records[-1]["eval"]["tasks"][task]
    out = straight.parent / "report"
    assert main(["report", str(straight), "--out", str(out)]) == 0
    for folder, task, other in ((out, REACHER, CARTPOLE), (out / "reference-mujoco_cartpole-swingup-twin", CARTPOLE,
                                                         REACHER)):
        text = (folder / "report.md").read_text()
        assert f"Reference sim: `{task}`" in text
        row = next(line for line in text.splitlines() if line.startswith(f"| straight [{task}] |"))
        assert f"{task} in a multi-task run" in row and f"straight [{other}]" not in text.split("## The multi")[0]
        # the row's env steps are the task's own, summed over the cycles
        assert row.split(" | ")[11] == str(sum(r["tasks"][task]["env_steps"] for r in records))
        table = text.split(f"## The multi-task run `{straight}`")[1]
        last = next(line for line in table.splitlines() if line.startswith("| 1 |")).strip("| ").split(" | ")
        caps = [records[-1]["tasks"][name]["capability"] for name in (REACHER, CARTPOLE)]
        assert [float(v) for v in last[1:]] == pytest.approx([*caps, records[-1]["capability"]], abs=1e-3)


def test_a_resumed_multitask_run_matches_an_uninterrupted_one(straight, tmp_path):
    resumed = tmp_path / "resumed"
    assert main(["run", f"run_dir={resumed}", "cycles=1", TASKS, *TINY]) == 0
    assert main(["run", f"resume={resumed}", "cycles=2"]) == 0
    assert manifests(resumed) == manifests(straight)  # cycle 1's rollouts: the same weights, bit for bit
    assert [r["tasks"] for r in read_cycles(resumed)] == [r["tasks"] for r in read_cycles(straight)]


def test_tasks_may_be_listed_by_name_alone():
    from hydra import compose, initialize_config_dir

    from configs import CONFIG_DIR
    from configs.run_schema import RunConfig
    from configs.schema import to_dataclass
    from flywheel.commands.run import spelled_out_tasks

    short = spelled_out_tasks(f"tasks=[{REACHER},{CARTPOLE}]")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = to_dataclass(compose(config_name="run", overrides=[short, "run_dir=x"]), RunConfig)
    assert [(t.sim.name, t.reference, t.weight) for t in config.task_list()] == \
        [(REACHER, None, 1.0), (CARTPOLE, None, 1.0)]  # no reference: each is scored in its own engine
    assert spelled_out_tasks(TASKS) == TASKS and spelled_out_tasks("seed=1") == "seed=1"


def test_a_task_listed_by_a_name_nobody_registered_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("flywheel.controller.start_ray", lambda *a, **k: pytest.fail("Ray started"))
    assert main(["run", f"run_dir={tmp_path / 'run'}", f"tasks=[{REACHER},mujoco/nope]", *TINY]) == 2
    assert "tasks[1].sim.name / tasks[1].sim: unknown sim 'mujoco/nope'" in capsys.readouterr().err


@pytest.mark.parametrize("overrides,message", [
    (["tasks.1.sim.name=mujoco/nope"], "tasks[1].sim.name / tasks[1].sim: unknown sim 'mujoco/nope'"),
    (["tasks.1.weight=-1"], "tasks[1].weight must be a finite number >= 0, got -1.0"),
    (["tasks.0.weight=0", "tasks.1.weight=0"], "tasks[*].weight: the weights sum to 0"),
    ([f"tasks=[{{sim:{{name:{REACHER}}}}},{{sim:{{name:{CARTPOLE}}},reference:{{name:{REACHER}}}}}]"],
     f"tasks[1].reference.name={REACHER}: it cannot measure the training sim {CARTPOLE}"),
    ([f"tasks.1.sim.name={REACHER}"], f"tasks[1].sim.name={REACHER}: tasks[0] trains in it already"),
    ([f"sim.name={CARTPOLE}"], "sim: a multi-task run takes its sims from tasks"),
])
def test_a_bad_task_list_fails_before_ray_starts_naming_the_entry(tmp_path, capsys, monkeypatch, overrides, message):
    monkeypatch.setattr("flywheel.controller.start_ray", lambda *a, **k: pytest.fail("Ray started"))
    assert main(["run", f"run_dir={tmp_path / 'run'}", TASKS, *overrides, *TINY]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
