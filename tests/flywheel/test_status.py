"""``flywheel status RUN_DIR`` on a run directory written by the logger's and the store's own code (no Ray)."""

import dataclasses
import json

import pytest

from configs.run_schema import RunConfig
from flywheel.cli import main
from flywheel.logger import START, capability_text, write_cycles
from flywheel.store import RolloutStore

BOX = set("│┃─━┏┗┌└╇┡")


def cycle_record(cycle: int) -> dict:
    """The fields of a ``cycles.jsonl`` line that the status table shows."""
    return {"cycle": cycle, "weight_version": cycle + 1, "capability": 0.25 + 0.125 * cycle,
            "capability_stderr": 0.0625, "fidelity": 0.875, "grades": {"weight": 0.5, "imagination_error": 0.75},
            "env_steps": 96, "env_steps_total": 96 * (cycle + 1), "sim_steps": 1234, "sim_steps_total": 1234 * (cycle + 1),
            "rollout": {"weight_versions": [cycle]}, "seconds": {"cycle": 2.5}}


START_RECORD = {"cycle": -1, "weight_version": 0, "capability": 0.125, "capability_stderr": 0.03125,
                "seconds": {"eval": 1.5}}


@pytest.fixture
def run_dir(tmp_path, make_rows):
    """Two complete cycles and their start, and a store of two shards per cycle."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(RunConfig(run_dir=str(run_dir)))))
    write_cycles(run_dir, [cycle_record(c) for c in range(2)])
    (run_dir / START).write_text(json.dumps(START_RECORD))
    store = RolloutStore(run_dir / "store")
    for cycle in range(2):
        shards = [store.write_shard(cycle, w, make_rows(seed=w, first_episode=3 * w))[0] for w in range(2)]
        store.commit_cycle(cycle, shards)
    return run_dir


def test_status_json_holds_the_fields_of_the_table(run_dir, capsys):
    assert main(["status", str(run_dir), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)  # the whole of stdout is one document
    assert status["start"] == {"capability": 0.125, "capability_stderr": 0.03125, "weight_version": 0, "seconds": 1.5}
    for got, record in zip(status["cycles"], [cycle_record(c) for c in range(2)], strict=True):
        assert got["cycle"] == record["cycle"] and got["capability"] == record["capability"]
        assert got["grade_weight"] == record["grades"]["weight"] and got["fidelity"] == record["fidelity"]
        assert (got["sim_steps_total"], got["env_steps_total"]) == (record["sim_steps_total"], record["env_steps_total"])
        assert got["rollout_weight_versions"] == [record["cycle"]] and got["weight_version"] == record["cycle"] + 1
    assert status["store"] == []  # every shard intact


def test_status_is_plain_columns_when_piped(run_dir, capsys):
    assert main(["status", str(run_dir)]) == 0  # capsys's stdout is not a terminal
    out = capsys.readouterr().out
    assert not set(out) & BOX
    header, start, *cycles = [line.split("\t") for line in out.splitlines()]
    assert header[:3] == ["cycle", "capability", "fidelity"] and len(start) == len(header)
    assert start[:2] == ["start", capability_text(START_RECORD)]
    assert [(c[0], c[1], c[8]) for c in cycles] == [
        (str(c), capability_text(cycle_record(c)), f"{cycle_record(c)['sim_steps_total']:,}") for c in range(2)]


def test_status_reports_missing_and_corrupt_shards(run_dir, capsys):
    store = RolloutStore(run_dir / "store")
    corrupt, intact = store.manifest(0).shards
    missing = store.manifest(1).shards[1]
    data = bytearray((store.root / corrupt.path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (store.root / corrupt.path).write_bytes(bytes(data))
    (store.root / missing.path).unlink()

    assert main(["status", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert f"cycle 0: shards 1 corrupt (sha256 differs from the manifest) ({corrupt.path})" in err
    assert f"cycle 1: shards 1 missing ({missing.path})" in err
    assert intact.path not in err
    assert main(["status", str(run_dir), "--json"]) == 0
    audits = json.loads(capsys.readouterr().out)["store"]
    assert [(a["cycle"], a["missing"], a["corrupt"]) for a in audits] == [(0, [], [corrupt.path]), (1, [missing.path], [])]
    # What status reports is what a read skips.
    assert store.read([0, 1])[1].corrupt_shards == [corrupt.path, missing.path]


def test_status_names_an_unreadable_manifest(run_dir, capsys):
    manifest = RolloutStore(run_dir / "store").manifest_path(1)
    manifest.write_text(manifest.read_text()[:20])  # truncated by a full disk
    assert main(["status", str(run_dir)]) == 0
    assert f"cycle 1: {manifest}: not a readable manifest" in capsys.readouterr().err
