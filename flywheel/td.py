"""The critic's share of the learners' loss on chunk rows (``policies.critic`` has the heads
and the TD math; ``docs/rl-core.md`` the method).

For a global batch of N rows, each with the state s it started from, the executed chunk a
and (``choose=sim``) the n candidates the training sim ran from s:

    pairs   (s, a_c, y_c): every candidate when the rows have them (the executed chunk is one
            of them), else the executed chunk: P = N * n or N pairs
    L_Q     = sum over pairs and members k of (Q_k(s, a_c) - y_c)^2 / (K * P)
    L_V     = sum over rows of expectile_tau(min_k Q_k(s, a) - V(s)) / N       (Q detached)

with y_c = td_target(c's step rewards, steps, terminated, V_target(s'_c)) and s' the chunk's
end state (``flywheel.rows.next_proprio``, or the candidate's stored end history). As in
``flywheel.objective``, rank r of W computes only its contiguous rows and divides by the
*global* N and P, so the W shares sum to the global batch's loss.

``critic_advantage`` is the action expert's per-row signal for ``learner.advantage=critic``:
A = mean_k Q_k(s, a) - V(s) on the executed chunk, computed on the global batch (no
gradient) so that every rank standardizes it alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from configs.learning import ObjectiveConfig
from flywheel.rows import (ACTIONS, CANDIDATE_ACTIONS, CANDIDATE_NEXT_PROPRIO, CANDIDATE_REWARDS, CANDIDATE_STEPS,
                           CANDIDATE_TERMINATED, PROPRIO, PROPRIO_DIM, REALIZED, REWARDS, STEPS, TASK, TERMINATED,
                           next_proprio)
from policies import critic
from policies.agent import Agent, Observed
from sims import Embodiment

# What the critic adds to the learners' losses and metrics (shares of the global batch).
CRITIC_TERMS = ("q", "value", "q_mean", "v_mean", "td_error")


def critic_advantage(agent: Agent, observed: Observed, actions: torch.Tensor) -> np.ndarray:
    """Per row, mean_k Q_k(s, a) - V(s) of the executed chunk (no gradient)."""
    with torch.no_grad():
        features = agent.critic_features(observed)
        q = agent.model.heads[critic.Q](features, observed.action_data(actions).zeroed().values["action"])
        v = agent.model.heads[critic.VALUE](features)
    return (q.mean(dim=0) - v).double().cpu().numpy()


def critic_share(agent: Agent, rows: Mapping[str, np.ndarray], observed: Observed, features: torch.Tensor,
                 config: ObjectiveConfig, rows_total: int) -> dict[str, torch.Tensor]:
    """This rank's share of ``CRITIC_TERMS`` (module docstring): ``rows`` and ``observed`` are
    the rank's rows, ``features`` their ``Agent.critic_features`` (detached: the critic never
    moves the backbone), ``rows_total`` the global batch's N."""
    heads = agent.model.heads
    executed = observed.action_data(torch.as_tensor(rows[ACTIONS], device=agent.device)).zeroed().values["action"]
    q_data = heads[critic.Q](features, executed)  # (K, b)
    v = heads[critic.VALUE](features)
    v_loss = critic.expectile(q_data.min(dim=0).values.detach() - v, config.expectile).sum() / rows_total
    actions, targets = _pairs(agent, rows, observed.embodiments, config.discount)
    per_row = actions.shape[1]
    zeroed = actions * observed.action_mask[:, None]  # (b, n, T, A): padded dims never reach Q
    q = heads[critic.Q](features.repeat_interleave(per_row, dim=0), zeroed.flatten(0, 1))  # (K, b * n)
    pairs_total = rows_total * per_row
    q_loss = ((q - targets) ** 2).mean(dim=0).sum() / pairs_total
    return {"q": q_loss, "value": v_loss, "q_mean": q_data.mean(dim=0).detach().sum() / rows_total,
            "v_mean": v.detach().sum() / rows_total,
            "td_error": (q.mean(dim=0) - targets).detach().abs().sum() / pairs_total}


def _pairs(agent: Agent, rows: Mapping[str, np.ndarray], embodiments: Sequence[Embodiment],
           discount: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The (b, n, T, A) action chunks Q learns on and their (b * n,) TD targets: every candidate
    the sim ran when the rows have them, else the executed chunk (n = 1)."""
    if CANDIDATE_ACTIONS in rows:
        actions, rewards, steps = rows[CANDIDATE_ACTIONS], rows[CANDIDATE_REWARDS], rows[CANDIDATE_STEPS]
        terminated, ends = rows[CANDIDATE_TERMINATED], rows[CANDIDATE_NEXT_PROPRIO]
    else:
        actions, rewards, steps = rows[ACTIONS][:, None], rows[REWARDS][:, None], rows[STEPS][:, None]
        terminated = rows[TERMINATED][:, None]
        ends = next_proprio(rows[PROPRIO], rows[REALIZED], rows[STEPS])[:, None]
    b, n = steps.shape
    dims, tasks = np.repeat(rows[PROPRIO_DIM], n), np.repeat(rows[TASK], n)
    states = [{"proprio": p[:, :d], "task": str(t)} for p, d, t in zip(ends.reshape(b * n, *ends.shape[2:]), dims,
                                                                       tasks)]
    bodies = [emb for emb in embodiments for _ in range(n)]
    with torch.no_grad():
        next_value = agent.values(agent.observe(states, bodies), target=True).double()
    dev = agent.device
    targets = critic.td_target(torch.as_tensor(rewards.reshape(b * n, -1), device=dev),
                               torch.as_tensor(steps.reshape(-1), device=dev),
                               torch.as_tensor(terminated.reshape(-1), device=dev), next_value, discount)
    return torch.as_tensor(actions, device=dev), targets.float()
