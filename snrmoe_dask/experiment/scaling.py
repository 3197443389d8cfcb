"""Scaling curves from the one pass: R² and ΔR² against the training-set size, per bin.

The per-shard statistics of one pass add up exactly, so the models trained on the first k shards are
only D x D solves away. The curve is solved at a fixed number of training sizes (``points``, nearly
geometric in N, always the first shard and the whole set, :func:`choose_points`); each prefix is the
sum of the first k shards in the pass's own order (``core.sum_order.prefix_sums``), bit-identical to a pass
over those shards, solved one model at a time, scored on the test set with the paired bootstrap of the
main results, and dropped: only its coefficients and scores are kept. Inside a run the points are
tasks of the pass itself (:func:`curve_graph`), each run as soon as its prefix is summed, so the curve
holds no D x D sums beyond the pass's own, whatever the number of shards.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from dask import delayed

from ..core import card_defaults
from ..core.buffers import pass_running
from ..core.extrapolate import FORM, LEVEL, MIN_POINTS, fit_curve, threshold_crossing
from ..core.block_pass import PassResult
from ..core.sum_order import fold_blocks, prefix_sums
from ..core.noise import NoiseSpec
from ..core.partition import Partition
from ..engine.segment import one_blas_thread
from ..engine.statistics import statistics_and_prefixes
from ..errors import InputError
from .evaluation import TestSet, load_test_set, score

if TYPE_CHECKING:
    from ..engine.model import BinnedRidge

log = logging.getLogger(__name__)

POINTS = 8  # evaluation.scaling_points: training sizes solved for a curve


def choose_points(rows: Sequence[int], points: int = POINTS) -> list[int]:
    """Prefix counts k (1-based) of parts of ``rows`` spectra each: at most ``points`` of them, whose
    training sizes are nearly geometric from the first part's to the whole set's, always 1 and all."""
    if points < 2:
        raise InputError(f"evaluation.scaling_points: expected at least 2 (the first shard and the whole set), "
                         f"got {points}")
    total = np.cumsum(np.asarray(rows, dtype=np.float64))
    if len(total) <= points:
        return list(range(1, len(total) + 1))
    targets = np.geomspace(total[0], total[-1], points)
    return sorted({1, len(total)} | {int(np.argmin(np.abs(np.log(total) - np.log(t)))) + 1 for t in targets})


UNCERTAINTY = (f"{LEVEL:.0%} interval from the fit's covariance (scaled by the scatter of the points about the curve, "
               "Student t with points − 3 degrees of freedom); it leaves out the test-set sampling error that all "
               "points share (the interval of each point)")


def _check_parts(per_shard_statistics: Any) -> list[PassResult]:
    from ..engine.model import _computed

    parts = _computed(per_shard_statistics)
    if not isinstance(parts, (list, tuple)) or not parts or not all(isinstance(p, PassResult) for p in parts):
        raise InputError("scaling_curve: expected the value of bin_statistics(..., per_shard=True), a non-empty "
                         f"list of PassResult; got {type(parts).__name__}")
    return list(parts)


def _test_set(test: Any, spec, partition: Partition, noise, target: str) -> TestSet:
    """The test spectra binned like the training pass (as ``evaluate`` reads them)."""
    if isinstance(test, TestSet):
        return test
    level = spec.noise.level if spec is not None else card_defaults.NOISE_LEVEL
    noise = NoiseSpec.of(noise) if noise is not None else NoiseSpec(level=level, seed=card_defaults.TEST_SEED)
    return load_test_set(test, partition=partition, target=target, noise=noise,
                         snr=spec.snr_method if spec is not None else card_defaults.SNR_METHOD,
                         clip_flux=spec.clip_flux if spec is not None else True)


def _r2(entry: dict) -> dict:
    return {"r2": entry["r2"], "r2_ci": entry.get("r2_ci")}


def point_of(results: dict, parts: int) -> dict:
    """One point of the curve from the results of ``score`` for the models trained on ``parts`` parts."""
    models = results["models"]
    return {
        "parts": parts, "n_train": models["global"]["n_train"],
        "global": {**_r2(models["global"]), "alpha": models["global"]["alpha"]}, "oracle": _r2(models["oracle"]),
        "delta_r2": results["delta_r2"], "delta_r2_ci": results.get("delta_r2_ci"),
        "bins": {name: {"n_train": b["n_train"], "skipped": b["skipped"], "alpha": b["alpha"],
                        "expert": _r2(b["expert"]), "global": _r2(b["global"]),
                        "delta_r2": b["delta_r2"], "delta_r2_ci": b.get("delta_r2_ci")}
                 for name, b in results["bins"].items()},
    }


def solve_point(blocks: Sequence[PassResult], k: int, model: BinnedRidge | Mapping[str, Any], test: TestSet,
                val: PassResult | None, partition: Partition, threshold: float, bootstrap: int, seed: int,
                number: tuple[int, int] = (0, 0)) -> dict:
    """One point of the curve: the models solved on the sum of the first k parts (the partial sums
    ``blocks``, unchanged, see ``core.sum_order.fold_blocks``), one at a time, and scored on the test set.
    model: the estimator (cloned), or the parameters of a BinnedRidge. number: (i, K), this point's place
    among the curve's K points, for the log line.

    Solved on one BLAS thread whatever else runs (a factorisation's bits may depend on the thread
    count), so a point is the same on every scheduler. Returns the point with its ``timings_s``."""
    with one_blas_thread(), pass_running():
        prefix = fold_blocks(list(blocks))
        start = time.perf_counter()
        fitted = _estimator(model).fit(prefix, val, refit=False)
        solved = time.perf_counter()
        results, _ = score(fitted, test, partition=partition, train=prefix, threshold=threshold,
                           bootstrap=bootstrap, seed=seed)
    point = point_of(results, k)
    point["timings_s"] = {"solve": round(solved - start, 3), "score": round(time.perf_counter() - solved, 3)}
    log.info("scaling: point %d/%d, N=%s, dR2 %+.4f (solve %.2f s, score %.2f s)", *number,
             f"{point['n_train']:,}", point["delta_r2"], *point["timings_s"].values())
    return point


def _estimator(model: BinnedRidge | Mapping[str, Any]) -> BinnedRidge:
    """A fresh estimator: a clone of ``model``, or a BinnedRidge of these parameters. (scikit-learn and
    the model are imported here, in the task: a command's graph is built before they are needed.)"""
    from sklearn.base import clone

    from ..engine.model import BinnedRidge

    return BinnedRidge(**model) if isinstance(model, Mapping) else clone(model)


def curve_graph(ds, *, model: BinnedRidge | Mapping[str, Any], test: TestSet, val: PassResult | None,
                partition: Partition, points: int = POINTS, threshold: float = card_defaults.THRESHOLD,
                bootstrap: int = 2000, seed: int = card_defaults.TEST_SEED, cache=None, label: str = "train",
                **options):
    """The pass of ``bin_statistics(ds, **options)`` and the points of its scaling curve in one graph: a
    delayed (total PassResult, [point, ...]), the points but the last (the whole set: the run's own main
    results) in order of N. Each point is a task reading its prefix of the pass's partial sums as soon as
    they are summed; it keeps only its scores."""
    test_value = delayed(test, pure=True)
    val_value = delayed(val, pure=True) if val is not None else None

    def readers(rows: list[int]) -> dict:
        chosen = choose_points(rows, points)  # the last, the whole set, is the run's own results
        return {k: (lambda blocks, k=k, i=i: delayed(solve_point, pure=True)(
            blocks, k, model, test_value, val_value, partition, threshold, bootstrap, seed, (i, len(chosen)),
            dask_key_name=f"{label}-scaling-point-{k}-{_token(blocks)}")) for i, k in enumerate(chosen[:-1], 1)}

    total_and_points = statistics_and_prefixes(ds, readers, label=label, cache=cache, **options)
    return delayed(lambda pair: (pair[0], [pair[1][k] for k in sorted(pair[1])]), pure=True)(
        total_and_points, dask_key_name=f"{total_and_points.key}-curve")


def _token(blocks) -> str:
    from dask.base import tokenize

    return tokenize(*[b.key for b in blocks])


def scaling_curve(per_shard_statistics: Any, *, model: BinnedRidge | None = None, test: Any, val: Any = None,
                  partition: Partition | None = None, target: str = card_defaults.TARGET, noise: Any = None,
                  bootstrap: int = 2000, seed: int = card_defaults.TEST_SEED,
                  threshold: float = card_defaults.THRESHOLD, points: int = POINTS) -> dict:
    """R² and ΔR² against the training-set size, from the per-shard statistics of one pass.

    At ``points`` training sizes (nearly geometric in N, always the first result and all of them) the
    global model and every expert are solved on the sum of the first k results, in the pass's own
    order, and scored on the test set with paired bootstrap intervals, exactly as a run on those k
    shards would be; each sum is dropped once solved.

    Parameters
    ----------
    per_shard_statistics : list of PassResult, or its lazy form
        ``bin_statistics(ds, per_shard=True)`` (with ``splits=S``: S results per shard).
    model : BinnedRidge, optional
        The estimator's parameters (cloned and fitted per point; default ``BinnedRidge()``, the card's).
    test : xarray.Dataset or TestSet
        The test spectra, read, noised and binned like the training pass (as :func:`evaluate`).
    val : PassResult, optional
        Validation statistics, needed when ``model.alpha`` is chosen on them ("auto" or a list).
    partition : Partition, optional
        The bins (default: those of the pass).
    target, noise
        The target variable and test noise (default: the pass's level, seed ``card_defaults.TEST_SEED``).
    bootstrap, seed : int
        Resamples and seed of the 95 % paired bootstrap intervals (0: none); the seed also draws the
        parameters for the interval of the threshold crossing.
    threshold : float
        The ΔR² threshold whose crossing is extrapolated (the card's 0.02).
    points : int
        How many training sizes are solved (all of them when there are fewer results).

    Returns
    -------
    dict
        As ``results.json`` ``scaling``: ``points`` (per size: ``parts``, ``n_train``, ``global`` and
        ``oracle`` R² with ``r2_ci``, ``delta_r2`` and ``delta_r2_ci``, ``bins`` (per bin ``n_train``,
        ``skipped``, ``expert`` and ``global`` R² with CI, ``delta_r2`` with CI)), ``threshold``,
        ``bootstrap``, ``extrapolation`` (every value labelled an extrapolation: a fit
        R²(N) = R²∞ − a·(N/N_max)^(−b) of each curve, from 4 points up, and where ΔR² crosses the
        threshold) and ``timings_s`` (``solve`` and ``score`` seconds of each point solved here).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from snrmoe_dask import BinnedRidge, bin_statistics, scaling_curve
    >>> rng = np.random.default_rng(2)
    >>> def spectra(n, shards=1):
    ...     flux = 1 + 0.5 * rng.random((n, 8))
    ...     error = np.full((n, 8), 0.1) + 0.3 * rng.random((n, 1))
    ...     return xr.Dataset({"flux": (("sample", "pixel"), flux), "error": (("sample", "pixel"), error),
    ...                        "log_g": ("sample", flux @ np.arange(8.0))},
    ...                       coords={"shard": ("sample", np.repeat(np.arange(shards), n // shards)),
    ...                               "row": ("sample", np.tile(np.arange(n // shards), shards))})
    >>> train = spectra(2000, shards=2)
    >>> per_shard = bin_statistics(train, per_shard=True, splits=2, block_rows=250).compute()  # 2 shards x 2 parts
    >>> curve = scaling_curve(per_shard, model=BinnedRidge(alpha=1.0, min_bin_samples=10), test=spectra(300),
    ...                       bootstrap=200)
    >>> [point["n_train"] for point in curve["points"]]
    [500, 1000, 1500, 2000]
    >>> last = curve["points"][-1]
    >>> bool(last["oracle"]["r2"] > last["global"]["r2"]), len(last["delta_r2_ci"])
    (True, 2)
    >>> fit = curve["extrapolation"]["models"]["oracle"]
    >>> fit["status"], fit["extrapolation"]
    ('fitted', True)
    """
    parts = _check_parts(per_shard_statistics)
    spec = parts[0].spec
    if partition is None:
        if spec is None:
            raise InputError("scaling_curve: the statistics carry no partition (built by hand?); pass partition")
        partition = spec.bins
    test = _test_set(test, spec, partition, noise, target)
    if model is None:
        from ..engine.model import BinnedRidge

        model = BinnedRidge()
    chosen = choose_points([int(p.stats.n.sum()) for p in parts], points)
    solved = [solve_point([prefix], k, model, test, val, partition, threshold, bootstrap, seed,
                          (chosen.index(k) + 1, len(chosen)))
              for k, prefix in prefix_sums(parts, at=lambda k, last: k in chosen)]
    return curve(solved, threshold, bootstrap, seed)


def curve(points: list[dict], threshold: float, bootstrap: int, seed: int) -> dict:
    """results.json ``scaling`` from its points, in order of N (the seconds each took to solve and score
    move to ``timings_s``)."""
    timed = [p.pop("timings_s") for p in points if "timings_s" in p]
    return {"threshold": threshold, "bootstrap": bootstrap, "points": points,
            "extrapolation": extrapolate(points, threshold, seed),
            "timings_s": {phase: [t[phase] for t in timed] for phase in ("solve", "score")}}


def _fit(points: list[dict], value, upper: float) -> dict:
    """fit_curve over the points where ``value(point)`` is a number."""
    known = [(p["n_train"], value(p)) for p in points if value(p) is not None]
    return fit_curve([n for n, _ in known], [v for _, v in known], upper)


def _delta_fit(points: list[dict], value, threshold: float, seed: int) -> dict:
    fit = _fit(points, value, float("inf"))
    return {**fit, "crossing": threshold_crossing(fit, threshold, seed)}


def extrapolate(points: list[dict], threshold: float, seed: int = 0) -> dict:
    """The fits of every curve of ``points`` (as ``scaling_curve`` makes them); an extrapolation.

    Per model (global, oracle) a fit of R²; for the overall and each bin's ΔR² a fit and its
    threshold crossing; per bin a fit of the expert's R² over the points where the bin has an expert.
    """
    names = list(points[0]["bins"]) if points else []

    def expert(name):
        return lambda p: None if p["bins"][name]["skipped"] else p["bins"][name]["expert"]["r2"]

    def delta(name):
        return lambda p: None if p["bins"][name]["skipped"] else p["bins"][name]["delta_r2"]

    return {
        "extrapolation": True, "form": FORM, "min_points": MIN_POINTS, "uncertainty": UNCERTAINTY,
        "models": {"global": _fit(points, lambda p: p["global"]["r2"], 1.0),
                   "oracle": _fit(points, lambda p: p["oracle"]["r2"], 1.0),
                   "delta": _delta_fit(points, lambda p: p["delta_r2"], threshold, seed)},
        "bins": {name: {"expert": _fit(points, expert(name), 1.0),
                        "delta": _delta_fit(points, delta(name), threshold, seed)} for name in names},
    }


def summary_line(scaling: dict) -> str:
    """One line for the run's summary: the curve's ends and the extrapolated crossing."""
    points = scaling["points"]
    first, last = points[0], points[-1]
    line = (f"scaling: {len(points)} points, N {first['n_train']:,} -> {last['n_train']:,}: "
            f"dR2 {first['delta_r2']:+.4f} -> {last['delta_r2']:+.4f}")
    fit = scaling["extrapolation"]["models"]["delta"]
    if fit["status"] != "fitted":
        return line + f"; no extrapolation ({fit['reason']})"
    crossing = fit["crossing"]
    status, threshold = crossing["status"], f"{crossing['threshold']:g}"
    if status in ("crosses", "falls below"):  # only these two have a crossing N
        verb = "reaches" if status == "crosses" else "falls below"
        where = f"{verb} {threshold} at N ~ {crossing['n']:,.0f}"
    else:
        where = f"stays above {threshold}" if status == "above" else f"does not reach {threshold}"
    return line + f"; extrapolated: dR2_inf {fit['inf']:+.4f}, {where}"
