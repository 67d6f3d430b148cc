"""MuJoCo tasks through gymnasium (Reacher, InvertedPendulum, HalfCheetah)."""

from sims.gym_mujoco import half_cheetah, inverted_pendulum, reacher  # noqa: F401
