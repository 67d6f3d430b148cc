"""``configs/experiment``: the fidelity sweeps compose, their runs differ only in the training sim
and seed, and the sweep learns with the run's own defaults (any other setting says why)."""

import re
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
# What a sweep's runs may differ in: which sim they practise in, against which reference, from
# which starter (each task has its own), on which seed, and so where they write.
PER_RUN = ("name", "sim", "reference", "run_dir", "pretrained", "seed")
SWEEP_FILE = Path(CONFIG_DIR) / "experiment" / "fidelity_sweep.yaml"
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
    assert len(str(cfg.hydra.sweeper.params.seed).split(",")) >= 2  # seeds give the rates their spread
    return {n: compose_run([f"experiment={experiment}", f"training_sim={n}"]) for n in names}


@pytest.mark.parametrize("experiment", ["fidelity_sweep", "fidelity_sweep_smoke"])
def test_a_sweeps_runs_share_agent_seeds_and_budgets(experiment):
    jobs = sweep_jobs(experiment)
    assert set(jobs) <= set(TRAINING_SIMS)
    shared = [{k: v for k, v in OmegaConf.to_container(cfg).items() if k not in PER_RUN} for cfg in jobs.values()]
    assert all(s == shared[0] for s in shared)
    for name, cfg in jobs.items():
        assert cfg.name == name  # the run directory is named after its training sim and seed
        assert OmegaConf.to_container(cfg)["run_dir"] == "${hydra:sweep.dir}/${name}-seed${seed}"
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
    cartpole = {c.sim.fidelity for c in jobs.values() if c.reference.name == "mujoco/cartpole-balance-twin"}
    assert len(cartpole) >= 2 and 1.0 in cartpole  # the second task: a control and a lying sim
    seeds = compose_run(["experiment=fidelity_sweep"], hydra=True).hydra.sweeper.params.seed.split(",")
    assert len(seeds) >= 3
    config = jobs["knob-1.0"]
    assert config.pretrained is None and config.cycles >= 10  # the default pretrained agent


def test_the_cartpole_runs_start_from_a_starter_pretrained_on_the_cartpole():
    from flywheel import pretrained
    from policies.pretrain.run import check

    preset = pretrained.preset_config(pretrained.SMALL_PRESET.with_name("small_cartpole.yaml"))
    check(preset)  # pretraining's own input checks pass

    for name in ("cartpole-knob-1.0", "cartpole-knob-0.2"):
        config = to_dataclass(compose_run(["experiment=fidelity_sweep", f"training_sim={name}", *DIRS]), RunConfig)
        assert Path(config.pretrained) == pretrained.checkpoint_of(preset)  # so a missing one is pretrained first
        assert config.sim.name in preset.data.sims  # and its prior data holds the task


def test_the_panda_starter_is_pretrained_on_the_panda_and_written_where_a_run_names_it():
    from flywheel import pretrained
    from policies.pretrain.run import check

    panda = pretrained.SMALL_PRESET.with_name("small_panda.yaml")
    preset = pretrained.preset_config(panda)
    check(preset)  # pretraining's own input checks pass
    assert preset.data.sims == ["pybullet/panda-lift"]
    assert pretrained.checkpoint_of(preset) == Path("runs/pretrain/small-panda/checkpoint")
    assert panda in pretrained.starter_presets()  # so a run naming it pretrains it first


def pinned(text: str) -> dict[str, str]:
    """Every key a YAML file sets, dotted (``eval.episodes``), with the comment on its line ("" if none)."""
    out, stack = {}, []
    for line in text.splitlines():
        match = re.match(r"^(\s*)([A-Za-z_][\w.-]*):(.*)$", line)
        if not match or line.lstrip().startswith("#"):
            continue
        indent, key, rest = len(match[1]), match[2], match[3]
        stack = [(i, k) for i, k in stack if i < indent] + [(indent, key)]
        value, _, comment = rest.partition(" #")
        out[".".join(k for _, k in stack)] = comment.strip()
    return out


def leaves(tree, prefix=""):
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    return {k: v for key, value in tree.items() for k, v in leaves(value, f"{prefix}{key}.").items()}


def unexplained(text: str, sweep: dict, defaults: dict) -> list[str]:
    """Settings of ``sweep`` that differ from ``defaults`` without a comment saying why on the line
    of ``text`` that sets them (or on a section above it); the per-run ones are the experiment."""
    comments, ours, theirs = pinned(text), leaves(sweep), leaves(defaults)
    bad = []
    for key in sorted(set(ours) | set(theirs)):
        if key.split(".")[0] in PER_RUN or ours.get(key) == theirs.get(key):
            continue
        parts = key.split(".")
        if not any(comments.get(".".join(parts[:n])) for n in range(1, len(parts) + 1)):
            bad.append(key)
    return bad


def test_the_sweep_learns_with_the_run_defaults_and_says_why_where_it_does_not():
    defaults = OmegaConf.to_container(compose_run([]))
    text = SWEEP_FILE.read_text()
    for name, cfg in sweep_jobs("fidelity_sweep").items():
        sweep = OmegaConf.to_container(cfg)
        assert unexplained(text, sweep, defaults) == [], f"training_sim={name}: pinned without a reason in {SWEEP_FILE}"
    # The budgets do differ, each with its reason; and a pin without one is caught.
    sweep = OmegaConf.to_container(sweep_jobs("fidelity_sweep")["knob-1.0"])
    assert {"cycles", "episodes_per_cycle", "eval.episodes"} <= {k for k, v in leaves(sweep).items()
                                                                 if leaves(defaults).get(k) != v}
    pin = {**sweep, "choose": "model", "learner": {**sweep["learner"], "steps": 40}}
    assert unexplained(text + "choose: model\nlearner:\n  steps: 40\n", pin, defaults) == ["choose", "learner.steps"]
    said = text + "choose: model  # the agent's own pick\nlearner:\n  steps: 40  # as the first sweep\n"
    assert unexplained(said, pin, defaults) == []


def test_the_smoke_sweep_has_the_control_and_the_learned_sim():
    jobs = {n: to_dataclass(compose_run(["experiment=fidelity_sweep_smoke", f"training_sim={n}", *DIRS]),
                            RunConfig) for n in sweep_jobs("fidelity_sweep_smoke")}
    sims = [(c.sim.name, c.sim.fidelity) for c in jobs.values() if c.reference.name == "mujoco/reacher-twin"]
    assert ("mujoco/reacher-twin", 1.0) in sims
    assert "learned/mujoco/reacher-twin" in {name for name, _ in sims}
    assert next(iter(jobs.values())).pretrained == "scratch"


def test_the_multitask_experiment_trains_two_bodies_from_a_starter_pretrained_on_both():
    from flywheel import pretrained
    from flywheel.controller import with_own_reference
    from policies.pretrain.run import check

    preset = pretrained.preset_config(pretrained.SMALL_PRESET.with_name("small_multitask.yaml"))
    check(preset)  # pretraining's own input checks pass
    config = with_own_reference(to_dataclass(compose_run(["experiment=multitask"]), RunConfig), console=lambda *a: None)
    validate(config)
    assert [t.sim.name for t in config.tasks] == ["mujoco/reacher-twin", "mujoco/cartpole-swingup-twin"]
    assert [t.reference.name for t in config.tasks] == [t.sim.name for t in config.tasks]  # each its own engine
    assert Path(config.pretrained) == pretrained.checkpoint_of(preset)  # so a missing one is pretrained first
    assert set(preset.data.sims) == {t.sim.name for t in config.tasks}  # its prior data holds both tasks
