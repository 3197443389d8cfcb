"""Ridge regression with a StandardScaler in front, solved from per-bin statistics (no data pass).

From the sums of :mod:`snrmoe_dask.core.stats` (ddof = 0, as scikit-learn's StandardScaler):

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
import re
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from . import small_pages
from .params import check_number
from .stats import BinStats, GramTiles

log = logging.getLogger(__name__)

# Rows per chunk when predicting from float32 spectra: bounds the float64 copy to 128 MiB at D = 4096.
_PREDICT_CHUNK_ROWS = 4096
# Rows of the Gram prepared at a time: bounds the outer-product scratch, and the rows of the global
# model's summed tiles (stats.SummedBins), to 4 MiB each at D = 4096.
_ROW_CHUNK = 128


@dataclass(eq=False)
class RidgeModel:
    """A fitted scaler + Ridge, folded: ``prediction = x @ coef_ + intercept_``.

    coef_, scaler_mean_, scaler_scale_: (D,) float64 (coef_ in raw feature space; the scaler's
    mean and scale are kept for reference); alpha_: the Ridge penalty; n_train_: training spectra.
    """

    coef_: np.ndarray
    intercept_: float
    scaler_mean_: np.ndarray
    scaler_scale_: np.ndarray
    alpha_: float
    n_train_: int

    @property
    def n_features_in_(self) -> int:
        return self.coef_.shape[0]

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
            np.matmul(X[rows].astype(np.float64, copy=False), self.coef_, out=out[rows])
        out += self.intercept_
        bad = np.count_nonzero(~np.isfinite(out))
        if bad:
            raise InputError(f"X holds NaN or inf: {bad} of {X.shape[0]} spectra have no finite prediction")
        return out


def _check_alpha(alpha, key: str = "model.alpha") -> float:
    return check_number(key, alpha, "a finite number >= 0", test=lambda a: math.isfinite(a) and a >= 0)


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

    gram: the scaled centred Gram A = diag(1/sigma) M diag(1/sigma) (D, D), its upper triangle only,
    held as the tiles of :func:`~snrmoe_dask.core.stats.gram_tiles` (half the memory of a dense copy:
    a fit holds one per model); rhs (D,): b = C_xy / sigma;
    mean (D,): the bin's mean (Ridge centres on it); scale (D,): the scaler's; y_mean: y0 + t/n;
    n: training spectra (see ``ridge`` module docstring).
    """

    gram: GramTiles | None  # None: built into the caller's array (from_stats ``into``)
    rhs: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    y_mean: float
    n: int
    name: str = ""
    scaler_mean: np.ndarray | None = None  # the scaler's own mean when it was fitted on other spectra

    @classmethod
    def from_stats(cls, stats: BinStats, bin: str | int = 0, scaler: tuple[np.ndarray, np.ndarray] | None = None,
                   into: np.ndarray | None = None) -> "ScaledRidge":
        """Bin ``bin`` of ``stats``, with its StandardScaler folded in.

        scaler: (mean, scale) (D,) of a StandardScaler fitted on other spectra (e.g. all bins, see
        :func:`scaler_of`) to use instead of this bin's own. Ridge still centres the bin's scaled
        features on their own mean (its intercept), so only the scale enters the solve.
        into: a (D, D) float64 C-ordered array to build A in (its upper triangle) instead of the problem's
        own tiles: the problem is then for one solve, ``model(alpha, into)`` (see :func:`solve_once`).
        """
        k = stats.index(bin)
        n = int(stats.n[k])
        if n <= 0:
            raise InputError(f"bin {stats.names[k]!r} has no training spectra; cannot fit a Ridge model")
        s, t = stats.s[k], float(stats.t[k])
        mean = stats.c + s / n
        s_n = s / n
        if scaler is None:
            scale = _scale(np.clip((stats.gram_diagonal(k) - s * s_n) / n, 0.0, None), mean, stats.c, n)
        else:
            scale = scaler[1]
        gram = GramTiles.empty(1, stats.d) if into is None else None
        scratch = np.empty(min(_ROW_CHUNK, stats.d) * stats.d)
        for index, (i0, i1, j0, j1, tile) in enumerate(stats.upper_tiles(k)):
            out = gram.tile(0, index) if gram is not None else into[i0:i1, j0:j1]
            # M = S - s s^T / n, then / sigma_i / sigma_j, a few rows at a time (no D x D temporary)
            for r in range(0, i1 - i0, _ROW_CHUNK):
                part = out[r:r + _ROW_CHUNK]
                rows = slice(i0 + r, i0 + r + part.shape[0])
                outer = np.outer(s[rows], s_n[j0:j1], out=scratch[:part.size].reshape(part.shape))
                np.subtract(tile[r:r + _ROW_CHUNK], outer, out=part)
                part /= scale[rows, None]
                part /= scale[None, j0:j1]
        rhs = (stats.u[k] - s * (t / n)) / scale
        return cls(gram, rhs, mean, scale, stats.y0 + t / n, n, stats.names[k],
                   None if scaler is None else scaler[0])

    def upper(self, out: np.ndarray | None = None) -> np.ndarray:
        """(D, D) A, C-ordered, in its upper triangle (diagonal included; the lower one is not to be
        read), in ``out`` or a new array (a problem built ``into`` an array: that array, which the caller
        passes as ``out``)."""
        if self.gram is None:
            return out
        d = self.gram.d
        out = small_pages.empty((d, d)) if out is None else out
        for t, (i0, i1, j0, j1) in enumerate(self.gram.tiles):
            out[i0:i1, j0:j1] = self.gram.tile(0, t)
        return out

    def _model(self, w: np.ndarray, alpha: float) -> RidgeModel:
        # w solves the scaled problem; fold the scaler into raw-space coef and intercept
        coef = w / self.scale
        return RidgeModel(coef_=coef, intercept_=self.y_mean - float(self.mean @ coef),
                          scaler_mean_=self.mean if self.scaler_mean is None else self.scaler_mean,
                          scaler_scale_=self.scale, alpha_=alpha, n_train_=self.n)

    def model(self, alpha: float, work: np.ndarray | None = None) -> RidgeModel:
        """The fitted model at ``alpha`` by one Cholesky of A + alpha I, O(D^3).

        work: a (D, D) float64 C-ordered scratch to factorise in (its values are overwritten): reusing
        one across models and alphas spares the page faults of a fresh D x D array each time."""
        import scipy.linalg  # at first use: a command needs it only after its pass (see snrmoe_dask._preload)

        alpha = _check_alpha(alpha)
        try:
            # the transpose of the C-ordered copy is Fortran-ordered, its lower triangle A's upper one:
            # LAPACK factorises it in place, with no other copy and no need of a mirrored A
            factor = scipy.linalg.cho_factor(self._shifted(alpha, work).T, lower=True, overwrite_a=True,
                                             check_finite=False)
            w = scipy.linalg.cho_solve(factor, self.rhs, check_finite=False)
        except np.linalg.LinAlgError as exc:
            if self.gram is None:  # A was factorised where it was built: solve_once builds it again
                raise
            log.warning("bin %r: the scaled Gram + alpha I (alpha=%g) is not positive definite%s; "
                        "using a least-squares solution instead", self.name, alpha, self._where_broken(exc))
            upper = self._shifted(alpha)
            w = scipy.linalg.lstsq(np.triu(upper) + np.triu(upper, 1).T, self.rhs)[0]
        return self._model(w, alpha)

    def _where_broken(self, exc: np.linalg.LinAlgError) -> str:
        """Where the factorisation failed (LAPACK names the leading minor) and that pixel's scale
        against the median pixel's: one pixel far wider than the others points at a few values far
        outside their rows' scale (the sums no longer say which rows)."""
        found = re.search(r"(\d+)-th leading minor", str(exc))
        if not found:
            return ""
        pixel = int(found.group(1)) - 1
        ratio = float(self.scale[pixel] / np.median(self.scale)) if 0 <= pixel < len(self.scale) else math.nan
        return (f" (it fails at pixel {pixel}, whose scale is {ratio:.3g} times the median pixel's"
                + ("; a few values far outside their rows' scale there?" if ratio > 1e3 else "") + ")")

    def _shifted(self, alpha: float, work: np.ndarray | None = None) -> np.ndarray:
        """(D, D) A + alpha I, C-ordered (upper triangle valid), in ``work`` or a new array."""
        a = self.upper(work)
        a[np.diag_indices_from(a)] += alpha
        return a


def solve_once(stats: BinStats, alpha: float, bin: str | int, scaler: tuple[np.ndarray, np.ndarray] | None,
               work: np.ndarray) -> RidgeModel:
    """``ScaledRidge.from_stats(stats, bin, scaler).model(alpha, work)``, the same bits, with A built
    straight into ``work`` ((D, D) float64, C-ordered; overwritten): no problem's own copy of A (D x D / 2
    float64) besides it, for a fit that keeps nothing for other alphas. A that is not positive definite
    is built again for :meth:`ScaledRidge.model`'s least-squares way out."""
    try:
        return ScaledRidge.from_stats(stats, bin, scaler, into=work).model(alpha, work)
    except np.linalg.LinAlgError:
        return ScaledRidge.from_stats(stats, bin, scaler).model(alpha, work)


def scaler_of(stats: BinStats) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) (D,) of a StandardScaler fitted on all the spectra of ``stats`` (every bin)."""
    total = stats.total_tiles()  # its diagonal is all a scaler reads of S
    n = int(total.n[0])
    if n <= 0:
        raise InputError("the statistics hold no spectra; cannot fit a StandardScaler")
    mean = total.c + total.s[0] / n
    var = np.clip((total.gram_diagonal(0) - total.s[0] ** 2 / n) / n, 0.0, None)
    return mean, _scale(var, mean, total.c, n)


def solve_ridge(stats: BinStats, alpha: float, bin: str | int = 0) -> RidgeModel:
    """StandardScaler + Ridge(alpha) fitted on the spectra of one bin, from its statistics."""
    return ScaledRidge.from_stats(stats, bin).model(alpha)


def heldout_sse(model: RidgeModel, stats: BinStats, bin: str | int = 0) -> float:
    """sum (y - x . coef - intercept)^2 over the spectra summarised by bin ``bin`` of ``stats``.

    With x = c + d and y = y0 + e, the residual is e - d . w + k0, k0 = y0 - c . w - intercept:
    SSE = q - 2 u . w + w^T S w + n k0^2 + 2 k0 (t - s . w).
    """
    if model.n_features_in_ != stats.d:
        raise InputError(f"the model has {model.n_features_in_} features but the statistics {stats.d} pixels")
    k = stats.index(bin)
    w = model.coef_
    k0 = stats.y0 - float(stats.c @ w) - model.intercept_
    s_w = float(stats.s[k] @ w)
    sse = (stats.q[k] - 2.0 * float(stats.u[k] @ w) + stats.quadratic(k, w)
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
