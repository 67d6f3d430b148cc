"""Honest accounting: a chunk's ``sim_steps`` is every sim step spent on it.

Checked against an independent count: ``SimEnv.step`` is wrapped to record every call (of
every env: the rollout's, the grader's reference engine, its probe set's, a learned sim's
shadow engine), and the ``sim_steps`` column must sum to exactly that many calls.
"""

import numpy as np
import pytest

import sims
import world_model as wm
from flywheel.rollout import RolloutSpec, collect
from flywheel.rows import SIM_STEPS, STEPS
from sims import SimEnv

SIM = "mujoco/reacher-twin"  # never terminates early: every candidate runs as long as the executed chunk


def count_steps(monkeypatch) -> list[int]:
    """From now on, the id of the env of every ``SimEnv.step`` call, in order."""
    calls, step = [], SimEnv.step

    def counted(self, action):
        calls.append(id(self))
        return step(self, action)

    monkeypatch.setattr(SimEnv, "step", counted)
    return calls


def test_sim_steps_are_every_step_of_the_rollout_its_look_ahead_and_its_grading(agent, monkeypatch):
    envs = [sims.make(SIM, max_episode_steps=12) for _ in range(2)]
    grader = wm.ChunkGrader(probes=2, horizon=10)
    spec = RolloutSpec(episodes=3, seed=1, planning=True, n_candidates=3, choose="sim")
    calls = count_steps(monkeypatch)
    before = sims.engine_steps_taken()
    rows = collect(agent, envs, spec, grader)
    assert rows[SIM_STEPS].sum() == len(calls) == sims.engine_steps_taken() - before
    # Each env's own lifetime counter, and the grader's reference engine's, agree with the calls.
    engine = grader.engine(SIM)
    for env in [*envs, engine]:
        assert env.engine_steps == calls.count(id(env)) > 0
    assert rows[STEPS].sum() == 3 * 12 < rows[SIM_STEPS].sum()
    # Every chunk paid for its 3 candidates' look-ahead and its own steps at least.
    assert np.all(rows[SIM_STEPS] >= (spec.n_candidates + 1) * rows[STEPS])


def test_a_rollout_that_neither_looks_ahead_nor_grades_spends_its_steps_only(agent, monkeypatch):
    envs = [sims.make(SIM, max_episode_steps=10)]
    calls = count_steps(monkeypatch)
    rows = collect(agent, envs, RolloutSpec(episodes=2, seed=2, planning=False))
    assert np.array_equal(rows[SIM_STEPS], rows[STEPS]) and rows[SIM_STEPS].sum() == len(calls) == 20


def test_a_learned_sims_step_is_its_models_and_its_shadow_engines(agent, monkeypatch):
    data = wm.collect(SIM, 200, seed=0)
    simulator = wm.fit(data, wm.WorldModelNetConfig(ensemble=2, hidden=8, layers=1),
                       wm.WorldModelTrainConfig(steps=5, batch=32, horizon=1))
    env = sims.make(f"learned/{SIM}", checkpoint=simulator, correct_every=4, max_episode_steps=8)
    grader = wm.ChunkGrader(probes=2, horizon=10)
    calls = count_steps(monkeypatch)
    rows = collect(agent, [env], RolloutSpec(episodes=1, seed=3, n_candidates=2, choose="sim"), grader)
    assert rows[SIM_STEPS].sum() == len(calls)
    assert env.engine_steps == calls.count(id(env)) and env._shadow.engine_steps == env.engine_steps
    assert np.all(rows[SIM_STEPS] >= 2 * (2 + 1) * rows[STEPS])  # model + shadow, for 2 candidates and the chunk


def test_a_prepared_grader_puts_its_start_up_on_no_chunk(agent, monkeypatch):
    from world_model import probes

    def sim_steps(prepare: bool) -> np.ndarray:
        probes._probe_set.cache_clear()  # a fresh process: the probe set is built again
        env, grader = sims.make(SIM, max_episode_steps=8), wm.ChunkGrader(probes=2, horizon=10)
        if prepare:
            grader.prepare(env)
        return collect(agent, [env], RolloutSpec(episodes=1, seed=4, n_candidates=2, choose="sim"), grader)[SIM_STEPS]

    unprepared, prepared = sim_steps(False), sim_steps(True)
    assert unprepared[0] > prepared[0] and np.array_equal(unprepared[1:], prepared[1:])
    assert np.array_equal(prepared, sim_steps(True))
