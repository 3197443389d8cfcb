"""Ridge alpha per model, chosen on a validation set from statistics alone (no second data pass).

For ``model.alpha: auto`` (a log grid) or a list of candidates, every model (the global one and
each expert) is solved on its training statistics for each candidate alpha and scored by
``ridge.heldout_r2`` on the validation statistics of the same cell (sums over the validation
spectra, see :mod:`snrmoe_dask.core.stats`; the model is in raw feature space, so the validation sums
may use any shift c, y0). The fixed alpha (the card's 100000) is always a candidate: the choice is
never worse on validation than the fixed alpha, and its R² there gives the "gain over the card".

Many alphas, one matrix: the scaled Gram A of a model is built once (``ridge.ScaledRidge``), then
either factorised once per alpha (Cholesky of A + alpha I, what ``ridge.solve_ridge`` does), or
decomposed once, A = U diag(lam) U^T, after which solve(A + alpha I, b) = U diag(1/(lam + alpha)) U^T b
costs O(D^2) per alpha (``EigenRidge``). One eigendecomposition costs as much as many Cholesky
factorisations (the tridiagonal reduction inside eigh is memory-bound; the measurements are in
docs/performance.md, "Measurements behind choices in the code"), so the eigen path is taken only from
``EIGEN_MIN_ALPHAS`` candidates on; "auto" (15 values with the card's 1e5) factorises per alpha.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError, InputError
from .card_defaults import ALPHA as CARD_ALPHA
from .ridge import RidgeModel, ScaledRidge, _check_alpha, heldout_r2, heldout_sse
from .stats import BinStats

log = logging.getLogger(__name__)

# "auto": 1, 10^0.5, ..., 10^7 (15 values); the card's 1e5 is on it.
AUTO_GRID = tuple(float(a) for a in 10.0 ** np.arange(0.0, 7.01, 0.5))
# A validation cell needs two spectra for an R² (one has no spread of y).
MIN_VAL_SAMPLES = 2
# From this many alphas on, one eigh per model beats one Cholesky per alpha (docs/performance.md).
EIGEN_MIN_ALPHAS = 22
GLOBAL = "global"


def alpha_grid(spec: float | str | Sequence[float]) -> list[float]:
    """The candidate alphas of ``model.alpha``: "auto" -> AUTO_GRID, a list -> sorted, distinct; a number -> [it]."""
    if isinstance(spec, str):
        if spec.strip().lower() != "auto":
            raise ConfigError(f"model.alpha: expected a number >= 0, 'auto' or a list of numbers, got {spec!r}")
        return list(AUTO_GRID)
    if isinstance(spec, (list, tuple, np.ndarray)):
        if len(spec) == 0:
            raise ConfigError("model.alpha: the list of candidate alphas is empty")
        return sorted({_check_alpha(a) for a in spec})
    return [_check_alpha(spec)]


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class ModelAlpha:
    """The alpha of one model and why.

    alphas: (A,) candidates, ascending; r2: (A,) validation R² per candidate, or None when the
    model fell back to the global model's alpha (``source == "global"``); r2_fixed: validation R²
    at the fixed alpha (None without one, or on fallback).
    """

    name: str
    alpha: float
    alphas: np.ndarray
    r2: np.ndarray | None
    r2_fixed: float | None
    n_train: int
    n_val: int
    source: str  # "validation" or "global"
    note: str = ""

    @property
    def r2_chosen(self) -> float | None:
        """Validation R² at the chosen alpha (None on fallback)."""
        if self.r2 is None:
            return None
        return float(self.r2[int(np.flatnonzero(self.alphas == self.alpha)[0])])

    @property
    def gain(self) -> float | None:
        """Validation R² at the chosen alpha minus at the fixed alpha (>= 0 by construction)."""
        if self.r2_chosen is None or self.r2_fixed is None:
            return None
        return self.r2_chosen - self.r2_fixed

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record for results.json."""
        return {
            "alpha": self.alpha, "source": self.source, "note": self.note,
            "n_train": self.n_train, "n_val": self.n_val,
            "val_r2": self.r2_chosen, "val_r2_fixed": self.r2_fixed, "gain_over_fixed": self.gain,
            "curve": {"alpha": self.alphas.tolist(), "val_r2": None if self.r2 is None else self.r2.tolist()},
        }


@dataclass(frozen=True, eq=False)
class AlphaChoice:
    """Alphas of the global model and of every expert (bins with enough training spectra).

    names: all bins of the training statistics, in order; experts: only the bins that get an
    expert (>= min_samples training spectra), in bin order.
    """

    fixed_alpha: float | None
    global_model: ModelAlpha
    experts: dict[str, ModelAlpha]
    names: tuple[str, ...] = field(default=())

    def expert_alphas(self) -> dict[str, float]:
        """``{bin: alpha}`` for every bin (no expert -> the global alpha)."""
        return {name: self.experts[name].alpha if name in self.experts else self.global_model.alpha
                for name in self.names}

    def to_dict(self) -> dict[str, Any]:
        return {"fixed_alpha": self.fixed_alpha, "global": self.global_model.to_dict(),
                "experts": {name: m.to_dict() for name, m in self.experts.items()}}


# ----------------------------------------------------------------------------- solving for many alphas

@dataclass(frozen=True, eq=False)
class EigenRidge:
    """One bin's Ridge for any alpha from A = U diag(lam) U^T: evals (D,), evecs (D, D), proj (D,) = U^T b."""

    problem: ScaledRidge
    evals: np.ndarray
    evecs: np.ndarray
    proj: np.ndarray

    @classmethod
    def from_stats(cls, stats: BinStats, bin: str | int = 0) -> "EigenRidge":
        return cls.of(ScaledRidge.from_stats(stats, bin))

    @classmethod
    def of(cls, problem: ScaledRidge) -> "EigenRidge":
        """Decompose A once (O(D^3), about 20 Cholesky solves at D = 4096); then O(D^2) per alpha."""
        import scipy.linalg  # at first use: a command needs it only after its pass (see snrmoe_dask._preload)

        evals, evecs = scipy.linalg.eigh(problem.upper(), lower=False, check_finite=False, driver="evd")
        # A is positive semi-definite; a slightly negative eigenvalue is rounding
        np.clip(evals, 0.0, None, out=evals)
        return cls(problem, evals, evecs, evecs.T @ problem.rhs)

    def model(self, alpha: float) -> RidgeModel:
        """The fitted model at ``alpha``, O(D^2): w = U diag(1 / (lam + alpha)) U^T b."""
        alpha = _check_alpha(alpha)
        denom = self.evals + alpha
        # alpha = 0 on a singular Gram: the minimum-norm solution (drop the null space), as lstsq
        tiny = denom <= self.evals[-1] * len(denom) * np.finfo(np.float64).eps
        inverse = np.divide(1.0, denom, out=np.zeros_like(denom), where=~tiny)
        return self.problem._model(self.evecs @ (self.proj * inverse), alpha)


def _solver(stats: BinStats, k: int, n_alphas: int, scaler=None) -> Callable[[float], RidgeModel]:
    """alpha -> fitted model for bin k: one eigh for many alphas, else one Cholesky per alpha."""
    problem = ScaledRidge.from_stats(stats, k, scaler)
    return EigenRidge.of(problem).model if n_alphas >= EIGEN_MIN_ALPHAS else problem.model


def _candidates(grid: Sequence[float], fixed_alpha: float | None) -> np.ndarray:
    # the fixed alpha joins the candidates, so the choice can never be worse than it on validation
    extra = [] if fixed_alpha is None else [_check_alpha(fixed_alpha)]
    return np.array(sorted({_check_alpha(a) for a in grid} | set(extra)), dtype=np.float64)


def _choose(name: str, train: BinStats, k_train: int, val: BinStats, k_val: int,
            alphas: np.ndarray, fixed_alpha: float | None, scaler=None) -> ModelAlpha:
    """Score every alpha of one model on its validation cell; the lowest validation SSE wins."""
    fit = _solver(train, k_train, len(alphas), scaler)
    models = [fit(a) for a in alphas]
    # SSE ranks as R² does, and still ranks when the validation targets are all equal (R² = 0 then)
    sse = np.array([heldout_sse(m, val, k_val) for m in models])
    r2 = np.array([heldout_r2(m, val, k_val) for m in models])
    best = int(np.argmin(sse))
    r2_fixed = None if fixed_alpha is None else float(r2[int(np.flatnonzero(alphas == fixed_alpha)[0])])
    return ModelAlpha(name, float(alphas[best]), alphas, r2, r2_fixed, int(train.n[k_train]),
                      int(val.n[k_val]), "validation")


def _fallback(name: str, n_train: int, n_val: int, alpha: float, alphas: np.ndarray) -> ModelAlpha:
    note = (f"only {n_val} validation spectra (< {MIN_VAL_SAMPLES}): uses the global model's alpha "
            f"{alpha:g}")
    return ModelAlpha(name, alpha, alphas, None, None, n_train, n_val, "global", note)


def _check_pair(train: BinStats, val: BinStats) -> None:
    if val.names != train.names:
        raise InputError(f"alpha selection: validation statistics have bins {val.names}, "
                         f"training statistics {train.names}")
    if val.d != train.d:
        raise InputError(f"alpha selection: validation statistics have {val.d} pixels, training {train.d}")


def select_alpha(train: BinStats, val: BinStats, grid: Sequence[float], fixed_alpha: float | None = CARD_ALPHA,
                 min_samples: int = 0, scaler: tuple[np.ndarray, np.ndarray] | None = None) -> AlphaChoice:
    """Choose alpha for the global model (all bins) and for every bin with an expert.

    train, val: statistics of the same bins (K,) over the training and validation spectra.
    grid: candidate alphas (``alpha_grid``); fixed_alpha joins them and is the baseline of
    ``gain``. A bin gets an expert when it has >= max(min_samples, 1) training spectra; an expert
    whose validation cell has < MIN_VAL_SAMPLES spectra takes the global model's alpha (noted).
    scaler: (mean, scale) of one StandardScaler shared by the experts (``ridge.scaler_of``), or None
    for each model's own. Solves only from the statistics: no pass over any data.
    """
    _check_pair(train, val)
    alphas = _candidates(grid, fixed_alpha)
    fixed = None if fixed_alpha is None else float(fixed_alpha)
    train_all, val_all = train.total(), val.total()
    if val_all.n[0] < MIN_VAL_SAMPLES:
        raise InputError(f"alpha selection: the validation set has {int(val_all.n[0])} spectra; "
                         f"choosing alpha needs at least {MIN_VAL_SAMPLES}")
    global_model = _choose(GLOBAL, train_all, 0, val_all, 0, alphas, fixed)
    experts = {}
    for k, name in enumerate(train.names):
        n_train, n_val = int(train.n[k]), int(val.n[k])
        if n_train < max(min_samples, 1):
            continue  # no expert: the global model serves this bin
        if n_val < MIN_VAL_SAMPLES:
            experts[name] = _fallback(name, n_train, n_val, global_model.alpha, alphas)
        else:
            experts[name] = _choose(name, train, k, val, k, alphas, fixed, scaler)
    return AlphaChoice(fixed, global_model, experts, train.names)


def is_selection(spec: Any) -> bool:
    """True when ``model.alpha`` asks for a choice on validation ("auto" or a list)."""
    return isinstance(spec, (list, tuple)) or (isinstance(spec, str) and spec.strip().lower() == "auto")


__all__ = ["AUTO_GRID", "CARD_ALPHA", "AlphaChoice", "EigenRidge", "ModelAlpha", "alpha_grid",
           "is_selection", "select_alpha"]
