"""``mujoco/half-cheetah``: gymnasium's HalfCheetah-v5 behind the sims interface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from sims.gym_mujoco._base import GymMujocoTask
from sims.registry import register

# A running gait found by cross-entropy search (scored on fidelity 1, 0.5, 0.25 and 0 runs) over
# torque sines (one frequency, per-joint amplitude, phase and offset; joints bthigh, bshin,
# bfoot, fthigh, fshin, ffoot) plus torso-pitch feedback on the two thighs.
GAIT_FREQUENCY = 3.256  # Hz
GAIT_AMPLITUDE = (0.943, 0.479, 0.216, 0.369, 0.965, 0.417)
GAIT_PHASE = (-0.469, 2.172, -2.403, -0.184, -0.543, -2.296)
GAIT_OFFSET = (-0.172, -0.188, -0.082, -0.088, 0.083, -0.001)
# Thigh torque added per rad of torso pitch and per rad/s of pitch rate: (back, front).
PITCH_GAIN = (0.677, 0.442)
PITCH_RATE_GAIN = (0.095, 0.022)


@register("mujoco/half-cheetah", tags=("mujoco", "gymnasium", "locomotion", "planar"))
class HalfCheetah(GymMujocoTask):
    """A planar two-legged cheetah runs forward (gymnasium HalfCheetah-v5).

    Success: the torso has moved at least ``success_distance`` = 8 m forward (+x) of where it
    started the episode while the cheetah is the right way up (``cos(torso pitch) > 0``, so
    flipping over and scooting on the back does not count). ``info["success"]`` says whether
    that holds at the step; in the 200-step (10 s) episode it needs an average speed of
    0.8 m/s, which takes a real gait (zero actions stay put; uniform random actions end
    within about 2 m of the start, more often behind it). The episode never terminates; it
    is truncated after 200 steps.

    Reset (qpos uniform in +-0.1, qvel normal with sd 0.1), observation (17 numbers: joint
    positions without the torso x, and all velocities), reward (forward speed minus 0.1 times
    the squared action norm) and dynamics are gymnasium's. Actions are the six joint torques
    in [-1, 1].
    """

    name = "mujoco/half-cheetah"
    task_text = "run forward as far as you can without flipping over"
    default_max_episode_steps = 200
    gym_env_class = HalfCheetahEnv
    camera_name = "track"  # follows the centre of mass from the side

    success_distance = 8.0
    reset_noise_scale = 0.1

    def _build(self) -> None:
        super()._build()
        self._start_x = 0.0

    def _reset_task(self, rng: np.random.Generator) -> None:
        # gymnasium's reset_model, drawing from ``rng`` in the same order.
        scale = self.reset_noise_scale
        qpos = self.init_qpos + rng.uniform(low=-scale, high=scale, size=self.model.nq)
        qvel = self.init_qvel + scale * rng.standard_normal(self.model.nv)
        self._start(qpos, qvel)
        self._start_x = float(self.data.qpos[0])

    def _step_task(self, action: np.ndarray) -> float:
        x_before = float(self.data.qpos[0])
        self._simulate(action)
        x_velocity = (float(self.data.qpos[0]) - x_before) / self.dt
        reward, _ = self._inner._get_rew(x_velocity, action)
        return float(reward)

    def progress(self) -> float:
        """How far (m) the torso has moved forward since the episode began."""
        return float(self.data.qpos[0]) - self._start_x

    def upright(self) -> bool:
        """Whether the torso is the right way up (pitch within +-90 degrees)."""
        return bool(np.cos(self.data.qpos[2]) > 0.0)

    def _update_success(self) -> bool:
        return self.progress() >= self.success_distance and self.upright()

    def _get_task_state(self) -> dict[str, np.ndarray]:
        return {"start_x": np.array(self._start_x, dtype=np.float64)}

    def _set_task_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._start_x = float(arrays["start_x"])

    def demonstrator(self) -> HalfCheetahDemonstrator:
        return HalfCheetahDemonstrator(self)


class HalfCheetahDemonstrator:
    """A periodic gait: per-joint torque sines on the simulation clock, plus feedback.

    The thighs get extra torque proportional to the torso's pitch and pitch rate (read from
    ``env.data``), which keeps the body from pitching over onto its back.
    """

    def __init__(self, env: HalfCheetah) -> None:
        self.env = env
        self.frequency = GAIT_FREQUENCY
        self.amplitude = np.array(GAIT_AMPLITUDE)
        self.phase = np.array(GAIT_PHASE)
        self.offset = np.array(GAIT_OFFSET)
        self.pitch_gain = np.array(PITCH_GAIN)
        self.pitch_rate_gain = np.array(PITCH_RATE_GAIN)

    def reset(self) -> None:
        pass

    def __call__(self, observation: Mapping[str, Any]) -> np.ndarray:
        t = float(self.env.data.time)
        action = self.amplitude * np.sin(2 * np.pi * self.frequency * t + self.phase) + self.offset
        pitch, pitch_rate = float(self.env.data.qpos[2]), float(self.env.data.qvel[2])
        action[[0, 3]] += self.pitch_gain * pitch + self.pitch_rate_gain * pitch_rate
        return np.clip(action, -1.0, 1.0).astype(np.float32)
