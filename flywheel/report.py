"""The fidelity report: does capability compound faster in a more faithful training sim?

    runs = [run for d in run_dirs for run in load_runs(d)]   # a multi-task run: one per task
    check_comparable(runs)
    write_report(runs, out_dir)   # capability_vs_cycle.png, compounding_vs_fidelity.png,
                                  # relative_capability.png, imagined_vs_realized.png,
                                  # imagined_vs_realized_frames.png (camera runs), report.md

The **compounding rate** of a run is the least-squares slope of its capability (measured in
the reference sim after each cycle's learning, ``cycles.jsonl``) against the cycle index, in
capability per cycle. It uses every complete cycle, so one noisy evaluation moves it less
than a first-to-last difference would; it needs two complete cycles and is NaN with fewer.
Every number and sentence this module writes uses this one definition
(``compounding_rate``). Its standard error (``rate_stderr``) comes from the scatter of
capability about the fitted line, so the report can say whether the differences between
runs stand out from the noise of evaluation.

A run's capability at the *start* is its first complete cycle's: the controller evaluates
only after learning, so the pretrained agent's capability before any cycle is not stored.
A run's *measured fidelity* is the training sim's fidelity against the reference on the
reference's probe set, recorded with every cycle (the mean of those records; they are
measured once per start or resume of the run).

Runs in one report must share the reference sim and the agent (architecture and starting
weights); otherwise their capabilities are different quantities and ``check_comparable``
refuses them, naming the run; a sweep directory's runs are grouped by reference instead
(``by_reference``), one report per group. A multi-task run is one run per task (``load_runs``,
``task_runs``), each in its task's reference group. A run with fewer complete cycles than it was
configured for is reported with the cycles it has, and the report names the missing ones.

A sweep runs each training sim on several seeds: the statistics over them (a training sim's
rate with its interval, the thesis test, the practice gap) are ``flywheel.sweep_stats``, their
figures ``flywheel.sweep_figures``.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flywheel import sweep_stats
from flywheel.logger import START, read_start
from flywheel.rows import (CHUNK, CYCLE, EPISODE, FRAME, IMAGINED, IMAGINED_FRAMES, PROPRIO_DIM, REALIZED,
                           REALIZED_FRAMES, SIM, STEPS, ChunkRows, episode_index)
from sims.files import write_bytes_atomic

# Below these, a correlation across runs says little: stated in the paragraph, not hidden.
FEW_RUNS = 8
FEW_EPISODES = 30


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    cycles: list[dict[str, Any]]  # complete cycles, in cycle order
    missing: list[int] = field(default_factory=list)  # configured cycles with no record
    start: dict[str, Any] | None = None  # the starting weights' evaluation (start.json), where stored
    multitask: bool = False  # one task of a multi-task run (``task_runs``): its sim, reference and capability

    @property
    def name(self) -> str:
        """The run's name in tables: its directory, and the task where the run trained several."""
        return f"{self.path.name} [{self.sim}]" if self.multitask else self.path.name

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def sim(self) -> str:
        return self.config["sim"]["name"]

    @property
    def setting(self) -> str:
        """The training sim as configured: its name, how often the engine corrects a learned sim,
        and whether it was practised beside other tasks (its own row: a different experiment)."""
        every = self.config["sim"].get("correct_every")
        setting = self.sim if every is None else f"{self.sim} correct_every={every}"
        return f"{setting} in a multi-task run" if self.multitask else setting

    @property
    def knob(self) -> float:
        return float(self.config["sim"].get("fidelity", 1.0))

    @property
    def measured_fidelity(self) -> float:
        values = [c["fidelity"] for c in self.cycles if c.get("fidelity") is not None]
        return float(np.mean(values)) if values else math.nan

    @property
    def cycle_index(self) -> np.ndarray:
        return np.array([c["cycle"] for c in self.cycles], dtype=float)

    @property
    def capabilities(self) -> np.ndarray:
        return np.array([c["capability"] for c in self.cycles], dtype=float)

    @property
    def success_episodes(self) -> int | None:
        """Evaluation episodes per capability when capability is a success rate, else None."""
        evals = [c.get("eval") or {} for c in self.cycles]
        if evals and all("success_rate" in e and e.get("capability") == e["success_rate"] for e in evals):
            return int(min(e.get("episodes", 0) for e in evals)) or None
        return None

    @property
    def rate(self) -> float:
        return compounding_rate(self.capabilities, self.cycle_index)

    @property
    def label(self) -> str:
        return f"{self.setting} (fidelity knob {self.knob:g}, measured {self.measured_fidelity:.3f})"


def load_runs(run_dir: str | Path) -> list[Run]:
    """A run directory as the report's runs: the run, or one per task of a multi-task run
    (``task_runs``); ValueError naming the directory otherwise."""
    run = _load(Path(run_dir))
    return task_runs(run) if run.config.get("tasks") else [run]


def load_run(run_dir: str | Path) -> Run:
    """A single-task run directory's config and complete cycles; ValueError naming the directory otherwise."""
    run = _load(Path(run_dir))
    if run.config.get("tasks"):  # its sim and reference are only its first task's: a row would mislabel it
        names = ", ".join(str(task.get("sim", {}).get("name")) for task in run.config["tasks"])
        raise ValueError(f"{run.path}: a multi-task run ({names}); load_runs gives one run per task")
    return run


def task_runs(run: Run) -> list[Run]:
    """A multi-task run as one run per task: the task's sim and reference in its config, and in
    each cycle the task's capability, evaluation, measured fidelity and env steps (summed over
    the cycles for the totals). Its sim steps are not counted per task (None); its seconds are
    the whole run's."""
    out = []
    for task in run.config["tasks"]:
        name, env_steps = task["sim"]["name"], 0
        cycles = []
        for record in run.cycles:
            mine = record["tasks"][name]
            env_steps += int(mine["env_steps"])
            # The rollouts' success is the tasks' together: no practice gap per task. ``tasks``
            # stays: every task's capability, for the report's multi-task section.
            cycles.append({k: v for k, v in record.items() if k != "rollout"}
                          | {"capability": mine["capability"], "capability_stderr": mine["capability_stderr"],
                             "eval": record["eval"]["tasks"][name], "fidelity": mine["fidelity"],
                             "env_steps": int(mine["env_steps"]), "env_steps_total": env_steps,
                             "sim_steps": None, "sim_steps_total": None})
        start = None
        if run.start is not None:  # its top level is the tasks' mean, as a cycle record's is
            start = run.start | dict(run.start["tasks"][name]) | {"eval": run.start["eval"]["tasks"][name]}
        config = run.config | {"sim": task["sim"], "reference": task["reference"],
                               "name": f"{run.config.get('name', run.path.name)} [{name}]"}
        out.append(Run(run.path, config, cycles, list(run.missing), start, multitask=True))
    return out


def _load(run_dir: Path) -> Run:
    config = _read_json(run_dir, "config.json")
    if not isinstance(config, dict) or not all(isinstance(config.get(k), dict) for k in ("sim", "reference")):
        raise ValueError(f"{run_dir}: config.json is not a flywheel run config (no sim / reference)")
    path = run_dir / "cycles.jsonl"
    if not path.is_file():
        raise ValueError(f"{run_dir}: no cycles.jsonl (not a flywheel run directory, or no cycle has completed)")
    records = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[int(record["cycle"])] = record
            float(record["capability"])
            for task in config.get("tasks") or []:
                float(record["tasks"][task["sim"]["name"]]["capability"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{run_dir}: cycles.jsonl line {number} is not a cycle record ({exc})") from exc
    if not records:
        raise ValueError(f"{run_dir}: cycles.jsonl holds no complete cycle")
    planned = int(config.get("cycles", max(records) + 1))
    missing = [c for c in range(planned) if c not in records]
    try:
        start = read_start(run_dir)
        if start is not None:
            float(start["capability"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{run_dir}: {START} is not a start record ({exc})") from exc
    return Run(run_dir, config, [records[c] for c in sorted(records)], missing, start)


def _read_json(run_dir: Path, name: str) -> Any:
    path = run_dir / name
    if not path.is_file():
        raise ValueError(f"{run_dir}: not a flywheel run directory (no {name})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{run_dir}: {name} is not valid JSON ({exc})") from exc


def compounding_rate(capabilities, cycles=None) -> float:
    """Least-squares slope of capability against cycle index (per cycle); NaN below two cycles."""
    y = np.asarray(capabilities, dtype=float)
    x = np.arange(len(y), dtype=float) if cycles is None else np.asarray(cycles, dtype=float)
    if len(y) < 2 or np.ptp(x) == 0:
        return math.nan
    if np.ptp(y) == 0:  # flat: exactly 0, where polyfit leaves float noise whose sign depends on the CPU
        return 0.0
    return float(np.polyfit(x, y, 1)[0])


def rate_stderr(capabilities, cycles=None, episodes: int | None = None) -> float:
    """The compounding rate's standard error from the scatter of capability about its fitted
    line (ordinary least squares); NaN below three cycles, where the scatter is unknown.

    With ``episodes`` (capability is a success rate over that many evaluation episodes) it is
    at least the binomial noise of the evaluations: a few cycles' scatter can fall well
    below it by chance, and would then make equal rates look different."""
    y = np.asarray(capabilities, dtype=float)
    x = np.arange(len(y), dtype=float) if cycles is None else np.asarray(cycles, dtype=float)
    if len(y) < 3 or np.ptp(x) == 0:
        return math.nan
    spread_x = np.sum((x - x.mean()) ** 2)
    residuals = y - np.polyval(np.polyfit(x, y, 1), x)
    scatter = float(np.sqrt(np.sum(residuals**2) / (len(y) - 2) / spread_x))
    if not episodes:
        return scatter
    p = min(max(float(y.mean()), 1.0 / episodes), 1.0 - 1.0 / episodes)
    return max(scatter, float(np.sqrt(p * (1 - p) / episodes / spread_x)))


def check_comparable(runs: list[Run]) -> None:
    """Same reference sim and same agent in every run, or a ValueError naming the odd one."""
    if not runs:
        raise ValueError("no runs to report")
    first = runs[0]
    for run in runs[1:]:
        for what, key in (("reference sim", _reference), ("agent", _agent)):
            if key(run) != key(first):
                raise ValueError(f"{run.path}: {what} differs from that of {first.path} "
                                 f"({_differences(key(run), key(first))}); "
                                 f"a report compares runs against one reference with one agent")


def _differences(mine: dict[str, Any], theirs: dict[str, Any], prefix: str = "") -> str:
    """``key: mine vs theirs`` for every (nested) key whose values differ."""
    out = []
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.append(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} vs {b!r}")
    return ", ".join(d for d in out if d)


def by_reference(runs: list[Run]) -> list[list[Run]]:
    """Runs grouped by reference sim, the largest group first (then in order of first appearance).

    A sweep may hold runs against more than one reference (the cross-engine twin the other way
    round); each group is reported on its own, since capabilities in different references are
    different quantities.
    """
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(json.dumps(_reference(run), sort_keys=True), []).append(run)
    return sorted(groups.values(), key=len, reverse=True)  # stable: ties keep their first appearance


def reference_slug(run: Run) -> str:
    """A folder name for a run's reference sim: ``reference-pybullet_reacher`` (plus its knob and
    parameters when they differ from the nominal)."""
    ref = _reference(run)
    slug = "reference-" + str(ref["name"]).replace("/", "_")
    if ref["fidelity"] is not None and float(ref["fidelity"]) != 1.0:
        slug += f"-knob{float(ref['fidelity']):g}"
    for key, value in sorted(ref["params"].items()):
        slug += f"-{key}{value:g}"
    return slug


def _reference(run: Run) -> dict[str, Any]:
    # The physics the capability is measured in; camera and seeds do not change it.
    ref = run.config["reference"]
    return {"name": ref.get("name"), "fidelity": ref.get("fidelity"), "params": ref.get("params") or {}}


def _agent(run: Run) -> dict[str, Any]:
    # Where the model runs does not change which agent it is.
    agent = {k: v for k, v in (run.config.get("agent") or {}).items() if k != "device"}
    return {"agent": agent, "pretrained": run.config.get("pretrained")}


# ---------------------------------------------------------------------- numbers


def summary(run: Run) -> dict[str, Any]:
    """One row of the report's table."""
    caps = run.capabilities
    return {
        "run": run.name, "seed": run.seed, "sim": run.setting, "knob": run.knob, "fidelity": run.measured_fidelity,
        "cycles": len(run.cycles), "planned": len(run.cycles) + len(run.missing), "missing": run.missing,
        "capability_start": float(caps[0]), "capability_end": float(caps[-1]), "rate": run.rate,
        "rate_stderr": rate_stderr(caps, run.cycle_index, run.success_episodes),
        "grade_weight": float(np.mean([c["grades"]["weight"] for c in run.cycles if "grades" in c] or [math.nan])),
        "env_steps": int(run.cycles[-1].get("env_steps_total", 0)),
        # Every engine step (look-ahead and grading too); None for runs logged before it was counted.
        "sim_steps": run.cycles[-1].get("sim_steps_total"),
        "seconds": float(sum(c.get("seconds", {}).get("cycle", 0.0) for c in run.cycles)),
    }


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties sharing their mean rank, as Spearman's rho needs."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def trend(runs: list[Run]) -> dict[str, Any]:
    """How the compounding rate moves with measured fidelity across runs."""
    points = [(r.measured_fidelity, r.rate) for r in runs if np.isfinite(r.measured_fidelity) and np.isfinite(r.rate)]
    f = np.array([p[0] for p in points])
    rate = np.array([p[1] for p in points])
    out: dict[str, Any] = {"fidelity": f, "rate": rate, "points": len(points),
                           "distinct_fidelities": len(np.unique(f)), "slope": math.nan, "intercept": math.nan,
                           "pearson": math.nan, "spearman": math.nan}
    if out["distinct_fidelities"] >= 2:
        out["slope"], out["intercept"] = (float(v) for v in np.polyfit(f, rate, 1))
        if np.ptp(rate) > 0:
            out["pearson"] = float(np.corrcoef(f, rate)[0, 1])
            out["spearman"] = float(np.corrcoef(_ranks(f), _ranks(rate))[0, 1])
    return out


def equal_rates_p(rates: np.ndarray, errors: np.ndarray) -> float:
    """p-value of the hypothesis that every run compounds at one rate, each measured with its
    standard error: chi-square of the rates about their inverse-variance mean, k - 1 degrees.

    The range of k noisy rates grows with k even when they are equal, so the range alone
    says nothing; this test accounts for the number of runs."""
    from scipy.stats import chi2

    inverse = 1.0 / np.maximum(errors, 1e-12) ** 2
    mean = np.sum(inverse * rates) / np.sum(inverse)
    return float(chi2.sf(np.sum(inverse * (rates - mean) ** 2), len(rates) - 1))


def finding(runs: list[Run]) -> str:
    """The paragraph of report.md: what the numbers show, written from them."""
    t = trend(runs)
    rates = np.array([r.rate for r in runs])
    episodes = min(int((r.config.get("eval") or {}).get("episodes", 0)) for r in runs)
    cycles = min(len(r.cycles) for r in runs)
    sentences = []
    finite = rates[np.isfinite(rates)]
    if len(finite) and np.all(finite <= 0):
        sentences.append("Capability did not compound in any run: every compounding rate is zero or negative.")
    if t["distinct_fidelities"] < 2:
        n = t["distinct_fidelities"]
        sentences.append(f"The runs give a compounding rate (which needs two complete cycles) at {n} distinct measured "
                         f"fidelit{'y' if n == 1 else 'ies'}, fewer than the two needed to say whether compounding "
                         "depends on fidelity.")
    elif not np.isfinite(t["spearman"]):
        sentences.append(f"The compounding rate is the same ({finite[0]:+.4f} per cycle) at every measured fidelity: "
                         "it does not rise with fidelity.")
    else:
        stats = (f"(Spearman {t['spearman']:+.2f}, Pearson {t['pearson']:+.2f}, fitted slope {t['slope']:+.4f} "
                 f"capability per cycle per unit of fidelity, over {t['points']} runs)")
        if t["spearman"] >= 0.5 and t["slope"] > 0:
            sentences.append(f"The compounding rate rises with measured fidelity {stats}, as the thesis predicts.")
        elif t["spearman"] <= -0.5 and t["slope"] < 0:
            sentences.append(f"The compounding rate falls as measured fidelity rises {stats}: the opposite of the "
                             "thesis.")
        else:
            sentences.append(f"The compounding rate does not rise with measured fidelity {stats}: no clear relation "
                             "in these runs.")
        if t["points"] == 2:
            sentences.append("Two points always correlate perfectly, so the correlation itself means nothing here.")
    pairs = [(r.rate, e) for r in runs
             if np.isfinite(r.rate) and np.isfinite(e := rate_stderr(r.capabilities, r.cycle_index, r.success_episodes))]
    if len(pairs) >= 2:
        p = equal_rates_p(*map(np.array, zip(*pairs)))
        errors = [e for _, e in pairs]
        sentences.append(f"A rate's standard error (the scatter of capability about its run's fitted line, or the "
                         f"binomial noise of its evaluations where larger) is "
                         f"{np.median(errors):.4f} per cycle (median over runs), against a spread of "
                         f"{np.ptp(finite):.4f} between the runs' rates; a chi-square test that every run has the "
                         f"same rate gives p = {p:.2g}: the differences are "
                         + ("larger than" if p < 0.05 else "within") + " that noise.")
    sentences += sweep_stats.sentences(runs)
    if len(runs) < FEW_RUNS or episodes < FEW_EPISODES:
        sentences.append(f"With {len(runs)} runs, as few as {cycles} complete cycles in a run and {episodes} "
                         "evaluation episodes per capability, this is weak evidence either way.")
    return " ".join(sentences)


# ---------------------------------------------------------------------- figures


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def capability_curve(records: Sequence[Mapping[str, Any]], ylabel: str = "capability") -> bytes:
    """One run's capability (± 1 standard error) against cycle, total env steps and total sim
    steps (where every record has them); a ``start`` record (cycle -1, ``flywheel.logger``) is
    drawn as "start". The run directory's ``capability.png``, redrawn after every cycle."""
    plt = _pyplot()
    y = np.array([r["capability"] for r in records], dtype=float)
    # Records written before the standard error was kept have none: no bar rather than a zero one.
    err = np.array([np.nan if r.get("capability_stderr") is None else r["capability_stderr"] for r in records])
    axes_x = [("cycle", [r["cycle"] for r in records]), ("total env steps", [r["env_steps_total"] for r in records])]
    if all("sim_steps_total" in r for r in records):
        axes_x.append(("total sim steps", [r["sim_steps_total"] for r in records]))
    fig, axes = plt.subplots(1, len(axes_x), figsize=(4.2 * len(axes_x), 3.8), sharey=True, squeeze=False)
    from matplotlib.ticker import EngFormatter, FuncFormatter, MaxNLocator

    for ax, (xlabel, x) in zip(axes[0], axes_x):
        ax.errorbar(x, y, yerr=err, fmt="o-", capsize=3)
        ax.set(xlabel=xlabel)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # "150k": six-digit step counts collide
    axes[0][0].set(ylabel=f"{ylabel} (± 1 s.e.)")
    axes[0][0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].xaxis.set_major_formatter(FuncFormatter(lambda v, _: "start" if v == -1 else "" if v < -1 else f"{v:g}"))
    fig.suptitle(f"{ylabel} against cycle and steps", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def imagination_rows(run: Run) -> tuple[ChunkRows | None, str]:
    """The first and last stored cycles' rows, where they imagined, or (None, why not)."""
    if not (run.path / "store").is_dir():  # RolloutStore() would create it
        return None, f"{run.path} has no store/"
    from flywheel.store import RolloutStore

    store = RolloutStore(run.path / "store")
    committed = store.committed_cycles()
    if not committed:
        return None, f"{run.path}/store has no committed cycle"
    parts = []
    for cycle in sorted({committed[0], committed[-1]}):
        rows, _ = store.read([cycle])
        if run.multitask:  # the other tasks' bodies have other proprio
            rows = rows.take(rows[SIM] == run.sim)
        if rows.imagined and rows.n:
            parts.append(rows)
    if not parts:
        return None, f"{run.path}/store holds no imagined trajectories (the agent did not imagine)"
    return ChunkRows.concat(parts), ""


def imagination_figure(rows: Mapping[str, np.ndarray], chunks: int = 3, dims: int = 2, *, by: str | None = None,
                       title: str | None = None):
    """Imagined (dashed) against realized (solid) proprio of a few chunks, a panel per chunk,
    titled by sim, episode and chunk: one row of panels, or one per value of the column ``by``
    (e.g. ``CYCLE``). Returns the matplotlib figure (``_png`` makes it bytes)."""
    plt = _pyplot()
    groups = [("", np.arange(len(rows[STEPS])))] if by is None else \
        [(f"{by} {value}, ", np.flatnonzero(rows[by] == value)) for value in np.unique(rows[by])]
    fig, axes = plt.subplots(len(groups), chunks, figsize=(3.2 * chunks, 2.6 * len(groups)), squeeze=False)
    for row_axes, (label, members) in zip(axes, groups):
        for ax, i in zip(row_axes, shown_chunks(rows, members, chunks)):
            n = int(rows[STEPS][i])
            for d in range(min(dims, int(rows[PROPRIO_DIM][i]))):
                (line,) = ax.plot(rows[REALIZED][i, :n, d], label=f"dim {d} realized")
                ax.plot(rows[IMAGINED][i, :n, d], linestyle="--", color=line.get_color(), label=f"dim {d} imagined")
            ax.set(title=f"{label}{rows[SIM][i]} episode {int(episode_index(rows[EPISODE][i]))} "
                         f"chunk {int(rows[CHUNK][i])}", xlabel="step")
            ax.title.set_fontsize(7)
    axes[0][0].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig


def shown_chunks(rows: Mapping[str, np.ndarray], members: np.ndarray, chunks: int) -> np.ndarray:
    """``chunks`` of ``members`` spread over them, full ones preferred: a chunk cut short by the
    episode's end shows little."""
    candidates = members[rows[STEPS][members] >= 2]
    candidates = candidates if len(candidates) else members
    return candidates[np.linspace(0, len(candidates) - 1, chunks).astype(int)]


def frames_figure(rows: Mapping[str, np.ndarray], chunks: int = 2, *, title: str | None = None):
    """The frames of a few chunks of a camera run: per chunk, a row of the frames the engine
    rendered (the chunk's first frame, then one after each step it ran) and, where the agent
    imagined frames, a row of the imagined ones beneath, step under step. Returns the figure."""
    plt = _pyplot()
    imagined = IMAGINED_FRAMES in rows
    shown = shown_chunks(rows, np.arange(len(rows[STEPS])), chunks)
    width = rows[REALIZED_FRAMES].shape[1] + 1
    lines = len(shown) * (2 if imagined else 1)
    fig, axes = plt.subplots(lines, width, figsize=(0.9 * width, 1.0 * lines + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, i in enumerate(shown):
        n, top = int(rows[STEPS][i]), axes[k * (2 if imagined else 1)]
        top[0].imshow(rows[FRAME][i])
        top[0].set_title(f"{rows[SIM][i]}\nepisode {int(episode_index(rows[EPISODE][i]))} chunk "
                         f"{int(rows[CHUNK][i])}: start", fontsize=4)
        for t in range(n):
            top[t + 1].imshow(rows[REALIZED_FRAMES][i, t])
            top[t + 1].set_title(f"realized {t + 1}", fontsize=5)
            if imagined:
                axes[k * 2 + 1][t + 1].imshow(rows[IMAGINED_FRAMES][i, t])
                axes[k * 2 + 1][t + 1].set_title(f"imagined {t + 1}", fontsize=5)
    if title:
        fig.suptitle(title, fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- report


def _num(value: float, fmt: str) -> str:
    return "n/a" if not np.isfinite(value) else format(value, fmt)


TABLE_HEADER = ["run", "seed", "training sim", "fidelity knob", "measured fidelity", "cycles", "capability start",
                "capability end", "compounding rate (/cycle)", "rate std. error", "mean grade weight", "env steps",
                "sim steps", "wall s"]


def table_rows(runs: list[Run]) -> list[list[str]]:
    rows = []
    for run in runs:
        s = summary(run)
        rows.append([s["run"], str(s["seed"]), s["sim"], f"{s['knob']:g}", _num(s["fidelity"], ".3f"),
                     f"{s['cycles']}/{s['planned']}",
                     f"{s['capability_start']:.3f}", f"{s['capability_end']:.3f}", _num(s["rate"], "+.4f"),
                     _num(s["rate_stderr"], ".4f"), _num(s["grade_weight"], ".3f"), str(s["env_steps"]),
                     "n/a" if s["sim_steps"] is None else str(s["sim_steps"]), f"{s['seconds']:.1f}"])
    return rows


SIM_HEADER = ["training sim", "seeds", "measured fidelity", "compounding rate (/cycle), mean over seeds",
              f"{sweep_stats.LEVEL:.0%} interval", "practice gap (training sim - reference)"]


def sim_rows(runs: list[Run]) -> list[list[str]]:
    """One row per training sim, over its seeds (``flywheel.sweep_stats``)."""
    rows = []
    for sim in sweep_stats.by_training_sim(runs):
        mean, low, high = sim.rate
        interval = "n/a" if not np.isfinite(low) else f"{low:+.4f} to {high:+.4f}"
        rows.append([sim.name, ", ".join(map(str, sim.seeds)), _num(sim.fidelity, ".3f"), _num(mean, "+.4f"),
                     interval, _num(sim.gap[0], "+.3f")])
    return rows


def sweep_section(runs: list[Run]) -> list[str]:
    test = sweep_stats.thesis_test(runs)
    lines = ["## Compounding rate per training sim, over seeds", "",
             "| " + " | ".join(SIM_HEADER) + " |", "|" + "---|" * len(SIM_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in sim_rows(runs)]
    lines += ["", "*Practice gap*: the rollouts' success (or return) in the training sim minus the capability in the "
              "reference, averaged over the complete cycles; with `choose=sim` the rollouts run the training sim's "
              "pick among the agent's candidates, so it includes that look-ahead's help.", "",
              "## The thesis test", "",
              "Stated before the run: the compounding rate rises with the training sim's measured fidelity. "
              "Statistic: the least-squares slope of the runs' rates on their measured fidelities (each seed a point); "
              f"one-sided permutation test, {sweep_stats.PERMUTATIONS:,} permutations; evidence at "
              f"p < {sweep_stats.ALPHA:g}.", "",
              "| runs | distinct fidelities | slope (/cycle per unit fidelity) | "
              f"{sweep_stats.LEVEL:.0%} interval | p (one-sided) |", "|---|---|---|---|---|"]
    if test.fit is None:
        lines.append(f"| {test.points} | {test.distinct_fidelities} | n/a | n/a | n/a |")
    else:
        low, high = test.fit.slope_interval()
        lines.append(f"| {test.points} | {test.distinct_fidelities} | {test.fit.slope:+.4f} | "
                     f"{_num(low, '+.4f')} to {_num(high, '+.4f')} | {test.p:.4g} |")
    warning = sweep_stats.uneven_seeds(sweep_stats.by_training_sim(runs))
    return lines + ([""] + ([f"**Warning**: {warning}", ""] if warning else []))


def markdown(runs: list[Run], imagination_note: str, see_also: Sequence[str] = (),
             relative_caption: str = "") -> str:
    first = runs[0]
    pretrained = first.config.get("pretrained")
    # The agent config names an architecture only when it starts from scratch; otherwise the
    # checkpoint's architecture is the agent's.
    agent = (f"`{(first.config.get('agent') or {}).get('size', '?')}` from scratch" if pretrained == "scratch"
             else f"the checkpoint `{pretrained}`" if pretrained else "the default pretrained checkpoint")
    lines = [
        "# Simulator fidelity against compounding capability", "",
        f"Reference sim: `{first.config['reference']['name']}`. Agent: {agent}. "
        f"Runs: {', '.join(f'`{r.path}`' for r in runs)}.", "",
        "**Compounding rate**: the least-squares slope of capability (in the reference sim, after each cycle's "
        "learning) against the cycle index, per cycle. *Capability start* is the first complete cycle's "
        "(the starting weights' own evaluation, where stored, is the relative-capability figure's denominator).",
        "",
        "| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(runs)]
    lines += ["", finding(runs), ""]
    lines += sweep_section(runs)
    lines += multitask_section(runs)
    incomplete = [r for r in runs if r.missing]
    if incomplete:
        lines += ["Incomplete runs (reported with their complete cycles):", ""]
        lines += [f"- `{r.path}`: missing cycles {', '.join(map(str, r.missing))}" for r in incomplete]
        lines.append("")
    lines += ["## Capability by cycle", "", "| cycle | " + " | ".join(f"`{r.name}`" for r in runs) + " |",
              "|" + "---|" * (len(runs) + 1)]
    by_cycle = [{int(c["cycle"]): c["capability"] for c in r.cycles} for r in runs]
    for cycle in sorted(set().union(*by_cycle)):
        lines.append(f"| {cycle} | " + " | ".join(_num(b.get(cycle, math.nan), ".3f") for b in by_cycle) + " |")
    lines += ["", "## Figures", "",
              "![capability against cycle, env steps and sim steps](capability_vs_cycle.png)", "",
              "Capability in the reference after each cycle, per training sim: the mean over its seeds (line) and "
              "the seeds' range (band), against the cycle, the total env steps and the total sim steps.", "",
              "![compounding rate against measured fidelity](compounding_vs_fidelity.png)", "",
              "Every run's compounding rate against its training sim's measured fidelity (dots), each training "
              f"sim's mean over seeds with its {sweep_stats.LEVEL:.0%} interval (bars), the least-squares line of the "
              f"thesis test and its {sweep_stats.LEVEL:.0%} confidence band.", "",
              "![relative capability against cycle](relative_capability.png)", "",
              relative_caption, ""]
    lines += [imagination_note, ""]
    if see_also:
        lines += ["## Runs against other reference sims", "",
                  "Capability in another reference sim is another quantity, so these runs of the sweep are "
                  "reported on their own:", "", *see_also, ""]
    return "\n".join(lines)


def multitask_section(runs: list[Run]) -> list[str]:
    """For each multi-task run among ``runs``: every task's capability by cycle and their mean
    (the run's own capability), so a task's row above reads beside its siblings'."""
    lines = []
    for run in (r for r in runs if r.multitask):
        names = [t["sim"]["name"] for t in run.config["tasks"]]
        lines += [f"## The multi-task run `{run.path}`", "",
                  f"It trained one agent on {len(names)} tasks, each scored in its own reference; this report's "
                  f"rows for it are its task `{run.sim}` (the others are in their references' reports). Its sim "
                  "steps are not counted per task, and its seconds are the whole run's.", "",
                  "| cycle | " + " | ".join(f"`{n}`" for n in names) + " | mean over tasks |",
                  "|" + "---|" * (len(names) + 2)]
        for record in ([run.start] if run.start else []) + run.cycles:
            caps = [float(record["tasks"][n]["capability"]) for n in names]
            cycle = "start" if record is run.start else str(record["cycle"])
            lines.append(f"| {cycle} | " + " | ".join(f"{c:.3f}" for c in caps) + f" | {np.mean(caps):.3f} |")
        lines.append("")
    return lines


FRAMES_FIGURE = "imagined_vs_realized_frames.png"


def _imagination_figures(runs: list[Run], out: Path, written: dict[str, Path]) -> str:
    """``imagined_vs_realized.png`` (proprio) and, for a camera run, ``FRAMES_FIGURE`` of the
    first run whose store imagined, into ``out`` and ``written``; the report's paragraph on them."""
    figure, frames = out / "imagined_vs_realized.png", out / FRAMES_FIGURE
    reasons = []
    for run in runs:
        rows, why = imagination_rows(run)
        if rows is None:
            reasons.append(why)
            continue
        title = f"Imagined (dashed) vs realized (solid) proprio in {run.label}"
        write_bytes_atomic(figure, _png(imagination_figure(rows, by=CYCLE, title=title)))
        written[figure.name] = figure
        early, late = int(rows[CYCLE].min()), int(rows[CYCLE].max())
        note = (f"![imagined vs realized]({figure.name})\n\nImagined against realized proprio (the first two "
                f"dimensions) for a few chunks of `{run.path}` in the training sim, cycle {early}"
                + (f" (early) and cycle {late} (late)." if late != early else " (its only stored cycle)."))
        frames.unlink(missing_ok=True)
        if FRAME in rows:
            last = rows.take(rows[CYCLE] == late)
            write_bytes_atomic(frames, _png(frames_figure(last, title=f"Frames of cycle {late} in {run.label}")))
            written[frames.name] = frames
            note += (f"\n\n![frames]({frames.name})\n\nThe camera's frames of two chunks of cycle {late}: the "
                     "first frame and the one after each step"
                     + (", and beneath them the frames the agent imagined." if IMAGINED_FRAMES in rows else
                        " (the agent imagines no frames: its future_frames is off)."))
        return note
    for stale in (figure, frames):  # a figure left by an earlier report would describe other runs
        stale.unlink(missing_ok=True)
    return "No imagined-vs-realized figure: " + "; ".join(reasons) + "."


def write_report(runs: list[Run], out_dir: str | Path, see_also: Sequence[str] = ()) -> dict[str, Path]:
    """Write the figures and report.md into ``out_dir``; returns what was written, by name.

    ``see_also``: markdown lines pointing at the reports of a sweep's other reference groups."""
    from flywheel import sweep_figures

    check_comparable(runs)
    out = Path(out_dir)
    written = {}
    sims = sweep_stats.by_training_sim(runs)
    relative, basis = sweep_figures.relative(sims)
    reference = runs[0].config["reference"]["name"]
    relative_caption = (f"Relative capability: each training sim's capability in `{reference}` (mean over its seeds) "
                        f"divided by {basis}, against the self-play cycles completed, one line per measured fidelity "
                        "(colour: dark is low): the essay's fidelity slider, measured in these runs.")
    for name, data in (("capability_vs_cycle.png", sweep_figures.capability_bands(sims, reference)),
                       ("compounding_vs_fidelity.png", sweep_figures.trend(runs)),
                       ("relative_capability.png", relative)):
        write_bytes_atomic(out / name, data)
        written[name] = out / name
    note = _imagination_figures(runs, out, written)
    write_bytes_atomic(out / "report.md", markdown(runs, note, see_also, relative_caption).encode())
    written["report.md"] = out / "report.md"
    return written
