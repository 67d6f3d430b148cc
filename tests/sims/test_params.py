import math

import pytest

from sims.params import OBS_NOISE_AT_ZERO_FIDELITY, PERTURBATION_RANGE, PhysicsParams, perturb, validate_fidelity

NOMINAL = PhysicsParams(gravity=9.81, timestep=0.002)


def test_fidelity_one_is_bit_identical_to_nominal():
    assert perturb(NOMINAL, 1.0, run_seed=7) == NOMINAL


def test_perturbation_grows_as_fidelity_falls_and_keeps_its_direction():
    deviations = []
    for fidelity in (0.8, 0.5, 0.2, 0.0):
        p = perturb(NOMINAL, fidelity, run_seed=3)
        rel = {f: getattr(p, f) / getattr(NOMINAL, f) - 1 for f in PERTURBATION_RANGE}
        deviations.append(rel)
        for field, value in rel.items():
            bound = PERTURBATION_RANGE[field] * (1 - fidelity)
            assert 0.5 * bound - 1e-12 <= abs(value) <= bound + 1e-12
        assert p.obs_noise == pytest.approx(OBS_NOISE_AT_ZERO_FIDELITY * (1 - fidelity))
    for field in PERTURBATION_RANGE:
        signs = {math.copysign(1, d[field]) for d in deviations}
        assert len(signs) == 1, f"{field} changed direction as fidelity fell"
        magnitudes = [abs(d[field]) for d in deviations]
        assert magnitudes == sorted(magnitudes)


def test_perturbation_is_reproducible_from_the_run_seed():
    assert perturb(NOMINAL, 0.5, run_seed=11) == perturb(NOMINAL, 0.5, run_seed=11)
    assert perturb(NOMINAL, 0.5, run_seed=11) != perturb(NOMINAL, 0.5, run_seed=12)


@pytest.mark.parametrize("bad", [1.01, -0.01, float("nan"), float("inf")])
def test_fidelity_out_of_range_is_rejected(bad):
    with pytest.raises(ValueError, match="fidelity must be in"):
        validate_fidelity(bad)


@pytest.mark.parametrize("bad", ["0.5", None, True])
def test_fidelity_of_the_wrong_type_is_rejected(bad):
    with pytest.raises(TypeError, match="fidelity"):
        validate_fidelity(bad)


def test_unknown_fields_are_named():
    with pytest.raises(ValueError, match=r"unknown physical parameter\(s\) \['mass'\]"):
        PhysicsParams.from_mapping({"mass": 2.0, "gravity": 3.0})


@pytest.mark.parametrize("field,value", [("mass_scale", 0.0), ("timestep", -1e-3), ("gravity", float("nan")), ("obs_noise", -0.1)])
def test_impossible_values_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        PhysicsParams(**{field: value})


def test_partial_mapping_overrides_only_its_fields():
    p = PhysicsParams.from_mapping({"mass_scale": 1.5}, base=NOMINAL)
    assert p == PhysicsParams(mass_scale=1.5, gravity=9.81, timestep=0.002)
