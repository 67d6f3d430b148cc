"""The grader: three questions about every chunk, and one training weight.

1. **Task**: did the realized chunk make progress, and has the episode succeeded?
   ``reward`` is the realized reward summed over the chunk; ``progress`` maps its per-step
   mean into [0, 1]: ``(1 + tanh(mean_reward / reward_scale)) / 2``; ``success`` is whether
   ``info["success"]`` has been true in the episode so far (None for tasks without success).
2. **Imagination**: did the imagined trajectory come true? ``imagination_error`` is the mean
   normalized error of imagined against realized proprio over the chunk
   (``world_model.metrics``), ``imagination = exp(-imagination_error / imagination_tolerance)``.
3. **Physics**: did the imagined motion obey physics? From each imagined state (the real
   start state for the first step) the engine takes one step with the chosen action and the
   result is compared with the next imagined state (``physics_gaps``). ``physics_gap`` is the
   mean of those per-step gaps, ``physics_worst`` the largest, ``physics = exp(-physics_worst /
   physics_tolerance)`` and ``obeys_physics`` says whether no step's gap exceeds
   ``teleport_threshold`` (a teleport is one impossible step, so the worst step decides).
   Where the sim's proprio does not determine its physical state all four are None:
   "not applicable", never a made-up number.

The training weight, in [0, 1], is a weighted mean of the answers that apply:

    weight = (w_s * success + w_p * progress + w_i * imagination + w_f * physics) / (sum of the w that apply)

with success as 0/1, the weights ``GradeConfig.success_weight`` etc.; a term that does not
apply (no success defined, physics not applicable) drops out of both sums.

Everything but ``physics_gaps`` is pure: arrays in, records out, batched over chunks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from configs.learning import GradeConfig
from sims import SimEnv, SimState, StateNotDetermined
from world_model.metrics import check_pair


@dataclass(frozen=True)
class Grade:
    """The three answers for one chunk, and the training weight."""

    reward: float
    progress: float
    success: bool | None
    imagination_error: float | None  # None: nothing was imagined
    imagination: float | None
    physics_gap: float | None
    physics_worst: float | None
    physics: float | None
    obeys_physics: bool | None
    weight: float

    def as_dict(self) -> dict:
        return asdict(self)


def grade(*, imagined, realized, rewards, success: bool | None, scale, physics: np.ndarray | None = None,
          config: GradeConfig = GradeConfig()) -> Grade:
    """Grade one chunk: ``imagined``/``realized`` [T, D] (``imagined`` None: nothing was imagined,
    so imagination and physics do not apply), ``rewards`` [T], ``physics`` from ``physics_gaps``."""
    realized = np.asarray(realized, dtype=np.float64)
    if realized.ndim != 2:
        raise ValueError(f"one chunk's trajectories are [T, D], got shape {realized.shape}")
    if imagined is None:
        if physics is not None:
            raise ValueError("physics gaps were given for a chunk with no imagined trajectory")
        check_pair(realized, realized, scale)  # validates the realized chunk and the scale
        return _grade_one(None, realized, np.asarray(rewards, dtype=np.float64), success, None, config)
    return grade_batch(imagined=np.asarray(imagined, dtype=np.float64)[None], realized=realized[None],
                       rewards=np.asarray(rewards)[None], success=[success], scale=scale, physics=[physics],
                       config=config)[0]


def grade_batch(*, imagined, realized, rewards, success, scale, physics=None,
                config: GradeConfig = GradeConfig()) -> list[Grade]:
    """Grade N chunks at once: ``imagined``/``realized`` [N, T, D], ``rewards`` [N, T], ``success`` [N]
    (bools, or None where the task defines none), ``physics`` N per-step gap arrays or Nones."""
    imagined, realized, scale = check_pair(imagined, realized, scale)
    if imagined.ndim != 3:
        raise ValueError(f"chunk trajectories are [N, T, D], got shape {imagined.shape}")
    n, t, _ = imagined.shape
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.shape != (n, t):
        raise ValueError(f"rewards have shape {rewards.shape}, expected one per chunk step {(n, t)}")
    success = list(success)
    physics = [None] * n if physics is None else list(physics)
    if len(success) != n or len(physics) != n:
        raise ValueError(f"success and physics need one entry per chunk ({n}), got {len(success)} and {len(physics)}")
    errors = (np.abs(imagined - realized) / scale).mean(axis=(1, 2))
    return [_grade_one(errors[i], realized[i], rewards[i], success[i], physics[i], config) for i in range(n)]


def _grade_one(error: float | None, realized: np.ndarray, rewards: np.ndarray, success: bool | None,
               physics, config: GradeConfig) -> Grade:
    if rewards.shape != realized.shape[:1] or not np.all(np.isfinite(rewards)):
        raise ValueError(f"rewards must be {realized.shape[0]} finite values (one per chunk step), got {rewards!r}")
    progress = 0.5 * (1.0 + math.tanh(float(rewards.mean()) / config.reward_scale))
    imagination = None if error is None else math.exp(-float(error) / config.imagination_tolerance)
    gap = _physics_answer(physics, len(realized), config)
    terms = [(config.progress_weight, progress)]
    if imagination is not None:
        terms.append((config.imagination_weight, imagination))
    if success is not None:
        terms.append((config.success_weight, float(bool(success))))
    if gap[2] is not None:
        terms.append((config.physics_weight, gap[2]))
    total = sum(w for w, _ in terms)
    weight = sum(w * v for w, v in terms) / total if total > 0 else 0.0
    return Grade(
        reward=float(rewards.sum()), progress=progress, success=None if success is None else bool(success),
        imagination_error=None if error is None else float(error), imagination=imagination,
        physics_gap=gap[0], physics_worst=gap[1], physics=gap[2], obeys_physics=gap[3], weight=float(weight),
    )


def _physics_answer(gaps, steps: int, config: GradeConfig):
    if gaps is None:
        return None, None, None, None
    gaps = np.asarray(gaps, dtype=np.float64)
    if gaps.shape != (steps,) or not np.all(np.isfinite(gaps)) or np.any(gaps < 0):
        raise ValueError(f"physics gaps must be {steps} finite values >= 0 (from physics_gaps), got {gaps!r}")
    worst = float(gaps.max())
    return float(gaps.mean()), worst, math.exp(-worst / config.physics_tolerance), worst <= config.teleport_threshold


def physics_gaps(env: SimEnv, start: SimState, imagined, actions, scale) -> np.ndarray | None:
    """Per-step physics gap of an imagined chunk, or None where it is not applicable.

    ``env`` is the engine (the reference sim, noise-free), ``start`` its exact state when the
    chunk began, ``imagined`` [T, D] the imagined proprio after each of ``actions`` [T, A].
    Step t restores the imagined state before it (``set_state_from_proprio``; the true ``start``
    for t = 0), steps once with ``actions[t]`` and measures the mean normalized distance of
    the engine's proprio from ``imagined[t]``. The env is left in the state it was found in.
    """
    imagined, _, scale = check_pair(imagined, imagined, scale)
    actions = np.asarray(actions, dtype=np.float64)
    if imagined.ndim != 2 or actions.ndim != 2 or len(actions) != len(imagined):
        raise ValueError(f"imagined [T, D] and actions [T, A] must have the same T, got shapes {imagined.shape} "
                         f"and {actions.shape}")
    if not isinstance(start, SimState) or start.sim != env.name:
        raise ValueError(f"the chunk's start state must be a state of {env.name!r}, got "
                         f"{start.sim if isinstance(start, SimState) else type(start).__name__!r}")
    saved = env.get_state()
    try:
        try:
            # The last imagined state is only compared with, never stepped from; placing the
            # engine there first gives a one-step chunk the same "not applicable" as a longer one.
            env.set_state_from_proprio(imagined[-1], like=start)
        except StateNotDetermined:
            return None
        gaps = np.zeros(len(imagined))
        for t, action in enumerate(actions):
            if t == 0:
                env.set_state(start)
            else:
                env.set_state_from_proprio(imagined[t - 1], like=start)
            obs = env.step(action)[0]["proprio"]
            gaps[t] = float(np.mean(np.abs(obs - imagined[t]) / scale))
        return gaps
    finally:
        env.set_state(saved)
