"""bench_distill's diagnostics measure what they say, on rows the rollout loop really writes
(a tiny agent, 16-step episodes, choose=sim over 3 candidates; no Ray)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sims
from flywheel.rollout import RolloutSpec, collect
from flywheel.rows import ACTIONS, REALIZED, STEPS
from policies.agent import Agent
from policies.config import SIZES

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_distill  # noqa: E402


@pytest.fixture(scope="module")
def agent_and_rows():
    torch.manual_seed(0)
    agent = Agent(SIZES["tiny"]).eval()
    envs = [sims.make("mujoco/reacher-twin", max_episode_steps=16) for _ in range(2)]
    rows = collect(agent, envs, RolloutSpec(episodes=5, seed=3, planning=True, n_candidates=3, choose="sim"))
    return agent, rows


def test_the_hold_baseline_and_the_zero_action_are_computed_from_the_rows(agent_and_rows):
    agent, rows = agent_and_rows
    out = bench_distill.diagnose(agent, rows)
    full = rows[STEPS] == agent.cfg.chunk
    scale = agent.model.tokenizers["proprio"].scale.numpy()[:8]
    latest = rows["proprio"][full][:, -1:, :8]
    hold = ((rows[REALIZED][full][..., :8] - latest) / scale) ** 2
    assert out["hold_error"] == pytest.approx(hold.mean(), rel=1e-5)
    assert out["action_error[zero action]"] == pytest.approx((rows[ACTIONS][..., :2] ** 2).mean(), rel=1e-5)
    # The rollout chose among candidates the agent acted on from these same plans, with other noise:
    # acting on the rollout's plan is one of the routes, and every route's error is a finite number.
    assert all(np.isfinite(v) for v in out.values())
    assert out["imagination_error"] != out["hold_error"]


def test_held_out_episodes_are_whole_and_every_fifth(agent_and_rows):
    _, rows = agent_and_rows
    train, held = bench_distill.split(rows)
    assert train.n + held.n == rows.n
    assert set(np.unique(held["episode"])) == set(np.unique(rows["episode"])[::5])
    assert not set(np.unique(held["episode"])) & set(np.unique(train["episode"]))
