"""Typed schema of ``flywheel run`` (registered in Hydra's ConfigStore as ``run_schema``).

The defaults are the README's main job: a few cycles of the default task, the reacher, on
a laptop with an embedded Ray; every number here scales up by configuration alone
(``ray.address=auto num_rollout_workers=64 rollout_resources.num_gpus=0.25 ...``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore

from configs.learning import GradeConfig, ObjectiveConfig
from configs.errors import ConfigError
from configs.schema import WORLD_MODEL_ROOT, AgentConfig, SimConfig, WorldModelRecipe


@dataclass
class RayConfig:
    # None: join the cluster in RAY_ADDRESS when set (``ray job submit`` sets it), else start an
    # embedded local Ray; "auto" or host:port: join that cluster; "local": embedded, always.
    address: Optional[str] = None
    num_cpus: Optional[int] = None  # embedded Ray only; None = every core
    # How long the run waits for the cluster to make room for every actor at once before it fails
    # naming them (``flywheel.cluster.reserve``); an autoscaler adding nodes needs minutes.
    reserve_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        # ray.init(num_cpus=0) starts a Ray no actor fits in; it would wait for CPUs forever.
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError(f"ray.num_cpus must be >= 1 (or unset: every core), got {self.num_cpus}")
        if not 0 < self.reserve_timeout_s < math.inf:
            raise ConfigError(f"ray.reserve_timeout_s must be > 0, got {self.reserve_timeout_s}")


@dataclass
class Resources:
    """What one actor reserves on its node, as Ray's ``.options()`` take it
    (``flywheel.cluster.ray_options``); each is checked against every node before the run starts."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: Optional[float] = None  # bytes of Ray's "memory" resource; None: none reserved
    accelerator_type: Optional[str] = None  # a GPU model Ray detects on a node, e.g. "A100"
    resources: dict[str, float] = field(default_factory=dict)  # custom resources of ``ray start --resources``

    def check(self, section: str) -> None:
        for name in ("num_cpus", "num_gpus", "memory"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < math.inf:  # NaN fails too
                raise ConfigError(f"{section}.{name} must be >= 0, got {value}")
        if self.accelerator_type is not None and not str(self.accelerator_type).strip():
            raise ConfigError(f"{section}.accelerator_type must name a GPU model (or be unset), got "
                              f"{self.accelerator_type!r}")
        for name, value in self.resources.items():
            if name in RAY_BUILTIN_RESOURCES:  # Ray refuses these in resources=
                raise ConfigError(f"{section}.resources.{name}: set it with {RAY_BUILTIN_RESOURCES[name]}, "
                                  "not as a custom resource")
            if not 0 <= value < math.inf:
                raise ConfigError(f"{section}.resources.{name} must be >= 0, got {value}")


# Ray's own resources, which ``Resources.resources`` may not name, and the field that sets each.
RAY_BUILTIN_RESOURCES = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory",
                         "object_store_memory": "nothing here (Ray sizes the object store)"}


def _half_cpu() -> "Resources":
    # Two rollout workers and a learner fit an embedded Ray on a 2-core laptop: rollouts and
    # learning take turns, so the reservations may overlap the cores.
    return Resources(num_cpus=0.5)


@dataclass
class LearnerConfig(ObjectiveConfig):
    """The learners: the objective's knobs (``configs.learning.ObjectiveConfig``: advantage, act_on,
    temperature, max_weight, return_coef) and the optimiser's."""

    # Optimizer steps per env step of the cycle's rollouts (SAC's is 1): a cycle takes
    # ceil(utd * its env steps) steps, 1,600 for the default run's 3,200 env steps. Over 2 seeds
    # (docs/rl-core.md): 0.0625 did not improve in 8 cycles; 0.25 reached 0.41 success by 19,200
    # env steps, 0.5 with half the prior batch 0.55 (return -15.8 against -19.3).
    utd: float = 0.5
    steps: Optional[int] = None  # optimizer steps per cycle, fixed; set, it wins over utd (tests, tiny runs)
    batch_size: int = 32  # global batch (chunks), split across learners
    lr: float = 3e-4
    weight_decay: float = 0.01
    train_experts: list[str] = field(default_factory=lambda: ["video", "action"])
    max_retries: int = 2  # a learner that dies restarts the cycle's training this many times
    # Weight of the starter's own pretraining data in every step (``flywheel.prior``: RLPD's prior
    # data, a batch of it beside each flywheel batch); 0 trains on the flywheel's rows alone, and
    # so does a start without such data (scratch). Measured in docs/rl-core.md, "Prior data".
    prior_coef: float = 1.0
    # Prior examples per pretraining stage in each step (None: as many as the flywheel's batch).
    # 16 over two stages is RLPD's symmetric 50/50 and a step at 0.75x the time of 32 a stage,
    # which learned more per step but does not fit `make run` at utd 0.5 (docs/rl-core.md).
    prior_batch_size: Optional[int] = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("steps", "batch_size", "prior_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"learner.{name} must be >= 1, got {getattr(self, name)}")
        if isinstance(self.utd, bool) or not isinstance(self.utd, (int, float)) or not 0 < self.utd < math.inf:
            raise ConfigError(f"learner.utd must be > 0 (optimizer steps per env step), got {self.utd!r}")
        # Caught here, not by the optimizer inside the learner actors, where it cost a rollout
        # phase and three retries before it surfaced.
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < math.inf:
            raise ConfigError(f"learner.lr must be > 0, got {self.lr!r}")
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not 0 <= wd < math.inf:
            raise ConfigError(f"learner.weight_decay must be a finite number >= 0, got {wd!r}")
        pc = self.prior_coef
        if isinstance(pc, bool) or not isinstance(pc, (int, float)) or not 0 <= pc < math.inf:
            raise ConfigError(f"learner.prior_coef must be a finite number >= 0, got {pc!r}")

    def steps_for(self, env_steps: int) -> int:
        """Optimizer steps for a cycle of ``env_steps``: ``steps`` when set, else ceil(utd * env_steps)
        (at least 1). The 1e-9 keeps a float product like 0.1 * 30 = 3.0000000000000004 at 3."""
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.utd * env_steps - 1e-9))


@dataclass
class EvalConfig:
    # Enough to tell cycles apart: at a success rate of 0.2 the standard error is 0.05 (at 8
    # episodes it was 0.14). About 0.3 s an episode on 2 cores for the small starter, so ~20 s
    # of each cycle (README, "make run").
    episodes: int = 64
    seed: int = 1_000_000  # fixed evaluation seeds: seed, seed + 1, ...
    planning: bool = True
    # One imagined future, acted on: choosing among 4 or 16 by the agent's own return head added
    # nothing over one (README, "Flywheel throughput and capability"), and 4 took 1.5 times as
    # long to evaluate. With learner.ranker=true (a scorer that ranks: +2.4 return over 4, docs/
    # rl-core.md "A ranker for planning") set 4 or 16. None: the rollouts'.
    n_candidates: Optional[int] = 1

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"eval.episodes must be >= 1, got {self.episodes}")
        if self.n_candidates is not None and self.n_candidates < 1:
            raise ConfigError(f"eval.n_candidates must be >= 1 (or unset), got {self.n_candidates}")


@dataclass
class LearnedSimConfig(WorldModelRecipe):
    """The world model of a learned sim (``learned/<engine sim>``, as ``sim`` or ``reference``).

    Its checkpoint is ``sim.checkpoint``, or ``world_model_dir(<engine sim>, root)`` when that is
    unset; when there is no checkpoint there yet, the run fits one first with this recipe (what
    ``flywheel world-model fit`` does; about 10 s for the reacher at the defaults), and later runs
    reuse it.

    ``refit``: after each cycle's rollouts, the training sim's world model is fine-tuned on the
    engine's transitions behind them (``flywheel.refit``), written into the run directory, and
    practised in by the next cycle; its fidelity is measured again and recorded per cycle.
    """

    root: str = WORLD_MODEL_ROOT
    refit: bool = False  # learned training sims only
    refit_steps: int = 200  # optimizer steps per refit, at the recipe's batch, lr and horizon

    def __post_init__(self) -> None:
        steps = self.refit_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"world_model.refit_steps must be an int >= 1, got {steps!r}")


IF_EXISTS = ("error", "resume")


@dataclass
class TaskConfig:
    """One task of a multi-task run (``RunConfig.tasks``): a training sim, the reference its
    capability is measured in, and its share of the rollouts and of the replay's draws."""

    sim: SimConfig = field(default_factory=SimConfig)
    # None: the training sim's own engine at fidelity 1 and the same episode length (a learned
    # sim's: the engine it learned), filled in as the run starts (``flywheel.controller.with_own_reference``).
    reference: Optional[SimConfig] = None
    weight: float = 1.0

    def check(self, entry: str) -> None:
        """The task's own fields; ``entry`` names it (``tasks[1]``). What needs the sim registry
        is ``flywheel.controller.validate``'s."""
        if self.sim.name == "???":
            raise ConfigError(f"{entry}.sim.name: every task names its training sim, e.g. "
                              f"{{sim: {{name: mujoco/reacher-twin}}}}")
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < math.inf:
            raise ConfigError(f"{entry}.weight must be a finite number >= 0, got {w!r}")
        for section in ("sim", "reference"):
            steps = getattr(getattr(self, section), "max_episode_steps", None)
            if steps is not None and steps < 1:
                raise ConfigError(f"{entry}.{section}.max_episode_steps must be >= 1 (or unset: the task's "
                                  f"default), got {steps}")


@dataclass
class RunConfig:
    name: str = "default"
    run_dir: Optional[str] = None  # default runs/flywheel/<name>
    resume: Optional[str] = None  # a run directory to continue from its last complete cycle
    # A new run whose directory already holds a run: "error" names it (the default directory,
    # name and run_dir both unset, gets a fresh timestamped sibling instead); "resume" continues
    # it, as resume= does (the fidelity sweep's, so that re-running the sweep resumes it).
    if_exists: str = "error"
    cycles: int = 3
    seed: int = 0
    sim: SimConfig = field(default_factory=lambda: SimConfig(name="mujoco/reacher-twin"))  # training sim
    reference: SimConfig = field(default_factory=lambda: SimConfig(name="mujoco/reacher-twin"))
    agent: AgentConfig = field(default_factory=AgentConfig)
    # Frames in the loop: the agent perceives the camera frame of every chunk in the training sim and
    # the reference, at its own image_size, and the store keeps them (``flywheel.rollout``). Off: on 2
    # cores a frame costs more than the rest of an env step (README, "Frames in the loop").
    camera: bool = False
    pretrained: Optional[str] = None  # checkpoint dir; None = runs/pretrain/default/checkpoint, pretrained if missing
    num_rollout_workers: int = 2
    envs_per_worker: int = 4
    episodes_per_cycle: int = 16
    planning: bool = True
    n_candidates: int = 16
    # Which candidate a rollout runs: "sim", the one that earns the most reward when the training
    # sim runs every candidate from the current state (the engine judges the imagination, and the
    # learners distill its choice); "model", the agent's own best score. Evaluation always uses the
    # agent's own: no sim at test time.
    choose: str = "sim"
    # With choose=sim: chunks the policy acts past each candidate, in the sim, before they are
    # ranked (0: by their own chunk). A chunk's reward alone cannot see a swing-up's pumping;
    # each chunk here costs n_candidates more chunks of engine steps (``flywheel.rollout``).
    lookahead_chunks: int = 0
    flow_steps: Optional[int] = None
    rollout_resources: Resources = field(default_factory=_half_cpu)
    num_learners: int = 1
    learner_resources: Resources = field(default_factory=Resources)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    # The replay the learners sample from: every cycle so far (None) or the last K.
    replay_cycles: Optional[int] = None
    eval: EvalConfig = field(default_factory=EvalConfig)
    grade: GradeConfig = field(default_factory=GradeConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    world_model: LearnedSimConfig = field(default_factory=LearnedSimConfig)  # learned sims only
    # Several training sims in one run (``task_list``): empty, the run's one task is ``sim`` in
    # ``reference``. Set, ``sim`` and ``reference`` are the first task's (kept for what reads one
    # sim: the starter's prior data, the report's labels). From the command line, a Hydra list:
    # tasks='[{sim:{name:mujoco/reacher-twin}},{sim:{name:mujoco/cartpole-swingup-twin},weight:0.5}]'
    tasks: list[TaskConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        """The run's own counts, checked where the config is built (``to_dataclass``, before Ray
        starts); what needs a sim or Ray is ``flywheel.controller.validate``'s."""
        for name in ("cycles", "num_rollout_workers", "envs_per_worker", "episodes_per_cycle", "num_learners"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.if_exists not in IF_EXISTS:
            raise ConfigError(f"if_exists must be one of {', '.join(IF_EXISTS)}, got {self.if_exists!r}")
        if self.replay_cycles is not None and self.replay_cycles < 1:
            raise ConfigError(f"replay_cycles must be >= 1 (or unset: every cycle), got {self.replay_cycles}")
        if self.episodes_per_cycle < self.num_rollout_workers:
            raise ConfigError(f"episodes_per_cycle={self.episodes_per_cycle} is shared among the rollout workers, so "
                              f"it must be >= num_rollout_workers={self.num_rollout_workers}")
        self._check_resources_and_episode_steps()
        self._check_tasks()
        if self.learner.batch_size < self.num_learners:
            raise ConfigError(f"learner.batch_size={self.learner.batch_size} is split across the learners, so it "
                              f"must be >= num_learners={self.num_learners}")
        if self.learner.act_on == "imagined" and not self.planning:
            raise ConfigError("learner.act_on=imagined trains on the plans rollouts imagined, so it needs planning=true")
        for knob, on in (("candidate_samples", self.learner.candidate_samples), ("ranker", self.learner.ranker)):
            if on and not (self.planning and self.choose == "sim"):
                raise ConfigError(f"learner.{knob}={str(on).lower()} learns from the candidates the training sim ran, so it needs "
                                  f"planning=true and choose=sim (got planning={self.planning}, choose={self.choose})")

    def task_list(self) -> list[TaskConfig]:
        """The run's tasks: ``tasks``, or the one of ``sim`` in ``reference`` (weight 1)."""
        return list(self.tasks) or [TaskConfig(self.sim, self.reference, 1.0)]

    def _check_tasks(self) -> None:
        """Each task's fields, its sim unique, weights summing to a positive number; ``sim`` and
        ``reference`` left at their defaults (or already the first task's: a stored config)."""
        if not self.tasks:
            return
        for i, task in enumerate(self.tasks):
            task.check(f"tasks[{i}]")
        names = [task.sim.name for task in self.tasks]
        for i, name in enumerate(names):
            if name in names[:i]:  # rows name their task by the training sim (flywheel.rows.SIM)
                raise ConfigError(f"tasks[{i}].sim.name={name}: tasks[{names.index(name)}] trains in it already; "
                                  "each task trains in its own sim")
        total = sum(task.weight for task in self.tasks)
        if not total > 0:
            raise ConfigError(f"tasks[*].weight: the weights sum to {total:g}; they must sum to a positive number")
        first = self.tasks[0]
        for section in ("sim", "reference"):
            default = RunConfig.__dataclass_fields__[section].default_factory()
            if getattr(self, section) not in (default, getattr(first, section)):
                raise ConfigError(f"{section}: a multi-task run takes its sims from tasks; set tasks[i].{section} "
                                  f"instead of {section}")
        self.sim, self.reference = first.sim, first.reference or self.reference

    def _check_resources_and_episode_steps(self) -> None:
        for section in ("rollout_resources", "learner_resources"):
            getattr(self, section).check(section)
        for section in ("sim", "reference"):
            if getattr(self, section).camera:
                raise ConfigError(f"{section}.camera=true: a run's frames are one knob for the training sim and the "
                                  "reference alike; set camera=true instead")
            steps = getattr(self, section).max_episode_steps
            if steps is not None and steps < 1:
                raise ConfigError(f"{section}.max_episode_steps must be >= 1 (or unset: the task's default), "
                                  f"got {steps}")


ConfigStore.instance().store(name="run_schema", node=RunConfig)
