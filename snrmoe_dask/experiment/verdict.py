"""The card's Gate-2 verdict and, beside it, how robust that verdict is to the test set.

The decision is the card's rule on the point estimate (``core.metrics.decision_for``): PASS when
ΔR² >= threshold, FAIL otherwise. The bootstrap interval of ΔR² never changes it; it gives a
separate robustness verdict: "robust" when the whole interval lies on the decision's side of the
threshold, "not robust" otherwise, with an estimate of how many test spectra would settle it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ..core.gate import rho_score
from ..core.metrics import decision_for

LEVEL = 0.95  # the level of core.bootstrap.r2_intervals' intervals, as evaluation computes them
METHOD = "paired percentile bootstrap over the test spectra, trained models held fixed"


def spectra_needed(delta_r2: float, threshold: float, ci: Sequence[float], n_test: int) -> int | None:
    """About how many test spectra would put the interval on one side of the threshold, at this ΔR².

    The interval's reach from ΔR² towards the threshold, w, shrinks as 1/sqrt(n), so it stops at
    the threshold when n = n_test * (w / |ΔR² - threshold|)^2; rounded up to two significant digits.
    An estimate: it assumes the effect stays the same. None when ΔR² equals the threshold.
    """
    gap = abs(delta_r2 - threshold)
    if gap == 0:
        return None
    reach = delta_r2 - ci[0] if delta_r2 >= threshold else ci[1] - delta_r2
    n = n_test * (max(reach, 0.0) / gap) ** 2
    step = 10 ** max(int(math.floor(math.log10(n))) - 1, 0) if n >= 1 else 1
    return int(math.ceil(n / step) * step)


def robustness(delta_r2: float, threshold: float, ci: Sequence[float], n_test: int, resamples: int,
               level: float = LEVEL) -> dict[str, Any]:
    """The results.json ``robustness`` entry: the interval, what it is, and its verdict.

    ``verdict`` is "robust" when the interval lies wholly on the decision's side of the threshold
    (lower bound >= threshold for PASS, upper bound < threshold for FAIL), else "not robust", with
    ``test_spectra_needed`` (:func:`spectra_needed`); None when robust.
    """
    low, high = float(ci[0]), float(ci[1])
    passed = delta_r2 >= threshold
    robust = low >= threshold if passed else high < threshold
    return {"ci": [low, high], "level": level, "method": METHOD, "resamples": int(resamples), "n_test": int(n_test),
            "verdict": "robust" if robust else "not robust",
            "test_spectra_needed": None if robust else spectra_needed(delta_r2, threshold, (low, high), n_test)}


def verdict(results: dict, resamples: int) -> dict[str, Any]:
    """The entries of results.json that state the verdict, from its metrics and intervals.

    results: the evaluation's dict with ``delta_r2``, ``threshold``, ``models`` and, when the
    bootstrap ran, ``delta_r2_ci``; resamples: its B. Returns ``decision``, ``next_step``,
    ``robustness`` (None without an interval) and, when the deployable gate ran, ``gate`` with ρ
    defined only where the oracle's headroom (ΔR²) has an interval above 0.
    """
    delta, threshold = results["delta_r2"], results["threshold"]
    decision, next_step = decision_for(delta, threshold)
    ci = results.get("delta_r2_ci")
    models = results["models"]
    out: dict[str, Any] = {
        "decision": decision, "next_step": next_step,
        "robustness": None if ci is None else robustness(delta, threshold, ci, models["oracle"]["n_test"], resamples),
    }
    if "gate" in results and "deployed" in models:
        out["gate"] = {**results["gate"], "rho": rho_score(models["deployed"]["r2"], models["global"]["r2"],
                                                           models["oracle"]["r2"], headroom_ci=ci)}
    return out


def ci_position(ci: Sequence[float], threshold: float) -> str:
    """Where the interval lies relative to the threshold, in words."""
    if ci[0] >= threshold:
        return "lies at or above the threshold"
    return "lies below the threshold" if ci[1] < threshold else "includes the threshold"


def describe(rob: dict[str, Any], threshold: float) -> str:
    """The robustness entry as one English clause: '95% CI [+0.0130, +0.0490] includes the threshold:
    not robust with 1,000 test spectra; about 2,700 test spectra would resolve it at this effect size
    (an estimate)'."""
    lo, hi = rob["ci"]
    line = (f"{100 * rob['level']:g}% CI [{lo:+.4f}, {hi:+.4f}] {ci_position(rob['ci'], threshold)}: "
            f"{rob['verdict']} with {rob['n_test']:,} test spectra")
    if rob["verdict"] != "robust":
        needed = rob.get("test_spectra_needed")
        line += (f"; about {needed:,} test spectra would resolve it at this effect size (an estimate)" if needed
                 else "; ΔR² equals the threshold, so no number of test spectra would resolve it")
    return line
