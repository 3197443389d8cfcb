"""``BinnedRidge``: the global Ridge and one Ridge expert per bin, fitted from per-bin statistics.

A scikit-learn regressor over the sums of :func:`bin_statistics` (no data matrix): ``fit`` solves the
global model (all bins) and every expert with enough training spectra from the D x D sums, so a new
alpha is only D x D solves away (``set_params(alpha=...).fit()``); ``predict`` routes each spectrum
to the expert of its bin (oracle routing), on numpy, dask or xarray inputs. The statistics stay in
the process that fitted: a pickled or saved model holds its coefficients, bins and pass rule only.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any, Literal, Sequence

import numpy as np
from pydantic import Field
from sklearn.base import BaseEstimator, RegressorMixin

from ..core import card_defaults, small_pages
from ..core.alpha import AlphaChoice, alpha_grid, is_selection, select_alpha
from ..core.block_pass import PassResult, PassSpec
from ..core.params import Param, check_params
from ..core.partition import Partition
from ..core.ridge import RidgeModel, ScaledRidge, scaler_of, solve_once
from ..core.routing import oracle_route, route_by_snr
from ..core.stats import BinStats
from ..errors import InputError
from ..io.models import load_models, save_models

log = logging.getLogger(__name__)

GLOBAL = "global"
SCALERS = ("per-expert", "shared")
_Alpha = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PARAMS = {
    "alpha": Param(_Alpha | Literal["auto"] | Annotated[list[_Alpha], Field(min_length=1)],
                   "a finite number >= 0, 'auto' or a non-empty list of such numbers"),
    "min_bin_samples": Param(Annotated[int, Field(ge=0)], "an integer >= 0"),
    "scaler": Param(Literal[SCALERS], f"one of {', '.join(map(repr, SCALERS))}"),
}
# What a fit holds besides its results: the training and validation sums (K x D x D) and the prepared
# problems; they serve a re-fit in this process and are never pickled.
_HELD = ("_stats", "_val", "_problems", "_work")


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


def _array_of(x: Any) -> Any:
    """The numpy or dask array behind an xarray object, or ``x`` itself."""
    return x.data if _is_xarray(x) else x


def _is_xarray(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "xarray"


def _predict_block(flux: np.ndarray, index: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """(B,) predictions of the rows flux (B, D) whose models are index (B, 1): row m of coef (M, D)
    and intercept (M,)."""
    index = index[:, 0]
    out = np.empty(flux.shape[0])
    for m in np.unique(index):
        rows = index == m
        out[rows] = flux[rows].astype(np.float64, copy=False) @ coef[m] + intercept[m]
    return out


def _route_block(flux: np.ndarray, error: np.ndarray, spec: PassSpec, coef: np.ndarray,
                 intercept: np.ndarray) -> np.ndarray:
    """(B,) predictions of rows flux (B, D) routed by the SNR of flux and error (B, D) (``spec``'s rule);
    coef (1 + K, D): the global model, then one row per bin (the global model's where a bin has none)."""
    index = 1 + route_by_snr(spec, np.asarray(flux), np.asarray(error))
    return _predict_block(flux, index[:, None], coef, intercept)


class BinnedRidge(RegressorMixin, BaseEstimator):
    """StandardScaler + Ridge: one global model and one expert per bin, fitted from per-bin statistics.

    Parameters
    ----------
    alpha : float, "auto" or list of float, default 1e5
        The Ridge penalty (the card's 1e5), or candidates chosen per model by R² on validation
        statistics (``"auto"``: 1 to 1e7 in half decades; a list is used as given).
    min_bin_samples : int, default 100
        A bin with fewer training spectra gets no expert; the global model serves it (the card).
    scaler : {"per-expert", "shared"}, default "per-expert"
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
    pass_spec_ : PassSpec or None
        The training pass's rule: SNR method, noise, clipping, precision (None for hand-built sums).

    Notes
    -----
    ``fit`` takes the sums of :func:`bin_statistics` (one pass over data of any size), not a data
    matrix ``(X, y)``, so scikit-learn's ``GridSearchCV`` and the estimator checks that call
    ``fit(X, y)`` do not apply; ``get_params``/``set_params``/``clone``, ``predict``, ``score``
    (R²), ``is_regressor`` and ``NotFittedError`` behave as scikit-learn's. The training sums
    (K x D x D values) stay in the fitting process for re-fits at other alphas; a pickled or saved
    model holds only its coefficients, bins and pass rule.

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

    def __init__(self, alpha: float | str | Sequence[float] = card_defaults.ALPHA, *,
                 min_bin_samples: int = card_defaults.MIN_BIN_SAMPLES, scaler: str = "per-expert") -> None:
        self.alpha = alpha
        self.min_bin_samples = min_bin_samples
        self.scaler = scaler

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())  # a copy: the base may hand out the instance's own __dict__
        for name in _HELD:
            state.pop(name, None)
        return state

    def _validated_params(self) -> dict[str, Any]:
        alpha, minimum = self.alpha, self.min_bin_samples
        values = {"alpha": list(alpha) if isinstance(alpha, (tuple, np.ndarray)) else alpha,
                  "min_bin_samples": int(minimum) if isinstance(minimum, np.integer) else minimum,
                  "scaler": self.scaler}
        return check_params(type(self).__name__, PARAMS, values)

    # ------------------------------------------------------------------------- fitting
    def fit(self, stats: Any = None, val_stats: Any = None, *, refit: bool = True) -> "BinnedRidge":
        """Solve the global model and every expert from training statistics.

        Parameters
        ----------
        stats : PassResult, its lazy form, BinStats or None
            The value of :func:`bin_statistics` (computed here if lazy). None re-solves from the
            statistics of the previous ``fit`` in this process (no pass over any data), e.g. after
            ``set_params(alpha=...)``.
        val_stats : PassResult, its lazy form, BinStats or None
            Statistics of the same bins over validation spectra, required when ``alpha`` is "auto" or
            a list. Kept for later re-fits until new training statistics are given.
        refit : bool, default True
            Keep the statistics and each model's prepared problem (a D x D matrix) for re-fits at
            other alphas. False solves the models one after another, each problem dropped once solved,
            and keeps nothing but the coefficients: a one-off fit in the least memory.

        Returns
        -------
        BinnedRidge
            self, fitted: ``global_``, ``experts_``, ``n_features_in_``, ``alpha_choice_``,
            ``partition_``, ``pass_spec_``.
        """
        params = self._validated_params()
        if stats is None:
            if not hasattr(self, "_stats"):
                raise InputError("BinnedRidge.fit: no statistics in this process (a new, loaded or unpickled "
                                 "model); pass the value of bin_statistics(...)")
        else:
            self._stats, result = _as_stats(stats, "BinnedRidge.fit")
            self.__dict__.pop("_val", None)  # validation sums of other training statistics
            self._problems: dict = {}  # prepared per-model problems (and the shared scaler) of these stats
            self.pass_spec_: PassSpec | None = result.spec if result is not None else None
            self.partition_: Partition | None = self.pass_spec_.bins if self.pass_spec_ is not None else None
        if val_stats is not None:
            self._val, _ = _as_stats(val_stats, "BinnedRidge.fit val_stats")
        train = self._stats
        if params["scaler"] == "shared" and "scaler" not in self._problems:
            self._problems["scaler"] = scaler_of(train)
        shared = self._problems["scaler"] if params["scaler"] == "shared" else None
        alphas = self._alphas(train, shared, params["alpha"], params["min_bin_samples"])
        self.n_features_in_ = train.d
        if getattr(self, "_work", None) is None or self._work.shape != (train.d, train.d):
            self._work = small_pages.empty((train.d, train.d))  # one factorisation scratch for every solve
        work = self._work

        def solve(name: str, stats, k: int, scaler) -> RidgeModel:
            key = (name, "own" if scaler is None else "shared")
            problem = self._problems.get(key)
            if problem is None and not refit:  # nothing to keep: the problem built in the scratch itself
                return solve_once(stats(), alphas[name], k, scaler, work)
            problem = problem or ScaledRidge.from_stats(stats(), k, scaler)
            if refit:
                self._problems[key] = problem
            return problem.model(alphas[name], work)

        self.global_ = solve(GLOBAL, train.total_tiles, 0, None)  # no summed copy of the bins' sums
        minimum = max(params["min_bin_samples"], 1)
        self.experts_: dict[str, RidgeModel | None] = {}
        for k, name in enumerate(train.names):
            if train.n[k] >= minimum:
                self.experts_[name] = solve(name, lambda: train, k, shared)
            else:
                self.experts_[name] = None
                log.warning("bin %s: %d training spectra < min_bin_samples=%d, no expert; the global model "
                            "serves it", name, train.n[k], params["min_bin_samples"])
        if not refit:
            for name in _HELD:
                self.__dict__.pop(name, None)
        return self

    def _alphas(self, train: BinStats, shared, alpha, min_samples: int) -> dict[str, float]:
        """{model: alpha}: the fixed alpha for every model, or each one chosen on validation."""
        self.alpha_choice_: AlphaChoice | None = None
        if not is_selection(alpha):
            return dict.fromkeys([GLOBAL, *train.names], float(alpha))
        if not hasattr(self, "_val"):
            raise InputError(f"alpha={alpha!r} chooses alpha on validation statistics: pass val_stats to fit")
        grid = alpha_grid(alpha)
        # the card's alpha, when it is a candidate, is the one the gain of the choice is measured against
        card_alpha = card_defaults.ALPHA if card_defaults.ALPHA in grid else None
        choice = select_alpha(train, self._val, grid, card_alpha, min_samples, shared)
        self.alpha_choice_ = choice
        return {GLOBAL: choice.global_model.alpha, **choice.expert_alphas()}

    # ------------------------------------------------------------------------- predicting
    @property
    def bin_names_(self) -> tuple[str, ...]:
        return tuple(self.experts_)

    def _check_fitted(self) -> None:
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, ["global_", "experts_"])

    def bin_index(self, bins: Any) -> np.ndarray:
        """(N,) positions into ``bin_names_`` from (N,) positions or bin names."""
        return _bin_positions(np.asarray(bins), self.bin_names_)

    def _coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        """coef (1 + K, D) and intercept (1 + K,): the global model, then the model serving each bin."""
        models = [self.global_] + [m or self.global_ for m in self.experts_.values()]
        return np.stack([m.coef_ for m in models]), np.array([m.intercept_ for m in models])

    def _snr_rule(self) -> PassSpec:
        spec = getattr(self, "pass_spec_", None)
        if spec is None or not spec.bins.is_snr or spec.snr_method == "column":
            raise InputError("predict: routing by error needs a model whose bins are SNR bins measured from the "
                             "spectra (snr method 'norm' or 'median'); pass bins instead")
        return spec

    def assign_bins(self, X: Any, error: Any) -> np.ndarray:
        """(N,) bin names of spectra X (N, D) with 1-sigma errors ``error`` (N, D), by the model's own SNR
        rule: its training pass's SNR method and noise level (``pass_spec_``), measured on X as given.
        numpy or xarray inputs (computed when lazy)."""
        self._check_fitted()
        spec = self._snr_rule()
        X, error = (np.asarray(_computed(_array_of(a))) for a in (X, error))
        return np.asarray(self.bin_names_)[route_by_snr(spec, X, error)]

    def predict(self, X: Any, *, bins: Any = None, error: Any = None) -> Any:
        """Predict log g, each spectrum by the expert of its bin (the global model where a bin has none).

        Parameters
        ----------
        X : array-like (N, D): numpy, dask (row-chunked) or xarray.DataArray (sample, pixel)
            The spectra (noisy flux, as the model was trained on).
        bins : array-like (N,), optional
            Each spectrum's bin, as a name of ``bin_names_`` or a position.
        error : array-like (N, D), optional
            The spectra's 1-sigma errors: without ``bins``, each spectrum goes to the bin of its SNR by
            the model's own rule (see :meth:`assign_bins`). One of ``bins`` and ``error`` is required.

        Returns
        -------
        numpy.ndarray, dask.array.Array or xarray.DataArray (N,)
            Of the same kind as X: dask in, dask out (tasks named ``predict-...``, carrying the
            coefficients once); a DataArray keeps X's sample dimension and its coordinates.

        Examples
        --------
        >>> import numpy as np, xarray as xr
        >>> from snrmoe_dask import BinnedRidge, bin_statistics
        >>> rng = np.random.default_rng(0)
        >>> flux, error = 1 + 0.5 * rng.random((400, 8)), np.full((400, 8), 0.1 + 0.3 * rng.random((400, 1)))
        >>> ds = xr.Dataset({"flux": (("sample", "pixel"), flux), "error": (("sample", "pixel"), error),
        ...                  "log_g": ("sample", flux @ rng.random(8))})
        >>> model = BinnedRidge(alpha=1.0, min_bin_samples=10).fit(bin_statistics(ds))
        >>> model.predict(flux[:3], error=error[:3]).shape, model.predict(flux[:2], bins=["H", "M"]).shape
        ((3,), (2,))
        """
        self._check_fitted()
        if (bins is None) == (error is None):
            raise InputError("predict: pass exactly one of bins (each spectrum's bin) and error (to bin each "
                             "spectrum by the model's SNR rule)")
        data = _array_of(X)
        if getattr(data, "ndim", 2) != 2 or data.shape[1] != self.n_features_in_:
            raise InputError(f"X has shape {getattr(data, 'shape', None)}; expected (N, {self.n_features_in_}) spectra")
        if hasattr(data, "map_blocks"):
            out = self._predict_lazy(data, _array_of(bins), _array_of(error))
        elif error is not None:
            out = _route_block(np.asarray(data), np.asarray(_computed(_array_of(error))), self._snr_rule(),
                               *self._coefficients())
        else:
            index = self.bin_index(_computed(_array_of(bins)))
            if index.shape != (data.shape[0],):
                raise InputError(f"bins: expected {data.shape[0]} values (one per spectrum), got shape {index.shape}")
            flux = np.asarray(data)
            out = oracle_route(flux, index, list(self.experts_.values()), self.global_.predict(flux))
        if _is_xarray(X):
            import xarray as xr

            sample = X.dims[0]
            coords = {name: c for name, c in X.coords.items() if c.dims == (sample,)}
            return xr.DataArray(out, dims=(sample,), coords=coords, name="prediction")
        return out

    def _predict_lazy(self, flux, bins, error, only_global: bool = False):
        """predict on a row-chunked dask array: one small named task per chunk, the coefficients one
        shared input of the graph; rows go to the model of their bin, or all to the global one."""
        import dask
        import dask.array as da
        from dask.base import tokenize

        coef, intercept = self._coefficients()
        token = tokenize(flux, bins, error, coef, intercept, only_global)
        models = dask.delayed((coef, intercept), pure=True, name=f"predict-coefficients-{token}")
        if error is not None:
            error = da.asarray(error).rechunk(flux.chunks)
            return da.map_blocks(_route_chunk, flux, error, models, self._snr_rule(), drop_axis=1, dtype=np.float64,
                                 meta=np.empty(0), name=f"predict-{token}")
        if only_global:
            rows = da.zeros(flux.shape[0], chunks=(flux.chunks[0],), dtype=np.intp)
        elif hasattr(bins, "map_blocks"):  # positions or names, checked in each task
            rows = 1 + bins.map_blocks(_bin_positions, self.bin_names_, dtype=np.intp, name=f"predict-bins-{token}")
        else:
            rows = 1 + da.from_array(self.bin_index(bins), chunks=(flux.chunks[0],))
        rows = rows.rechunk((flux.chunks[0],))[:, None]
        return da.map_blocks(_predict_chunk, flux, rows, models, drop_axis=1, dtype=np.float64, meta=np.empty(0),
                             name=f"predict-{token}")

    def score(self, X: Any, y: Any, *, bins: Any = None, error: Any = None, sample_weight: Any = None) -> float:
        """R² of :meth:`predict` on spectra X (N, D) against the true y (N,).

        Parameters
        ----------
        X, bins, error
            As :meth:`predict`.
        y : array-like (N,)
            The true log g.
        sample_weight : array-like (N,), optional
            As scikit-learn's ``r2_score``.

        Returns
        -------
        float
            The coefficient of determination (scikit-learn's ``r2_score``).

        Examples
        --------
        >>> import numpy as np, xarray as xr
        >>> from snrmoe_dask import BinnedRidge, bin_statistics
        >>> rng = np.random.default_rng(0)
        >>> flux, error = 1 + 0.5 * rng.random((400, 8)), np.full((400, 8), 0.1 + 0.3 * rng.random((400, 1)))
        >>> y = flux @ rng.random(8)
        >>> ds = xr.Dataset({"flux": (("sample", "pixel"), flux), "error": (("sample", "pixel"), error),
        ...                  "log_g": ("sample", y)})
        >>> model = BinnedRidge(alpha=1e-3, min_bin_samples=10).fit(bin_statistics(ds, noise={"mode": "none"}))
        >>> round(model.score(flux, y, error=error), 3)
        1.0
        """
        from sklearn.metrics import r2_score

        pred = self.predict(X, bins=bins, error=error)
        return float(r2_score(np.asarray(_computed(_array_of(y))), np.asarray(_computed(_array_of(pred))),
                              sample_weight=sample_weight))

    def predict_global(self, X: Any) -> Any:
        """(N,) predictions of the global model alone, for X as in :meth:`predict`."""
        self._check_fitted()
        data = _array_of(X)
        if hasattr(data, "map_blocks"):
            return self._predict_lazy(data, None, None, only_global=True)
        return self.global_.predict(data)

    # ------------------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> None:
        """Write ``models.h5`` (see ``io.models``): the global model, every expert, the bins (names and
        edges) and the training pass's rule (SNR method, noise, clipping, precision, shift); no pickle."""
        self._check_fitted()
        alpha = self.alpha if isinstance(self.alpha, (str, float, int)) else [float(a) for a in self.alpha]
        save_models(path, self.global_, self.experts_,
                    {"estimator": {"alpha": alpha, "min_bin_samples": int(self.min_bin_samples), "scaler": self.scaler}},
                    partition=getattr(self, "partition_", None), spec=getattr(self, "pass_spec_", None))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BinnedRidge":
        """A fitted BinnedRidge from a ``models.h5``: it predicts and evaluates as the model that was saved
        (its bins and pass rule included); ``fit()`` needs new statistics. Files written before the bins
        and the pass rule were stored load with ``partition_`` and ``pass_spec_`` None."""
        saved = load_models(path)
        params = saved.attrs.get("estimator", {})
        model = cls(**{k: params[k] for k in ("alpha", "min_bin_samples", "scaler") if k in params})
        model.global_, model.experts_ = saved.global_model, saved.experts
        model.n_features_in_ = saved.global_model.n_features_in_
        model.alpha_choice_, model.partition_, model.pass_spec_ = None, saved.partition, saved.spec
        return model


def _bin_positions(bins: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """(B,) positions into ``names`` of bins (B,) given as positions or names; InputError for others."""
    if bins.dtype.kind in "iu":
        if len(bins) and (bins.min() < 0 or bins.max() >= len(names)):
            raise InputError(f"bins: positions must lie in 0..{len(names) - 1}, got {bins.min()}..{bins.max()}")
        return bins.astype(np.intp)
    lookup = {name: k for k, name in enumerate(names)}
    unknown = sorted({str(b) for b in bins.tolist()} - set(lookup))
    if unknown:
        raise InputError(f"bins: unknown bin name(s) {unknown}; expected {list(names)}")
    return np.array([lookup[str(b)] for b in bins.tolist()], dtype=np.intp)


def _predict_chunk(flux: np.ndarray, index: np.ndarray, models: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return _predict_block(flux, index, *models)


def _route_chunk(flux: np.ndarray, error: np.ndarray, models: tuple[np.ndarray, np.ndarray],
                 spec: PassSpec) -> np.ndarray:
    return _route_block(flux, error, spec, *models)
