"""One warmup-stable-decay schedule over the run: phase boundaries, stage bands, the data mix."""

from collections import Counter

import numpy as np
import pytest

from policies.pretrain.schedule import DECAY, build_schedule, plan

STAGES = ["understand", "image", "video", "action"]


def test_phase_boundaries_and_stage_bands():
    s = build_schedule(STAGES, total=1000, peak_lr=1e-3, warmup=0.02, decay=0.15, first_share=0.5)
    assert (s.warmup, s.decay_start, s.total) == (20, 850, 1000)
    plateau = s.decay_start - s.warmup
    bands = {b.name: (b.start, b.stop) for b in s.bands}
    # Warmup and the first half of the plateau: understanding only.
    assert bands["understand"] == (0, s.warmup + plateau // 2) == (0, 435)
    # The generation stages fill the second half, in order, back to back, equal shares.
    assert bands["image"] == (435, 573) and bands["video"] == (573, 712) and bands["action"] == (712, 850)
    assert bands[DECAY] == (850, 1000)
    assert [b.name for b in s.bands] == [*STAGES, DECAY]
    assert all(a.stop == b.start for a, b in zip(s.bands, s.bands[1:]))
    assert s.band_at(434).name == "understand" and s.band_at(435).name == "image" and s.band_at(999).name == DECAY


def test_learning_rate_warms_up_holds_then_decays_to_zero():
    s = build_schedule(STAGES, total=1000, peak_lr=2e-3, warmup=0.02, decay=0.15)
    lrs = s.lrs()
    assert np.all(np.diff(lrs[: s.warmup]) > 0) and lrs[0] == pytest.approx(2e-3 / 20)
    assert np.all(lrs[s.warmup: s.decay_start] == 2e-3)  # one constant plateau across every stage
    assert np.all(np.diff(lrs[s.decay_start:]) < 0) and lrs[-1] == pytest.approx(0.0)
    assert build_schedule(STAGES, 1000, 2e-3, final_lr_ratio=0.1).lr(999) == pytest.approx(2e-4)


def test_shares_weight_the_later_stages():
    s = build_schedule(STAGES, total=1000, peak_lr=1e-3, shares=[1, 1, 2])
    lengths = {b.name: len(b) for b in s.bands}
    assert lengths["action"] == pytest.approx(2 * lengths["image"], abs=1)
    assert sum(lengths.values()) == 1000


def test_staged_and_joint_plans_train_on_the_same_batches_in_different_orders():
    s = build_schedule(STAGES, total=500, peak_lr=1e-3)
    staged, joint = plan(s, "staged"), plan(s, "joint", seed=3)
    assert len(staged) == len(joint) == 500
    for band in s.stages:  # staged: a band trains its own stage only
        assert set(staged[band.start:band.stop]) == {band.name}
    head = slice(0, s.decay_start)
    assert Counter(staged[head]) == Counter(joint[head])  # same data, same number of steps per modality
    assert joint[head] != staged[head] and len(set(joint[s.stages[0].start:s.stages[0].stop])) == 4
    assert staged[s.decay_start:] == joint[s.decay_start:]  # the decay mixes every modality, in both
    assert Counter(staged[s.decay_start:]) == Counter({m: len(s.decay) // 4 for m in STAGES}) + Counter(
        {m: 1 for m in STAGES[: len(s.decay) % 4]})


@pytest.mark.parametrize("kwargs, message", [
    ({"shares": [1, 1]}, "one positive number per stage"),
    ({"total": 6}, "gets no steps"),
    ({"total": 4}, "too few"),
    ({"warmup": 0.6, "decay": 0.5}, "plateau"),
    ({"first_share": 0.0}, "first_share"),
])
def test_bad_schedules_are_refused(kwargs, message):
    args = {"stages": STAGES, "total": 1000, "peak_lr": 1e-3, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_schedule(**args)
    with pytest.raises(ValueError, match="curriculum"):
        plan(build_schedule(STAGES, 1000, 1e-3), "sideways")
