"""The deployable gate: error-only features, the logistic gate, soft / noisy-SNR routing, scores, figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from matplotlib.image import imread

from snrmoe_dask.core.gate import (
    FEATURE_NAMES,
    expert_predictions,
    fit_gate,
    gate_summary,
    hard_route_noisy_snr,
    noisy_snr,
    one_hot,
    quality_features,
    rho_score,
    soft_route,
)
from snrmoe_dask.core.ridge import RidgeModel
from snrmoe_dask.core.snr import Bins
from snrmoe_dask.errors import ConfigError, InputError
from snrmoe_dask.report.gate_alpha_plots import alpha_curve_figure, gate_confusion_figure

BINS = Bins.from_mapping({"X": [0, 2], "L": [2, 4], "M": [4, 7], "H": [7, None]})


def reference_features(error: np.ndarray) -> np.ndarray:
    """(B, 10) the features computed row by row with plain numpy / scipy (defaults), in float64."""
    rows = np.asarray(error, dtype=np.float64)
    return np.array([[r.mean(), r.std(), r.min(), r.max(), np.median(r), r.sum(), np.percentile(r, 25),
                      np.percentile(r, 75), scipy.stats.skew(r), scipy.stats.kurtosis(r)] for r in rows])


# ----------------------------------------------------------------------------- features
@pytest.mark.parametrize("d", [256, 257, 5])  # even / odd pixel counts: different quantile interpolation
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_features_equal_numpy_scipy_per_row(d, dtype):
    rng = np.random.default_rng(d)
    # 70 rows cross the internal chunk boundaries; skewed, positive like real error spectra
    error = (0.05 + rng.gamma(2.0, 0.02, size=(70, d))).astype(dtype)
    got = quality_features(error)
    assert got.shape == (70, len(FEATURE_NAMES)) and got.dtype == np.float64
    np.testing.assert_allclose(got, reference_features(error), rtol=1e-10, atol=1e-12)


def test_kurtosis_is_fisher_excess():
    # a fine uniform grid: excess kurtosis -1.2 (Pearson's would be 1.8), skewness 0
    row = np.linspace(1.0, 2.0, 10_001)[None, :]
    feats = quality_features(row)
    assert feats[0, FEATURE_NAMES.index("kurtosis")] == pytest.approx(-1.2, abs=1e-3)
    assert feats[0, FEATURE_NAMES.index("skewness")] == pytest.approx(0.0, abs=1e-9)
    assert feats[0, FEATURE_NAMES.index("kurtosis")] == pytest.approx(scipy.stats.kurtosis(row[0], fisher=True))


def test_flat_row_has_zero_shape_features():
    error = np.full((2, 64), 0.25, dtype=np.float32)
    feats = quality_features(error)
    assert np.isfinite(feats).all()
    np.testing.assert_array_equal(feats[:, 8:], 0.0)
    np.testing.assert_allclose(feats[:, :8], [[0.25, 0.0, 0.25, 0.25, 0.25, 16.0, 0.25, 0.25]] * 2)


def test_features_reject_bad_input():
    bad = np.ones((3, 8), dtype=np.float32)
    bad[1, 4] = np.nan
    with pytest.raises(InputError, match="1 of 3 error spectra hold NaN or inf"):
        quality_features(bad)
    with pytest.raises(InputError, match=r"shape \(B, D\)"):
        quality_features(np.ones(8))


# ----------------------------------------------------------------------------- the gate
def separable(n_per: int = 150, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features (k n_per, 10) whose class sets the mean, on wildly different column scales."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n_per)
    scales = np.logspace(-4, 4, 10)
    feats = (labels[:, None] * 3.0 + rng.standard_normal((labels.size, 10))) * scales
    return feats, labels


def test_gate_separates_classes_and_confusion_is_in_bin_order():
    feats, labels = separable()
    gate = fit_gate(feats, labels, n_classes=4, seed=0)
    test_feats, test_labels = separable(seed=1)
    proba = gate.predict_proba(test_feats)
    assert proba.shape == (test_labels.size, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(gate.classes, np.arange(4))
    summary = gate_summary(test_labels, proba, BINS.names, 0.6, 0.5, 0.6, np.zeros(test_labels.size, bool))
    assert summary["accuracy"] >= 0.97
    conf = np.array(summary["confusion"])
    assert conf.shape == (4, 4) and conf.sum() == test_labels.size
    np.testing.assert_array_equal(conf.sum(axis=1), np.bincount(test_labels))  # rows = true bin
    assert (np.diag(conf) >= 0.9 * conf.sum(axis=1)).all()
    assert summary["names"] == ["X", "L", "M", "H"]


def test_confusion_rows_are_true_and_columns_predicted():
    labels = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 2, 0, 2])
    summary = gate_summary(labels, one_hot(predicted, 3), ["a", "b", "c"], None, None, None,
                           np.array([False, True, False, False, False, False]))
    assert summary["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert summary["accuracy"] == pytest.approx(4 / 6)
    assert summary["fallback_rate"] == pytest.approx(1 / 6)
    assert summary["rho"] is None


def test_absent_class_gets_a_zero_probability_column():
    feats, labels = separable(k=4)
    keep = np.isin(labels, [0, 2, 3])  # bin 1 (L) never seen in training
    gate = fit_gate(feats[keep], labels[keep], n_classes=5)
    proba = gate.predict_proba(feats)
    assert proba.shape == (labels.size, 5)
    np.testing.assert_array_equal(proba[:, 1], 0.0)
    np.testing.assert_array_equal(proba[:, 4], 0.0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(gate.present, [0, 2, 3])
    assert set(gate.predict(feats)) <= {0, 2, 3}


def test_single_class_gate_is_constant():
    feats, _ = separable(n_per=10, k=1)
    gate = fit_gate(feats, np.full(10, 2), n_classes=3)
    np.testing.assert_array_equal(gate.predict_proba(feats[:4]), [[0.0, 0.0, 1.0]] * 4)


def test_gate_on_error_features_end_to_end():
    # error spectra whose overall level sets the SNR bin: the gate must learn it from the features alone
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=800)
    level = np.array([0.8, 0.4, 0.2, 0.1])[labels]
    error = (level[:, None] * (1.0 + 0.2 * rng.random((800, 64)))).astype(np.float32)
    feats = quality_features(error)
    gate = fit_gate(feats[:600], labels[:600], n_classes=4)
    assert (gate.predict(feats[600:]) == labels[600:]).mean() >= 0.95


def test_gate_rejects_bad_labels():
    feats, labels = separable(n_per=5)
    with pytest.raises(InputError, match="outside the bins 0..2"):
        fit_gate(feats, labels, n_classes=3)
    with pytest.raises(ConfigError, match="n_classes"):
        fit_gate(feats, labels, n_classes=0)
    with pytest.raises(InputError, match="expected 20 labels"):
        fit_gate(feats, labels[:-1], n_classes=4)


# ----------------------------------------------------------------------------- soft routing
def test_soft_route_is_probability_weighted_sum_with_fallbacks():
    nan = np.nan
    experts = np.array([[1.0, nan, 3.0],
                        [1.0, nan, 3.0],
                        [2.0, 5.0, 7.0]])
    global_pred = np.array([10.0, 20.0, 30.0])
    proba = np.array([[0.5, 0.2, 0.3],    # bin 1 has no expert: 0.2 * global
                      [0.3, 0.35, 0.35],  # max p < 0.4: global
                      [0.1, 0.1, 0.8]])
    routed = soft_route(experts, global_pred, proba, fallback=0.4)
    expected = [0.5 * 1.0 + 0.2 * 10.0 + 0.3 * 3.0, 20.0, 0.1 * 2.0 + 0.1 * 5.0 + 0.8 * 7.0]
    np.testing.assert_allclose(routed.pred, expected)
    np.testing.assert_array_equal(routed.fallback, [False, True, False])
    np.testing.assert_array_equal(routed.chosen, [0, 1, 2])
    # fallback 0: never falls back; the weighted sum is used on row 1 too
    no_fb = soft_route(experts, global_pred, proba, fallback=0.0)
    assert no_fb.pred[1] == pytest.approx(0.3 * 1.0 + 0.35 * 20.0 + 0.35 * 3.0)
    assert not no_fb.fallback.any()


def test_soft_route_rejects_bad_input():
    experts, glob, proba = np.ones((2, 2)), np.zeros(2), np.full((2, 2), 0.5)
    with pytest.raises(ConfigError, match="gate_fallback"):
        soft_route(experts, glob, proba, fallback=1.5)
    with pytest.raises(InputError, match="summing to 1"):
        soft_route(experts, glob, np.full((2, 2), 0.6), fallback=0.4)
    with pytest.raises(InputError, match="shape"):
        soft_route(experts, glob, np.full((2, 3), 1 / 3), fallback=0.4)


def test_expert_predictions_nan_for_missing_expert():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    model = RidgeModel(coef_=np.array([1.0, 0.0, 0.0, 2.0]), intercept_=0.5, scaler_mean_=np.zeros(4),
                       scaler_scale_=np.ones(4), alpha_=1.0, n_train_=10)
    preds = expert_predictions(x, [model, None])
    np.testing.assert_allclose(preds[:, 0], x[:, 0] + 2.0 * x[:, 3] + 0.5)
    assert np.isnan(preds[:, 1]).all()


# ----------------------------------------------------------------------------- rho
def test_rho_as_defined():
    assert rho_score(0.55, 0.5, 0.6) == pytest.approx(0.5)
    assert rho_score(0.62, 0.5, 0.6) == pytest.approx(1.2)   # the deployed model may beat the oracle
    assert rho_score(0.45, 0.5, 0.6) == pytest.approx(-0.5)
    assert rho_score(0.55, 0.5, 0.5) is None                 # zero denominator
    assert rho_score(0.55, 0.5, math.nan) is None
    summary = gate_summary([0, 1], one_hot(np.array([0, 1]), 2), ["a", "b"], 0.7, 0.4, 0.8, np.zeros(2, bool))
    assert summary["rho"] == pytest.approx(0.75)
    assert gate_summary([0, 1], one_hot(np.array([0, 1]), 2), ["a", "b"], 0.7, 0.4, 0.4,
                        np.zeros(2, bool))["rho"] is None


# ----------------------------------------------------------------------------- hard routing by noisy SNR
def test_noisy_snr_is_norm_ratio():
    rng = np.random.default_rng(0)
    flux = rng.normal(1.0, 0.3, size=(5, 40)).astype(np.float32)
    error = rng.uniform(0.1, 0.2, size=(5, 40)).astype(np.float32)
    expected = np.linalg.norm(flux.astype(np.float64), axis=1) / np.linalg.norm(2.0 * error.astype(np.float64), axis=1)
    np.testing.assert_allclose(noisy_snr(flux, error, 2.0), expected, rtol=1e-6)


def test_hard_route_by_noisy_snr():
    # flux = c * ones, error = ones -> SNR = c / level
    c = np.array([1.0, 3.0, 5.0, 9.0, 2.0])
    flux = np.repeat(c[:, None], 16, axis=1)
    error = np.ones_like(flux)
    snr = noisy_snr(flux, error, level=1.0)
    np.testing.assert_allclose(snr, c)
    experts = np.array([[10.0, 11.0, 12.0, np.nan]] * 5)  # bin H has no expert
    global_pred = np.full(5, -1.0)
    routed = hard_route_noisy_snr(experts, global_pred, snr, BINS)
    np.testing.assert_array_equal(routed.chosen, [0, 1, 2, 3, 1])
    np.testing.assert_allclose(routed.pred, [10.0, 11.0, 12.0, -1.0, 11.0])
    np.testing.assert_array_equal(routed.fallback, [False, False, False, True, False])
    # doubling the level halves the SNR: 9 -> 4.5 moves to M
    routed2 = hard_route_noisy_snr(experts, global_pred, noisy_snr(flux, error, 2.0), BINS)
    np.testing.assert_array_equal(routed2.chosen, [0, 0, 1, 2, 0])


def test_hard_route_checks_bins():
    with pytest.raises(InputError, match="4 SNR bins"):
        hard_route_noisy_snr(np.ones((2, 3)), np.zeros(2), np.ones(2), BINS)


# ----------------------------------------------------------------------------- figures
def test_gate_confusion_figure_writes_png(tmp_path):
    conf = [[50, 3, 0, 0], [4, 80, 6, 0], [0, 2, 70, 1], [0, 0, 0, 0]]  # H: no test spectra
    path = gate_confusion_figure(conf, ["X", "L", "M", "H"], tmp_path / "img" / "gate_confusion.png")
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01  # something was drawn
    with pytest.raises(InputError, match="4 x 4"):
        gate_confusion_figure([[1, 2], [3, 4]], ["X", "L", "M", "H"], tmp_path / "bad.png")


def test_alpha_curve_figure_writes_png(tmp_path):
    alphas = [1e2, 1e3, 1e4, 1e5, 1e6]
    curves = {"global": (alphas, [0.40, 0.45, 0.48, 0.47, 0.40]),
              "X": (alphas, [0.20, 0.25, None, 0.30, 0.28]),
              "H": (alphas, [0.70, 0.72, 0.71, 0.69, 0.60])}
    chosen = {"global": 1e4, "X": 1e5, "H": 3e3}  # 3e3 off the grid: drawn interpolated
    path = alpha_curve_figure(curves, chosen, 1e5, tmp_path / "alpha.png")
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img[..., :3].std() > 0.01
    with pytest.raises(InputError, match="> 0"):
        alpha_curve_figure({"global": ([0.0, 1.0], [0.1, 0.2])}, {}, 1e5, tmp_path / "bad.png")
    with pytest.raises(InputError, match="without a curve"):
        alpha_curve_figure(curves, {"Q": 1.0}, 1e5, tmp_path / "bad.png")
