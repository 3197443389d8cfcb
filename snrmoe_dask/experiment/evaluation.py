"""The test set: routing, scores overall and per bin with bootstrap intervals, the decision, and
the deployable gate. Everything here is in memory (the test set is small)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from ..core.fold import PassResult
from ..core.metrics import decision_for, regression_metrics
from ..core.noise import add_noise
from ..core.repair import RepairCounts
from ..core.ridge import RidgeModel
from ..core.routing import oracle_route
from ..core.snr import compute_snr
from ..engine.blocks import Block
from ..engine.segment import check_rows_fit, load_block
from ..errors import InputError
from ..io.shards import ShardInfo
from .config import ExperimentConfig


@dataclass
class TestSet:
    """The test spectra in memory. x (N, D) noisy flux; y, snr, bins (N,); features (N, F) or None."""

    x: np.ndarray
    y: np.ndarray
    snr: np.ndarray
    bins: np.ndarray
    features: np.ndarray | None = None
    noisy_snr: np.ndarray | None = None
    repairs: RepairCounts | None = None  # pixels changed on read


def load_test_set(cfg: ExperimentConfig, info: ShardInfo) -> TestSet:
    """Read, repair and noise the test set.

    ``noise.test: fixed`` noises it once with ``add_noise(..., seed=noise.test_seed, shard=0, row0=0)``
    and takes the SNR from the noise-free flux; ``pre_noised`` uses the file's flux as it is (not
    clipped: the noise is already in it) and the table's ``snr`` column.
    """
    pre_noised = cfg.noise.test == "pre_noised"
    block = Block(str(info.path), 0, 0, info.n)
    flux, error, repairs = load_block(block, clip_flux=cfg.preprocessing.clip_flux and not pre_noised)
    level, params = cfg.noise.level, info.params
    table_snr = params["snr"].to_numpy(np.float64) if "snr" in params else None
    if pre_noised:
        if table_snr is None:
            raise InputError(f"{info.path}: noise.test is pre_noised but the params table has no 'snr' column")
        snr, noisy = compute_snr("column", flux, error, level, table_snr), flux
    else:
        snr = compute_snr(cfg.snr.method, flux, error, level, table_snr)
        noisy = add_noise(flux, error, level, seed=cfg.noise.test_seed, shard=0, row0=0, out=flux)
    check_rows_fit(noisy, block, cfg.preprocessing.clip_flux and not pre_noised, level, cfg.compute.precision)
    try:  # by SNR or by table columns: the partition reads what it routes on
        bins = cfg.partition.assign(cfg.partition.labels(params, snr))
    except InputError as exc:
        raise InputError(f"{info.path}: {exc}") from None
    test = TestSet(noisy, params[cfg.data.target].to_numpy(np.float64), snr, bins, repairs=repairs)
    if cfg.evaluation.deployable_gate:
        from ..core.gate import noisy_snr, quality_features

        test.features, test.noisy_snr = quality_features(error), noisy_snr(noisy, error, level)
    return test


def _scores(y: np.ndarray, pred: np.ndarray) -> dict:
    return regression_metrics(y, pred) if len(y) else {"r2": None, "mae": None, "rmse": None}


def _delta(a: dict, b: dict) -> float | None:
    return None if a["r2"] is None or b["r2"] is None else a["r2"] - b["r2"]


def evaluate(cfg: ExperimentConfig, experts: dict[str, RidgeModel | None], global_model: RidgeModel,
             train: PassResult, test: TestSet) -> tuple[dict, pd.DataFrame]:
    """Route the test set, score every model overall and per bin, decide. Returns (results, predictions)."""
    partition, names = cfg.partition, list(cfg.partition.names)
    y = test.y
    y_global = global_model.predict(test.x)
    y_oracle = oracle_route(test.x, test.bins, [experts[n] for n in names], fallback=y_global)
    predictions = {"y_true": y, "snr": test.snr, "bin": np.asarray(names)[test.bins],
                   "y_global": y_global, "y_oracle": y_oracle}
    n_train = train.stats.n
    m_global, m_oracle = regression_metrics(y, y_global), regression_metrics(y, y_oracle)
    results = {
        "experiment": cfg.experiment.id, "date": cfg.experiment.date or date.today().isoformat(),
        "threshold": cfg.evaluation.threshold, "delta_r2": m_oracle["r2"] - m_global["r2"],
        "models": {
            "global": {**m_global, "n_train": int(n_train.sum()), "n_test": len(y), "alpha": global_model.alpha},
            "oracle": {**m_oracle, "n_train": int(n_train.sum()), "n_test": len(y)},
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
            "alpha": None if experts[name] is None else experts[name].alpha,
        }
    if cfg.evaluation.deployable_gate:
        predictions.update(_deployed(cfg, experts, global_model, train, test, y_global, results))
    _intervals(cfg, results, y, y_global, y_oracle, test.bins, predictions.get("y_deployed"))
    ci = results.get("delta_r2_ci")
    results["decision"], results["next_step"] = decision_for(results["delta_r2"], cfg.evaluation.threshold,
                                                             None if ci is None else tuple(ci))
    snr_train = train.snr_values
    results["snr"] = {"method": cfg.snr.method, "train_median": float(np.median(snr_train)),
                      "train_max": float(snr_train.max()), "test_median": float(np.median(test.snr)),
                      "test_max": float(test.snr.max())}
    results["repairs"] = train.repairs.to_dict()
    results["test_repairs"] = (test.repairs or RepairCounts()).to_dict()
    return results, pd.DataFrame(predictions)


def _intervals(cfg: ExperimentConfig, results: dict, y: np.ndarray, y_global: np.ndarray, y_oracle: np.ndarray,
               bins: np.ndarray, y_deployed: np.ndarray | None) -> None:
    """Paired bootstrap intervals of R² and ΔR², overall and per bin, into ``results`` (off when B = 0)."""
    b = cfg.evaluation.bootstrap
    if not b:
        return
    from ..core.bootstrap import r2_intervals

    names = list(results["bins"])
    ci = r2_intervals(y, y_global, y_oracle, bins, names, n_resamples=b, seed=cfg.noise.test_seed)
    results["delta_r2_ci"] = ci["overall"]["delta"]
    results["models"]["global"]["r2_ci"] = ci["overall"]["global"]
    results["models"]["oracle"]["r2_ci"] = ci["overall"]["oracle"]
    for name in names:
        per_bin = ci["bins"].get(name) or {}
        entry = results["bins"][name]
        entry["delta_r2_ci"] = per_bin.get("delta")
        entry["expert"]["r2_ci"], entry["global"]["r2_ci"] = per_bin.get("oracle"), per_bin.get("global")
    if y_deployed is not None:
        dep = r2_intervals(y, y_global, y_deployed, bins, names, n_resamples=b, seed=cfg.noise.test_seed)
        results["models"]["deployed"]["r2_ci"] = dep["overall"]["oracle"]
        results["gate"]["delta_r2_ci"] = dep["overall"]["delta"]


def _deployed(cfg: ExperimentConfig, experts: dict[str, RidgeModel | None], global_model: RidgeModel,
              train: PassResult, test: TestSet, y_global: np.ndarray, results: dict) -> dict[str, np.ndarray]:
    """MVP-2.0: a logistic-regression gate on error-only features, soft routing with fallback, and
    hard routing by the SNR of the noisy flux as a second deployable baseline."""
    from ..core.gate import (
        expert_predictions,
        fit_gate,
        gate_summary,
        hard_route_noisy_snr,
        soft_route,
    )

    partition = cfg.partition
    if not partition.is_snr:
        raise InputError("evaluation.deployable_gate: the gate predicts SNR bins; it needs routing.by: snr")
    names = list(partition.names)
    gate = fit_gate(train.feature_values, partition.assign(train.snr_values), len(names), seed=cfg.noise.seed)
    proba = gate.predict_proba(test.features)
    expert_preds = expert_predictions(test.x, [experts[n] for n in names])
    soft = soft_route(expert_preds, y_global, proba, cfg.evaluation.gate_fallback)
    hard = hard_route_noisy_snr(expert_preds, y_global, test.noisy_snr, partition.axes[0])
    n_train, models = int(train.stats.n.sum()), results["models"]
    models["deployed"] = {**regression_metrics(test.y, soft.pred), "n_train": n_train, "n_test": len(test.y)}
    models["noisy_snr_routed"] = {**regression_metrics(test.y, hard.pred), "n_train": n_train, "n_test": len(test.y)}
    results["gate"] = {**gate_summary(test.bins, proba, names, models["deployed"]["r2"], models["global"]["r2"],
                                      models["oracle"]["r2"], soft.fallback),
                       "fallback": cfg.evaluation.gate_fallback,
                       "noisy_snr_accuracy": float(np.mean(partition.assign(test.noisy_snr) == test.bins))}
    for k, name in enumerate(names):
        sel = test.bins == k
        results["bins"][name]["deployed"] = _scores(test.y[sel], soft.pred[sel])
    return {"y_deployed": soft.pred, "gate_bin": np.asarray(names)[soft.chosen], "y_noisy_snr": hard.pred}
