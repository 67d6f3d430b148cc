"""Rollout actors (``flywheel.actors``): evaluation runs on one, and measures what the driver would."""

import pytest

from configs.run_schema import RunConfig
from configs.schema import SimConfig

pytestmark = pytest.mark.xdist_group("ray-actors")


def test_evaluation_on_a_rollout_actor_equals_the_drivers(tmp_path):
    """The run evaluates on its first rollout actor (on a cluster the driver's machine may have no
    room); the same weights, seeds and episodes give the very same numbers as in the driver."""
    import ray
    import torch

    from flywheel.actors import RolloutWorkers, WorkerSpec
    from flywheel.controller import start_ray
    from flywheel.cycle import evaluate, evaluation_spec
    from policies.agent import Agent

    sim = SimConfig(name="mujoco/reacher-twin", max_episode_steps=16)
    config = RunConfig(num_rollout_workers=1, envs_per_worker=2, episodes_per_cycle=1, n_candidates=2, sim=sim,
                       reference=sim)
    config.eval.episodes = 3  # more episodes than envs: the second batch starts as the first ends
    config.ray.num_cpus = 2
    start_ray(config).release()  # the actors below start outside the run's reservation
    torch.manual_seed(0)
    agent = Agent("tiny")
    spec = WorkerSpec(((sim.name, sim.make_kwargs()),), config.envs_per_worker, agent.cfg.to_dict(), str(tmp_path / "store"))
    workers = RolloutWorkers(1, spec, {"num_cpus": 0.5})
    try:
        weights = ray.put({k: v.detach().cpu() for k, v in agent.model.state_dict().items()})
        remote = workers.evaluate(weights, config, evaluation_spec(config))
        ray.kill(workers.actors[0])  # a dead actor is replaced, and evaluates alike
        again = workers.evaluate(weights, config, evaluation_spec(config))
    finally:
        workers.shutdown()
    local = evaluate(agent, config, evaluation_spec(config))
    assert remote == local == again
    assert remote["episodes"] == 3


def test_an_evaluation_on_the_actor_is_not_counted_in_its_next_collect(tmp_path):
    """Evaluation's engine steps are its own record (its ``sim_steps``); the training sim steps of the
    actor's next collect are the same as an actor's that never evaluated (they once included them)."""
    import ray
    import torch

    from flywheel.actors import RolloutWorkers, WorkerSpec
    from flywheel.controller import start_ray
    from flywheel.cycle import evaluation_spec
    from flywheel.rollout import RolloutSpec
    from policies.agent import Agent

    sim = SimConfig(name="mujoco/reacher-twin", max_episode_steps=16)
    config = RunConfig(num_rollout_workers=1, envs_per_worker=2, episodes_per_cycle=2, n_candidates=2, sim=sim,
                       reference=sim)
    config.eval.episodes = 2
    config.ray.num_cpus = 2
    start_ray(config).release()  # the actors below start outside the run's reservation
    torch.manual_seed(0)
    agent = Agent("tiny")
    weights = ray.put({k: v.detach().cpu() for k, v in agent.model.state_dict().items()})
    rollout = RolloutSpec(episodes=2, seed=5, n_candidates=2, choose="sim")
    spent = {}
    for evaluated in (False, True):
        spec = WorkerSpec(((sim.name, sim.make_kwargs()),), config.envs_per_worker, agent.cfg.to_dict(),
                          str(tmp_path / f"store-{evaluated}"))
        workers = RolloutWorkers(1, spec, {"num_cpus": 0.5})
        try:
            if evaluated:
                assert workers.evaluate(weights, config, evaluation_spec(config))["sim_steps"] > 0
            (result,), _ = workers.collect(weights, rollout, seeds=lambda i: 5)
        finally:
            workers.shutdown()
        spent[evaluated] = result["sim_steps_outside_rows"]
    assert spent[True] == spent[False] > 0  # the grader's start-up only
