"""The deployable gate (MVP-2.0): route test spectra to the SNR experts without knowing their true bin.

Two deployable baselines replace the oracle's true-bin routing:

* a learned gate: 10 summary statistics of the error vector only (:func:`quality_features`; the
  gate never sees the flux, so it cannot learn log g), a StandardScaler + multinomial logistic
  regression onto the SNR bins (:func:`fit_gate`), and soft routing ``sum_k p_k * expert_k`` with a
  fallback to the global model when the gate is unsure (:func:`soft_route`);
* hard routing by the SNR measured on the noisy flux (:func:`noisy_snr`, :func:`hard_route_noisy_snr`).

:func:`gate_summary` scores either one: gate accuracy, confusion matrix, fallback rate and
``rho = (R2_deployed - R2_global) / (R2_oracle - R2_global)`` (the share of the oracle's gain kept).

Pure numpy / scikit-learn: no dask, no file I/O. Out-of-core fitting through dask-ml is deliberately
absent: dask-ml's LogisticRegression (dask-glm) is binary only, and on more than two classes it
silently returns two probability columns. The gate's input is only N x 10 float64 (80 bytes per
spectrum, 0.8 GB for 10 million), so it is fitted in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import numpy as np

from ..errors import InputError
from .params import check_number
from .ridge import RidgeModel
from .snr import Bins, snr_norm

if TYPE_CHECKING:  # scikit-learn is imported where the gate is fitted or scored: it is slow to import
    from sklearn.pipeline import Pipeline

FEATURE_NAMES = ("mean", "std", "min", "max", "median", "sum", "p25", "p75", "skewness", "kurtosis")
N_FEATURES = len(FEATURE_NAMES)
# Rows per chunk of quality_features: a 32-row float64 chunk of 4096 pixels is 1 MiB, so the
# scratch arrays stay in cache, which whole-block temporaries (128 MiB each) do not (docs/performance.md).
_FEATURE_CHUNK_ROWS = 32
# The quantiles of the features, with numpy's default ('linear') interpolation.
_QUANTILES = (0.25, 0.5, 0.75)


# ----------------------------------------------------------------------------- features
def _quantile_columns(sorted_rows: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """(B, len(qs)) float64 quantiles of each row of ``sorted_rows`` (B, D), sorted ascending.

    numpy's 'linear' method: position q (D - 1), interpolated between its two neighbours.
    """
    d = sorted_rows.shape[1]
    out = np.empty((sorted_rows.shape[0], len(qs)), dtype=np.float64)
    for j, q in enumerate(qs):
        pos = q * (d - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, d - 1)
        frac = pos - lo
        a = sorted_rows[:, lo].astype(np.float64)
        b = sorted_rows[:, hi].astype(np.float64)
        out[:, j] = a + (b - a) * frac
    return out


def _moment_columns(rows: np.ndarray, work: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row sums (B,) and central moments m2, m3, m4 (B, 3) (divided by D) of the rows (B, D), float64.

    work: (2, >= B, D) float64 scratch space, overwritten.
    """
    b, d = rows.shape
    c, c2 = work[0, :b], work[1, :b]
    # Cast once, then work in place: a mixed float32 - float64 subtraction converts and allocates on
    # every operation (docs/performance.md).
    np.copyto(c, rows)
    total = c.sum(axis=1)
    # Centre in float64: a float32 difference would lose the shape of a nearly flat error vector.
    c -= (total / d)[:, None]
    np.multiply(c, c, out=c2)
    m = np.stack([c2.sum(axis=1), np.einsum("ij,ij->i", c2, c), np.einsum("ij,ij->i", c2, c2)], axis=1) / d
    return total, m


def _shape_columns(m: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(B, 2) skewness m3 / m2^1.5 and excess kurtosis m4 / m2^2 - 3 from moments m (B, 3).

    Rows whose variance is zero at float64 resolution (scipy's own test) get 0 for both, where
    scipy returns NaN: a flat error vector has no asymmetry or tail, and the gate needs finite inputs.
    """
    m2, m3, m4 = m[:, 0], m[:, 1], m[:, 2]
    flat = m2 <= (np.finfo(np.float64).resolution * mean) ** 2
    safe = np.where(flat, 1.0, m2)
    skew = np.where(flat, 0.0, m3 / safe ** 1.5)
    kurt = np.where(flat, 0.0, m4 / safe ** 2 - 3.0)
    return np.stack([skew, kurt], axis=1)


def _feature_chunk(rows: np.ndarray, work: np.ndarray, sort_work: np.ndarray) -> np.ndarray:
    """(B, 10) float64 features (order of FEATURE_NAMES) of the error rows (B, D).

    work: (2, >= B, D) float64 and sort_work: (>= B, D) of the rows' dtype: scratch space that
    :func:`quality_features` allocates once and reuses for every chunk.
    """
    b, d = rows.shape
    # One sort per row gives min, max, median and quartiles: numpy's SIMD sort beats np.partition with
    # the six order statistics the linear quantiles need (docs/performance.md).
    sorted_rows = sort_work[:b]
    np.copyto(sorted_rows, rows)
    sorted_rows.sort(axis=1)
    total, m = _moment_columns(rows, work)
    mean = total / d
    q = _quantile_columns(sorted_rows, _QUANTILES)
    out = np.empty((b, N_FEATURES), dtype=np.float64)
    out[:, 0] = mean
    out[:, 1] = np.sqrt(m[:, 0])
    out[:, 2] = sorted_rows[:, 0]
    out[:, 3] = sorted_rows[:, -1]
    out[:, 4] = q[:, 1]
    out[:, 5] = total
    out[:, 6] = q[:, 0]
    out[:, 7] = q[:, 2]
    out[:, 8:10] = _shape_columns(m, mean)
    return out


def quality_features(error: np.ndarray) -> np.ndarray:
    """(B, 10) float64 summary statistics of each row of the error spectra ``error`` (B, D).

    Columns (FEATURE_NAMES): mean, std (ddof = 0), min, max, median, sum, 25th and 75th percentiles
    (numpy 'linear'), skewness (``scipy.stats.skew``, biased: m3 / m2^1.5) and kurtosis
    (``scipy.stats.kurtosis`` defaults: Fisher / excess, biased: m4 / m2^2 - 3, 0 for a normal
    distribution); m_k are central moments divided by D. Skewness and kurtosis of a flat row are 0.
    Error only, so a gate fed with these cannot see log g. Non-finite input raises InputError.
    """
    error = np.asarray(error)
    if error.ndim != 2 or error.shape[1] < 1:
        raise InputError(f"quality_features: expected error spectra of shape (B, D) with D >= 1, got {error.shape}")
    if not np.issubdtype(error.dtype, np.floating):
        error = error.astype(np.float64)
    n, d = error.shape
    chunk = min(_FEATURE_CHUNK_ROWS, max(n, 1))
    work = np.empty((2, chunk, d), dtype=np.float64)
    sort_work = np.empty((chunk, d), dtype=error.dtype)
    out = np.empty((n, N_FEATURES), dtype=np.float64)
    for i in range(0, n, chunk):
        rows = slice(i, i + chunk)
        out[rows] = _feature_chunk(error[rows], work, sort_work)
    # NaN or inf anywhere in a row reaches its mean (and so every moment): checking (B, 10) is cheap.
    bad = int(np.count_nonzero(~np.isfinite(out).all(axis=1)))
    if bad:
        raise InputError(f"quality_features: {bad} of {error.shape[0]} error spectra hold NaN or inf; "
                         f"expected finite errors (repair them first)")
    return out


# ----------------------------------------------------------------------------- the gate
def _check_features(features: Any, n_features: int | None = None) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or (n_features is not None and features.shape[1] != n_features):
        want = f"(N, {n_features})" if n_features is not None else "(N, F)"
        raise InputError(f"gate: expected features of shape {want}, got {features.shape}")
    if not np.isfinite(features).all():
        raise InputError(f"gate: {int(np.count_nonzero(~np.isfinite(features).all(axis=1)))} of "
                         f"{features.shape[0]} feature rows hold NaN or inf; expected finite features")
    return features


def _check_n_classes(n_classes: Any) -> int:
    return check_number("gate: n_classes", n_classes, "an integer >= 1 (the number of SNR bins)", integer=True,
                        test=lambda n: n >= 1)


def _check_labels(labels: Any, n: int, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise InputError(f"gate: expected {n} labels (one per feature row), got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"gate: labels must be integer bin indices, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    out_of_range = int(np.count_nonzero((labels < 0) | (labels >= n_classes)))
    if out_of_range:
        raise InputError(f"gate: {out_of_range} labels lie outside the bins 0..{n_classes - 1}")
    return labels


@dataclass(eq=False)
class Gate:
    """A fitted SNR gate: probabilities over all ``n_classes`` bins, in bin order.

    pipeline: StandardScaler + LogisticRegression fitted on the bins present in training, or None
    when only one bin was present (that bin then gets probability 1); present: (P,) sorted bin
    indices seen in training; n_classes: K, the number of bins; n_features: F, columns per row.
    """

    pipeline: Pipeline | None
    present: np.ndarray
    n_classes: int
    n_features: int

    @property
    def classes(self) -> np.ndarray:
        """(K,) int64 bin indices 0..K-1: the column order of :meth:`predict_proba`."""
        return np.arange(self.n_classes, dtype=np.int64)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """(N, K) float64 bin probabilities of the feature rows (N, F); 0 for bins absent in training."""
        features = _check_features(features, self.n_features)
        proba = np.zeros((features.shape[0], self.n_classes), dtype=np.float64)
        if self.pipeline is None:
            proba[:, self.present[0]] = 1.0
        elif features.shape[0]:
            # The pipeline's columns follow its own classes_ (the present bins, sorted): scatter them.
            proba[:, self.pipeline.classes_] = self.pipeline.predict_proba(features)
        return proba

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(N,) int64 most probable bin of each feature row (N, F); ties go to the earlier bin."""
        return np.argmax(self.predict_proba(features), axis=1).astype(np.int64)


def fit_gate(features: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = 0,
             C: float = 1.0, max_iter: int = 1000) -> Gate:
    """A :class:`Gate` fitted on features (N, F) and true bin indices labels (N,) in 0..n_classes-1.

    StandardScaler first (the 10 features differ by orders of magnitude: sum vs kurtosis), then
    scikit-learn's LogisticRegression (lbfgs: multinomial softmax over the present bins; binary
    when only two are present). Bins absent from ``labels`` get probability 0.
    """
    n_classes = _check_n_classes(n_classes)
    features = _check_features(features)
    labels = _check_labels(labels, features.shape[0], n_classes)
    if features.shape[0] == 0:
        raise InputError("gate: no training rows; expected at least one labelled feature row")
    present = np.unique(labels)
    if present.size == 1:
        # LogisticRegression refuses a single class; the only sensible gate is the constant one.
        return Gate(pipeline=None, present=present, n_classes=n_classes, n_features=features.shape[1])
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = Pipeline([
        ("scaler", StandardScaler()),
        ("logreg", LogisticRegression(C=C, max_iter=max_iter, random_state=seed)),
    ])
    pipeline.fit(features, labels)
    return Gate(pipeline=pipeline, present=present, n_classes=n_classes, n_features=features.shape[1])


# ----------------------------------------------------------------------------- routing
class Routed(NamedTuple):
    """A deployable routing's outcome.

    pred: (N,) float64 predictions; chosen: (N,) int64 bin each spectrum was routed to (the
    gate's most probable bin, or the noisy-SNR bin); fallback: (N,) bool, True where the global
    model's prediction was used instead of the experts.
    """

    pred: np.ndarray
    chosen: np.ndarray
    fallback: np.ndarray


def expert_predictions(x: np.ndarray, experts: Sequence[RidgeModel | None]) -> np.ndarray:
    """(N, K) float64 predictions of every expert on the spectra x (N, D); NaN columns for None experts."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise InputError(f"expert_predictions: expected spectra of shape (N, D), got {x.shape}")
    out = np.full((x.shape[0], len(experts)), np.nan, dtype=np.float64)
    for k, expert in enumerate(experts):
        if expert is not None:
            out[:, k] = expert.predict(x)
    return out


def _check_routing_inputs(expert_preds: Any, global_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    expert_preds = np.asarray(expert_preds, dtype=np.float64)
    global_pred = np.asarray(global_pred, dtype=np.float64)
    if expert_preds.ndim != 2 or global_pred.shape != (expert_preds.shape[0],):
        raise InputError(f"routing: expected expert predictions (N, K) and global predictions (N,), "
                         f"got {expert_preds.shape} and {global_pred.shape}")
    if not np.isfinite(global_pred).all():
        raise InputError(f"routing: {int(np.count_nonzero(~np.isfinite(global_pred)))} global predictions "
                         f"are NaN or inf; expected finite values")
    if np.isinf(expert_preds).any():
        raise InputError("routing: expert predictions hold inf; expected finite values (NaN = no expert)")
    return expert_preds, global_pred


def _check_fallback(fallback: Any) -> float:
    return check_number("evaluation.gate_fallback", fallback, "a probability in [0, 1]",
                        test=lambda p: 0.0 <= p <= 1.0)


def _check_proba(proba: Any, shape: tuple[int, int]) -> np.ndarray:
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != shape:
        raise InputError(f"routing: expected gate probabilities of shape {shape}, got {proba.shape}")
    # A row that does not sum to 1 would scale the prediction, not just reweight the experts.
    bad = ~np.isfinite(proba).all(axis=1) | (proba < 0).any(axis=1) | (np.abs(proba.sum(axis=1) - 1.0) > 1e-6)
    if bad.any():
        raise InputError(f"routing: {int(np.count_nonzero(bad))} of {shape[0]} probability rows are not "
                         f"finite, non-negative and summing to 1")
    return proba


def soft_route(expert_preds: np.ndarray, global_pred: np.ndarray, proba: np.ndarray, fallback: float) -> Routed:
    """Soft routing: ``pred = sum_k p_k * expert_k``, the global model where the gate is unsure.

    expert_preds: (N, K), NaN where bin k has no expert: that bin then contributes p_k * global.
    global_pred: (N,). proba: (N, K) gate probabilities in bin order. fallback: where
    ``max_k p_k < fallback`` (strictly) the prediction is the global one (0 never falls back).
    """
    expert_preds, global_pred = _check_routing_inputs(expert_preds, global_pred)
    proba = _check_proba(proba, expert_preds.shape)
    fallback = _check_fallback(fallback)
    filled = np.where(np.isnan(expert_preds), global_pred[:, None], expert_preds)
    pred = np.einsum("nk,nk->n", proba, filled)
    unsure = proba.max(axis=1, initial=0.0) < fallback
    pred[unsure] = global_pred[unsure]
    return Routed(pred=pred, chosen=np.argmax(proba, axis=1).astype(np.int64), fallback=unsure)


def noisy_snr(noisy_flux: np.ndarray, error: np.ndarray, level: float) -> np.ndarray:
    """(N,) float64 ``||noisy flux|| / ||error * level||`` per row of noisy_flux, error (N, D).

    The SNR a deployed model can measure: :func:`snrmoe_dask.core.snr.snr_norm` on the noisy flux
    instead of the noise-free one (which routes the oracle).
    """
    return snr_norm(noisy_flux, error, level)


def hard_route_noisy_snr(expert_preds: np.ndarray, global_pred: np.ndarray, snr: np.ndarray, bins: Bins) -> Routed:
    """Hard routing by the noisy-flux SNR: each spectrum gets the expert of ``bins.assign(snr)``.

    expert_preds: (N, K) in the order of ``bins.names``, NaN where a bin has no expert (the
    global prediction (N,) is used there); snr: (N,) e.g. from :func:`noisy_snr`.
    """
    expert_preds, global_pred = _check_routing_inputs(expert_preds, global_pred)
    if expert_preds.shape[1] != bins.n_bins:
        raise InputError(f"routing: {expert_preds.shape[1]} expert columns but {bins.n_bins} "
                         f"SNR bins {list(bins.names)}")
    snr = np.asarray(snr, dtype=np.float64)
    if snr.shape != global_pred.shape:
        raise InputError(f"routing: expected {global_pred.shape[0]} SNR values, got shape {snr.shape}")
    chosen = bins.assign(snr).astype(np.int64)
    pred = expert_preds[np.arange(len(chosen)), chosen]
    no_expert = np.isnan(pred)
    pred[no_expert] = global_pred[no_expert]
    return Routed(pred=pred, chosen=chosen, fallback=no_expert)


def one_hot(bin_idx: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, K) float64 probabilities 1 at each row's bin of bin_idx (N,): hard routing as a 'gate'."""
    n_classes = _check_n_classes(n_classes)
    bin_idx = np.asarray(bin_idx)
    bin_idx = _check_labels(bin_idx, bin_idx.shape[0] if bin_idx.ndim == 1 else -1, n_classes)
    out = np.zeros((bin_idx.shape[0], n_classes), dtype=np.float64)
    out[np.arange(bin_idx.shape[0]), bin_idx] = 1.0
    return out


# ----------------------------------------------------------------------------- scores
def _finite_or_none(value: Any, key: str) -> float | None:
    if value is None:
        return None
    value = check_number(f"gate_summary: {key}", value, "a number or None", error=InputError)
    return value if math.isfinite(value) else None


def rho_score(r2_deployed: float | None, r2_global: float | None, r2_oracle: float | None,
              headroom_ci: Sequence[float] | None = None) -> float | None:
    """``(R2_deployed - R2_global) / (R2_oracle - R2_global)``, or None where it is not defined.

    ρ is a share of the oracle's headroom R2_oracle - R2_global, so it needs a headroom: with
    ``headroom_ci`` (the interval [lo, hi] of that difference) only when the interval lies above 0,
    without one only when the headroom is > 0. None as well when any R2 is missing (None / NaN).
    """
    dep = _finite_or_none(r2_deployed, "r2_deployed")
    glo = _finite_or_none(r2_global, "r2_global")
    ora = _finite_or_none(r2_oracle, "r2_oracle")
    if dep is None or glo is None or ora is None or not ora > glo:
        return None
    if headroom_ci is not None:
        low = _finite_or_none(headroom_ci[0], "headroom_ci[0]")
        if low is None or low <= 0:
            return None
    return (dep - glo) / (ora - glo)


def gate_summary(labels_true: np.ndarray, proba: np.ndarray, names: Sequence[str], r2_deployed: float | None,
                 r2_global: float | None, r2_oracle: float | None, fallback_mask: np.ndarray,
                 headroom_ci: Sequence[float] | None = None) -> dict[str, Any]:
    """JSON-ready scores of a deployable routing on N test spectra over K bins.

    labels_true: (N,) true bin indices; proba: (N, K) gate probabilities (the predicted bin is
    the argmax; use :func:`one_hot` for hard routing); names: (K,) bin names in bin order;
    fallback_mask: (N,) bool, where the global model was used.
    Keys: accuracy, confusion (K x K, rows = true bin, columns = predicted bin, bin order),
    fallback_rate, rho (:func:`rho_score`, None without a headroom; headroom_ci: the interval of
    R2_oracle - R2_global where known), names.
    """
    names = [str(n) for n in names]
    k = len(names)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != k or proba.shape[0] == 0:
        raise InputError(f"gate_summary: expected probabilities of shape (N >= 1, {k}) for bins {names}, "
                         f"got {proba.shape}")
    labels_true = _check_labels(labels_true, proba.shape[0], k)
    fallback_mask = np.asarray(fallback_mask)
    if fallback_mask.shape != labels_true.shape or fallback_mask.dtype != bool:
        raise InputError(f"gate_summary: expected a boolean fallback mask of shape {labels_true.shape}, "
                         f"got {fallback_mask.dtype} {fallback_mask.shape}")
    predicted = np.argmax(proba, axis=1)
    from sklearn.metrics import accuracy_score, confusion_matrix

    confusion = confusion_matrix(labels_true, predicted, labels=np.arange(k))
    return {
        "accuracy": float(accuracy_score(labels_true, predicted)),
        "confusion": confusion.astype(int).tolist(),
        "fallback_rate": float(np.mean(fallback_mask)),
        "rho": rho_score(r2_deployed, r2_global, r2_oracle, headroom_ci),
        "names": names,
    }
