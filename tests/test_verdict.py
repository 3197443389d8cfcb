"""The verdict in the card's terms: the decision is the card's rule on the point estimate of ΔR²;
the bootstrap interval is a separate robustness verdict; ρ needs an oracle headroom."""

from __future__ import annotations

import math

import numpy as np
import pytest

from snrmoe_dask.core.bootstrap import r2_intervals
from snrmoe_dask.core.gate import rho_score
from snrmoe_dask.core.metrics import NEXT_STEP, decision_for
from snrmoe_dask.errors import InputError
from snrmoe_dask.experiment.verdict import METHOD, describe, robustness, spectra_needed, verdict

THRESHOLD = 0.02


def constructed(delta: float, ci: list[float] | None, n_test: int = 1000, gate: bool = False,
                r2_global: float = 0.50) -> dict:
    """The part of an evaluation's results that the verdict reads."""
    results = {"delta_r2": delta, "threshold": THRESHOLD,
               "models": {"global": {"r2": r2_global, "n_test": n_test},
                          "oracle": {"r2": r2_global + delta, "n_test": n_test}}}
    if ci is not None:
        results["delta_r2_ci"] = ci
    if gate:
        results["models"]["deployed"] = {"r2": r2_global + 0.6 * delta, "n_test": n_test}
        results["gate"] = {"accuracy": 0.9, "rho": 123.0}  # a stale ρ that the verdict must replace
    return results


# ----------------------------------------------------------------------------- the card's rule
def test_the_issue_example_is_pass_and_not_robust():
    """ΔR² = +0.031 with 95 % CI [+0.013, +0.049] on 1,000 test spectra: the card says PASS -> MVP-2.0."""
    out = verdict(constructed(0.031, [0.013, 0.049]), resamples=2000)
    assert out["decision"] == "PASS"
    assert out["next_step"] == "Continue to MVP-2.0 (Deployable Gate)"
    rob = out["robustness"]
    assert rob["verdict"] == "not robust"
    assert rob["ci"] == [0.013, 0.049] and rob["level"] == 0.95 and rob["resamples"] == 2000
    assert rob["n_test"] == 1000 and rob["method"] == METHOD
    # reach 0.018 over a gap of 0.011: 1000 * (0.018 / 0.011)^2 = 2,678 -> about 2,700
    assert rob["test_spectra_needed"] == 2700
    text = describe(rob, THRESHOLD)
    assert text == ("95% CI [+0.0130, +0.0490] includes the threshold: not robust with 1,000 test spectra; "
                    "about 2,700 test spectra would resolve it at this effect size (an estimate)")


@pytest.mark.parametrize("delta, ci, decision, robust", [
    (0.040, [0.025, 0.055], "PASS", "robust"),
    (0.030, [0.020, 0.040], "PASS", "robust"),          # lower bound exactly at the threshold
    (0.031, [0.013, 0.049], "PASS", "not robust"),
    (0.020, [0.005, 0.035], "PASS", "not robust"),      # ΔR² exactly at the threshold: PASS
    (0.005, [-0.010, 0.015], "FAIL", "robust"),
    (0.012, [-0.004, 0.028], "FAIL", "not robust"),
    (0.010, [0.000, 0.020], "FAIL", "not robust"),      # upper bound at the threshold is not below it
    (-0.030, [-0.050, -0.010], "FAIL", "robust"),
])
def test_decision_is_the_point_rule_and_the_interval_only_its_robustness(delta, ci, decision, robust):
    out = verdict(constructed(delta, ci), resamples=500)
    assert out["decision"] == decision and out["next_step"] == NEXT_STEP[decision]
    assert out["robustness"]["verdict"] == robust
    needed = out["robustness"]["test_spectra_needed"]
    if robust == "robust":
        assert needed is None
    elif delta == THRESHOLD:
        assert needed is None  # no sample size resolves an effect that sits on the threshold
        assert "no number of test spectra would resolve it" in describe(out["robustness"], THRESHOLD)
    else:
        assert needed >= 1000  # at least as many spectra as the interval came from


def test_the_interval_never_changes_the_decision():
    rng = np.random.default_rng(3)
    for delta, a, b in rng.normal(0.02, 0.03, size=(500, 3)):
        lo, hi = sorted((a, b))
        out = verdict(constructed(float(delta), [float(lo), float(hi)]), resamples=100)
        assert out["decision"] == ("PASS" if delta >= THRESHOLD else "FAIL")
        assert (out["decision"], out["next_step"]) == decision_for(float(delta), THRESHOLD)
        side_ok = lo >= THRESHOLD if delta >= THRESHOLD else hi < THRESHOLD
        assert out["robustness"]["verdict"] == ("robust" if side_ok else "not robust")


def test_without_bootstrap_there_is_no_robustness_block():
    out = verdict(constructed(0.031, None), resamples=0)
    assert out["decision"] == "PASS" and out["robustness"] is None


def test_decision_refuses_a_missing_delta():
    for bad in (None, math.nan, math.inf):
        with pytest.raises(InputError, match="ΔR²"):
            decision_for(bad, THRESHOLD)


# ----------------------------------------------------------------------------- how many test spectra
def test_spectra_needed_is_the_sample_size_where_the_reach_meets_the_threshold():
    for delta, ci, n in ((0.031, (0.013, 0.049), 1000), (0.012, (-0.004, 0.028), 600), (0.05, (0.001, 0.09), 250)):
        needed = spectra_needed(delta, THRESHOLD, ci, n)
        reach = delta - ci[0] if delta >= THRESHOLD else ci[1] - delta
        gap = abs(delta - THRESHOLD)
        exact = n * (reach / gap) ** 2
        assert exact <= needed < exact * 1.1  # rounded up to two significant digits
        assert reach * math.sqrt(n / needed) <= gap * (1 + 1e-12)


def _paired_case(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Test targets and two models whose R² differ by about 0.045 (global ~0.36, oracle ~0.40)."""
    rng = np.random.default_rng(seed)
    y = rng.normal(0.0, 1.0, n)
    shared = rng.normal(0.0, 0.75, n)
    g = y + shared + rng.normal(0.0, 0.28, n)
    o = y + shared * 0.97 + rng.normal(0.0, 0.2, n)
    return y, g, o, np.zeros(n, dtype=np.int64)


def test_the_estimate_follows_the_measured_interval_at_the_larger_size():
    """The estimate assumes the interval shrinks as 1/sqrt(n): measured, at n and at 16 n."""
    reaches = {}
    for n in (400, 6400):
        y, g, o, bins = _paired_case(n, seed=n)
        lo, hi = r2_intervals(y, g, o, bins, ["all"], n_resamples=1000, seed=1)["overall"]["delta"]
        reaches[n] = (hi - lo) / 2
    predicted = reaches[400] * math.sqrt(400 / 6400)
    assert predicted == pytest.approx(reaches[6400], rel=0.25)


def test_robustness_entry_of_a_real_interval():
    y, g, o, bins = _paired_case(1000, seed=5)
    ci = r2_intervals(y, g, o, bins, ["all"], n_resamples=500, seed=2)["overall"]["delta"]
    delta = float(np.mean(ci))
    inside = robustness(delta, ci[0] + 1e-4, ci, 1000, 500)   # threshold inside the interval
    outside = robustness(delta, ci[0] - 1e-4, ci, 1000, 500)  # threshold just below it
    assert inside["verdict"] == "not robust" and outside["verdict"] == "robust"


# ----------------------------------------------------------------------------- ρ needs a headroom
def test_rho_is_undefined_without_an_oracle_headroom():
    # headroom +0.001 whose interval spans 0: the issue's ρ = 4.36 case
    out = verdict(constructed(0.001, [-0.004, 0.006], gate=True), resamples=200)
    assert out["gate"]["rho"] is None and out["gate"]["accuracy"] == 0.9
    # a headroom whose interval lies above 0: ρ is the share of it that the deployed model keeps
    out = verdict(constructed(0.05, [0.03, 0.07], gate=True), resamples=200)
    assert out["gate"]["rho"] == pytest.approx(0.6)
    # without an interval the point estimate must be > 0
    assert verdict(constructed(0.05, None, gate=True), resamples=0)["gate"]["rho"] == pytest.approx(0.6)
    assert verdict(constructed(-0.01, None, gate=True), resamples=0)["gate"]["rho"] is None


def test_rho_score_rules():
    assert rho_score(0.55, 0.5, 0.6) == pytest.approx(0.5)
    assert rho_score(0.55, 0.5, 0.6, headroom_ci=[0.02, 0.18]) == pytest.approx(0.5)
    assert rho_score(0.55, 0.5, 0.6, headroom_ci=[-0.01, 0.2]) is None   # interval includes 0
    assert rho_score(0.55, 0.5, 0.6, headroom_ci=[0.0, 0.2]) is None     # ... touches 0
    assert rho_score(0.45, 0.5, 0.4) is None                             # the oracle is worse
    assert rho_score(0.55, 0.5, 0.6, headroom_ci=[math.nan, 0.2]) is None
