"""Extrapolating a learning curve: the fit R²(N) = R²∞ − a·N^(−b) and where ΔR²(N) crosses a threshold.

Every number here is an *extrapolation* beyond the largest training set measured, and is labelled so.

The fit is scipy's nonlinear least squares in N / N_max (so ``a`` is the gap R²∞ − R²(N_max)),
unweighted, with a free sign of ``a`` (a curve may fall as well as rise) and 0 < b ≤ 4. Its
uncertainty comes from the fit's covariance, scaled by the scatter of the points about the curve,
with Student-t quantiles for n − 3 degrees of freedom: it measures how well the points pin the
curve's shape, not the test-set sampling error that every point of one curve shares (that is the
interval of each point). Fewer than :data:`MIN_POINTS` points are refused, and a fit is
"undetermined" when the points do not pin the limit: ``b`` on its lower bound, the limit on its
upper bound, or an interval of the limit wider than :data:`MAX_WIDTH` (flat or noisy curves).

The crossing N* of a threshold by a fitted ΔR² curve solves ΔR²∞ − a·(N*/N_max)^(−b) = threshold;
its interval is the 2.5 and 97.5 percentiles of N* over parameter draws from the fit's multivariate
t distribution (a draw whose curve never crosses gives N* = inf, so an interval may be open-ended).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from ..errors import InputError

MIN_POINTS = 4
FORM = "R2(N) = R2_inf - a * (N / N_max)^(-b)"
LEVEL = 0.95
B_BOUNDS = (1e-3, 4.0)
MAX_WIDTH = 1.0  # widest interval of the limit that still counts as determined (R² units)
_DRAWS = 4000


def _curve(x: np.ndarray, inf: float, a: float, b: float) -> np.ndarray:
    return inf - a * x ** (-b)


def _jacobian(x: np.ndarray, inf: float, a: float, b: float) -> np.ndarray:
    """(P, 3) derivatives of :func:`_curve` by inf, a and b: exact, where scipy's finite differences
    would call the curve four times a step."""
    power = x ** (-b)
    return np.stack([np.ones_like(x), -power, a * power * np.log(x)], axis=1)


def _check(n: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    n, y = np.asarray(n, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if n.ndim != 1 or n.shape != y.shape:
        raise InputError(f"extrapolation: expected N and R² of the same length, got shapes {n.shape} and {y.shape}")
    if not (np.isfinite(n).all() and np.isfinite(y).all()):
        raise InputError("extrapolation: N and R² must be finite numbers")
    if len(n) and (n.min() <= 0 or np.any(np.diff(n) <= 0)):
        raise InputError(f"extrapolation: N must be positive and increasing, got {n.tolist()}")
    return n, y


def fit_curve(n: Any, y: Any, upper: float = math.inf) -> dict[str, Any]:
    """Fit y(N) = inf − a·(N/N_max)^(−b) to the points (N (P,), y (P,)), N increasing.

    upper: the largest value the limit may take (1 for R²). Returns a JSON-able dict with
    ``status`` "fitted" (then ``inf``, its ``inf_ci``, ``a``, ``b``, ``n_max``, ``points``, ``cov``
    (3, 3), ``dof`` and ``value_at_n_max``), "undetermined" (the same values, which do not pin the
    limit), "refused" (fewer than MIN_POINTS points) or "failed" (no convergence); all but
    "fitted" with a ``reason``.
    """
    import scipy.optimize  # here: scipy.stats and scipy.optimize take 0.7 s to import, which a command's
    import scipy.stats  # graph building would wait on (a curve is fitted after its pass)

    n, y = _check(n, y)
    out: dict[str, Any] = {"extrapolation": True, "form": FORM, "points": len(n)}
    if len(n) < MIN_POINTS:
        return {**out, "status": "refused",
                "reason": f"{len(n)} point(s): an extrapolation needs at least {MIN_POINTS}"}
    n_max = float(n[-1])
    x = n / n_max
    # start from b = 1/2 through the first and last points
    a0 = (y[-1] - y[0]) / (x[0] ** -0.5 - 1.0)
    p0 = [min(y[-1] + a0, upper - 1e-9), a0, 0.5]
    bounds = ([-np.inf, -np.inf, B_BOUNDS[0]], [upper, np.inf, B_BOUNDS[1]])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.optimize.OptimizeWarning)
            popt, pcov = scipy.optimize.curve_fit(_curve, x, y, p0=p0, bounds=bounds, jac=_jacobian, max_nfev=20000)
    except (RuntimeError, ValueError) as exc:
        return {**out, "status": "failed", "reason": str(exc).splitlines()[0]}
    dof = len(n) - 3
    inf, a, b = (float(v) for v in popt)
    se = math.sqrt(pcov[0, 0]) if np.isfinite(pcov).all() and pcov[0, 0] >= 0 else math.nan
    half = float(scipy.stats.t.ppf(0.5 + LEVEL / 2, dof)) * se
    out.update(status="fitted", inf=inf, inf_ci=[inf - half, inf + half] if math.isfinite(half) else None, a=a, b=b,
               n_max=n_max, dof=dof, cov=pcov.tolist() if np.isfinite(pcov).all() else None,
               value_at_n_max=float(_curve(np.float64(1.0), inf, a, b)))
    # b on its lower bound: the points do not bend towards a limit (b on its upper bound is a curve
    # that has levelled off within the data, whose limit is pinned)
    on_bound = b <= B_BOUNDS[0] * 1.01 or inf >= upper - 1e-6
    if on_bound or not 2 * half <= MAX_WIDTH:
        why = "the fit runs into the lower bound of b or the upper bound of the limit" if on_bound else (
            f"the {LEVEL:.0%} interval of the limit is wider than {MAX_WIDTH:g}")
        out.update(status="undetermined", reason=f"the points do not pin the limit: {why}")
    return out


def _crossings(inf: np.ndarray, a: np.ndarray, b: np.ndarray, threshold: float, n_max: float) -> np.ndarray:
    """N at which inf − a·(N/N_max)^(−b) equals ``threshold`` for each parameter set; inf where it never does."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = a / (inf - threshold)
        n = n_max * ratio ** (1.0 / b)
    return np.where((ratio > 0) & (b > 0) & np.isfinite(n), n, np.inf)


def threshold_crossing(fit: dict[str, Any], threshold: float, seed: int = 0) -> dict[str, Any]:
    """Where a fitted ΔR² curve (from :func:`fit_curve`) crosses ``threshold``, an extrapolation.

    ``status``: "crosses" (rises through the threshold beyond the data, at ``n``), "falls below"
    (falls through it beyond the data, at ``n``), "above" (above it at the largest N and for every
    larger N), "does not cross" (below it now and its limit is below too), or "refused"/"failed"
    as the fit. ``n_ci``: the 95 % interval of ``n`` from the fit's parameter uncertainty (upper
    end None when some draws never cross); None without a covariance.
    """
    import scipy.stats  # see fit_curve

    out: dict[str, Any] = {"extrapolation": True, "threshold": threshold}
    if fit["status"] != "fitted":
        return {**out, "status": fit["status"], "reason": fit.get("reason")}
    inf, a, b, n_max = fit["inf"], fit["a"], fit["b"], fit["n_max"]
    now = fit["value_at_n_max"]
    n_star = float(_crossings(np.array([inf]), np.array([a]), np.array([b]), threshold, n_max)[0])
    beyond = math.isfinite(n_star) and n_star > n_max
    if beyond:
        status = "crosses" if now < threshold else "falls below"
    else:
        status = "above" if now >= threshold else "does not cross"
    out.update(status=status, n=n_star if beyond else None, n_ci=None)
    if beyond and fit.get("cov") is not None:
        draws = scipy.stats.multivariate_t(loc=[inf, a, b], shape=fit["cov"], df=fit["dof"],
                                           allow_singular=True).rvs(_DRAWS, random_state=seed)
        found = _crossings(draws[:, 0], draws[:, 1], draws[:, 2], threshold, n_max)
        lo, hi = np.quantile(found, [0.5 - LEVEL / 2, 0.5 + LEVEL / 2], method="inverted_cdf")
        out["n_ci"] = [float(lo) if math.isfinite(lo) else None, float(hi) if math.isfinite(hi) else None]
    return out
