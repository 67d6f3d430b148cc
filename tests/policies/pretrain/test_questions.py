"""Captions and questions are derived from the true simulator state."""

import math

import numpy as np
import pytest

import sims
from policies.pretrain.questions import DESCRIBERS, QA, describe, describer_of, describes, generic


def _answers(facts):
    return {q.question: q.answer for q in facts.questions}


def test_reacher_answers_follow_the_fingertip_and_the_target():
    env = sims.make("mujoco/reacher-twin")
    for seed in range(6):
        env.reset(seed=seed)
        tip, target = env.fingertip(), env.target
        facts = describe(env)
        a = _answers(facts)
        assert a["is the fingertip left of the target?"] == ("yes" if tip[0] < target[0] else "no")
        assert a["is the fingertip above the target?"] == ("yes" if tip[1] > target[1] else "no")
        dist = np.linalg.norm(tip - target)
        assert a["how far is the fingertip from the target, in cm?"] == str(round(dist * 100))
        assert f"{round(dist * 100)} cm from the target" in facts.caption
        assert a["how many cm is the fingertip right of the target?"] == str(round((tip[0] - target[0]) * 100))
    # Put the fingertip exactly on the target: the on-target answer flips.
    env.set_joint_state(np.array([0.3, 0.8]), np.zeros(2))
    env._set_target(env.fingertip())
    assert _answers(describe(env))["is the fingertip on the target?"] == "yes"
    env.close()


def test_cartpole_caption_reads_the_pole_angle():
    env = sims.make("mujoco/cartpole-balance-twin")
    env.reset(seed=0)
    env.set_joint_state(np.array([0.3, math.radians(30)]), np.array([0.0, -1.0]))
    facts = describe(env)
    assert facts.caption == "the pole is 30 degrees right of upright, swinging left; the cart is 30 cm right of centre"
    a = _answers(facts)
    assert a["is the pole left of upright?"] == "no" and a["is the pole swinging right?"] == "no"
    assert a["is the cart right of the centre?"] == "yes" and a["how many degrees is the pole from upright?"] == "30"
    assert a["what is the pole angle, in degrees right of upright?"] == "30"
    assert a["where is the cart, in cm right of the centre?"] == "30"
    env.close()


def test_point_mass_questions_use_the_ball_and_the_target():
    env = sims.make("dmc/point_mass-easy")
    env.reset(seed=1)
    to_target = env.physics.mass_to_target()[:2]
    a = _answers(describe(env))
    assert a["is the ball left of the target?"] == ("yes" if to_target[0] > 0 else "no")
    assert a["how far is the ball from the target, in cm?"] == str(round(np.linalg.norm(to_target) * 100))
    env.close()


def test_sims_without_a_describer_get_proprio_read_outs():
    name = "mujoco/inverted-pendulum"
    if name not in sims.names():
        name = next(n for n in sims.names() if n not in DESCRIBERS)
    assert describer_of(name) is generic
    env = sims.make(name)
    obs, _ = env.reset(seed=0)
    facts = describe(env)
    a = _answers(facts)
    assert a["is proprio entry 0 positive?"] == ("yes" if obs["proprio"][0] > 0 else "no")
    assert all(q.answer in q.choices and 0 <= q.margin <= 1 for q in facts.questions)
    env.close()


def test_a_plug_in_registers_its_own_describer(monkeypatch):
    monkeypatch.setattr("policies.pretrain.questions.DESCRIBERS", dict(DESCRIBERS))

    @describes("acme/thing")
    def thing(env):
        return None

    from policies.pretrain import questions
    assert questions.describer_of("acme/thing") is thing
    with pytest.raises(ValueError, match="not one of its choices"):
        QA("q?", "maybe", ("yes", "no"))
