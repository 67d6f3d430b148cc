"""The conformance suite: what every registered simulator must do.

``run_checks(name)`` runs every check on the sim ``name`` and returns one ``CheckResult``
each; ``flywheel sims check NAME`` prints them and the test suite runs them over every
registered sim. A plug-in author runs the same command on their own sim.

Each check builds fresh envs through ``sims.make`` so it exercises what users get.

A NaN or inf is reported once, by ``finite``, which runs whole episodes (``SimEnv`` refuses
a non-finite value where it appears: ``NonFiniteError``). Any other check that runs into one
is skipped, pointing there: its own failure (replay, determinism...) would be a consequence,
not the fault. Only where ``finite`` found none (a NaN that needs perturbed physics, say) does
``run_checks`` fail that check instead, so the NaN is never passed over.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from gymnasium.utils.env_checker import check_env

from sims.env import NonFiniteError, SimEnv
from sims.registry import make
from sims.rendering import RenderingUnavailable
from sims.state import SimState

MIN_DEMO_SUCCESS = 0.8
DEFAULT_EPISODES = 20
REPLAY_STEPS = 40
FINITE_EPISODES = 3


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: str  # "pass", "fail" or "skip"
    detail: str = ""
    seconds: float = 0.0
    nonfinite: bool = False  # stopped by a NaN or inf (``NonFiniteError``)

    @property
    def ok(self) -> bool:
        return self.status != "fail"


class Skip(Exception):
    """Raised by a check that does not apply to this sim (the message says why)."""


@dataclass(frozen=True)
class CheckContext:
    name: str
    episodes: int = DEFAULT_EPISODES
    min_success: float = MIN_DEMO_SUCCESS

    def make(self, **config: Any) -> SimEnv:
        return make(self.name, **config)


Check = Callable[[CheckContext], str]
CHECKS: dict[str, Check] = {}


def check(fn: Check) -> Check:
    CHECKS[fn.__name__.removeprefix("check_")] = fn
    return fn


def run_checks(name: str, *, only: list[str] | None = None, episodes: int = DEFAULT_EPISODES,
               min_success: float = MIN_DEMO_SUCCESS) -> list[CheckResult]:
    """Run the named checks (all by default) on sim ``name``; never raises for a failing sim."""
    unknown = sorted(set(only or ()) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown conformance check(s) {unknown}; known: {sorted(CHECKS)}")
    ctx = CheckContext(name, episodes, min_success)
    results = [run_one(ctx, c) for c in (only or CHECKS)]
    if any(r.check == "finite" and r.status == "fail" for r in results):
        return results
    return [replace(r, status="fail") if r.nonfinite else r for r in results]


def run_one(ctx: CheckContext, check_name: str) -> CheckResult:
    start, nonfinite = time.perf_counter(), False
    try:
        detail = CHECKS[check_name](ctx)
        status = "pass"
    except Skip as exc:
        status, detail = "skip", str(exc)
    except NonFiniteError as exc:  # ``finite`` reports it; here it would pass for another fault
        status, detail, nonfinite = "skip", f"not checked: {exc} (see the 'finite' check)", True
    except Exception as exc:  # a failing check is a result, not a crash of the suite
        status, detail = "fail", f"{type(exc).__name__}: {exc}"
    return CheckResult(check_name, status, detail, time.perf_counter() - start, nonfinite)


# ---------------------------------------------------------------------- helpers


def observations_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(
        a[k] == b[k] if isinstance(a[k], str) else np.array_equal(a[k], b[k]) for k in a
    )


def rollout(env: SimEnv, actions: np.ndarray) -> Iterator[tuple[dict, float, bool, bool, dict]]:
    """Step ``actions`` until the episode ends; yields what ``step`` returns."""
    for action in actions:
        step = env.step(action)
        yield step
        if step[2] or step[3]:
            return


def trajectories_equal(first: list, second: list) -> bool:
    return len(first) == len(second) and all(
        observations_equal(a[0], b[0]) and a[1:] == b[1:] for a, b in zip(first, second)
    )


def random_actions(env: SimEnv, n: int, seed: int, scale: float = 1.0) -> np.ndarray:
    """Uniform actions over the middle ``scale`` fraction of the action range."""
    emb = env.embodiment
    unit = np.random.default_rng(seed).uniform(-scale, scale, size=(n, emb.action_dim))
    return emb.to_env_action(unit)


def exploratory_actions(ctx: CheckContext, n: int, seed: int) -> np.ndarray:
    """Actions that keep an episode going: the demonstrator's, with noise, or random ones.

    Random actions end a balancing task within a few steps, leaving replay checks almost
    nothing to compare; the demonstrator's actions (recorded in a scratch env) keep it alive.
    """
    env = ctx.make()
    rng = np.random.default_rng(seed)
    if not env.defines_success:
        return random_actions(env, n, seed, scale=0.5)
    demo = env.demonstrator()
    obs, _ = env.reset(seed=seed)
    demo.reset()
    actions = []
    emb = env.embodiment
    for _ in range(n):
        unit = emb.normalize_action(demo(obs)) + rng.normal(0.0, 0.1, emb.action_dim)
        action = emb.to_env_action(unit)
        actions.append(action)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
            demo.reset()
    return np.asarray(actions)


def episode_succeeded(env: SimEnv, policy: Callable[[dict], np.ndarray], seed: int) -> bool:
    """Run ``policy`` (a callable, optionally with ``reset()``) for one seeded episode; did
    ``info['success']`` ever become true?"""
    obs, info = env.reset(seed=seed)
    if hasattr(policy, "reset"):
        policy.reset()
    succeeded, done = info["success"], False
    while not done and not succeeded:
        obs, _, terminated, truncated, info = env.step(policy(obs))
        succeeded, done = info["success"], terminated or truncated
    return bool(succeeded)


def success_rate(env: SimEnv, policy: Callable[[dict], np.ndarray], seeds: Iterable[int]) -> float:
    seeds = list(seeds)
    return sum(episode_succeeded(env, policy, s) for s in seeds) / len(seeds)


def demo_success_rate(env: SimEnv, episodes: int, *, first_seed: int = 0) -> float:
    """Fraction of seeded episodes in which the demonstrator reaches ``info['success']``."""
    return success_rate(env, env.demonstrator(), range(first_seed, first_seed + episodes))


# ---------------------------------------------------------------------- checks


# Proprio is unbounded by nature (velocities); gymnasium's own MuJoCo envs draw the same warnings.
_BENIGN_CHECK_ENV_WARNINGS = (
    "observation space minimum value is -infinity",
    "observation space maximum value is infinity",
)


@check
def check_finite(ctx: CheckContext) -> str:
    """Whole episodes, to the sim's own end: the demonstrator's with noise (two; random ones
    for a task without success) and one of random full-range actions, each step's observation
    and reward checked by ``SimEnv`` itself."""
    env = ctx.make()
    emb, rng = env.embodiment, np.random.default_rng(0)
    try:
        demo = env.demonstrator() if env.defines_success else None
    except NotImplementedError:  # the demonstrator check says so; here random actions do
        demo = None
    steps = 0
    for seed in range(FINITE_EPISODES):
        guided = demo is not None and seed < FINITE_EPISODES - 1
        try:
            obs, _ = env.reset(seed=seed)
            if guided:
                demo.reset()
            done = False
            while not done:
                unit = (emb.normalize_action(demo(obs)) + rng.normal(0.0, 0.1, emb.action_dim) if guided
                        else rng.uniform(-1, 1, emb.action_dim))
                obs, _, terminated, truncated, _ = env.step(emb.to_env_action(unit))
                steps += 1
                done = terminated or truncated
        except NonFiniteError as exc:
            raise AssertionError(f"{exc}, in the episode reset with seed {seed}") from exc
    return f"observations and rewards finite over {FINITE_EPISODES} whole episodes ({steps} steps)"


@check
def check_gymnasium(ctx: CheckContext) -> str:
    env = ctx.make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    warned = [str(w.message) for w in caught if "gymnasium" in (w.filename or "")]
    serious = [w for w in warned if not any(p in w for p in _BENIGN_CHECK_ENV_WARNINGS)]
    if serious:
        raise AssertionError("gymnasium check_env warned: " + " | ".join(serious))
    return "gymnasium check_env passed" + (f" ({len(warned)} benign warning(s))" if warned else "")


@check
def check_seeding(ctx: CheckContext) -> str:
    runs = []
    for _ in range(2):
        env = ctx.make()
        obs, _ = env.reset(seed=123)
        runs.append([(obs, 0.0, False, False, {})] + list(rollout(env, exploratory_actions(ctx, 30, seed=123))))
    if not trajectories_equal(*runs):
        raise AssertionError("same seed and actions gave different observations")
    env = ctx.make()
    first = [env.reset(seed=s)[0]["proprio"] for s in range(5)]
    if all(np.array_equal(first[0], p) for p in first[1:]):
        raise AssertionError("five different reset seeds gave the same initial observation")
    return f"identical over {len(runs[0])} steps for one seed; initial states vary with the seed"


@check
def check_state_replay(ctx: CheckContext) -> str:
    env = ctx.make(fidelity=0.7)  # with observation noise, so the noise RNG must be restored too
    env.reset(seed=3)
    actions = exploratory_actions(ctx, 5 + REPLAY_STEPS, seed=3)
    list(rollout(env, actions[:5]))
    saved = env.get_state()
    first = list(rollout(env, actions[5:]))
    after_first = env.get_state()
    env.reset(seed=99)
    list(rollout(env, actions[:5]))
    env.set_state(saved)
    if not env.get_state().equals(saved):
        raise AssertionError("get_state right after set_state differs from the state restored")
    second = list(rollout(env, actions[5:]))
    if not trajectories_equal(first, second):
        raise AssertionError("restoring a state and replaying the same actions changed the trajectory")
    if not env.get_state().equals(after_first):
        raise AssertionError("final states differ after the replay")
    other = ctx.make(fidelity=0.7)
    other.reset(seed=3)
    other.set_state(saved)
    third = list(rollout(other, actions[5:]))
    if not trajectories_equal(first, third):
        raise AssertionError("a state restored into a second env of the same sim diverged")
    foreign = SimState(ctx.name + "#other", saved.step, saved.arrays, saved.rng)
    try:
        env.set_state(foreign)
    except ValueError:
        pass
    else:
        raise AssertionError("set_state accepted a state from another sim")
    return f"bit-identical replay over {len(first)} steps, in the same and in a fresh env"


@check
def check_params(ctx: CheckContext) -> str:
    env = ctx.make()
    nominal = env.get_params()
    if nominal != env.nominal_params:
        raise AssertionError(f"fidelity 1.0 params {nominal} differ from nominal {env.nominal_params}")
    changed = nominal.replace(mass_scale=1.3, friction_scale=0.7, gravity=nominal.gravity * 0.9,
                              actuator_gain=0.8, timestep=nominal.timestep * 0.9)
    env.set_params(changed)
    if env.get_params() != changed:
        raise AssertionError(f"set_params({changed}) then get_params() returned {env.get_params()}")
    actions = random_actions(env, 40, seed=5)
    env.reset(seed=1)
    perturbed = list(rollout(env, actions))
    env.set_params(nominal)
    env.reset(seed=1)
    restored = list(rollout(env, actions))
    reference = ctx.make()
    reference.reset(seed=1)
    expected = list(rollout(reference, actions))
    if not trajectories_equal(restored, expected):
        raise AssertionError("setting the nominal params back did not restore the reference dynamics")
    if trajectories_equal(perturbed, expected):
        raise AssertionError("perturbed physical parameters did not change the trajectory")
    try:
        env.set_params({"not_a_field": 1.0})
    except ValueError:
        pass
    else:
        raise AssertionError("set_params accepted an unknown field")
    return "round trip exact; perturbation changes the dynamics; unknown fields rejected"


@check
def check_fidelity(ctx: CheckContext) -> str:
    reference = ctx.make()
    full = ctx.make(fidelity=1.0, run_seed=42)
    low = ctx.make(fidelity=0.3, run_seed=42)
    if full.get_params() != reference.nominal_params:
        raise AssertionError("fidelity 1.0 changed the physical parameters")
    if low.get_params() == reference.nominal_params:
        raise AssertionError("fidelity 0.3 left the physical parameters unchanged")
    actions = random_actions(reference, 40, seed=9)
    runs = []
    for env in (reference, full, low):
        obs, _ = env.reset(seed=4)
        runs.append([(obs, 0.0, False, False, {})] + list(rollout(env, actions)))
    if not trajectories_equal(runs[0], runs[1]):
        raise AssertionError("fidelity 1.0 is not bit-identical to the reference sim")
    if trajectories_equal(runs[0], runs[2]):
        raise AssertionError("fidelity 0.3 is identical to the reference sim")
    for bad in (1.5, -0.1, float("nan")):
        try:
            ctx.make(fidelity=bad)
        except ValueError:
            continue
        raise AssertionError(f"fidelity={bad} was accepted")
    return "1.0 bit-identical to the reference; 0.3 differs; out-of-range fidelity rejected"


@check
def check_actions(ctx: CheckContext) -> str:
    env = ctx.make()
    env.reset(seed=0)
    dim = env.embodiment.action_dim
    bad_inputs = {"NaN": np.full(dim, np.nan), "wrong shape": np.zeros(dim + 1)}
    for label, action in bad_inputs.items():
        try:
            env.step(action)
        except ValueError as exc:
            if env.name not in str(exc):
                raise AssertionError(f"error for {label} action does not name the sim: {exc}") from None
            continue
        raise AssertionError(f"a {label} action was accepted")
    return "NaN and wrong-shaped actions rejected with the sim named"


@check
def check_camera(ctx: CheckContext) -> str:
    try:
        env = ctx.make(camera=True, image_size=48)
    except RenderingUnavailable as exc:
        raise Skip(str(exc)) from exc
    obs, _ = env.reset(seed=0)
    image = obs.get("image")
    if image is None or image.shape != (48, 48, 3) or image.dtype != np.uint8:
        raise AssertionError(f"expected a 48x48x3 uint8 image, got {None if image is None else (image.shape, image.dtype)}")
    if image.std() < 1.0:
        raise AssertionError("the camera frame is blank (one colour)")
    if not env.observation_space.contains(obs):
        raise AssertionError("the camera observation is outside the observation space")
    if "image" in ctx.make().reset(seed=0)[0]:
        raise AssertionError("an image is returned with the camera off")
    return f"48x48x3 uint8 frame (pixel std {image.std():.1f}); no image with the camera off"


@check
def check_success_flag(ctx: CheckContext) -> str:
    env = ctx.make()
    if not env.defines_success:
        _, info = env.reset(seed=0)
        if "success" in info:
            raise AssertionError("a task that defines no success reports info['success']")
        raise Skip(f"{ctx.name} defines no success")
    _, info = env.reset(seed=0)
    infos = [info] + [step[4] for step in rollout(env, random_actions(env, 20, seed=2))]
    missing = [i for i, inf in enumerate(infos) if not isinstance(inf.get("success"), bool)]
    if missing:
        raise AssertionError(f"info['success'] missing or not a bool at steps {missing[:5]}")
    return f"info['success'] is a bool after reset and each of {len(infos) - 1} steps"


@check
def check_demonstrator(ctx: CheckContext) -> str:
    env = ctx.make()
    if not env.defines_success:
        raise Skip(f"{ctx.name} defines no success, so no demonstrator is required")
    rate = demo_success_rate(env, ctx.episodes)
    if rate < ctx.min_success:
        raise AssertionError(f"demonstrator succeeded in {rate:.0%} of {ctx.episodes} episodes, below {ctx.min_success:.0%}")
    return f"demonstrator succeeded in {rate:.0%} of {ctx.episodes} seeded episodes"

