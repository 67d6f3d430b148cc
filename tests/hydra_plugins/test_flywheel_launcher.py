"""The parallel sweep launcher's scheduling, on child processes that stand in for runs (a real
parallel sweep runs in tests/flywheel/test_sweep.py): how many at once, exit codes, stops."""

import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from flywheel.hydra import SweepStopped
from hydra_plugins.flywheel_launcher import FlywheelLauncher, Job, run_in_parallel

# A stand-in run: records when it started and ended, exits with its code; on SIGINT it records
# that and exits 130, as a flywheel run does after finishing its phase.
CHILD = """
import signal, sys, time
spans, name, seconds, code = sys.argv[1:5]
def stopped(signum, frame):
    open(spans, "a").write(f"{name} stopped\\n")
    sys.exit(130)
signal.signal(signal.SIGINT, stopped)
start = time.time()
time.sleep(float(seconds))
open(spans, "a").write(f"{name} {start} {time.time()}\\n")
print("the last words of", name)
sys.exit(int(code))
"""


@dataclass
class FakeJob(Job):
    seconds: float = 0.5
    code: int = 0
    spans: Path = Path()

    def command(self) -> list[str]:
        return [sys.executable, "-c", CHILD, str(self.spans), self.name, str(self.seconds), str(self.code)]


def jobs(tmp_path, n, **kw):
    return [FakeJob([f"seed={i}"], f"run{i}", tmp_path, spans=tmp_path / "spans.txt", **kw) for i in range(n)]


def test_at_most_jobs_run_at_once_and_every_exit_code_comes_back(tmp_path, capsys):
    todo = jobs(tmp_path, 5)
    todo[3].code = 2  # a config error in one run does not stop the others
    codes = run_in_parallel(todo, at_once=2, poll_s=0.05)
    assert codes == {"run0": 0, "run1": 0, "run2": 0, "run3": 2, "run4": 0}
    spans = [line.split() for line in (tmp_path / "spans.txt").read_text().splitlines()]
    assert len(spans) == 5
    for _, start, _ in spans:  # how many ran at each start: never more than two
        assert sum(float(s) <= float(start) < float(e) for _, s, e in spans) <= 2
    assert max(float(s) for _, s, _ in spans) - min(float(s) for _, s, _ in spans) < 5 * 0.5  # not one by one
    assert "the last words of run2" in (tmp_path / "logs" / "run2.log").read_text()
    err = capsys.readouterr().err
    assert "the last words of run3" in err and "run2" not in err  # the failed run's log tail, only its


def test_a_sigint_starts_no_further_run_and_stops_the_running_ones(tmp_path):
    todo = jobs(tmp_path, 4, seconds=30)
    before = signal.getsignal(signal.SIGINT)  # the default, or what an earlier test's Ray left in this worker
    threading.Timer(1.5, lambda: signal.raise_signal(signal.SIGINT)).start()
    started = time.monotonic()
    with pytest.raises(SweepStopped) as stopped:
        run_in_parallel(todo, at_once=2, poll_s=0.05)
    assert stopped.value.exit_code == 130 and time.monotonic() - started < 20
    assert sorted((tmp_path / "spans.txt").read_text().splitlines()) == ["run0 stopped", "run1 stopped"]
    assert not (tmp_path / "logs" / "run2.log").exists()  # never started
    assert signal.getsignal(signal.SIGINT) is before  # handlers given back


@pytest.mark.parametrize("jobs_", [0, -1, 1.5, True])
def test_a_bad_number_of_jobs_names_the_setting(jobs_):
    with pytest.raises(ValueError, match=r"hydra\.launcher\.jobs must be a whole number >= 1"):
        FlywheelLauncher(jobs=jobs_)
