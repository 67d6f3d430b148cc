"""The rollout loop and the learners' objective, on a tiny agent in a real simulator."""

import contextlib
from dataclasses import replace

import numpy as np
import pytest
import torch

import sims
import world_model as wm
from configs.learning import ROW_ADVANTAGES, ObjectiveConfig
from flywheel.learners import make_optimizer
from flywheel.objective import advantage_signal, advantage_weights, batch_loss
from flywheel.rollout import RolloutSpec, best_in_sim, collect, episode_stats, standard_errors, task_plan
from flywheel.rows import EPISODE_RETURN, EPISODE_SUCCESS, GRADE_PROGRESS, SUCCESS, TASK, WEIGHT, ChunkRows
from policies.agent import Agent
from policies.config import SIZES

SIM = "mujoco/reacher-twin"
# The grader's weights on realized futures: what most tests below take apart.
GRADE_REALIZED = ObjectiveConfig(advantage="grade", act_on="realized")


@pytest.fixture(scope="module")
def rows(agent):
    envs = [sims.make(SIM, max_episode_steps=20) for _ in range(2)]
    return collect(agent, envs, RolloutSpec(episodes=3, cycle=4, worker=1, weight_version=9, seed=3))


@pytest.fixture(scope="module")
def graded(agent):
    """Planned rollouts, graded by the chunk grader as the rollout actors grade them."""
    envs = [sims.make(SIM, max_episode_steps=16) for _ in range(2)]
    return collect(agent, envs, RolloutSpec(episodes=3, seed=5, n_candidates=2), wm.ChunkGrader(probes=2, horizon=10))


def test_collect_runs_every_episode_and_records_each_chunk(rows, agent):
    episodes = np.unique(rows["episode"])
    assert len(episodes) == 3
    assert rows["steps"].sum() == 3 * 20  # every step of every episode is in some chunk
    assert set(rows["weight_version"]) == {9} and set(rows["cycle"]) == {4}
    T, P = agent.cfg.chunk, agent.cfg.proprio_pad
    assert rows["imagined"].shape[1:] == (T, P) and rows["realized"].shape[1:] == (T, P)
    # Padding beyond the embodiment and beyond the steps that ran stays zero.
    d = sims.make(SIM).embodiment.proprio_dim
    assert not rows["realized"][:, :, d:].any()
    short = rows["steps"] < T
    assert short.any() and not rows["realized"][short][:, -1].any()


def test_each_chunk_starts_from_the_models_proprio_history(rows, agent):
    H, d = agent.cfg.history, sims.make(SIM).embodiment.proprio_dim
    assert H > 1 and rows["proprio"].shape[1:] == (H, agent.cfg.proprio_pad)
    for e in np.unique(rows["episode"]):
        sel = np.flatnonzero(rows["episode"] == e)
        first = rows["proprio"][sel[0]]
        assert all(np.array_equal(first[0], step) for step in first)  # the reset state, repeated
        for prev, cur in zip(sel, sel[1:]):  # then the last steps the previous chunk realized
            n = int(rows["steps"][prev])
            np.testing.assert_array_equal(rows["proprio"][cur][-min(H, n):, :d],
                                          rows["realized"][prev][max(0, n - H):n, :d])


def test_returns_to_go_sum_the_rest_of_the_episode(rows):
    for e in np.unique(rows["episode"]):
        sel = rows["episode"] == e
        np.testing.assert_allclose(rows["return"][sel], np.cumsum(rows["reward"][sel][::-1])[::-1])
        # Every chunk of an episode carries how the episode ended.
        assert np.all(rows["episode_return"][sel] == rows["return"][sel][0])
        assert np.all(rows["episode_success"][sel] == rows["success"][sel][-1])
    firsts = [rows["return"][rows["episode"] == e][0] for e in np.unique(rows["episode"])]
    measured = episode_stats(rows)
    assert measured["episodes"] == 3 and np.isclose(measured["mean_return"], np.mean(firsts))
    assert np.isclose(measured["return_std"], np.std(firsts)) and measured["return_std"] > 0


@pytest.mark.parametrize("choose", ["model", "sim"])
def test_an_episode_that_turns_nan_is_quarantined_and_the_env_goes_on(nan_sims, agent, choose):
    envs = [sims.make("test/nan-3-odd", max_episode_steps=16) for _ in range(2)]
    spec = RolloutSpec(episodes=4, cycle=2, worker=1, n_candidates=2, choose=choose)
    with pytest.raises(sims.NonFiniteError, match="test/nan-3-odd: proprio contains NaN at step 3"):
        collect(agent, envs, spec)  # no quarantine asked for: the error goes up
    quarantine = []
    rows = collect(agent, envs, spec, wm.ChunkGrader(probes=2, horizon=10), quarantine=quarantine)
    # Reset seeds 0..3: the odd ones turn NaN from step 3; their rows are gone, the even ones whole.
    assert [(q.episode % 100_000, q.sim, q.field, q.step) for q in quarantine] == \
        [(1, "test/nan-3-odd", "proprio", 3), (3, "test/nan-3-odd", "proprio", 3)]
    assert sorted(np.unique(rows["episode"]) % 100_000) == [0, 2] and rows["steps"].sum() == 2 * 16
    assert np.isfinite(rows["realized"]).all()
    everything = []
    envs = [sims.make("test/nan-0-all", max_episode_steps=16) for _ in range(2)]  # NaN at reset
    assert collect(agent, envs, spec, quarantine=everything).n == 0 and len(everything) == 4


def test_standard_errors_of_the_collected_episodes(rows):
    firsts = [rows["return"][rows["episode"] == e][0] for e in np.unique(rows["episode"])]
    stats = episode_stats(rows)
    errors = standard_errors(stats)
    p = stats["success_rate"]
    assert errors["success_stderr"] == pytest.approx(np.sqrt(p * (1 - p) / 3))
    assert errors["return_stderr"] == pytest.approx(np.std(firsts, ddof=1) / np.sqrt(3)) and errors["return_stderr"] > 0


def test_standard_errors_on_known_outcomes():
    # 8 successes in 32 episodes: the README's "0.250 ± 0.077".
    returns = np.array([1.0, 2.0, 3.0, 4.0])
    errors = standard_errors({"episodes": 32, "success_rate": 0.25, "return_std": 0.0})
    assert f"{errors['success_stderr']:.3f}" == "0.077" and errors["return_stderr"] == 0.0
    errors = standard_errors({"episodes": 4, "success_rate": 1.0, "return_std": float(np.std(returns))})
    assert errors["success_stderr"] == 0.0  # every episode succeeded: the binomial has no spread
    assert errors["return_stderr"] == pytest.approx(np.sqrt(5 / 3) / 2)  # sample std 1.291 over sqrt(4)
    assert np.isnan(standard_errors({"episodes": 1, "success_rate": 0.0, "return_std": 0.0})["return_stderr"])


def test_collect_is_reproducible_from_its_seed(agent):
    envs = [sims.make(SIM, max_episode_steps=16)]
    spec = RolloutSpec(episodes=1, seed=11, n_candidates=2)
    a, b = collect(agent, envs, spec), collect(agent, envs, spec)
    assert np.array_equal(a["actions"], b["actions"]) and np.array_equal(a["realized"], b["realized"])


@pytest.mark.parametrize("planning", [False, True])
def test_each_env_of_a_mixed_batch_ran_the_actions_its_rows_record(agent, planning):
    names = [SIM, "pybullet/cartpole-balance", SIM]
    spec = RolloutSpec(episodes=5, seed=2, planning=planning, n_candidates=2)
    rows = collect(agent, [sims.make(name, max_episode_steps=12) for name in names], spec)
    assert set(rows["sim"]) == set(names) and len(np.unique(rows["episode"])) == 5
    for e in np.unique(rows["episode"]):
        sel = np.flatnonzero(rows["episode"] == e)
        env = sims.make(str(rows["sim"][sel[0]]), max_episode_steps=12)
        emb = env.embodiment
        assert set(rows["action_dim"][sel]) == {emb.action_dim}
        env.reset(seed=spec.seed * 100_003 + int(e) % 100_000)  # the episode's reset, by its index
        for r in sel:
            n = int(rows["steps"][r])
            for t, action in enumerate(emb.to_env_action(emb.unpad_action(rows["actions"][r]))[:n]):
                obs, *_ = env.step(action)
                np.testing.assert_array_equal(rows["realized"][r][t, : emb.proprio_dim],
                                              emb.pad_proprio(obs["proprio"])[: emb.proprio_dim])


def test_a_task_plan_splits_the_episodes_by_weight_in_a_seeded_order():
    plan = task_plan([SIM, "mujoco/cartpole-swingup-twin"], [1.0, 0.5], 16, seed=3)
    # 16 * 2/3 = 10.67 and 5.33: the larger remainder takes the 16th episode
    assert len(plan) == 16 and plan.count(SIM) == 11 and plan.count("mujoco/cartpole-swingup-twin") == 5
    assert plan == task_plan([SIM, "mujoco/cartpole-swingup-twin"], [1.0, 0.5], 16, seed=3)
    assert plan != task_plan([SIM, "mujoco/cartpole-swingup-twin"], [1.0, 0.5], 16, seed=4)
    assert task_plan([SIM, "mujoco/cartpole-swingup-twin"], [1.0, 0.0], 4, seed=0) == [SIM] * 4


def test_a_multitask_spec_runs_each_episode_in_its_sim_and_perceives_every_body_in_one_batch(agent, monkeypatch):
    names = [SIM, "mujoco/cartpole-swingup-twin"]
    plan = task_plan(names, [1.0, 1.0], 6, seed=1)
    envs = [sims.make(name, max_episode_steps=12) for name in names for _ in range(2)]
    batches, perceive = [], agent.perceive
    monkeypatch.setattr(agent, "perceive", lambda obs, bodies: batches.append(len(set(bodies))) or perceive(obs, bodies))
    spec = RolloutSpec(episodes=6, seed=2, n_candidates=2, episode_sims=tuple(plan))
    rows = collect(agent, envs, spec)
    episodes, first = np.unique(rows["episode"], return_index=True)
    assert [str(rows["sim"][i]) for i in first] == plan  # episode i ran in plan[i]
    assert max(batches) == 2  # both bodies in one forward
    # A spec that names a sim none of the envs runs is refused, naming it.
    with pytest.raises(ValueError, match="pybullet/cartpole-balance"):
        collect(agent, envs[:1], RolloutSpec(episodes=1, episode_sims=("pybullet/cartpole-balance",)))


def test_best_in_sim_keeps_the_candidate_the_sim_rewards_most_and_restores_the_env():
    env = sims.make(SIM)
    env.reset(seed=5)
    env.step(np.array([0.3, -0.2]))
    before = env.get_state()
    rng = np.random.default_rng(0)
    candidates = rng.uniform(-1, 1, (6, 8, 4)).astype(np.float32)  # padded past the arm's 2 actions
    totals = []
    for chunk in candidates:  # each candidate from the same state, in a fresh copy of the env
        probe = sims.make(SIM)
        probe.reset(seed=5)
        probe.set_state(before)
        totals.append(sum(probe.step(a)[1] for a in env.embodiment.to_env_action(chunk[:, :2])))
    assert np.ptp(totals) > 0
    assert best_in_sim(env, candidates) == int(np.argmax(totals))
    after = env.get_state()
    assert after.step == before.step and all(np.array_equal(after.arrays[k], v) for k, v in before.arrays.items())


def test_best_in_sim_chooses_and_restores_in_a_learned_sim_too(tmp_path):
    reference = "dmc/cartpole-swingup"
    fitted = wm.fit(wm.collect(reference, 200, seed=0), wm.WorldModelNetConfig(ensemble=2, hidden=8), wm.WorldModelTrainConfig(steps=2))
    checkpoint = str(wm.save_checkpoint(fitted, tmp_path / "wm"))

    def make():  # corrected by the engine every 5 steps: a chunk from step 3 crosses a correction
        return sims.make(f"learned/{reference}", checkpoint=checkpoint, correct_every=5)

    env = make()
    env.reset(seed=5)
    for _ in range(3):
        env.step(np.array([0.4]))
    before = env.get_state()
    candidates = np.random.default_rng(1).uniform(-1, 1, (4, 8, 3)).astype(np.float32)
    totals = []
    for chunk in candidates:
        probe = make()
        probe.reset(seed=5)
        probe.set_state(before)
        totals.append(sum(probe.step(a)[1] for a in env.embodiment.to_env_action(chunk[:, :1])))
    assert np.ptp(totals) > 0
    assert best_in_sim(env, candidates) == int(np.argmax(totals))
    assert env.get_state().equals(before)


def test_rollouts_that_choose_in_the_sim_earn_more_per_chunk(agent):
    envs = [sims.make(SIM, max_episode_steps=24) for _ in range(2)]
    by = {choose: collect(agent, envs, RolloutSpec(episodes=4, seed=8, n_candidates=6, choose=choose))
          for choose in ("model", "sim")}
    assert by["sim"]["reward"].mean() > by["model"]["reward"].mean()
    with pytest.raises(ValueError, match="choose"):
        RolloutSpec(episodes=1, choose="oracle")


def test_unrun_steps_and_padding_do_not_touch_the_loss(agent, rows):
    cfg = GRADE_REALIZED
    base = batch_loss(agent, rows, cfg, torch.Generator().manual_seed(0))
    messy = {k: v.copy() for k, v in rows.items()}
    short = messy["steps"] < agent.cfg.chunk
    messy["realized"][short, -1] = 1e6
    messy["actions"][short, -1] = -1e6
    messy["realized"][:, :, 40:] = 7.0
    again = batch_loss(agent, messy, cfg, torch.Generator().manual_seed(0))
    for key in ("future", "action", "total"):
        assert torch.equal(base[key], again[key]), key


def test_grades_reweight_the_action_term_only(agent, rows):
    cfg = GRADE_REALIZED
    graded = dict(rows, weight=np.linspace(0, 1, len(rows["steps"])))
    plain = batch_loss(agent, rows, cfg, torch.Generator().manual_seed(0))
    weighted = batch_loss(agent, graded, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(plain["future"], weighted["future"])
    assert not torch.equal(plain["action"], weighted["action"])


def test_act_on_imagined_trains_the_actions_on_the_plan_the_rollout_imagined(agent, rows):
    realized, imagined = GRADE_REALIZED, ObjectiveConfig(advantage="grade", act_on="imagined")

    def loss(data, cfg):
        return batch_loss(agent, data, cfg, torch.Generator().manual_seed(0))

    a, b = loss(rows, realized), loss(rows, imagined)
    assert torch.equal(a["future"], b["future"])  # the imagination still learns the realized future
    assert not torch.equal(a["action"], b["action"]) and not torch.equal(a["return"], b["return"])
    # The plan the actions read is the rollout's imagined column: only act_on=imagined sees it change.
    other = dict(rows, imagined=rows["imagined"] + 0.5)
    assert torch.equal(loss(other, realized)["action"], a["action"])
    assert not torch.equal(loss(other, imagined)["action"], b["action"])
    with pytest.raises(ValueError, match="act_on"):
        ObjectiveConfig(act_on="dream")
    with pytest.raises(ValueError, match="imagined"):
        loss({k: v for k, v in rows.items() if k != "imagined"}, imagined)


def test_advantage_weights_favour_better_grades_whatever_their_scale():
    cfg = ObjectiveConfig(temperature=0.5, max_weight=5.0)
    grades = np.array([0.1, 0.5, 0.9, 0.5])
    w = advantage_weights(grades, cfg)
    assert np.isclose(w.mean(), 1.0) and w[0] < w[1] < w[2] and w[1] == w[3]
    # Standardized: a grade spread 100x narrower around another mean weighs the same.
    assert np.allclose(advantage_weights(0.3 + grades / 100, cfg), w)
    # The cap holds before the rescaling to mean 1: the best over the worst is at most max_weight / exp(z_min / T).
    z_min = (grades.min() - grades.mean()) / grades.std()
    assert w.max() / w.min() <= 5.0 / np.exp(z_min / 0.5) + 1e-9
    assert np.array_equal(advantage_weights(np.full(4, 0.3), cfg), np.ones(4))
    with pytest.raises(ValueError, match="temperature"):
        ObjectiveConfig(temperature=0.0)
    with pytest.raises(ValueError, match="advantage"):
        ObjectiveConfig(advantage="luck")


def test_the_outcome_advantage_favours_every_chunk_of_a_successful_episode():
    rows = {"proprio_dim": np.zeros(4), EPISODE_SUCCESS: np.array([True, True, False, False]),
            EPISODE_RETURN: np.array([-3.0, -3.0, -9.0, -1.0]), WEIGHT: np.array([0.0, 0.0, 1.0, 1.0])}
    outcome = ObjectiveConfig(advantage="outcome")
    w = advantage_weights(advantage_signal(rows, outcome), outcome)
    assert w[0] == w[1] > 1.0 > w[2] == w[3]
    # Where no episode succeeded (or all did) the episode's return decides instead.
    rows[EPISODE_SUCCESS][:] = False
    signal = advantage_signal(rows, outcome)
    assert signal[3] > signal[0] > signal[2]
    assert np.array_equal(advantage_signal(rows, GRADE_REALIZED), rows[WEIGHT])


def test_every_advantage_weighs_the_actions_of_collected_graded_rows_as_documented(agent, graded):
    assert graded.graded and graded.imagined
    signals = {a: advantage_signal(graded, ObjectiveConfig(advantage=a)) for a in ROW_ADVANTAGES}
    # grade: the grader's weight; task: success so far plus progress; outcome: how the episode ended.
    assert np.array_equal(signals["grade"], graded[WEIGHT])
    assert np.array_equal(signals["task"], graded[SUCCESS] + graded[GRADE_PROGRESS])
    final = graded[EPISODE_SUCCESS].astype(float)
    assert np.array_equal(signals["outcome"], final if final.std() > 0 else graded[EPISODE_RETURN])
    for advantage, signal in signals.items():  # every signal varies, so every one moves the weights
        assert np.ptp(signal) > 0 and not np.allclose(advantage_weights(signal, ObjectiveConfig()), 1.0), advantage

    def loss(rows, advantage):
        return batch_loss(agent, rows, ObjectiveConfig(advantage=advantage), torch.Generator().manual_seed(0))

    base = {a: loss(graded, a) for a in ROW_ADVANTAGES}
    for advantage, losses in base.items():
        assert all(torch.isfinite(v) for v in losses.values()), advantage
        assert torch.equal(losses["future"], base["grade"]["future"])  # the advantage weighs the actions only
    assert not torch.equal(base["task"]["action"], base["outcome"]["action"])
    # Only the task advantage reads the grader's progress.
    scrambled = ChunkRows.of({**graded, GRADE_PROGRESS: np.random.default_rng(0).permutation(graded[GRADE_PROGRESS])})
    assert not np.array_equal(scrambled[GRADE_PROGRESS], graded[GRADE_PROGRESS])
    again = {a: loss(scrambled, a) for a in ROW_ADVANTAGES}
    assert not torch.equal(again["task"]["action"], base["task"]["action"])
    assert torch.equal(again["outcome"]["action"], base["outcome"]["action"])
    assert torch.equal(again["grade"]["action"], base["grade"]["action"])


def test_the_return_head_learns_standardized_returns(agent, rows):
    cfg = GRADE_REALIZED
    scaled = dict(rows, **{"return": 100.0 * np.asarray(rows["return"]) - 40.0})
    base = batch_loss(agent, rows, cfg, torch.Generator().manual_seed(0))
    again = batch_loss(agent, scaled, cfg, torch.Generator().manual_seed(0))
    assert torch.allclose(base["return"], again["return"], rtol=1e-4)


def test_training_on_a_batch_lowers_its_loss(rows):
    torch.manual_seed(1)
    learner = Agent("tiny")
    opt = torch.optim.AdamW(learner.parameters(), lr=3e-3)
    cfg = GRADE_REALIZED

    def loss():
        return batch_loss(learner, rows, cfg, torch.Generator().manual_seed(0))["total"]

    before = loss().item()
    for step in range(40):
        opt.zero_grad()
        total = batch_loss(learner, rows, cfg, torch.Generator().manual_seed(step))["total"]
        total.backward()
        opt.step()
    assert loss().item() < 0.9 * before


# ---------------------------------------------------------------------- frames (RolloutSpec.camera)


@pytest.fixture(scope="module")
def camera_envs(agent):
    from configs.schema import SimConfig
    from flywheel.rollout import env_kwargs

    sim = SimConfig(name=SIM, max_episode_steps=12)
    envs = [sims.make(SIM, **env_kwargs(sim, True, agent.cfg.image_size)) for _ in range(2)]
    yield envs
    for env in envs:
        env.close()


@pytest.fixture(scope="module")
def camera_rows(agent, camera_envs):
    return collect(agent, camera_envs, RolloutSpec(episodes=3, seed=2, n_candidates=2, choose="sim", camera=True))


def test_a_camera_rollout_perceives_the_frame_each_chunk_starts_from(camera_rows, camera_envs, agent, rows):
    from flywheel.rollout import reset_seed
    from flywheel.rows import CHUNK, EPISODE, FRAME, REALIZED_FRAMES, STEPS

    assert camera_rows.frames and not rows.frames  # no camera, no frame columns
    env = camera_envs[0]
    for episode in np.unique(camera_rows[EPISODE]):
        mine = np.flatnonzero(camera_rows[EPISODE] == episode)
        mine = mine[np.argsort(camera_rows[CHUNK][mine])]
        env.reset(seed=reset_seed(2, int(episode)))
        assert np.array_equal(camera_rows[FRAME][mine[0]], env.render())  # the reset's frame
        for prev, cur in zip(mine, mine[1:]):  # then the last frame the previous chunk realized
            last = camera_rows[REALIZED_FRAMES][prev, camera_rows[STEPS][prev] - 1]
            assert np.array_equal(camera_rows[FRAME][cur], last)


def test_a_camera_rollout_renders_only_the_frames_it_records(agent, camera_envs, monkeypatch):
    """Not in choose=sim's look-ahead over the candidates, nor in the grader's replays."""
    renders = []
    for env in camera_envs:
        original = env.render
        monkeypatch.setattr(env, "render", lambda original=original: renders.append(1) or original())
    spec = RolloutSpec(episodes=2, seed=4, n_candidates=3, choose="sim", camera=True)
    out = collect(agent, camera_envs, spec, wm.ChunkGrader(probes=2, horizon=10))
    assert len(renders) == out["steps"].sum() + 2  # a frame after each executed step, one per reset
    assert out["sim_steps"].sum() > 3 * out["steps"].sum()  # while the engine ran far more steps


def test_frames_reach_the_loss_where_the_model_reads_or_imagines_them(agent, camera_rows):
    from flywheel.rows import FRAME, IMAGINED_FRAMES, REALIZED_FRAMES, STEPS
    from policies.config import SIZES, ModelConfig

    def loss(data, cfg=GRADE_REALIZED, model=agent):
        return batch_loss(model, data, cfg, torch.Generator().manual_seed(0))

    def changed(column, where=slice(None)):
        out = {k: v.copy() for k, v in camera_rows.items()}
        out[column][where] = 255 - out[column][where]
        return out

    base = loss(camera_rows)
    # The observed frame is in the prefix every term reads.
    assert all(not torch.equal(base[k], loss(changed(FRAME))[k]) for k in ("future", "action"))
    # Realized frames are the video expert's targets, at the steps that ran only (and, with
    # act_on=realized, part of the future the actions read).
    unran = np.arange(agent.cfg.chunk)[None, :] >= camera_rows[STEPS][:, None]
    assert unran.any() and all(torch.equal(base[k], loss(changed(REALIZED_FRAMES, unran))[k]) for k in base)
    imagined = ObjectiveConfig(advantage="grade", act_on="imagined")
    a, b = loss(camera_rows, imagined), loss(changed(REALIZED_FRAMES), imagined)
    assert not torch.equal(a["future"], b["future"]) and torch.equal(a["action"], b["action"])
    # The imagined frames are the plan the actions read with act_on=imagined, never a target.
    b = loss(changed(IMAGINED_FRAMES), imagined)
    assert torch.equal(a["future"], b["future"]) and not torch.equal(a["action"], b["action"])
    # A model that imagines no frames learns none: its future is proprio only.
    blind = Agent(ModelConfig(**{**SIZES["tiny"].to_dict(), "future_frames": False})).eval()
    assert torch.equal(loss(camera_rows, model=blind)["future"], loss(changed(REALIZED_FRAMES), model=blind)["future"])


# ---------------------------------------------------------------------- the task text's cache (Model.text_prefixes)


@pytest.fixture(scope="module")
def two_task_rows(agent):
    """Planned rows of two tasks whose instructions differ in length (so the text is padded), shuffled."""
    names = [SIM, "mujoco/cartpole-swingup-twin"]
    envs = [sims.make(name, max_episode_steps=12) for name in names]
    spec = RolloutSpec(episodes=4, seed=2, n_candidates=2, episode_sims=tuple(task_plan(names, [1.0, 1.0], 4, seed=1)))
    rows = ChunkRows.of(collect(agent, envs, spec))
    return rows.take(np.random.default_rng(0).permutation(rows.n))


def _losses_and_gradients(learner, rows, cached, steps=2):
    """Each step's batch_loss (per-row noise) and gradients, with the text cache's scope on or off,
    and how many text rows the text tokenizer read."""
    read = []
    hook = learner.model.tokenizers["text"].register_forward_hook(lambda m, args, out: read.append(out.shape[0]))
    out = []
    try:
        with learner.model.text_prefixes() if cached else contextlib.nullcontext():
            for step in range(steps):
                learner.model.zero_grad(set_to_none=True)
                losses = batch_loss(learner, rows, ObjectiveConfig(), noise_seed=(0, step))
                losses["total"].backward()
                out.append(({k: v.item() for k, v in losses.items()},
                            {n: p.grad.clone() for n, p in learner.model.named_parameters() if p.grad is not None}))
    finally:
        hook.remove()
    return out, sum(read)


@pytest.mark.parametrize("trained", [["video", "action"], ["understand", "video", "action"]])
def test_the_task_text_cache_changes_no_loss_or_gradient_and_runs_each_instruction_once(two_task_rows, trained):
    torch.manual_seed(2)
    learner = Agent(replace(SIZES["tiny"], text_max=64))  # room for both instructions: the shorter is padded
    make_optimizer(learner.model, trained)
    learner.model.train()
    plain, plain_reads = _losses_and_gradients(learner, two_task_rows, cached=False)
    cached, cached_reads = _losses_and_gradients(learner, two_task_rows, cached=True)
    n, tasks = two_task_rows.n, len(set(two_task_rows[TASK]))
    assert tasks == 2 and plain_reads == 2 * n
    lengths = {len(str(task).encode()) for task in two_task_rows[TASK]}
    assert len(lengths) == 2 and max(lengths) + 2 <= learner.cfg.text_max
    # Frozen: each instruction's text runs once for both steps; trained: every row, every step.
    assert cached_reads == (2 * n if "understand" in trained else tasks)
    for (losses, grads), (want_losses, want_grads) in zip(cached, plain):
        assert losses == pytest.approx(want_losses, rel=1e-5, abs=1e-6)
        assert sorted(grads) == sorted(want_grads)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, want_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    # A trained text expert learns through the keys and values the rest reads (its last layer's FFN does not).
    text_grads = [g for name, g in cached[0][1].items() if name.startswith("backbone.experts.understand.")]
    assert any(g.abs().sum() > 0 for g in text_grads) == ("understand" in trained)
