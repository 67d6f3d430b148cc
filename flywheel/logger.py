"""The run's log of cycles: ``cycles.jsonl``, TensorBoard and the console line, all from one record.

A cycle's record (``flywheel.cycle.Cycle.commit``) is logged once, after its checkpoint:

    cycles.jsonl   one JSON line per complete cycle, rewritten whole and atomically
    tb/            scalars: eval/, fidelity/, rollout/, grade/, learner/, time/ (step: total env
                   steps), and the cycle's imagined-vs-realized figure
    console        "cycle C: capability ..., grade weight ..., N env steps, S s"

``flywheel status`` and ``flywheel report`` read ``cycles.jsonl`` (``read_cycles``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.rows import IMAGINED, STEPS
from sims.files import write_bytes_atomic

CYCLES = "cycles.jsonl"


def read_cycles(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / CYCLES
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_cycles(run_dir: Path, records: list[dict[str, Any]]) -> None:
    """Rewritten whole and atomically: a crash never leaves half a line."""
    write_bytes_atomic(Path(run_dir) / CYCLES, "".join(json.dumps(r) + "\n" for r in records).encode())


class CycleLogger:
    """Owns a run's ``cycles.jsonl``, its TensorBoard writer and the per-cycle console line."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any], start_cycle: int,
                 console: Callable[[str], None] = print) -> None:
        """Keeps the records of the cycles before ``start_cycle`` (those a resume does not redo)."""
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir, self.config, self.console = Path(run_dir), dict(config), console
        self.records = [r for r in read_cycles(self.run_dir) if r["cycle"] < start_cycle]
        write_cycles(self.run_dir, self.records)
        self.writer = SummaryWriter(str(self.run_dir / "tb"))

    @property
    def env_steps_total(self) -> int:
        return self.records[-1]["env_steps_total"] if self.records else 0

    def log(self, record: dict[str, Any], rows: Mapping[str, np.ndarray], began: float) -> None:
        """The cycle's line in ``cycles.jsonl``, its TensorBoard scalars and figure, its console line."""
        self.records.append(record)
        write_cycles(self.run_dir, self.records)
        self._scalars(record)
        self._imagination(record, rows)
        self.console(f"cycle {record['cycle']}: capability {record['capability']:.3f}, grade weight "
                     f"{record['grades']['weight']:.3f}, {record['env_steps']} env steps, "
                     f"{time.perf_counter() - began:.1f} s")

    def close(self) -> None:
        self.writer.close()

    def _scalars(self, record: dict[str, Any]) -> None:
        step, add = record["env_steps_total"], self.writer.add_scalar
        add("eval/capability", record["capability"], step)
        add("eval/mean_return", record["eval"]["mean_return"], step)
        add("fidelity/measured", record["fidelity"], step)
        add("rollout/success_rate", record["rollout"]["success_rate"], step)
        add("rollout/quarantined_episodes", record["rollout"]["quarantined_episodes"], step)
        for key, value in record["grades"].items():
            add(f"grade/{key}", value, step)
        for key, value in record["learner"].items():
            if isinstance(value, (int, float)):
                add(f"learner/{key}", value, step)
        add("learner/policy_lag", record["policy_lag"], step)
        for key, value in record["seconds"].items():
            add(f"time/{key}", value, step)
        self.writer.flush()

    def _imagination(self, record: dict[str, Any], rows: Mapping[str, np.ndarray]) -> None:
        """Imagined against realized proprio of a few of this cycle's chunks (planning rollouts only)."""
        if IMAGINED not in rows or not len(rows[STEPS]):
            return
        from flywheel.report import imagination_figure

        self.writer.add_figure("rollout/imagined_vs_realized", imagination_figure(rows), record["env_steps_total"])
        self.writer.flush()
