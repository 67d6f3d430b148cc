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


def test_the_config_groups_help_lists_work(tmp_path, capsys, monkeypatch):
    """`flywheel run --help` lists the agent and sim groups: choosing one sets that section."""
    seen = []

    def ran(config, console=print):
        seen.append(config)
        return tmp_path

    monkeypatch.setattr("flywheel.controller.run", ran)
    main(["run", "agent=small", "sim=mujoco_reacher", "reference.name=mujoco/reacher"])
    (config,) = seen
    assert config.agent.size == "small" and config.sim.name == "mujoco/reacher"
    main(["run"])  # without them, the schema's defaults
    assert seen[-1].agent.size == "tiny" and seen[-1].sim.name == "mujoco/reacher-twin"
    with pytest.raises(SystemExit) as done:  # Hydra's --help exits
        main(["run", "--help"])
    assert done.value.code == 0
    groups = capsys.readouterr().out
    assert "agent: agent_schema, base, small, tiny" in groups and "mujoco_reacher, mujoco_reacher_twin" in groups


def test_sims_list_json_describes_every_sim(capsys):
    assert main(["sims", "list", "--json", "--tag", "mujoco"]) == 0
    listed = json.loads(capsys.readouterr().out)  # the whole of stdout is one document
    assert [s["name"] for s in listed] == sims.names(tag="mujoco")
    reacher = next(s for s in listed if s["name"] == "mujoco/reacher")
    embodiment = sims.make("mujoco/reacher").embodiment
    assert (reacher["proprio_dim"], reacher["action_dim"]) == (embodiment.proprio_dim, embodiment.action_dim)
    assert reacher["tags"] == list(sims.tags_of("mujoco/reacher")) and reacher["loads"] is True


def test_sims_list_is_plain_columns_when_piped(capsys):
    assert main(["sims", "list", "--tag", "twin"]) == 0  # capsys's stdout is not a terminal
    out = capsys.readouterr().out
    assert not set(out) & set("│┃─━┏┗┌└╇")
    header, *lines = out.splitlines()
    assert header.split("\t") == ["sim", "tags", "proprio", "action", "loads", "origin"]
    assert [line.split("\t")[0] for line in lines] == sims.names(tag="twin")


def test_a_plugin_that_cannot_load_is_listed_as_broken(install_plugin, example_plugin_src, capsys):
    install_plugin({"acme/slider": "acme_sims.slider:make_slider", "acme/ghost": "acme_gone.ghost:make_env"},
                   dist="acme_sims", extra_paths=(example_plugin_src,))
    assert main(["sims", "list", "--json", "--tag", "plugin"]) == 0
    listed = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
    assert listed["acme/slider"]["loads"] is True and listed["acme/slider"]["error"] is None
    ghost = listed["acme/ghost"]
    assert ghost["loads"] is False and ghost["proprio_dim"] is None
    assert "acme_gone" in ghost["error"] and "acme/ghost = acme_gone.ghost:make_env" in ghost["error"]
    assert main(["sims", "list", "--tag", "plugin"]) == 0
    ghost_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("acme/ghost\t"))
    assert "\tNO: SimPluginError" in ghost_line


def test_the_demonstrator_tour_skips_a_broken_plugin(install_plugin, example_plugin_src, tmp_path, capsys):
    install_plugin({"acme/slider": "acme_sims.slider:make_slider", "acme/ghost": "acme_gone.ghost:make_env"},
                   dist="acme_sims", extra_paths=(example_plugin_src,))
    out_file = tmp_path / "rows.json"
    rc = main(["sims", "rollout", "tags=[plugin]", "episodes=1", "camera=false", f"json_out={out_file}"])
    assert rc == 0
    assert [r["sim"] for r in json.loads(out_file.read_text())] == ["acme/slider"]
    assert "skipping acme/ghost" in " ".join(capsys.readouterr().out.split())
    # Named on its own, the broken plug-in is an error, not a skip.
    assert main(["sims", "rollout", "sim=mujoco_reacher", "sim.name=acme/ghost", "camera=false"]) == 2
    assert "acme/ghost" in capsys.readouterr().err


def test_a_plugin_ships_its_own_sim_config_on_hydras_search_path(example_plugin_src, capsys):
    """docs/adding-a-simulator.md: the plug-in's package holds configs/sim options; one override finds them."""
    assert (example_plugin_src / "acme_sims" / "conf" / "sim" / "acme_slider.yaml").is_file()
    assert main(["run", "hydra.searchpath=[pkg://acme_sims.conf]", "sim=acme_slider", "sim.fidelity=0.8",
                 "--cfg", "job", "--package", "sim"]) == 0
    out = capsys.readouterr().out
    assert "name: acme/slider" in out and "fidelity: 0.8" in out and "max_episode_steps: 150" in out
