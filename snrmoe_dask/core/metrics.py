"""Scores (scikit-learn's functions on the in-memory test set) and the card's decision gate."""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

# The card's Decision Gate table (Gate-2): the next step of each verdict.
NEXT_STEP = {
    "PASS": "Continue to MVP-2.0 (Deployable Gate)",
    "FAIL": "Jump to Gate-4 (Whitening/Conditional)",
}


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float | None]:
    """R2, MAE, RMSE of (n,) predictions; R2 is None below 2 spectra (undefined)."""
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error  # a command imports it late

    return {
        "r2": float(r2_score(y_true, y_pred)) if len(y_true) >= 2 else None,
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
    }


def check_r2_defined(y_true: np.ndarray, where: str) -> None:
    """Raise InputError (prefixed by ``where``) when R² of targets y_true (n,) is undefined: fewer
    than 2 values, or all equal (scikit-learn would then quietly return 0 or 1)."""
    if len(y_true) < 2:
        raise InputError(f"{where}: {len(y_true)} spectr{'um' if len(y_true) == 1 else 'a'}; R² needs at least 2")
    if np.ptp(y_true) == 0:
        raise InputError(f"{where}: all {len(y_true)} target values equal {float(y_true[0])!r}; R² needs targets that vary")


def decision_for(delta_r2: float, threshold: float) -> tuple[str, str]:
    """The card's Gate-2 rule on the point estimate: PASS when delta_r2 >= threshold, else FAIL; and
    the card's next step. How robust the verdict is to the test set is a separate question
    (``experiment.verdict.robustness``): it never changes the decision."""
    if delta_r2 is None or not math.isfinite(delta_r2):
        raise InputError(f"decision: ΔR² is {delta_r2!r}; expected a finite number")
    decision = "PASS" if delta_r2 >= threshold else "FAIL"
    return decision, NEXT_STEP[decision]
