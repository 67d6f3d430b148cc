"""The sweep's statistics over seeds, on runs whose answer is known by construction: cycle records
written by the run's own writer (``flywheel.logger.write_cycles``) with capabilities that rise
with fidelity, or do not."""

import dataclasses

import numpy as np
import pytest

from configs.run_schema import RunConfig
from configs.schema import SimConfig
from flywheel import report, sweep_stats
from flywheel.logger import START, write_cycles
from sims.files import write_json_atomic

KNOBS = (1.0, 0.8, 0.5, 0.2)
SEEDS = (0, 1, 2)


def write_run(root, fidelity, seed, rate, cycles=6, start=0.1, practice_gap=0.0, noise=0.02, name=None):
    """A run of ``cycles`` complete cycles: capability = start + rate * (cycle + 1) plus a seeded
    zigzag of ``noise``; the rollouts' success in the training sim ``practice_gap`` above it."""
    name = name or f"knob-{fidelity}"
    run_dir = root / f"{name}-seed{seed}"
    config = RunConfig(name=name, seed=seed, cycles=cycles, sim=SimConfig(name="mujoco/reacher-twin", fidelity=fidelity))
    write_json_atomic(run_dir / "config.json", dataclasses.asdict(config))
    write_json_atomic(run_dir / START, {"cycle": -1, "capability": start, "eval": {"success_rate": start}})
    wiggle = np.random.default_rng(seed).choice([-1.0, 1.0], cycles) * noise
    records = []
    for c in range(cycles):
        capability = start + rate * (c + 1) + wiggle[c]
        records.append({
            "cycle": c, "capability": capability, "fidelity": fidelity,
            "eval": {"capability": capability, "success_rate": capability, "episodes": 64},
            "rollout": {"success_rate": capability + practice_gap, "episode_return": -20.0},
            "grades": {"weight": 0.5}, "env_steps_total": 400 * (c + 1), "sim_steps_total": 7000 * (c + 1),
            "seconds": {"cycle": 20.0}})
    write_cycles(run_dir, records)
    return run_dir


def sweep(root, rate_of, seeds=SEEDS, **kwargs):
    return [report.load_run(write_run(root, k, s, rate_of(k, s), **kwargs)) for k in KNOBS for s in seeds]


def test_the_interval_over_seeds_holds_the_mean_and_narrows_with_more_seeds():
    mean, low, high = sweep_stats.t_interval([0.01, 0.02, 0.03])
    assert mean == pytest.approx(0.02) and low < 0.01 and high > 0.03  # three seeds: t(2) is wide
    assert high - mean == pytest.approx(mean - low)
    _, low6, high6 = sweep_stats.t_interval([0.01, 0.02, 0.03] * 2)
    assert high6 - low6 < high - low
    assert np.isnan(sweep_stats.t_interval([0.05])[1])  # one seed: no interval


def test_the_permutation_test_finds_a_rising_series_and_not_a_flat_or_falling_one():
    x = np.repeat([0.2, 0.5, 0.8, 1.0], 3)
    rng = np.random.default_rng(0)
    rising = 0.02 * x + rng.normal(0, 0.002, len(x))
    assert sweep_stats.slope_permutation_p(x, rising) < 0.01
    assert sweep_stats.slope_permutation_p(x, -rising) > 0.99
    flat = np.tile([0.01, 0.03, 0.02], 4)  # the same three rates at every fidelity: slope exactly 0
    assert sweep_stats.slope_permutation_p(x, flat) > 0.3
    shuffled = rng.permutation(rising)
    assert sweep_stats.slope_permutation_p(x, shuffled) > sweep_stats.slope_permutation_p(x, rising)
    # Reproducible: the permutations are seeded.
    assert sweep_stats.slope_permutation_p(x, shuffled) == sweep_stats.slope_permutation_p(x, shuffled)


def test_the_fitted_line_and_its_band_cover_a_known_slope():
    x = np.repeat([0.2, 0.5, 0.8, 1.0], 3)
    y = 0.03 * x + 0.001 + np.random.default_rng(1).normal(0, 0.003, len(x))
    fit = sweep_stats.fit_line(x, y)
    low, high = fit.slope_interval()
    assert low < 0.03 < high and low > 0
    line, band_low, band_high = fit.band([0.2, 0.6, 1.0])
    assert np.all(band_low < line) and np.all(line < band_high)
    widths = band_high - band_low
    assert widths[1] < widths[0] and widths[1] < widths[2]  # narrowest near the middle of the data
    assert sweep_stats.fit_line([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]) is None  # one fidelity: no line


def test_runs_whose_rate_rises_with_fidelity_are_evidence_for_the_thesis(tmp_path):
    runs = sweep(tmp_path, lambda k, s: 0.03 * k + 0.002 * s)
    test = sweep_stats.thesis_test(runs)
    assert test.points == 12 and test.distinct_fidelities == 4
    assert test.evidence and test.p < 0.01 and test.fit.slope > 0
    sims = sweep_stats.by_training_sim(runs)
    assert [s.name for s in sims] == [f"knob-{k}" for k in KNOBS] and all(s.seeds == [0, 1, 2] for s in sims)
    control = sims[0]
    mean, low, high = control.rate
    assert low < mean < high and low > 0  # three seeds compounding, spread by seed
    text = " ".join(sweep_stats.sentences(runs))
    assert "evidence that it rises with fidelity, as the thesis predicts" in text
    assert "capability compounded (the rate's interval above zero) in knob-1.0" in text


def test_runs_whose_rate_does_not_depend_on_fidelity_are_no_evidence(tmp_path):
    runs = sweep(tmp_path, lambda k, s: (0.01, 0.03, 0.02)[s])  # every fidelity, the same rates per seed
    test = sweep_stats.thesis_test(runs)
    assert not test.evidence and test.p > 0.2
    assert "no evidence at the 0.05 level that it rises with fidelity" in " ".join(sweep_stats.sentences(runs))


def test_the_practice_gap_is_the_training_sims_success_above_the_references(tmp_path):
    runs = sweep(tmp_path, lambda k, s: 0.01, practice_gap=0.25)
    assert sweep_stats.practice_gap(runs[0]) == pytest.approx(0.25)
    assert all(s.gap[0] == pytest.approx(0.25) for s in sweep_stats.by_training_sim(runs))
    assert "+0.250 better in its training sim" in " ".join(sweep_stats.sentences(runs))


def test_relative_capability_is_against_the_start_and_falls_back_to_the_first_cycle(tmp_path):
    runs = sweep(tmp_path, lambda k, s: 0.1 * k, noise=0.0)
    basis, curves = sweep_stats.relative_curves(sweep_stats.by_training_sim(runs))
    assert "starting weights" in basis
    x, y = curves["knob-1.0"]
    assert x.tolist() == list(range(7)) and y[0] == 1.0
    assert y[-1] == pytest.approx((0.1 + 0.1 * 6) / 0.1)  # 7x after six cycles at rate 0.1 from 0.1
    for run in runs:
        (run.path / START).unlink()
    basis, curves = sweep_stats.relative_curves(sweep_stats.by_training_sim([report.load_run(r.path) for r in runs]))
    assert "after the first cycle" in basis
    x, y = curves["knob-0.2"]
    assert x[0] == 0 and y[0] == pytest.approx(0.12 / np.mean([0.1 + 0.1 * k for k in KNOBS]))


def test_uneven_seeds_are_reported_with_a_warning_naming_the_training_sims(tmp_path):
    runs = [r for r in sweep(tmp_path, lambda k, s: 0.02 * k) if not (r.config["name"] == "knob-0.5" and r.seed == 2)]
    warning = sweep_stats.uneven_seeds(sweep_stats.by_training_sim(runs))
    assert "knob-0.5 (2)" in warning and "knob-1.0" not in warning
    written = report.write_report(runs, tmp_path / "out")
    md = written["report.md"].read_text()
    assert f"**Warning**: {warning}" in md and warning in report.finding(runs)


def test_a_broken_start_record_names_the_run(tmp_path):
    run_dir = write_run(tmp_path, 1.0, 0, 0.01)
    (run_dir / START).write_text('{"cycle": -1}')
    with pytest.raises(ValueError, match=rf"{run_dir.name}: {START} is not a start record"):
        report.load_run(run_dir)


def test_the_report_has_one_row_per_training_sim_and_the_thesis_test(tmp_path):
    runs = sweep(tmp_path / "runs", lambda k, s: 0.03 * k + 0.002 * s)
    written = report.write_report(runs, tmp_path / "out")
    for name in ("capability_vs_cycle.png", "compounding_vs_fidelity.png", "relative_capability.png"):
        assert written[name].read_bytes().startswith(b"\x89PNG")
    md = written["report.md"].read_text()
    sims = table_after(md, "## Compounding rate per training sim")
    assert [row["training sim"] for row in sims] == [f"knob-{k}" for k in KNOBS]
    assert all(row["seeds"] == "0, 1, 2" for row in sims)
    control = sweep_stats.by_training_sim(runs)[0]
    assert float(sims[0]["compounding rate (/cycle), mean over seeds"]) == pytest.approx(control.rate[0], abs=1e-4)
    low, high = (float(v) for v in sims[0]["95% interval"].split(" to "))
    assert low < control.rate[0] < high
    (thesis,) = table_after(md, "## The thesis test")
    assert int(thesis["runs"]) == 12 and float(thesis["p (one-sided)"]) < 0.05
    assert "divided by the starting weights' capability" in md


def table_after(md: str, heading: str) -> list[dict[str, str]]:
    """The first markdown table after ``heading``, as one {column: cell} per row."""
    lines = md[md.index(heading):].splitlines()
    rows = [line for line in lines[next(i for i, line in enumerate(lines) if line.startswith("| ")):]]
    rows = rows[:next((i for i, line in enumerate(rows) if not line.startswith("|")), len(rows))]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in row.strip("|").split("|")))) for row in rows[2:]]
