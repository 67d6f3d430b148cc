"""Smoke tests of the real entry point, as a user runs it."""

import json
import subprocess
import sys

import pytest

import sims
from flywheel.cli import main


def test_sims_list_prints_every_registered_sim(capsys):
    assert main(["sims", "list"]) == 0
    out = capsys.readouterr().out
    for name in sims.names():
        assert name in out


def test_rollout_of_one_configured_sim_writes_its_row(tmp_path, capsys):
    out_file = tmp_path / "rows.json"
    rc = main(["sims", "rollout", "sim=mujoco_reacher", "sim.fidelity=0.9", "episodes=3", "camera=false",
               f"json_out={out_file}"])
    assert rc == 0
    rows = json.loads(out_file.read_text())
    assert [r["sim"] for r in rows] == ["mujoco/reacher"]
    assert rows[0]["demo_episodes"] == 3 and 0.0 <= rows[0]["demo_success"] <= 1.0
    assert rows[0]["steps_per_second"] > 0
    assert rows[0]["proprio_shape"] == [sims.make("mujoco/reacher").embodiment.proprio_dim]
    assert "mujoco/reacher" in capsys.readouterr().out


def test_bad_input_is_one_clear_line_and_exit_code_2(capsys):
    assert main(["sims", "rollout", "sim=mujoco_reacher", "sim.fidelity=1.5"]) == 2
    assert "fidelity must be in [0, 1], got 1.5" in capsys.readouterr().err
    assert main(["sims", "check", "mujoco/nope"]) == 2
    assert "unknown sim 'mujoco/nope'" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2


def test_check_reports_and_sets_the_exit_code(capsys):
    assert main(["sims", "check", "mujoco/reacher", "--only", "seeding,actions"]) == 0
    out = capsys.readouterr().out
    assert "seeding" in out and "pass" in out and "all checks passed" in out


def test_console_script_is_installed():
    bin_dir = __import__("pathlib").Path(sys.executable).parent
    done = subprocess.run([str(bin_dir / "flywheel"), "sims", "list", "--tag", "mujoco"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "mujoco/reacher" in done.stdout


def test_twins_prints_drift_and_draws_it(tmp_path, capsys):
    png = tmp_path / "drift.png"
    assert main(["sims", "twins", "--pairs", "reacher", "--probes", "2", "--horizon", "30", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "reacher" in out and "apart at" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_help_is_flywheels(capsys):
    with pytest.raises(SystemExit) as exit_:  # Hydra's --help exits itself
        main(["run", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("flywheel run is powered by Hydra") and "cycles: 3" in out


def test_an_unknown_setting_added_with_plus_is_an_error_naming_it(capsys, monkeypatch):
    def ran(config, console=print):
        raise AssertionError("the run started despite an unknown setting")

    monkeypatch.setattr("flywheel.controller.run", ran)  # it must fail in the config's conversion
    assert main(["run", "+cycels=5"]) == 2
    assert "RunConfig has no setting cycels (did you mean cycles?)" in capsys.readouterr().err
    assert main(["run", "+learner.lrr=0.1", "cycles=1"]) == 2
    assert "learner.lrr (did you mean learner.lr?)" in capsys.readouterr().err
