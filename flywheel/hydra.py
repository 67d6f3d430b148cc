"""Running a command under Hydra, and turning our own clear errors into one line.

``flywheel.cli`` dispatches to the command modules (``flywheel.commands``); those that take a
configuration call ``run_hydra`` from here, so no command module imports the CLI back.
"""

from __future__ import annotations

import errno
import os
import sys


class SweepStopped(KeyboardInterrupt):
    """A stop asked for during one run of a sweep ends the sweep (Hydra runs the next job after an
    Exception); ``exit_code`` is the stopped run's (``flywheel.controller.RunStopped``)."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def run_hydra(prog: str, config_name: str, task, overrides: list[str]) -> int:
    """Run ``task(cfg)`` under Hydra with ``overrides`` as if they were the command line."""
    import hydra

    import configs.schema  # noqa: F401  (registers the typed schema Hydra validates against)
    from configs import CONFIG_DIR

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)
    def _entry(cfg) -> None:
        record_exit_code(report_user_errors(task, cfg))

    _EXIT_CODES.clear()
    saved = sys.argv
    # Hydra names the app after the file that defines the entry point (this one) in --help's
    # banner; a Hydra override, so it is not among the task's (``hydra.overrides.task``).
    sys.argv = [prog, f"hydra.help.app_name='{prog}'", *overrides]
    try:
        _entry()
    except SweepStopped as stopped:
        print(f"flywheel: {stopped}", file=sys.stderr)
        return stopped.exit_code
    finally:
        sys.argv = saved
    return max(_EXIT_CODES, default=0)


# A multirun runs its jobs here one after another, or in child processes (``hydra_plugins.flywheel_launcher``):
# either way each job's exit code lands here, and the worst of them is the command's.
_EXIT_CODES: list[int] = []


def record_exit_code(code: int | None) -> None:
    _EXIT_CODES.append(code or 0)


def report_user_errors(fn, *args) -> int:
    """Run ``fn``; bad input (our own clear errors) becomes one line on stderr and exit code 2.

    Set FLYWHEEL_DEBUG=1 to get the traceback instead.
    """
    import sims

    user_errors = (ValueError, TypeError, FileNotFoundError, sims.UnknownSimError, sims.SimPluginError,
                   sims.RenderingUnavailable)
    try:
        return fn(*args) or 0
    except (*user_errors, OSError) as exc:
        storage = getattr(exc, "errno", None) in STORAGE_ADVICE
        if os.environ.get("FLYWHEEL_DEBUG") or not (storage or isinstance(exc, user_errors)):
            raise
        print(f"flywheel: error: {storage_error(exc) if storage else exc}", file=sys.stderr)
        return 2


# What the user can do about a storage error, by errno: a full disk and a read-only or
# forbidden directory are the machine's state, not a bug, so they get one line, not a traceback.
_FULL = "free space there (every complete cycle is kept), then continue the run with resume=RUN_DIR"
_READ_ONLY = "make it writable, or put the run elsewhere (run_dir=)"
STORAGE_ADVICE = {errno.ENOSPC: _FULL, errno.EDQUOT: _FULL, errno.EROFS: _READ_ONLY, errno.EACCES: _READ_ONLY,
                  errno.EPERM: _READ_ONLY}


def storage_error(exc: OSError) -> str:
    """One line for a storage ``OSError``: the path, what went wrong, what to do."""
    return f"{exc.filename or 'a file'}: {exc.strerror or exc}: {STORAGE_ADVICE[exc.errno]}"
