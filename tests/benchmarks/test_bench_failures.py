"""bench_failures: each reacher episode read back from the rows ``collect`` writes."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_failures  # noqa: E402
from flywheel.rollout import RolloutSpec, collect, episode_lengths_and_returns, reset_seed  # noqa: E402
from policies.agent import Agent  # noqa: E402
from sims import make  # noqa: E402

SIM = "mujoco/reacher-twin"


@pytest.fixture(scope="module")
def read_back():
    torch.manual_seed(0)
    envs = [make(SIM, max_episode_steps=30) for _ in range(2)]
    rows = collect(Agent("tiny").eval(), envs, RolloutSpec(episodes=3, seed=7, planning=False))
    return rows, bench_failures.episodes(rows)


def test_each_episode_keeps_the_target_and_distances_the_env_had(read_back):
    rows, episodes = read_back
    lengths, returns = episode_lengths_and_returns(rows)
    env = make(SIM)
    for i, episode in enumerate(episodes):
        env.reset(seed=reset_seed(7, i))
        assert episode["target_radius"] == pytest.approx(np.linalg.norm(env.target), abs=1e-5)
        assert episode["start_distance"] == pytest.approx(np.linalg.norm(env.target - env.fingertip()), abs=1e-5)
        assert len(episode["distance"]) == lengths[i]
        assert -sum(episode["distance"]) == pytest.approx(returns[i], abs=1e-3)  # the reward is minus the distance


def test_every_failure_is_either_never_reached_or_not_held(read_back):
    _, episodes = read_back
    summary = bench_failures.summarize(episodes)
    assert summary["failed"] == sum(not e["success"] for e in episodes)
    assert summary["never_reached"] + summary["reached_not_held"] == summary["failed"]
    assert sum(b["episodes"] for b in summary["by_target_radius"]) == len(episodes)


def test_the_longest_hold_counts_consecutive_steps_inside():
    assert bench_failures.longest_run(np.array([False, True, True, False, True, True, True, False])) == 3
    assert bench_failures.longest_run(np.zeros(5, bool)) == 0


def test_a_sim_other_than_the_reacher_is_refused_before_any_checkpoint_is_read():
    with pytest.raises(SystemExit, match="reference.name=dmc/cartpole-swingup"):
        bench_failures.main(["no/such/checkpoint", "reference.name=dmc/cartpole-swingup"])
