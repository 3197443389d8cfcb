"""Paired bootstrap intervals of R² and ΔR²: coverage on a simulation with a known answer, pairing,
per-bin resampling, determinism, small bins, input errors, and the robustness verdict beside the
card's decision rule."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import r2_score

from snrmoe_dask.core.bootstrap import paired_r2_interval, r2_intervals
from snrmoe_dask.core.metrics import decision_for, regression_metrics
from snrmoe_dask.experiment.verdict import robustness
from snrmoe_dask.errors import ConfigError, InputError

# Simulation with a known answer: y ~ N(0, 1), each model's error = shared + own noise, so
# population R² = 1 - (SHARED² + own²) and ΔR² = S_G² - S_O² (the shared part cancels).
SHARED, S_G, S_O = 0.5, 0.3, 0.2
TRUE_DELTA = S_G ** 2 - S_O ** 2
REPLICATES, N, B = 200, 400, 400


def simulate(rng: np.random.Generator, n: int = N) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y, global prediction, oracle prediction: (n,) each, with strongly correlated errors."""
    y = rng.standard_normal(n)
    shared = SHARED * rng.standard_normal(n)
    return y, y + shared + S_G * rng.standard_normal(n), y + shared + S_O * rng.standard_normal(n)


def unpaired_delta_interval(y, g, o, n_resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """The wrong bootstrap: each model scored on its own resample, so shared errors do not cancel."""
    n = len(y)
    i_g, i_o = rng.integers(0, n, (2, n_resamples, n))
    r2_g = r2_score(y[i_g].T, g[i_g].T, multioutput="raw_values")
    r2_o = r2_score(y[i_o].T, o[i_o].T, multioutput="raw_values")
    lo, hi = np.quantile(r2_o - r2_g, [0.025, 0.975])
    return float(lo), float(hi)


@pytest.fixture(scope="module")
def coverage_runs() -> dict[str, np.ndarray]:
    """(REPLICATES, 2) ΔR² intervals per method over the same simulated test sets."""
    rng = np.random.default_rng(12345)
    out = {"paired": [], "paired_68": [], "unpaired": []}
    for _ in range(REPLICATES):
        y, g, o = simulate(rng)
        out["paired"].append(paired_r2_interval(y, g, o, B, rng)["delta"])
        out["paired_68"].append(paired_r2_interval(y, g, o, B, rng, level=0.68)["delta"])
        out["unpaired"].append(unpaired_delta_interval(y, g, o, B, rng))
    return {k: np.array(v) for k, v in out.items()}


def coverage(intervals: np.ndarray, truth: float) -> float:
    return float(np.mean((intervals[:, 0] <= truth) & (truth <= intervals[:, 1])))


# ----------------------------------------------------------------------------- coverage
def test_paired_delta_interval_covers_the_true_value_about_95_percent(coverage_runs):
    # 200 replicates: binomial sd of a 95 % coverage is 1.5 points; the band is ~ -3 / +2.6 sd.
    assert 0.90 <= coverage(coverage_runs["paired"], TRUE_DELTA) <= 0.99


def test_confidence_level_is_honoured(coverage_runs):
    # A 68 % interval must cover clearly less often: catches a level that is ignored or mis-mapped.
    assert 0.55 <= coverage(coverage_runs["paired_68"], TRUE_DELTA) <= 0.80


def test_unpaired_interval_is_wider_and_overcovers(coverage_runs):
    paired = np.diff(coverage_runs["paired"], axis=1)
    unpaired = np.diff(coverage_runs["unpaired"], axis=1)
    # The shared error dominates each model's error, so pairing must shrink the interval a lot.
    assert np.median(unpaired / paired) > 1.5
    assert coverage(coverage_runs["unpaired"], TRUE_DELTA) > 0.99


def test_r2_intervals_cover_each_models_population_r2():
    rng = np.random.default_rng(7)
    hits = {"global": 0, "oracle": 0}
    truth = {"global": 1 - SHARED ** 2 - S_G ** 2, "oracle": 1 - SHARED ** 2 - S_O ** 2}
    for _ in range(100):
        ci = paired_r2_interval(*simulate(rng), B, rng)
        for m in hits:
            hits[m] += ci[m][0] <= truth[m] <= ci[m][1]
    assert all(0.85 <= h / 100 <= 1.0 for h in hits.values()), hits


# ----------------------------------------------------------------------------- the interval set
def binned_case(seed: int = 3, n: int = 1000) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y, g, o = simulate(rng, n)
    return y, g, o, rng.integers(0, 3, n)


NAMES = ["H", "M", "L"]


def test_point_estimates_lie_inside_their_intervals():
    y, g, o, b = binned_case()
    ci = r2_intervals(y, g, o, b, NAMES, 1000, seed=1)
    sets = [("overall", np.ones(len(y), bool), ci["overall"])]
    sets += [(name, b == k, ci["bins"][name]) for k, name in enumerate(NAMES)]
    for where, sel, interval in sets:
        r2_g = regression_metrics(y[sel], g[sel])["r2"]
        r2_o = regression_metrics(y[sel], o[sel])["r2"]
        for model, point in (("global", r2_g), ("oracle", r2_o), ("delta", r2_o - r2_g)):
            lo, hi = interval[model]
            assert lo < point < hi, (where, model, lo, point, hi)


def test_structure_and_json_types():
    y, g, o, b = binned_case()
    ci = r2_intervals(y, g, o, b, NAMES, 200)
    assert list(ci) == ["overall", "bins"] and list(ci["bins"]) == NAMES
    for interval in [ci["overall"], *ci["bins"].values()]:
        assert list(interval) == ["global", "oracle", "delta"]
        assert all(type(v) is float for pair in interval.values() for v in pair)


def test_deterministic_for_a_seed():
    y, g, o, b = binned_case()
    first = r2_intervals(y, g, o, b, NAMES, 300, seed=5)
    assert r2_intervals(y, g, o, b, NAMES, 300, seed=5) == first
    assert r2_intervals(y, g, o, b, NAMES, 300, seed=6) != first


def test_bin_interval_depends_only_on_that_bins_spectra():
    y, g, o, b = binned_case()
    ci = r2_intervals(y, g, o, b, NAMES, 300, seed=2)
    inside = b == 1
    # Scramble every prediction outside bin M: its interval must not move, the others must.
    rng = np.random.default_rng(0)
    g2, o2 = g.copy(), o.copy()
    g2[~inside] = rng.standard_normal((~inside).sum())
    o2[~inside] = rng.standard_normal((~inside).sum())
    changed = r2_intervals(y, g2, o2, b, NAMES, 300, seed=2)
    assert changed["bins"]["M"] == ci["bins"]["M"]
    assert changed["bins"]["H"] != ci["bins"]["H"] and changed["overall"] != ci["overall"]
    # Only bin M's spectra, in the same bin position: the same interval.
    alone = r2_intervals(y[inside], g[inside], o[inside], b[inside], NAMES, 300, seed=2)
    assert alone["bins"]["M"] == ci["bins"]["M"]


def test_bins_with_fewer_than_two_spectra_get_none():
    y, g, o, b = binned_case(n=50)
    b = np.where(b == 1, 0, b)  # bin M empty
    b[0] = 1  # ... then exactly one spectrum
    b = np.where(b == 2, 0, b)
    b[1:3] = 2  # bin L: exactly two spectra, the smallest bin with an interval
    ci = r2_intervals(y, g, o, b, NAMES, 200)
    assert ci["bins"]["M"] == {"global": None, "oracle": None, "delta": None}
    assert all(np.isfinite(v).all() for v in ci["bins"]["L"].values())
    b[0] = 0
    assert r2_intervals(y, g, o, b, NAMES, 200)["bins"]["M"] == {"global": None, "oracle": None, "delta": None}


def test_zero_resamples_is_off():
    y, g, o, b = binned_case(n=20)
    assert r2_intervals(y, g, o, b, NAMES, 0) is None


@pytest.mark.parametrize("change, error, match", [
    ({"n_resamples": -1}, ConfigError, "n_resamples"),
    ({"n_resamples": 1.5}, ConfigError, "n_resamples"),
    ({"seed": -3}, ConfigError, "seed"),
    ({"level": 1.0}, ConfigError, "level"),
    ({"y_oracle": np.zeros(19)}, InputError, "y_oracle"),
    ({"y_global": np.full(20, np.nan)}, InputError, "y_global"),
    ({"bin_idx": np.full(20, 3)}, InputError, "bin_idx"),
    ({"bin_idx": np.zeros(20)}, InputError, "bin_idx"),
])
def test_bad_input_is_a_one_line_error(change, error, match):
    y, g, o, b = binned_case(n=20)
    kw = {"y_true": y, "y_global": g, "y_oracle": o, "bin_idx": b, "names": NAMES, "n_resamples": 10, **change}
    with pytest.raises(error, match=match) as info:
        r2_intervals(**kw)
    assert "\n" not in str(info.value)


def test_fast_enough_for_the_default_2000_resamples():
    rng = np.random.default_rng(0)
    y, g, o = simulate(rng, 1000)
    b = rng.integers(0, 4, 1000)
    r2_intervals(y, g, o, b, list("ABCD"), 50)  # warm-up (imports, allocator)
    start = time.perf_counter()
    r2_intervals(y, g, o, b, list("ABCD"), 2000)
    # ~0.08 s measured on an idle core; the margin absorbs a shared, busy machine.
    assert time.perf_counter() - start < 1.0


# ----------------------------------------------------------------------------- decision
@pytest.mark.parametrize("delta, expected", [(0.02, "PASS"), (0.5, "PASS"), (0.0199, "FAIL"), (-0.1, "FAIL")])
def test_decision_is_the_point_rule(delta, expected):
    assert decision_for(delta, 0.02)[0] == expected


def test_robustness_from_bootstrap_intervals():
    """The interval never changes the card's decision; it only says whether the decision is robust."""
    y, g, o, b = binned_case()
    delta_ci = tuple(r2_intervals(y, g, o, b, NAMES, 500)["overall"]["delta"])
    assert delta_ci[0] > 0  # the oracle is better here (ΔR² ≈ 0.05, well resolved at N = 1000)
    for threshold, decision, verdict in ((delta_ci[0] - 0.01, "PASS", "robust"),
                                         (delta_ci[1] + 0.01, "FAIL", "robust"),
                                         (0.05 - 1e-3, "PASS", "not robust")):
        assert decision_for(0.05, threshold)[0] == decision
        assert robustness(0.05, threshold, delta_ci, 1000, 500)["verdict"] == verdict
