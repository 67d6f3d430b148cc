"""The conformance suite over every registered sim: the same checks `flywheel sims check` runs."""

import pytest

import sims
from sims.conformance import CHECKS, CheckContext, run_checks, run_one

# One sim reached through each family, so the generic adapters are held to the same bar.
FAMILY_EXAMPLES = {"dmc/": "dmc/walker-walk"}
SIMS = sims.names() + [n for prefix, n in FAMILY_EXAMPLES.items() if any(f.startswith(prefix) for f in sims.families())]


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", SIMS)
def test_conformance(name, check):
    result = run_one(CheckContext(name), check)
    assert result.status != "fail", f"{name} failed {check}: {result.detail}"


def test_every_builtin_task_defines_success_and_a_demonstrator():
    for name in sims.names():
        assert sims.make(name).defines_success, f"{name} defines no success"


def test_a_broken_sim_fails_the_checks_it_breaks(isolated_registry, example_plugin_src):
    """The suite must catch a sim whose restore is not exact and whose demonstrator fails."""
    from acme_sims.slider import Slider, SliderExpert

    class Forgetful(Slider):
        def _set_engine_state(self, arrays):  # drops the marker position: replay diverges
            marker = self.data.mocap_pos.copy()
            super()._set_engine_state(arrays)
            self.data.mocap_pos[:] = marker

        def demonstrator(self):
            return Backwards(self)

    class Backwards(SliderExpert):
        def __call__(self, observation):
            return -super().__call__(observation)

    sims.register("test/forgetful", lambda **c: Forgetful(**c))
    results = {r.check: r for r in run_checks("test/forgetful", only=["state_replay", "demonstrator"], episodes=5)}
    assert results["state_replay"].status == "fail"
    assert "diverged" in results["state_replay"].detail or "differs" in results["state_replay"].detail
    assert results["demonstrator"].status == "fail"
    assert "of 5 episodes, below 80%" in results["demonstrator"].detail


def test_unknown_check_names_are_rejected():
    with pytest.raises(ValueError, match="unknown conformance check"):
        run_checks(sims.names()[0], only=["no-such-check"])


@pytest.mark.parametrize("step", [5, 150])  # early, and on the last step of the slider's 150
def test_a_sim_that_turns_nan_fails_once_naming_the_step_and_field(nan_sims, step):
    results = {r.check: r for r in run_checks(f"test/nan-{step}-all", episodes=5)}
    failed = [name for name, r in results.items() if r.status == "fail"]
    assert failed == ["finite"], {n: results[n].detail for n in failed}
    assert f"proprio contains NaN at step {step}" in results["finite"].detail
    # The checks the NaN stopped say so instead of failing for a fault the sim does not have.
    for r in results.values():
        assert r.check == "finite" or not r.nonfinite or "(see the 'finite' check)" in r.detail


def test_a_nan_that_the_finite_check_did_not_see_fails_the_check_that_found_it(nan_sims):
    (result,) = run_checks("test/nan-5-all", only=["state_replay"])
    assert result.status == "fail" and "proprio contains NaN at step 5" in result.detail
