"""What every PyBullet task shares: its own physics client, parameters, exact state, camera.

- Each env owns a ``BulletClient`` in DIRECT mode, never PyBullet's global client, so any
  number of envs coexist in one process (and one Ray actor) without seeing each other.
- Parameters are applied relative to the nominal dynamics captured right after the scene is
  built, never compounding: mass_scale multiplies every link's mass and local inertia,
  friction_scale every link's lateral friction, gravity sets ``setGravity`` (down -z),
  timestep sets the fixed physics step (the number of physics steps per control step stays
  ``frame_skip``), and actuator_gain is kept as ``self.actuator_gain`` for the task to
  multiply its motor forces/torques by (PyBullet has no actuator object to scale).
- State: resetting joint and base states by hand is *not* exact once bodies touch (the
  contact solver warm-starts from impulses cached in persistent contact manifolds; we
  measured a 6e-6 divergence after 100 steps of a Panda scene). PyBullet's own serializer
  (``saveBullet``/``restoreState(fileName=...)``) stores positions, velocities and contact
  manifolds, restores them bit-exactly (also into a second client holding the same bodies)
  and leaves the dynamics parameters alone. Its bytes, padded to a capacity fixed at build,
  are the state. Three traps are handled here: PyBullet caches files by name (so file
  caching is turned off, else every restore would bring back the first state), a restore
  keeps contacts the world had before (so they are cleared first, see ``_restore_world``),
  and a few bytes are history rather than state (canonicalized, see ``_canonical``).
- The camera is PyBullet's TinyRenderer (CPU, no GL) with shadows off.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np


@contextlib.contextmanager
def _quiet_stdio() -> Iterator[None]:
    """Silence C-level stdout and stderr around PyBullet's import and connections.

    PyBullet prints its build time on import and "argv[0]=" on every connection (to either
    stream, depending on what was loaded before), which would litter CLI tables and logs
    with a line per env. Failures still surface as Python exceptions.
    """
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
    except (OSError, ValueError, AttributeError):
        yield  # no real file descriptors to redirect (e.g. a notebook): let it print
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        _flush_c_stdio()  # C stdio buffers when writing to a pipe; flush while it is devnull
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def _flush_c_stdio() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


with _quiet_stdio():
    import pybullet
import pybullet_data  # noqa: E402
from pybullet_utils import bullet_client  # noqa: E402

from sims.env import SimEnv  # noqa: E402
from sims.params import PhysicsParams  # noqa: E402

# Every pair of bodies in contact adds one contact manifold chunk to the serialized world.
_MANIFOLD_BYTES = 1568 + 24


# A .bullet file holds fields that Bullet overwrites at the start of every physics step, so
# they carry no state, yet they differ with history (a never-stepped world says 1/60 s; island
# tags depend on which bodies touched last). Canonicalizing them makes equal states
# byte-equal: (chunk code, struct size, offset, canonical bytes).
_SCRATCH_FIELDS = (
    (b"DWLD", 192, 24, struct.pack("<d", 0.0)),  # btContactSolverInfoDoubleData.m_timeStep
    (b"MBLC", 520, 472, struct.pack("<ii", -1, -1)),  # m_islandTag1, m_companionId
)
# Contact manifolds (btPersistentManifoldDoubleData) are written in the dispatcher's order,
# which depends on the order contacts began; restoring matches them by body, and the solver
# sorts them, so that order is not state. They are sorted by their bodies (the last 16 bytes)
# and their dispatcher index (m_index1a, never read back) renumbered to match.
_MANIFOLD = (b"CONT", 1568, 1516, slice(1552, 1568))
_CHUNK_HEADER = 24  # code, length, old pointer (8 bytes), DNA index, count
_FILE_HEADER = 12  # "BULLETd-v326"


def _canonical(raw: bytes) -> bytes:
    """``raw`` with the history-only parts above canonicalized; other layouts left as is."""
    data = bytearray(raw)
    manifolds: list[int] = []
    at = _FILE_HEADER
    while at + _CHUNK_HEADER <= len(data):
        code = bytes(data[at : at + 4])
        length, count = struct.unpack_from("<i", data, at + 4)[0], struct.unpack_from("<i", data, at + 20)[0]
        body = at + _CHUNK_HEADER
        for field_code, size, offset, value in _SCRATCH_FIELDS:
            if code == field_code and count > 0 and length == size * count:
                for k in range(count):
                    data[body + k * size + offset : body + k * size + offset + len(value)] = value
        if code == _MANIFOLD[0] and count == 1 and length == _MANIFOLD[1]:
            manifolds.append(body)
        if code == b"ENDB" or length < 0:
            break
        at = body + length
    _, size, index_at, bodies = _MANIFOLD
    for b in manifolds:
        struct.pack_into("<i", data, b + index_at, 0)
    blobs = sorted((bytes(data[b + bodies.start : b + bodies.stop]), bytes(data[b : b + size])) for b in manifolds)
    for index, (body, (_, blob)) in enumerate(zip(manifolds, blobs)):
        data[body : body + size] = blob
        struct.pack_into("<i", data, body + index_at, index)
    return bytes(data)


class PybulletSimEnv(SimEnv):
    """A SimEnv over its own PyBullet client. Subclasses fill ``_build_scene``.

    Class attributes a task sets: ``nominal_timestep`` (seconds per physics step),
    ``frame_skip`` (physics steps per control step), ``nominal_gravity``,
    ``camera_view`` (lookat x, y, z, distance, yaw, pitch in degrees, as MuJoCo's free camera)
    and ``max_contacts``, the most body pairs that may touch at once (it sizes the state).
    """

    nominal_timestep: float = 1.0 / 240.0
    nominal_gravity: float = 9.81
    frame_skip: int = 1
    camera_view: tuple[float, float, float, float, float, float] = (0.0, 0.0, 0.0, 2.0, 0.0, -30.0)
    camera_fov: float = 60.0
    max_contacts: int = 64

    # ------------------------------------------------------------------ build

    def _build(self) -> None:
        with _quiet_stdio():
            self.client = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
        self._tmpdir = tempfile.mkdtemp(prefix="sims-pybullet-")
        self._state_file = os.path.join(self._tmpdir, "state.bullet")
        c = self.client
        c.setAdditionalSearchPath(pybullet_data.getDataPath())
        self.actuator_gain = 1.0
        self._build_scene()  # may set nominal_timestep, frame_skip... from a description
        # Deterministic broadphase pair order: without it a restored world may visit contact
        # pairs in another order and round differently.
        # File caching off: PyBullet caches files by name, so restoring a state from our one
        # state file would replay the first state ever written to it (and unique names leak).
        c.setPhysicsEngineParameter(
            fixedTimeStep=self.nominal_timestep, numSubSteps=0, deterministicOverlappingPairs=1,
            enableFileCaching=0,
        )
        c.setGravity(0.0, 0.0, -self.nominal_gravity)
        self._nominal_dynamics = self._capture_dynamics()
        self._initial_world = self._serialize()  # nothing has touched anything yet
        self._state_capacity = len(self._initial_world) + self.max_contacts * _MANIFOLD_BYTES
        self._view_matrix: Any = None

    def _build_scene(self) -> None:
        """Load the task's bodies into ``self.client``."""
        raise NotImplementedError

    @property
    def needs_visuals(self) -> bool:
        """Whether anything will render; loading URDF meshes without visuals is ~5x faster."""
        return self.camera or self.render_mode == "rgb_array"

    def _capture_dynamics(self) -> dict[tuple[int, int], tuple[float, tuple[float, ...], float]]:
        """(body, link) -> (mass, local inertia diagonal, lateral friction), link -1 = base."""
        c = self.client
        nominal = {}
        for i in range(c.getNumBodies()):
            body = c.getBodyUniqueId(i)
            for link in range(-1, c.getNumJoints(body)):
                info = c.getDynamicsInfo(body, link)
                nominal[(body, link)] = (float(info[0]), tuple(float(v) for v in info[2]), float(info[1]))
        return nominal

    def urdf_path(self, name: str, text: str) -> str:
        """Write a generated URDF into this env's scratch folder and return its path."""
        path = os.path.join(self._tmpdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    # ------------------------------------------------------------------ parameters

    def _nominal_params(self) -> PhysicsParams:
        return PhysicsParams(gravity=self.nominal_gravity, timestep=self.nominal_timestep)

    def _apply_params(self, params: PhysicsParams) -> None:
        c = self.client
        for (body, link), (mass, inertia, friction) in self._nominal_dynamics.items():
            changes: dict[str, Any] = {"lateralFriction": friction * params.friction_scale}
            if mass > 0:  # mass 0 means static; scaling it would keep it static anyway
                changes["mass"] = mass * params.mass_scale
                changes["localInertiaDiagonal"] = [v * params.mass_scale for v in inertia]
            c.changeDynamics(body, link, **changes)
        c.setGravity(0.0, 0.0, -params.gravity)
        c.setPhysicsEngineParameter(fixedTimeStep=params.timestep)
        self.actuator_gain = params.actuator_gain

    @property
    def dt(self) -> float:
        """Seconds of simulated time per control step (changes with the timestep parameter)."""
        return self._params.timestep * self.frame_skip

    # ------------------------------------------------------------------ state

    def _serialize(self) -> bytes:
        self.client.saveBullet(self._state_file)
        with open(self._state_file, "rb") as f:
            return _canonical(f.read())

    def _get_engine_state(self) -> dict[str, np.ndarray]:
        raw = self._serialize()
        if len(raw) > self._state_capacity:
            raise RuntimeError(
                f"{self.name}: the PyBullet world serializes to {len(raw)} bytes, more than the "
                f"{self._state_capacity} reserved for its state: more than max_contacts="
                f"{self.max_contacts} pairs of bodies touch"
            )
        buf = np.zeros(self._state_capacity, dtype=np.uint8)
        buf[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        return {"bullet": buf, "bullet_bytes": np.array(len(raw), dtype=np.int64), **self._get_task_state()}

    def _set_engine_state(self, arrays: dict[str, np.ndarray]) -> None:
        size = int(arrays["bullet_bytes"])
        if not 0 < size <= self._state_capacity:
            raise ValueError(f"{self.name}: corrupt state (bullet_bytes={size})")
        self._restore_world(arrays["bullet"][:size].tobytes())
        self._set_task_state(arrays)

    def _restore_world(self, raw: bytes) -> None:
        """Make the world exactly the serialized one, whatever touched what before.

        ``restoreState`` fills the contact manifolds of the restored configuration from the
        file, but leaves every other manifold the world holds alive, cached impulses and all,
        so contacts from the world's own past would leak into the result (and make ``reset``
        depend on the previous episode). Moving every body far from every other one and
        running collision detection first makes the broadphase drop all pairs and manifolds.
        """
        c = self.client
        for i in range(c.getNumBodies()):
            c.resetBasePositionAndOrientation(c.getBodyUniqueId(i), [1000.0 * (i + 1), 0.0, 0.0], [0.0, 0.0, 0.0, 1.0])
        c.performCollisionDetection()
        with open(self._state_file, "wb") as f:
            f.write(raw)
        c.restoreState(fileName=self._state_file)

    def _reset_world(self) -> None:
        """Put the world back as built, so an episode's start never depends on the last one."""
        self._restore_world(self._initial_world)

    def _get_task_state(self) -> dict[str, np.ndarray]:
        """Task bookkeeping outside the physics world (hold counters, targets...)."""
        return {}

    def _set_task_state(self, arrays: dict[str, np.ndarray]) -> None:
        pass

    # ------------------------------------------------------------------ camera

    def _setup_camera(self) -> None:
        *target, distance, yaw, pitch = self.camera_view
        c = self.client
        self._view_matrix = c.computeViewMatrixFromYawPitchRoll(target, distance, yaw, pitch, 0.0, 2)
        self._projection_matrix = c.computeProjectionMatrixFOV(self.camera_fov, 1.0, 0.01, 20.0)

    def _render_camera(self) -> np.ndarray:
        if self._view_matrix is None:
            self._setup_camera()
        size = self.image_size
        _, _, rgba, _, _ = self.client.getCameraImage(
            size,
            size,
            self._view_matrix,
            self._projection_matrix,
            shadow=0,
            renderer=pybullet.ER_TINY_RENDERER,
            flags=pybullet.ER_NO_SEGMENTATION_MASK,
        )
        return np.asarray(rgba, dtype=np.uint8).reshape(size, size, 4)[:, :, :3].copy()

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            try:
                client.disconnect()
            except pybullet.error:
                pass  # already gone
            self.client = None
        tmpdir = getattr(self, "_tmpdir", None)
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
            self._tmpdir = None
        super().close()

    def __del__(self) -> None:
        # The scratch folder is ours; the client disconnects itself when collected.
        tmpdir = getattr(self, "_tmpdir", None)
        if tmpdir is not None:
            try:
                shutil.rmtree(tmpdir, ignore_errors=True)
            except Exception:  # interpreter shutdown: modules may already be gone
                pass
