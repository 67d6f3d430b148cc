"""What a pretraining run leaves for people: the schedule figure and the metrics table.

``plot_schedule`` draws the learning rate against step with the data mix shaded in bands
(which expert trains when) and, below it, every expert's state over the run: not yet
added, training or frozen. ``metrics_table`` is the per-stage table of ``metrics.md`` and
of the command's output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policies.pretrain.schedule import DECAY, Schedule
from sims.files import write_figure_atomic

COLOURS = {"understand": "#4C72B0", "image": "#DD8452", "video": "#55A868", "action": "#C44E52", DECAY: "#8172B3"}


def expert_states(schedule: Schedule, experts: list[str], curriculum: str,
                  decay_unfreeze: bool) -> dict[str, list[tuple[int, int, str]]]:
    """Per expert, (start, stop, state) spans with state in {absent, training, frozen}."""
    out: dict[str, list[tuple[int, int, str]]] = {}
    stages = [b.name for b in schedule.stages]
    for expert in experts:
        spans = []
        for band in schedule.bands:
            if curriculum == "joint":
                state = "training"
            elif band.name == DECAY:
                state = "training" if decay_unfreeze or expert == stages[-1] else "frozen"
            elif stages.index(band.name) < stages.index(expert):
                state = "absent"
            else:
                state = "training" if band.name == expert else "frozen"
            spans.append((band.start, band.stop, state))
        out[expert] = spans
    return out


def plot_schedule(schedule: Schedule, experts: list[str], curriculum: str, decay_unfreeze: bool,
                  path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, (ax, grid) = plt.subplots(2, 1, figsize=(10, 5.2), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1.4]})
    steps = range(schedule.total)
    lrs = schedule.lrs()
    for band in schedule.bands:
        colour = COLOURS.get(band.name, "#999999")
        label = band.name if band.name != DECAY else "decay: high-quality mix"
        if curriculum == "joint" and band.name != DECAY:
            colour, label = "#999999", "joint: every modality"
        ax.axvspan(band.start, band.stop, color=colour, alpha=0.22, lw=0)
        ax.text((band.start + band.stop) / 2, schedule.peak_lr * 1.04, band.name, ha="center", va="bottom",
                fontsize=9, color=colour if curriculum != "joint" or band.name == DECAY else "#555555")
    ax.plot(steps, lrs, color="black", lw=1.6)
    ax.axvline(schedule.warmup, color="grey", lw=0.8, ls=":")
    ax.axvline(schedule.decay_start, color="grey", lw=0.8, ls=":")
    half = schedule.stages[0].stop
    ax.axvline(half, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("learning rate")
    ax.set_ylim(0, schedule.peak_lr * 1.18)
    ax.set_title(title or f"warmup-stable-decay schedule, {curriculum} curriculum ({schedule.total} steps)")
    ax.text(schedule.warmup, schedule.peak_lr * 0.05, " warmup end", fontsize=7, color="grey")
    ax.text(half, schedule.peak_lr * 0.05, " half of the plateau", fontsize=7, color="grey")
    ax.text(schedule.decay_start, schedule.peak_lr * 0.05, " decay", fontsize=7, color="grey")

    state_colour = {"training": None, "frozen": "#BBBBBB", "absent": "white"}
    states = expert_states(schedule, experts, curriculum, decay_unfreeze)
    for row, expert in enumerate(experts):
        for start, stop, state in states[expert]:
            colour = state_colour[state] or COLOURS.get(expert, "#999999")
            grid.broken_barh([(start, stop - start)], (row - 0.4, 0.8), facecolors=colour,
                             edgecolors="#888888" if state != "absent" else "#DDDDDD", lw=0.5)
    grid.set_yticks(range(len(experts)), experts)
    grid.set_ylim(len(experts) - 0.5, -0.5)
    grid.set_xlabel("step")
    grid.legend(handles=[Patch(facecolor="#4C72B0", label="training (own colour)"),
                         Patch(facecolor="#BBBBBB", label="frozen"),
                         Patch(facecolor="white", edgecolor="#DDDDDD", label="not yet added")],
                loc="lower left", fontsize=7, ncol=3, framealpha=0.9)
    grid.set_xlim(0, schedule.total)
    fig.tight_layout()
    return write_figure_atomic(path, fig, dpi=110)


# ---------------------------------------------------------------------- table


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def metrics_rows(stages: list[dict[str, Any]], baselines: dict[str, Any]) -> list[list[str]]:
    rows = []
    for m in stages:
        def pair(key: str, base: str, digits: int = 3) -> str:
            if key not in m:
                return "-"
            return f"{_fmt(m[key], digits)} ({_fmt(m.get(base), digits)})"

        success = "-"
        if "success" in m:
            success = ", ".join(f"{sim.split('/')[-1]} {v:.2f} ({baselines.get('random', {}).get(sim, float('nan')):.2f})"
                                for sim, v in m["success"].items())
        if "success_no_frames" in m:
            success += "; without frames " + ", ".join(f"{sim.split('/')[-1]} {v:.2f}"
                                                       for sim, v in m["success_no_frames"].items())
        acc = "-"
        if "understand_accuracy" in m:
            acc = (f"{m['understand_accuracy']:.3f} ({m['understand_chance']:.3f} / "
                   f"{m['understand_majority']:.3f})")
        rows.append([m["stage"], f"{m['start']}-{m['stop']}", ", ".join(m["training"]), _fmt(m.get("loss"), 4), acc,
                     (f"{_fmt(m['frame_mse'], 4)} ({_fmt(m.get('frame_mse_mean_frame'), 4)} / "
                      f"{_fmt(m.get('frame_mse_random_frame'), 4)})" if "frame_mse" in m else "-"),
                     (f"{_fmt(m['imagination_error'])} ({_fmt(m.get('imagination_error_hold'))} / "
                      f"{_fmt(m.get('imagination_error_const_velocity'))})" if "imagination_error" in m else "-"),
                     pair("action_mse", "action_mse_zero", 4), success,
                     f"{m.get('train_seconds', 0):.0f}+{m.get('eval_seconds', 0):.0f}"])
    return rows


HEADER = ["stage", "steps", "training", "loss", "answer acc (chance / majority)", "frame MSE (mean / random frame)",
          "imagination err (hold / const. velocity)", "action MSE (zero)", "success (random)", "seconds train+eval"]


def metrics_markdown(stages: list[dict[str, Any]], baselines: dict[str, Any], title: str) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in metrics_rows(stages, baselines):
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Held-out data; baselines in brackets. Understanding: exact-match accuracy of greedy "
              "answers (chance = 1 / number of possible answers; majority = the most common train answer "
              "to the same question). Frames: MSE in [-1, 1] against the sim's mean train frame and a random train frame of the same sim. Imagination: RMS proprio error per future step in units of each "
              "dimension's std, averaged over the chunk. Success: the policy route executing its own chunks "
              "(random = uniform random actions on the same seeds)."]
    return "\n".join(lines) + "\n"
