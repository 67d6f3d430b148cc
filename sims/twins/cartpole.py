"""Cartpole swing-up and balance, one task implementation run by MuJoCo and by PyBullet.

The task, its observation and action layout, its text, its success definition and its
demonstrator live in ``CartpoleTask`` and read the robot only through the twin accessor
(``sims.twins.engines``), so ``pybullet/cartpole-swingup`` and
``mujoco/cartpole-swingup-twin`` differ in nothing but the engine.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg

from sims.embodiment import Embodiment
from sims.registry import register
from sims.twins.descriptions import CartpoleDescription
from sims.twins.engines import MujocoTwinEnv, PybulletTwinEnv

UPRIGHT_ANGLE = 0.2  # rad from vertical
CENTRE_LIMIT = 1.0  # m from the rail centre
HOLD_SECONDS = 1.0


def wrap_angle(theta: float) -> float:
    return (theta + math.pi) % (2.0 * math.pi) - math.pi


class CartpoleTask:
    """Swing the pole up (or keep it up) and balance it, pushing the cart along a rail.

    Proprio (5): cart position, cos and sin of the pole angle (0 = upright), cart velocity,
    pole angular velocity. Action (1): cart force command in [-1, 1] (times the gear, 10 N).
    Swing-up starts hanging down (angle pi), balance starts near upright, both with small
    noise. Success: the pole has been within 0.2 rad of upright with the cart within 1 m of
    the rail centre for the last 100 consecutive control steps (1 s). Reward, in [0, 1], is a
    product of uprightness, centring, small control and small pole velocity, shaped like
    dm-control's.
    """

    description = CartpoleDescription()
    swing_up = True
    task_text = "swing the pole up and balance it above the cart"
    default_max_episode_steps = 600
    _hold = 0  # until the first reset

    @property
    def hold_steps(self) -> int:
        d = self.description
        return round(HOLD_SECONDS / (d.timestep * d.frame_skip))

    def _embodiment(self) -> Embodiment:
        return Embodiment("cartpole", proprio_dim=5, action_dim=1, action_low=(-1.0,), action_high=(1.0,))

    def _reset_task(self, rng: np.random.Generator) -> None:
        self._reset_world()
        if self.swing_up:
            x, theta = 0.01 * rng.standard_normal(), math.pi + 0.01 * rng.standard_normal()
        else:
            x, theta = rng.uniform(-0.1, 0.1), rng.uniform(-0.034, 0.034)
        self.set_joint_state(np.array([x, theta]), 0.01 * rng.standard_normal(2))
        self._hold = 0

    def _step_task(self, action: np.ndarray) -> float:
        self._actuate(action)
        (x, theta), (_, theta_dot) = self.joint_state()
        upright = (math.cos(theta) + 1.0) / 2.0
        centred = (1.0 + math.exp(-(x**2))) / 2.0
        small_control = (4.0 + (1.0 - float(action[0]) ** 2)) / 5.0
        small_velocity = (1.0 + math.exp(-((theta_dot / 5.0) ** 2))) / 2.0
        return upright * centred * small_control * small_velocity

    def _proprio(self) -> np.ndarray:
        (x, theta), (x_dot, theta_dot) = self.joint_state()
        return np.array([x, math.cos(theta), math.sin(theta), x_dot, theta_dot])

    def _joints_from_proprio(self, proprio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, cos, sin, x_dot, theta_dot = proprio
        return np.array([x, math.atan2(sin, cos)]), np.array([x_dot, theta_dot])

    def _update_success(self) -> bool:
        (x, theta), _ = self.joint_state()
        balanced = math.cos(theta) > math.cos(UPRIGHT_ANGLE) and abs(x) < CENTRE_LIMIT
        self._hold = self._hold + 1 if balanced else 0
        return self._hold >= self.hold_steps

    def _get_task_state(self) -> dict[str, np.ndarray]:
        return {"hold": np.array(self._hold, dtype=np.int64)}

    def _set_task_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._hold = int(arrays["hold"])

    def demonstrator(self) -> CartpoleDemonstrator:
        return CartpoleDemonstrator(self)


class CartpoleDemonstrator:
    """Energy-pumping swing-up, then LQR balance (privileged joint state, either engine).

    Far from upright it pushes the cart so the pole's energy approaches that of resting
    upright (``a = k (E - E_up) theta_dot cos(theta)`` raises energy when it is short), with
    a weak pull back to the rail centre; within 0.5 rad of upright an LQR gain computed
    from the linearized dynamics takes over. Its model is the description under the env's
    current physical parameters (masses, gravity, motor gain), so it also solves the
    perturbed training sims of lower fidelity.
    """

    ENERGY_GAIN = 60.0
    SWITCH_ANGLE = 0.5

    def __init__(self, env) -> None:
        self.env = env
        self.reset()

    def reset(self) -> None:
        d: CartpoleDescription = self.env.description
        params = self.env.get_params()
        m, l_com, g = d.pole_mass * params.mass_scale, d.pole_com, params.gravity
        self.total_mass = d.cart_mass * params.mass_scale + m
        self.pole_j = d.pole_inertia * params.mass_scale + m * l_com**2  # about the hinge
        self.mgl = m * g * l_com
        self.gear = d.gear * params.actuator_gain
        # Linearized about upright: M qdd = [F, mgl theta] with M = [[M+m, m l], [m l, J]].
        mass = np.array([[self.total_mass, m * l_com], [m * l_com, self.pole_j]])
        inv = np.linalg.inv(mass)
        a = np.zeros((4, 4))
        a[0, 2] = a[1, 3] = 1.0
        a[2:, 1] = inv[:, 1] * self.mgl
        a[2:, 2] = -inv[:, 0] * d.slider_damping
        b = np.zeros((4, 1))
        b[2:, 0] = inv[:, 0] * self.gear  # per unit of normalized command
        q, r = np.diag([1.0, 20.0, 1.0, 1.0]), np.array([[0.05]])
        p = scipy.linalg.solve_continuous_are(a, b, q, r)
        self.k = (np.linalg.solve(r, b.T @ p)).ravel()

    def __call__(self, observation) -> np.ndarray:
        (x, theta), (x_dot, theta_dot) = self.env.joint_state()
        theta = wrap_angle(theta)
        if abs(theta) < self.SWITCH_ANGLE:
            u = -float(self.k @ np.array([x, theta, x_dot, theta_dot]))
        else:
            energy = 0.5 * self.pole_j * theta_dot**2 + self.mgl * (math.cos(theta) - 1.0)
            accel = self.ENERGY_GAIN * energy * theta_dot * math.cos(theta) - 2.0 * x - 2.0 * x_dot
            u = self.total_mass * accel / self.gear
        return np.array([np.clip(u, -1.0, 1.0)], dtype=np.float32)


# ---------------------------------------------------------------------- registered twins


@register("pybullet/cartpole-swingup", tags=("pybullet", "twin", "cartpole"))
class PybulletCartpoleSwingup(CartpoleTask, PybulletTwinEnv):
    __doc__ = CartpoleTask.__doc__
    name = "pybullet/cartpole-swingup"


@register("mujoco/cartpole-swingup-twin", tags=("mujoco", "twin", "cartpole"))
class MujocoCartpoleSwingup(CartpoleTask, MujocoTwinEnv):
    __doc__ = CartpoleTask.__doc__
    name = "mujoco/cartpole-swingup-twin"


class _Balance:
    swing_up = False
    task_text = "keep the pole balanced above the cart"
    default_max_episode_steps = 300


@register("pybullet/cartpole-balance", tags=("pybullet", "twin", "cartpole"))
class PybulletCartpoleBalance(_Balance, PybulletCartpoleSwingup):
    __doc__ = CartpoleTask.__doc__
    name = "pybullet/cartpole-balance"


@register("mujoco/cartpole-balance-twin", tags=("mujoco", "twin", "cartpole"))
class MujocoCartpoleBalance(_Balance, MujocoCartpoleSwingup):
    __doc__ = CartpoleTask.__doc__
    name = "mujoco/cartpole-balance-twin"
