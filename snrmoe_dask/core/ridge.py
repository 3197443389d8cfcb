"""Ridge regression with a StandardScaler in front, solved from per-bin statistics (no data pass).

From the sums of :mod:`snrmoe_dask.stats` (ddof = 0, as scikit-learn's StandardScaler):

    mu = c + s/n        M = S - s s^T / n        sigma_j = sqrt(M_jj / n)  (1 for ~constant features)
    C_xy = u - s t / n  A = diag(1/sigma) M diag(1/sigma) + alpha I       b = diag(1/sigma) C_xy
    w~ = solve(A, b) (Cholesky)   coef = w~ / sigma   intercept = y0 + t/n - mu . coef

This is ``make_pipeline(StandardScaler(), Ridge(alpha))`` of scikit-learn, folded into one
coefficient vector in raw feature space. Held-out errors of any model on another set of
spectra are also functions of that set's statistics.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass
from typing import Mapping

import h5py
import numpy as np
import scipy.linalg

from ..errors import ConfigError, InputError
from .stats import BinStats

log = logging.getLogger(__name__)

# Rows per chunk when predicting from float32 spectra: bounds the float64 copy to 128 MiB at D = 4096.
_PREDICT_CHUNK_ROWS = 4096


@dataclass(eq=False)
class RidgeModel:
    """A fitted scaler + Ridge, folded: ``prediction = x @ coef + intercept``.

    coef, scaler_mean, scaler_scale: (D,) float64 (coef in raw feature space; the scaler's
    mean and scale are kept for reference); alpha: the Ridge penalty; n_train: training spectra.
    """

    coef: np.ndarray
    intercept: float
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    alpha: float
    n_train: int

    @property
    def n_features_in_(self) -> int:
        return self.coef.shape[0]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(B,) float64 predictions for the spectra X (B, D), computed in float64."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise InputError(f"expected a 2-D array of spectra (B, {self.n_features_in_}), got shape {X.shape}")
        if X.shape[1] != self.n_features_in_:
            raise InputError(f"X has {X.shape[1]} features, but RidgeModel is expecting "
                             f"{self.n_features_in_} features as input")
        out = np.empty(X.shape[0], dtype=np.float64)
        for i in range(0, X.shape[0], _PREDICT_CHUNK_ROWS):
            rows = slice(i, i + _PREDICT_CHUNK_ROWS)
            np.matmul(X[rows].astype(np.float64, copy=False), self.coef, out=out[rows])
        out += self.intercept
        bad = np.count_nonzero(~np.isfinite(out))
        if bad:
            raise InputError(f"X holds NaN or inf: {bad} of {X.shape[0]} spectra have no finite prediction")
        return out

    def save(self, group: h5py.Group) -> None:
        """Write into an HDF5 group: datasets coef, intercept, scaler_mean, scaler_scale; attrs alpha, n_train."""
        for name in ("coef", "intercept", "scaler_mean", "scaler_scale"):
            if name in group:
                del group[name]
            group.create_dataset(name, data=getattr(self, name))
        group.attrs["alpha"] = self.alpha
        group.attrs["n_train"] = self.n_train

    @classmethod
    def load(cls, group: h5py.Group) -> "RidgeModel":
        """Read a model written by :meth:`save`."""
        try:
            return cls(coef=group["coef"][()], intercept=float(group["intercept"][()]),
                       scaler_mean=group["scaler_mean"][()], scaler_scale=group["scaler_scale"][()],
                       alpha=float(group.attrs["alpha"]), n_train=int(group.attrs["n_train"]))
        except KeyError as exc:
            raise InputError(f"{group.file.filename}:{group.name}: not a RidgeModel group ({exc})") from None


def _check_alpha(alpha, key: str = "model.alpha") -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha < 0:
        raise ConfigError(f"{key}: expected a finite number >= 0, got {alpha!r}")
    return float(alpha)


def _scale(var: np.ndarray, mean: np.ndarray, shift: np.ndarray, n: int) -> np.ndarray:
    """(D,) standard deviations, 1 for features indistinguishable from a constant.

    scikit-learn's rule (``_is_constant_feature``): var <= n eps var + (n mean eps)^2, the
    error bound of its two-pass variance. Our variance comes from the shifted one-pass formula
    S - s s^T / n, whose bound has the extra term n eps (mean - c)^2; it is zero when c is the
    mean, and catches a constant column when c is not exactly its value.
    """
    eps = np.finfo(np.float64).eps
    constant = var <= n * eps * var + (n * mean * eps) ** 2 + n * eps * (mean - shift) ** 2
    scale = np.sqrt(var)
    scale[constant] = 1.0
    return scale


@dataclass(frozen=True, eq=False)
class ScaledRidge:
    """The StandardScaler + Ridge problem of one bin, prepared once for any number of alphas.

    gram (D, D): the scaled centred Gram A = diag(1/sigma) M diag(1/sigma); rhs (D,): b = C_xy / sigma;
    mean, scale (D,): the scaler; y_mean: y0 + t/n; n: training spectra (see ``ridge`` module docstring).
    """

    gram: np.ndarray
    rhs: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    y_mean: float
    n: int
    name: str = ""

    @classmethod
    def from_stats(cls, stats: BinStats, bin: str | int = 0) -> "ScaledRidge":
        """Bin ``bin`` of ``stats``, with its StandardScaler folded in."""
        k = stats.index(bin)
        n = int(stats.n[k])
        if n <= 0:
            raise InputError(f"bin {stats.names[k]!r} has no training spectra; cannot fit a Ridge model")
        s, t = stats.s[k], float(stats.t[k])
        mean = stats.c + s / n
        gram = stats.S[k] - np.outer(s, s / n)
        scale = _scale(np.clip(np.diag(gram) / n, 0.0, None), mean, stats.c, n)
        gram /= scale[:, None]
        gram /= scale[None, :]
        rhs = (stats.u[k] - s * (t / n)) / scale
        return cls(gram, rhs, mean, scale, stats.y0 + t / n, n, stats.names[k])

    def _model(self, w: np.ndarray, alpha: float) -> RidgeModel:
        # w solves the scaled problem; fold the scaler into raw-space coef and intercept
        coef = w / self.scale
        return RidgeModel(coef=coef, intercept=self.y_mean - float(self.mean @ coef), scaler_mean=self.mean,
                          scaler_scale=self.scale, alpha=alpha, n_train=self.n)

    def model(self, alpha: float) -> RidgeModel:
        """The fitted model at ``alpha`` by one Cholesky of A + alpha I, O(D^3)."""
        alpha = _check_alpha(alpha)
        try:
            factor = scipy.linalg.cho_factor(self._shifted(alpha), overwrite_a=True, check_finite=False)
            w = scipy.linalg.cho_solve(factor, self.rhs, check_finite=False)
        except np.linalg.LinAlgError:
            log.warning("bin %r: the scaled Gram + alpha I (alpha=%g) is not positive definite; "
                        "using a least-squares solution instead", self.name, alpha)
            w = scipy.linalg.lstsq(self._shifted(alpha), self.rhs)[0]
        return self._model(w, alpha)

    def _shifted(self, alpha: float) -> np.ndarray:
        """(D, D) A + alpha I, Fortran-ordered so that LAPACK factorises it in place without another copy."""
        # A is symmetric: its transpose is the same matrix, and copying that view is a plain memcpy
        a = self.gram.T.copy(order="F")
        a[np.diag_indices_from(a)] += alpha
        return a

def solve_ridge(stats: BinStats, alpha: float, bin: str | int = 0) -> RidgeModel:
    """StandardScaler + Ridge(alpha) fitted on the spectra of one bin, from its statistics."""
    return ScaledRidge.from_stats(stats, bin).model(alpha)


def solve_all(stats: BinStats, alpha: float | Mapping[str, float], min_samples: int = 0) -> dict[str, RidgeModel | None]:
    """One model per bin, in bin order; None for a bin with fewer than max(min_samples, 1) spectra.

    alpha: one penalty for all bins, or ``{bin name: alpha}`` covering every bin.
    """
    if isinstance(alpha, Mapping):
        missing = [name for name in stats.names if name not in alpha]
        unknown = [name for name in alpha if name not in stats.names]
        if missing or unknown:
            raise ConfigError(f"model.alpha: per-bin alphas must name exactly the bins {list(stats.names)}; "
                              f"missing {missing}, unknown {unknown}")
        alphas = {name: _check_alpha(alpha[name], f"model.alpha.{name}") for name in stats.names}
    else:
        alphas = dict.fromkeys(stats.names, _check_alpha(alpha))
    return {name: solve_ridge(stats, alphas[name], k) if stats.n[k] >= max(min_samples, 1) else None
            for k, name in enumerate(stats.names)}


def heldout_sse(model: RidgeModel, stats: BinStats, bin: str | int = 0) -> float:
    """sum (y - x . coef - intercept)^2 over the spectra summarised by bin ``bin`` of ``stats``.

    With x = c + d and y = y0 + e, the residual is e - d . w + k0, k0 = y0 - c . w - intercept:
    SSE = q - 2 u . w + w^T S w + n k0^2 + 2 k0 (t - s . w).
    """
    if model.n_features_in_ != stats.d:
        raise InputError(f"the model has {model.n_features_in_} features but the statistics {stats.d} pixels")
    k = stats.index(bin)
    w = model.coef
    k0 = stats.y0 - float(stats.c @ w) - model.intercept
    s_w = float(stats.s[k] @ w)
    sse = (stats.q[k] - 2.0 * float(stats.u[k] @ w) + float(w @ (stats.S[k] @ w))
           + stats.n[k] * k0 ** 2 + 2.0 * k0 * (stats.t[k] - s_w))
    return max(float(sse), 0.0)


def heldout_r2(model: RidgeModel, stats: BinStats, bin: str | int = 0) -> float:
    """R^2 of the model on the spectra of bin ``bin`` of ``stats``, against their own mean of y.

    As scikit-learn's r2_score: 1.0 for a perfect fit of a constant target, 0.0 otherwise then.
    """
    k = stats.index(bin)
    n = int(stats.n[k])
    if n <= 0:
        raise InputError(f"bin {stats.names[k]!r} has no held-out spectra; R^2 is undefined")
    sse = heldout_sse(model, stats, k)
    sst = float(stats.q[k] - stats.t[k] ** 2 / n)
    if sst <= 0.0:
        return 1.0 if sse == 0.0 else 0.0
    return 1.0 - sse / sst
