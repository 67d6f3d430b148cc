"""Twin robots described once, as data, and built natively in MuJoCo and in PyBullet.

A twin pair is only a fair measure of the *engine* gap if both engines simulate the same
robot, so nothing about the robot is left to either engine's defaults or importers:

- ``CartpoleDescription`` and ``ReacherDescription`` hold the robot's numbers (lengths,
  masses, joint limits and damping, actuator gears, timestep, frame skip), roughly those
  of dm-control's cartpole and reacher.
- ``.chain()`` turns a description into a ``Chain``: a serial chain of links, each with its
  joint, explicit mass, centre of mass and principal inertia (never derived from geometry,
  which MuJoCo and PyBullet would do differently), a visual shape and an actuator gear.
- ``to_mjcf`` and ``to_urdf`` write the same ``Chain`` as MJCF and as URDF. PyBullet's
  ``loadMJCF`` is not used: it drops ``<default>``, ``<actuator>`` and ``<option>``.

Both builders turn contacts off (neither robot touches anything) so the comparison is
about articulated-body dynamics and integration, and MuJoCo integrates with semi-implicit
Euler with explicit joint damping (``eulerdamp`` off), the scheme PyBullet's Featherstone
solver uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Shape:
    """A visual capsule (``radius`` > 0, between ``start`` and ``end``) or box (``half_extents``)."""

    start: Vec3 = (0.0, 0.0, 0.0)
    end: Vec3 = (0.0, 0.0, 0.0)
    radius: float = 0.0
    half_extents: Vec3 | None = None
    rgba: tuple[float, float, float, float] = (0.7, 0.5, 0.3, 1.0)


@dataclass(frozen=True)
class Link:
    """One moving link and the joint that attaches it to the previous link (or the world).

    ``pos`` is the joint's origin in the parent's frame; the link frame is not rotated.
    ``inertia`` is the principal inertia about ``com``, axes along the link frame.
    ``joint_range`` None means unlimited. ``gear`` 0 means unactuated; an actuated joint
    gets ``gear * ctrl`` N or N m for a control ``ctrl`` in [-ctrl_limit, ctrl_limit].
    """

    name: str
    joint: str  # "slide" or "hinge"
    axis: Vec3
    pos: Vec3
    mass: float
    com: Vec3
    inertia: Vec3
    shape: Shape
    joint_range: tuple[float, float] | None = None
    damping: float = 0.0
    gear: float = 0.0


@dataclass(frozen=True)
class Marker:
    """A visual-only sphere the task moves (a target), never touching the dynamics."""

    name: str
    radius: float
    rgba: tuple[float, float, float, float] = (0.9, 0.2, 0.2, 1.0)


@dataclass(frozen=True)
class Chain:
    name: str
    links: tuple[Link, ...]
    timestep: float
    frame_skip: int
    gravity: float = 9.81
    ctrl_limit: float = 1.0
    scenery: tuple[Shape, ...] = ()  # static visuals fixed to the world (rails, floor)
    markers: tuple[Marker, ...] = ()
    # Free camera: lookat x, y, z, distance, azimuth (yaw) and elevation (pitch), degrees.
    camera: tuple[float, float, float, float, float, float] = (0.0, 0.0, 0.0, 2.0, 90.0, -20.0)

    @property
    def actuated(self) -> tuple[int, ...]:
        return tuple(i for i, link in enumerate(self.links) if link.gear)


# ---------------------------------------------------------------------- the robots


def _rod_inertia(mass: float, length: float, radius: float, along: int) -> Vec3:
    """Solid cylinder about its centre; ``along`` is the axis index of its length."""
    across = mass * (3 * radius**2 + length**2) / 12.0
    axial = mass * radius**2 / 2.0
    return tuple(axial if i == along else across for i in range(3))  # type: ignore[return-value]


@dataclass(frozen=True)
class CartpoleDescription:
    """dm-control's cartpole: a 1 kg cart on a rail, a 0.1 kg, 1 m pole hinged on it."""

    rail_height: float = 1.0
    slider_range: tuple[float, float] = (-1.8, 1.8)
    slider_damping: float = 5e-4
    cart_mass: float = 1.0
    cart_half_extents: Vec3 = (0.2, 0.15, 0.1)
    pole_mass: float = 0.1
    pole_length: float = 1.0
    pole_radius: float = 0.045
    hinge_damping: float = 2e-6
    gear: float = 10.0  # newtons on the cart at full command
    timestep: float = 0.01
    frame_skip: int = 1
    gravity: float = 9.81

    @property
    def pole_com(self) -> float:
        return self.pole_length / 2.0

    @property
    def pole_inertia(self) -> float:
        """About the pole's centre of mass, perpendicular to the pole."""
        return _rod_inertia(self.pole_mass, self.pole_length, self.pole_radius, 2)[0]

    def chain(self) -> Chain:
        hx, hy, hz = self.cart_half_extents
        m = self.cart_mass
        cart_inertia = (m * (hy**2 + hz**2) / 3.0, m * (hx**2 + hz**2) / 3.0, m * (hx**2 + hy**2) / 3.0)
        lo, hi = self.slider_range
        return Chain(
            name="cartpole",
            links=(
                Link("cart", "slide", (1.0, 0.0, 0.0), (0.0, 0.0, self.rail_height), m, (0.0, 0.0, 0.0),
                     cart_inertia, Shape(half_extents=self.cart_half_extents, rgba=(0.7, 0.5, 0.3, 1.0)),
                     joint_range=self.slider_range, damping=self.slider_damping, gear=self.gear),
                Link("pole", "hinge", (0.0, 1.0, 0.0), (0.0, 0.0, 0.0), self.pole_mass,
                     (0.0, 0.0, self.pole_com),
                     _rod_inertia(self.pole_mass, self.pole_length, self.pole_radius, 2),
                     Shape(end=(0.0, 0.0, self.pole_length), radius=self.pole_radius, rgba=(0.8, 0.6, 0.4, 1.0)),
                     damping=self.hinge_damping),
            ),
            timestep=self.timestep,
            frame_skip=self.frame_skip,
            gravity=self.gravity,
            scenery=(
                Shape(start=(lo - hx, 0.0, self.rail_height), end=(hi + hx, 0.0, self.rail_height), radius=0.02,
                      rgba=(0.3, 0.3, 0.35, 1.0)),
                Shape((0.0, 0.0, -0.05), (0.0, 0.0, -0.05), half_extents=(4.0, 1.0, 0.05), rgba=(0.2, 0.3, 0.4, 1.0)),
            ),
            camera=(0.0, 0.0, 1.0, 4.5, 90.0, -10.0),
        )


@dataclass(frozen=True)
class ReacherDescription:
    """A two-link planar arm in the horizontal plane, sized like dm-control's reacher."""

    upper_length: float = 0.12
    fore_length: float = 0.12
    link_radius: float = 0.01
    upper_mass: float = 0.04
    fore_mass: float = 0.04
    height: float = 0.01
    shoulder_damping: float = 0.01
    elbow_damping: float = 0.01
    elbow_range: tuple[float, float] = (-math.radians(160.0), math.radians(160.0))
    gear: tuple[float, float] = (0.05, 0.05)  # N m at full command
    target_radius: float = 0.02
    # Both engines integrate joint damping explicitly (so they agree); at 0.01 s that is
    # unstable for these light links once the actions switch: 35 of 40 episodes of
    # chunk-wise random actions spun up past 20 rad/s (median peak 94). At 0.005 s none do.
    # The control period stays 0.02 s.
    timestep: float = 0.005
    frame_skip: int = 4
    gravity: float = 9.81

    @property
    def reach(self) -> float:
        return self.upper_length + self.fore_length

    def chain(self) -> Chain:
        r = self.link_radius
        return Chain(
            name="reacher",
            links=(
                Link("upper_arm", "hinge", (0.0, 0.0, 1.0), (0.0, 0.0, self.height), self.upper_mass,
                     (self.upper_length / 2, 0.0, 0.0),
                     _rod_inertia(self.upper_mass, self.upper_length, r, 0),
                     Shape(end=(self.upper_length, 0.0, 0.0), radius=r, rgba=(0.7, 0.5, 0.3, 1.0)),
                     damping=self.shoulder_damping, gear=self.gear[0]),
                Link("forearm", "hinge", (0.0, 0.0, 1.0), (self.upper_length, 0.0, 0.0), self.fore_mass,
                     (self.fore_length / 2, 0.0, 0.0),
                     _rod_inertia(self.fore_mass, self.fore_length, r, 0),
                     Shape(end=(self.fore_length, 0.0, 0.0), radius=r, rgba=(0.8, 0.6, 0.4, 1.0)),
                     joint_range=self.elbow_range, damping=self.elbow_damping, gear=self.gear[1]),
            ),
            timestep=self.timestep,
            frame_skip=self.frame_skip,
            gravity=self.gravity,
            scenery=(Shape((0.0, 0.0, -0.005), (0.0, 0.0, -0.005), half_extents=(0.3, 0.3, 0.005),
                           rgba=(0.2, 0.3, 0.4, 1.0)),),
            markers=(Marker("target", self.target_radius),),
            camera=(0.0, 0.0, 0.0, 0.75, 90.0, -89.0),
        )


# ---------------------------------------------------------------------- MJCF


def _f(values) -> str:
    return " ".join(repr(float(v)) for v in values)


def _mjcf_shape(shape: Shape) -> str:
    common = f'rgba="{_f(shape.rgba)}" contype="0" conaffinity="0"'
    if shape.half_extents is not None:
        return f'<geom type="box" pos="{_f(shape.start)}" size="{_f(shape.half_extents)}" {common}/>'
    return f'<geom type="capsule" fromto="{_f(shape.start + shape.end)}" size="{shape.radius!r}" {common}/>'


def to_mjcf(chain: Chain) -> str:
    """The chain as an MJCF document (joints, explicit inertials, motors, options)."""
    body = ""
    for link in reversed(chain.links):
        limit = ""
        if link.joint_range is not None:
            limit = f'limited="true" range="{_f(link.joint_range)}"'
        body = (
            f'<body name={quoteattr(link.name)} pos="{_f(link.pos)}">'
            f'<joint name={quoteattr(link.name)} type="{link.joint}" axis="{_f(link.axis)}" '
            f'damping="{link.damping!r}" {limit}/>'
            f'<inertial pos="{_f(link.com)}" mass="{link.mass!r}" diaginertia="{_f(link.inertia)}"/>'
            f"{_mjcf_shape(link.shape)}{body}</body>"
        )
    markers = "".join(
        f'<body name={quoteattr(m.name)} mocap="true"><geom type="sphere" size="{m.radius!r}" '
        f'rgba="{_f(m.rgba)}" contype="0" conaffinity="0"/></body>'
        for m in chain.markers
    )
    scenery = "".join(_mjcf_shape(s) for s in chain.scenery)
    motors = "".join(
        f'<motor joint={quoteattr(chain.links[i].name)} gear="{chain.links[i].gear!r}" ctrllimited="true" '
        f'ctrlrange="{-chain.ctrl_limit!r} {chain.ctrl_limit!r}"/>'
        for i in chain.actuated
    )
    return (
        f'<mujoco model={quoteattr(chain.name)}>'
        f'<compiler angle="radian" inertiafromgeom="false"/>'
        f'<option timestep="{chain.timestep!r}" gravity="0 0 {-chain.gravity!r}" integrator="Euler">'
        f'<flag contact="disable" eulerdamp="disable"/></option>'
        f'<visual><global offwidth="256" offheight="256"/></visual>'
        f'<worldbody><light pos="0 0 6" dir="0 0 -1"/>{scenery}{body}{markers}</worldbody>'
        f"<actuator>{motors}</actuator></mujoco>"
    )


# ---------------------------------------------------------------------- URDF


def _urdf_shape(shape: Shape) -> str:
    name = "rgba_" + "_".join(f"{v:g}" for v in shape.rgba)
    color = f'<material name="{name}"><color rgba="{_f(shape.rgba)}"/></material>'
    if shape.half_extents is not None:
        size = _f(2 * h for h in shape.half_extents)
        return f'<visual><origin xyz="{_f(shape.start)}"/><geometry><box size="{size}"/></geometry>{color}</visual>'
    # URDF cylinders lie along z about their centre: rotate z onto start->end.
    d = [e - s for s, e in zip(shape.start, shape.end)]
    length = math.sqrt(sum(v * v for v in d))
    centre = [(s + e) / 2 for s, e in zip(shape.start, shape.end)]
    pitch = math.atan2(math.hypot(d[0], d[1]), d[2])
    yaw = math.atan2(d[1], d[0])
    return (
        f'<visual><origin xyz="{_f(centre)}" rpy="0 {pitch!r} {yaw!r}"/>'
        f'<geometry><cylinder radius="{shape.radius!r}" length="{length!r}"/></geometry>{color}</visual>'
        # Round ends as in MuJoCo's capsule, for the camera only.
        + "".join(
            f'<visual><origin xyz="{_f(p)}"/><geometry><sphere radius="{shape.radius!r}"/></geometry>{color}</visual>'
            for p in (shape.start, shape.end)
        )
    )


def to_urdf(chain: Chain) -> str:
    """The chain as a URDF document: a fixed world link, then one joint and link per ``Link``.

    Load it with ``URDF_USE_INERTIA_FROM_FILE`` or PyBullet recomputes inertias from shapes.
    Links have no collision shapes: contacts are off, as in the MJCF.
    """
    parts = [f'<robot name={quoteattr(chain.name)}>',
             '<link name="world_base"><inertial><mass value="0"/><inertia ixx="0" ixy="0" ixz="0" iyy="0" '
             'iyz="0" izz="0"/></inertial>' + "".join(_urdf_shape(s) for s in chain.scenery) + "</link>"]
    parent = "world_base"
    for link in chain.links:
        kind = "prismatic" if link.joint == "slide" else ("revolute" if link.joint_range else "continuous")
        lo, hi = link.joint_range or (0.0, 0.0)
        ixx, iyy, izz = link.inertia
        parts.append(
            f'<joint name={quoteattr(link.name)} type="{kind}"><parent link="{parent}"/>'
            f'<child link={quoteattr(link.name)}/><origin xyz="{_f(link.pos)}"/><axis xyz="{_f(link.axis)}"/>'
            f'<limit lower="{lo!r}" upper="{hi!r}" effort="1e6" velocity="1e3"/>'
            f'<dynamics damping="{link.damping!r}" friction="0"/></joint>'
            f'<link name={quoteattr(link.name)}><inertial><origin xyz="{_f(link.com)}"/>'
            f'<mass value="{link.mass!r}"/><inertia ixx="{ixx!r}" ixy="0" ixz="0" iyy="{iyy!r}" iyz="0" '
            f'izz="{izz!r}"/></inertial>{_urdf_shape(link.shape)}</link>'
        )
        parent = link.name
    parts.append("</robot>")
    return "".join(parts)


__all__ = [
    "CartpoleDescription",
    "Chain",
    "Link",
    "Marker",
    "ReacherDescription",
    "Shape",
    "to_mjcf",
    "to_urdf",
]
