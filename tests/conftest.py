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


# A plug-in whose physics blows up: ``test/nan-<k>-<which>`` returns a NaN proprio from step
# ``k`` of an episode on, in every episode whose reset seed is below 10**7 (``all``: in a
# flywheel run with seed=0, cycle 0's rollouts) or only in the odd ones of those (``odd``).
# Probe sets draw their seeds up to 2**31 and evaluation's start at 10**11, so those stay finite.
NAN_SIMS_SOURCE = '''
import numpy as np
from acme_sims.slider import Slider


class NanSlider(Slider):
    def __init__(self, name, **config):
        _, k, self.which = name.rsplit("-", 2)
        self.name, self.from_step, self.poisoned = name, int(k), False
        super().__init__(**config)

    def reset(self, *, seed=None, options=None):
        self.poisoned = seed is not None and seed < 10**7 and (self.which == "all" or seed % 2 == 1)
        return super().reset(seed=seed, options=options)

    def _proprio(self):
        proprio = super()._proprio()
        return proprio * np.nan if self.poisoned and self.step_count >= self.from_step else proprio

    def _get_task_state(self):
        return {"poisoned": np.array(self.poisoned)}

    def _set_task_state(self, arrays):
        self.poisoned = bool(arrays["poisoned"])


def make(name, **config):
    return NanSlider(name, **config)
'''


@pytest.fixture
def nan_sims(install_plugin, example_plugin_src) -> Path:
    """Installs the ``test/nan-*`` family (``NAN_SIMS_SOURCE``); returns its site directory."""
    install_plugin({"test/nan-*": "nan_sims:make"}, modules={"nan_sims": NAN_SIMS_SOURCE}, dist="nan_sims",
                   extra_paths=(example_plugin_src,))
    return [Path(p) for p in sys.path if p.endswith("site-nan_sims")][0]
