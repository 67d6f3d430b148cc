"""What the learners minimise on graded rollouts.

For a batch of chunks (rows of ``flywheel.rollout.collect``):

    L = L_video + L_action + return_coef * L_return

- ``L_video``: flow matching of the *realized* future of every chunk, successes and
  failures alike ("this plan led to this outcome"), given the observation: the agent's
  imagination learns what really happens. In a camera run the observation holds the chunk's
  first frame, and where the model imagines frames (``future_frames``) the future holds the
  frames the engine rendered after each step, so the video expert learns realized frames too
  (proprio and frames are two parts of the future, averaged as ``L_video`` below says).
- ``L_action``: advantage-weighted flow matching of the executed action chunk, given the
  observation and a future (``ObjectiveConfig.act_on``): the realized one (the action
  expert learns inverse dynamics: which actions lead there), or the one the rollout
  *imagined* for the chunk, the input the action expert has at inference. With
  ``choose=sim`` rollouts the second distills the sim's choice: given the agent's own
  (imperfect) plan, act as the candidate the engine found best did; with realized futures
  the choice is invisible to the action expert, since inverse dynamics holds for any
  chunk. Each row has an advantage signal ``a_i`` (``ObjectiveConfig.advantage``):

  - ``grade``: the grader's training weight (success, progress, imagination, physics);
  - ``task``: success (0/1 so far in the episode) plus the grader's progress (``grade_progress``),
    the task answers only;
  - ``outcome``: whether the chunk's episode ended in success (every chunk of a successful
    episode counts), or, where every episode of the batch ended alike, the episode's return;
  - ``critic``: the critic's per-state advantage of the executed chunk, mean_k Q_k(s, a) - V(s)
    (``flywheel.td``; needs ``critic``).

  The sample weights standardize it over the batch:

      w_i = min(exp((a_i - mean(a)) / (std(a) * temperature)), max_weight),  then scaled to mean 1

  (all 1 when the signal is constant), so chunks above the batch's average pull the policy
  towards themselves and those below are damped, never reversed. Standardizing makes the
  temperature mean the same thing whatever the spread of the signal: a chunk one standard
  deviation above the mean weighs exp(1 / temperature) times an average one.
- ``L_return``: mean squared error of the return head (reading the same future as the
  actions) against the realized return-to-go, standardized over the batch. Rewards of
  different tasks differ in scale by orders of magnitude (a raw reacher return-to-go is
  around -20); unscaled, this term dwarfed the flow losses and, through the clipped global
  gradient norm, starved them. Planning only ranks candidates by the head, which a
  positive affine map of its target does not change.

With ``candidate_samples`` = m > 0 the total also gains ``L_candidates``: the action expert
learns m of the n candidates the training sim ran from each row's state (``choose=sim`` rows
keep them all), each acted on its own imagined future, as it acts at inference. Row i's
candidate c is drawn with probability

    p_ic = softmax_c(z_ic / temperature),   z_ic = (G_ic - mean_c G_ic) / std_c G_ic

where G_ic is the reward candidate c earned over its chunk, or where the sim looked past the chunk
(``lookahead_chunks``) over its chunk and the policy's chunks after it: what the sim ranked by;
advantage-weighted regression with the siblings' mean as the per-state baseline, estimated by
sampling in proportion to the weights rather than weighting all n (m forward passes, not n).
As the temperature falls it imitates the sim's pick alone; the candidates' draws and flow noise
are seeded per row like the rest, and its denominators are the global batch's, so the learners'
shares sum to it as above:

    L_candidates = sum_{i,j,t,d} m_ij e_ij / sum_{i,j,t,d} m_ij        (j: row i's m draws)

and the return head changes target: reading each drawn candidate's imagined future (as it reads
a plan's when the agent scores its candidates at inference) it learns z_ic, that is it learns to
rank a state's candidates as the sim ranked them, which is all planning asks of it. (Its default
target, the executed chunk's return-to-go, varies far more between states than between one
state's candidates, and the head trained on it ranked candidates at chance.)

    L_return = sum_{i,j} (R_pred_ij - z_ij)^2 / (N m)                  (replaces the default's)

Measured at m = 4 on the reacher (docs/rl-core.md "The action expert learns the sim's
candidates"): no gain in capability at equal env steps, and the ranking head does not make
planning beat acting on one candidate; so it is off by default.

With ``critic`` on, the total gains ``critic_coef * (L_Q + L_V)``: chunked implicit
Q-learning over every candidate the sim ran (``flywheel.td``, ``docs/rl-core.md``). With
``ranker`` on, it gains ``L_rank``: the chunk ranker learns every candidate's reward against
its siblings', z_ic above (``policies.ranker``), on detached features.

A sample of the replay reads only the columns some term reads (``unread_columns``): the
candidates the sim ran are three quarters of a ``choose=sim`` row's bytes, and only the critic,
the ranker and ``candidate_samples`` read them.

Steps a chunk did not run (the episode ended inside it) are masked out of every term,
and so are padded proprio/action dimensions.

Exact scaling, over a batch of N rows with real-entry masks m (chunk steps that ran times
the embodiment's real dimensions) and flow errors e = |v_pred - (x1 - x0)|^2:

    L_video  = sum_{i,t,d} m e_video  / sum_{i,t,d} m                  (per part, then parts averaged)
    L_action = sum_{i,t,d} w_i m e_act / sum_{i,t,d} w_i m
    L_return = sum_i (R_pred_i - z(R)_i)^2 / N,   z(R) = (R - mean(R)) / std(R) over the global batch

Data parallelism (``flywheel.learners``): ``batch_loss(..., noise_seed=key, rank=r,
world_size=W)`` is given the *global* batch on every rank and computes only rank r's
contiguous slice of rows, with every denominator above (and the advantage weights' batch
mean) taken over the global batch. Its losses are then rank r's *share*: the W shares sum
to the global batch's losses exactly (in exact arithmetic). DDP averages gradients over
ranks, so each learner back-propagates ``W * share["total"]``, and the averaged gradient
is the gradient of the global ``L``: the one a single learner computes on the whole batch.
With ``noise_seed`` set, row i of the batch draws its flow noise x0 and time t from a
generator seeded by (noise_seed..., i, term), never from a generator shared by the batch,
so a row's noise does not depend on which rank computes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import torch

from configs.learning import ObjectiveConfig
from flywheel.rows import (ACTIONS, CANDIDATE_ACTIONS, CANDIDATE_IMAGINED, CANDIDATE_LOOKAHEAD_REWARD, CANDIDATE_NAMES,
                           CANDIDATE_REWARDS, CANDIDATE_STEPS, EPISODE_RETURN, EPISODE_SUCCESS, FRAME, GRADE_PROGRESS,
                           IMAGINED, IMAGINED_FRAMES, PROPRIO, PROPRIO_DIM, REALIZED, REALIZED_FRAMES, RETURN, SIM,
                           STEPS, SUCCESS, TASK, WEIGHT)
from flywheel.td import critic_advantage, critic_share
from policies import flow
from policies.agent import Agent, Observed
from policies.data import Data
from policies.model import Item
from policies.ranker import RANK, ranking_loss
from policies.tokenizers import to_unit_frames
from sims import Embodiment, make
from world_model.learned_env import PREFIX as LEARNED_PREFIX

CANDIDATES = "candidates"  # the loss term of the candidates the action expert also learns (``candidate_samples``)


def unread_columns(config: ObjectiveConfig) -> tuple[str, ...]:
    """The replay columns no term of ``config``'s loss reads: every candidate column unless the
    critic, the ranker or ``candidate_samples`` is on, the candidates' imagined futures unless
    ``candidate_samples`` is, and their look-ahead rewards unless it or the ranker is."""
    if config.candidate_samples:
        return ()
    if config.ranker:
        return (CANDIDATE_IMAGINED,)
    if config.critic:
        return CANDIDATE_IMAGINED, CANDIDATE_LOOKAHEAD_REWARD
    return CANDIDATE_NAMES


def advantage_weights(signal: np.ndarray, config: ObjectiveConfig) -> np.ndarray:
    """exp of the standardized signal over the temperature, capped, scaled to mean 1."""
    w = np.exp(np.minimum(standardized(signal) / config.temperature, np.log(config.max_weight)))
    return w / w.mean()


def advantage_signal(rows: Mapping[str, np.ndarray], config: ObjectiveConfig) -> np.ndarray:
    """Per row, what the action regression favours (module docstring)."""
    n = len(rows[PROPRIO_DIM])
    if config.advantage == "critic":
        raise ValueError("learner.advantage=critic is the critic's (flywheel.td.critic_advantage), not the rows'")
    if config.advantage == "grade":
        return np.asarray(rows[WEIGHT], dtype=np.float64) if WEIGHT in rows else np.ones(n)
    if config.advantage == "task":
        if GRADE_PROGRESS not in rows:
            raise ValueError("learner.advantage=task needs graded rows (a 'grade_progress' column); these are not")
        success = np.nan_to_num(np.asarray(rows[SUCCESS], dtype=np.float64))
        return success + np.asarray(rows[GRADE_PROGRESS], dtype=np.float64)
    final = np.asarray(rows[EPISODE_SUCCESS], dtype=np.float64)
    return final if final.std() > 0 else np.asarray(rows[EPISODE_RETURN], dtype=np.float64)


def standardized(values: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation; all zeros when the values are (nearly) constant."""
    values = np.asarray(values, dtype=np.float64)
    spread = values.std()
    return (values - values.mean()) / spread if spread > 1e-8 else np.zeros_like(values)


@lru_cache(maxsize=64)
def embodiment_of(sim: str) -> Embodiment:
    """The embodiment of a registered sim (made once per process). A learned sim cannot be
    made without its checkpoint; its body is its engine's."""
    env = make(sim.removeprefix(LEARNED_PREFIX))
    emb = env.embodiment
    env.close()
    return emb


def batch_loss(agent: Agent, rows: Mapping[str, np.ndarray], config: ObjectiveConfig,
               generator: torch.Generator | None = None, *, noise_seed: int | Sequence[int] | None = None,
               rank: int = 0, world_size: int = 1) -> dict[str, torch.Tensor]:
    """The flywheel loss of one batch of chunk rows (see the module docstring).

    ``generator`` draws the flow noise of the whole batch at once; ``noise_seed`` (an int
    or a tuple of non-negative ints, e.g. (seed, version, step)) draws each row's noise
    from its own seed instead, which data parallelism needs: with ``world_size`` > 1 the
    result is rank ``rank``'s share of the batch's loss (module docstring).
    """
    n = len(rows[PROPRIO_DIM])
    _check_batch(agent, config, n, noise_seed, rank, world_size)
    observed, future, actions, plan = _chunk_data(agent, rows, config)
    full_observed = observed
    dev = agent.device
    signal = (critic_advantage(agent, observed, actions.values["action"]) if config.advantage == "critic"
              else advantage_signal(rows, config))
    weights = torch.as_tensor(advantage_weights(signal, config), dtype=torch.float32, device=dev)
    returns = torch.as_tensor(standardized(rows[RETURN]), dtype=torch.float32, device=dev)
    noise = denominators = None
    start, stop = 0, n
    if noise_seed is not None:
        denominators = {"future": flow.loss_denominators(future), "action": flow.loss_denominators(actions, weights),
                        "return": float(n)}
        start, stop = shard_bounds(n, rank, world_size)
        if (start, stop) != (0, n):
            take = slice(start, stop)
            observed = _take(observed, take)
            future, actions = future.map(lambda t: t[take]), actions.map(lambda t: t[take])
            plan = None if plan is None else plan.map(lambda t: t[take])
            weights, returns = weights[take], returns[take]
        key = _noise_key(noise_seed)
        noise = {term: flow.row_noise(data, [_row_seed(key, i, stream) for i in range(start, stop)])
                 for stream, (term, data) in enumerate((("future", future), ("action", actions)))}
    # Learning the candidates, the return head learns to rank them instead (module docstring).
    losses = agent.loss(observed, future, actions, None if config.candidate_samples else returns,
                        generator=generator, action_weights=weights, noise=noise, denominators=denominators, plan=plan)
    if config.candidate_samples:
        losses.update(_candidate_share(agent, rows, config, full_observed, generator, noise_seed, start, stop))
    total = losses["future"] + losses["action"] + losses.get(CANDIDATES, 0.0)
    if "return" in losses:
        total = total + config.return_coef * losses["return"]
    # One backbone pass for both heads that read the state (no gradient: neither moves the backbone).
    features = agent.critic_features(observed) if config.critic or config.ranker else None
    if config.critic:
        mine = {k: v[start:stop] for k, v in rows.items()}
        losses.update(critic_share(agent, mine, observed, features, config, n))
        total = total + config.critic_coef * (losses["q"] + losses["value"])
    if config.ranker:
        losses[RANK] = _rank_share(agent, rows, observed, features, start, stop)
        total = total + losses[RANK]
    losses["total"] = total
    return losses


def sibling_scores(rows: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N, n): each candidate's reward as the sim ranked it, standardized against its siblings'
    (zeros where they tie): its chunk's, or where the sim looked past the chunk, its continued
    run's (``CANDIDATE_LOOKAHEAD_REWARD``). A ranker that learns the look-ahead's order plans
    without the sim as the look-ahead teacher picks; one chunk's reward is blind to what a
    candidate sets up (a swing-up's pumping, a reach that overshoots)."""
    if CANDIDATE_LOOKAHEAD_REWARD in rows:
        returns = np.asarray(rows[CANDIDATE_LOOKAHEAD_REWARD], dtype=np.float64)
    else:
        returns = np.asarray(rows[CANDIDATE_REWARDS], dtype=np.float64).sum(axis=-1)  # zeros after a candidate ended
    centred = returns - returns.mean(axis=1, keepdims=True)
    spread = returns.std(axis=1, keepdims=True)
    return np.where(spread > 1e-8, centred / np.maximum(spread, 1e-8), 0.0)


def _rank_share(agent: Agent, rows: Mapping[str, np.ndarray], observed: Observed, features: torch.Tensor,
                start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop)'s share of the chunk ranker's ``L_rank`` over the global batch
    ``rows`` (``policies.ranker``); ``observed`` is those rows' observation, ``features`` their
    ``Agent.critic_features``."""
    if CANDIDATE_ACTIONS not in rows:
        raise ValueError("learner.ranker learns to rank the candidates the training sim ran (choose=sim rollouts), "
                         "and these rows keep none")
    if not agent.model.has_ranker:
        raise ValueError("learner.ranker: this model has no chunk ranker (Model.grow_ranker adds one)")
    mine = slice(start, stop)
    targets = torch.as_tensor(sibling_scores(rows)[mine], device=agent.device)
    chunks = torch.as_tensor(rows[CANDIDATE_ACTIONS][mine], device=agent.device) * observed.action_mask[:, None]
    scores = agent.model.heads[RANK](features, chunks)
    return ranking_loss(scores, targets, len(rows[PROPRIO_DIM]))


def candidate_probabilities(rows: Mapping[str, np.ndarray], config: ObjectiveConfig) -> np.ndarray:
    """(N, n): per row, the probability of drawing each candidate the sim ran (module docstring)."""
    return _softmax(sibling_scores(rows) / config.temperature)


def _softmax(z: np.ndarray) -> np.ndarray:
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def _candidate_share(agent: Agent, rows: Mapping[str, np.ndarray], config: ObjectiveConfig, observed: Observed,
                     generator: torch.Generator | None, noise_seed, start: int, stop: int) -> dict[str, torch.Tensor]:
    """Rows [start, stop)'s share of ``L_candidates`` and of the return head's ranking error
    ``L_return`` over the global batch ``rows`` (module docstring)."""
    if CANDIDATE_IMAGINED not in rows:
        raise ValueError("learner.candidate_samples needs rows that keep every candidate the sim ran and the future "
                         "each was imagined with (choose=sim rollouts); these have none")
    if FRAME in rows and agent.cfg.future_frames:
        raise ValueError("learner.candidate_samples: this model imagines frames, and rows keep only the candidates' "
                         "imagined proprio; learn the executed chunk alone (candidate_samples=0)")
    n, m = len(rows[PROPRIO_DIM]), config.candidate_samples
    z = sibling_scores(rows)  # the draws' logits and the return head's targets
    p = torch.as_tensor(_softmax(z / config.temperature))
    if noise_seed is None:
        drawn = torch.multinomial(p, m, replacement=True, generator=generator)
    else:
        key = _noise_key(noise_seed)
        drawn = torch.stack([torch.multinomial(p[i], m, replacement=True,
                                               generator=torch.Generator().manual_seed(_row_seed(key, i, 2)))
                             for i in range(n)])
    row = np.repeat(np.arange(n), m)
    cand = drawn.reshape(-1).numpy()
    dev = agent.device
    ran = torch.as_tensor(np.arange(agent.cfg.chunk)[None, :] < rows[CANDIDATE_STEPS][row, cand][:, None],
                          device=dev)[..., None]
    index = torch.as_tensor(row, device=dev)
    actions = Data({"action": torch.as_tensor(rows[CANDIDATE_ACTIONS][row, cand], device=dev)},
                   {"action": observed.action_mask[index] & ran})
    denominators = {"action": flow.loss_denominators(actions), "return": float(n * m)}
    mine = slice(start * m, stop * m)
    plan = Data({"proprio": torch.as_tensor(rows[CANDIDATE_IMAGINED][row[mine], cand[mine]], device=dev)},
                {"proprio": observed.proprio_mask[index[mine]]})
    scores = torch.as_tensor(z[row[mine], cand[mine]], dtype=torch.float32, device=dev)
    actions = actions.map(lambda t: t[mine])
    noise = None
    if noise_seed is not None:
        noise = flow.row_noise(actions, [seed_of(*key, r, 3, j) for r in range(start, stop) for j in range(m)])
    losses = agent.action_loss(_take(observed, index[mine]), plan, actions, scores, generator, noise, denominators)
    return {CANDIDATES: losses["action"], **({"return": losses["return"]} if "return" in losses else {})}


def _chunk_data(agent: Agent, rows: Mapping[str, np.ndarray], config: ObjectiveConfig
                ) -> tuple[Observed, Data, Data, Data | None]:
    """The rows as the model reads them: the observation (with its frame in a camera run), the
    realized future (with its frames where the model imagines frames), the executed actions,
    and with ``act_on=imagined`` the future the rollout imagined (else None); steps a chunk
    did not run are masked out of the future and the actions."""
    embs = [embodiment_of(str(s)) for s in rows[SIM]]
    frames = FRAME in rows
    observed = agent.observe([{"proprio": p[..., :d], "task": str(t), **({"image": rows[FRAME][i]} if frames else {})}
                              for i, (p, d, t) in enumerate(zip(rows[PROPRIO], rows[PROPRIO_DIM], rows[TASK]))], embs)
    dev, cfg = agent.device, agent.cfg
    ran = torch.as_tensor(np.arange(cfg.chunk)[None, :] < rows[STEPS][:, None], device=dev)[..., None]  # (B, T, 1)
    future = Data({"proprio": torch.as_tensor(rows[REALIZED], device=dev)}, {"proprio": observed.proprio_mask & ran})
    imagines_frames = frames and cfg.future_frames
    if imagines_frames:  # the video expert learns the frames that came, step by step
        future = Data({**future.values, "frames": _unit(rows[REALIZED_FRAMES], cfg.image_size, dev)},
                      {**future.masks, "frames": ran[..., None, None]})
    actions = Data({"action": torch.as_tensor(rows[ACTIONS], device=dev)}, {"action": observed.action_mask & ran})
    plan = None
    if config.act_on == "imagined":
        if IMAGINED not in rows:
            raise ValueError("act_on=imagined needs rows that planned (an 'imagined' column); these did not plan")
        plan = Data({"proprio": torch.as_tensor(rows[IMAGINED], device=dev)}, {"proprio": observed.proprio_mask})
        if imagines_frames:  # the plan as the action expert reads it at inference: frames and all
            plan = Data({**plan.values, "frames": _unit(rows[IMAGINED_FRAMES], cfg.image_size, dev)}, plan.masks)
    return observed, future, actions, plan


def _unit(frames: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """Stored uint8 frames (..., S, S, 3) in the model's [-1, 1]."""
    return to_unit_frames(torch.as_tensor(frames, device=device), size)


def _check_batch(agent: Agent, config: ObjectiveConfig, n: int, noise_seed, rank: int, world_size: int) -> None:
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    if world_size > 1 and noise_seed is None:
        raise ValueError("a batch split across ranks needs noise_seed (per-row noise), not a shared generator")
    if n < world_size:
        raise ValueError(f"a batch of {n} rows cannot be split across {world_size} ranks")
    if config.critic and not agent.model.has_critic:
        raise ValueError("learner.critic=true but the model has no critic heads (Model.grow_critic adds them)")


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous rows [start, stop) of a batch of ``n`` (sizes differ by at most 1)."""
    return n * rank // world_size, n * (rank + 1) // world_size


def _noise_key(noise_seed: int | Sequence[int]) -> tuple[int, ...]:
    key = (int(noise_seed),) if isinstance(noise_seed, (int, np.integer)) else tuple(int(k) for k in noise_seed)
    if not key or min(key) < 0:
        raise ValueError(f"noise_seed must be non-negative ints, got {noise_seed!r}")
    return key


def _row_seed(key: tuple[int, ...], row: int, stream: int) -> int:
    return seed_of(*key, row, stream)


def seed_of(*parts: int) -> int:
    """A torch seed (a non-negative int63) mixed from ``parts`` by numpy's SeedSequence."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _take(observed: Observed, rows: slice | torch.Tensor) -> Observed:
    """Some rows of a batch of observations, by a slice or an index tensor that may repeat rows
    (text keeps the batch's padded length)."""
    bodies = (observed.embodiments[rows] if isinstance(rows, slice)
              else tuple(observed.embodiments[i] for i in rows.tolist()))
    return Observed([Item(it.modality, it.data.map(lambda t: t[rows]), it.noisy,
                          None if it.t is None else it.t[rows]) for it in observed.items],
                    observed.proprio_mask[rows], observed.action_mask[rows], observed.frames, bodies)
