"""The test set: routing, scores overall and per bin with bootstrap intervals, the decision, and
the deployable gate. Everything here is in memory (the test set is small) and config-free: the
driver passes the config's values as arguments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd

from ..core import card_defaults
from ..core.block_pass import PassResult
from ..core.metrics import check_r2_defined, regression_metrics
from ..core.noise import NoiseSpec
from ..core.partition import Partition
from ..core.repair import RepairCounts
from ..engine.segment import check_rows_fit
from ..engine.spectra import load_spectra
from ..engine.statistics import describe_row, partition_labels, sample_values
from ..errors import InputError
from .diagnostics import prediction_checks
from .verdict import verdict

if TYPE_CHECKING:  # imported when a model is fitted: scikit-learn is slow to import
    from ..engine.model import BinnedRidge


@dataclass
class TestSet:
    """The test spectra in memory. x (N, D) noisy flux; y, snr, bins (N,); features (N, F) or None;
    noisy_snr (N,) the SNR a deployed model can measure (from the noisy flux), or None."""

    __test__ = False  # not a pytest test class

    x: np.ndarray
    y: np.ndarray
    snr: np.ndarray
    bins: np.ndarray
    features: np.ndarray | None = None
    noisy_snr: np.ndarray | None = None
    repairs: RepairCounts | None = None  # pixels changed on read


def check_scorable(y: np.ndarray, files: list[str] | tuple[str, ...] = (), target: str | None = None,
                   key: str = "data.test_file") -> None:
    """Refuse targets y (N,) that R² cannot score (fewer than 2 spectra, or all equal), with the line
    that ``snrmoe run`` gives for ``key``: the API and the CLI refuse the same sets alike."""
    column = f"column {target!r}"
    where = (f"{files[0]} ({key}, {column})" if files else "the test set" + (f" ({column})" if target else ""))
    check_r2_defined(np.asarray(y), where)


def load_test_set(ds, *, partition: Partition, target: str = card_defaults.TARGET, noise: NoiseSpec | None = None,
                  snr: str = card_defaults.SNR_METHOD, clip_flux: bool = True, pre_noised: bool = False,
                  features: bool = False, precision: str = "float32") -> TestSet:
    """Read, repair and noise a test Dataset (e.g. ``open_shards(test_file)``) and bin it by ``partition``.

    noise: the test noise, drawn once from (noise.seed, shard, row) (default: the card's level with
    seed ``card_defaults.TEST_SEED``); the SNR comes from the noise-free flux. ``pre_noised``: the flux already
    holds its noise and is used as it is (not clipped), with the SNR of the ``snr`` variable / level.
    features: also the gate's error-only features and the SNR of the noisy flux. precision: that of
    the training products; a spectrum whose squares overflow it is refused naming its file and row.
    """
    noise = noise or NoiseSpec(seed=card_defaults.TEST_SEED)
    check_scorable(sample_values(ds, target, "target"), ds.attrs.get("files", []), target)
    where = ", ".join(ds.attrs.get("files", [])) or "the test set"
    if pre_noised:
        if "snr" not in ds.variables:
            raise InputError(f"{where}: noise.test is pre_noised but the params table has no 'snr' column")
        spectra = load_spectra(ds, noise=NoiseSpec(noise.level, noise.seed, "none"), snr="column", clip_flux=False)
    else:
        spectra = load_spectra(ds, noise=noise, snr=snr, clip_flux=clip_flux)
    check_rows_fit(spectra.flux, spectra.error, lambda i: describe_row(ds, i), noise.level, precision)
    try:  # by SNR or by table columns: the partition reads what it routes on
        bins = partition.assign(partition_labels(ds, partition, spectra.snr))
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    test = TestSet(spectra.flux, sample_values(ds, target, "target"), spectra.snr, bins, repairs=spectra.repairs)
    if features:
        from ..core.gate import noisy_snr, quality_features

        test.features, test.noisy_snr = quality_features(spectra.error), noisy_snr(spectra.flux, spectra.error,
                                                                                   noise.level)
    return test


def _scores(y: np.ndarray, pred: np.ndarray) -> dict:
    return regression_metrics(y, pred) if len(y) else {"r2": None, "mae": None, "rmse": None}


def _delta(a: dict, b: dict) -> float | None:
    return None if a["r2"] is None or b["r2"] is None else a["r2"] - b["r2"]


def score(model: BinnedRidge, test: TestSet, *, partition: Partition, train: PassResult | None = None,
          snr_method: str = card_defaults.SNR_METHOD, threshold: float = card_defaults.THRESHOLD,
          bootstrap: int = 2000, seed: int = card_defaults.TEST_SEED, gate_fallback: float | None = None,
          gate_seed: int = card_defaults.NOISE_SEED, experiment: str = card_defaults.EXPERIMENT_ID,
          card_date: str | None = None,
          train_target_range: tuple[float, float] | None = None) -> tuple[dict, pd.DataFrame]:
    """Route the test set, score every model overall and per bin, decide. Returns (results, predictions).

    train: the training pass (its counts, SNR values, repairs, and the gate's features); bootstrap:
    resamples of the paired intervals (0: none), drawn from ``seed``; gate_fallback: also evaluate the
    deployable gate with this fallback probability (None: no gate); card_date: the experiment card's
    date (``experiment.date``), reported beside the run's own date; train_target_range: (min, max) of
    the training targets, for the share of predictions outside it (``diagnostics``).
    """
    check_scorable(test.y)
    names = list(partition.names)
    if list(model.bin_names_) != names:
        raise InputError(f"the model's bins {list(model.bin_names_)} are not the partition's {names}")
    y = test.y
    y_global = model.global_.predict(test.x)
    y_oracle = model.predict(test.x, bins=test.bins)
    predictions = {"y_true": y, "snr": test.snr, "bin": np.asarray(names)[test.bins],
                   "y_global": y_global, "y_oracle": y_oracle}
    experts = model.experts_
    n_train = np.array([experts[n].n_train_ if experts[n] is not None else 0 for n in names])
    if train is not None:
        n_train = train.stats.n
    n_total = int(train.stats.n.sum()) if train is not None else model.global_.n_train_
    m_global, m_oracle = regression_metrics(y, y_global), regression_metrics(y, y_oracle)
    results = {
        "experiment": experiment, "date": date.today().isoformat(), "card_date": card_date,
        "threshold": threshold, "delta_r2": m_oracle["r2"] - m_global["r2"],
        "models": {
            "global": {**m_global, "n_train": n_total, "n_test": len(y), "alpha": model.global_.alpha_},
            "oracle": {**m_oracle, "n_train": n_total, "n_test": len(y)},
        },
        "partition": {"by": partition.columns[0] if len(partition.columns) == 1 else list(partition.columns),
                      "names": names},
        "bins": {},
        "skipped_bins": [n for n in names if experts[n] is None],
    }
    for k, name in enumerate(names):
        sel = test.bins == k
        expert, glob = _scores(y[sel], y_oracle[sel]), _scores(y[sel], y_global[sel])
        results["bins"][name] = {
            **partition.describe(k), "n_train": int(n_train[k]), "n_test": int(sel.sum()),
            "skipped": experts[name] is None, "delta_r2": _delta(expert, glob), "expert": expert, "global": glob,
            "alpha": None if experts[name] is None else experts[name].alpha_,
        }
    if gate_fallback is not None:
        if train is None:
            raise InputError("the deployable gate is trained on the training pass's features: pass train")
        predictions.update(_deployed(model, partition, train, test, y_global, results, gate_fallback, gate_seed))
    _intervals(results, y, y_global, y_oracle, test.bins, predictions.get("y_deployed"), bootstrap, seed)
    if "y_noisy_snr" in predictions:
        _noisy_interval(results, y, y_global, predictions["y_noisy_snr"], test.bins, bootstrap, seed)
    results.update(verdict(results, bootstrap))
    models_predicted = {key: predictions[column] for key, column in (
        ("global", "y_global"), ("oracle", "y_oracle"), ("deployed", "y_deployed"), ("noisy_snr_routed", "y_noisy_snr"))
        if column in predictions}
    results["diagnostics"] = prediction_checks(y, models_predicted, test.bins, names, train_target_range)
    results["snr"] = {"method": snr_method, "test_median": float(np.median(test.snr)),
                      "test_max": float(test.snr.max())}
    if train is not None:
        snr_train = train.snr_values
        results["snr"].update(train_median=float(np.median(snr_train)), train_max=float(snr_train.max()))
        results["repairs"] = train.repairs.to_dict()
    if test.repairs is not None:
        results["test_repairs"] = test.repairs.to_dict()
    if model.alpha_choice_ is not None:
        results["alpha"] = model.alpha_choice_.to_dict()
    return results, pd.DataFrame(predictions)


def _intervals(results: dict, y: np.ndarray, y_global: np.ndarray, y_oracle: np.ndarray, bins: np.ndarray,
               y_deployed: np.ndarray | None, b: int, seed: int) -> None:
    """Paired bootstrap intervals of R² and ΔR², overall and per bin, into ``results`` (off when B = 0)."""
    if not b:
        return
    from ..core.bootstrap import r2_intervals

    names = list(results["bins"])
    ci = r2_intervals(y, y_global, y_oracle, bins, names, n_resamples=b, seed=seed)
    results["delta_r2_ci"] = ci["overall"]["delta"]
    results["models"]["global"]["r2_ci"] = ci["overall"]["global"]
    results["models"]["oracle"]["r2_ci"] = ci["overall"]["oracle"]
    for name in names:
        per_bin = ci["bins"].get(name) or {}
        entry = results["bins"][name]
        entry["delta_r2_ci"] = per_bin.get("delta")
        entry["expert"]["r2_ci"], entry["global"]["r2_ci"] = per_bin.get("oracle"), per_bin.get("global")
    if y_deployed is not None:
        dep = r2_intervals(y, y_global, y_deployed, bins, names, n_resamples=b, seed=seed)
        results["models"]["deployed"]["r2_ci"] = dep["overall"]["oracle"]
        results["gate"]["delta_r2_ci"] = dep["overall"]["delta"]


def _noisy_interval(results: dict, y: np.ndarray, y_global: np.ndarray, y_noisy: np.ndarray, bins: np.ndarray,
                    b: int, seed: int) -> None:
    """The paired bootstrap interval of the noisy-SNR hard routing's R², like the other models' (off when B = 0)."""
    if not b:
        return
    from ..core.bootstrap import r2_intervals

    ci = r2_intervals(y, y_global, y_noisy, bins, list(results["bins"]), n_resamples=b, seed=seed)
    results["models"]["noisy_snr_routed"]["r2_ci"] = ci["overall"]["oracle"]


def _deployed(model: BinnedRidge, partition: Partition, train: PassResult, test: TestSet, y_global: np.ndarray,
              results: dict, fallback: float, seed: int) -> dict[str, np.ndarray]:
    """MVP-2.0: a logistic-regression gate on error-only features, soft routing with fallback, and
    hard routing by the SNR of the noisy flux as a second deployable baseline."""
    from ..core.gate import expert_predictions, fit_gate, gate_summary, hard_route_noisy_snr, soft_route

    if not partition.is_snr:
        raise InputError("evaluation.deployable_gate: the gate predicts SNR bins; it needs routing.by: snr")
    names = list(partition.names)
    gate = fit_gate(train.feature_values, partition.assign(train.snr_values), len(names), seed=seed)
    proba = gate.predict_proba(test.features)
    expert_preds = expert_predictions(test.x, [model.experts_[n] for n in names])
    soft = soft_route(expert_preds, y_global, proba, fallback)
    hard = hard_route_noisy_snr(expert_preds, y_global, test.noisy_snr, partition.axes[0])
    n_train, models = int(train.stats.n.sum()), results["models"]
    models["deployed"] = {**regression_metrics(test.y, soft.pred), "n_train": n_train, "n_test": len(test.y)}
    models["noisy_snr_routed"] = {**regression_metrics(test.y, hard.pred), "n_train": n_train, "n_test": len(test.y)}
    results["gate"] = {**gate_summary(test.bins, proba, names, models["deployed"]["r2"], models["global"]["r2"],
                                      models["oracle"]["r2"], soft.fallback),
                       "fallback": fallback,
                       "noisy_snr_accuracy": float(np.mean(partition.assign(test.noisy_snr) == test.bins))}
    for k, name in enumerate(names):
        sel = test.bins == k
        results["bins"][name]["deployed"] = _scores(test.y[sel], soft.pred[sel])
    return {"y_deployed": soft.pred, "gate_bin": np.asarray(names)[soft.chosen], "y_noisy_snr": hard.pred}


def metrics_dataset(results: Mapping[str, Any], decision: bool = True):
    """The metrics as an xarray Dataset for notebooks and dashboards: ``value`` (model x bin x metric),
    ``r2_low``/``r2_high`` (model x bin, the bootstrap interval of R², NaN without one), ``n_train``
    and ``n_test`` (bin). Models: global, oracle, and deployed when the gate ran; bins: every bin, then
    "overall". Attributes: delta_r2, and with ``decision`` the experiment, its decision and threshold."""
    import xarray as xr

    sides = [("global", "global"), ("oracle", "expert")]
    if "deployed" in results["models"]:
        sides.append(("deployed", "deployed"))
    bins = list(results["bins"]) + ["overall"]
    metrics = ["r2", "mae", "rmse"]
    value = np.full((len(sides), len(bins), len(metrics)), np.nan)
    ci = np.full((len(sides), len(bins), 2), np.nan)
    for i, (model, side) in enumerate(sides):
        for j, b in enumerate(bins):
            src = results["models"][model] if b == "overall" else results["bins"][b].get(side, {})
            value[i, j] = [np.nan if src.get(m) is None else src[m] for m in metrics]
            if src.get("r2_ci"):
                ci[i, j] = src["r2_ci"]
    n_train = [results["bins"][b]["n_train"] for b in bins[:-1]] + [results["models"]["global"]["n_train"]]
    n_test = [results["bins"][b]["n_test"] for b in bins[:-1]] + [results["models"]["global"]["n_test"]]
    attrs = {"delta_r2": results["delta_r2"]}
    if decision:
        attrs = {"experiment": results["experiment"], "decision": results["decision"], **attrs,
                 "threshold": results["threshold"]}
    return xr.Dataset(
        {"value": (("model", "bin", "metric"), value), "r2_low": (("model", "bin"), ci[..., 0]),
         "r2_high": (("model", "bin"), ci[..., 1]), "n_train": ("bin", n_train), "n_test": ("bin", n_test)},
        coords={"model": [m for m, _ in sides], "bin": bins, "metric": metrics}, attrs=attrs,
    )


def evaluate(model: BinnedRidge, test, *, target: str = card_defaults.TARGET, noise: NoiseSpec | Mapping | None = None,
             partition: Partition | None = None, bootstrap: int = 2000, seed: int = card_defaults.TEST_SEED,
             threshold: float | None = None):
    """Score a fitted :class:`BinnedRidge` on a test Dataset: metrics overall and per bin, with intervals.

    Parameters
    ----------
    model : BinnedRidge
        Fitted on ``bin_statistics`` (or loaded from its ``models.h5``): its training pass tells how to
        bin, clip and noise the test spectra and measure their SNR.
    test : xarray.Dataset or TestSet
        E.g. ``open_shards(test_file)``: read, repaired, noised once and binned like the training set.
    noise : NoiseSpec or mapping, optional
        The test noise (default: the training pass's level, with seed ``card_defaults.TEST_SEED``, 2025).
    partition : Partition, optional
        The bins (default: the model's own), e.g. ``make_partition("snr", {}, {"low": [0, 3],
        "high": [3, None]})``. Required for a model that does not record its pass
        (statistics built by hand, or a ``models.h5`` written by an older version); the card's SNR
        method, clipping and float32 precision then apply.
    bootstrap, seed : int
        Resamples and seed of the 95 % paired percentile bootstrap intervals (0: no intervals).
    threshold : float, optional
        A decision threshold on ΔR² (the card's is 0.02): with one, the attributes also hold the
        experiment card's decision by that threshold.

    Returns
    -------
    xarray.Dataset
        As ``metrics.nc`` of ``snrmoe run``: ``value`` (model x bin x metric), ``r2_low``, ``r2_high``,
        ``n_train``, ``n_test``; attributes delta_r2 (and with ``threshold`` the decision), the
        model's alpha, SNR method, noise level and partition.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from snrmoe_dask import BinnedRidge, bin_statistics, evaluate
    >>> rng = np.random.default_rng(1)
    >>> def spectra(n):
    ...     flux = 1 + 0.5 * rng.random((n, 8))
    ...     error = np.full((n, 8), 0.1) + 0.3 * rng.random((n, 1))
    ...     return xr.Dataset({"flux": (("sample", "pixel"), flux), "error": (("sample", "pixel"), error),
    ...                        "log_g": ("sample", flux @ np.arange(8.0))})
    >>> model = BinnedRidge(alpha=1.0, min_bin_samples=10).fit(bin_statistics(spectra(2000)))
    >>> metrics = evaluate(model, spectra(300), bootstrap=200)
    >>> [str(m) for m in metrics.model.values], [str(b) for b in metrics.bin.values]
    (['global', 'oracle'], ['H', 'M', 'L', 'X', 'overall'])
    >>> r2 = metrics.value.sel(metric="r2", bin="overall")
    >>> bool(r2.sel(model="oracle") > r2.sel(model="global"))  # one expert per SNR bin wins here
    True
    """
    spec = getattr(model, "pass_spec_", None)
    partition = partition or getattr(model, "partition_", None)
    if partition is None:
        raise InputError("evaluate: the model does not record its bins (fitted on statistics built by hand, or "
                         "loaded from a models.h5 written by an older snrmoe); pass partition=")
    noise = NoiseSpec.of(noise) if noise is not None else NoiseSpec(
        level=spec.noise.level if spec is not None else card_defaults.NOISE_LEVEL, seed=card_defaults.TEST_SEED)
    snr_method = spec.snr_method if spec is not None else card_defaults.SNR_METHOD
    if not isinstance(test, TestSet):
        test = load_test_set(test, partition=partition, target=target, noise=noise, snr=snr_method,
                             clip_flux=spec.clip_flux if spec is not None else True,
                             precision=spec.precision if spec is not None else "float32")
    results, _ = score(model, test, partition=partition, snr_method=snr_method,
                       threshold=card_defaults.THRESHOLD if threshold is None else threshold, bootstrap=bootstrap,
                       seed=seed)
    metrics = metrics_dataset(results, decision=threshold is not None)
    metrics.attrs.update(alpha=model.global_.alpha_, snr_method=snr_method, noise_level=noise.level,
                         partition=", ".join(partition.columns))
    return metrics
