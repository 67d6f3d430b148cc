"""The fidelity sweep end to end: ``flywheel run experiment=fidelity_sweep_smoke`` runs every
training sim (the control and the learned simulator) on two seeds on an embedded Ray, resuming a run an earlier sweep
left after its first cycle, then writes the report of its sweep directory."""

import json
import math
import signal
from pathlib import Path

import pytest

from flywheel.cli import main
from flywheel.logger import read_cycles

pytestmark = pytest.mark.xdist_group("ray-sweep")

PNGS = ("capability_vs_cycle.png", "compounding_vs_fidelity.png", "relative_capability.png",
        "imagined_vs_realized.png")
# training sim -> (training sim as the report names it, reference sim); each runs on seeds 0 and 1
SIMS = {
    "knob-1.0": ("mujoco/reacher-twin", "mujoco/reacher-twin"),
    "learned-every-8": ("learned/mujoco/reacher-twin correct_every=8", "mujoco/reacher-twin"),
}
SEEDS = (0, 1)


def markdown_tables(md: str) -> list[list[dict[str, str]]]:
    """Every table of report.md, each as one {column: cell} per row."""
    tables, lines = [], md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---") and \
                not (i and lines[i - 1].startswith("|")):
            header = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, (c.strip() for c in row.strip("|").split("|")))))
            tables.append(rows)
    return tables


def test_the_smoke_sweep_runs_every_training_sim_and_seed_resumes_and_reports(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    # Stopped after its first cycle (as an interrupted sweep leaves it): the sweep below resumes it.
    assert main(["run", "experiment=fidelity_sweep_smoke", f"hydra.sweep.dir={sweep}", "training_sim=knob-1.0",
                 "seed=0", "cycles=1", "hydra.launcher.jobs=1"]) == 0  # in this process
    first = read_cycles(sweep / "knob-1.0-seed0")
    assert [r["cycle"] for r in first] == [0]
    capsys.readouterr()
    # In this process, one run after another (the suite's time): the launcher's parallel runs are
    # tests/hydra_plugins/test_flywheel_launcher.py's.
    assert main(["run", "experiment=fidelity_sweep_smoke", f"hydra.sweep.dir={sweep}", "hydra.launcher.jobs=1"]) == 0
    out = capsys.readouterr().out
    assert f"every run of the sweep is done: flywheel report {sweep}" in out
    assert read_cycles(sweep / "knob-1.0-seed0")[0] == first[0]  # resumed, cycle 0 not run again
    assert out.count("\nfitted ") == 1  # the learned runs share one world model, fitted by the first

    for name, (_, reference) in SIMS.items():  # one complete run directory per training sim and seed
        for seed in SEEDS:
            config = json.loads((sweep / f"{name}-seed{seed}" / "config.json").read_text())
            assert (config["reference"]["name"], config["name"], config["seed"]) == (reference, name, seed)
            assert [r["cycle"] for r in read_cycles(sweep / f"{name}-seed{seed}")] == [0, 1]
    learned = json.loads((sweep / "learned-every-8-seed0" / "config.json").read_text())["sim"]
    assert learned["checkpoint"] == str(sweep / "world-models" / "mujoco_reacher-twin")  # fitted for the sweep
    assert (sweep / "world-models" / "mujoco_reacher-twin" / "checkpoint.safetensors").is_file()

    groups = {"mujoco/reacher-twin": sweep / "report"}
    for reference, folder in groups.items():
        for png in PNGS:
            assert (folder / png).read_bytes().startswith(b"\x89PNG")
        md = (folder / "report.md").read_text()
        assert f"Reference sim: `{reference}`" in md
        runs, sims, (thesis,) = markdown_tables(md)[:3]
        ours = {n for n, (_, ref) in SIMS.items() if ref == reference}
        assert sorted(row["run"] for row in runs) == sorted(f"{n}-seed{s}" for n in ours for s in SEEDS)
        for row in runs:  # one row per training sim and seed, every number parses
            assert row["training sim"] == SIMS[row["run"].rsplit("-seed", 1)[0]][0] and row["cycles"] == "2/2"
            assert row["run"].endswith(f"-seed{row['seed']}")
            assert 0.0 <= float(row["measured fidelity"]) <= 1.0
            for column in ("capability start", "capability end"):
                assert 0.0 <= float(row[column]) <= 1.0
            assert math.isfinite(float(row["compounding rate (/cycle)"]))
            assert float(row["env steps"]) > 0 and float(row["wall s"]) > 0
        assert {row["training sim"] for row in sims} == ours and all(row["seeds"] == "0, 1" for row in sims)
        for row in sims:
            assert math.isfinite(float(row["compounding rate (/cycle), mean over seeds"]))
            low, high = (float(v) for v in row["95% interval"].split(" to "))
            assert low <= float(row["compounding rate (/cycle), mean over seeds"]) <= high
            assert math.isfinite(float(row["practice gap (training sim - reference)"]))
        assert int(thesis["runs"]) == 2 * len(ours)
        if reference == "mujoco/reacher-twin":  # two training sims at distinct fidelities: a test
            assert 0.0 < float(thesis["p (one-sided)"]) <= 1.0
            assert math.isfinite(float(thesis["slope (/cycle per unit fidelity)"]))
            assert "Thesis test, stated before the run" in md
    fidelity = {row["run"]: float(row["measured fidelity"]) for row in markdown_tables(
        (groups["mujoco/reacher-twin"] / "report.md").read_text())[0]}
    assert fidelity["knob-1.0-seed0"] == 1.0 and fidelity["learned-every-8-seed1"] < 1.0


def fake_runs(monkeypatch, outcome):
    """``flywheel.controller.run`` replaced: ``outcome(config, run_dir)`` per job; returns the configs seen."""
    import flywheel.controller

    seen = []

    def run(config, console=print):
        seen.append(config)
        run_dir = Path(config.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        outcome(config, run_dir)
        return run_dir

    monkeypatch.setattr(flywheel.controller, "run", run)
    return seen


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_run_stopped_by_a_signal_stops_the_sweep(tmp_path, monkeypatch, capsys, signum, code):
    from flywheel.controller import RunStopped

    def stopped(config, run_dir):  # no cycle completes, as after a stop in cycle 0
        raise RunStopped(run_dir, signum)

    seen = fake_runs(monkeypatch, stopped)
    rc = main(["run", "experiment=fidelity_sweep_smoke", f"hydra.sweep.dir={tmp_path}", "training_sim=knob-1.0,knob-0.5",
               "seed=0", "hydra.launcher.jobs=1"])  # in this process
    assert rc == code and [c.name for c in seen] == ["knob-1.0"]  # knob-0.5 never started
    assert "sweep stopped in" in capsys.readouterr().err


def test_a_sweep_exits_with_its_worst_runs_code(tmp_path, monkeypatch, capsys):
    from configs.errors import ConfigError

    def outcome(config, run_dir):
        if config.name == "knob-1.0":
            raise ConfigError("num_learners must be >= 1, got 0")
        (run_dir / "cycles.jsonl").write_text("".join(json.dumps({"cycle": c}) + "\n" for c in range(config.cycles)))

    monkeypatch.setattr("flywheel.commands.run.print_cycles", lambda *a, **k: None)
    seen = fake_runs(monkeypatch, outcome)
    rc = main(["run", "experiment=fidelity_sweep_smoke", f"hydra.sweep.dir={tmp_path}", "training_sim=knob-1.0,knob-0.5",
               "seed=0", "hydra.launcher.jobs=1"])  # in this process
    assert rc == 2 and [c.name for c in seen] == ["knob-1.0", "knob-0.5"]  # the failed run did not stop the next
    assert "num_learners must be >= 1" in capsys.readouterr().err
