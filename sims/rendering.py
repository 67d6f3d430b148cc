"""Headless rendering set-up for MuJoCo-based engines.

MuJoCo picks its OpenGL back end when its rendering module is first imported, so
``MUJOCO_GL`` must be set before that: importing ``sims`` does it (EGL unless the user
chose otherwise). Whether a GL context can really be made is probed once, lazily, so a
machine without Mesa gets one clear message instead of a crash deep inside a rollout.
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("MUJOCO_GL", "egl")


class RenderingUnavailable(RuntimeError):
    """Raised when a camera is requested but no headless GL context can be created."""


@functools.lru_cache(maxsize=1)
def mujoco_rendering_problem() -> str | None:
    """None when MuJoCo can render offscreen here, otherwise why not (and how to fix it)."""
    try:
        import mujoco

        model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='0.1'/></worldbody></mujoco>")
        renderer = mujoco.Renderer(model, 8, 8)
        renderer.close()
        return None
    except Exception as exc:  # any GL failure means the same thing to the user
        backend = os.environ.get("MUJOCO_GL", "")
        return (
            f"MuJoCo cannot render offscreen with MUJOCO_GL={backend!r} ({type(exc).__name__}: {exc}). "
            "Install Mesa (as root: apt-get install -y libegl-mesa0 libosmesa6), or set MUJOCO_GL=osmesa "
            "before starting Python, or run with the camera off."
        )


def require_mujoco_rendering(sim: str) -> None:
    problem = mujoco_rendering_problem()
    if problem:
        raise RenderingUnavailable(f"{sim}: camera requested but {problem}")
