"""A block on a rail that must stop on a marker: the smallest complete flywheel simulator."""

from __future__ import annotations

import mujoco
import numpy as np

from sims import Embodiment, SimEnv
from sims.mujoco_engine import MujocoSimEnv

XML = """
<mujoco model="slider">
  <option timestep="0.01"/>
  <worldbody>
    <light pos="0 0 2"/>
    <geom type="plane" size="1 1 0.1" rgba=".8 .8 .8 1"/>
    <body name="block" pos="0 0 0.05">
      <joint name="slide" type="slide" axis="1 0 0" range="-0.5 0.5" damping="0.5"/>
      <geom type="box" size="0.05 0.05 0.05" mass="1" rgba=".2 .4 .8 1"/>
    </body>
    <body name="marker" mocap="true" pos="0 0 0.001">
      <geom type="cylinder" size="0.03 0.001" rgba=".1 .8 .1 1" contype="0" conaffinity="0"/>
    </body>
  </worldbody>
  <actuator>
    <motor joint="slide" gear="5" ctrlrange="-1 1"/>
  </actuator>
</mujoco>
"""


class Slider(MujocoSimEnv):
    """Push the block along its rail and stop it on the green marker.

    Success: the block is within 2 cm of the marker and slower than 5 cm/s.
    """

    task_text = "push the block to the green marker and stop there"
    default_max_episode_steps = 150
    frame_skip = 4
    camera_view = (0.0, 0.0, 0.0, 1.6, 90.0, -45.0)

    def _build(self) -> None:
        model = mujoco.MjModel.from_xml_string(XML)
        self._attach_mujoco(model, mujoco.MjData(model))

    def _embodiment(self) -> Embodiment:
        return Embodiment(self.name, proprio_dim=3, action_dim=1, action_low=(-1.0,), action_high=(1.0,))

    def _reset_task(self, rng: np.random.Generator) -> None:
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[0] = rng.uniform(-0.3, 0.3)
        # The marker is a mocap body, so its position is part of MuJoCo's saved state.
        self.data.mocap_pos[0, 0] = rng.uniform(-0.4, 0.4)
        mujoco.mj_forward(self.model, self.data)

    def _step_task(self, action: np.ndarray) -> float:
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        return -abs(self._error())

    def _proprio(self) -> np.ndarray:
        return np.array([self.data.qpos[0], self.data.qvel[0], self._error()])

    def _update_success(self) -> bool:
        return abs(self._error()) < 0.02 and abs(self.data.qvel[0]) < 0.05

    def _error(self) -> float:
        return float(self.data.mocap_pos[0, 0] - self.data.qpos[0])

    def demonstrator(self) -> SliderExpert:
        return SliderExpert(self)


class SliderExpert:
    """PD control on the block's distance to the marker."""

    def __init__(self, env: Slider) -> None:
        self.env = env

    def reset(self) -> None:
        pass

    def __call__(self, observation) -> np.ndarray:
        position, velocity, error = observation["proprio"]
        return np.clip([4.0 * error - 1.0 * velocity], -1.0, 1.0)


def make_slider(**config) -> SimEnv:
    """The entry point's factory: takes the SimEnv keyword arguments, returns a SimEnv."""
    return Slider(**config)


make_slider.sim_tags = ("mujoco", "example")
