"""Alpha per model from validation statistics: the choice, its guarantees, and the fast eigen path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import snrmoe_dask.core.alpha as alpha_mod
from snrmoe_dask.core.alpha import (
    AUTO_GRID,
    CARD_ALPHA,
    EigenRidge,
    alpha_grid,
    is_selection,
    select_alpha,
)
from snrmoe_dask.core.ridge import ScaledRidge, heldout_r2, solve_ridge
from snrmoe_dask.core.stats import BinStats
from snrmoe_dask.errors import ConfigError, InputError

D = 20
NAMES = ("a", "b", "c")


def _stats(x: np.ndarray, y: np.ndarray, bins: np.ndarray, names=NAMES) -> BinStats:
    """float64 statistics of rows x (N, D), y (N,) in bins (N,), shifted by the first rows' mean."""
    st = BinStats.zeros(names, x[:10].mean(axis=0), float(y[:10].mean()))
    st.add_block(x, y, bins, dtype=np.float64)
    return st


def _rows(n: int, signal: float, noise: float, rng: np.random.Generator, w: np.ndarray):
    """x (n, D) around 5, y (n,) = signal * x . w + noise * N(0, 1)."""
    x = 5.0 + rng.standard_normal((n, len(w)))
    return x, signal * (x @ w) + noise * rng.standard_normal(n)


@pytest.fixture(scope="module")
def data():
    """Three bins: a well-determined one, a noisy small one, a middling one; rows kept for checks."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal(D)
    parts = [(600, 1.0, 0.1, 200), (40, 0.1, 1.0, 200), (300, 0.5, 0.5, 150)]
    xs, ys, bs, xv, yv, bv = [], [], [], [], [], []
    for k, (n, signal, noise, n_val) in enumerate(parts):
        x, y = _rows(n, signal, noise, rng, w)
        xs.append(x), ys.append(y), bs.append(np.full(n, k))
        x, y = _rows(n_val, signal, noise, rng, w)
        xv.append(x), yv.append(y), bv.append(np.full(n_val, k))
    train = tuple(np.concatenate(a) for a in (xs, ys, bs))
    val = tuple(np.concatenate(a) for a in (xv, yv, bv))
    return train, val, _stats(*train), _stats(*val)


# ----------------------------------------------------------------------------- the grid
def test_alpha_grid() -> None:
    grid = alpha_grid("auto")
    assert grid == list(AUTO_GRID) and len(grid) == 15
    assert grid[0] == 1.0 and grid[-1] == pytest.approx(1e7) and CARD_ALPHA in grid
    assert alpha_grid([1e3, 1.0, 10, 1e3]) == [1.0, 10.0, 1000.0]
    assert alpha_grid(5) == [5.0]
    assert is_selection("auto") and is_selection([1, 2]) and not is_selection(1e5)
    for bad in ("cheap", [], [1, -2]):
        with pytest.raises(ConfigError, match="model.alpha"):
            alpha_grid(bad)


# ----------------------------------------------------------------------------- the eigen path
@pytest.mark.parametrize("path", ["eigen", "cholesky"])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 10.0, 1e3, 1e5])
def test_fast_paths_equal_solve_ridge(data, alpha: float, path: str) -> None:
    (x, y, b), _, _, _ = data
    x = x.copy()
    x[:, 3] = 2.5  # a constant column: scale 1 and zero weight on every path
    stats = _stats(x, y, b)
    for k in range(stats.n_bins):
        want = solve_ridge(stats, alpha, k)
        problem = ScaledRidge.from_stats(stats, k)
        got = (EigenRidge.of(problem) if path == "eigen" else problem).model(alpha)
        assert np.allclose(got.coef_, want.coef_, rtol=1e-8, atol=1e-8 * np.abs(want.coef_).max())
        assert got.intercept_ == pytest.approx(want.intercept_, rel=1e-8, abs=1e-8)
        np.testing.assert_array_equal(got.scaler_scale_, want.scaler_scale_)
        assert got.alpha_ == alpha and got.n_train_ == want.n_train_


def test_both_solvers_make_the_same_choice(data, monkeypatch) -> None:
    _, _, train, val = data
    monkeypatch.setattr(alpha_mod, "EIGEN_MIN_ALPHAS", 1)  # one eigh per model
    eigen = select_alpha(train, val, alpha_grid("auto"), CARD_ALPHA)
    monkeypatch.setattr(alpha_mod, "EIGEN_MIN_ALPHAS", 10_000)  # one Cholesky per alpha
    cholesky = select_alpha(train, val, alpha_grid("auto"), CARD_ALPHA)
    for m_e, m_c in zip([eigen.global_model, *eigen.experts.values()],
                        [cholesky.global_model, *cholesky.experts.values()]):
        assert m_e.alpha == m_c.alpha
        np.testing.assert_allclose(m_e.r2, m_c.r2, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- the choice
def _single_bin_choice(n: int, signal: float, noise: float) -> float:
    rng = np.random.default_rng(1)
    w = rng.standard_normal(D)
    x, y = _rows(n, signal, noise, rng, w)
    xv, yv = _rows(500, signal, noise, rng, w)
    train, val = _stats(x, y, np.zeros(n, int), ("a",)), _stats(xv, yv, np.zeros(500, int), ("a",))
    return select_alpha(train, val, alpha_grid("auto"), CARD_ALPHA).global_model.alpha


def test_choice_moves_with_the_best_alpha() -> None:
    small = _single_bin_choice(2000, 1.0, 0.1)  # many rows, clean signal: little shrinkage
    large = _single_bin_choice(30, 0.05, 1.0)  # few rows, weak signal: heavy shrinkage
    assert small <= 10.0
    assert large >= 1e4
    assert small < large


@pytest.mark.parametrize("grid, fixed", [(alpha_grid("auto"), CARD_ALPHA), ([1.0, 10.0], 333.0)],
                         ids=["fixed-in-grid", "fixed-not-in-grid"])
def test_never_worse_than_the_fixed_alpha(data, grid, fixed: float) -> None:
    _, _, train, val = data
    choice = select_alpha(train, val, grid, fixed)
    pairs = [(choice.global_model, train.total(), val.total(), 0)]
    pairs += [(choice.experts[n], train, val, k) for k, n in enumerate(NAMES)]
    for model, tr, va, k in pairs:
        direct = heldout_r2(solve_ridge(tr, fixed, k), va, k)
        assert model.r2_fixed == pytest.approx(direct, rel=1e-9, abs=1e-9)
        assert model.r2_chosen >= direct - 1e-12
        assert model.gain >= -1e-12 and model.source == "validation"
        assert fixed in model.alphas  # the fixed alpha is always a candidate
        assert model.r2_chosen == pytest.approx(model.r2.max())


def test_heldout_r2_equals_sklearn_on_the_validation_rows(data) -> None:
    (x, y, b), (xv, yv, bv), train, val = data
    choice = select_alpha(train, val, alpha_grid("auto"), CARD_ALPHA)
    model = solve_ridge(train.total(), choice.global_model.alpha)
    assert r2_score(yv, model.predict(xv)) == pytest.approx(choice.global_model.r2_chosen, abs=1e-9)
    for k, name in enumerate(NAMES):
        chosen = choice.experts[name]
        expert = EigenRidge.from_stats(train, k).model(chosen.alpha)
        rows = bv == k
        assert r2_score(yv[rows], expert.predict(xv[rows])) == pytest.approx(chosen.r2_chosen, abs=1e-9)
        # and the expert is scikit-learn's StandardScaler + Ridge fitted on the bin's rows
        reference = make_pipeline(StandardScaler(), Ridge(alpha=chosen.alpha)).fit(x[b == k], y[b == k])
        np.testing.assert_allclose(expert.predict(xv[rows]), reference.predict(xv[rows]), rtol=1e-8, atol=1e-8)


def test_expert_alphas_and_json(data) -> None:
    _, _, train, val = data
    choice = select_alpha(train, val, [10.0, 1e3], CARD_ALPHA)
    alphas = choice.expert_alphas()
    assert list(alphas) == list(NAMES)
    assert all(alphas[n] == choice.experts[n].alpha for n in NAMES)
    record = json.loads(json.dumps(choice.to_dict()))
    assert record["fixed_alpha"] == CARD_ALPHA
    assert record["global"]["curve"]["alpha"] == [10.0, 1e3, CARD_ALPHA]
    assert set(record["experts"]) == set(NAMES)


# ----------------------------------------------------------------------------- fallbacks
def test_too_few_rows_fall_back(data) -> None:
    (x, y, b), (xv, yv, bv), _, _ = data
    keep = (bv == 0) | (np.flatnonzero(bv == 2)[0] == np.arange(len(bv)))  # bin b: 0 rows, bin c: 1 row
    val = _stats(xv[keep], yv[keep], bv[keep])
    train = _stats(x, y, b)
    choice = select_alpha(train, val, alpha_grid("auto"), CARD_ALPHA, min_samples=50)
    assert "b" not in choice.experts  # 40 training rows < min_samples: no expert at all
    fallback = choice.experts["c"]
    assert fallback.source == "global" and fallback.alpha == choice.global_model.alpha
    assert fallback.n_val == 1 and fallback.r2 is None and fallback.gain is None
    assert "1 validation spectra" in fallback.note and "global model's alpha" in fallback.note
    assert choice.experts["a"].source == "validation"
    assert choice.expert_alphas()["b"] == choice.global_model.alpha
    json.dumps(choice.to_dict())


def test_mismatched_or_empty_validation_is_refused(data) -> None:
    _, (xv, yv, _), train, _ = data
    other = _stats(xv, yv, np.zeros(len(yv), int), ("only",))
    with pytest.raises(InputError, match="bins"):
        select_alpha(train, other, [1.0], CARD_ALPHA)
    empty = BinStats.zeros(NAMES, xv[0], 0.0)
    with pytest.raises(InputError, match="validation set has 0 spectra"):
        select_alpha(train, empty, [1.0], CARD_ALPHA)
