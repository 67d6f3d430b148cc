"""What a frame shows, in words, derived from the simulator's true state.

The understanding stage is next-token prediction on answers to questions about a scene;
the image stage generates a frame from its caption. Both need text that is *true*, so it
is computed from privileged state (joint angles, target positions) rather than written by
hand. Each task family has a small describer keyed by sim name:

    @describes("mujoco/reacher-twin", "pybullet/reacher")
    def reacher(env) -> Facts: ...

A describer returns a caption and a few questions, each with its true answer, every
answer it could have had (so chance accuracy is known), and a margin in [0, 1]: how far
the state is from flipping the answer (clear-cut scenes are the high-quality slice used
by the decay phase). Sims without a describer get ``generic``: read-outs of the proprio
vector. A plug-in adds its own with ``@describes("acme/pusher")``.

Conventions: "left"/"right" is -x/+x and "above"/"below" is +y/-y in the world frame (for
the cartpole, "above" is up). Read-outs are rounded: offsets to the centimetre, the pole's
angle and the cart's position to 5 (degrees, cm), unsigned sizes to 10 degrees.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sims.env import SimEnv

YES_NO = ("yes", "no")


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    choices: tuple[str, ...]  # every answer the question can have; chance = 1 / len(choices)
    margin: float = 1.0       # in [0, 1]: how clear-cut the answer is

    def __post_init__(self) -> None:
        if self.answer not in self.choices:
            raise ValueError(f"answer {self.answer!r} to {self.question!r} is not one of its choices")


@dataclass(frozen=True)
class Facts:
    caption: str
    questions: tuple[QA, ...]

    @property
    def quality(self) -> float:
        """The scene's clarity: the mean margin of its questions."""
        return float(np.mean([q.margin for q in self.questions])) if self.questions else 1.0


Describer = Callable[[SimEnv], Facts]
DESCRIBERS: dict[str, Describer] = {}


def describes(*sims: str):
    """Decorator: ``fn(env) -> Facts`` describes the sims named (exact registered names)."""

    def deco(fn: Describer) -> Describer:
        for name in sims:
            DESCRIBERS[name] = fn
        return fn

    return deco


def describer_of(sim: str) -> Describer:
    return DESCRIBERS.get(sim, generic)


def describe(env: SimEnv) -> Facts:
    """The caption and questions of ``env``'s current state."""
    return describer_of(env.name)(env)


# ---------------------------------------------------------------------- helpers


def yes_no(question: str, truth: bool, value: float, scale: float) -> QA:
    """A yes/no question whose answer flips when ``value`` crosses 0; margin |value| / scale."""
    return QA(question, "yes" if truth else "no", YES_NO, min(1.0, abs(value) / scale))


def rounded(question: str, value: float, step: float, top: float, unit_scale: float = 1.0) -> QA:
    """A read-out of ``value * unit_scale`` rounded to ``step``, clipped to [0, top]."""
    x = min(max(value * unit_scale, 0.0), top)
    n = round(x / step)
    choices = tuple(str(int(i * step)) for i in range(int(round(top / step)) + 1))
    # margin: 1 at a bin's centre, 0 on the boundary between two bins
    margin = 1.0 - 2.0 * abs(x / step - n) if x < top else 1.0
    return QA(question, str(int(n * step)), choices, max(0.0, margin))


def signed(question: str, value: float, step: float, top: float, unit_scale: float = 1.0) -> QA:
    """A signed read-out of ``value * unit_scale`` rounded to ``step``, clipped to [-top, top]."""
    x = min(max(value * unit_scale, -top), top)
    n = round(x / step)
    k = int(round(top / step))
    choices = tuple(str(int(i * step)) for i in range(-k, k + 1))
    margin = 1.0 - 2.0 * abs(x / step - n) if abs(x) < top else 1.0
    return QA(question, str(int(n * step)), choices, max(0.0, margin))


def _side(dx: float, dy: float) -> str:
    horizontal = "left of" if dx < 0 else "right of"
    vertical = "below" if dy < 0 else "above"
    return f"{horizontal} it and {vertical} it"


def _motion(vx: float, vy: float, still: float) -> str:
    if math.hypot(vx, vy) < still:
        return "at rest"
    if abs(vx) >= abs(vy):
        return "moving right" if vx > 0 else "moving left"
    return "moving up" if vy > 0 else "moving down"


# ---------------------------------------------------------------------- reacher


@describes("mujoco/reacher-twin", "pybullet/reacher")
def reacher(env) -> Facts:
    """Two-link reacher (``sims.twins.reacher.ReacherTask``): fingertip, target, joints."""
    tip, target = env.fingertip(), env.target
    (_, elbow), qvel = env.joint_state()
    dx, dy = tip - target
    dist = float(np.hypot(dx, dy))
    speed = float(np.abs(qvel).max())
    radius = env.description.target_radius
    tip_vel = _fingertip_velocity(env, qvel)
    bend = abs(math.degrees(elbow))
    approach = float(-np.dot(tip_vel, [dx, dy]) / max(dist, 1e-6))  # speed towards the target, m/s
    caption = (f"the fingertip is {round(dist * 100)} cm from the target, {_side(dx, dy)}, "
               f"{_motion(*tip_vel, 0.02)}; the elbow is bent {int(round(bend, -1))} degrees")
    return Facts(caption, (
        yes_no("is the fingertip left of the target?", dx < 0, dx, 0.03),
        yes_no("is the fingertip above the target?", dy > 0, dy, 0.03),
        rounded("how far is the fingertip from the target, in cm?", dist, 1.0, 40.0, 100.0),
        yes_no("is the fingertip on the target?", dist < radius, dist - radius, 0.01),
        yes_no("is the arm moving?", speed > 0.5, speed - 0.5, 0.5),
        yes_no("is the fingertip moving toward the target?", approach > 0, approach, 0.05),
        QA("which way is the elbow bent?", "left" if elbow > 0 else "right", ("left", "right"),
           min(1.0, abs(elbow) / 0.3)),
        yes_no("is the target left of the shoulder?", target[0] < 0, target[0], 0.03),
        signed("how many cm is the fingertip right of the target?", dx, 1.0, 40.0, 100.0),
        signed("how many cm is the fingertip above the target?", dy, 1.0, 40.0, 100.0),
    ))


def _fingertip_velocity(env, qvel: np.ndarray) -> np.ndarray:
    d = env.description
    (q1, q2), _ = env.joint_state()
    j = np.array([
        [-d.upper_length * math.sin(q1) - d.fore_length * math.sin(q1 + q2), -d.fore_length * math.sin(q1 + q2)],
        [d.upper_length * math.cos(q1) + d.fore_length * math.cos(q1 + q2), d.fore_length * math.cos(q1 + q2)],
    ])
    return j @ qvel


# ---------------------------------------------------------------------- cartpole


@describes("mujoco/cartpole-balance-twin", "mujoco/cartpole-swingup-twin",
           "pybullet/cartpole-balance", "pybullet/cartpole-swingup")
def cartpole(env) -> Facts:
    """Cart and pole (``sims.twins.cartpole.CartpoleTask``); angle 0 is upright, +x is right."""
    (x, theta), (x_dot, theta_dot) = env.joint_state()
    theta = (theta + math.pi) % (2 * math.pi) - math.pi  # tip at x + L sin(theta): > 0 leans right
    deg = abs(math.degrees(theta))
    lean = "upright" if deg < 5 else f"{int(round(deg, -1))} degrees {'right' if theta > 0 else 'left'} of upright"
    swing = "still" if abs(theta_dot) < 0.2 else f"swinging {'right' if theta_dot > 0 else 'left'}"
    where = "at the centre" if abs(x) < 0.05 else f"{round(abs(x) * 100)} cm {'right' if x > 0 else 'left'} of centre"
    caption = f"the pole is {lean}, {swing}; the cart is {where}"
    return Facts(caption, (
        yes_no("is the pole left of upright?", theta < 0, theta, 0.1),
        yes_no("is the pole swinging right?", theta_dot > 0, theta_dot, 0.5),
        yes_no("is the cart right of the centre?", x > 0, x, 0.1),
        yes_no("is the pole upright?", abs(theta) < 0.2, abs(theta) - 0.2, 0.1),
        rounded("how many degrees is the pole from upright?", deg, 10.0, 180.0),
        yes_no("is the cart moving right?", x_dot > 0, x_dot, 0.2),
        yes_no("is the pole below the cart?", abs(theta) > math.pi / 2, abs(theta) - math.pi / 2, 0.3),
        signed("what is the pole angle, in degrees right of upright?", math.degrees(theta), 5.0, 180.0),
        signed("where is the cart, in cm right of the centre?", x, 5.0, 180.0, 100.0),
    ))


# ---------------------------------------------------------------------- point mass


@describes("dmc/point_mass-easy", "dmc/point_mass-hard")
def point_mass(env) -> Facts:
    """dm-control's point mass: the ball, the target at the centre, the ball's velocity."""
    physics = env.physics
    to_target = np.asarray(physics.mass_to_target())[:2]
    dx, dy = -to_target  # ball minus target
    vx, vy = physics.named.data.qvel[["root_x", "root_y"]]
    dist = float(np.hypot(dx, dy))
    speed = float(np.hypot(vx, vy))
    radius = float(physics.named.model.geom_size["target", 0])
    approach = float(-(vx * dx + vy * dy) / max(dist, 1e-6))
    caption = f"the ball is {round(dist * 100)} cm from the target, {_side(dx, dy)}, {_motion(vx, vy, 0.02)}"
    return Facts(caption, (
        yes_no("is the ball left of the target?", dx < 0, dx, 0.03),
        yes_no("is the ball above the target?", dy > 0, dy, 0.03),
        rounded("how far is the ball from the target, in cm?", dist, 1.0, 45.0, 100.0),
        yes_no("is the ball in the target?", dist <= radius, dist - radius, 0.01),
        yes_no("is the ball moving?", speed > 0.05, speed - 0.05, 0.05),
        yes_no("is the ball moving right?", vx > 0, vx, 0.05),
        yes_no("is the ball moving up?", vy > 0, vy, 0.05),
        yes_no("is the ball moving toward the target?", approach > 0, approach, 0.05),
        signed("how many cm is the ball right of the target?", dx, 1.0, 45.0, 100.0),
        signed("how many cm is the ball above the target?", dy, 1.0, 45.0, 100.0),
    ))


# ---------------------------------------------------------------------- any other sim


def generic(env) -> Facts:
    """Read-outs of the first proprio entries, for sims without a describer of their own."""
    proprio = np.asarray(env._proprio(), dtype=np.float64)  # noise-free, like the other describers' state
    shown = proprio[:4]
    caption = "the proprio reads " + ", ".join(f"{v:.1f}" for v in shown)
    questions = []
    for i, v in enumerate(shown):
        questions.append(yes_no(f"is proprio entry {i} positive?", v > 0, v, 0.2))
        questions.append(rounded(f"what is the size of proprio entry {i}, in tenths?", abs(v), 1.0, 30.0, 10.0))
    return Facts(caption, tuple(questions))
