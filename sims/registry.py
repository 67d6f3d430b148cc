"""The simulator registry: ``register``, ``make``, ``names`` and the ``flywheel.sims`` plug-ins.

Built-in tasks register with the ``@register`` decorator when ``sims.builtin`` is imported.
Third-party packages need no import of theirs to be run: they declare an entry point

    [project.entry-points."flywheel.sims"]
    "acme/pusher" = "acme_sims.pusher:make_env"

whose name is the sim name and whose object is a factory taking the same keyword arguments
as ``SimEnv`` and returning a ``SimEnv``. A factory may carry ``sim_tags`` (a tuple of tags).
Entry points are loaded only when their sim is made (or its tags are asked for), so one
broken plug-in never stops the others from listing or running.

Families serve open-ended name spaces: ``register_family("dmc/", factory)`` makes every
``dmc/<domain>-<task>`` resolvable without listing them all. A plug-in declares a family
with an entry point whose name ends in ``*`` (``"acme/*" = "acme_sims:make_any"``); its
factory is called as ``factory(name, **config)``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sims.env import SimEnv
from sims.params import PhysicsParams, coerce_params, validate_fidelity

ENTRY_POINT_GROUP = "flywheel.sims"
Factory = Callable[..., SimEnv]


class UnknownSimError(KeyError):
    """A sim name that is neither registered nor resolvable by a family."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class SimPluginError(RuntimeError):
    """A plug-in that failed to load, raised in its factory, or returned a non-conforming env."""


@dataclass
class _Entry:
    """A registered name, or (``family``) every name starting with a prefix."""

    name: str  # for a family: the prefix
    factory: Factory | None  # a family's is called as factory(name, **config)
    tags: tuple[str, ...]
    origin: str  # "built-in", or the entry point as declared, for error messages
    entry_point: importlib.metadata.EntryPoint | None = None
    family: bool = False
    description: str = ""

    def load(self) -> Factory:
        if self.factory is None:
            assert self.entry_point is not None
            try:
                self.factory = self.entry_point.load()
            except Exception as exc:
                raise SimPluginError(
                    f"plug-in sim {self.name!r} could not be loaded from {self.origin}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if not callable(self.factory):
                bad, self.factory = self.factory, None
                raise SimPluginError(f"plug-in sim {self.name!r} ({self.origin}) is not callable: {bad!r}")
            self.tags = tuple(dict.fromkeys(self.tags + tuple(getattr(self.factory, "sim_tags", ()))))
        return self.factory


@dataclass
class _Registry:
    entries: dict[str, _Entry] = field(default_factory=dict)
    families: list[_Entry] = field(default_factory=list)
    loaded: bool = False


_REGISTRY = _Registry()


def register(name: str, factory: Factory | None = None, *, tags: Iterable[str] = ()):
    """Register ``factory`` under ``name``; without a factory, return a decorator."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"sim name must be a non-empty string without surrounding spaces, got {name!r}")
    tags = tuple(tags)

    def add(f: Factory) -> Factory:
        if not callable(f):
            raise TypeError(f"factory for sim {name!r} is not callable: {f!r}")
        existing = _REGISTRY.entries.get(name)
        if existing is not None and existing.factory is not f:
            raise ValueError(f"sim {name!r} is already registered ({existing.origin})")
        _REGISTRY.entries[name] = _Entry(name, f, tags, "built-in")
        return f

    return add if factory is None else add(factory)


def register_family(prefix: str, factory: Callable[..., SimEnv], *, tags: Iterable[str] = (), description: str = "") -> None:
    """Resolve any unregistered name starting with ``prefix`` through ``factory(name, **config)``."""
    _REGISTRY.families = [f for f in _REGISTRY.families if f.name != prefix]
    _REGISTRY.families.append(
        _Entry(prefix, factory, tuple(tags), "built-in", family=True, description=description or f"{prefix}*")
    )


def names(tag: str | None = None) -> list[str]:
    """Registered sim names (families excluded), optionally only those carrying ``tag``."""
    _ensure_loaded()
    if tag is None:
        return sorted(_REGISTRY.entries)
    return sorted(n for n in _REGISTRY.entries if tag in tags_of(n))


def tags_of(name: str) -> tuple[str, ...]:
    entry = _lookup(name)
    if entry.factory is None:
        try:
            entry.load()
        except SimPluginError:
            pass  # reported when someone makes it
    return entry.tags


def origin_of(name: str) -> str:
    entry = _lookup(name)
    return f"family {entry.name}* ({entry.origin})" if entry.family else entry.origin


def families() -> list[str]:
    _ensure_loaded()
    return [f.description for f in _REGISTRY.families]


def make(name: str, **config: Any) -> SimEnv:
    """Build the sim ``name`` with ``config`` (the ``SimEnv`` keyword arguments).

    Checks the name, the fidelity and the parameter record before any engine is touched.
    """
    entry = _lookup(name)
    check_config(name, config)
    factory = entry.load()
    args = (name,) if entry.family else ()
    if entry.entry_point is None:
        env = factory(*args, **config)
    else:
        try:
            env = factory(*args, **config)
        except Exception as exc:
            raise SimPluginError(
                f"plug-in sim {name!r} ({entry.origin}) raised while being made: {type(exc).__name__}: {exc}"
            ) from exc
    if not isinstance(env, SimEnv):
        raise SimPluginError(
            f"sim {name!r} ({entry.origin}) returned {type(env).__name__}, not a sims.SimEnv: "
            "subclass sims.SimEnv (see docs/adding-a-simulator.md)"
        )
    env.name = name
    return env


def check_config(name: str, config: dict[str, Any]) -> None:
    """Raise if ``name`` is unknown or ``config`` holds a bad fidelity or parameter record.

    Cheap: no engine is touched. An empty ``params`` mapping is removed (it means none).
    """
    _lookup(name)
    try:
        if "fidelity" in config:
            validate_fidelity(config["fidelity"])
        if config.get("params"):
            coerce_params(config["params"], base=PhysicsParams())
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name}: {exc}") from exc
    if "params" in config and not config["params"]:
        config.pop("params")  # an empty override mapping (e.g. from a config file) means none


def _lookup(name: str) -> _Entry:
    _ensure_loaded()
    if not isinstance(name, str):
        raise TypeError(f"sim name must be a string, got {name!r}")
    entry = _REGISTRY.entries.get(name)
    if entry is not None:
        return entry
    for family in _REGISTRY.families:
        if name.startswith(family.name):
            return family
    known = ", ".join(sorted(_REGISTRY.entries)) or "(none)"
    fams = "; ".join(f.description for f in _REGISTRY.families)
    raise UnknownSimError(f"unknown sim {name!r}. Known sims: {known}" + (f". Also: {fams}" if fams else ""))


def _ensure_loaded() -> None:
    if _REGISTRY.loaded:
        return
    _REGISTRY.loaded = True
    importlib.import_module("sims.builtin")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        origin = f"entry point '{ep.name} = {ep.value}' in group {ENTRY_POINT_GROUP!r}"
        if ep.dist is not None:
            origin += f" of package {ep.dist.name!r}"
        if ep.name.endswith("*"):
            prefix = ep.name[:-1]
            if any(f.name == prefix for f in _REGISTRY.families):
                warnings.warn(f"ignoring {origin}: family {ep.name!r} is already registered")
                continue
            _REGISTRY.families.append(
                _Entry(prefix, None, ("plugin",), origin, ep, family=True, description=f"{ep.name} ({origin})")
            )
            continue
        if ep.name in _REGISTRY.entries:
            warnings.warn(f"ignoring {origin}: sim {ep.name!r} is already registered ({_REGISTRY.entries[ep.name].origin})")
            continue
        _REGISTRY.entries[ep.name] = _Entry(ep.name, None, ("plugin",), origin, ep)
