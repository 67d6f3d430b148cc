"""``mujoco/inverted-pendulum``: gymnasium's InvertedPendulum-v5 behind the sims interface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mujoco
import numpy as np
from gymnasium.envs.mujoco.inverted_pendulum_v5 import InvertedPendulumEnv

from sims.gym_mujoco._base import GymMujocoTask
from sims.registry import register

FALL_ANGLE = 0.2  # rad: gymnasium's termination threshold


@register("mujoco/inverted-pendulum", tags=("mujoco", "gymnasium", "balance", "cart-pole"))
class InvertedPendulum(GymMujocoTask):
    """Balance a pole on a cart that slides along a rail (gymnasium InvertedPendulum-v5).

    Success: the pole has stayed balanced, ``|hinge angle| < 0.2`` rad, for ``hold_steps`` =
    100 consecutive control steps (4 s of simulated time at the nominal timestep) since the
    episode began; ``info["success"]`` is true from that step on. The episode terminates as
    upstream does, the step the pole leans past 0.2 rad (or the state stops being finite), so
    success means surviving 100 steps. Truncated after 200 steps.

    Reset (qpos and qvel uniform in +-0.01), observation (cart position, hinge angle, and
    their velocities), reward (1 per step survived) and dynamics are gymnasium's. The action
    is the cart force command normalized to [-1, 1]: action ``a`` is upstream's ``3 a``.
    """

    name = "mujoco/inverted-pendulum"
    task_text = "balance the pole upright by moving the cart"
    default_max_episode_steps = 200
    gym_env_class = InvertedPendulumEnv
    normalize_actions = True
    # Side view of the cart rail (+-1 m) and the 0.6 m pole.
    camera_view = (0.0, 0.0, 0.2, 2.6, 90.0, -5.0)

    hold_steps = 100
    reset_noise_scale = 0.01

    def _build(self) -> None:
        super()._build()
        self._balanced = 0

    def _reset_task(self, rng: np.random.Generator) -> None:
        # gymnasium's reset_model, drawing from ``rng`` in the same order.
        low, high = -self.reset_noise_scale, self.reset_noise_scale
        qpos = self.init_qpos + rng.uniform(size=self.model.nq, low=low, high=high)
        qvel = self.init_qvel + rng.uniform(size=self.model.nv, low=low, high=high)
        self._start(qpos, qvel)
        self._balanced = 0

    def _step_task(self, action: np.ndarray) -> float:
        self._simulate(action)
        return float(not self._fallen())

    def _fallen(self) -> bool:
        obs = self._inner._get_obs()
        return bool(not np.isfinite(obs).all() or abs(obs[1]) > FALL_ANGLE)

    def _terminated(self) -> bool:
        return self._fallen()

    def _update_success(self) -> bool:
        self._balanced = 0 if self._fallen() else self._balanced + 1
        # The count includes the reset state; success needs hold_steps steps after it.
        return self._balanced > self.hold_steps

    def _joints_from_proprio(self, proprio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return proprio[:2].copy(), proprio[2:].copy()  # (cart, hinge) positions, then velocities

    def _get_task_state(self) -> dict[str, np.ndarray]:
        return {"balanced": np.array(self._balanced, dtype=np.int64)}

    def _set_task_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._balanced = int(arrays["balanced"])

    def demonstrator(self) -> InvertedPendulumDemonstrator:
        return InvertedPendulumDemonstrator(self)


class InvertedPendulumDemonstrator:
    """Discrete-time LQR on (cart x, angle, cart v, angular velocity).

    The gain is computed from the env's own model (so it adapts to the current physical
    parameters) by linearising one control step (``frame_skip`` physics steps with the action
    held) about the upright rest state with finite differences and iterating the Riccati
    equation. It reads the true state from ``env.data``, not the (possibly noisy) observation.
    """

    def __init__(
        self,
        env: InvertedPendulum,
        state_cost: tuple[float, float, float, float] = (1.0, 10.0, 0.1, 0.1),
        action_cost: float = 0.1,
    ) -> None:
        self.env = env
        self.state_cost = np.diag(state_cost)
        self.action_cost = np.array([[action_cost]])
        self.gain: np.ndarray | None = None
        self._gain_key: tuple | None = None

    def reset(self) -> None:
        self.gain = None  # parameters may have changed since the last episode

    def _compute_gain(self) -> np.ndarray:
        env = self.env
        model = env.model
        data = mujoco.MjData(model)
        nq, nv, nu = model.nq, model.nv, model.nu

        def control_step(x: np.ndarray, u: np.ndarray) -> np.ndarray:
            mujoco.mj_resetData(model, data)
            data.qpos[:], data.qvel[:], data.ctrl[:] = x[:nq], x[nq:], u
            mujoco.mj_step(model, data, nstep=env.frame_skip)
            return np.concatenate([data.qpos, data.qvel])

        # Central finite differences of one control step (mjd_transitionFD refuses RK4).
        eps = 1e-6
        x0, u0 = np.zeros(nq + nv), np.zeros(nu)
        a_step = np.zeros((nq + nv, nq + nv))
        b_step = np.zeros((nq + nv, nu))
        for i in range(nq + nv):
            dx = np.zeros(nq + nv)
            dx[i] = eps
            a_step[:, i] = (control_step(x0 + dx, u0) - control_step(x0 - dx, u0)) / (2 * eps)
        for i in range(nu):
            du = np.zeros(nu)
            du[i] = eps
            b_step[:, i] = (control_step(x0, u0 + du) - control_step(x0, u0 - du)) / (2 * eps)
        p = self.state_cost.copy()
        for _ in range(2000):
            bt_p = b_step.T @ p
            k = np.linalg.solve(self.action_cost + bt_p @ b_step, bt_p @ a_step)
            p_next = self.state_cost + a_step.T @ p @ (a_step - b_step @ k)
            if np.allclose(p_next, p, rtol=1e-10, atol=1e-12):
                p = p_next
                break
            p = p_next
        bt_p = b_step.T @ p
        return np.linalg.solve(self.action_cost + bt_p @ b_step, bt_p @ a_step)

    def __call__(self, observation: Mapping[str, Any]) -> np.ndarray:
        model = self.env.model
        key = (model.opt.timestep, model.opt.gravity[2], model.actuator_gear[0, 0], *model.body_mass)
        if self.gain is None or key != self._gain_key:
            self.gain, self._gain_key = self._compute_gain(), key
        state = np.concatenate([self.env.data.qpos, self.env.data.qvel])
        ctrl = -self.gain @ state  # in the actuator's units, [-3, 3]
        return np.clip(ctrl / self.env._ctrl_high, -1.0, 1.0).astype(np.float32)
