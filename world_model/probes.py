"""Probe sets: fixed start states and action sequences on which simulators are compared.

``probe_set(sim, seed)`` builds, in the reference sim, ``probes`` start states (a seeded
reset, then a few warm-up steps so that not every probe starts at rest) and, from each, an
open-loop action sequence of ``horizon`` steps, plus the reference's own proprio after
every action. Actions are the demonstrator's with noise held for a few steps (the motion a
policy makes, where the sim has a demonstrator) or random actions held for a few steps; a
probe whose reference episode ends before the horizon is drawn again. Everything comes from
``numpy.random.default_rng(seed)`` and seeded resets, so (sim, seed, sizes) gives the same
probe set on every machine that gives the same physics.

How a candidate starts from a reference probe (``start_candidate``):

- the same sim name (a perturbed engine of the reference): ``set_state`` with the probe state;
- the learned simulator of the reference: ``start_from`` the probe state;
- a cross-engine twin (``sims.twins.TWIN_PAIRS``): reset with the probe's seed (the same
  task draw), then ``set_joint_state`` to the reference's joint state;
- anything else is an error naming both sims.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

import sims
from sims import SimEnv, SimState
from sims.twins import TWIN_PAIRS
from world_model.learned_env import PREFIX, LearnedSimEnv
from world_model.metrics import spread

ACTION_HOLD = 4  # control steps each random action (or noise draw) is held
DEMO_NOISE = 0.5  # std of the noise on the demonstrator's normalized actions
MAX_TRIES = 20


@dataclass(frozen=True)
class ProbeSet:
    sim: str
    seed: int
    reset_seeds: tuple[int, ...]
    starts: tuple[SimState, ...]
    actions: np.ndarray  # [P, H, A] env units
    reference: np.ndarray  # [P, H, D] reference proprio after each action (row h = horizon h + 1)
    scale: np.ndarray  # [D] per-dimension spread of the reference proprio (the normalizer)

    @property
    def size(self) -> int:
        return len(self.starts)

    @property
    def horizon(self) -> int:
        return self.actions.shape[1]

    @property
    def episode_steps(self) -> int:
        """An episode length that lets every probe run its whole horizon from its start."""
        return max(s.step for s in self.starts) + self.horizon + 1


def probe_set(sim: str, *, seed: int = 0, probes: int = 8, horizon: int = 50, warmup: int = 20) -> ProbeSet:
    """The probe set of ``sim`` for these arguments (cached: the same call returns the same object)."""
    for name, value, low in (("probes", probes, 1), ("horizon", horizon, 1), ("warmup", warmup, 0), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"probe set {name} must be an int >= {low}, got {value!r}")
    return _probe_set(sim, int(seed), int(probes), int(horizon), int(warmup))


@functools.lru_cache(maxsize=32)
def _probe_set(sim: str, seed: int, probes: int, horizon: int, warmup: int) -> ProbeSet:
    env = sims.make(sim, max_episode_steps=warmup + horizon + 1)
    try:
        demo = env.demonstrator() if env.defines_success else None
    except NotImplementedError:
        demo = None
    emb = env.embodiment
    rng = np.random.default_rng(seed)
    seeds, starts, actions, reference = [], [], [], []
    try:
        for probe in range(probes):
            for _ in range(MAX_TRIES):
                reset_seed = int(rng.integers(2**31))
                obs, _ = env.reset(seed=reset_seed)
                if demo is not None:
                    demo.reset()
                n_warm = int(rng.integers(0, warmup + 1))
                start, acts, rows, ended = None, [], [], False
                for t in range(n_warm + horizon):
                    if t == n_warm:
                        start = env.get_state()
                    if t % ACTION_HOLD == 0:
                        held = (rng.normal(0.0, DEMO_NOISE, emb.action_dim) if demo
                                else rng.uniform(-1, 1, emb.action_dim))
                    unit = emb.normalize_action(demo(obs)) + held if demo else held
                    action = emb.to_env_action(unit)
                    obs, _, terminated, truncated, _ = env.step(action)
                    if t >= n_warm:
                        acts.append(action)
                        rows.append(obs["proprio"])
                    if terminated or truncated:
                        ended = True
                        break
                if not ended:
                    break
            else:
                raise ValueError(f"{sim}: no probe of {horizon} steps in {MAX_TRIES} tries (every episode ended "
                                 "sooner); use a shorter horizon")
            seeds.append(reset_seed)
            starts.append(start)
            actions.append(acts)
            reference.append(rows)
    finally:
        env.close()
    reference_arr = np.asarray(reference, dtype=np.float64)
    actions_arr = np.asarray(actions, dtype=np.float64)
    for arr in (reference_arr, actions_arr):
        arr.setflags(write=False)  # shared through the cache
    scale = spread(reference_arr)
    scale.setflags(write=False)
    return ProbeSet(sim, seed, tuple(seeds), tuple(starts), actions_arr, reference_arr, scale)


def start_candidate(env: SimEnv, probes: ProbeSet, index: int, reference_env: SimEnv | None = None) -> None:
    """Put ``env`` at probe ``index`` of ``probes`` (see the module docstring for how)."""
    state = probes.starts[index]
    if env.name == probes.sim:
        env.set_state(state)
        return
    if isinstance(env, LearnedSimEnv):
        if env.reference != probes.sim:
            raise ValueError(f"a probe set of {probes.sim!r} cannot start {env.name!r}, the learned simulator "
                             f"of {env.reference!r}")
        env.start_from(state)
        return
    if twin_of(probes.sim, env.name):
        if reference_env is None:
            raise ValueError(f"starting twin {env.name!r} needs a {probes.sim!r} env to read the joint state from")
        reference_env.set_state(state)
        env.reset(seed=probes.reset_seeds[index])
        env.set_joint_state(*reference_env.joint_state())
        return
    raise ValueError(f"a probe set of {probes.sim!r} cannot start candidate {env.name!r}: a candidate must be the "
                     f"same sim (any fidelity), 'learned/{probes.sim}', or its cross-engine twin")


def can_start(reference: str, candidate: str) -> bool:
    """Whether a probe set of ``reference`` can start ``candidate``: ``start_candidate``'s
    rule by name alone, so a run's config is checked before any env is built."""
    return candidate in (reference, PREFIX + reference) or twin_of(reference, candidate)


def twin_of(reference: str, candidate: str) -> bool:
    return any({reference, candidate} == set(pair) for pair in TWIN_PAIRS.values())
