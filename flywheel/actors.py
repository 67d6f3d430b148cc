"""Rollout actors: each holds a vector of training-sim envs and a copy of the agent.

A cycle asks every actor to load the weights the controller put in the Ray object store
(once per cycle, for all actors), collect its share of episodes with Perceive -> Imagine
-> Act, grade every chunk while its start state is at hand, and write its rows as one
Parquet shard. The actor returns the shard's manifest entry, not the rows: data moves
through the store, never through the driver.

Grading is ``world_model.chunk_grader.ChunkGrader``: the three questions against the
reference physics of the training sim's task, normalized by the spread of its probe set
(seeded, so every actor of a run grades alike).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import ray
import torch

import sims
from flywheel.rollout import RolloutSpec, collect
from flywheel.store import RolloutStore
from policies.agent import Agent
from policies.config import ModelConfig
from world_model.chunk_grader import ChunkGrader
from world_model.grader import GradeConfig


@dataclass(frozen=True)
class WorkerSpec:
    """Everything an actor needs, as plain data (it crosses into Ray)."""

    sim: str
    sim_kwargs: dict[str, Any]
    envs_per_worker: int
    model: dict[str, Any]  # ModelConfig.to_dict()
    store_root: str
    grade: dict[str, Any] = field(default_factory=dict)  # GradeConfig fields
    torch_threads: int = 1
    # Test hook: {"worker": i, "cycle": c} makes that worker's process die once, mid-cycle.
    fault: dict[str, int] | None = None


@ray.remote
class RolloutWorker:
    def __init__(self, index: int, spec: WorkerSpec) -> None:
        torch.set_num_threads(spec.torch_threads)
        self.index, self.spec = index, spec
        self.envs = [sims.make(spec.sim, **spec.sim_kwargs) for _ in range(spec.envs_per_worker)]
        self.agent = Agent(ModelConfig.from_dict(spec.model)).eval()
        self.weight_version = -1
        self.store = RolloutStore(spec.store_root)
        self.grader = ChunkGrader(GradeConfig(**spec.grade))

    def pid(self) -> int:
        return os.getpid()

    def _maybe_die(self, cycle: int) -> None:
        fault = self.spec.fault
        if not fault or (fault["worker"], fault["cycle"]) != (self.index, cycle):
            return
        marker = self.store.root / f".fault-{self.index}-{cycle}"
        if not marker.exists():  # die once: the replacement actor must succeed
            marker.touch()
            os._exit(1)

    def load_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> int:
        self.agent.model.load_state_dict(state_dict)
        self.weight_version = version
        return version

    def collect(self, cycle: int, episodes: int, seed: int, planning: bool, n_candidates: int,
                flow_steps: int | None = None, choose: str = "model") -> dict[str, Any]:
        self._maybe_die(cycle)
        spec = RolloutSpec(episodes=episodes, cycle=cycle, worker=self.index, weight_version=self.weight_version,
                           seed=seed, planning=planning, n_candidates=n_candidates, flow_steps=flow_steps,
                           choose=choose)
        rows = collect(self.agent, self.envs, spec, self.grader)
        shard, quarantined = self.store.write_shard(cycle, self.index, rows)
        return {"shard": shard, "quarantined": quarantined, "steps": int(rows["steps"].sum()),
                "weight_versions": sorted({int(v) for v in rows["weight_version"]})}

