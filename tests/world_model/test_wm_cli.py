"""``flywheel world-model fit`` and ``flywheel fidelity`` as a user runs them."""

import json

import pytest

import sims
import world_model as wm
from flywheel.cli import main
from flywheel.commands.fidelity import parse_spec

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fitted_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "wm"
    rc = main(["world-model", "fit", "sim=dmc_point_mass_easy", f"out={out}", "collect.steps=400", "train.steps=30",
               "model.hidden=16", "model.ensemble=2", "report.probes=2", "report.horizon=10",
               "report.correct_every=[never,1]"])
    assert rc == 0
    return out


def test_fit_writes_a_loadable_checkpoint_and_its_fidelity_report(fitted_dir, capsys):
    assert {p.name for p in fitted_dir.iterdir()} >= {"checkpoint.safetensors", "config.json", "fidelity.json",
                                                       "fidelity.png"}
    assert not [p for p in fitted_dir.iterdir() if p.name.endswith(".tmp")]
    report = json.loads((fitted_dir / "fidelity.json").read_text())
    assert report["sim"] == "dmc/point_mass-easy" and report["transitions"] == 400
    by_k = {row["correct_every"]: row["fidelity"] for row in report["fidelity"]}
    assert by_k["1"] == 1.0 and 0.0 <= by_k["never"] <= 1.0
    assert set(report["prediction_error"]) == {"1_step", "10_step"}
    assert (fitted_dir / "fidelity.png").read_bytes()[:8] == PNG
    assert wm.load_checkpoint(fitted_dir, reference="dmc/point_mass-easy").ensemble == 2
    sims.make("learned/dmc/point_mass-easy", checkpoint=str(fitted_dir)).reset(seed=0)


def test_fidelity_prints_the_table_and_draws_every_candidate(fitted_dir, tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(["fidelity", "--reference", "dmc/point_mass-easy",
               "--candidate", "dmc/point_mass-easy:fidelity=0.5",
               "--candidate", f"learned/dmc/point_mass-easy:checkpoint={fitted_dir},correct_every=4",
               "--candidate", "dmc/point_mass-easy:params.mass_scale=1.5",
               "probes=2", "horizon=12", f"out={out}"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Fidelity against dmc/point_mass-easy" in printed
    report = json.loads((out / "fidelity.json").read_text())
    assert [r["sim"] for r in report["candidates"]] == ["dmc/point_mass-easy", "learned/dmc/point_mass-easy",
                                                        "dmc/point_mass-easy"]
    assert all(0.0 <= r["fidelity"] <= 1.0 and len(r["curve"]) == 12 for r in report["candidates"])
    assert (out / "fidelity.png").read_bytes()[:8] == PNG


def test_candidate_specs_parse_into_make_keywords():
    assert parse_spec("a/b") == ("a/b", {})
    assert parse_spec("learned/a/b:checkpoint=/x/y,correct_every=never,fidelity=0.5,params.mass_scale=2") == (
        "learned/a/b", {"checkpoint": "/x/y", "correct_every": "never", "fidelity": 0.5, "params": {"mass_scale": 2}})
    with pytest.raises(ValueError, match="expected key=value"):
        parse_spec("a/b:fidelity")


def test_bad_input_is_one_clear_line_and_exit_code_2(tmp_path, capsys):
    assert main(["fidelity", "--reference", "dmc/point_mass-easy", "--candidate", "nope/nothing",
                 f"out={tmp_path}"]) == 2
    assert "unknown sim 'nope/nothing'" in capsys.readouterr().err
    assert main(["fidelity", "--reference", "dmc/point_mass-easy", "--candidate", "mujoco/reacher",
                 "probes=1", "horizon=5", f"out={tmp_path}"]) == 2
    assert "cannot start candidate 'mujoco/reacher'" in capsys.readouterr().err
    assert main(["fidelity", "--reference", "dmc/point_mass-easy", "--candidate",
                 f"learned/dmc/point_mass-easy:checkpoint={tmp_path / 'none'}", "probes=1", "horizon=5",
                 f"out={tmp_path}"]) == 2
    assert "no world-model checkpoint" in capsys.readouterr().err
    assert main(["fidelity", "--reference", "dmc/point_mass-easy", f"out={tmp_path}"]) == 2
    assert "name at least one candidate" in capsys.readouterr().err
    assert main(["world-model", "fit", "sim.name=nope/nothing", f"out={tmp_path}"]) == 2
    assert "unknown sim 'nope/nothing'" in capsys.readouterr().err
    assert main(["world-model", "fit", "model.ensemble=1", f"out={tmp_path}"]) == 2
    assert "ensemble needs at least 2" in capsys.readouterr().err
    assert main(["world-model", "frobnicate"]) == 2
