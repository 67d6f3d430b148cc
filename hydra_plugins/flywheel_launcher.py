"""``hydra/launcher=flywheel``: a sweep's runs, up to ``hydra.launcher.jobs`` at once, each its own process.

Hydra finds launchers only under ``hydra_plugins``, hence this file's place; it imports nothing
of ours until it launches, since Hydra imports it in every command.

A flywheel run keeps one core busy while its learner trains (a learner actor is one torch
thread, and a second thread does not make its small steps faster), so on a 2-core machine two
runs side by side finish a sweep in a little over half the time of one after another. With
``jobs: 1`` this is Hydra's basic launcher: the runs go one after another in this process,
sharing its embedded Ray. With ``jobs`` above 1 each run is the command line of a one-run sweep
(``flywheel run <the run's overrides> hydra.sweep.dir=<the sweep's>``) in a child process with
its own embedded Ray (or joining ``ray.address``), writing its output to
``SWEEP_DIR/logs/<run>.log``; the run directories, and so the report, are those of the
sequential sweep. Whatever runs share (a starter checkpoint, a learned sim's world model) is made
by the first run that needs it while the others wait on its lock (``sims.files.exclusive``).

A stop (SIGINT, SIGTERM) starts no further run and passes the signal to the running ones, which
finish their phase and checkpoint; the sweep then exits with the signal's code, and the same
command resumes it. A run that fails does not stop the others; the command exits with the worst
run's code.
"""


import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf

TARGET = "hydra_plugins.flywheel_launcher.FlywheelLauncher"
LOG_TAIL_LINES = 20


@dataclass
class FlywheelLauncherConf:
    _target_: str = TARGET
    jobs: int = 1  # runs at once; above 1, each in its own process


ConfigStore.instance().store(group="hydra/launcher", name="flywheel", node=FlywheelLauncherConf, provider="flywheel")


class FlywheelLauncher(Launcher):
    def __init__(self, jobs: int = 1) -> None:
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"hydra.launcher.jobs must be a whole number >= 1 (runs at once), got {jobs!r}")
        self.jobs = jobs
        self.basic = BasicLauncher()
        self.config = None
        self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.basic.setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if self.jobs == 1:
            return self.basic.launch(job_overrides, initial_job_idx)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        jobs = [Job(list(overrides), self._run_name(overrides), sweep_dir) for overrides in job_overrides]
        codes = run_in_parallel(jobs, self.jobs)
        from flywheel.hydra import record_exit_code

        for code in codes.values():
            record_exit_code(code)
        return [JobReturn(overrides=job.overrides, status=JobStatus.COMPLETED, _return_value=codes[job.name])
                for job in jobs]

    def _run_name(self, overrides: Sequence[str]) -> str:
        """The run's sub-directory of the sweep (``hydra.sweep.subdir``), as the run itself will name it."""
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        return str(OmegaConf.select(config, "hydra.sweep.subdir"))


@dataclass
class Job:
    overrides: list[str]
    name: str
    sweep_dir: Path

    @property
    def log(self) -> Path:
        return self.sweep_dir / "logs" / f"{self.name}.log"

    def command(self) -> list[str]:
        # The child is a sweep of this one run, in its own process, without a report of its own
        # (the parent reports once every run has returned).
        return [sys.executable, "-m", "flywheel.cli", "run", *self.overrides, f"hydra.sweep.dir={self.sweep_dir}",
                "hydra.launcher.jobs=1", "~hydra.callbacks.report"]


def run_in_parallel(jobs: list[Job], at_once: int, poll_s: float = 0.5) -> dict[str, int]:
    """Run ``jobs`` as child processes, ``at_once`` at a time; their exit codes by name. A SIGINT or
    SIGTERM here starts no further job, goes to the running ones, and raises ``SweepStopped`` once
    they have ended."""
    from flywheel.hydra import SweepStopped

    waiting, running, codes = deque(jobs), {}, {}
    stop: list[int] = []

    def on_signal(signum, frame) -> None:
        if not stop:
            print(f"\nflywheel: {signal.Signals(signum).name} received; no further run starts, the running ones "
                  "finish their phase", flush=True)
            for _, proc, _, _ in running.values():
                proc.send_signal(signum)
        stop.append(signum)

    saved = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    print(f"{len(jobs)} runs, {at_once} at a time; each writes its output to {jobs[0].log.parent}/", flush=True)
    try:
        while running or (waiting and not stop):
            while waiting and len(running) < at_once and not stop:
                job = waiting.popleft()
                job.log.parent.mkdir(parents=True, exist_ok=True)
                log = job.log.open("ab")
                # Its own session: a Ctrl-C in the terminal reaches this process only, which passes it
                # on once (a second SIGINT would be the run's own business).
                proc = subprocess.Popen(job.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
                running[job.name] = (job, proc, log, time.monotonic())
                print(f"started {job.name}: {' '.join(filter_overrides(job.overrides))} (log: {job.log})", flush=True)
            time.sleep(poll_s)
            for name, (job, proc, log, started) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[name]
                codes[name] = proc.returncode
                done = len(codes)
                print(f"{'finished' if proc.returncode == 0 else f'exit code {proc.returncode}:'} {name} in "
                      f"{time.monotonic() - started:.0f} s ({done}/{len(jobs)} done)", flush=True)
                if proc.returncode != 0 and not stop:
                    print(tail(job.log), file=sys.stderr, flush=True)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    if stop:
        raise SweepStopped(f"sweep stopped ({len(codes)} of {len(jobs)} runs ended, {len(waiting)} not started); "
                           "the same command resumes it", 128 + stop[0])
    return codes


def tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join([f"--- last lines of {log} ---", *text])
