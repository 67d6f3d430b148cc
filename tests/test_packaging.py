"""pyproject.toml: the extras a cluster needs agree with the main requirements."""

from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def requirements(names: list[str]) -> dict[str, Requirement]:
    return {r.name: r for r in map(Requirement, names)}


def test_the_cluster_extra_adds_rays_dashboard_at_the_same_ray_version():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    main = requirements(project["dependencies"])["ray"]
    cluster = requirements(project["optional-dependencies"]["cluster"])["ray"]
    # `ray job submit` and `ray start --head` need the dashboard's job server: ray[default].
    assert "default" in cluster.extras and main.extras <= cluster.extras
    assert str(cluster.specifier) == str(main.specifier) != ""
