"""The behaviour SimEnv's public methods own, exercised through the example slider."""

import numpy as np
import pytest

import sims


@pytest.fixture
def slider(example_plugin_src):
    from acme_sims.slider import Slider

    return Slider


def test_step_before_reset_is_an_error(slider):
    with pytest.raises(RuntimeError, match="call reset"):
        slider().step(np.zeros(1))


def test_episodes_truncate_at_max_episode_steps(slider):
    env = slider(max_episode_steps=7)
    env.reset(seed=0)
    ends = [env.step(np.zeros(1))[3] for _ in range(7)]
    assert ends == [False] * 6 + [True]
    with pytest.raises(RuntimeError, match="episode has ended"):
        env.step(np.zeros(1))


def test_a_zero_episode_length_is_refused_not_replaced_by_the_default(slider):
    with pytest.raises(ValueError, match="max_episode_steps must be >= 1"):
        slider(max_episode_steps=0)
    assert slider().max_episode_steps == slider.default_max_episode_steps  # unset: the task's default


def test_actions_are_clipped_to_bounds_and_validated(slider):
    env = slider()
    assert env.check_action([5.0]).tolist() == [1.0]
    with pytest.raises(ValueError, match="NaN or inf"):
        env.check_action([np.inf])
    with pytest.raises(ValueError, match="must be numeric"):
        env.check_action(["left"])


def test_observation_noise_appears_below_fidelity_one_only(slider):
    clean, noisy = slider(), slider(fidelity=0.2)
    assert clean.get_params().obs_noise == 0.0
    assert noisy.get_params().obs_noise > 0.0
    # Same start: the noise-free proprio of the clean env equals the true state.
    obs, _ = clean.reset(seed=5)
    np.testing.assert_array_equal(obs["proprio"], clean._proprio().astype(np.float32))
    obs, _ = noisy.reset(seed=5)
    assert not np.array_equal(obs["proprio"], noisy._proprio().astype(np.float32))


def test_params_keyword_overrides_the_fidelity_perturbation(slider):
    env = slider(fidelity=0.5, params={"mass_scale": 2.0})
    assert env.get_params().mass_scale == 2.0
    assert env.get_params().gravity == sims.perturb(env.nominal_params, 0.5, 0).gravity
    assert env.model.body_mass[1] == pytest.approx(2.0 * env._nominal_arrays["body_mass"][1])


def test_set_state_rejects_what_is_not_a_state_of_this_sim(slider):
    env = slider()
    env.reset(seed=0)
    state = env.get_state()
    with pytest.raises(TypeError, match="expects a SimState"):
        env.set_state({"qpos": [0.0]})
    squashed = sims.SimState(state.sim, state.step, {**state.arrays, "mujoco": state.arrays["mujoco"][:-1]}, state.rng)
    with pytest.raises(ValueError, match="do not fit this sim"):
        env.set_state(squashed)


def test_a_state_layout_that_changes_between_episodes_is_followed(slider):
    class Beads(slider):
        """A slider with as many bead markers as the episode's seed says (a world rebuilt per episode)."""

        def _reset_task(self, rng):
            super()._reset_task(rng)
            self.beads = np.zeros(int(rng.integers(1, 4)))

        def _get_task_state(self):
            return {"beads": self.beads.copy()}

        def _set_task_state(self, arrays):
            self.beads = arrays["beads"].copy()

    env = Beads()
    env.reset(seed=0)
    old = env.get_state()
    env.set_state(old)  # the layout is now known for this episode
    other = next(s for s in range(1, 50) if len(_beads(Beads(), s)) != len(env.beads))
    env.reset(seed=other)
    with pytest.raises(ValueError, match="do not fit this sim"):  # the last episode's layout is refused
        env.set_state(old)
    env.set_state(env.get_state())  # this episode's is taken


def _beads(env, seed):
    env.reset(seed=seed)
    return env.beads


def test_bad_task_text_is_caught_at_construction(slider):
    class Shouting(slider):
        task_text = "push <the> block"

    with pytest.raises(ValueError, match="task_text"):
        Shouting()


def test_success_is_reported_after_reset_and_every_step(slider):
    env = slider()
    _, info = env.reset(seed=1)
    assert info["success"] is False
    demo = env.demonstrator()
    demo.reset()
    obs = env.reset(seed=1)[0]
    successes = []
    for _ in range(env.max_episode_steps):
        obs, _, _, truncated, info = env.step(demo(obs))
        successes.append(info["success"])
        if truncated:
            break
    assert any(successes) and not successes[0]


def test_every_step_is_counted_for_the_envs_life_and_the_process():
    env = sims.make("mujoco/reacher-twin", max_episode_steps=5)
    env.reset(seed=0)
    before, state = sims.engine_steps_taken(), env.get_state()
    for _ in range(3):
        env.step(np.zeros(env.embodiment.action_dim))
    env.set_state(state)  # a restore is not a step, and takes none back
    env.reset(seed=1)
    env.step(np.zeros(env.embodiment.action_dim))
    assert env.engine_steps == 4 == sims.engine_steps_taken() - before and env.step_count == 1


def test_a_non_finite_observation_or_reward_names_the_sim_the_field_and_the_step(nan_sims, slider):
    env = sims.make("test/nan-5-all")
    env.reset(seed=0)
    for _ in range(4):
        env.step(np.zeros(1))
    with pytest.raises(sims.NonFiniteError, match=r"test/nan-5-all: proprio contains NaN at step 5") as caught:
        env.step(np.zeros(1))
    assert (caught.value.sim, caught.value.field, caught.value.step) == ("test/nan-5-all", "proprio", 5)
    with pytest.raises(RuntimeError, match="call reset"):  # the episode is over
        env.step(np.zeros(1))
    with pytest.raises(sims.NonFiniteError, match="proprio contains NaN at reset"):
        sims.make("test/nan-0-all").reset(seed=0)

    class Overflowing(slider):
        def _step_task(self, action):
            super()._step_task(action)
            return float("inf")

    env = Overflowing()
    env.reset(seed=0)
    with pytest.raises(sims.NonFiniteError, match=r"Overflowing: reward contains inf at step 1"):
        env.step(np.zeros(1))
    assert np.isfinite(sims.make("test/nan-0-all").reset(seed=10**7)[0]["proprio"]).all()  # a seed it spares
