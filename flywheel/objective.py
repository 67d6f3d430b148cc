"""What the learners minimise on graded rollouts.

For a batch of chunks (rows of ``flywheel.rollout.collect``), with ``g`` the grader's
training weight of each chunk (in [0, 1]):

    L = L_video + L_action + return_coef * L_return

- ``L_video``: flow matching of the *realized* future of every chunk, successes and
  failures alike ("this plan led to this outcome"), given the observation: the agent's
  imagination learns what really happens.
- ``L_action``: grade-weighted flow matching of the executed action chunk, given the
  observation and the realized future (at inference the imagined one). The sample weights
  are an advantage-weighted regression on the grade:

      w_i = min(exp((g_i - mean(g)) / temperature), max_weight),  then scaled to mean 1

  so chunks graded above the batch's average pull the policy towards themselves and those
  below are damped, never reversed.
- ``L_return``: mean squared error of the return head against the realized return-to-go.

Steps a chunk did not run (the episode ended inside it) are masked out of every term,
and so are padded proprio/action dimensions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from policies.agent import Agent
from policies.data import Data
from sims import Embodiment, make


@dataclass(frozen=True)
class ObjectiveConfig:
    temperature: float = 0.1
    max_weight: float = 20.0
    return_coef: float = 0.1

    def __post_init__(self) -> None:
        if self.temperature <= 0 or self.max_weight <= 0 or self.return_coef < 0:
            raise ValueError(f"objective needs temperature > 0, max_weight > 0, return_coef >= 0: {self}")


def advantage_weights(grades: np.ndarray, config: ObjectiveConfig) -> np.ndarray:
    grades = np.asarray(grades, dtype=np.float64)
    w = np.minimum(np.exp((grades - grades.mean()) / config.temperature), config.max_weight)
    return w / w.mean()


@lru_cache(maxsize=64)
def embodiment_of(sim: str) -> Embodiment:
    """The embodiment of a registered sim (made once per process)."""
    env = make(sim)
    emb = env.embodiment
    env.close()
    return emb


def batch_loss(agent: Agent, rows: Mapping[str, np.ndarray], config: ObjectiveConfig,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The flywheel loss of one batch of chunk rows (see the module docstring)."""
    embs = [embodiment_of(str(s)) for s in rows["sim"]]
    dims = rows["proprio_dim"]
    observed = agent.observe([{"proprio": p[:d], "task": str(t)} for p, d, t in zip(rows["proprio"], dims, rows["task"])],
                             embs)
    dev, cfg = agent.device, agent.cfg
    ran = torch.as_tensor(np.arange(cfg.chunk)[None, :] < rows["steps"][:, None], device=dev)[..., None]  # (B, T, 1)
    future = Data({"proprio": torch.as_tensor(rows["realized"], device=dev)},
                  {"proprio": observed.proprio_mask & ran})
    actions = Data({"action": torch.as_tensor(rows["actions"], device=dev)}, {"action": observed.action_mask & ran})
    grades = rows["weight"] if "weight" in rows else np.ones(len(dims))
    weights = torch.as_tensor(advantage_weights(grades, config), dtype=torch.float32, device=dev)
    returns = torch.as_tensor(np.asarray(rows["return"], dtype=np.float32), device=dev)
    losses = agent.loss(observed, future, actions, returns, generator=generator, action_weights=weights)
    total = losses["future"] + losses["action"]
    if "return" in losses:
        total = total + config.return_coef * losses["return"]
    losses["total"] = total
    return losses
