"""One warmup-stable-decay learning-rate schedule over the whole run, with the data mix on it.

    lr
    peak |      ________________________________________
         |     /                    |      |      |     \\
         |    /   understand only   | image| video|action\\  decay: high-quality data,
       0 |___/______________________|______|______|_______\\ every modality
          warmup        first half of the plateau  second half

- a short linear warmup to the peak learning rate;
- a long constant plateau: its first ``first_share`` (half) belongs to the first stage
  (understanding) together with the warmup; the later stages (image, video, action)
  split the rest in the proportions ``shares``;
- a final decay, linear to ``final_lr_ratio * peak``, on the high-quality slice of every
  modality.

``Schedule`` is pure arithmetic on step numbers: the curriculum asks it which band a step
is in and which modality a step trains on (``plan``); the plot draws the same bands.
With ``curriculum="joint"`` every step of the warmup and plateau draws its modality from
the same multiset (same data, same number of batches per modality) shuffled over the
whole span, so the staged recipe and the joint alternative differ only in order and in
freezing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DECAY = "decay"


@dataclass(frozen=True)
class Band:
    """A span of steps ``[start, stop)``: a stage, or the decay phase."""

    name: str
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def __contains__(self, step: int) -> bool:
        return self.start <= step < self.stop


@dataclass(frozen=True)
class Schedule:
    total: int
    warmup: int
    decay_start: int
    peak_lr: float
    final_lr_ratio: float
    bands: tuple[Band, ...]       # the stages in order, then the decay phase

    @property
    def stages(self) -> tuple[Band, ...]:
        return tuple(b for b in self.bands if b.name != DECAY)

    @property
    def decay(self) -> Band:
        return self.bands[-1]

    @property
    def plateau(self) -> tuple[int, int]:
        return self.warmup, self.decay_start

    def band(self, name: str) -> Band:
        for b in self.bands:
            if b.name == name:
                return b
        raise KeyError(f"no band {name!r} in {[b.name for b in self.bands]}")

    def band_at(self, step: int) -> Band:
        for b in self.bands:
            if step in b:
                return b
        raise IndexError(f"step {step} is outside the schedule of {self.total} steps")

    def lr(self, step: int) -> float:
        """Linear warmup from peak / warmup, constant plateau, linear decay to the final rate."""
        if step < self.warmup:
            return self.peak_lr * (step + 1) / self.warmup
        if step < self.decay_start:
            return self.peak_lr
        span = self.total - self.decay_start
        frac = (step - self.decay_start + 1) / span
        return self.peak_lr * (1.0 - frac * (1.0 - self.final_lr_ratio))

    def lrs(self) -> np.ndarray:
        return np.array([self.lr(s) for s in range(self.total)])


def build_schedule(stages: list[str] | tuple[str, ...], total: int, peak_lr: float, warmup: float = 0.02,
                   decay: float = 0.15, first_share: float = 0.5, shares: list[float] | tuple[float, ...] = (),
                   final_lr_ratio: float = 0.0) -> Schedule:
    """Bands for ``stages`` over ``total`` steps.

    ``warmup`` and ``decay`` are fractions of ``total``; ``first_share`` is the fraction of
    the plateau spent on the first stage alone; ``shares`` (one per later stage, default
    equal) divide the rest of the plateau.
    """
    stages = list(stages)
    if not stages:
        raise ValueError("the schedule needs at least one stage")
    if len(set(stages)) != len(stages) or DECAY in stages:
        raise ValueError(f"stage names must be distinct and not {DECAY!r}: {stages}")
    if not 0 < warmup < 1 or not 0 < decay < 1 or warmup + decay >= 1:
        raise ValueError(f"warmup ({warmup}) and decay ({decay}) must be fractions in (0, 1) with a plateau left")
    if not 0 < first_share <= 1 or (first_share == 1 and len(stages) > 1):
        raise ValueError(f"first_share must be in (0, 1) (1 only with a single stage), got {first_share}")
    shares = list(shares) or [1.0] * (len(stages) - 1)
    if len(shares) != len(stages) - 1 or any(s <= 0 for s in shares):
        raise ValueError(f"shares needs one positive number per stage after the first "
                         f"({len(stages) - 1} for {stages}), got {shares}")
    if peak_lr <= 0 or not 0 <= final_lr_ratio < 1:
        raise ValueError(f"peak_lr must be > 0 and final_lr_ratio in [0, 1), got {peak_lr}, {final_lr_ratio}")
    n_warm = max(1, round(warmup * total))
    n_decay = max(1, round(decay * total))
    plateau = total - n_warm - n_decay
    if plateau < len(stages):
        raise ValueError(f"{total} steps leave a plateau of {plateau} steps: too few for {len(stages)} stages")
    decay_start = n_warm + plateau
    first_stop = n_warm + round(first_share * plateau)
    # The later stages split [first_stop, decay_start) by their shares, each at least one step.
    edges = [first_stop]
    rest, total_share = decay_start - first_stop, sum(shares)
    acc = 0.0
    for s in shares:
        acc += s
        edges.append(first_stop + round(rest * acc / total_share))
    edges[-1] = decay_start
    bands = [Band(stages[0], 0, first_stop)]
    for name, a, b in zip(stages[1:], edges, edges[1:]):
        if b <= a:
            raise ValueError(f"stage {name!r} gets no steps; raise the step count or its share")
        bands.append(Band(name, a, b))
    bands.append(Band(DECAY, decay_start, total))
    return Schedule(total, n_warm, decay_start, peak_lr, final_lr_ratio, tuple(bands))


def plan(schedule: Schedule, curriculum: str = "staged", seed: int = 0,
         decay_mix: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """The modality (stage name) each step trains on.

    staged: a stage's steps train that stage; joint: the same multiset over the warmup and
    plateau, shuffled (seeded). The decay phase is the same in both: it cycles through
    ``decay_mix`` (every stage by default) one batch at a time.
    """
    if curriculum not in ("staged", "joint"):
        raise ValueError(f"curriculum must be 'staged' or 'joint', got {curriculum!r}")
    steps: list[str] = []
    for band in schedule.stages:
        steps += [band.name] * len(band)
    if curriculum == "joint":
        order = np.random.default_rng(seed).permutation(len(steps))
        steps = [steps[i] for i in order]
    mix = list(decay_mix) if decay_mix else [b.name for b in schedule.stages]
    steps += [mix[i % len(mix)] for i in range(len(schedule.decay))]
    return steps
