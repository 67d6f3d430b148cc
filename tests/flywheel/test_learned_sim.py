"""A learned training sim in ``flywheel run``: its config is checked up front, and its world
model is fitted once when missing, then reused (no Ray here; test_sweep.py runs one)."""

import dataclasses

import pytest

from configs.errors import ConfigError
from configs.run_schema import LearnedSimConfig, RunConfig
from configs.schema import SimConfig
from flywheel.controller import validate
from flywheel.objective import embodiment_of
from flywheel.learned_sim import with_world_models

REF = "mujoco/reacher-twin"


def config(sim: SimConfig, root) -> RunConfig:
    recipe = LearnedSimConfig(root=str(root))
    recipe.collect.steps, recipe.train.steps = 100, 5
    recipe.report.probes, recipe.report.horizon, recipe.report.correct_every = 1, 5, ["never"]
    return RunConfig(sim=sim, reference=SimConfig(name=REF), world_model=recipe)


@pytest.mark.parametrize("sim,field,message", [
    (SimConfig(name=f"learned/{REF}"), "sim.correct_every", "a positive int"),
    (SimConfig(name=f"learned/{REF}", correct_every="sometimes"), "sim.correct_every", "'sometimes'"),
    (SimConfig(name=f"learned/{REF}", correct_every="0"), "sim.correct_every", "positive int"),
    (SimConfig(name=REF, correct_every="8"), "sim.correct_every=8", "only a learned sim"),
    (SimConfig(name=REF, checkpoint="runs/wm"), "sim.checkpoint=runs/wm", "only a learned sim"),
])
def test_learned_sim_settings_are_config_errors_naming_the_field(tmp_path, sim, field, message):
    with pytest.raises(ConfigError, match=rf"{field.replace('.', '[.]')}.*{message}"):
        validate(config(sim, tmp_path))


def test_a_missing_world_model_is_fitted_once_then_reused(tmp_path):
    sim = SimConfig(name=f"learned/{REF}", correct_every="8")
    said = []
    first = with_world_models(config(sim, tmp_path), console=said.append)
    path = tmp_path / REF.replace("/", "_")
    assert first.sim.checkpoint == str(path) and (path / "checkpoint.safetensors").is_file()
    assert "no world model at" in said[0] and "fitting one" in said[0]
    said.clear()
    again = with_world_models(config(sim, tmp_path), console=said.append)
    assert again.sim.checkpoint == str(path) and not any("fitting" in line for line in said)
    # Made from the config, it is the learned sim corrected every 8 steps by the engine.
    env = __import__("sims").make(again.sim.name, **again.sim.make_kwargs())
    assert env.correct_every == 8 and env.embodiment.action_dim == 2
    env.close()


def test_a_world_model_of_another_sim_is_a_config_error(tmp_path):
    with_world_models(config(SimConfig(name=f"learned/{REF}", correct_every="1"), tmp_path), console=lambda _: None)
    elsewhere = str(tmp_path / REF.replace("/", "_"))
    sim = SimConfig(name="learned/pybullet/reacher", correct_every="1", checkpoint=elsewhere)
    with pytest.raises(ConfigError, match=r"sim\.checkpoint=.*fitted on sim 'mujoco/reacher-twin'"):
        with_world_models(config(sim, tmp_path), console=lambda _: None)


def test_an_engine_sim_config_is_unchanged(tmp_path):
    base = config(SimConfig(name=REF, fidelity=0.5), tmp_path)
    assert with_world_models(base, console=lambda _: None) == base
    # Unset, these are left to sims.make's defaults (image_size: the sim's own, 64).
    assert dataclasses.asdict(base.sim).keys() - base.sim.make_kwargs().keys() == {"name", "checkpoint",
                                                                                     "correct_every", "params",
                                                                                     "image_size"}


def test_learners_see_a_learned_sims_body_as_its_engines():
    assert embodiment_of(f"learned/{REF}") == embodiment_of(REF)
