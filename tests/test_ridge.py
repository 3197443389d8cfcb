"""Ridge from statistics against scikit-learn's make_pipeline(StandardScaler(), Ridge(alpha)).

Relative difference of predictions: max |p_ours - p_sklearn| / (max p_sklearn - min p_sklearn),
over every spectrum (the bin's own and all others). The spread of the predictions is a stricter
yardstick than max |p_sklearn| (log g ~ 3 would hide errors in a small spread).
"""

import logging

import h5py
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from snrmoe_dask.core.noise import add_noise
from snrmoe_dask.core.ridge import (
    ScaledRidge,
    heldout_r2,
    heldout_sse,
    scaler_of,
    solve_once,
    solve_ridge,
)
from snrmoe_dask.core.stats import BinStats
from snrmoe_dask.errors import InputError

NAMES = ("H", "M", "L", "X")
CONSTANT = 5  # a pixel with no noise and one value: exercises the constant-feature rule


def noisy_spectra(n=3000, d=120, seed=0):
    """Noisy spectrum-like rows (positive, mean ~1, correlated pixels), log g-like target, 4 unequal bins."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 6))
    flux = 1.0 + latent @ (0.08 * rng.standard_normal((6, d))) + 0.01 * rng.standard_normal((n, d))
    flux[:, CONSTANT] = 1.25
    error = 0.02 + 0.1 * rng.random((n, d))
    error[:, CONSTANT] = 0.0
    y = 3.0 + latent @ (0.5 * rng.standard_normal(6)) + 0.1 * rng.standard_normal(n)
    x = add_noise(flux.clip(0).astype(np.float32), error.astype(np.float32), 1.0, seed=seed, shard=0)
    bins = rng.choice(4, size=n, p=[0.07, 0.23, 0.3, 0.4])
    return x, y, bins


@pytest.fixture(scope="module")
def data():
    return noisy_spectra()


def accumulate(x, y, bins, dtype, c=None, y0=None, block=700):
    c = x[:block].mean(axis=0, dtype=np.float64) if c is None else c
    stats = BinStats.zeros(NAMES, c, float(y.mean()) if y0 is None else y0)
    for i in range(0, len(x), block):
        stats.add_block(x[i:i + block], y[i:i + block], bins[i:i + block], dtype=dtype)
    return stats


@pytest.fixture(scope="module")
def stats(data):
    x, y, bins = data
    return {dtype: accumulate(x, y, bins, dtype) for dtype in (np.float64, np.float32)}


def sklearn_fit(x, y, alpha):
    return make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x.astype(np.float64), y)


def rel_diff(ours, ref):
    return np.abs(ours - ref).max() / np.ptp(ref)


@pytest.mark.parametrize("alpha", [1.0, 1e3, 1e5])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-6), (np.float32, 1e-4)])
def test_matches_sklearn_pipeline_global_and_every_bin(data, stats, alpha, dtype, tol):
    x, y, bins = data
    st = stats[dtype]
    cases = [("global", st.total(), 0, np.ones(len(y), bool))]
    cases += [(name, st, name, bins == k) for k, name in enumerate(NAMES)]
    for label, source, which, rows in cases:
        ours = solve_ridge(source, alpha, which)
        ref = sklearn_fit(x[rows], y[rows], alpha)
        assert rel_diff(ours.predict(x), ref.predict(x.astype(np.float64))) <= tol, label
        assert ours.n_train_ == rows.sum()
        np.testing.assert_allclose(ours.scaler_mean_, ref[0].mean_, rtol=1e-6)
        assert ours.scaler_scale_[CONSTANT] == ref[0].scale_[CONSTANT] == 1.0


def test_float64_coefficients_match_sklearn(data, stats):
    x, y, bins = data
    ours = solve_ridge(stats[np.float64], 10.0, "M")
    ref = sklearn_fit(x[bins == 1], y[bins == 1], 10.0)
    coef = ref[-1].coef_ / ref[0].scale_
    assert np.abs(ours.coef_ - coef).max() <= 1e-6 * np.abs(coef).max()


def test_constant_feature_with_an_offset_shift(data):
    """A shift c that misses a constant column's value still marks it constant, as sklearn does."""
    x, y, bins = data
    c = x[:700].mean(axis=0, dtype=np.float64)
    c[CONSTANT] += 0.01
    st = accumulate(x, y, bins, np.float64, c=c)
    ours = solve_ridge(st.total(), 1e3)
    ref = sklearn_fit(x, y, 1e3)
    assert ours.scaler_scale_[CONSTANT] == 1.0
    assert rel_diff(ours.predict(x), ref.predict(x.astype(np.float64))) <= 1e-6


def test_heldout_sse_and_r2_from_statistics(data):
    x, y, bins = data
    train = accumulate(x[:2000], y[:2000], bins[:2000], np.float64)
    model = solve_ridge(train, 100.0, "L")
    other = accumulate(x[2000:], y[2000:], bins[2000:], np.float64, c=x[2000:2100].mean(0, dtype=np.float64),
                       y0=2.5)
    for k, name in enumerate(NAMES):
        rows = np.flatnonzero(bins[2000:] == k) + 2000
        pred = x[rows].astype(np.float64) @ model.coef_ + model.intercept_
        direct = np.sum((y[rows] - pred) ** 2)
        assert heldout_sse(model, other, name) == pytest.approx(direct, rel=1e-9)
        assert heldout_r2(model, other, name) == pytest.approx(r2_score(y[rows], pred), rel=1e-9)
    total_pred = x[2000:].astype(np.float64) @ model.coef_ + model.intercept_
    assert heldout_r2(model, other.total()) == pytest.approx(r2_score(y[2000:], total_pred), rel=1e-9)


def test_empty_bin_cannot_be_solved(data):
    x, y, bins = data
    st = accumulate(x, y, np.where(bins == 0, 1, bins), np.float64)
    with pytest.raises(InputError, match="bin 'H' has no training spectra"):
        solve_ridge(st, 1.0, "H")
    from snrmoe_dask.engine.model import BinnedRidge

    assert BinnedRidge(alpha=1.0).fit(st).experts_["H"] is None  # the global model serves it


def test_singular_system_falls_back_to_least_squares(data, caplog):
    """alpha = 0 with a constant feature: A is singular, as in sklearn's own fallback."""
    x, y, _ = data
    x, y = x[:, :20], y
    st = BinStats.zeros(["all"], x[:500].mean(axis=0, dtype=np.float64), float(y.mean()))
    st.add_block(x, y, np.zeros(len(y), int), dtype=np.float64)
    with caplog.at_level(logging.WARNING, logger="snrmoe_dask.core.ridge"):
        ours = solve_ridge(st, 0.0)
    # the bin, and where LAPACK found it broken: the constant pixel (its scale is 1, the raw values' own)
    assert f"bin 'all': the scaled Gram + alpha I (alpha=0) is not positive definite (it fails at pixel {CONSTANT}," \
        in caplog.text
    ref = LinearRegression().fit(x.astype(np.float64), y)
    assert rel_diff(ours.predict(x), ref.predict(x.astype(np.float64))) <= 1e-6


def test_a_problem_built_in_the_scratch_solves_to_the_same_bits(data, stats, caplog):
    """solve_once (a fit that keeps nothing) against the kept problem's solve: every bin, own and shared
    scaler, and a singular system, which falls back to least squares with the same warning."""
    st = stats[np.float32]
    work = np.empty((st.d, st.d))
    for k in range(len(NAMES)):
        for scaler in (None, scaler_of(st)):
            ref = ScaledRidge.from_stats(st, k, scaler).model(1e3)
            got = solve_once(st, 1e3, k, scaler, work)
            assert np.array_equal(got.coef_, ref.coef_) and got.intercept_ == ref.intercept_
    x, y, _ = data
    single = BinStats.zeros(["all"], x[:500, :20].mean(axis=0, dtype=np.float64), float(y.mean()))
    single.add_block(x[:, :20], y, np.zeros(len(y), int), dtype=np.float64)
    with caplog.at_level(logging.WARNING, logger="snrmoe_dask.core.ridge"):
        got = solve_once(single, 0.0, 0, None, np.empty((20, 20)))
    assert "is not positive definite" in caplog.text
    assert np.array_equal(got.coef_, solve_ridge(single, 0.0).coef_)


def test_a_pixel_far_wider_than_the_others_is_pointed_at(data):
    """The warning named no file, row or cause (issue 22): with a pixel whose scale dwarfs the others'
    (a few absurd values summed into it), it says so."""
    from snrmoe_dask.core.ridge import ScaledRidge

    x, y, _ = data
    x = x[:, :20].astype(np.float64)
    x[7, 3] = 1e12
    st = BinStats.zeros(["all"], x[:500].mean(axis=0), float(y.mean()))
    st.add_block(x, y, np.zeros(len(y), int), dtype=np.float64)
    problem = ScaledRidge.from_stats(st)
    text = problem._where_broken(np.linalg.LinAlgError("4-th leading minor of the array is not positive definite"))
    assert text.startswith(" (it fails at pixel 3, whose scale is ") and "a few values far outside" in text
    assert problem._where_broken(np.linalg.LinAlgError("singular matrix")) == ""


def test_predict_validates_like_sklearn(data, stats):
    model = solve_ridge(stats[np.float64], 1.0, 0)
    with pytest.raises(InputError, match="X has 5 features, but RidgeModel is expecting 120 features"):
        model.predict(np.ones((3, 5)))
    with pytest.raises(InputError, match="2-D"):
        model.predict(np.ones(120))
    bad = np.ones((4, 120))
    bad[2, 0] = np.nan
    with pytest.raises(InputError, match="1 of 4 spectra"):
        model.predict(bad)


def test_model_save_load_round_trip(tmp_path, stats):
    from snrmoe_dask.io.models import read_model, write_model

    model = solve_ridge(stats[np.float32], 1e5, "X")
    with h5py.File(tmp_path / "m.h5", "w") as f:
        write_model(f.create_group("experts/X"), model)
    with h5py.File(tmp_path / "m.h5", "r") as f:
        assert sorted(f["experts/X"]) == ["coef", "intercept", "scaler_mean", "scaler_scale"]
        loaded = read_model(f["experts/X"])
    for name in ("coef_", "scaler_mean_", "scaler_scale_"):
        assert np.array_equal(getattr(loaded, name), getattr(model, name))
    assert (loaded.intercept_, loaded.alpha_, loaded.n_train_) == (model.intercept_, model.alpha_, model.n_train_)
