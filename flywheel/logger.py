"""The run's log of cycles: ``cycles.jsonl``, TensorBoard and the console line, all from one record.

A cycle's record (``flywheel.cycle.Cycle.commit``) is logged once, after its checkpoint:

    cycles.jsonl   one JSON line per complete cycle, rewritten whole and atomically
    start.json     the starting weights' evaluation (``log_start``, once per run, before cycle 0;
                   the record of cycle 0 is already after one round of learning), shown as "start"
    capability.png capability (± 1 standard error) against cycle, total env steps and total sim
                   steps, the start included; redrawn atomically after every cycle
    tb/            per cycle (step: total env steps): eval/ (capability and its standard
                   error), fidelity/ (``measured``: the training sim the cycle practised in;
                   ``refitted``: its world model after the cycle's refit), rollout/ (episodic
                   return and length, their histograms, env and sim steps, env steps per
                   second of the rollout phase), grade/, learner/ (the cycle's means), time/
                   (wall seconds per phase), and the cycle's imagined-vs-realized figure (and
                   in a camera run its frames: ``rollout/frames``);
                   per learner step (step: total learner steps): every series the learner
                   pool returns (``learner/loss_*_step``, ``learner/grad_norm``, ``learner/lr``)
    console        "cycle C: capability 0.250 ± 0.077, grade weight ..., N env steps (M sim steps), S s"
                   (with a refit: "..., world model fidelity 0.412 -> 0.455")

Env steps are the steps executed in the training sim; sim steps are every engine step spent
(the executed ones, ``best_in_sim``'s look-ahead, grading): ``flywheel.rows.SIM_STEPS``.

``flywheel status`` and ``flywheel report`` read ``cycles.jsonl`` (``read_cycles``); status
also the start (``read_start``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.rows import FRAME, IMAGINED, STEPS
from sims.files import write_bytes_atomic, write_json_atomic

CYCLES = "cycles.jsonl"
START = "start.json"
CAPABILITY_FIGURE = "capability.png"


def read_cycles(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / CYCLES
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_cycles(run_dir: Path, records: list[dict[str, Any]]) -> None:
    """Rewritten whole and atomically: a crash never leaves half a line."""
    write_bytes_atomic(Path(run_dir) / CYCLES, "".join(json.dumps(r) + "\n" for r in records).encode())


def read_start(run_dir: Path) -> dict[str, Any] | None:
    """The starting weights' evaluation (``CycleLogger.log_start``), or None (never evaluated)."""
    path = Path(run_dir) / START
    return json.loads(path.read_text()) if path.exists() else None


def capability_text(record: Mapping[str, Any]) -> str:
    """"0.250 ± 0.077": capability and its standard error (records before it was kept: the value)."""
    stderr = record.get("capability_stderr")
    return f"{record['capability']:.3f}" + ("" if stderr is None else f" ± {stderr:.3f}")


def task_capabilities(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A multi-task record's capability ± standard error by task (training sim); {} for one task."""
    return {name: {"capability": task["capability"], "capability_stderr": task.get("capability_stderr")}
            for name, task in (record.get("tasks") or {}).items()}


def tasks_text(record: Mapping[str, Any]) -> str:
    """" (mujoco/reacher-twin 0.250 ± 0.077, ...)" for a multi-task record; "" for one task."""
    by_task = task_capabilities(record)
    return f" ({', '.join(f'{name} {capability_text(c)}' for name, c in by_task.items())})" if by_task else ""


class CycleLogger:
    """Owns a run's ``cycles.jsonl``, its TensorBoard writer and the per-cycle console line."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any], start_cycle: int,
                 console: Callable[[str], None] = print,
                 checkpointed: Callable[[int], dict[str, Any] | None] | None = None) -> None:
        """Keeps the records of the cycles before ``start_cycle`` (those a resume does not redo).
        ``checkpointed(cycle)``: the record a cycle's checkpoint holds (``flywheel.checkpoint.record``),
        which replaces a line that a stop between the checkpoint and ``cycles.jsonl`` lost."""
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir, self.config, self.console = Path(run_dir), dict(config), console
        kept = {r["cycle"]: r for r in read_cycles(self.run_dir) if r["cycle"] < start_cycle}
        rebuilt = self._rebuild(kept, start_cycle, checkpointed) if checkpointed else []
        self.records = [kept[c] for c in sorted(kept)]
        self.start = read_start(self.run_dir)
        write_cycles(self.run_dir, self.records)
        self.writer = SummaryWriter(str(self.run_dir / "tb"))
        for record in rebuilt:  # their scalars were lost with their line
            self._scalars(record)

    def _rebuild(self, kept: dict[int, dict[str, Any]], start_cycle: int,
                 checkpointed: Callable[[int], dict[str, Any] | None]) -> list[dict[str, Any]]:
        """Adds to ``kept`` the checkpointed records of the cycles it lacks; returns them. Without
        them the lost cycle's steps would also be missing from every later cycle's totals."""
        rebuilt = []
        for cycle in range(start_cycle):
            if cycle not in kept and (record := checkpointed(cycle)) is not None:
                kept[cycle] = record
                rebuilt.append(record)
                self.console(f"{CYCLES} had no line for cycle {cycle} (stopped between its checkpoint and its "
                             "line); rebuilt it from the checkpoint")
        return rebuilt

    @property
    def env_steps_total(self) -> int:
        return self.records[-1]["env_steps_total"] if self.records else 0

    @property
    def sim_steps_total(self) -> int:
        return self.records[-1]["sim_steps_total"] if self.records else 0

    @property
    def learner_steps_total(self) -> int:
        """Learner steps of the cycles logged so far: the x of the per-step learner series."""
        return sum(int(r["learner"]["steps"]) for r in self.records)

    def log(self, record: dict[str, Any], rows: Mapping[str, np.ndarray], began: float,
            series: Mapping[str, Sequence[float]] | None = None) -> None:
        """The cycle's line in ``cycles.jsonl``, its TensorBoard scalars and figure, its console
        line; ``series``: the learner's per-step values (``TrainResult.series``), TensorBoard only."""
        learner_steps = self.learner_steps_total
        self.records.append(record)
        write_cycles(self.run_dir, self.records)
        self._scalars(record)
        self._episodes(record, rows)
        self._learner_steps(series or {}, learner_steps)
        self._imagination(record, rows)
        self._capability_figure()
        refit = record.get("world_model")
        refitted = "" if refit is None else f", world model fidelity {record['fidelity']:.3f} -> {refit['fidelity']:.3f}"
        self.console(f"cycle {record['cycle']}: capability {capability_text(record)}{tasks_text(record)}, grade weight "
                     f"{record['grades']['weight']:.3f}, {record['env_steps']} env steps "
                     f"({record['sim_steps']:,} sim steps){refitted}, {time.perf_counter() - began:.1f} s")

    def log_start(self, evaluation: dict[str, Any], seconds: float) -> None:
        """The starting weights' evaluation (``flywheel.cycle.evaluate``): ``start.json``, the
        capability scalars at env step 0, the figure and a console line. Once per run: a
        resume finds ``start.json`` and does not evaluate again."""
        self.start = {"cycle": -1, "weight_version": 0, "capability": evaluation["capability"],
                      "capability_stderr": evaluation["capability_stderr"], "eval": evaluation,
                      "env_steps_total": 0, "sim_steps_total": 0, "seconds": {"eval": round(seconds, 3)}}
        if "tasks" in evaluation:
            self.start["tasks"] = task_capabilities(evaluation)
        write_json_atomic(self.run_dir / START, self.start)
        self._capability_scalars(self.start, 0)
        self.writer.flush()
        self._capability_figure()
        self.console(f"start: capability {capability_text(self.start)}{tasks_text(self.start)} (the starting "
                     f"weights, before cycle 0, "
                     f"{evaluation['episodes']} evaluation episodes), {seconds:.1f} s")

    def close(self) -> None:
        self.writer.close()

    def _capability_figure(self) -> None:
        from flywheel.report import capability_curve  # matplotlib: not for `flywheel status`

        records = ([self.start] if self.start else []) + self.records
        tasks = self.config.get("tasks") or []
        ylabel = (f"mean capability over {len(tasks)} tasks, each in its reference" if tasks
                  else f"capability in {self.config['reference']['name']}")
        write_bytes_atomic(self.run_dir / CAPABILITY_FIGURE, capability_curve(records, ylabel))

    def _scalars(self, record: dict[str, Any]) -> None:
        step, add = record["env_steps_total"], self.writer.add_scalar
        self._capability_scalars(record, step)
        add("eval/mean_return", record["eval"]["mean_return"], step)
        add("fidelity/measured", record["fidelity"], step)
        if "world_model" in record:
            add("fidelity/refitted", record["world_model"]["fidelity"], step)
        add("rollout/success_rate", record["rollout"]["success_rate"], step)
        add("rollout/quarantined_episodes", record["rollout"]["quarantined_episodes"], step)
        self._steps(record)
        for key, value in record["grades"].items():
            add(f"grade/{key}", value, step)
        for key, value in record["learner"].items():
            if isinstance(value, (int, float)):
                add(f"learner/{key}", value, step)
        add("learner/policy_lag", record["policy_lag"], step)
        for key, value in record["seconds"].items():
            add(f"time/{key}", value, step)
        self.writer.flush()

    def _capability_scalars(self, record: Mapping[str, Any], step: int) -> None:
        """eval/capability (a multi-task run's mean) ± its standard error, and each task's under
        eval/<training sim>/."""
        add = self.writer.add_scalar
        add("eval/capability", record["capability"], step)
        if record.get("capability_stderr") is not None:
            add("eval/capability_stderr", record["capability_stderr"], step)
        for name, task in task_capabilities(record).items():
            add(f"eval/{name}/capability", task["capability"], step)
            if task["capability_stderr"] is not None:
                add(f"eval/{name}/capability_stderr", task["capability_stderr"], step)

    def _steps(self, record: dict[str, Any]) -> None:
        """What the cycle spent: env steps, every sim step, and the rollout phase's throughput."""
        step, add = record["env_steps_total"], self.writer.add_scalar
        add("rollout/env_steps", record["env_steps"], step)
        add("rollout/sim_steps", record["sim_steps"], step)
        add("rollout/sim_steps_total", record["sim_steps_total"], step)
        if record["env_steps"]:
            add("rollout/sim_steps_per_env_step", record["sim_steps"] / record["env_steps"], step)
        seconds = record["seconds"].get("rollout", 0.0)
        if seconds > 0:  # a cycle whose rollouts were committed before a stop spends none
            add("rollout/env_steps_per_second", record["env_steps"] / seconds, step)
        add("eval/sim_steps", record["eval"].get("sim_steps", 0), step)

    def _episodes(self, record: dict[str, Any], rows: Mapping[str, np.ndarray]) -> None:
        """The cycle's rollout episodes: mean episodic return and length, and every episode's."""
        if not len(rows[STEPS]):
            return
        from flywheel.rollout import episode_lengths_and_returns  # torch and the agent: not for `flywheel status`

        step, lengths, returns = record["env_steps_total"], *episode_lengths_and_returns(rows)
        self.writer.add_scalar("rollout/episodic_return", float(returns.mean()), step)
        self.writer.add_scalar("rollout/episode_length", float(lengths.mean()), step)
        self.writer.add_histogram("rollout/episodic_returns", returns, step)
        self.writer.add_histogram("rollout/episode_lengths", lengths, step)

    def _learner_steps(self, series: Mapping[str, Sequence[float]], before: int) -> None:
        """Each learner series point at its global learner step (``before`` + its index + 1)."""
        for name, values in series.items():
            for i, value in enumerate(values):
                if value is not None:
                    self.writer.add_scalar(f"learner/{name}", float(value), before + i + 1)
        self.writer.flush()

    def _imagination(self, record: dict[str, Any], rows: Mapping[str, np.ndarray]) -> None:
        """Imagined against realized proprio of a few of this cycle's chunks (planning rollouts
        only), and in a camera run their frames, realized and (where imagined) imagined."""
        if not len(rows[STEPS]):
            return
        from flywheel.report import frames_figure, imagination_figure

        if IMAGINED in rows:
            self.writer.add_figure("rollout/imagined_vs_realized", imagination_figure(rows), record["env_steps_total"])
        if FRAME in rows:
            self.writer.add_figure("rollout/frames", frames_figure(rows), record["env_steps_total"])
        self.writer.flush()
