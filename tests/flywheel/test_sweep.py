"""The fidelity sweep end to end: ``flywheel run experiment=fidelity_sweep_smoke`` runs every
training sim (two knobs, the PyBullet twin, the learned simulator, and the MuJoCo twin against
the PyBullet reference) on an embedded Ray, then writes the report of its sweep directory."""

import json
import math
import signal
from pathlib import Path

import pytest

from flywheel.cli import main
from flywheel.logger import read_cycles

pytestmark = pytest.mark.xdist_group("ray")

PNGS = ("capability_vs_cycle.png", "compounding_vs_fidelity.png", "imagined_vs_realized.png")
# run directory -> (training sim as the report names it, reference sim)
RUNS = {
    "knob-1.0": ("mujoco/reacher-twin", "mujoco/reacher-twin"),
    "knob-0.5": ("mujoco/reacher-twin", "mujoco/reacher-twin"),
    "pybullet-twin": ("pybullet/reacher", "mujoco/reacher-twin"),
    "learned-every-8": ("learned/mujoco/reacher-twin correct_every=8", "mujoco/reacher-twin"),
    "ref-pybullet-mujoco-twin": ("mujoco/reacher-twin", "pybullet/reacher"),
}


def report_table(md: str) -> dict[str, dict[str, str]]:
    """report.md's first table as {run: {column: cell}}."""
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header):
            break
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def test_the_smoke_sweep_runs_every_training_sim_and_reports_each_reference(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    assert main(["run", "experiment=fidelity_sweep_smoke", f"hydra.sweep.dir={sweep}"]) == 0
    out = capsys.readouterr().out
    assert f"every run of the sweep is done: flywheel report {sweep}" in out

    for name, (_, reference) in RUNS.items():  # one complete run directory per training sim
        config = json.loads((sweep / name / "config.json").read_text())
        assert config["reference"]["name"] == reference and config["name"] == name
        assert [r["cycle"] for r in read_cycles(sweep / name)] == [0, 1]
    learned = json.loads((sweep / "learned-every-8" / "config.json").read_text())["sim"]
    assert learned["checkpoint"] == str(sweep / "world-models" / "mujoco_reacher-twin")  # fitted for the sweep
    assert (sweep / "world-models" / "mujoco_reacher-twin" / "checkpoint.safetensors").is_file()

    groups = {"mujoco/reacher-twin": sweep / "report", "pybullet/reacher": sweep / "report" / "reference-pybullet_reacher"}
    for reference, folder in groups.items():
        for png in PNGS:
            assert (folder / png).read_bytes().startswith(b"\x89PNG")
        md = (folder / "report.md").read_text()
        assert f"Reference sim: `{reference}`" in md
        rows = report_table(md)
        assert set(rows) == {n for n, (_, ref) in RUNS.items() if ref == reference}  # one row per training sim
        for name, row in rows.items():
            assert row["training sim"] == RUNS[name][0] and row["cycles"] == "2/2"
            assert 0.0 <= float(row["measured fidelity"]) <= 1.0
            for column in ("capability start", "capability end"):
                assert 0.0 <= float(row[column]) <= 1.0
            assert math.isfinite(float(row["compounding rate (/cycle)"]))
            assert float(row["env steps"]) > 0 and float(row["wall s"]) > 0
    main_rows = report_table((groups["mujoco/reacher-twin"] / "report.md").read_text())
    assert float(main_rows["knob-1.0"]["measured fidelity"]) == 1.0
    assert float(main_rows["knob-0.5"]["measured fidelity"]) < 0.5
    assert float(main_rows["pybullet-twin"]["measured fidelity"]) > 0.9  # twins agree closely on the probe set
    assert "([report](reference-pybullet_reacher/report.md))" in (sweep / "report" / "report.md").read_text()


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
    rc = main(["run", "experiment=fidelity_sweep_smoke", f"hydra.sweep.dir={tmp_path}", "training_sim=knob-1.0,knob-0.5"])
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
    rc = main(["run", "experiment=fidelity_sweep_smoke", f"hydra.sweep.dir={tmp_path}", "training_sim=knob-1.0,knob-0.5"])
    assert rc == 2 and [c.name for c in seen] == ["knob-1.0", "knob-0.5"]  # the failed run did not stop the next
    assert "num_learners must be >= 1" in capsys.readouterr().err
