"""The SAC baseline is evaluated exactly as the flywheel evaluates, and needs
stable-baselines3 only to train. Fast: a tiny agent, short episodes, no Ray, no SB3."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sims
from flywheel.rollout import RolloutSpec, collect, episode_stats
from policies.agent import Agent
from policies.config import SIZES

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.baselines import sac  # noqa: E402

SIM = "mujoco/reacher-twin"
KWARGS = {"max_episode_steps": 16}
SEED = 7


@pytest.fixture(scope="module")
def flywheel_rows():
    """A tiny untrained agent's evaluation-style rollout: 3 episodes over 2 envs (one reused)."""
    torch.manual_seed(0)
    agent = Agent(SIZES["tiny"]).eval()
    envs = [sims.make(SIM, **KWARGS) for _ in range(2)]
    return collect(agent, envs, RolloutSpec(episodes=3, seed=SEED, planning=False))


def _episodes_in_start_order(rows):
    # Episode ids grow with the start index (flywheel.rows.episode_id).
    return [np.flatnonzero(rows["episode"] == e) for e in np.unique(rows["episode"])]


def test_reset_seeds_are_the_flywheels(flywheel_rows):
    seeds = sac.eval_reset_seeds(SEED, 3)
    assert seeds == [SEED * 100_003 + i for i in range(3)]
    env = sac.ProprioEnv(SIM, **KWARGS)
    d = env.sim.embodiment.proprio_dim
    for sel, seed in zip(_episodes_in_start_order(flywheel_rows), seeds):
        first_input = flywheel_rows["proprio"][sel[0]][0, :d]  # the reset observation
        obs, _ = env.reset(seed=seed)
        assert obs.dtype == np.float32 and env.observation_space.contains(obs)
        np.testing.assert_array_equal(obs, first_input)


def test_replaying_the_flywheels_actions_gives_its_evaluation(flywheel_rows):
    """The agent's executed actions, replayed through ``evaluate_policy_fixed``, reproduce its
    success rate and per-episode returns: same seeds, same episode boundaries, same rule."""
    emb = sims.make(SIM, **KWARGS).embodiment
    actions = []
    for sel in _episodes_in_start_order(flywheel_rows):
        for i in sel:
            n = int(flywheel_rows["steps"][i])
            actions.extend(emb.to_env_action(emb.unpad_action(flywheel_rows["actions"][i]))[:n])
    replay = iter(actions)
    result = sac.evaluate_policy_fixed(lambda proprio: next(replay), SIM, KWARGS, episodes=3, seed=SEED)
    assert next(replay, None) is None  # every action used, none missing

    expected = episode_stats(flywheel_rows)
    assert set(expected) <= set(result)
    assert result["episodes"] == expected["episodes"] == 3
    assert result["success_rate"] == expected["success_rate"]
    returns = [flywheel_rows["return"][sel[0]] for sel in _episodes_in_start_order(flywheel_rows)]
    np.testing.assert_allclose(result["returns"], returns, rtol=1e-12)  # chunk sums: a different order
    assert result["mean_return"] == pytest.approx(expected["mean_return"], rel=1e-12)
    assert result["return_std"] == pytest.approx(expected["return_std"], rel=1e-9, abs=1e-12)


def test_the_wrapper_passes_the_sim_through_and_counts_steps():
    env = sac.ProprioEnv(SIM, **KWARGS)
    assert env.action_space == env.sim.action_space
    env.reset(seed=0)
    truncated, steps = False, 0
    while not truncated:
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        assert isinstance(reward, float) and not terminated and "success" in info
    assert steps == env.engine_steps == KWARGS["max_episode_steps"]  # the sim's own truncation
    env.reset(seed=1)
    env.step(np.zeros(2, np.float32))
    assert env.engine_steps == steps + 1


class _ScriptedSim:
    """Stands in for ``sims.make``'s env: 5 steps, reward 1..5, success only at step 2."""

    defines_success = True
    observation_space = sims.make(SIM).observation_space
    action_space = sims.make(SIM).action_space

    def reset(self, seed=None, options=None):
        self.t, self.seed = 0, seed
        return {"proprio": np.full(8, seed, np.float32)}, {"success": False}

    def step(self, action):
        self.t += 1
        return ({"proprio": np.zeros(8, np.float32)}, float(self.t), False, self.t == 5,
                {"success": self.t == 2})

    def close(self):
        pass


def test_success_is_any_step_and_return_is_the_sum(monkeypatch):
    seen = []
    monkeypatch.setattr(sac.sims, "make", lambda name, **kwargs: _ScriptedSim())
    result = sac.evaluate_policy_fixed(lambda p: seen.append(p[0]) or np.zeros(2), SIM, {}, episodes=2, seed=3)
    assert result["successes"] == [True, True] and result["success_rate"] == 1.0  # false at the end
    assert result["returns"] == [15.0, 15.0] and result["mean_return"] == 15.0 and result["return_std"] == 0.0
    assert result["capability"] == 1.0
    # Each episode starts from its own reset seed (the scripted reset observation echoes it).
    assert [seen[0], seen[5]] == [np.float32(s) for s in sac.eval_reset_seeds(3, 2)]


def test_train_sac_names_the_install_command_without_stable_baselines3(monkeypatch):
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r'pip install -e "\.\[bench\]"'):
        sac.train_sac(SIM, KWARGS, total_steps=10, eval_every=5, eval_episodes=1, eval_seed=0, seed=0)


@pytest.mark.parametrize("steps, every, episodes, match", [
    (0, 1, 1, "total_steps"), (10, 11, 1, "eval_every"), (10, 0, 1, "eval_every"), (10, 5, 0, "eval_episodes")])
def test_train_sac_rejects_bad_budgets(steps, every, episodes, match):
    with pytest.raises(ValueError, match=match):
        sac.train_sac(SIM, KWARGS, total_steps=steps, eval_every=every, eval_episodes=episodes, eval_seed=0, seed=0)


def test_unknown_sim_is_named():
    with pytest.raises(sims.UnknownSimError, match="nope/x"):
        sac.evaluate_policy_fixed(lambda p: p, "nope/x", {}, episodes=1, seed=0)


def test_standard_error_over_seeds():
    assert sac.mean_se([0.2, 0.4]) == pytest.approx((0.3, np.std([0.2, 0.4], ddof=1) / np.sqrt(2)))
    assert np.isnan(sac.mean_se([0.5])[1])


def test_summary_is_per_checkpoint_over_seeds():
    def run(success, ret, wall):
        return {"checkpoints": [{"env_steps": 0, "sim_steps": 0, "wall_s": 0.0, "success_rate": 0.0,
                                 "mean_return": -50.0},
                                {"env_steps": 10, "sim_steps": 10, "wall_s": wall, "success_rate": success,
                                 "mean_return": ret}]}

    summary = sac.summarize([run(0.2, -10.0, 1.0), run(0.4, -20.0, 3.0)])
    assert [r["env_steps"] for r in summary] == [0, 10] and summary[1]["seeds"] == 2
    assert summary[1]["success_rate"] == pytest.approx(0.3) and summary[1]["wall_s"] == 2.0
    assert summary[1]["mean_return_se"] == pytest.approx(5.0)  # std(ddof=1) 7.07 / sqrt(2)
    assert "0.300 ± 0.100" in sac.format_table(summary, SIM, 5)
    assert sac.summarize([run(0.2, -10.0, 1.0)])[1]["success_rate_se"] is None  # one seed: no s.e.
