"""Golden test: a tiny seeded flywheel run must not change, bit for bit.

Why: refactors that promise "no behaviour change" (issue 16, the typed chunk-row schema)
need proof that rollouts, grades, losses and checkpoint bytes are identical before and
after. This test runs the real ``flywheel.controller.run`` (embedded Ray, 2 rollout workers,
``choose=sim`` with planning, 2 cycles so replay and the weight broadcast are exercised) and
compares against ``golden/tiny_run.json`` (the run is ``tiny_two_cycle_run`` of
``conftest.py``, which the resume tests share):

- every column of every committed shard: dtype, shape and sha256 of its bytes;
- the per-cycle grade summary and learner losses of ``cycles.jsonl``, as exact floats;
- ``flywheel.objective.batch_loss`` of the cycle-0 checkpoint on cycle-0's rows, for the
  ``grade`` and ``outcome`` advantages, as exact floats;
- sha256 of each checkpoint's safetensors files (weights, optimizer state + torch RNG).

Regenerating: ``FLYWHEEL_WRITE_GOLDEN=1 pytest tests/flywheel/test_golden_run.py`` writes
the file from the current code instead of comparing. Only do that for a deliberate
behaviour change, and say in the commit why the golden changed.

Bitwise float results depend on the CPU's SIMD kernels. The golden records the torch CPU
capability, machine and CPU model it was made on; elsewhere, integer/bool/string columns are still
compared bitwise, and float columns, losses and checkpoint tensors through numeric
fingerprints (sum and sum of squares) with ``numpy.allclose(rtol=1e-4, atol=1e-6)``. A
rollout is chaotic, so on another CPU even that may fail; regenerate there if needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.numpy import load_file as load_numpy

from flywheel import checkpoint as run_checkpoint
from configs.learning import ObjectiveConfig
from flywheel.logger import read_cycles
from flywheel.objective import batch_loss
from flywheel.store import RolloutStore, from_table
from policies.agent import Agent

pytestmark = pytest.mark.xdist_group("ray-run")

GOLDEN = Path(__file__).parent / "golden" / "tiny_run.json"
WRITE = os.environ.get("FLYWHEEL_WRITE_GOLDEN") == "1"
RTOL, ATOL = 1e-4, 1e-6
# Learner metrics that are pure functions of the data and seeds; "seconds"/"wall_seconds" are timings.
LEARNER_KEYS = ("loss_future", "loss_action", "loss_return", "loss_total", "loss_total_first",
                "loss_total_last", "steps", "samples", "rows")
# The golden pins the two advantages it was recorded with; "task" is checked on rows from
# collect in test_rollout_and_objective.py (it reads the grader's progress column).
ADVANTAGES = ("grade", "outcome")
# The safetensors files of a checkpoint: the model's weights, and the optimizer state plus the
# torch RNG state. The JSON files (model/config.json, trainer.json) are left out: trainer.json
# holds the cycle's record, with wall-clock seconds, and config.json only repeats the config.
CHECKPOINT_FILES = ("model/model.safetensors", "trainer.safetensors")


# ---------------------------------------------------------------------- fingerprints


def column_digest(values: np.ndarray) -> dict:
    values = np.asarray(values)
    if values.dtype == object:
        data = "\0".join(str(v) for v in values.tolist()).encode()
    else:
        data = np.ascontiguousarray(values).tobytes()
    digest = {"dtype": str(values.dtype), "shape": list(values.shape), "sha256": hashlib.sha256(data).hexdigest()}
    if values.dtype.kind == "f":
        as64 = values.astype(np.float64)
        digest |= {"sum": float(as64.sum()), "sumsq": float((as64 * as64).sum())}
    return digest


def tensor_file_digest(path: Path) -> dict:
    tensors = load_numpy(str(path))  # safetensors, never pickle
    per_tensor = {}
    for name in sorted(tensors):
        as64 = tensors[name].astype(np.float64)
        per_tensor[name] = [str(tensors[name].dtype), float(as64.sum()), float((as64 * as64).sum())]
    return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "tensors": per_tensor}


def shard_digests(run_dir: Path, cycle: int) -> dict:
    store = RolloutStore(run_dir / "store")
    shards = {}
    for shard in store.manifest(cycle).shards:
        columns = from_table(pq.read_table(store.root / shard.path))
        shards[shard.path] = {"columns": sorted(columns),
                              "digests": {name: column_digest(v) for name, v in sorted(columns.items())}}
    return shards


def objective_losses(run_dir: Path) -> dict:
    """batch_loss of the cycle-0 checkpoint on cycle-0's rows, with fixed per-row noise."""
    model, _, _ = run_checkpoint.load(run_dir / "checkpoints" / "cycle-000000", restore_rng=False)
    agent = Agent(model=model)
    rows, _ = RolloutStore(run_dir / "store").read([0])
    out = {}
    with torch.no_grad():
        for advantage in ADVANTAGES:
            config = ObjectiveConfig(advantage=advantage, act_on="imagined")
            losses = batch_loss(agent, rows, config, noise_seed=(0, 0, 0))
            out[advantage] = {k: float(v) for k, v in sorted(losses.items())}
    return out


def fingerprint(run_dir: Path) -> dict:
    records = read_cycles(run_dir)
    cycles = []
    for record in records:
        checkpoint = run_dir / "checkpoints" / f"cycle-{record['cycle']:06d}"
        cycles.append({
            "cycle": record["cycle"],
            "shards": shard_digests(run_dir, record["cycle"]),
            "grades": record["grades"],
            "learner": {k: record["learner"][k] for k in LEARNER_KEYS},
            "checkpoint": {name: tensor_file_digest(checkpoint / name) for name in CHECKPOINT_FILES},
        })
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine(),
            "cpu_model": cpu_model(), "cycles": cycles, "batch_loss": objective_losses(run_dir)}


def cpu_model() -> str:
    """The CPU's model name: two AVX-512 CPUs of different makers round some float kernels
    (numpy's, MuJoCo's) differently, so torch's capability alone does not make bits comparable."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


# ---------------------------------------------------------------------- comparison


def close(got, want) -> bool:
    return bool(np.allclose(np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64),
                            rtol=RTOL, atol=ATOL))


def check_numbers(got: dict, want: dict, where: str, exact: bool) -> None:
    assert sorted(got) == sorted(want), f"{where}: keys {sorted(got)} != golden {sorted(want)}"
    for key in want:
        if exact or not isinstance(want[key], float):
            assert got[key] == want[key], f"{where}[{key!r}] = {got[key]!r}, golden {want[key]!r}"
        else:
            assert close(got[key], want[key]), f"{where}[{key!r}] = {got[key]!r}, golden {want[key]!r} (allclose)"


def check_column(got: dict, want: dict, where: str, exact: bool) -> None:
    for key in ("dtype", "shape"):
        assert got[key] == want[key], f"{where}: {key} {got[key]} != golden {want[key]}"
    if exact or "sum" not in want:  # integers, bools and strings do not depend on the CPU's float kernels
        assert got["sha256"] == want["sha256"], f"{where}: bytes differ from the golden (sha256)"
    else:
        assert close([got["sum"], got["sumsq"]], [want["sum"], want["sumsq"]]), (
            f"{where}: sum/sumsq {got['sum']}/{got['sumsq']} not close to golden {want['sum']}/{want['sumsq']}")


def check_shards(got: dict, want: dict, where: str, exact: bool) -> None:
    assert sorted(got) == sorted(want), f"{where}: shards {sorted(got)} != golden {sorted(want)}"
    for path, shard in want.items():
        columns = set(got[path]["columns"])
        expected = set(shard["columns"])
        assert columns == expected, (f"{where} {path}: columns missing {sorted(expected - columns)}, "
                                     f"added {sorted(columns - expected)}")
        for name in shard["columns"]:
            check_column(got[path]["digests"][name], shard["digests"][name], f"{where} {path} column {name!r}", exact)


def check_checkpoint(got: dict, want: dict, where: str, exact: bool) -> None:
    assert sorted(got) == sorted(want), f"{where}: files {sorted(got)} != golden {sorted(want)}"
    for name, file in want.items():
        if exact:
            assert got[name]["sha256"] == file["sha256"], f"{where} {name}: bytes differ from the golden (sha256)"
            continue
        tensors = got[name]["tensors"]
        assert sorted(tensors) == sorted(file["tensors"]), f"{where} {name}: tensor names differ from the golden"
        for tensor, (dtype, total, squares) in file["tensors"].items():
            g_dtype, g_total, g_squares = tensors[tensor]
            assert g_dtype == dtype, f"{where} {name} {tensor!r}: dtype {g_dtype} != golden {dtype}"
            same = (g_total, g_squares) == (total, squares) if dtype.startswith(("int", "uint", "bool")) \
                else close([g_total, g_squares], [total, squares])
            assert same, f"{where} {name} {tensor!r}: sum/sumsq {g_total}/{g_squares} != golden {total}/{squares}"


def check_against(got: dict, want: dict) -> None:
    keys = ("cpu_capability", "machine", "cpu_model")
    exact = all(got.get(k) == want.get(k) for k in keys)  # a golden without a CPU model: compared as another CPU
    assert [c["cycle"] for c in got["cycles"]] == [c["cycle"] for c in want["cycles"]], "cycles run differ"
    for g, w in zip(got["cycles"], want["cycles"]):
        where = f"cycle {w['cycle']}"
        check_shards(g["shards"], w["shards"], where, exact)
        check_numbers(g["grades"], w["grades"], f"{where} grades", exact)
        check_numbers(g["learner"], w["learner"], f"{where} learner", exact)
        check_checkpoint(g["checkpoint"], w["checkpoint"], f"{where} checkpoint", exact)
    assert sorted(got["batch_loss"]) == sorted(want["batch_loss"]), "batch_loss advantages differ"
    for advantage, losses in want["batch_loss"].items():
        check_numbers(got["batch_loss"][advantage], losses, f"batch_loss(advantage={advantage!r})", exact)


def test_a_tiny_seeded_run_matches_the_golden(tiny_two_cycle_run):
    got = fingerprint(tiny_two_cycle_run)
    if WRITE:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"wrote {GOLDEN}; commit it with the reason the behaviour changed")
    assert GOLDEN.is_file(), f"no golden at {GOLDEN}: run once with FLYWHEEL_WRITE_GOLDEN=1"
    check_against(got, json.loads(GOLDEN.read_text()))
