"""``BinnedRidge``: the global Ridge and one Ridge expert per bin, fitted from per-bin statistics.

A scikit-learn-style estimator over the sums of :func:`bin_statistics` (no data matrix): ``fit``
solves the global model (all bins) and every expert with enough training spectra from the D x D
sums, so a new alpha is only D x D solves away (``set_params(alpha=...).fit()``); ``predict``
routes each spectrum to the expert of its bin (oracle routing), on numpy or dask arrays.
"""

from __future__ import annotations

import logging
import numbers
import os
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.base import BaseEstimator

from ..core import card, pages
from ..core.alpha import AlphaChoice, alpha_grid, is_selection, select_alpha
from ..core.fold import PassResult
from ..core.partition import Partition
from ..core.ridge import RidgeModel, ScaledRidge, _check_alpha, scaler_of
from ..core.routing import oracle_route
from ..core.stats import BinStats
from ..errors import ConfigError, InputError
from ..io.models import load_models, save_models

log = logging.getLogger(__name__)

GLOBAL = "global"
SCALERS = ("per-expert", "shared")


def _computed(stats: Any) -> Any:
    """The value of a lazy (dask) result, or the value itself."""
    return stats.compute() if hasattr(stats, "__dask_graph__") else stats


def _as_stats(stats: Any, what: str) -> tuple[BinStats, PassResult | None]:
    stats = _computed(stats)
    if isinstance(stats, PassResult):
        return stats.stats, stats
    if isinstance(stats, BinStats):
        return stats, None
    raise InputError(f"{what}: expected the statistics of bin_statistics (PassResult or BinStats), "
                     f"got {type(stats).__name__}")


class BinnedRidge(BaseEstimator):
    """StandardScaler + Ridge: one global model and one expert per bin, from per-bin statistics.

    Parameters
    ----------
    alpha : float, "auto" or list of float
        The Ridge penalty (the card: 1e5), or candidates chosen per model by R² on validation
        statistics (``"auto"``: 1 to 1e7 in half decades; the card's value always joins the candidates).
    min_bin_samples : int
        A bin with fewer training spectra gets no expert; the global model serves it (the card: 100).
    scaler : {"per-expert", "shared"}
        Each expert standardises with its own bin's StandardScaler (the card), or all share the one
        fitted on every training spectrum.

    Attributes
    ----------
    global_ : RidgeModel
        The global model (``coef_``, ``intercept_``, ``alpha_``, ``n_train_``).
    experts_ : dict[str, RidgeModel | None]
        Every bin in order; None for a bin without an expert.
    n_features_in_ : int
        Pixels per spectrum.
    alpha_choice_ : AlphaChoice or None
        The validation curves and choices when ``alpha`` is "auto" or a list.
    partition_ : Partition or None
        How the training spectra were binned (from ``bin_statistics``), to bin other spectra alike.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from snrmoe_dask import BinnedRidge, bin_statistics
    >>> rng = np.random.default_rng(0)
    >>> flux = 1 + 0.5 * rng.random((400, 8))
    >>> ds = xr.Dataset({"flux": (("sample", "pixel"), flux),
    ...                  "error": (("sample", "pixel"), np.full((400, 8), 0.1 + 0.3 * rng.random((400, 1)))),
    ...                  "log_g": ("sample", flux @ rng.random(8))})
    >>> model = BinnedRidge(alpha=1.0, min_bin_samples=10).fit(bin_statistics(ds))
    >>> model
    BinnedRidge(alpha=1.0, min_bin_samples=10)
    >>> sorted(name for name, expert in model.experts_.items() if expert is not None)
    ['H', 'L', 'M']
    >>> model.set_params(alpha=10.0).fit().global_.alpha_
    10.0
    """

    def __init__(self, alpha: float | str | Sequence[float] = card.ALPHA,
                 min_bin_samples: int = card.MIN_BIN_SAMPLES, scaler: str = "per-expert") -> None:
        self.alpha = alpha
        self.min_bin_samples = min_bin_samples
        self.scaler = scaler

    # ------------------------------------------------------------------------- fitting
    def fit(self, stats: Any = None, val_stats: Any = None) -> "BinnedRidge":
        """Solve every model from training statistics (and choose alphas on validation statistics).

        stats: the value of :func:`bin_statistics` (a PassResult), its lazy form, or a BinStats;
        None re-solves from the statistics of the previous ``fit`` (no pass over any data).
        val_stats: statistics of the same bins over validation spectra, required when ``alpha`` is
        "auto" or a list.
        """
        self._check_params()
        if stats is None:
            if not hasattr(self, "_stats"):
                raise InputError("BinnedRidge.fit: no statistics; pass the value of bin_statistics(...)")
        else:
            self._stats, result = _as_stats(stats, "BinnedRidge.fit")
            self._problems: dict = {}  # prepared per-model problems (and the shared scaler) of these stats
            self.partition_: Partition | None = result.spec.bins if result is not None and result.spec else None
            self.pass_spec_ = result.spec if result is not None else None
        if val_stats is not None:
            self._val, _ = _as_stats(val_stats, "BinnedRidge.fit val_stats")
        train = self._stats
        if self.scaler == "shared" and "scaler" not in self._problems:
            self._problems["scaler"] = scaler_of(train)
        shared = self._problems["scaler"] if self.scaler == "shared" else None
        alphas = self._alphas(train, shared)
        names = list(train.names)
        self.n_features_in_ = train.d
        if getattr(self, "_work", None) is None or self._work.shape != (train.d, train.d):
            self._work = pages.empty((train.d, train.d))  # one factorisation scratch for every solve
        work = self._work
        self.global_ = self._problem(GLOBAL, lambda: train.total(GLOBAL), 0, None).model(alphas[GLOBAL], work)
        minimum = max(int(self.min_bin_samples), 1)
        self.experts_: dict[str, RidgeModel | None] = {}
        for k, name in enumerate(names):
            if train.n[k] >= minimum:
                self.experts_[name] = self._problem(name, lambda: train, k, shared).model(alphas[name], work)
            else:
                self.experts_[name] = None
                log.warning("bin %s: %d training spectra < min_bin_samples=%d, no expert; the global model "
                            "serves it", name, train.n[k], self.min_bin_samples)
        return self

    def _check_params(self) -> None:
        if is_selection(self.alpha):
            alpha_grid(self.alpha)  # validates the candidates
        else:
            _check_alpha(self.alpha)
        m = self.min_bin_samples
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 0:
            raise ConfigError(f"min_bin_samples: expected an integer >= 0, got {m!r}")
        if self.scaler not in SCALERS:
            raise ConfigError(f"scaler: expected one of {', '.join(SCALERS)}, got {self.scaler!r}")

    def _alphas(self, train: BinStats, shared) -> dict[str, float]:
        """{model: alpha}: the fixed alpha for every model, or each one chosen on validation."""
        self.alpha_choice_: AlphaChoice | None = None
        if not is_selection(self.alpha):
            return dict.fromkeys([GLOBAL, *train.names], float(self.alpha))
        if not hasattr(self, "_val"):
            raise InputError(f"alpha={self.alpha!r} chooses alpha on validation statistics: pass val_stats to fit")
        choice = select_alpha(train, self._val, alpha_grid(self.alpha), card.ALPHA, int(self.min_bin_samples),
                              shared)
        self.alpha_choice_ = choice
        return {GLOBAL: choice.global_model.alpha, **choice.expert_alphas()}

    def _problem(self, name: str, stats: Callable[[], BinStats], k: int, shared) -> ScaledRidge:
        """The prepared scaled problem of one model, kept across fits on the same statistics."""
        key = (name, "own" if shared is None else "shared")
        if key not in self._problems:
            self._problems[key] = ScaledRidge.from_stats(stats(), k, shared)
        return self._problems[key]

    # ------------------------------------------------------------------------- predicting
    @property
    def bin_names_(self) -> tuple[str, ...]:
        return tuple(self.experts_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "global_"):
            raise InputError("this BinnedRidge is not fitted yet: call fit(statistics) first")

    def bin_index(self, bins: Any) -> np.ndarray:
        """(N,) positions into ``bin_names_`` from (N,) positions or bin names."""
        bins = np.asarray(bins)
        names = self.bin_names_
        if bins.dtype.kind in "iu":
            if len(bins) and (bins.min() < 0 or bins.max() >= len(names)):
                raise InputError(f"bins: positions must lie in 0..{len(names) - 1}, got {bins.min()}..{bins.max()}")
            return bins.astype(np.intp)
        lookup = {name: k for k, name in enumerate(names)}
        unknown = sorted({str(b) for b in bins.tolist()} - set(lookup))
        if unknown:
            raise InputError(f"bins: unknown bin name(s) {unknown}; expected {list(names)}")
        return np.array([lookup[str(b)] for b in bins.tolist()], dtype=np.intp)

    def predict(self, flux: Any, bins: Any) -> Any:
        """(N,) predictions: each spectrum of ``flux`` (N, D) by the expert of its bin (N,), the global
        model where a bin has no expert. numpy in, numpy out; dask in, dask out (row-chunked)."""
        self._check_fitted()
        if hasattr(flux, "map_blocks"):
            import dask.array as da

            bins = da.asarray(bins).rechunk((flux.chunks[0],))
            return da.map_blocks(lambda f, b: self.predict(f, b[:, 0]), flux, bins[:, None], drop_axis=1,
                                 dtype=np.float64, meta=np.empty(0, np.float64))
        flux = np.asarray(flux)
        index = self.bin_index(bins)
        if index.shape != (flux.shape[0],):
            raise InputError(f"bins: expected {flux.shape[0]} values (one per spectrum), got shape {index.shape}")
        fallback = self.global_.predict(flux)
        return oracle_route(flux, index, list(self.experts_.values()), fallback)

    def predict_global(self, flux: Any) -> Any:
        """(N,) predictions of the global model alone."""
        self._check_fitted()
        if hasattr(flux, "map_blocks"):
            return flux.map_blocks(self.global_.predict, drop_axis=1, dtype=np.float64)
        return self.global_.predict(flux)

    # ------------------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> None:
        """Write ``models.h5`` (see ``io.models``): the global model and every expert, no pickle."""
        self._check_fitted()
        save_models(path, self.global_, self.experts_,
                    {"estimator": {"alpha": self.alpha, "min_bin_samples": int(self.min_bin_samples),
                                   "scaler": self.scaler}})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BinnedRidge":
        """A fitted BinnedRidge from a ``models.h5`` (the statistics are not stored: ``fit()`` needs new ones)."""
        global_model, experts, attrs = load_models(path)
        params = attrs.get("estimator", {})
        model = cls(**{k: params[k] for k in ("alpha", "min_bin_samples", "scaler") if k in params})
        model.global_, model.experts_, model.n_features_in_ = global_model, experts, global_model.n_features_in_
        model.alpha_choice_, model.partition_ = None, None
        return model
