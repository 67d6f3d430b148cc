"""compare_capability: seeds of a setting averaged with their standard error, mismatched evaluations refused.

The inputs are bench_capability's result files; a real one takes minutes, so the curves here
are written in its schema (the fields the comparison reads) with numbers chosen to check."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import compare_capability  # noqa: E402


def result(path: Path, successes, episodes=40, seed=1_000_000):
    curve = [{"cycle": i - 1, "capability": s, "mean_return": -20.0 + i, "env_steps_total": 3200 * i,
              "sim_steps_total": 57600 * i, "seconds": 10.0 * (i > 0), "eval_seconds": 2.0 * (i > 0)}
             for i, s in enumerate(successes)]
    config = {"reference": {"name": "mujoco/reacher-twin"}, "eval": {"episodes": episodes, "seed": seed}}
    path.write_text(json.dumps({"config": config, "curve": curve}))


def test_seeds_are_averaged_with_their_standard_error(tmp_path, capsys):
    result(tmp_path / "a0.json", [0.1, 0.2, 0.4])
    result(tmp_path / "a1.json", [0.1, 0.4, 0.6, 0.9])  # one cycle longer: only the common ones count
    compare_capability.main(["--name", "cmp", "--results", str(tmp_path), "--variant", "A=a0,a1"])
    out = json.loads((tmp_path / "cmp.json").read_text())
    (summary,) = [v["summary"] for v in out["variants"].values()]
    assert [r["env_steps"] for r in summary] == [0, 3200, 6400]
    assert summary[2]["success_rate"] == pytest.approx(0.5) and summary[2]["success_rate_se"] == pytest.approx(0.1)
    assert summary[2]["wall_s"] == pytest.approx(16.0)  # training time: each cycle's seconds without evaluation
    assert (tmp_path / "cmp.png").read_bytes().startswith(b"\x89PNG")
    assert "0.500 ± 0.100" in capsys.readouterr().out
    compare_capability.main(["--name", "cmp", "--results", str(tmp_path), "--variant", "A=a0,a1", "--up-to", "3200"])
    (summary,) = [v["summary"] for v in json.loads((tmp_path / "cmp.json").read_text())["variants"].values()]
    assert [r["env_steps"] for r in summary] == [0, 3200]


def test_runs_evaluated_differently_are_refused_naming_the_file(tmp_path):
    result(tmp_path / "a.json", [0.1, 0.2])
    result(tmp_path / "b.json", [0.1, 0.2], episodes=64)
    with pytest.raises(SystemExit, match="b.json"):
        compare_capability.main(["--name", "cmp", "--results", str(tmp_path), "--variant", "A=a", "--variant", "B=b"])
    with pytest.raises(SystemExit, match="no result"):
        compare_capability.main(["--name", "cmp", "--results", str(tmp_path), "--variant", "A=missing"])
    with pytest.raises(SystemExit):
        compare_capability.main(["--name", "cmp", "--results", str(tmp_path), "--variant", "no-equals-sign"])
