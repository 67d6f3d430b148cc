"""Shared fixtures: one torch thread per test process, an isolated sim registry and fake
installed plug-in distributions."""

from __future__ import annotations

import copy
import importlib.metadata
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import sims.registry as registry

EXAMPLE_PLUGIN_SRC = Path(__file__).resolve().parents[1] / "examples" / "acme-sims" / "src"


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """``make test`` runs two pytest workers on 2 cores; two OpenMP threads each would
    oversubscribe the machine and make tiny model steps ~30x slower (measured 260 ms vs 8 ms)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def isolated_registry(monkeypatch):
    """A registry that starts as the real one and is thrown away after the test."""
    registry._ensure_loaded()
    monkeypatch.setattr(registry, "_REGISTRY", copy.copy(registry._REGISTRY))
    registry._REGISTRY.entries = dict(registry._REGISTRY.entries)
    registry._REGISTRY.families = list(registry._REGISTRY.families)
    return registry._REGISTRY


@pytest.fixture
def example_plugin_src(monkeypatch) -> Path:
    """Puts the example plug-in of docs/adding-a-simulator.md on sys.path."""
    monkeypatch.syspath_prepend(str(EXAMPLE_PLUGIN_SRC))
    return EXAMPLE_PLUGIN_SRC


@pytest.fixture
def install_plugin(tmp_path, monkeypatch, isolated_registry):
    """Install a fake distribution declaring ``flywheel.sims`` entry points, as pip would.

    ``install_plugin({"acme/x": "mod:factory"}, modules={"mod": "source"})`` writes the
    modules and a ``.dist-info`` with ``entry_points.txt`` onto sys.path, then makes the
    registry rediscover entry points.
    """

    def install(entry_points: dict[str, str], modules: dict[str, str] | None = None,
                dist: str = "fake_plugin", extra_paths: tuple[Path, ...] = ()) -> None:
        site = tmp_path / f"site-{dist}"
        info = site / f"{dist}-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{lines}\n")
        for module, source in (modules or {}).items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
        for path in (site, *extra_paths):
            monkeypatch.syspath_prepend(str(path))
        for module in modules or {}:
            sys.modules.pop(module, None)
        isolated_registry.loaded = False
        isolated_registry.entries = {k: v for k, v in isolated_registry.entries.items() if v.entry_point is None}
        # Families are rediscovered too: drop those an entry point declares, whether loaded from
        # it or registered by the package itself on import (world_model's ``learned/``).
        declared = {ep.name[:-1] for ep in importlib.metadata.entry_points(group=registry.ENTRY_POINT_GROUP)
                    if ep.name.endswith("*")}
        isolated_registry.families = [f for f in isolated_registry.families
                                      if f.entry_point is None and f.name not in declared]
        registry._ensure_loaded()

    return install
