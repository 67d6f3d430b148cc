"""``configs/experiment``: the fidelity sweeps compose, and their runs differ only in the training sim."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import configs.run_schema  # noqa: F401  (registers the schema)
from configs import CONFIG_DIR
from configs.run_schema import RunConfig
from configs.schema import to_dataclass
from flywheel.controller import validate

TRAINING_SIMS = sorted(p.stem for p in (Path(CONFIG_DIR) / "training_sim").glob("*.yaml"))
# What a sweep's runs may differ in: which sim they practise in, against which reference, and so
# where they write.
PER_RUN = ("name", "sim", "reference", "run_dir")
# The sweep's directories come from Hydra's sweep.dir, unset outside a Hydra run.
DIRS = ["run_dir=run", "world_model.root=world-models"]


def compose_run(overrides, hydra=False):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="run", overrides=overrides, return_hydra_config=hydra)


def sweep_jobs(experiment):
    """The training sims a sweep runs, and each job's config (run_dir left unresolved)."""
    cfg = compose_run([f"experiment={experiment}"], hydra=True)
    assert cfg.hydra.mode.name == "MULTIRUN"  # no -m needed
    names = cfg.hydra.sweeper.params.training_sim.split(",")
    return {n: compose_run([f"experiment={experiment}", f"training_sim={n}"]) for n in names}


@pytest.mark.parametrize("experiment", ["fidelity_sweep", "fidelity_sweep_smoke"])
def test_a_sweeps_runs_share_agent_seeds_and_budgets(experiment):
    jobs = sweep_jobs(experiment)
    assert set(jobs) <= set(TRAINING_SIMS)
    shared = [{k: v for k, v in OmegaConf.to_container(cfg).items() if k not in PER_RUN} for cfg in jobs.values()]
    assert all(s == shared[0] for s in shared)
    for name, cfg in jobs.items():
        assert cfg.name == name  # the run directory is named after its training sim
        assert OmegaConf.to_container(cfg)["run_dir"] == "${hydra:sweep.dir}/${name}"
        assert cfg.if_exists == "resume"  # the same command again finishes an interrupted sweep
        validate(to_dataclass(compose_run([f"experiment={experiment}", f"training_sim={name}", *DIRS]), RunConfig))


def test_the_default_sweep_covers_the_issue_and_fits_the_budget():
    jobs = {n: to_dataclass(compose_run(["experiment=fidelity_sweep", f"training_sim={n}", *DIRS]), RunConfig)
            for n in sweep_jobs("fidelity_sweep")}
    main = [c for c in jobs.values() if c.reference.name == "mujoco/reacher-twin"]
    assert sorted(c.sim.fidelity for c in main if c.sim.name == "mujoco/reacher-twin") == [0.2, 0.5, 0.8, 1.0]
    assert sorted(c.sim.correct_every for c in main if c.sim.name.startswith("learned/")) == ["1", "8", "never"]
    assert any(c.sim.name == "pybullet/reacher" for c in main)
    reverse = {c.sim.name for c in jobs.values() if c.reference.name == "pybullet/reacher"}
    assert reverse == {"pybullet/reacher", "mujoco/reacher-twin"}  # the other way round, with its own control
    config = next(iter(jobs.values()))
    assert config.pretrained is None and config.cycles >= 4  # the default pretrained agent
    assert config.eval.episodes >= 30


def test_the_smoke_sweep_has_two_knobs_the_twin_and_the_learned_sim():
    jobs = {n: to_dataclass(compose_run(["experiment=fidelity_sweep_smoke", f"training_sim={n}", *DIRS]),
                            RunConfig) for n in sweep_jobs("fidelity_sweep_smoke")}
    sims = [(c.sim.name, c.sim.fidelity) for c in jobs.values() if c.reference.name == "mujoco/reacher-twin"]
    assert len({f for name, f in sims if name == "mujoco/reacher-twin"}) >= 2
    assert {"pybullet/reacher", "learned/mujoco/reacher-twin"} <= {name for name, _ in sims}
    assert next(iter(jobs.values())).pretrained == "scratch"
