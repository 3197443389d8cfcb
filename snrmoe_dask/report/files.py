"""What the report writes into a results folder, by name, and how its files are recognised and checked:
the figures' file names, the PNG mark of this tool, results.json's schema and predictions.csv's columns.

No plotting here: the CLI and ``render`` read these before a run without loading matplotlib.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ..experiment.results_schema import Results, load_results

FIG_COMPARISON = "snr_oracle_moe_comparison.png"
FIG_PERBIN = "snr_oracle_moe_perbin_r2.png"
FIG_PRED_VS_TRUE = "snr_oracle_moe_pred_vs_true.png"
FIG_DELTA_HEATMAP = "snr_oracle_moe_delta_heatmap.png"
FIGURE_NAMES = (FIG_COMPARISON, FIG_PERBIN, FIG_PRED_VS_TRUE, FIG_DELTA_HEATMAP)
# drawn as well when results.json has the matching section ("gate", "alpha")
FIG_GATE_CONFUSION = "snr_oracle_moe_gate_confusion.png"
FIG_ALPHA_CURVE = "snr_oracle_moe_alpha_curve.png"
FIG_SCALING = "snr_oracle_moe_scaling.png"

PREDICTION_COLUMNS = ("y_true", "snr", "bin", "y_global", "y_oracle")


def check_results(results: Any, where: str = "results") -> Results:
    """The typed results (``experiment.results_schema``); InputError naming ``where`` and the first bad key."""
    return load_results(results, where)


def written_by_snrmoe(path: str | os.PathLike) -> bool:
    """True when the PNG at ``path`` carries this tool's ``Software`` metadata."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            software = getattr(image, "text", {}).get("Software", "")
    except (OSError, ValueError):
        return False
    return str(software).startswith("snrmoe-dask")


# columns of numbers in predictions.csv (the deployable gate adds the last two); "bin" and "gate_bin" are names
NUMBER_COLUMNS = ("y_true", "snr", "y_global", "y_oracle", "y_deployed", "y_noisy_snr")


def check_predictions(predictions: Any, where: str = "predictions") -> pd.DataFrame:
    """The predictions frame with the bin column as str and the number columns as float64; raises
    InputError (prefixed by ``where``) on a missing column or a value that is not a number."""
    if not isinstance(predictions, pd.DataFrame):
        raise InputError(f"{where}: expected a pandas DataFrame, got {type(predictions).__name__}")
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise InputError(f"{where}: missing column {missing[0]!r} "
                         f"(expected columns {', '.join(PREDICTION_COLUMNS)})")
    if predictions.empty:
        raise InputError(f"{where}: no rows; expected one row per test spectrum")
    numbers = {}
    for column in (c for c in NUMBER_COLUMNS if c in predictions.columns):
        values = pd.to_numeric(predictions[column], errors="coerce").to_numpy(np.float64, na_value=np.nan)
        bad = np.flatnonzero(np.isnan(values))
        if len(bad):
            raise InputError(f"{where}: column {column!r} row {bad[0]}: {predictions[column].iloc[bad[0]]!r} "
                             f"is not a number ({len(bad)} of {len(values)} rows)")
        numbers[column] = values
    return predictions.assign(bin=predictions["bin"].astype(str), **numbers)
