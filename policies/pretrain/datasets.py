"""The four pretraining datasets, generated from the simulators (nothing is downloaded).

One dataset per stage, each ``ratios[k]`` times smaller than the one before, drawn from
every configured sim (several embodiments at once, padded to the model's shared sizes):

=========== ======== ==================================================================
stage       example  what it holds
=========== ======== ==================================================================
understand  question task text + frame + proprio history, a question about the scene and
                     its true answer (``questions.py``); next-token prediction on answers
image       scene    a frame, its true caption and the proprio: frame from text + proprio
video       window   observation + the chunk's executed actions -> the realized future
                     (proprio and frames per step): action-conditioned imagination
action      window   observation (+ realized future) -> the demonstrator's action chunk;
                     executed actions carry injected noise, so the states visited include
                     recoveries and the labels show how to recover (DART)
=========== ======== ==================================================================

Scenes come from episodes driven by the demonstrator (with per-episode noise) or by
random actions; windows are every ``stride``-th start of ``chunk`` steps in recorded
episodes, which are cut ``after_success`` steps after the task first succeeds.

Generation is split into *units* (one dataset, split, sim and shard each), seeded from
the unit's identity alone, so the data are the same whether the units run in this
process or spread over Ray actors. Each unit is one safetensors file written atomically
into the cache directory ``<cache_dir>/<hash of the data spec>/``; ``manifest.json``,
written last, lists every file with its sha256 and the example counts. A second run with
the same spec finds the manifest, checks the checksums and loads; an interrupted
generation keeps its finished units.
"""

from __future__ import annotations

import contextlib
import atexit
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policies.pretrain import store
from policies.pretrain.questions import describe
from sims.files import atomic_path, sha256_file, write_json_atomic

VERSION = 5  # bump when generation or a sim's dynamics change: the cache key includes it
SCENES, EPISODES = "scenes", "episodes"
# The kind of data each known stage trains on.
STAGE_DATA = {"understand": SCENES, "image": SCENES, "video": EPISODES, "action": EPISODES}
SPLITS = ("train", "eval")


@dataclass(frozen=True)
class DataSpec:
    """Everything that decides the generated data (and so the cache key)."""

    sims: tuple[str, ...]
    sizes: tuple[tuple[str, int], ...]   # (stage, train examples), in stage order
    held_out: float = 0.1                # eval examples per stage, as a fraction of train
    camera: bool = True
    image_size: int = 16
    history: int = 2
    chunk: int = 8
    scene_every: int = 20                # on average, one scene every this many steps
    random_episodes: float = 0.25        # fraction of scene/video episodes with random actions
    scene_noise: float = 0.5             # max std of the noise on the demonstrator's actions (normalized units)
    video_noise: float = 0.5
    action_noise: float = 0.3
    stride: int = 4                      # steps between window starts
    after_success: int = 20              # steps recorded after the first success
    max_steps: int = 200                 # per episode, at most
    shard: int = 1000                    # examples per generation unit
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sims", tuple(self.sims))
        object.__setattr__(self, "sizes", tuple((str(s), int(n)) for s, n in self.sizes))

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.sizes)

    def size(self, stage: str, split: str = "train") -> int:
        n = dict(self.sizes)[stage]
        return n if split == "train" else max(1, math.ceil(self.held_out * n))

    def key(self) -> str:
        return store.config_hash({"version": VERSION, **asdict(self)})[:16]


def stage_sizes(stages: list[str], first: int, ratios: list[float]) -> list[tuple[str, int]]:
    """Train examples per stage: ``first``, then each ``ratios[k]`` times smaller than the one before."""
    if len(ratios) != len(stages) - 1:
        raise ValueError(f"data.ratios needs one ratio per stage after the first ({len(stages) - 1} for "
                         f"{stages}), got {list(ratios)}")
    if any(r <= 0 for r in ratios):
        raise ValueError(f"data.ratios must be positive, got {list(ratios)}")
    sizes, n = [], float(first)
    for i, stage in enumerate(stages):
        if i:
            n /= ratios[i - 1]
        count = int(round(n))
        if count < 1:
            raise ValueError(f"the {stage!r} dataset would be empty ({first} {stages[0]} examples divided by "
                             f"ratios {list(ratios[:i])} is {n:.3g}); raise data.first or lower data.ratios")
        sizes.append((stage, count))
    return sizes


def check_spec(spec: DataSpec, sims_info: dict[str, dict[str, Any]]) -> None:
    """Fail before any generation for data that cannot be made."""
    if not spec.sims:
        raise ValueError("data.sims is empty: name at least one registered sim")
    for stage, n in spec.sizes:
        if stage not in STAGE_DATA:
            raise ValueError(f"no dataset is defined for stage {stage!r} (known: {sorted(STAGE_DATA)})")
        if n < 1:
            raise ValueError(f"the {stage!r} dataset is empty")
    if "image" in spec.stages and not spec.camera:
        raise ValueError("the image stage generates frames, so it needs data.camera=true")
    if "action" in spec.stages:
        missing = [s for s in spec.sims if not sims_info[s]["demonstrator"]]
        if missing:
            raise ValueError(f"the action stage learns from scripted demonstrators; {missing} ha{'s' if len(missing) == 1 else 've'} none")
    if spec.chunk > spec.max_steps:
        raise ValueError(f"episodes of at most {spec.max_steps} steps hold no window of {spec.chunk} steps")


# ---------------------------------------------------------------------- units


@dataclass(frozen=True)
class Unit:
    stage: str
    split: str
    sim: str
    index: int
    quota: int

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.split}-{self.sim.replace('/', '_')}-{self.index:04d}.safetensors"

    def seed(self, base: int) -> np.random.SeedSequence:
        words = [base, *self.stage.encode(), *self.split.encode(), *self.sim.encode(), self.index]
        return np.random.SeedSequence(words)


def plan_units(spec: DataSpec) -> list[Unit]:
    units = []
    for stage, _ in spec.sizes:
        for split in SPLITS:
            total = spec.size(stage, split)
            per_sim = [total // len(spec.sims) + (i < total % len(spec.sims)) for i in range(len(spec.sims))]
            for sim, n in zip(spec.sims, per_sim):
                for index, start in enumerate(range(0, n, spec.shard)):
                    units.append(Unit(stage, split, sim, index, min(spec.shard, n - start)))
    return units


_POOL: dict[tuple[str, bool, int], list] = {}


def env_pool(sim: str, n: int, camera: bool, image_size: int) -> list:
    """``n`` envs of ``sim`` (frames from ``env.render()`` when ``camera``), made once per
    process and kept until it exits.

    MuJoCo renderers must not be closed while another one is still used in the same
    process: closing one leaves no GL context current and the other's frames come out as
    garbage. So envs that render are never closed early; at exit they are closed all
    together, newest first, before the interpreter tears EGL down.
    """
    import sims

    key = (sim, camera, image_size)
    envs = _POOL.setdefault(key, [])
    if len(envs) < n:
        while len(envs) < n:
            envs.append(sims.make(sim, render_mode="rgb_array" if camera else None, image_size=max(8, image_size)))
        # (Re-)registered after the newest renderer exists, so it runs before the GL back end's
        # own exit hook tears the display down (atexit runs the last-registered hook first).
        atexit.unregister(_close_pool)
        atexit.register(_close_pool)
    return envs[:n]


def _close_pool() -> None:
    for envs in reversed(list(_POOL.values())):
        for env in reversed(envs):
            try:
                env.close()
            except Exception:  # noqa: BLE001  (teardown: nothing left to report to)
                pass
    _POOL.clear()


class Generator:
    """Runs units, with one env per sim from the process's ``env_pool``."""

    def __init__(self, spec: DataSpec) -> None:
        self.spec = spec

    def env(self, sim: str):
        return env_pool(sim, 1, self.spec.camera, self.spec.image_size)[0]

    def run(self, unit: Unit, out_dir: str) -> dict[str, Any]:
        """Generate ``unit`` into ``out_dir/unit.name`` (atomically); returns its summary."""
        rng = np.random.default_rng(unit.seed(self.spec.seed))
        env = self.env(unit.sim)
        if STAGE_DATA[unit.stage] == SCENES:
            arrays, meta = self._scenes(env, unit, rng)
        else:
            arrays, meta = self._episodes(env, unit, rng)
        from safetensors.numpy import save_file

        # One metadata key: safetensors writes several in a random order, and the bytes (hence
        # the manifest's checksums) must depend on the data alone.
        meta = {"unit": json.dumps({"unit": asdict(unit), "meta": meta}, sort_keys=True)}
        path = Path(out_dir) / unit.name
        with atomic_path(path) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp, metadata=meta)
        return {"file": unit.name, "count": unit.quota}

    # -------------------------------------------------------------- behaviour

    def _frame(self, env) -> np.ndarray | None:
        return env.render() if self.spec.camera else None

    def _behaviour(self, env, rng, noise_max: float, random_share: float):
        """A per-episode behaviour: ``act(obs) -> (label, executed)`` (normalized actions; the label
        is the demonstrator's, the executed one carries this episode's noise or is random),
        whether the episode is a random-action one, and its noise std."""
        emb = env.embodiment
        demo = env.demonstrator() if env.defines_success else None
        if demo is not None:
            demo.reset()
        random_ep = demo is None or rng.random() < random_share
        sigma = 0.0 if random_ep else float(rng.uniform(0.0, noise_max))

        def act(obs) -> tuple[np.ndarray, np.ndarray]:
            label = emb.normalize_action(demo(obs)) if demo is not None else np.zeros(emb.action_dim, np.float32)
            if random_ep:
                executed = rng.uniform(-1.0, 1.0, emb.action_dim)
            else:
                executed = label + rng.normal(0.0, sigma, emb.action_dim) if sigma > 0 else label
            return label.astype(np.float32), np.clip(executed, -1.0, 1.0).astype(np.float32)

        return act, random_ep, sigma

    def _scenes(self, env, unit: Unit, rng) -> tuple[dict[str, np.ndarray], dict]:
        spec, emb = self.spec, env.embodiment
        qa = unit.stage == "understand"
        proprio, frames, quality, captions = [], [], [], []
        qa_scene, qa_choices, qa_quality, questions, answers = [], [], [], [], []
        count = 0
        while count < unit.quota:
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            act, _, _ = self._behaviour(env, rng, spec.scene_noise, spec.random_episodes)
            history = [obs["proprio"]] * spec.history
            steps = int(rng.integers(spec.chunk, spec.max_steps + 1))
            for t in range(steps):
                if rng.random() < 1.0 / spec.scene_every and count < unit.quota:
                    facts = describe(env)
                    scene = len(proprio)
                    proprio.append(np.stack(history))
                    if spec.camera:
                        frames.append(self._frame(env))
                    quality.append(facts.quality)
                    captions.append(facts.caption)
                    if qa:
                        for q in facts.questions[: unit.quota - count]:
                            qa_scene.append(scene)
                            questions.append(q.question)
                            answers.append(q.answer)
                            qa_choices.append(len(q.choices))
                            qa_quality.append(q.margin)
                        count = len(questions)
                    else:
                        count += 1
                _, action = act(obs)
                obs, _, terminated, truncated, _ = env.step(emb.to_env_action(action))
                history = history[1:] + [obs["proprio"]]
                if terminated or truncated:
                    break
        arrays = {"proprio": np.asarray(proprio, np.float32), "quality": np.asarray(quality, np.float32)}
        if spec.camera:
            arrays["frame"] = np.asarray(frames, np.uint8)
        texts: dict[str, Any] = {"caption": captions}
        if qa:
            arrays.update(qa_scene=np.asarray(qa_scene, np.int64), qa_choices=np.asarray(qa_choices, np.int64),
                          qa_quality=np.asarray(qa_quality, np.float32))
            texts.update(question=questions, answer=answers)
        return arrays, {"texts": texts, **_embodiment_info(env)}

    def _episodes(self, env, unit: Unit, rng) -> tuple[dict[str, np.ndarray], dict]:
        spec, emb = self.spec, env.embodiment
        video = unit.stage == "video"
        noise = spec.video_noise if video else spec.action_noise
        proprio, frames, executed, labels, episode = [], [], [], [], []
        windows, window_quality, ep_quality, ep_success = [], [], [], []
        n_ep = 0
        while len(windows) < unit.quota:
            obs, info = env.reset(seed=int(rng.integers(2**31)))
            act, random_ep, sigma = self._behaviour(env, rng, noise, spec.random_episodes if video else 0.0)
            first = len(proprio)
            proprio.append(obs["proprio"])
            if spec.camera:
                frames.append(self._frame(env))
            success_at = 0 if info.get("success") else None
            for t in range(spec.max_steps):
                label, action = act(obs)
                obs, _, terminated, truncated, info = env.step(emb.to_env_action(action))
                labels.append(label)
                executed.append(action)
                proprio.append(obs["proprio"])
                if spec.camera:
                    frames.append(self._frame(env))
                if info.get("success") and success_at is None:
                    success_at = t
                if terminated or truncated or (success_at is not None and t - success_at >= spec.after_success):
                    break
            labels.append(np.zeros(emb.action_dim, np.float32))  # the last observation has no action
            executed.append(np.zeros(emb.action_dim, np.float32))
            steps = len(proprio) - first - 1  # actions taken
            episode += [n_ep] * (steps + 1)
            succeeded = success_at is not None
            quality = 0.0 if random_ep else float(succeeded) * (1.0 - sigma / noise if noise > 0 else 1.0)
            ep_quality.append(quality)
            ep_success.append(succeeded)
            for s in range(0, steps - spec.chunk + 1, spec.stride):
                if len(windows) < unit.quota:
                    windows.append(first + s)
                    window_quality.append(quality)
            n_ep += 1
        arrays = {
            "proprio": np.asarray(proprio, np.float32),
            "executed": np.asarray(executed, np.float32),
            "label": np.asarray(labels, np.float32),
            "episode": np.asarray(episode, np.int64),
            "windows": np.asarray(windows, np.int64),
            "window_quality": np.asarray(window_quality, np.float32),
            "episode_success": np.asarray(ep_success, np.int64),
        }
        if spec.camera:
            arrays["frame"] = np.asarray(frames, np.uint8)
        return arrays, {"texts": {}, **_embodiment_info(env)}


def _embodiment_info(env) -> dict[str, Any]:
    emb = env.embodiment
    return {"task": env.task_text, "embodiment": asdict(emb)}


def sim_info(name: str) -> dict[str, Any]:
    """What the data layer needs to know about a sim before generating: does it have a demonstrator."""
    import sims

    env = sims.make(name)
    try:
        has_demo = bool(env.defines_success)
        if has_demo:
            try:
                env.demonstrator()
            except NotImplementedError:
                has_demo = False
        return {"demonstrator": has_demo, "embodiment": asdict(env.embodiment), "task": env.task_text}
    finally:
        env.close()


def demonstrator_succeeds(name: str, max_steps: int, seeds: int = 3) -> bool:
    """Whether ``name``'s demonstrator, without noise, succeeds within ``max_steps`` steps in any
    of ``seeds`` seeded episodes."""
    import sims

    env = sims.make(name)
    try:
        for seed in range(seeds):
            obs, _ = env.reset(seed=seed)
            demo = env.demonstrator()
            demo.reset()
            for _ in range(max_steps):
                obs, _, terminated, truncated, info = env.step(demo(obs))
                if info.get("success"):
                    return True
                if terminated or truncated:
                    break
        return False
    finally:
        env.close()


def check_demonstrations(spec: DataSpec) -> None:
    """Fail before any generation where the action data would never show a task done: episodes
    cut at ``max_steps`` before the demonstrator succeeds teach half a task (a swing-up's pumping
    without its balance), and every window's quality (what the decay trains on) would be 0."""
    if "action" not in spec.stages:
        return
    for name in spec.sims:
        if not demonstrator_succeeds(name, spec.max_steps):
            raise ValueError(f"data.max_steps={spec.max_steps}: {name}'s demonstrator does not succeed within "
                             f"{spec.max_steps} steps (3 seeds, no noise), so its action data would never show the "
                             "task done; raise data.max_steps (if the sim's own episodes end first, they are too short "
                             "for it)")


# ---------------------------------------------------------------------- generation + cache


MANIFEST = "manifest.json"


def cache_path(spec: DataSpec, cache_dir: str | os.PathLike) -> Path:
    return Path(cache_dir) / spec.key()


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest if it exists and every file it lists is intact."""
    try:
        manifest = store.read_json(directory / MANIFEST)
    except (OSError, ValueError):
        return None
    for name, digest in manifest.get("files", {}).items():
        path = directory / name
        if not path.is_file() or sha256_file(path) != digest:
            return None
    return manifest


def ensure(spec: DataSpec, cache_dir: str | os.PathLike, workers: int = 1,
           log: Callable[[str], None] = print, progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """The cached data of ``spec``, generated (in parallel over Ray actors when
    ``workers > 1`` and more than one core is available) if not cached yet."""
    directory = cache_path(spec, cache_dir)
    manifest = read_manifest(directory)
    if manifest is not None:
        log(f"data: cached at {directory} ({_counts_line(manifest)})")
        return directory, manifest
    _drop_corrupt(directory)
    directory.mkdir(parents=True, exist_ok=True)
    units = plan_units(spec)
    # A unit file exists only once complete (atomic rename): keep those from an interrupted run.
    todo = [u for u in units if not (directory / u.name).is_file()]
    start = time.perf_counter()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n_workers = min(workers, cores, len(todo))
    log(f"data: generating {len(todo)} of {len(units)} units into {directory} "
        f"({'Ray, ' + str(n_workers) + ' actors' if n_workers > 1 else 'in-process'})")
    if todo:
        ticker = _Ticker(sum(u.quota for u in todo), log)
        if n_workers > 1:
            _run_ray(spec, todo, str(directory), n_workers, progress, ticker)
        else:
            _run_local(spec, todo, str(directory), progress, ticker)
    files = {u.name: sha256_file(directory / u.name) for u in units}
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for u in units:
        counts.setdefault(u.stage, {}).setdefault(u.split, {}).setdefault(u.sim, 0)
        counts[u.stage][u.split][u.sim] += u.quota
    manifest = {"key": spec.key(), "version": VERSION, "spec": asdict(spec), "counts": counts, "files": files,
                "seconds": round(time.perf_counter() - start, 1)}
    write_json_atomic(directory / MANIFEST, manifest)
    log(f"data: done in {manifest['seconds']} s ({_counts_line(manifest)})")
    return directory, store.read_json(directory / MANIFEST)


def _drop_corrupt(directory: Path) -> None:
    """Delete the unit files an old manifest vouched for whose checksum no longer matches."""
    try:
        files = store.read_json(directory / MANIFEST).get("files", {})
    except (OSError, ValueError):
        return
    for name, digest in files.items():
        path = directory / name
        if path.is_file() and sha256_file(path) != digest:
            path.unlink()
    (directory / MANIFEST).unlink()


def _counts_line(manifest: dict[str, Any]) -> str:
    parts = []
    for stage, splits in manifest["counts"].items():
        parts.append(f"{stage} {sum(splits['train'].values())}+{sum(splits.get('eval', {}).values())}")
    return ", ".join(parts) + " train+eval examples"


def _progress(total: int, description: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return bar, bar.add_task(description, total=total)


class _Ticker:
    """A log line at every tenth of the examples (the bar shows only on a terminal)."""

    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.total, self.log, self.done, self.next = total, log, 0, 0.1
        self.start = time.perf_counter()

    def __call__(self, n: int) -> None:
        self.done += n
        if self.done >= self.next * self.total and self.done < self.total:
            self.log(f"data: {self.done}/{self.total} examples ({time.perf_counter() - self.start:.0f} s)")
            while self.next * self.total <= self.done:
                self.next += 0.1


def _run_local(spec: DataSpec, units: list[Unit], out_dir: str, progress: bool, tick) -> None:
    gen = Generator(spec)
    bar, task = _progress(sum(u.quota for u in units), "generating examples")
    with bar if progress and bar.console.is_terminal else contextlib.nullcontext():
        for unit in units:
            gen.run(unit, out_dir)
            bar.advance(task, unit.quota)
            tick(unit.quota)


def _run_ray(spec: DataSpec, units: list[Unit], out_dir: str, workers: int, progress: bool, tick) -> None:
    import ray

    from sims.local_ray import init_local_ray

    started = not ray.is_initialized()
    if started:
        init_local_ray(workers, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}})
    try:
        remote = ray.remote(num_cpus=1)(Generator)
        actors = [remote.remote(spec) for _ in range(workers)]
        bar, task = _progress(sum(u.quota for u in units), f"generating examples on {workers} Ray actors")
        queue = sorted(units, key=lambda u: -u.quota)
        pending: dict[Any, tuple[Any, Unit]] = {}
        with bar if progress and bar.console.is_terminal else contextlib.nullcontext():
            for actor in actors:
                if queue:
                    unit = queue.pop(0)
                    pending[actor.run.remote(unit, out_dir)] = (actor, unit)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                actor, unit = pending.pop(done[0])
                ray.get(done[0])  # re-raises a worker's error here
                bar.advance(task, unit.quota)
                tick(unit.quota)
                if queue:
                    nxt = queue.pop(0)
                    pending[actor.run.remote(nxt, out_dir)] = (actor, nxt)
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------- in memory


@dataclass
class Bank:
    """One dataset split in memory, every sim together, padded to the model's sizes.

    Scenes: ``proprio`` (N, H, P), ``frame`` (N, S, S, 3) uint8, ``caption``; for
    understanding also one row per question (``qa_*``, ``question``, ``answer``).
    Episodes: per step ``proprio`` (N, P), ``frame``, ``executed`` and ``label`` (N, A),
    ``first`` (the flat index of the step's episode start); ``windows`` (W,) flat starts.
    ``sim`` indexes ``sims`` per row (per scene, per step); masks are per sim.
    """

    stage: str
    kind: str
    sims: tuple[str, ...]
    tasks: tuple[str, ...]
    proprio_mask: torch.Tensor          # (n_sims, P) bool
    action_mask: torch.Tensor           # (n_sims, A) bool
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    texts: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        """Examples: questions, scenes or windows."""
        if self.stage == "understand":
            return len(self.tensors["qa_scene"])
        if self.kind == SCENES:
            return len(self.tensors["proprio"])
        return len(self.tensors["windows"])

    def quality(self) -> torch.Tensor:
        if self.stage == "understand":
            return self.tensors["qa_quality"]
        if self.kind == SCENES:
            return self.tensors["quality"]
        return self.tensors["window_quality"]

    def example_sims(self) -> torch.Tensor:
        """The sim index of every example."""
        if self.stage == "understand":
            return self.tensors["sim"][self.tensors["qa_scene"]]
        if self.kind == SCENES:
            return self.tensors["sim"]
        return self.tensors["sim"][self.tensors["windows"]]


def load(directory: Path, manifest: dict[str, Any], spec: DataSpec, proprio_pad: int,
         action_pad: int) -> dict[str, dict[str, Bank]]:
    """Every dataset split of the cache as ``{stage: {split: Bank}}``."""
    from safetensors import safe_open

    units = [Unit(**u) for u in (_unit_of(directory / name) for name in manifest["files"])]
    out: dict[str, dict[str, Bank]] = {}
    for stage, _ in spec.sizes:
        out[stage] = {}
        for split in SPLITS:
            parts = sorted((u for u in units if u.stage == stage and u.split == split),
                           key=lambda u: (spec.sims.index(u.sim), u.index))
            loaded = []
            for u in parts:
                with safe_open(str(directory / u.name), framework="np") as f:
                    arrays = {k: f.get_tensor(k) for k in f.keys()}
                    meta = json.loads(f.metadata()["unit"])["meta"]
                loaded.append((u, arrays, meta))
            out[stage][split] = _bank(stage, loaded, spec, proprio_pad, action_pad)
            if len(out[stage][split]) == 0:
                raise ValueError(f"the {stage!r} {split} dataset is empty")
    return out


def _unit_of(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return json.loads(f.metadata()["unit"])["unit"]


def _bank(stage: str, loaded: list, spec: DataSpec, proprio_pad: int, action_pad: int) -> Bank:
    from sims.embodiment import Embodiment

    kind = STAGE_DATA[stage]
    embs, tasks = {}, {}
    for u, _, meta in loaded:
        e = meta["embodiment"]
        embs[u.sim] = Embodiment(e["name"], e["proprio_dim"], e["action_dim"], tuple(e["action_low"]),
                                 tuple(e["action_high"]))
        tasks[u.sim] = meta["task"]
    sims_here = tuple(s for s in spec.sims if s in embs)
    pmask = torch.as_tensor(np.stack([embs[s].proprio_mask(proprio_pad) for s in sims_here]))
    amask = torch.as_tensor(np.stack([embs[s].action_mask(action_pad) for s in sims_here]))
    cols: dict[str, list[np.ndarray]] = {}
    texts: dict[str, list[str]] = {}
    offset_rows = offset_steps = 0
    for u, arrays, meta in loaded:
        emb, sim_id = embs[u.sim], sims_here.index(u.sim)
        n = len(arrays["proprio"])
        add = cols.setdefault
        add("proprio", []).append(emb.pad_proprio(arrays["proprio"], proprio_pad))
        add("sim", []).append(np.full(n, sim_id, np.int64))
        if "frame" in arrays:
            add("frame", []).append(arrays["frame"])
        for name, values in meta["texts"].items():
            texts.setdefault(name, []).extend(values)
        if kind == SCENES:
            add("quality", []).append(arrays["quality"])
            if stage == "understand":
                add("qa_scene", []).append(arrays["qa_scene"] + offset_rows)
                add("qa_choices", []).append(arrays["qa_choices"])
                add("qa_quality", []).append(arrays["qa_quality"])
            offset_rows += n
        else:
            add("executed", []).append(emb.pad_action(arrays["executed"], action_pad))
            add("label", []).append(emb.pad_action(arrays["label"], action_pad))
            episode = arrays["episode"]
            starts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
            first = starts[np.searchsorted(starts, np.arange(n), side="right") - 1]
            add("first", []).append(first + offset_steps)
            add("windows", []).append(arrays["windows"] + offset_steps)
            add("window_quality", []).append(arrays["window_quality"])
            offset_steps += n
    tensors = {k: torch.as_tensor(np.concatenate(v)) for k, v in cols.items()}
    return Bank(stage, kind, sims_here, tuple(tasks[s] for s in sims_here), pmask, amask, tensors, texts)


def proprio_statistics(banks: dict[str, dict[str, Bank]], proprio_pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per padded proprio dimension over the real entries of every train set."""
    total = torch.zeros(proprio_pad, dtype=torch.float64)
    square = torch.zeros(proprio_pad, dtype=torch.float64)
    count = torch.zeros(proprio_pad, dtype=torch.float64)
    for splits in banks.values():
        bank = splits["train"]
        p = bank.tensors["proprio"].double()
        p = p[:, -1] if p.dim() == 3 else p  # scenes: the latest step of the history
        mask = bank.proprio_mask[bank.tensors["sim"]].double()
        total += (p * mask).sum(0)
        square += (p * p * mask).sum(0)
        count += mask.sum(0)
    mean, std = _masked_moments(total, square, count, floor=1e-3)
    return mean.float(), std.float()


def _masked_moments(total: torch.Tensor, square: torch.Tensor, count: torch.Tensor,
                    floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std from masked sums; a std of 1 where it is unknown (fewer than two entries) or
    at most ``floor`` (constant or unused dimensions), so dividing by it is always safe."""
    mean = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
    var = torch.where(count > 1, square / count.clamp_min(1) - mean**2, torch.ones_like(total))
    std = var.clamp_min(0).sqrt()
    return mean, torch.where(std > floor, std, torch.ones_like(std))


def motion_statistics(banks: dict[str, dict[str, Bank]], chunk: int, proprio_pad: int) -> torch.Tensor | None:
    """(chunk, proprio_pad) std of proprio[w + t] - proprio[w], t = 1..chunk, over the windows w of
    every episode train set (``policies.future``'s motion scale); None when there is none."""
    total = torch.zeros(chunk, proprio_pad, dtype=torch.float64)
    square = torch.zeros_like(total)
    count = torch.zeros_like(total)
    for splits in banks.values():
        bank = splits["train"]
        if bank.kind != EPISODES:
            continue
        p, w = bank.tensors["proprio"].double(), bank.tensors["windows"]
        motion = p[w[:, None] + torch.arange(1, chunk + 1)[None]] - p[w][:, None]  # (W, chunk, P)
        mask = bank.proprio_mask[bank.tensors["sim"][w]].double()[:, None].expand_as(motion)
        total += (motion * mask).sum(0)
        square += (motion * motion * mask).sum(0)
        count += mask.sum(0)
    if not bool((count > 1).any()):
        return None
    return _masked_moments(total, square, count, floor=1e-4)[1].float()
