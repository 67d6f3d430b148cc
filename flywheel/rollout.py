"""Perceive -> Imagine -> Act in simulators: the rollout loop every rollout actor runs.

``collect`` drives a vector of envs in lockstep. Each round it perceives every active env
in one batch, plans (imagine ``n_candidates`` futures, act on each, keep the best: by the
agent's own score, or with ``choose="sim"`` the best when the env runs each from its current
state: the most chunk reward, ``best_in_sim``, or with a critic the highest reward plus the
critic's discounted value at the chunk's end, ``ranked``; with ``lookahead_chunks`` = H each
candidate is first continued by the policy for H chunks in the sim, ``_continued``, and its
reward counts theirs) or acts on the observation alone when
planning is off, then executes each env's chosen chunk open-loop. Every chunk becomes one
row: the observation it started from (``proprio``: the last ``history`` steps, the model's
input), the chosen actions, the imagined and the realized proprio, the rewards and success,
and whatever ``grade_chunk`` says about it (the grader holds the imagination against reality there,
while the chunk's start state is at hand).

Rows are a ``flywheel.rows.ChunkRows`` (the schema lives there), padded to the model's shared
sizes so chunks of different embodiments stack. ``return`` is filled in when an episode
ends: the reward from the chunk's start to the episode's end, the return head's target.
With ``choose="sim"`` every row also keeps every candidate the sim ran (``candidate_*``):
labelled data for the critic (``flywheel.td``); with the look-ahead, also the reward each
candidate's continued run earned (``candidate_lookahead_reward``), the order the ranker learns.

Frames (``RolloutSpec.camera``): the agent perceives the camera frame of every chunk's start,
and the row keeps it, the frame after each step the chunk ran and, where the model imagines
frames, the ones it imagined (``flywheel.rows.FRAME_COLUMNS``). The envs render only there
(``env.render()``, made by ``env_kwargs``), never in ``best_in_sim``'s look-ahead or the
grader's replays: a camera observation in every engine step would render 18 frames per env
step at the default 16 candidates.

Quarantine: given a ``quarantine`` list, an episode in which a sim refuses a NaN or inf
(``sims.NonFiniteError``: in an observation or a reward, in the model's action, or in the
future it imagined, which the grader would choke on) is dropped, rows and all (never trained
on), recorded in the list (``flywheel.store.QuarantinedEpisode``), and its env starts the
next episode: one bad episode costs itself, not the run. Without the list the error goes up.

``sim_steps`` is every sim step spent on a chunk, read off the process's step counter
(``sims.engine_steps_taken``) around the chunk's own work: its ``best_in_sim`` look-ahead,
its execution and its grading (the grader's reference engine; an unprepared grader's
start-up lands on the first chunk it grades, which is why rollout actors call
``ChunkGrader.prepare`` first). Counting rather than deriving the steps means no path is
missed; the column sums to every step ``collect`` caused.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from flywheel.rows import (ACTION_DIM, ACTIONS, CANDIDATE_ACTIONS, CANDIDATE_IMAGINED, CANDIDATE_LOOKAHEAD_REWARD,
                           CANDIDATE_NEXT_PROPRIO, CANDIDATE_REWARDS, CANDIDATE_STEPS, CANDIDATE_TERMINATED, CHUNK,
                           CYCLE, ENGINE_REALIZED, ENGINE_REWARDS, ENGINE_START, EPISODE, EPISODE_RETURN,
                           EPISODE_SUCCESS, FRAME, IMAGINED, IMAGINED_FRAMES, PLANNED, PROPRIO, PROPRIO_DIM, REALIZED,
                           REALIZED_FRAMES, RETURN, REWARD, REWARDS, SIM, SIM_STEPS, STEPS, SUCCESS, TASK, TERMINATED,
                           WEIGHT_VERSION, WORKER, ChunkRows, episode_id, grade_columns, next_proprio, to_pixels)
from flywheel.store import QuarantinedEpisode, shares
from policies.agent import Agent
from policies.critic import td_target
from configs.schema import SimConfig
from sims import NonFiniteError, SimEnv, SimState, engine_steps_taken
from sims.embodiment import Embodiment
from world_model.learned_env import LearnedSimEnv

# How a plan's candidate is chosen: by the agent's own score (return head), or by running
# every candidate in the training sim from the current state and keeping the best reward.
CHOOSERS = ("model", "sim")

# grade_chunk(env, start_state, imagined (n, p), realized (n, p), actions (n, a), rewards (n,), success)
#   -> a ``world_model.grader.Grade``; ``n`` is the number of steps the chunk really ran.
GradeChunk = Callable[..., Any]


@dataclass(frozen=True)
class RolloutSpec:
    """How one worker collects: whose weights, how many episodes, how it plans."""

    episodes: int
    cycle: int = 0
    worker: int = 0
    weight_version: int = 0
    seed: int = 0
    planning: bool = True
    n_candidates: int = 4
    flow_steps: int | None = None
    choose: str = "model"  # which candidate runs: the model's best score, or the best in the sim
    discount: float = 0.99  # per step; with a critic, choose=sim ranks by chunk reward + discounted V at its end
    # choose=sim: chunks the policy acts past each candidate before the candidates are ranked
    # (``_continued``); 0 ranks them by their own chunk (module docstring).
    lookahead_chunks: int = 0
    camera: bool = False  # perceive and record frames (module docstring); the envs must render (``env_kwargs``)
    # A multi-task run's: the sim each episode runs in (one per episode; ``task_plan``), so that
    # an env runs only its own sim's episodes. None: every env runs any episode (one task).
    episode_sims: tuple[str, ...] | None = None
    # A learned training sim's rows also keep its engine's steps (``flywheel.rows.ENGINE_COLUMNS``),
    # which ``world_model.refit`` trains on; a refit run has one training sim, every env learned.
    engine: bool = False
    # choose=sim rows also keep the future each candidate was imagined with (``CANDIDATE_IMAGINED``):
    # what ``learner.candidate_samples`` learns from, twice a row's bytes, so only where it is on.
    candidate_futures: bool = False

    def __post_init__(self) -> None:
        if self.choose not in CHOOSERS:
            raise ValueError(f"choose must be one of {CHOOSERS}, got {self.choose!r}")
        if self.choose == "sim" and not self.planning:
            raise ValueError("choose=sim ranks a plan's candidates in the sim, so it needs planning=true "
                             "(or choose=model)")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.planning and self.n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1 when planning, got {self.n_candidates}")
        if not 0 < self.discount <= 1:
            raise ValueError(f"learner.discount must be in (0, 1], got {self.discount}")
        chunks = self.lookahead_chunks
        if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 0:
            raise ValueError(f"lookahead_chunks must be an int >= 0 (chunks the policy acts past each candidate), "
                             f"got {chunks!r}")
        if chunks and self.choose != "sim":
            raise ValueError(f"lookahead_chunks={chunks} continues the candidates the training sim runs, so it "
                             f"needs choose=sim (got choose={self.choose})")
        if chunks and self.camera:
            raise ValueError("lookahead_chunks: the policy's look-ahead perceives proprio only, and a camera run's "
                             "agent perceives frames; use lookahead_chunks=0 with camera=true")
        if self.candidate_futures and self.choose != "sim":
            raise ValueError("learner.candidate_samples learns the candidates the training sim ran, so it needs "
                             f"choose=sim (got choose={self.choose})")
        if self.episode_sims is not None and len(self.episode_sims) != self.episodes:
            raise ValueError(f"episode_sims names {len(self.episode_sims)} episodes' sims for {self.episodes} episodes")


def task_plan(sims: Sequence[str], weights: Sequence[float], episodes: int, seed) -> list[str]:
    """The sim each of a multi-task cycle's ``episodes`` runs in: each task's share of them by
    weight (``flywheel.store.shares``), in an order shuffled by ``seed`` so that every rollout worker's share
    mixes the tasks."""
    counts = shares(weights, episodes)
    plan = [sim for sim, count in zip(sims, counts) for _ in range(count)]
    order = np.random.default_rng(seed).permutation(len(plan))
    return [plan[i] for i in order]


def env_kwargs(sim: SimConfig, camera: bool, image_size: int) -> dict[str, Any]:
    """``sims.make``'s keywords for a rollout env of ``sim``: with ``camera``, one that renders
    ``image_size`` frames when ``collect`` asks (``render_mode``), not a camera observation in every
    step; ``sim.image_size``, where set, must be that size (``flywheel.controller.check_camera``)."""
    kwargs = {**sim.make_kwargs(), "camera": False}
    kwargs.pop("image_size", None)
    return {**kwargs, "render_mode": "rgb_array", "image_size": image_size} if camera else kwargs


def reset_seed(seed: int, index: int) -> int:
    """The reset seed of the ``index``-th episode (in start order) a spec with ``seed`` runs:
    evaluation's fixed episodes are these, for the flywheel and for any baseline."""
    return seed * 100_003 + index


def collect(agent: Agent, envs: Sequence[SimEnv], spec: RolloutSpec,
            grade_chunk: GradeChunk | None = None, quarantine: list[QuarantinedEpisode] | None = None) -> ChunkRows:
    """Run ``spec.episodes`` episodes over ``envs`` and return one row per executed chunk of
    the episodes not quarantined (see the module docstring)."""
    cfg = agent.cfg
    out: dict[str, list] = defaultdict(list)
    generator = torch.Generator(device=agent.device).manual_seed(spec.seed)
    episodes = _Episodes(envs, spec, cfg.history, quarantine, cfg.image_size)
    active, start, drop = episodes.active, episodes.start, episodes.drop

    for i in range(len(envs)):
        start(i)
    while active:
        order = sorted(active)
        embodiments = [envs[i].embodiment for i in order]
        histories = [np.stack(active[i]["history"]) for i in order]
        try:
            chosen, imagined, ran, lookahead = _decide(agent, [envs[i] for i in order],
                                                       [active[i]["obs"] for i in order], histories, embodiments,
                                                       spec, generator)
        except _NonFiniteIn as failed:  # choose=sim's look-ahead: that env's episode goes, the rest decide again
            drop(order[failed.slot], failed.error)
            continue
        # Batch-wide arrays, filled per env below; each row keeps a view of its slot.
        inputs = np.zeros((len(order), cfg.history, cfg.proprio_pad), np.float32)
        realized_pad = np.zeros((len(order), cfg.chunk, cfg.proprio_pad), np.float32)
        frames_pad = np.zeros((len(order), cfg.chunk, cfg.image_size, cfg.image_size, 3), np.uint8) \
            if spec.camera else [None] * len(order)
        for slot, env_actions in enumerate(_env_actions(chosen, embodiments)):
            i = order[slot]
            env, episode, emb = envs[i], active[i], embodiments[slot]
            inputs[slot, :, : emb.proprio_dim] = histories[slot]
            steps_before = engine_steps_taken()
            try:
                row, done = _chunk(spec, env, episode, inputs[slot], chosen[slot], env_actions,
                                   None if imagined is None else {k: v[slot] for k, v in imagined.items()},
                                   (realized_pad[slot], frames_pad[slot]), grade_chunk)
            except NonFiniteError as error:
                drop(i, error)
                continue
            if ran is not None:
                row.update(ran[slot])
            row[SIM_STEPS] = lookahead[slot] + engine_steps_taken() - steps_before
            episode["rows"].append(row)
            episode["chunk"] += 1
            if done:
                _finish(episode, out)
                del active[i]
                start(i)
    if not out:  # every episode quarantined
        return ChunkRows({})
    return ChunkRows.of({k: np.asarray(v, dtype=object if k in (SIM, TASK) else None) for k, v in out.items()})


def frame_of(env: SimEnv, size: int) -> np.ndarray:
    """The env's camera frame now (uint8, size x size x 3), as the agent perceives it."""
    frame = env.render()
    if frame is None or np.shape(frame) != (size, size, 3):
        got = "no frame (it was made without render_mode='rgb_array': flywheel.rollout.env_kwargs)" if frame is None \
            else f"{np.shape(frame)} frames"
        raise ValueError(f"{env.name}: the camera run's agent takes {size}x{size} frames, the env renders {got}")
    return np.array(frame, dtype=np.uint8)  # a copy: a renderer may reuse its buffer


class _Episodes:
    """Which env runs which of ``spec``'s episodes (``active``: env index -> the episode's
    state), started in order; a quarantined one is recorded (or, without ``quarantine``, its
    error raised) and its env starts the next."""

    def __init__(self, envs: Sequence[SimEnv], spec: RolloutSpec, history: int,
                 quarantine: list[QuarantinedEpisode] | None, image_size: int) -> None:
        self.envs, self.spec, self.history, self.quarantine = envs, spec, history, quarantine
        self.image_size = image_size
        # The episodes not started yet, in order: per sim when the spec assigns them (``episode_sims``).
        self.waiting: dict[str | None, deque[int]] = defaultdict(deque)
        for index in range(spec.episodes):
            self.waiting[None if spec.episode_sims is None else spec.episode_sims[index]].append(index)
        unserved = set(self.waiting) - {None} - {env.name for env in envs}
        if unserved:
            raise ValueError(f"episodes in {', '.join(sorted(unserved))}, but no env of that sim to run them")
        self.active: dict[int, dict[str, Any]] = {}

    def start(self, i: int) -> None:
        """Env ``i`` starts the next episode (of its sim, when the spec assigns them), if any is left."""
        spec = self.spec
        waiting = self.waiting[None if spec.episode_sims is None else self.envs[i].name]
        while waiting:
            index = waiting.popleft()
            try:
                obs, info = self.envs[i].reset(seed=reset_seed(spec.seed, index))
                if spec.camera:
                    obs = {**obs, "image": frame_of(self.envs[i], self.image_size)}
            except NonFiniteError as error:
                self._quarantined(episode_id(spec.cycle, spec.worker, index), error)
                continue
            # The model reads the last ``history`` proprio steps; before the episode has that many,
            # the first is repeated (as in pretraining's windows).
            self.active[i] = {"obs": obs, "history": [obs["proprio"]] * self.history,
                              "id": episode_id(spec.cycle, spec.worker, index), "chunk": 0,
                              "rows": [], "success": bool(info.get("success", False))}
            return

    def drop(self, i: int, error: NonFiniteError) -> None:
        """Env ``i``'s episode is quarantined, its rows dropped; the env starts the next one."""
        self._quarantined(self.active.pop(i)["id"], error)
        self.start(i)

    def _quarantined(self, episode: int, error: NonFiniteError) -> None:
        if self.quarantine is None:
            raise error
        self.quarantine.append(QuarantinedEpisode(episode, error.sim, error.field, error.step, str(error)))


class _NonFiniteIn(Exception):
    """``error`` came from the env at ``slot`` of a batch (``_sim_choice``'s look-ahead)."""

    def __init__(self, slot: int, error: NonFiniteError) -> None:
        super().__init__(str(error))
        self.slot, self.error = slot, error


def _decide(agent: Agent, envs: Sequence[SimEnv], observations: Sequence[dict], histories: Sequence[np.ndarray],
            embodiments: Sequence[Embodiment], spec: RolloutSpec, generator: torch.Generator
            ) -> tuple[np.ndarray, dict[str, np.ndarray] | None, list[dict[str, np.ndarray]] | None, np.ndarray]:
    """Perceive every env in one batch, then plan (or act on the observation alone): the chosen
    chunks (B, T, action_pad; model units), the imagined future (None when not planning:
    ``proprio`` (B, T, proprio_pad), and ``frames`` (B, T, S, S, 3) where the model imagines them),
    with ``choose=sim`` each env's candidate columns (else None), and the sim steps each
    env's choice cost (B,; the candidates' look-ahead, else 0)."""
    context = agent.perceive([{**obs, "proprio": h} for obs, h in zip(observations, histories)], embodiments)
    ran, lookahead = None, np.zeros(len(envs), np.int64)
    if spec.planning:
        plan = agent.plan(context, spec.n_candidates, steps=spec.flow_steps, generator=generator)
        if spec.choose == "sim":
            futures = None
            if spec.candidate_futures:
                futures = plan.futures.values["proprio"].detach().cpu().numpy().astype(np.float32, copy=False)
                futures = futures.reshape(len(envs), spec.n_candidates, *futures.shape[1:])
            choice, ran, lookahead = _sim_choice(agent, envs, plan.candidates.cpu().numpy(), futures, histories,
                                                 spec, generator)
            plan = plan.choose(choice)
        chosen, imagined = plan.actions, {k: v.detach().cpu().numpy().astype(np.float32, copy=False)
                                          for k, v in plan.imagined.values.items()}
    else:
        chosen = agent.act(context, None, steps=spec.flow_steps, generator=generator).actions.values["action"]
        imagined = None
    return chosen.detach().cpu().numpy().astype(np.float32, copy=False), imagined, ran, lookahead


def _sim_choice(agent: Agent, envs: Sequence[SimEnv], candidates: np.ndarray, futures: np.ndarray | None,
                histories: Sequence[np.ndarray], spec: RolloutSpec, generator: torch.Generator
                ) -> tuple[list[int], list[dict[str, np.ndarray]], np.ndarray]:
    """Run every env's candidates (B, n, T, A) in its sim (imagined as ``futures`` (B, n, T,
    proprio_pad), which the rows keep where given); per env the candidate to execute,
    the candidate columns of its row and the sim steps the look-ahead cost. Each candidate is
    ranked by its chunk's reward, or with ``spec.lookahead_chunks`` by that and the reward of the
    policy's next chunks after it (``_continued``); with a critic, plus the discounted value
    of the state it ends in (``ranked``), those states valued in one batch."""
    cfg = agent.cfg
    runs, lookahead = [], np.zeros(len(envs), np.int64)
    for slot, (env, chunks) in enumerate(zip(envs, candidates)):
        before = engine_steps_taken()
        try:
            runs.append(run_candidates(env, chunks, keep_end=spec.lookahead_chunks > 0))
        except NonFiniteError as error:
            raise _NonFiniteIn(slot, error) from error
        lookahead[slot] = engine_steps_taken() - before
    columns = [_candidate_columns(run, chunks, None if futures is None else futures[slot], history, cfg.chunk,
                                  cfg.proprio_pad)
               for slot, (run, chunks, history) in enumerate(zip(runs, candidates, histories))]
    ranking = runs
    ends = [[p[:, : env.embodiment.proprio_dim] for p in col[CANDIDATE_NEXT_PROPRIO]]
            for env, col in zip(envs, columns)]
    if spec.lookahead_chunks:
        ranking, ends = _continued(agent, envs, runs, ends, spec, generator, lookahead)
        for col, continued in zip(columns, ranking):
            col[CANDIDATE_LOOKAHEAD_REWARD] = np.array([float(sum(run.rewards)) for run in continued])
    values = None
    if agent.model.has_critic:
        states = [{"proprio": end, "task": env.task_text} for env, env_ends in zip(envs, ends) for end in env_ends]
        bodies = [env.embodiment for env, env_ends in zip(envs, ends) for _ in env_ends]
        with torch.no_grad():
            values = agent.values(agent.observe(states, bodies), target=True).cpu().double().numpy()
        values = values.reshape(len(envs), -1)
    choice = [ranked(run, spec.discount, None if values is None else values[slot])
              for slot, run in enumerate(ranking)]
    return choice, columns, lookahead


def _continued(agent: Agent, envs: Sequence[SimEnv], runs: list[list["Ran"]], ends: list[list[np.ndarray]],
               spec: RolloutSpec, generator: torch.Generator, lookahead: np.ndarray
               ) -> tuple[list[list["Ran"]], list[list[np.ndarray]]]:
    """Every candidate's run continued ``spec.lookahead_chunks`` chunks by the policy (the plain route:
    one chunk from the observation, all candidates of all envs in one batch a chunk), each from
    the state its candidate ended in: the runs ``ranked`` compares, and the proprio history
    each ends with (``ends``: each candidate's own). A run stops where its episode ends. The
    engine steps are added to each env's ``lookahead``; every env is left in its start state.

    Why: ranked by its own chunk's reward, a candidate that sets up reward beyond the chunk (a
    swing-up's pumping) loses to a greedy one; continued by the policy, the pick is a policy
    improvement step (the rollout algorithm), however short the chunk."""
    history = agent.cfg.history
    runs = [list(env_runs) for env_runs in runs]  # the caller's stay the candidates' own
    ends = [list(env_ends) for env_ends in ends]
    starts = [env.get_state() for env in envs]
    going = [(slot, c) for slot, env_runs in enumerate(runs) for c, run in enumerate(env_runs) if not run.ended]
    try:
        for _ in range(spec.lookahead_chunks):
            if not going:
                break
            bodies = [envs[slot].embodiment for slot, _ in going]
            observed = [{"proprio": ends[slot][c], "task": envs[slot].task_text} for slot, c in going]
            with torch.no_grad():
                acted = agent.act(agent.perceive(observed, bodies), None, steps=spec.flow_steps, generator=generator)
            chunks = acted.actions.values["action"].cpu().numpy()
            still = []
            for (slot, c), env_actions in zip(going, _env_actions(chunks, bodies)):
                env, run = envs[slot], runs[slot][c]
                before = engine_steps_taken()
                env.set_state(run.end)
                rewards, realized = [], []
                try:
                    for action in env_actions:
                        obs, reward, terminated, truncated, _ = env.step(action)
                        rewards.append(reward)
                        realized.append(obs["proprio"])
                        if terminated or truncated:
                            break
                except NonFiniteError as error:
                    raise _NonFiniteIn(slot, error) from error
                lookahead[slot] += engine_steps_taken() - before
                ended = bool(terminated or truncated)
                runs[slot][c] = Ran(run.rewards + rewards, run.realized + realized, bool(terminated), env.get_state(),
                                    ended)
                ends[slot][c] = np.concatenate([ends[slot][c], np.asarray(realized, np.float32)])[-history:]
                if not ended:
                    still.append((slot, c))
            going = still
    finally:
        for env, start in zip(envs, starts):
            env.set_state(start)
    return runs, ends


def _candidate_columns(runs: list["Ran"], candidates: np.ndarray, imagined: np.ndarray | None,
                       history: np.ndarray, chunk: int, proprio_pad: int) -> dict[str, np.ndarray]:
    """One row's ``flywheel.rows.CANDIDATE_COLUMNS``: every candidate the sim ran from its start
    (and, where ``imagined`` is given, the future each was imagined with)."""
    n, dim = len(runs), history.shape[1]
    start = np.zeros((n, history.shape[0], proprio_pad), np.float32)
    start[:, :, :dim] = history
    realized = np.zeros((n, chunk, proprio_pad), np.float32)
    for c, run in enumerate(runs):
        realized[c, : len(run.realized), :dim] = run.realized
    steps = np.array([len(run.rewards) for run in runs], np.int64)
    return {CANDIDATE_ACTIONS: candidates.astype(np.float32, copy=False),
            CANDIDATE_REWARDS: np.stack([_padded(run.rewards, chunk) for run in runs]),
            CANDIDATE_STEPS: steps, CANDIDATE_TERMINATED: np.array([run.terminated for run in runs]),
            CANDIDATE_NEXT_PROPRIO: next_proprio(start, realized, steps),
            **({} if imagined is None else {CANDIDATE_IMAGINED: imagined})}


def _chunk(spec: RolloutSpec, env: SimEnv, episode: dict[str, Any], proprio: np.ndarray, actions: np.ndarray,
           env_actions: np.ndarray, imagined: dict[str, np.ndarray] | None,
           realized_pad: tuple[np.ndarray, np.ndarray | None], grade_chunk: GradeChunk | None
           ) -> tuple[dict[str, Any], bool]:
    """Execute (and grade) one env's chunk: its row, less ``sim_steps`` and the candidate
    columns, and whether the episode ended. ``realized_pad``: the row's zeroed realized proprio
    and (camera runs) frames, filled here. Raises ``NonFiniteError`` for a NaN or inf met on
    the way, the model's imagined future included (the grader would refuse it)."""
    (realized_pad, frames_pad), emb, chunk = realized_pad, env.embodiment, len(realized_pad[0])
    own = None if imagined is None else imagined["proprio"]
    if own is not None and not np.all(np.isfinite(own)):
        raise NonFiniteError(env.name, "imagined proprio (the model's)", env.step_count, own)
    start_state: SimState | None = env.get_state() if grade_chunk is not None else None
    frame = episode["obs"].get("image")
    realized, rewards, terminated, done = _run_chunk(env, env_actions, episode, len(proprio), frames_pad)
    n = len(realized)
    realized_pad[:n, : emb.proprio_dim] = realized
    row = _row(spec, env, episode, proprio, actions, realized_pad, n, rewards)
    row.update({REWARDS: _padded(rewards, chunk), TERMINATED: terminated})
    if spec.engine:
        row.update(_engine_columns(env, n, chunk, realized_pad.shape[1]))
    if own is not None:
        row[IMAGINED] = own
    if spec.camera:
        row.update({FRAME: frame, REALIZED_FRAMES: frames_pad})
        if imagined is not None and "frames" in imagined:
            row[IMAGINED_FRAMES] = to_pixels(imagined["frames"])
    if grade_chunk is not None:
        own = None if own is None else own[:n, : emb.proprio_dim]
        row.update(grade_columns(grade_chunk(env, start_state, own, np.asarray(realized), env_actions[:n],
                                             np.asarray(rewards), episode["success"] if env.defines_success else None)))
    return row, done


def _engine_columns(env: LearnedSimEnv, steps: int, chunk: int, proprio_pad: int) -> dict[str, np.ndarray]:
    """``flywheel.rows.ENGINE_COLUMNS`` of the chunk just run in a learned sim: its engine's
    corrections of the chunk's ``steps`` steps (the last it recorded; the look-ahead's came before)."""
    ran = env.corrections.latest(steps)
    dim = env.embodiment.proprio_dim
    start = np.zeros(proprio_pad, np.float32)
    start[:dim] = ran[0][0]
    realized = np.zeros((chunk, proprio_pad), np.float32)
    realized[:steps, :dim] = [r[2] for r in ran]
    return {ENGINE_START: start, ENGINE_REALIZED: realized, ENGINE_REWARDS: _padded([r[3] for r in ran], chunk)}


def _padded(rewards: Sequence[float], chunk: int) -> np.ndarray:
    out = np.zeros(chunk, np.float64)
    out[: len(rewards)] = rewards
    return out


def _run_chunk(env: SimEnv, env_actions: np.ndarray, episode: dict[str, Any], history: int,
               frames: np.ndarray | None) -> tuple[list[np.ndarray], list[float], bool, bool]:
    """Execute one chunk open-loop (until the episode ends inside it); the episode's latest
    observation, proprio history and success follow. With ``frames`` (chunk, S, S, 3), the frame
    after each step is rendered into it and the latest is the observation's. Returns (realized
    proprio, rewards, terminated, done): a time limit ends the episode without terminating it."""
    realized, rewards, terminated, done = [], [], False, False
    for t, action in enumerate(env_actions):
        obs, reward, terminated, truncated, info = env.step(action)
        if frames is not None:
            frames[t] = frame_of(env, frames.shape[1])
            obs = {**obs, "image": frames[t]}
        realized.append(obs["proprio"])
        rewards.append(reward)
        episode["success"] |= bool(info.get("success", False))
        if terminated or truncated:
            done = True
            break
    episode["obs"] = obs
    episode["history"] = (episode["history"] + realized)[-history:]
    return realized, rewards, bool(terminated), done


def _row(spec: RolloutSpec, env: SimEnv, episode: dict[str, Any], proprio: np.ndarray, actions: np.ndarray,
         realized: np.ndarray, steps: int, rewards: list[float]) -> dict[str, Any]:
    """One chunk's core columns (``flywheel.rows.CORE_COLUMNS``, in their order)."""
    emb = env.embodiment
    return {
        EPISODE: episode["id"], CYCLE: spec.cycle, WORKER: spec.worker, WEIGHT_VERSION: spec.weight_version,
        SIM: env.name, CHUNK: episode["chunk"], PROPRIO_DIM: emb.proprio_dim, ACTION_DIM: emb.action_dim,
        TASK: env.task_text, PROPRIO: proprio, ACTIONS: actions, REALIZED: realized, STEPS: steps,
        REWARD: float(np.sum(rewards)), SUCCESS: episode["success"], PLANNED: spec.planning,
    }


def _env_actions(chosen: np.ndarray, embodiments: Sequence[Embodiment]) -> list[np.ndarray]:
    """Per env, its chunk of ``chosen`` (B, T, action_pad; model units) in env units: one
    conversion per embodiment in the batch, not one per env."""
    slots: dict[Embodiment, list[int]] = defaultdict(list)
    for slot, emb in enumerate(embodiments):
        slots[emb].append(slot)
    out: list[np.ndarray] = [None] * len(embodiments)  # type: ignore[list-item]
    for emb, group in slots.items():
        for slot, actions in zip(group, emb.to_env_action(emb.unpad_action(chosen[group]))):
            out[slot] = actions
    return out


@dataclass(frozen=True)
class Ran:
    """What one candidate chunk did in the sim: per step reward and proprio, and whether the
    episode terminated (a time limit is not a termination) or ended at all (either); ``end``,
    the state it left the sim in, where asked for (``run_candidates(keep_end=True)``)."""

    rewards: list[float]
    realized: list[np.ndarray]
    terminated: bool
    end: SimState | None = None
    ended: bool = False


def run_candidates(env: SimEnv, candidates: np.ndarray, keep_end: bool = False) -> list[Ran]:
    """Run each candidate chunk (n, T, action_pad; model units) in ``env`` from its current
    state, until the episode ends inside it (``keep_end``: each run keeps the state it ended
    in); the env is left in that state."""
    emb, start, runs = env.embodiment, env.get_state(), []
    for chunk in candidates:
        env.set_state(start)
        rewards, realized, terminated, truncated = [], [], False, False
        for action in emb.to_env_action(emb.unpad_action(chunk)):
            obs, reward, terminated, truncated, _ = env.step(action)
            rewards.append(reward)
            realized.append(obs["proprio"])
            if terminated or truncated:
                break
        runs.append(Ran(rewards, realized, bool(terminated), env.get_state() if keep_end else None,
                        bool(terminated or truncated)))
    env.set_state(start)
    return runs


def ranked(runs: Sequence[Ran], discount: float = 1.0, end_values: np.ndarray | None = None) -> int:
    """The best candidate: the most chunk reward, or with ``end_values`` (V of each candidate's
    end state) the highest TD target R_chunk + discount^steps * (1 - terminated) * V(s'),
    the value of the candidate beyond its own chunk."""
    if end_values is None:
        totals = []
        for run in runs:
            total = 0.0
            for reward in run.rewards:
                total += reward
            totals.append(total)
        return int(np.argmax(totals))
    chunk = max(len(run.rewards) for run in runs)
    rewards = torch.as_tensor(np.stack([_padded(run.rewards, chunk) for run in runs]))
    steps = torch.as_tensor([len(run.rewards) for run in runs])
    terminated = torch.as_tensor([run.terminated for run in runs])
    return int(torch.argmax(td_target(rewards, steps, terminated, torch.as_tensor(end_values), discount)))


def best_in_sim(env: SimEnv, candidates: np.ndarray) -> int:
    """The candidate chunk (n, T, action_pad; model units) whose steps earn the most reward in
    ``env`` from its current state; the env is left in that state."""
    return ranked(run_candidates(env, candidates))


def _finish(episode: dict[str, Any], out: dict[str, list]) -> None:
    """Returns-to-go, then the episode's rows join the output."""
    to_go = 0.0
    for row in reversed(episode["rows"]):
        to_go += row[REWARD]
        row[RETURN] = to_go
    for row in episode["rows"]:
        row[EPISODE_SUCCESS] = episode["success"]
        row[EPISODE_RETURN] = to_go
    for row in episode["rows"]:
        for key, value in row.items():
            out[key].append(value)


def episode_stats(rows: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per-episode success rate, mean return and the returns' spread over the rows of ``collect``."""
    if not len(rows.get(EPISODE, ())):
        raise ValueError("no rollouts to measure")
    episodes, first = np.unique(rows[EPISODE], return_index=True)
    last = {e: i for i, e in enumerate(rows[EPISODE])}
    success = np.array([bool(rows[SUCCESS][last[e]]) for e in episodes])
    returns = rows[RETURN][first]
    return {"success_rate": float(success.mean()), "mean_return": float(np.mean(returns)),
            "return_std": float(np.std(returns)),
            "episodes": int(len(episodes))}


def standard_errors(stats: Mapping[str, float]) -> dict[str, float]:
    """The standard errors of ``episode_stats``' success rate and mean return, from its numbers.

    Success is a binomial draw per episode: sqrt(p (1 - p) / n). The mean return's is the
    episodes' sample standard deviation (ddof=1) over sqrt(n); ``return_std`` is ddof=0, so
    that is ``return_std / sqrt(n - 1)``, unknown (NaN) for one episode.
    """
    n, p = int(stats["episodes"]), float(stats["success_rate"])
    return {"success_stderr": float(np.sqrt(p * (1 - p) / n)),
            "return_stderr": float(stats["return_std"] / np.sqrt(n - 1)) if n > 1 else float("nan")}


def episode_lengths_and_returns(rows: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per episode of the rows of ``collect`` (in id order): its length in env steps and its return."""
    episodes, first, inverse = np.unique(rows[EPISODE], return_index=True, return_inverse=True)
    lengths = np.bincount(inverse, weights=rows[STEPS], minlength=len(episodes)).astype(np.int64)
    return lengths, np.asarray(rows[RETURN][first], dtype=np.float64)
