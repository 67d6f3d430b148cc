import numpy as np
import pytest

import sims
from sims.conformance import run_checks


def test_unknown_name_lists_the_known_sims():
    with pytest.raises(sims.UnknownSimError) as err:
        sims.make("mujoco/no-such-task")
    message = str(err.value)
    assert "unknown sim 'mujoco/no-such-task'" in message
    for name in sims.names():
        assert name in message


def test_names_filter_by_tag(isolated_registry):
    @sims.register("test/tagged", tags=("special",))
    def factory(**config):  # pragma: no cover - never made
        raise AssertionError

    assert sims.names(tag="special") == ["test/tagged"]
    assert "test/tagged" in sims.names()


def test_registering_a_taken_name_is_an_error(isolated_registry):
    taken = sims.names()[0]
    with pytest.raises(ValueError, match="already registered"):
        sims.register(taken, lambda **c: None)


def test_bad_config_is_rejected_before_the_factory_runs(isolated_registry):
    calls = []
    sims.register("test/counting", lambda **c: calls.append(c))
    with pytest.raises(ValueError, match="test/counting: fidelity must be in"):
        sims.make("test/counting", fidelity=float("nan"))
    with pytest.raises(ValueError, match=r"test/counting: unknown physical parameter\(s\) \['masss'\]"):
        sims.make("test/counting", params={"masss": 1.0})
    assert calls == []


def test_example_plugin_is_found_through_its_entry_point_and_conforms(install_plugin, example_plugin_src):
    install_plugin({"acme/slider": "acme_sims.slider:make_slider"}, dist="acme_sims",
                   extra_paths=(example_plugin_src,))
    assert "acme/slider" in sims.names()
    assert "entry point 'acme/slider = acme_sims.slider:make_slider'" in sims.origin_of("acme/slider")
    assert "example" in sims.tags_of("acme/slider")
    results = run_checks("acme/slider")
    assert [r for r in results if r.status == "fail"] == []


def test_plugin_factory_that_raises_is_named_with_its_entry_point(install_plugin):
    install_plugin({"bad/raises": "bad_mod:factory"}, modules={"bad_mod": """
        def factory(**config):
            raise RuntimeError("no licence server")
    """})
    with pytest.raises(sims.SimPluginError) as err:
        sims.make("bad/raises")
    assert "bad/raises" in str(err.value)
    assert "bad/raises = bad_mod:factory" in str(err.value)
    assert "no licence server" in str(err.value)


def test_plugin_returning_a_non_env_is_rejected(install_plugin):
    install_plugin({"bad/not-env": "bad_mod2:factory"}, modules={"bad_mod2": """
        import gymnasium
        def factory(**config):
            return gymnasium.make("CartPole-v1")
    """})
    with pytest.raises(sims.SimPluginError, match=r"bad/not-env.*not a sims.SimEnv"):
        sims.make("bad/not-env")


def test_plugin_that_fails_to_import_does_not_break_the_others(install_plugin):
    install_plugin({"bad/import": "does_not_exist:factory"})
    assert "bad/import" in sims.names()
    assert sims.names(tag="mujoco")  # the rest still list, tags and all
    with pytest.raises(sims.SimPluginError, match=r"bad/import.*could not be loaded.*does_not_exist"):
        sims.make("bad/import")


def test_plugin_cannot_shadow_a_builtin(install_plugin):
    taken = sims.names()[0]
    with pytest.warns(UserWarning, match="already registered"):
        install_plugin({taken: "whatever:factory"})
    assert sims.origin_of(taken) == "built-in"


def test_make_sets_the_registered_name(isolated_registry, example_plugin_src):
    from acme_sims.slider import make_slider

    sims.register("test/slider-alias", make_slider)
    env = sims.make("test/slider-alias")
    assert env.name == "test/slider-alias"
    env.reset(seed=0)
    with pytest.raises(ValueError, match="test/slider-alias: action has shape"):
        env.step(np.zeros(3))


def test_plugin_family_resolves_every_name_under_its_prefix(install_plugin, example_plugin_src):
    install_plugin({"acme/rail-*": "acme_family:make"}, modules={"acme_family": """
        from acme_sims.slider import Slider

        def make(name, **config):
            env = Slider(**config)
            env.default_length = float(name.rsplit("-", 1)[1])
            return env
    """})
    env = sims.make("acme/rail-0.5", fidelity=0.9)
    assert env.name == "acme/rail-0.5" and env.default_length == 0.5 and env.fidelity == 0.9
    assert "acme/rail-*" in " ".join(sims.families())
    assert "acme_family:make" in sims.origin_of("acme/rail-7")
    assert "acme/rail-0.5" not in sims.names()  # families resolve names; they do not list them


def test_plugin_family_whose_factory_raises_is_named(install_plugin):
    install_plugin({"broken/*": "broken_family:make"}, modules={"broken_family": """
        def make(name, **config):
            raise ValueError(f"no such thing as {name}")
    """})
    with pytest.raises(sims.SimPluginError, match=r"broken/x.*broken/\* = broken_family:make.*no such thing"):
        sims.make("broken/x")
