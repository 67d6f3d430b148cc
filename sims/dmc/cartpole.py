"""``dmc/cartpole-swingup``: swing the pole up from hanging and balance it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mujoco
import numpy as np
import scipy.linalg

from sims.dmc.suite import DmcSuiteEnv
from sims.registry import register

UPRIGHT_COS = 0.95
CART_BOUND = 1.0  # metres from the rail centre (the rail's own limits are +-1.8 m)
HOLD_STEPS = 100  # 1 s at the 0.01 s control period


@register("dmc/cartpole-swingup", tags=("dmc", "mujoco", "curated"))
class CartpoleSwingup(DmcSuiteEnv):
    """dm-control's cartpole swing-up: the pole starts hanging down, the cart is pushed along a rail.

    Success: the pole has been upright (cosine of its angle from vertical > 0.95, i.e. within
    about 18 degrees) with the cart within 1.0 m of the rail centre for 100 consecutive control
    steps (1 s at the nominal 0.01 s control period). ``info["success"]`` is true from the
    100th such step on, for as long as the condition keeps holding; any step outside it resets
    the count. The count is part of the exact state.
    """

    dmc_domain = "cartpole"
    dmc_task = "swingup"
    task_text = "swing the pole up and balance it"
    defines_success = True
    default_max_episode_steps = 500
    camera_name = "fixed"

    def _build(self) -> None:
        super()._build()
        self._hold = 0

    def _on_episode_start(self) -> None:
        self._hold = 0

    def upright_and_centred(self) -> bool:
        cos = float(self.physics.pole_angle_cosine()[0])
        return cos > UPRIGHT_COS and abs(float(self.physics.cart_position())) <= CART_BOUND

    def _update_success(self) -> bool:
        self._hold = self._hold + 1 if self.upright_and_centred() else 0
        return self._hold >= HOLD_STEPS

    def _joints_from_proprio(self, proprio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, cos, sin, x_dot, theta_dot = proprio  # position (cart, cos, sin), then velocity
        return np.array([x, np.arctan2(sin, cos)]), np.array([x_dot, theta_dot])

    def _get_task_state(self) -> dict[str, np.ndarray]:
        return {**super()._get_task_state(), "hold": np.array(self._hold, dtype=np.int64)}

    def _set_task_state(self, arrays: dict[str, np.ndarray]) -> None:
        super()._set_task_state(arrays)
        self._hold = int(arrays["hold"])

    def demonstrator(self) -> CartpoleSwingupDemonstrator:
        return CartpoleSwingupDemonstrator(self)


class CartpoleSwingupDemonstrator:
    """Energy-pumping swing-up, then an LQR balance controller near upright.

    Reads the privileged joint state (cart position, pole angle, their velocities). The pole's
    energy relative to upright, ``E = I w^2 / 2 + m g l (cos(theta) - 1)``, is driven to zero by
    pushing the cart with ``sign((E - 0) * w * cos(theta))`` (saturated), plus a weak centring
    term; once the pole is within ~30 degrees of upright an LQR gain, computed on ``reset`` by
    linearising the env's current MuJoCo model about the upright equilibrium, takes over.
    """

    SWITCH_COS = 0.85

    def __init__(self, env: CartpoleSwingup) -> None:
        self.env = env
        self.reset()

    def reset(self) -> None:
        env = self.env
        model = env.model
        pole = model.body("pole_1")
        self._mass = float(pole.mass[0])
        self._lever = float(np.linalg.norm(pole.ipos))
        self._inertia = float(pole.inertia[1]) + self._mass * self._lever**2
        self._gravity = float(-model.opt.gravity[2])
        self._gain = _lqr_gain(model, env.n_sub_steps)

    def __call__(self, observation: Mapping[str, Any]) -> np.ndarray:
        qpos, qvel = self.env.physics.data.qpos, self.env.physics.data.qvel
        x, theta = float(qpos[0]), float(qpos[1])
        xdot, omega = float(qvel[0]), float(qvel[1])
        theta = (theta + np.pi) % (2 * np.pi) - np.pi  # 0 = upright
        if np.cos(theta) > self.SWITCH_COS:
            u = -float(self._gain @ np.array([x, theta, xdot, omega]))
        else:
            energy = 0.5 * self._inertia * omega**2 + self._mass * self._gravity * self._lever * (np.cos(theta) - 1)
            pump = energy * omega * np.cos(theta)
            u = 1.0 * np.sign(pump) if abs(pump) > 1e-3 else 0.0
            u += -0.3 * x - 0.2 * xdot
        return np.clip(np.array([u]), -1.0, 1.0)


def _lqr_gain(model: mujoco.MjModel, n_sub_steps: int) -> np.ndarray:
    """Discrete LQR gain about the upright equilibrium of the control-period map.

    The map is linearised by central differences of one control step (``n_sub_steps`` physics
    steps with the control held), since MuJoCo's own ``mjd_transitionFD`` has no RK4 support.
    State: (cart position, pole angle, cart velocity, pole angular velocity).
    """
    data = mujoco.MjData(model)
    nv, nu = model.nv, model.nu

    def control_step(x: np.ndarray, u: np.ndarray) -> np.ndarray:
        mujoco.mj_resetData(model, data)
        data.qpos[:], data.qvel[:], data.ctrl[:] = x[:nv], x[nv:], u
        mujoco.mj_step(model, data, n_sub_steps)
        return np.concatenate([data.qpos, data.qvel])

    x0, u0, eps = np.zeros(2 * nv), np.zeros(nu), 1e-6
    a = np.zeros((2 * nv, 2 * nv))
    b = np.zeros((2 * nv, nu))
    for i in range(2 * nv):
        dx = np.zeros(2 * nv)
        dx[i] = eps
        a[:, i] = (control_step(x0 + dx, u0) - control_step(x0 - dx, u0)) / (2 * eps)
    for j in range(nu):
        du = np.zeros(nu)
        du[j] = eps
        b[:, j] = (control_step(x0, u0 + du) - control_step(x0, u0 - du)) / (2 * eps)
    q = np.diag([1.0, 20.0, 0.1, 0.5])
    r = np.array([[0.5]])
    p = scipy.linalg.solve_discrete_are(a, b, q, r)
    return np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)[0]
