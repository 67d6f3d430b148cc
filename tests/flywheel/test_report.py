"""The fidelity report over synthetic run directories with known capabilities."""

import dataclasses
import json
import re

import numpy as np
import pytest

from configs.run_schema import RunConfig
from configs.schema import AgentConfig, SimConfig
from flywheel import report
from flywheel.cli import main
from flywheel.store import RolloutStore

PNG = b"\x89PNG\r\n\x1a\n"


def make_run(root, name, fidelity, rate, cycles=range(4), reference="mujoco/reacher-twin", agent=None,
             pretrained=None, start=0.2, zigzag=0.0):
    """A 4-cycle run with capability = start + rate * cycle (+- zigzag, alternating) for the given
    complete cycles: with no zigzag its compounding rate is exactly ``rate``."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = RunConfig(name=name, cycles=4, sim=SimConfig(name="mujoco/reacher-twin", fidelity=fidelity),
                       reference=SimConfig(name=reference), agent=agent or AgentConfig(), pretrained=pretrained)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    lines = []
    for c in cycles:
        lines.append(json.dumps({
            "cycle": c, "weight_version": c + 1, "capability": start + rate * c + zigzag * (-1) ** c,
            "eval": {"mean_return": 0.0}, "fidelity": fidelity, "grades": {"weight": 0.5 + 0.1 * c},
            "env_steps": 100, "env_steps_total": 100 * (c + 1), "sim_steps": 1700, "sim_steps_total": 1700 * (c + 1),
            "seconds": {"cycle": 2.5},
        }))
    (run_dir / "cycles.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def write_store(run_dir, make_rows, cycles=(0, 3)):
    store = RolloutStore(run_dir / "store")
    for cycle in cycles:
        n = 6  # 2 episodes of 3 chunks
        rows = make_rows(episodes=2, chunks_per_episode=3, seed=cycle, first_episode=10 * cycle,
                         cycle=np.full(n, cycle), steps=np.full(n, 5), proprio_dim=np.full(n, 3))
        store.commit_cycle(cycle, [store.write_shard(cycle, 0, rows)[0]])


def table(md):
    """report.md's main table as {run: {column: cell}}."""
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "cycle" or len(cells) != len(header):
            break
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def test_compounding_rate_is_the_least_squares_slope():
    assert report.compounding_rate([0.1, 0.3, 0.5, 0.7]) == pytest.approx(0.2)
    assert report.compounding_rate([0.0, 1.0, 0.0, 1.0]) == pytest.approx(0.2)  # not (last - first) / 3
    assert report.compounding_rate([0.1, 0.5], cycles=[0, 4]) == pytest.approx(0.1)
    assert np.isnan(report.compounding_rate([0.4]))
    assert report.rate_stderr([0.0, 1.0, 0.0, 1.0]) == pytest.approx(np.sqrt(0.08))
    assert report.rate_stderr([0.1, 0.3, 0.5]) == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(report.rate_stderr([0.1, 0.3]))
    # A perfect line of success rates over 40 episodes still carries their binomial noise:
    # sqrt(0.3 * 0.7 / 40) / sqrt(sum((x - mean x)^2) = 2).
    assert report.rate_stderr([0.1, 0.3, 0.5], episodes=40) == pytest.approx(np.sqrt(0.21 / 40 / 2))
    assert report.rate_stderr([0.0, 1.0, 0.0, 1.0], episodes=40) == pytest.approx(np.sqrt(0.08))


def test_a_sweep_report_has_every_file_one_row_per_run_and_a_rising_finding(tmp_path, make_rows):
    dirs = [make_run(tmp_path, f"knob{k}", k, rate) for k, rate in ((1.0, 0.08), (0.5, 0.04), (0.2, 0.01))]
    write_store(dirs[0], make_rows)
    runs = [report.load_run(d) for d in dirs]
    written = report.write_report(runs, tmp_path / "out")
    for name in ("capability_vs_cycle.png", "compounding_vs_fidelity.png", "relative_capability.png",
                 "imagined_vs_realized.png"):
        assert (tmp_path / "out" / name).read_bytes().startswith(PNG) and name in written
    md = (tmp_path / "out" / "report.md").read_text()
    rows = table(md)
    assert set(rows) == {"knob1.0", "knob0.5", "knob0.2"}
    for k, rate in ((1.0, 0.08), (0.5, 0.04), (0.2, 0.01)):
        row = rows[f"knob{k}"]
        assert float(row["compounding rate (/cycle)"]) == pytest.approx(rate, abs=1e-4)
        assert float(row["measured fidelity"]) == pytest.approx(k)
        assert float(row["capability start"]) == pytest.approx(0.2)
        assert float(row["capability end"]) == pytest.approx(0.2 + 3 * rate, abs=1e-3)
        assert float(row["mean grade weight"]) == pytest.approx(0.65)
        assert (row["env steps"], row["sim steps"], row["wall s"], row["cycles"]) == ("400", "6800", "10.0", "4/4")
    assert "rises with measured fidelity" in md and "weak evidence" in md
    assert "knob1.0` in the training sim, cycle 0 (early) and cycle 3 (late)" in md


def test_the_finding_follows_the_numbers(tmp_path):
    flat = [report.load_run(make_run(tmp_path / "flat", f"k{k}", k, 0.05)) for k in (1.0, 0.5, 0.2)]
    assert "is the same (+0.0500 per cycle) at every measured fidelity: it does not rise" in report.finding(flat)
    falling = [report.load_run(make_run(tmp_path / "fall", f"k{k}", k, r)) for k, r in ((1.0, 0.0), (0.5, 0.02),
                                                                                        (0.2, 0.05))]
    assert "falls as measured fidelity rises" in report.finding(falling)
    unrelated = [report.load_run(make_run(tmp_path / "unrelated", f"k{k}", k, r))
                 for k, r in ((1.0, 0.02), (0.8, -0.01), (0.5, 0.03), (0.2, 0.0))]
    text = report.finding(unrelated)
    assert "does not rise with measured fidelity" in text and "rises with measured fidelity (" not in text
    assert "0.0000 per cycle (median over runs)" in text and "larger than that noise" in text
    noisy = [report.load_run(make_run(tmp_path / "noisy", f"k{k}", k, r, zigzag=0.1))
             for k, r in ((1.0, 0.03), (0.5, 0.02), (0.2, 0.01))]
    text = report.finding(noisy)
    assert "rises with measured fidelity (" in text and "within that noise" in text
    none = [report.load_run(make_run(tmp_path / "none", f"k{k}", k, r)) for k, r in ((1.0, -0.01), (0.2, 0.0))]
    assert "did not compound in any run" in report.finding(none)
    one = [report.load_run(make_run(tmp_path / "one", f"k{i}", 0.5, 0.01 * i)) for i in range(2)]
    assert "at 1 distinct measured fidelity, fewer than the two needed" in report.finding(one)


def test_runs_against_another_reference_or_agent_are_refused_by_name(tmp_path):
    base = make_run(tmp_path, "base", 1.0, 0.05)
    other_ref = make_run(tmp_path, "other-ref", 0.5, 0.05, reference="pybullet/reacher")
    other_agent = make_run(tmp_path, "other-agent", 0.5, 0.05, agent=AgentConfig(size="small"))
    other_weights = make_run(tmp_path, "other-weights", 0.5, 0.05, pretrained="runs/elsewhere")
    with pytest.raises(ValueError, match=r"other-ref: reference sim .*pybullet/reacher"):
        report.check_comparable([report.load_run(base), report.load_run(other_ref)])
    with pytest.raises(ValueError, match=r"other-agent: agent .*small"):
        report.check_comparable([report.load_run(base), report.load_run(other_agent)])
    with pytest.raises(ValueError, match=r"other-weights: agent .*runs/elsewhere"):
        report.write_report([report.load_run(base), report.load_run(other_weights)], tmp_path / "out")


def test_an_incomplete_run_is_reported_with_its_missing_cycles(tmp_path):
    full = make_run(tmp_path, "full", 1.0, 0.05)
    part = make_run(tmp_path, "part", 0.5, 0.03, cycles=[0, 1])
    run = report.load_run(part)
    assert run.missing == [2, 3] and run.rate == pytest.approx(0.03)
    report.write_report([report.load_run(full), run], tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert table(md)["part"]["cycles"] == "2/4"
    assert re.search(r"`\S*part`: missing cycles 2, 3", md)
    assert "No imagined-vs-realized figure" in md and "has no store/" in md
    assert not (tmp_path / "out" / "imagined_vs_realized.png").exists()


def test_unreadable_run_directories_name_the_directory_and_the_reason(tmp_path):
    with pytest.raises(ValueError, match=r"nothere: not a flywheel run directory \(no config.json\)"):
        report.load_run(tmp_path / "nothere")
    run_dir = make_run(tmp_path, "broken", 1.0, 0.05)
    (run_dir / "cycles.jsonl").write_text('{"cycle": 0, "capability": 0.1}\n{"cycle": 1, "capa\n')
    with pytest.raises(ValueError, match=r"broken: cycles.jsonl line 2"):
        report.load_run(run_dir)
    (run_dir / "cycles.jsonl").unlink()
    with pytest.raises(ValueError, match=r"broken: no cycles.jsonl"):
        report.load_run(run_dir)


def test_the_command_reports_a_sweep_directory(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for k, rate in ((1.0, 0.06), (0.2, 0.02)):
        make_run(sweep, f"knob{k}", k, rate)
    assert main(["report", str(sweep)]) == 0
    out = sweep / "report"
    assert {p.name for p in out.iterdir()} == {"capability_vs_cycle.png", "compounding_vs_fidelity.png",
                                              "relative_capability.png", "report.md"}
    assert set(table((out / "report.md").read_text())) == {"knob1.0", "knob0.2"}
    printed = capsys.readouterr().out
    assert "knob0.2" in printed and str(out / "report.md") in printed


def test_the_command_gives_one_line_and_exit_code_2_on_a_bad_directory(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty: neither a flywheel run directory nor a sweep" in err[0]


def test_a_sweep_against_two_references_gets_one_report_per_reference(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for k, rate in ((1.0, 0.06), (0.5, 0.03), (0.2, 0.01)):
        make_run(sweep, f"knob{k}", k, rate)
    for k, rate in ((1.0, 0.05), (0.9, 0.04)):
        make_run(sweep, f"ref-pb{k}", k, rate, reference="pybullet/reacher")
    assert main(["report", str(sweep)]) == 0
    main_md = (sweep / "report" / "report.md").read_text()
    other_md = (sweep / "report" / "reference-pybullet_reacher" / "report.md").read_text()
    assert set(table(main_md)) == {"knob1.0", "knob0.5", "knob0.2"}  # the larger group is the main report
    assert set(table(other_md)) == {"ref-pb1.0", "ref-pb0.9"}
    assert "Reference sim: `pybullet/reacher`" in other_md
    assert "`ref-pb0.9`, `ref-pb1.0` ([report](reference-pybullet_reacher/report.md))" in main_md
    assert (sweep / "report" / "reference-pybullet_reacher" / "capability_vs_cycle.png").read_bytes().startswith(PNG)
    assert "reference sim pybullet/reacher: 2 runs" in capsys.readouterr().out
    # Named one by one, runs against different references are still refused, naming the odd one.
    assert main(["report", str(sweep / "knob1.0"), str(sweep / "ref-pb0.9")]) == 2
    assert "ref-pb0.9: reference sim" in capsys.readouterr().err


def test_a_learned_sims_rows_say_how_often_the_engine_corrects_it(tmp_path):
    run_dir = make_run(tmp_path, "learned-every-8", 1.0, 0.02)
    config = json.loads((run_dir / "config.json").read_text())
    config["sim"].update(name="learned/mujoco/reacher-twin", correct_every="8")
    (run_dir / "config.json").write_text(json.dumps(config))
    run = report.load_run(run_dir)
    assert run.label.startswith("learned/mujoco/reacher-twin correct_every=8 (fidelity knob 1")
    assert report.table_rows([run])[0][2] == "learned/mujoco/reacher-twin correct_every=8"
    assert report.reference_slug(run) == "reference-mujoco_reacher-twin"


def test_equal_rates_are_judged_against_their_standard_errors_and_the_number_of_runs():
    same = np.full(8, 0.01)
    assert report.equal_rates_p(same, np.full(8, 0.01)) == pytest.approx(1.0)
    spread = np.array([0.0, 0.01, 0.02, 0.03])
    assert report.equal_rates_p(spread, np.full(4, 0.001)) < 1e-6  # ten standard errors apart
    assert report.equal_rates_p(spread, np.full(4, 0.02)) > 0.5  # well inside one


def test_a_camera_runs_report_shows_its_frames_and_a_later_report_without_frames_drops_them(tmp_path, make_rows):
    from flywheel.rows import FRAME, IMAGINED_FRAMES, REALIZED_FRAMES

    rng = np.random.default_rng(0)
    camera = make_run(tmp_path, "camera", 1.0, 0.05)
    store = RolloutStore(camera / "store")
    for cycle in (0, 3):
        frames = {FRAME: rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8),
                  REALIZED_FRAMES: rng.integers(0, 256, (6, 8, 16, 16, 3), dtype=np.uint8),
                  IMAGINED_FRAMES: rng.integers(0, 256, (6, 8, 16, 16, 3), dtype=np.uint8)}
        rows = make_rows(episodes=2, chunks_per_episode=3, seed=cycle, first_episode=10 * cycle,
                         cycle=np.full(6, cycle), steps=np.full(6, 5), proprio_dim=np.full(6, 3), **frames)
        store.commit_cycle(cycle, [store.write_shard(cycle, 0, rows)[0]])
    written = report.write_report([report.load_run(camera)], tmp_path / "out")
    figure = tmp_path / "out" / report.FRAMES_FIGURE
    assert figure.read_bytes().startswith(PNG) and report.FRAMES_FIGURE in written
    md = (tmp_path / "out" / "report.md").read_text()
    assert f"![frames]({report.FRAMES_FIGURE})" in md and "frames the agent imagined" in md
    # The same output directory, a run without a camera: no figure of another run's frames is left.
    plain = make_run(tmp_path, "plain", 1.0, 0.05)
    write_store(plain, make_rows)
    report.write_report([report.load_run(plain)], tmp_path / "out")
    assert not figure.exists() and report.FRAMES_FIGURE not in (tmp_path / "out" / "report.md").read_text()
