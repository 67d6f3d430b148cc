"""The learning signal's knobs: how a chunk is graded, and how the learners weigh it.

Plain dataclasses without Hydra, so ``world_model`` and ``flywheel`` import them cheaply;
``configs.run_schema`` puts them in a run's config (``grade`` is a ``GradeConfig``, and
``learner`` is an ``ObjectiveConfig`` plus the optimiser's knobs). Each validates itself on
construction (Hydra builds the dataclass in ``OmegaConf.to_object``, so a bad value stops a
run before Ray starts), and its messages name the field as a run's config spells it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class GradeConfig:
    """Coefficients of the grade (formula: ``world_model.grader``)."""

    success_weight: float = 1.0
    progress_weight: float = 1.0
    imagination_weight: float = 1.0
    physics_weight: float = 1.0
    reward_scale: float = 1.0  # per-step reward at which progress is (1 + tanh 1) / 2
    imagination_tolerance: float = 0.25  # normalized error at which imagination = 1/e
    physics_tolerance: float = 0.25  # worst one-step physics gap at which physics = 1/e
    teleport_threshold: float = 0.1  # a one-step physics gap above this breaks physics

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"grade.{name} must be a finite number >= 0, got {value!r}")
        for name in ("reward_scale", "imagination_tolerance", "physics_tolerance", "teleport_threshold"):
            if getattr(self, name) <= 0:
                raise ValueError(f"grade.{name} must be > 0, got {getattr(self, name)}")


# What the action regression is weighted by (``ObjectiveConfig.advantage``; flywheel.objective).
# The first three are read off the rows (``flywheel.objective.advantage_signal``); ``critic``
# is the critic's per-state advantage (``flywheel.td.critic_advantage``).
ROW_ADVANTAGES = ("grade", "task", "outcome")
ADVANTAGES = ROW_ADVANTAGES + ("critic",)
# Which future the action expert and the return head read in training (``ObjectiveConfig.act_on``).
ACT_ON = ("realized", "imagined")


@dataclass
class ObjectiveConfig:
    """What the learners minimise (``flywheel.objective``); a run's ``learner`` section is one."""

    advantage: str = "outcome"  # what the action regression favours: grade | task | outcome
    # The future the action expert and return head read in training: the one the rollout imagined
    # (their input at inference, which is how choose=sim's choices reach the agent) or the realized one.
    act_on: str = "imagined"
    temperature: float = 1.0  # of the advantage weights, in standard deviations of the batch's advantage
    max_weight: float = 20.0
    return_coef: float = 0.1
    # The chunk critic (``policies.critic``, ``docs/rl-core.md``): chunked implicit Q-learning.
    critic: bool = False  # train V and an ensemble of Q over chunks; the model grows the heads if it has none
    discount: float = 0.99  # per control step, in (0, 1]
    expectile: float = 0.8  # of V towards min_k Q on the executed chunks, in (0.5, 1)
    target_tau: float = 0.01  # EMA rate of V_target per optimizer step, in (0, 1]
    critic_coef: float = 1.0  # weight of L_Q + L_V in the total (the critic's heads read detached features)
    ensemble: int = 2  # Q heads; V learns towards their minimum (clipped double-Q)
    # Candidates per row the action expert also learns (choose=sim rows keep all the sim ran), each
    # drawn by its return against its siblings': a softmax at ``temperature`` (``flywheel.objective``).
    # 0 learns the executed chunk alone. Measured at 4: no gain, twice the learner time (docs/rl-core.md).
    candidate_samples: int = 0
    # Train the chunk ranker planning scores candidates by (``policies.ranker``): every candidate the
    # sim ran, ranked against its siblings by its chunk's reward (with ``lookahead_chunks``, its
    # continued run's). Reads detached features: the policy learns the same.
    ranker: bool = False

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise a ValueError naming the first bad field (``learner.<field>``)."""
        for name, positive in (("temperature", True), ("max_weight", True), ("return_coef", False)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not (value > 0 if positive else value >= 0):
                raise ValueError(f"learner.{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"learner.advantage must be one of {ADVANTAGES}, got {self.advantage!r}")
        if self.act_on not in ACT_ON:
            raise ValueError(f"learner.act_on must be one of {ACT_ON}, got {self.act_on!r}")
        self._check_critic()

    def _check_critic(self) -> None:
        for name, low, high, closed_high in (("discount", 0, 1, True), ("target_tau", 0, 1, True),
                                             ("expectile", 0.5, 1, False)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low < value and (
                value <= high if closed_high else value < high)
            if not ok:
                raise ValueError(f"learner.{name} must be in ({low}, {high}{']' if closed_high else ')'}, "
                                 f"got {value!r}")
        if not isinstance(self.critic_coef, (int, float)) or not math.isfinite(self.critic_coef) or self.critic_coef < 0:
            raise ValueError(f"learner.critic_coef must be a finite number >= 0, got {self.critic_coef!r}")
        if not isinstance(self.ensemble, int) or isinstance(self.ensemble, bool) or self.ensemble < 1:
            raise ValueError(f"learner.ensemble must be an int >= 1, got {self.ensemble!r}")
        if (not isinstance(self.candidate_samples, int) or isinstance(self.candidate_samples, bool)
                or self.candidate_samples < 0):
            raise ValueError(f"learner.candidate_samples must be an int >= 0, got {self.candidate_samples!r}")
        for name in ("critic", "ranker"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"learner.{name} must be true or false, got {getattr(self, name)!r}")
        if self.advantage == "critic" and not self.critic:
            raise ValueError("learner.advantage=critic needs learner.critic=true (the critic gives the advantages)")

