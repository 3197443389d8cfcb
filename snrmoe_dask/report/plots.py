"""The experiment card's four figures, drawn only from ``results.json`` and ``predictions.csv``.

    snr_oracle_moe_comparison.png    Global vs Oracle test R2, dR2, decision-threshold line, the
                                     card's decision and its robustness
    snr_oracle_moe_perbin_r2.png     per-bin Global vs expert R2 with interval error bars, sample
                                     counts, dR2 and its interval per bin
    snr_oracle_moe_pred_vs_true.png  true vs predicted log g, coloured by bin, both models, dR2 and
                                     counts in each panel
    snr_oracle_moe_delta_heatmap.png bins x (Global R2, Oracle R2, dR2 with its interval), n_train
                                     and n_test per row

A bin is marked (★) only when the lower bound of its dR2 interval clears the threshold; the
threshold is the rule for the overall dR2, so the marks only describe the bins.

Two more figures are drawn from plain arrays, and by :func:`make_figures` when results.json
has their section:

    snr_oracle_moe_gate_confusion.png  the deployable gate's confusion matrix ("gate";
                                       :func:`gate_confusion_figure`)
    snr_oracle_moe_alpha_curve.png     validation R2 against the Ridge alpha per model ("alpha";
                                       :func:`alpha_curve_figure`)

Bins may be SNR bins, bins of another params column or the cells of a two-column grid; labels
name the partition's columns (see :func:`cell_range_label`, :func:`partition_noun`).

Figures are built on ``matplotlib.figure.Figure`` objects (no pyplot state), so drawing is
thread-safe and independent of the interactive backend. Missing R2 (``None``/NaN, e.g. a bin
with fewer than two test spectra) is drawn as "n/a", never as zero. Every PNG carries the
metadata ``Software: snrmoe-dask <version>`` (:func:`written_by_snrmoe` reads it back).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from .._version import __version__
from ..core.metrics import decision_for
from ..errors import InputError
from ..io.atomic import atomic_file
from ..experiment.summary import shown_metrics
from ..experiment.verdict import ci_position, robustness

FIG_COMPARISON = "snr_oracle_moe_comparison.png"
FIG_PERBIN = "snr_oracle_moe_perbin_r2.png"
FIG_PRED_VS_TRUE = "snr_oracle_moe_pred_vs_true.png"
FIG_DELTA_HEATMAP = "snr_oracle_moe_delta_heatmap.png"
FIGURE_NAMES = (FIG_COMPARISON, FIG_PERBIN, FIG_PRED_VS_TRUE, FIG_DELTA_HEATMAP)
# drawn as well when results.json has the matching section ("gate", "alpha")
FIG_GATE_CONFUSION = "snr_oracle_moe_gate_confusion.png"
FIG_ALPHA_CURVE = "snr_oracle_moe_alpha_curve.png"

PREDICTION_COLUMNS = ("y_true", "snr", "bin", "y_global", "y_oracle")
MODEL_LABELS = {"global": "Global Ridge", "oracle": "Oracle MoE", "deployed": "Deployed MoE",
                "noisy_snr_routed": "Noisy-SNR routed"}
MODEL_COLORS = {"global": "#4C72B0", "oracle": "#DD8452", "deployed": "#55A868", "noisy_snr_routed": "#8172B3"}
COMPARISON_MODELS = ("global", "oracle", "deployed", "noisy_snr_routed")
GAIN_COLOR, SMALL_GAIN_COLOR, LOSS_COLOR, THRESHOLD_COLOR = "#1B7837", "#555555", "#B2182B", "#C44E52"
DECISION_COLORS = {"PASS": GAIN_COLOR, "FAIL": LOSS_COLOR}
SOFTWARE = f"snrmoe-dask {__version__}"  # PNG metadata "Software": marks the files this tool wrote
DPI = 150
SNR_COLUMN = "snr"  # routing.by of the card's SNR bins


# ----------------------------------------------------------------------------- formatting
def as_float(value: Any) -> float:
    """``None`` and non-finite values -> NaN; numbers -> float."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"results: value {value!r} is not a number") from None


def format_r2(value: Any) -> str:
    """R2 (or MAE, RMSE) with 4 decimals; missing -> 'n/a'."""
    v = as_float(value)
    return f"{v:.4f}" if math.isfinite(v) else "n/a"


def format_delta(value: Any) -> str:
    """Signed difference with 4 decimals (``+0.0500``); missing -> 'n/a'."""
    v = as_float(value)
    return f"{v:+.4f}" if math.isfinite(v) else "n/a"


def format_count(value: Any) -> str:
    """Integer count with thousands separators (``1,000,000``)."""
    return f"{int(value):,}"


def format_ci(ci: Any, signed: bool = True) -> str:
    """``[+0.0312, +0.0688]`` for a two-element interval; '' when absent or not finite."""
    lo, hi = ci_bounds(ci)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    fmt = format_delta if signed else format_r2
    return f"[{fmt(lo)}, {fmt(hi)}]"


def ci_bounds(ci: Any) -> tuple[float, float]:
    """(lo, hi) of an optional ``[lo, hi]``; (NaN, NaN) when absent or malformed."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return math.nan, math.nan
    return as_float(ci[0]), as_float(ci[1])


def snr_range_label(low: Any, high: Any) -> str:
    """'SNR≥7' (no upper edge), 'SNR<2' (lower edge 0 or none), '4≤SNR<7' otherwise."""
    lo, hi = as_float(low), as_float(high)
    has_lo, has_hi = math.isfinite(lo) and lo > 0, math.isfinite(hi)
    if has_lo and has_hi:
        return f"{lo:g}≤SNR<{hi:g}"
    if has_lo:
        return f"SNR≥{lo:g}"
    if has_hi:
        return f"SNR<{hi:g}"
    return "all SNR"


def _edge(value: float) -> str:
    """An edge as written in configs: '%g' when that is exact, else the full repr."""
    text = f"{value:g}"
    return text if float(text) == value else repr(value)


def interval_label(column: str, low: Any, high: Any) -> str:
    """'T_eff [4000, 5000)'; an open end (None / inf) is written with ∞: 'M_H (−∞, 0)', 'T_eff [5000, ∞)'."""
    lo, hi = as_float(low), as_float(high)
    left = f"[{_edge(lo)}" if math.isfinite(lo) else "(−∞"
    right = f"{_edge(hi)})" if math.isfinite(hi) else "∞)"
    return f"{column} {left}, {right}"


def _spec_columns(spec: Mapping[str, Any]) -> list[str]:
    """The label columns of one bin's ``describe`` record: ["snr"] for SNR bins (or no ``by``)."""
    by = spec.get("by")
    if by is None:
        low = spec.get("low")
        return [str(c) for c in low] if isinstance(low, Mapping) else [SNR_COLUMN]
    return [str(by)] if isinstance(by, str) else [str(c) for c in by]


def cell_range_label(spec: Mapping[str, Any], sep: str = " × ") -> str:
    """The ranges of one bin or grid cell from its ``by``/``low``/``high`` (``Partition.describe``).

    SNR bins keep the card's style ('4≤SNR<7'); another column gives 'T_eff [4000, 5000)'; a grid
    cell joins its columns' ranges with ``sep``: 'T_eff [4000, 5000) × M_H [-1, 0)'.
    """
    low, high = spec.get("low"), spec.get("high")
    columns = _spec_columns(spec)
    if isinstance(low, Mapping) or isinstance(high, Mapping):
        low = low if isinstance(low, Mapping) else {}
        high = high if isinstance(high, Mapping) else {}
        return sep.join(interval_label(c, low.get(c), high.get(c)) for c in columns)
    if columns == [SNR_COLUMN]:
        return snr_range_label(low, high)
    return interval_label(columns[0], low, high)


def bin_label(name: str, spec: Mapping[str, Any], multiline: bool = False) -> str:
    """'H (SNR≥7)', 'hot (T_eff [5000, ∞))' or 'cool|poor (T_eff [3750, 5000) × M_H (−∞, 0))' from a
    bin's edges; ``multiline`` stacks a grid cell's name and ranges on lines of their own (tick labels)."""
    if multiline and len(_spec_columns(spec)) > 1:
        return name + "\n" + cell_range_label(spec, "\n")
    return f"{name} ({cell_range_label(spec)})"


def partition_columns(results: Mapping[str, Any]) -> list[str]:
    """The columns the experts are split on: results["partition"]["by"], else the bins' ``by``, else SNR."""
    by = (results.get("partition") or {}).get("by") if isinstance(results.get("partition"), Mapping) else None
    if by is not None:
        return [str(by)] if isinstance(by, str) else [str(c) for c in by]
    bins = results.get("bins")
    if isinstance(bins, Mapping) and bins:
        first = next(iter(bins.values()))
        if isinstance(first, Mapping):
            return _spec_columns(first)
    return [SNR_COLUMN]


def is_snr_partition(results: Mapping[str, Any]) -> bool:
    """True when the experts are the SNR bins (the card's experiment)."""
    return partition_columns(results) == [SNR_COLUMN]


def column_label(column: str) -> str:
    """'SNR' for the computed SNR, the params column's own name otherwise."""
    return "SNR" if column == SNR_COLUMN else column


def partition_noun(results: Mapping[str, Any]) -> str:
    """What one expert covers, for axis labels and titles: 'SNR bin', 'T_eff bin', 'T_eff × M_H cell'."""
    columns = partition_columns(results)
    if len(columns) == 1:
        return f"{column_label(columns[0])} bin"
    return " × ".join(column_label(c) for c in columns) + " cell"


def bin_delta(spec: Mapping[str, Any]) -> float:
    """A bin's dR2 (expert - global): the stored value, else computed from the two R2."""
    stored = as_float(spec.get("delta_r2"))
    if math.isfinite(stored):
        return stored
    return as_float(spec["expert"].get("r2")) - as_float(spec["global"].get("r2"))


def min_train_count(results: Mapping[str, Any]) -> int | None:
    """The minimum training count per expert from the config (a key like ``min_train``), if any."""

    def search(node: Any) -> int | None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                k = str(key).lower()
                if (k.startswith("min") and any(w in k for w in ("train", "sample", "count", "size"))
                        and isinstance(value, (int, float)) and not isinstance(value, bool)):
                    return int(value)
            for value in node.values():
                found = search(value)
                if found is not None:
                    return found
        return None

    return search(results.get("config") or {})


def no_expert_label(results: Mapping[str, Any]) -> str:
    """'no expert (n<100)' with the configured minimum, 'no expert (n<min)' without one."""
    m = min_train_count(results)
    return f"no expert (n<{m:,})" if m is not None else "no expert (n<min)"


METRIC_LABELS = {"r2": "R²", "mae": "MAE", "rmse": "RMSE"}


def decision(results: Mapping[str, Any]) -> str:
    """results["decision"], checked against the card's rule on results' own ΔR² and threshold."""
    stored = str(results["decision"])
    delta, threshold = as_float(results["delta_r2"]), as_float(results["threshold"])
    expected = decision_for(delta, threshold)[0]
    if stored != expected:
        raise InputError(f"results: decision={stored!r} but the card's rule gives {expected} for "
                         f"ΔR² = {format_delta(delta)} and threshold {threshold:g}; rerun `snrmoe run`")
    return stored


def robustness_of(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """results["robustness"], or the same entry derived from ``delta_r2_ci``; None without an interval."""
    stored = results.get("robustness")
    if isinstance(stored, Mapping):
        return dict(stored)
    lo, hi = ci_bounds(results.get("delta_r2_ci"))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    resamples = ((results.get("config") or {}).get("evaluation") or {}).get("bootstrap")
    return robustness(as_float(results["delta_r2"]), as_float(results["threshold"]), (lo, hi),
                      int(results["models"]["oracle"]["n_test"]), resamples or 0)


def bin_marked(spec: Mapping[str, Any], threshold: float) -> bool:
    """A bin earns ★ only when the lower bound of its ΔR² interval clears the threshold (a bin
    without an expert or without an interval never does)."""
    lo, _ = ci_bounds(spec.get("delta_r2_ci"))
    return not spec.get("skipped", False) and math.isfinite(lo) and lo >= threshold


def written_by_snrmoe(path: str | os.PathLike) -> bool:
    """True when the PNG at ``path`` carries this tool's ``Software`` metadata."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            software = getattr(image, "text", {}).get("Software", "")
    except (OSError, ValueError):
        return False
    return str(software).startswith("snrmoe-dask")


# ----------------------------------------------------------------------------- validation
_MODEL_KEYS = ("r2", "mae", "rmse", "n_train", "n_test")
_BIN_KEYS = ("n_train", "n_test", "expert", "global")


def check_results(results: Any, where: str = "results") -> None:
    """Raise :class:`InputError` naming the first key the figures and report need but lack.

    where: what the message names (e.g. the path of results.json).
    """
    if not isinstance(results, Mapping):
        raise InputError(f"{where}: expected a dict (parsed results.json), got {type(results).__name__}")
    for key in ("decision", "threshold", "delta_r2", "models", "bins"):
        if key not in results:
            raise InputError(f"{where}: missing key {key!r}")
    if not isinstance(results["models"], Mapping):
        raise InputError(f"{where}: 'models' must be a dict of models, got {type(results['models']).__name__}")
    for model in ("global", "oracle"):
        entry = results["models"].get(model)
        if not isinstance(entry, Mapping):
            raise InputError(f"{where}: missing key 'models.{model}'")
        for key in _MODEL_KEYS:
            if key not in entry:
                raise InputError(f"{where}: missing key 'models.{model}.{key}'")
        _check_counts(entry, f"models.{model}", where)
    bins = results["bins"]
    if not isinstance(bins, Mapping) or not bins:
        raise InputError(f"{where}: 'bins' must be a non-empty dict of SNR bins, got {bins!r}")
    for name, spec in bins.items():
        if not isinstance(spec, Mapping):
            raise InputError(f"{where}: 'bins.{name}' must be a dict, got {type(spec).__name__}")
        for key in _BIN_KEYS:
            if key not in spec:
                raise InputError(f"{where}: missing key 'bins.{name}.{key}'")
        _check_counts(spec, f"bins.{name}", where)
        for key in ("expert", "global"):
            if not isinstance(spec[key], Mapping):
                raise InputError(f"{where}: 'bins.{name}.{key}' must be a dict of metrics, got {spec[key]!r}")
    for key in _SECTIONS:
        if key in results and not isinstance(results[key], Mapping):
            raise InputError(f"{where}: {key!r} must be a dict, got {type(results[key]).__name__}")
    if "pixels" in results.get("data", {}):
        _check_counts(results["data"], "data", where, ("pixels",))
    try:
        threshold = as_float(results["threshold"])
    except InputError:
        threshold = math.nan
    if not math.isfinite(threshold):
        raise InputError(f"{where}: threshold={results['threshold']!r}, expected a finite number")


# optional sections of results.json that the report reads as dicts
_SECTIONS = ("snr", "repairs", "test_repairs", "data", "timings_s", "gate")


def _check_counts(entry: Mapping[str, Any], at: str, where: str, keys: tuple[str, ...] = ("n_train", "n_test")) -> None:
    for key in keys:
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InputError(f"{where}: '{at}.{key}' is {value!r}, expected a count (an integer >= 0)")


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


# ----------------------------------------------------------------------------- drawing helpers
def _save(fig: Figure, path: Path) -> Path:
    """Write the PNG through a temporary file and ``os.replace`` so a reader never sees half a file."""
    with atomic_file(path) as fh:
        fig.savefig(fh, format="png", dpi=DPI, metadata={"Software": SOFTWARE})
    return path


def _subtitle(results: Mapping[str, Any]) -> str:
    models = results["models"]
    return (f"{results.get('experiment', 'LOGG-SNR-ORACLE-01')}  ·  "
            f"n_train={format_count(models['oracle']['n_train'])}, n_test={format_count(models['oracle']['n_test'])}"
            f"  ·  decision: {results['decision']}")


def robustness_line(results: Mapping[str, Any]) -> str:
    """The interval and its robustness verdict in a few words, for the figures."""
    rob = robustness_of(results)
    if rob is None:
        return "no interval (bootstrap off): no robustness verdict"
    where = ci_position(rob["ci"], as_float(results["threshold"]))
    return f"{100 * rob['level']:g}% CI {format_ci(rob['ci'])} {where}: {rob['verdict']}"


def _delta_color(delta: float, threshold: float, may_pass: bool = True) -> str:
    """Green for a ΔR² at or above the threshold (a bin's only when it is marked), red below 0, grey otherwise."""
    if not math.isfinite(delta):
        return SMALL_GAIN_COLOR
    if delta >= threshold and may_pass:
        return GAIN_COLOR
    return LOSS_COLOR if delta < 0 else SMALL_GAIN_COLOR


def _text_color(rgba) -> str:
    """Black on light cells, white on dark ones (relative luminance)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def _bin_colors(names: list[str]) -> dict[str, Any]:
    palette = colormaps["Dark2"].colors
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


# ----------------------------------------------------------------------------- figure 1
def plot_comparison(results: Mapping[str, Any], path: Path) -> Path:
    """Bar chart: test R2 per method, CI error bars, dR2 box and the decision-threshold line."""
    models = results["models"]
    keys = [k for k in COMPARISON_MODELS if isinstance(models.get(k), Mapping)]
    r2 = np.array([as_float(models[k].get("r2")) for k in keys])
    lo_hi = np.array([ci_bounds(models[k].get("r2_ci")) for k in keys])
    threshold = as_float(results["threshold"])
    line = r2[0] + threshold

    fig = Figure(figsize=(7.6, 5.9), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(keys))
    ax.bar(x, np.nan_to_num(r2), width=0.55, color=[MODEL_COLORS[k] for k in keys],
           edgecolor="black", linewidth=0.6, zorder=2)
    has_ci = np.isfinite(lo_hi).all(axis=1) & np.isfinite(r2)
    if has_ci.any():
        err = np.vstack([r2 - lo_hi[:, 0], lo_hi[:, 1] - r2])[:, has_ci]
        ax.errorbar(x[has_ci], r2[has_ci], yerr=np.clip(err, 0, None), fmt="none", ecolor="black",
                    capsize=7, linewidth=1.2, zorder=3, label="CI")
    if math.isfinite(line):
        ax.axhline(line, color=THRESHOLD_COLOR, linestyle="--", linewidth=1.5, zorder=4,
                   label=f"decision threshold: ΔR² = {threshold:g}  (R² = {line:.4f})")
    ax.axhline(0, color="black", linewidth=0.8)

    tops = np.where(has_ci, lo_hi[:, 1], r2)  # CI caps reach above the bars
    bottoms = np.where(has_ci, lo_hi[:, 0], r2)  # ... and below them
    finite = np.concatenate([r2[np.isfinite(r2)], tops[np.isfinite(tops)], bottoms[np.isfinite(bottoms)],
                             [line] if math.isfinite(line) else [], [0.0]])
    ymax, ymin = float(np.max(finite)), float(min(0.0, np.min(finite)))
    span = max(ymax - ymin, 0.1)
    for xi, v in zip(x, r2):
        # inside the bar: above it the threshold line and the CI cap would cross the number
        inside = math.isfinite(v) and v > 0.15 * span
        ax.text(xi, v / 2 if inside else max(np.nan_to_num(v), 0.0) + 0.015 * span, format_r2(v), ha="center",
                va="center" if inside else "bottom", fontsize=13, fontweight="bold",
                color="white" if inside else "black", zorder=5)
    ax.set_ylim(ymin - (0.05 * span if ymin < 0 else 0), ymax + 0.42 * span)

    ax.set_xticks(x, [f"{MODEL_LABELS[k]}\nn_train={format_count(models[k]['n_train'])}"
                      f"\nn_test={format_count(models[k]['n_test'])}" for k in keys])
    ax.set_xlabel("Method")
    ax.set_ylabel("Test R²")
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.set_axisbelow(True)

    delta = as_float(results["delta_r2"])
    verdict = decision(results)
    box = (f"ΔR² (Oracle − Global) = {format_delta(delta)}\n"
           f"{'≥' if verdict == 'PASS' else '<'} threshold {threshold:g}  →  {verdict} (the card's rule)\n"
           + robustness_line(results))
    ax.text(0.02, 0.97, box, transform=ax.transAxes, ha="left", va="top", fontsize=9.5,
            color=DECISION_COLORS[verdict], bbox=dict(boxstyle="round,pad=0.4", facecolor="white", edgecolor="0.6"))
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), fontsize=9, frameon=False)
    title = ("Oracle SNR-binned MoE vs Global Ridge: test R²" if is_snr_partition(results) else
             f"Oracle MoE (one expert per {partition_noun(results)}) vs Global Ridge: test R²")
    ax.set_title(title, fontsize=12, fontweight="bold")
    fig.suptitle(_subtitle(results), fontsize=9, color="0.35")
    return _save(fig, path)


# ----------------------------------------------------------------------------- figure 2
def plot_perbin(results: Mapping[str, Any], path: Path) -> Path:
    """Grouped bars per bin (+ Overall): Global vs expert R2 with their intervals as error bars, and
    above each group ΔR² with its interval (★ where the interval's lower bound clears the threshold)."""
    bins, models = results["bins"], results["models"]
    threshold = as_float(results["threshold"])
    names = list(bins)
    g = np.array([as_float(bins[n]["global"].get("r2")) for n in names] + [as_float(models["global"]["r2"])])
    o = np.array([as_float(bins[n]["expert"].get("r2")) for n in names] + [as_float(models["oracle"]["r2"])])
    d = np.array([bin_delta(bins[n]) for n in names] + [as_float(results["delta_r2"])])
    d_ci = [bins[n].get("delta_r2_ci") for n in names] + [results.get("delta_r2_ci")]
    marked = [bin_marked(bins[n], threshold) for n in names] + [False]
    skipped = [bool(bins[n].get("skipped", False)) for n in names] + [False]
    # (groups, 2) interval bounds of each bar; a skipped bin's expert bar is the global model's
    g_ci, o_ci = (np.array([ci_bounds(bins[n][side].get("r2_ci")) for n in names]
                           + [ci_bounds(models[overall].get("r2_ci"))])
                  for side, overall in (("global", "global"), ("expert", "oracle")))
    o_ci[np.array(skipped)] = np.nan
    labels = [f"{bin_label(n, bins[n], multiline=True)}\nn_train={format_count(bins[n]['n_train'])}"
              f"\nn_test={format_count(bins[n]['n_test'])}" for n in names]
    labels.append(f"Overall\nn_train={format_count(models['oracle']['n_train'])}"
                  f"\nn_test={format_count(models['oracle']['n_test'])}")

    x = np.arange(len(names) + 1, dtype=float)
    x[-1] += 0.4  # set Overall apart from the bins
    w = 0.36
    fig = Figure(figsize=(max(8.0, 1.9 * len(x) + 1.5), 6.2), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(x - w / 2, np.nan_to_num(g), w, color=MODEL_COLORS["global"], edgecolor="black", linewidth=0.6, zorder=2)
    oracle_bars = ax.bar(x + w / 2, np.nan_to_num(o), w, color=MODEL_COLORS["oracle"], edgecolor="black",
                         linewidth=0.6, zorder=2)
    for bar, skip in zip(oracle_bars, skipped):
        if skip:  # served by the global model: same height, drawn hollow
            bar.set_facecolor("white")
            bar.set_hatch("///")
            bar.set_edgecolor(MODEL_COLORS["oracle"])
    for xs, values, bounds in ((x - w / 2, g, g_ci), (x + w / 2, o, o_ci)):
        ok = np.isfinite(bounds).all(axis=1) & np.isfinite(values)
        if ok.any():
            err = np.clip(np.vstack([values - bounds[:, 0], bounds[:, 1] - values])[:, ok], 0, None)
            ax.errorbar(xs[ok], values[ok], yerr=err, fmt="none", ecolor="black", capsize=4, linewidth=1.0,
                        zorder=4)
    trained = ~np.array(skipped)
    ax.hlines((g + threshold)[trained], (x + 0.03)[trained], (x + w - 0.03)[trained], colors=THRESHOLD_COLOR,
              linestyles="--", linewidth=1.8, zorder=4)
    ax.axhline(0, color="black", linewidth=0.8)

    tops = np.vstack([g, o, g + threshold, g_ci[:, 1], o_ci[:, 1]])
    bottoms = np.vstack([g, o, g_ci[:, 0], o_ci[:, 0]])
    finite = np.concatenate([tops[np.isfinite(tops)], bottoms[np.isfinite(bottoms)], [0.0]])
    ymax, ymin = float(finite.max()), float(min(0.0, finite.min()))
    span = max(ymax - ymin, 0.1)
    for xi, gv, ov, skip in zip(x, g, o, skipped):
        for xb, v, dark in ((xi - w / 2, gv, True), (xi + w / 2, ov, not skip)):
            # the value sits inside the bar's base, clear of the threshold mark near its top
            inside = math.isfinite(v) and v > 0.12 * span
            below = math.isfinite(v) and v < 0
            y = 0.02 * span if inside else (v - 0.015 * span if below else max(np.nan_to_num(v), 0.0) + 0.015 * span)
            box = None if dark or not inside else dict(boxstyle="square,pad=0.15", facecolor="white", edgecolor="none")
            ax.text(xb, y, format_r2(v), ha="center", va="top" if below else "bottom", fontsize=8,
                    rotation=90 if inside else 0,
                    color="white" if inside and dark else "0.15", fontweight="bold" if inside else "normal",
                    zorder=5, bbox=box)
    no_expert = no_expert_label(results)
    for i, (xi, dv, skip) in enumerate(zip(x, d, skipped)):
        column = np.append(tops[:, i], 0.0)
        # a group without any R2 only has the small 'n/a' labels at the base to clear
        top = float(np.nanmax(column)) if np.isfinite([g[i], o[i]]).any() else 0.06 * span
        ci_text = format_ci(d_ci[i])
        text, color = (no_expert, SMALL_GAIN_COLOR) if skip else (
            f"ΔR² = {format_delta(dv)}{' ★' if marked[i] else ''}" + (f"\nCI {ci_text}" if ci_text else ""),
            _delta_color(dv, threshold, marked[i] or i == len(names)))
        ax.text(xi, top + 0.03 * span, text, ha="center", va="bottom", fontsize=8.5,
                fontweight="bold", color=color, zorder=5,
                bbox=dict(boxstyle="round,pad=0.25", facecolor="white", edgecolor=color, linewidth=0.8))
    ax.axvline((x[-2] + x[-1]) / 2, color="0.6", linewidth=0.8, linestyle=":")
    ax.set_ylim(ymin - (0.08 * span if ymin < 0 else 0), ymax + 0.24 * span)
    ax.set_xticks(x, labels, fontsize=9)
    ax.set_xlabel(partition_noun(results))
    ax.set_ylabel("Test R²")
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.set_axisbelow(True)
    handles: list[Any] = [Patch(facecolor=MODEL_COLORS["global"], edgecolor="black", label="Global Ridge"),
                          Patch(facecolor=MODEL_COLORS["oracle"], edgecolor="black", label="Oracle expert")]
    handles.append(Line2D([], [], color=THRESHOLD_COLOR, linestyle="--", linewidth=1.6,
                          label=f"Global R² + {threshold:g}"))
    if np.isfinite(g_ci).any():
        handles.append(Line2D([], [], color="black", marker="_", markersize=8, linewidth=1.0,
                              label=f"{_ci_level(results)} CI"))
    if any(skipped):
        handles.append(Patch(facecolor="white", edgecolor=MODEL_COLORS["oracle"], hatch="///",
                             label="no expert: served by Global"))
    fig.legend(handles=handles, loc="outside lower center", fontsize=9, ncol=len(handles), frameon=False)
    fig.suptitle(f"Test R² per {partition_noun(results)}: Global Ridge vs Oracle expert\n"
                 f"★: the bin's ΔR² CI lies at or above {threshold:g} (descriptive; the decision is on the "
                 f"overall ΔR²)\n{_subtitle(results)}", fontsize=11)
    return _save(fig, path)


def _ci_level(results: Mapping[str, Any]) -> str:
    rob = robustness_of(results)
    return f"{100 * rob['level']:g}%" if rob else "95%"


# ----------------------------------------------------------------------------- figure 3
def plot_pred_vs_true(results: Mapping[str, Any], predictions: pd.DataFrame, path: Path) -> Path:
    """Two panels (Global | Oracle): predicted vs true log g, coloured by bin, identity line; each panel
    gives ΔR² and the counts, overall and per bin."""
    bins, models = results["bins"], results["models"]
    names = list(bins) + [b for b in pd.unique(predictions["bin"]) if b not in bins]
    colors = _bin_colors(names)
    counts = predictions["bin"].value_counts()
    values = predictions[["y_true", "y_global", "y_oracle"]].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    margin = 0.04 * max(hi - lo, 1e-6)
    lim = (lo - margin, hi + margin)
    size = 14 if len(predictions) <= 2000 else 6

    delta_ci = format_ci(results.get("delta_r2_ci"))
    panel_text = "\n".join(
        [f"ΔR² (Oracle − Global) = {format_delta(results['delta_r2'])}" + (f", CI {delta_ci}" if delta_ci else ""),
         f"n_train = {format_count(models['oracle']['n_train'])}, n_test = {format_count(len(predictions))}"]
        + [f"{name}: n_train = {format_count(bins[name]['n_train'])}, n_test = {format_count(counts.get(name, 0))}, "
           f"ΔR² = {format_delta(bin_delta(bins[name]))}" for name in names if name in bins])
    fig = Figure(figsize=(11, 5.9), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    for ax, key, column in zip(axes, ("global", "oracle"), ("y_global", "y_oracle")):
        for name in names:
            rows = predictions[predictions["bin"] == name]
            # small bins on top so that a few high-SNR points are not buried under the crowd
            ax.scatter(rows["y_true"], rows[column], s=size, alpha=0.65, color=colors[name], edgecolors="none",
                       rasterized=True, zorder=3 + len(predictions) - len(rows))
        ax.plot(lim, lim, color="black", linestyle="--", linewidth=1.0, zorder=2)
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.set_xlabel("True log g [dex]")
        m = models[key]
        scores = [f"R² = {format_r2(m.get('r2'))}"] + [f"{METRIC_LABELS[k]} = {format_r2(m.get(k))} dex"
                                                       for k in shown_metrics(results) if k != "r2"]
        ax.set_title(f"{MODEL_LABELS[key]}\n" + ",  ".join(scores), fontsize=10.5, fontweight="bold")
        ax.text(0.03, 0.97, panel_text, transform=ax.transAxes, ha="left", va="top", fontsize=8.5, zorder=10,
                bbox=dict(boxstyle="round,pad=0.35", facecolor="white", edgecolor="0.6", alpha=0.9))
    axes[0].set_ylabel("Predicted log g [dex]")
    handles = [Line2D([], [], marker="o", linestyle="", markersize=7, color=colors[name],
                      label=f"{bin_label(name, bins[name]) if name in bins else name}: "
                            f"n={format_count(counts.get(name, 0))}"
                            + (", no expert" if name in bins and bins[name].get("skipped") else ""))
               for name in names]
    handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1.0, label="identity (y = x)"))
    # long grid-cell labels get fewer columns so that the legend stays within the figure
    widest = max(len(h.get_label()) for h in handles)
    fig.legend(handles=handles, loc="outside lower center", ncol=max(1, min(len(handles), 5, 110 // widest)),
               fontsize=9, frameon=False)
    fig.suptitle(f"Predicted vs true log g on the test set, coloured by {partition_noun(results)}\n"
                 f"{_subtitle(results)}", fontsize=11)
    return _save(fig, path)


# ----------------------------------------------------------------------------- figure 4
def plot_delta_heatmap(results: Mapping[str, Any], path: Path) -> Path:
    """Heatmap: rows = bins + Overall (n_train, n_test); R2 columns on a sequential scale, dR2 and its
    interval on a diverging one, ★ where the interval's lower bound clears the threshold."""
    bins, models = results["bins"], results["models"]
    threshold = as_float(results["threshold"])
    names = list(bins)
    r2 = np.array([[as_float(bins[n]["global"].get("r2")), as_float(bins[n]["expert"].get("r2"))] for n in names]
                  + [[as_float(models["global"]["r2"]), as_float(models["oracle"]["r2"])]])
    delta = np.array([bin_delta(bins[n]) for n in names] + [as_float(results["delta_r2"])])[:, None]
    skipped = [bool(bins[n].get("skipped", False)) for n in names] + [False]
    marked = [bin_marked(bins[n], threshold) for n in names] + [False]
    delta_ci = [bins[n].get("delta_r2_ci") for n in names] + [results.get("delta_r2_ci")]
    row_labels = [f"{bin_label(n, bins[n], multiline=True)}\nn_train={format_count(bins[n]['n_train'])}"
                  f"\nn_test={format_count(bins[n]['n_test'])}" for n in names]
    row_labels.append(f"Overall\nn_train={format_count(models['oracle']['n_train'])}"
                      f"\nn_test={format_count(models['oracle']['n_test'])}")
    n_rows = len(row_labels)

    fig = Figure(figsize=(9.0, 1.0 + 0.95 * n_rows + 1.6), layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=[2.0, 1.15])
    ax_r2 = fig.add_subplot(grid[0])
    ax_d = fig.add_subplot(grid[1], sharey=ax_r2)

    finite_r2 = r2[np.isfinite(r2)]
    r2_norm = Normalize(vmin=min(0.0, float(finite_r2.min()) if finite_r2.size else 0.0),
                        vmax=max(1.0, float(finite_r2.max()) if finite_r2.size else 1.0))
    r2_cmap = colormaps["viridis"].with_extremes(bad="#D9D9D9")
    finite_d = np.abs(delta[np.isfinite(delta)])
    d_lim = max(2.0 * threshold, float(finite_d.max()) if finite_d.size else 0.0) * 1.1 or 0.05
    d_norm = Normalize(vmin=-d_lim, vmax=d_lim)  # symmetric limits put 0 at the colormap's centre
    d_cmap = colormaps["RdBu"].with_extremes(bad="#D9D9D9")

    im_r2 = ax_r2.imshow(np.ma.masked_invalid(r2), cmap=r2_cmap, norm=r2_norm, aspect="auto")
    im_d = ax_d.imshow(np.ma.masked_invalid(delta), cmap=d_cmap, norm=d_norm, aspect="auto")

    for i in range(n_rows):
        for j in range(2):
            v = r2[i, j]
            rgba = r2_cmap(r2_norm(v)) if math.isfinite(v) else (0.85, 0.85, 0.85, 1)
            text = format_r2(v) + ("\n(= global)" if j == 1 and skipped[i] else "")
            ax_r2.text(j, i, text, ha="center", va="center", fontsize=10, color=_text_color(rgba))
        dv = delta[i, 0]
        rgba = d_cmap(d_norm(dv)) if math.isfinite(dv) else (0.85, 0.85, 0.85, 1)
        passed = marked[i]
        ci = format_ci(delta_ci[i])
        text = "no expert" if skipped[i] else format_delta(dv) + (" ★" if passed else "") + (f"\n{ci}" if ci else "")
        ax_d.text(0, i, text, ha="center", va="center", fontsize=9.5,
                  fontweight="bold" if passed else "normal", color=_text_color(rgba))
        if passed:
            ax_d.add_patch(Rectangle((-0.46, i - 0.44), 0.92, 0.88, fill=False, edgecolor="black",
                                     linewidth=2.0, zorder=3))
    for ax in (ax_r2, ax_d):
        ax.axhline(n_rows - 1.5, color="white", linewidth=4)  # sets Overall apart from the bins
        ax.tick_params(length=0)
        ax.xaxis.tick_top()
        for spine in ax.spines.values():
            spine.set_visible(False)
    ax_r2.set_xticks([0, 1], ["Global R²", "Oracle R²"], fontsize=10.5)
    ax_r2.set_yticks(np.arange(n_rows), row_labels, fontsize=9.5)
    ax_d.set_xticks([0], ["ΔR² (Oracle − Global)"], fontsize=10.5)
    ax_d.tick_params(labelleft=False)

    cb_r2 = fig.colorbar(im_r2, ax=ax_r2, location="bottom", shrink=0.85, pad=0.02, aspect=30)
    cb_r2.set_label("Test R²")
    cb_d = fig.colorbar(im_d, ax=ax_d, location="bottom", shrink=0.95, pad=0.02, aspect=18)
    cb_d.set_label(f"ΔR²  (line: threshold {threshold:g})")
    cb_d.ax.axvline(threshold, color="black", linewidth=1.5)
    cb_d.ax.tick_params(labelsize=8)
    fig.suptitle(f"ΔR² by {partition_noun(results)}: Oracle MoE vs Global Ridge (cells: ΔR² and its CI)\n"
                 f"★ framed: the bin's ΔR² CI lies at or above {threshold:g} (descriptive; the decision is on "
                 f"the overall ΔR²)\n{_subtitle(results)}", fontsize=10.5)
    return _save(fig, path)


# ----------------------------------------------------------------------------- entry point
def make_figures(results: Mapping[str, Any], predictions: pd.DataFrame, img_dir: str | os.PathLike) -> list[Path]:
    """Write the card's four PNGs into ``img_dir`` (created if missing), then the gate's confusion
    matrix when results has "gate" and the alpha curves when it has "alpha"; returns the paths in
    that order.

    ``results``: the parsed results.json. ``predictions``: one row per test spectrum with columns
    y_true, snr, bin, y_global, y_oracle.
    """
    check_results(results)
    predictions = check_predictions(predictions)
    img_dir = Path(img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_comparison(results, img_dir / FIG_COMPARISON),
        plot_perbin(results, img_dir / FIG_PERBIN),
        plot_pred_vs_true(results, predictions, img_dir / FIG_PRED_VS_TRUE),
        plot_delta_heatmap(results, img_dir / FIG_DELTA_HEATMAP),
    ]
    gate = results.get("gate")
    if isinstance(gate, Mapping):
        paths.append(plot_gate_confusion(gate, img_dir / FIG_GATE_CONFUSION))
    if isinstance(results.get("alpha"), Mapping) and alpha_curves(results["alpha"])[0]:
        paths.append(plot_alpha_curve(results["alpha"], img_dir / FIG_ALPHA_CURVE))
    return paths


def plot_gate_confusion(gate: Mapping[str, Any], path: Path) -> Path:
    """The confusion matrix of results["gate"] (rows: true bin, columns: the gate's bin)."""
    if "confusion" not in gate or "names" not in gate:
        raise InputError("results: 'gate' needs keys 'confusion' and 'names'")
    return gate_confusion_figure(gate["confusion"], gate["names"], path)


def alpha_curves(alpha: Mapping[str, Any]) -> tuple[dict[str, tuple[list[float], list[Any]]], dict[str, float]]:
    """(curves, chosen) of results["alpha"] for :func:`alpha_curve_figure`: the global model, then the
    experts; a model without a validation curve (it took the global alpha) is left out, and so are
    alphas <= 0, which a log axis cannot show (a chosen alpha of 0 is then not starred)."""
    models = {"global": alpha.get("global"), **(alpha.get("experts") or {})}
    curves: dict[str, tuple[list[float], list[Any]]] = {}
    chosen: dict[str, float] = {}
    for name, model in models.items():
        if not isinstance(model, Mapping):
            continue
        curve = model.get("curve") or {}
        alphas, r2 = curve.get("alpha"), curve.get("val_r2")
        if not alphas or not r2 or len(alphas) != len(r2):
            continue
        points = [(a, v) for a, v in zip(alphas, r2) if as_float(a) > 0]
        if not points:
            continue
        curves[str(name)] = ([a for a, _ in points], [v for _, v in points])
        if as_float(model.get("alpha")) > 0:
            chosen[str(name)] = as_float(model["alpha"])
    return curves, chosen


def plot_alpha_curve(alpha: Mapping[str, Any], path: Path) -> Path:
    """Validation R² against alpha for every model of results["alpha"], the fixed alpha as a reference line."""
    curves, chosen = alpha_curves(alpha)
    fixed = as_float(alpha.get("fixed_alpha"))
    return alpha_curve_figure(curves, chosen, fixed if fixed > 0 else None, path)


# ----------------------------------------------------------------------------- deployable gate figures
def _check_confusion(confusion: Any, names: list[str]) -> np.ndarray:
    conf = np.asarray(confusion, dtype=np.float64)
    k = len(names)
    if k == 0 or conf.shape != (k, k):
        raise InputError(f"gate confusion: expected a {k} x {k} matrix for bins {names}, got shape {conf.shape}")
    if not np.isfinite(conf).all() or (conf < 0).any() or (conf != np.round(conf)).any():
        raise InputError("gate confusion: expected non-negative integer counts")
    return conf


def gate_confusion_figure(confusion: Any, names: Any, path: str | os.PathLike) -> Path:
    """Annotated heatmap of the gate's confusion matrix (K, K): rows = true bin, columns = predicted bin.

    Colours are row-normalised (the share of each true bin's test spectra sent to each bin), so a
    small bin is as readable as a large one; each cell shows its count and that share. names: (K,)
    bin names in bin order. Returns the PNG's path (its folder is created if missing).
    """
    names = [str(n) for n in names]
    conf = _check_confusion(confusion, names)
    k = len(names)
    row_sums = conf.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(row_sums > 0, conf / row_sums, np.nan)  # a bin with no test spectra: grey
    total = float(conf.sum())
    accuracy = float(np.trace(conf)) / total if total > 0 else math.nan

    fig = Figure(figsize=(2.2 + 1.25 * k, 1.6 + 1.1 * k), layout="constrained")
    ax = fig.add_subplot()
    cmap = colormaps["Blues"].with_extremes(bad="#D9D9D9")
    norm = Normalize(vmin=0.0, vmax=1.0)
    im = ax.imshow(np.ma.masked_invalid(share), cmap=cmap, norm=norm, aspect="equal")
    for i in range(k):
        for j in range(k):
            rgba = cmap(norm(share[i, j])) if math.isfinite(share[i, j]) else (0.85, 0.85, 0.85, 1)
            text = format_count(conf[i, j]) + (f"\n{share[i, j]:.1%}" if math.isfinite(share[i, j]) else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=10,
                    fontweight="bold" if i == j else "normal", color=_text_color(rgba))
        # the correct-routing cell of each row is framed
        ax.add_patch(Rectangle((i - 0.48, i - 0.48), 0.96, 0.96, fill=False, edgecolor="black", linewidth=1.5))
    ax.set_xticks(np.arange(k), names)
    ax.set_yticks(np.arange(k), [f"{n}\nn={format_count(c)}" for n, c in zip(names, row_sums[:, 0])])
    ax.set_xlabel("Predicted SNR bin (gate)")
    ax.set_ylabel("True SNR bin")
    ax.tick_params(length=0)
    cb = fig.colorbar(im, ax=ax, shrink=0.85)
    cb.set_label("Share of the true bin's test spectra")
    acc_text = f"{accuracy:.1%}" if math.isfinite(accuracy) else "n/a"
    fig.suptitle(f"Gate confusion matrix (rows: true bin)\naccuracy {acc_text}, n_test={format_count(total)}",
                 fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)


def _positive(value: Any, what: str) -> float:
    v = as_float(value)
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"alpha curve: {what} must be a finite number > 0 (log axis), got {value!r}")
    return v


def _check_curve(name: str, curve: Any) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, r2) of one model, sorted by alpha, both (A,) float64."""
    try:
        alphas, r2 = curve
    except (TypeError, ValueError):
        raise InputError(f"alpha curve {name!r}: expected (alphas, val_r2), got {curve!r}") from None
    alphas = np.array([_positive(a, f"{name!r} alpha") for a in alphas], dtype=np.float64)
    r2 = np.array([as_float(v) for v in r2], dtype=np.float64)
    if alphas.size == 0 or alphas.shape != r2.shape:
        raise InputError(f"alpha curve {name!r}: expected as many R² as alphas (>= 1), "
                         f"got {alphas.size} alphas and {r2.size} R²")
    order = np.argsort(alphas)
    return alphas[order], r2[order]


def _r2_at(alpha: float, alphas: np.ndarray, r2: np.ndarray) -> float:
    """R² at ``alpha``: the curve's value at a listed alpha, else interpolated in log alpha."""
    hit = np.flatnonzero(np.isclose(alphas, alpha, rtol=1e-9, atol=0.0))
    if hit.size:
        return float(r2[hit[0]])
    ok = np.isfinite(r2)
    if not ok.any():
        return math.nan
    return float(np.interp(np.log(alpha), np.log(alphas[ok]), r2[ok]))


def alpha_curve_figure(curves: Mapping[str, Any], chosen: Mapping[str, Any], fixed_alpha: float | None,
                       path: str | os.PathLike) -> Path:
    """Validation R² against the Ridge alpha (log x axis), one line per model.

    curves: {model name: (alphas (A,), validation R² (A,))}, e.g. "global" and the bin names;
    chosen: {model name: selected alpha}, marked with a star on its curve; fixed_alpha: the
    card's fixed penalty, drawn as a vertical reference line (None: no line). Missing R²
    (None/NaN) leave gaps.
    Returns the PNG's path (its folder is created if missing).
    """
    if not isinstance(curves, Mapping) or not curves:
        raise InputError("alpha curve: expected {model name: (alphas, val_r2)} with at least one model")
    unknown = [n for n in chosen if n not in curves]
    if unknown:
        raise InputError(f"alpha curve: chosen alphas for models without a curve: {unknown}")
    fixed = None if fixed_alpha is None else _positive(fixed_alpha, "the fixed alpha")
    data = {str(name): _check_curve(str(name), curve) for name, curve in curves.items()}
    others = [n for n in data if n not in MODEL_COLORS]
    colors = {**_bin_colors(others), **{n: MODEL_COLORS[n] for n in data if n in MODEL_COLORS}}

    fig = Figure(figsize=(8.4, 5.2), layout="constrained")
    ax = fig.add_subplot()
    for name, (alphas, r2) in data.items():
        label = MODEL_LABELS.get(name, name)
        if name in chosen:
            a = _positive(chosen[name], f"the chosen alpha of {name!r}")
            ax.plot([a], [_r2_at(a, alphas, r2)], marker="*", markersize=16, color=colors[name],
                    markeredgecolor="black", linestyle="none", zorder=4)
            label += f" (chosen α = {a:g})"
        ax.plot(alphas, r2, marker="o", markersize=4, linewidth=1.6, color=colors[name], label=label, zorder=3)
    if fixed is not None:
        ax.axvline(fixed, color="0.25", linestyle="--", linewidth=1.3, label=f"fixed α = {fixed:g}", zorder=2)
    ax.set_xscale("log")
    ax.set_xlabel("Ridge α (log scale)")
    ax.set_ylabel("Validation R²")
    ax.grid(alpha=0.3, which="both", zorder=0)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], marker="*", markersize=12, color="0.5", markeredgecolor="black",
                          linestyle="none"))
    labels.append("chosen α")
    # outside the axes: with one curve per bin an inside legend would hide the curves' peaks
    fig.legend(handles, labels, loc="outside right upper", fontsize=8.5, frameon=False)
    fig.suptitle("Validation R² vs Ridge α per model", fontsize=12)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)
