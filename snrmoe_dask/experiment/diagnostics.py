"""What an astronomer checks first beside R²: the spread of the target, how far the predictions
regress to the mean, and how many of them leave the range the models were trained on.

``prediction_checks`` gives the ``diagnostics`` section of results.json; the report computes the
same from predictions.csv for a results folder written before the section existed.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def prediction_check(y_true: np.ndarray, y_pred: np.ndarray,
                     train_range: tuple[float, float] | None = None) -> dict[str, float | None]:
    """One model on (n,) test spectra: the least-squares ``slope`` and ``intercept`` of prediction on
    truth (slope 1: no regression to the mean; None below 2 distinct true values), ``pred_min`` and
    ``pred_max``, and ``outside_train_range``, the share of predictions outside ``train_range``
    (the training targets' [min, max]; None when it is not known)."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    out: dict[str, float | None] = {"slope": None, "intercept": None, "pred_min": None, "pred_max": None,
                                    "outside_train_range": None}
    if len(y_pred) == 0:
        return out
    out.update(pred_min=float(y_pred.min()), pred_max=float(y_pred.max()))
    if len(y_true) >= 2 and np.ptp(y_true) > 0:
        from scipy.stats import linregress  # scipy.stats is slow to import; a run imports it during its pass

        fit = linregress(y_true, y_pred)
        out.update(slope=float(fit.slope), intercept=float(fit.intercept))
    if train_range is not None:
        low, high = train_range
        out["outside_train_range"] = float(np.mean((y_pred < low) | (y_pred > high)))
    return out


def prediction_checks(y_true: np.ndarray, predictions: Mapping[str, np.ndarray], bins: np.ndarray,
                      names: Sequence[str], train_range: tuple[float, float] | None = None) -> dict:
    """results.json ``diagnostics``.

    y_true (n,); predictions: model name -> (n,) predictions ("global", "oracle", ...); bins (n,) the
    index of each spectrum's bin in ``names``; train_range: (min, max) of the training targets.
    Returns ``target`` (train_min, train_max, test_mean, test_std: ddof 0, like RMSE), ``models``
    (per model, :func:`prediction_check`) and ``bins`` (per bin, target_std and the check of the
    expert, i.e. the oracle's predictions there, and of the global model).
    """
    y_true = np.asarray(y_true, np.float64)
    low, high = train_range if train_range is not None else (None, None)
    result = {
        "target": {"train_min": None if low is None else float(low), "train_max": None if high is None else float(high),
                   "test_mean": float(y_true.mean()) if len(y_true) else None,
                   "test_std": float(y_true.std()) if len(y_true) else None},
        "models": {name: prediction_check(y_true, pred, train_range) for name, pred in predictions.items()},
        "bins": {},
    }
    for k, name in enumerate(names):
        sel = np.asarray(bins) == k
        result["bins"][name] = {
            "target_std": float(y_true[sel].std()) if sel.any() else None,
            "expert": prediction_check(y_true[sel], np.asarray(predictions["oracle"])[sel], train_range),
            "global": prediction_check(y_true[sel], np.asarray(predictions["global"])[sel], train_range),
        }
    return result
