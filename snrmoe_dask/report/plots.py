"""The experiment card's four figures, drawn from the facts of a run (typed results.json and
predictions.csv).

    snr_oracle_moe_comparison.png    Global vs Oracle test R² (and the deployable models), each with its
                                     interval, the decision-threshold line, ΔR², the card's decision
    snr_oracle_moe_perbin_r2.png     per-bin Global vs expert R² with interval error bars, sample counts,
                                     ΔR² and its interval per bin; ★ where that interval clears the threshold
    snr_oracle_moe_pred_vs_true.png  true vs predicted log g, coloured by bin, both models, the fitted
                                     slope, the training range; points beyond the axes on its edge
    snr_oracle_moe_delta_heatmap.png bins (and overall) along the x axis; R² rows and a ΔR² row coloured
                                     around the threshold (white), ΔR² and its interval in each cell

Each figure has one threshold rule, named in its legend or colour bar: Figure 1 the card's rule on
the overall ΔR², Figure 2 the ★ on each bin's interval, Figure 4 the colour of the point estimate.
Axis ranges come from the data (most of it, where a few values would crush the rest: those are drawn
on the edge and counted); text boxes sit where no data are.

:func:`make_figures` draws these four, then the two of ``report.gate_alpha_plots`` when results.json
has their section: the deployable gate's confusion matrix ("gate") and validation R² against the Ridge
alpha per model ("alpha"). Colours, labels and the PNG writer are ``report.figure_style``.

Figures are built on ``matplotlib.figure.Figure`` objects (no pyplot state), so drawing is
thread-safe and independent of the interactive backend. Missing R² is drawn as "n/a", never as
zero. Every PNG carries the metadata ``Software: snrmoe-dask <version>`` (:func:`written_by_snrmoe`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ..io.forked import map_shared
from .facts import BinFacts, Facts, build_facts
from .files import (FIG_ALPHA_CURVE, FIG_COMPARISON, FIG_DELTA_HEATMAP, FIG_GATE_CONFUSION,  # noqa: F401
                    FIG_PERBIN, FIG_PRED_VS_TRUE, FIG_SCALING, FIGURE_NAMES, PREDICTION_COLUMNS,
                    check_predictions, check_results, written_by_snrmoe)
from .figure_style import (GAIN_COLOR, LOSS_COLOR, MODEL_COLORS, MODEL_LABELS, SMALL_GAIN_COLOR, THRESHOLD_COLOR,
                           bin_colors, padded, save_figure, text_color)
from .formatting import ci_bounds, format_ci, format_count, format_delta, format_r2
from .gate_alpha_plots import alpha_curves, gate_confusion_figure, plot_alpha_curve

COMPARISON_MODELS = ("global", "oracle", "deployed", "noisy_snr_routed")
DECISION_COLORS = {"PASS": GAIN_COLOR, "FAIL": LOSS_COLOR}
METRIC_LABELS = {"r2": "R²", "mae": "MAE", "rmse": "RMSE"}
# the axes show the values between these percentiles (and every value of a small set); the rest lie on the edge
CORE_PERCENTILES = (0.5, 99.5)


# ----------------------------------------------------------------------------- reading results
def bin_marked(spec: Any, threshold: float) -> bool:
    """A bin earns ★ only when the lower bound of its ΔR² interval clears the threshold (a bin without an
    expert or without an interval never does). ``spec``: a results.json bin (dict or typed)."""
    get = spec.get if isinstance(spec, Mapping) else (lambda key, default=None: getattr(spec, key, default))
    lo, _ = ci_bounds(get("delta_r2_ci"))
    return not get("skipped", False) and math.isfinite(lo) and lo >= threshold


# ----------------------------------------------------------------------------- drawing helpers
def core_range(values: Any, always: tuple[float, ...] = ()) -> tuple[float, float]:
    """(low, high) that shows most of ``values``: the CORE_PERCENTILES range and a tenth of it on each side
    (all of them when fewer than 200), widened to ``always``; a few extreme values would otherwise crush
    the rest."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    extra = [v for v in always if math.isfinite(v)]
    if values.size == 0 and not extra:
        return 0.0, 1.0
    if values.size >= 200:
        low, high = np.percentile(values, CORE_PERCENTILES)
        reach = 0.1 * (high - low)  # a little beyond the core, as far as the data go
        low, high = max(values.min(), low - reach), min(values.max(), high + reach)
    else:
        low, high = (values.min(), values.max()) if values.size else (extra[0], extra[0])
    low, high = min([float(low), *extra]), max([float(high), *extra])
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def _subtitle(f: Facts) -> str:
    return (f"{f.results.experiment}  ·  n_train={format_count(f.n_train)}, n_test={format_count(f.n_test)}"
            f"  ·  decision: {f.decision}")


def _robustness_line(f: Facts) -> str:
    rob = f.robustness
    if rob is None:
        return "no interval (bootstrap off): no robustness verdict"
    lo, hi = rob.ci
    where = ("lies at or above the threshold" if lo >= f.threshold else
             "lies below the threshold" if hi < f.threshold else "includes the threshold")
    return f"{100 * rob.level:g}% CI {format_ci(rob.ci)} {where}: {rob.verdict}"


def _expert_cell_label(f: Facts) -> str:
    """What one expert covers: 'SNR bin', 'T_eff bin', 'T_eff × M_H cell'."""
    return f"{f.split} bin" if len(f.columns) == 1 else f"{f.split} cell"


def _bin_label(b: BinFacts, multiline: bool = False) -> str:
    if multiline:
        return f"{b.name}\n{b.tick}"
    return f"{b.name} ({b.tick.replace(chr(10), ' × ')})"


def _ci_label(f: Facts) -> str:
    return f"{100 * f.robustness.level:g}% CI" if f.robustness else "95% CI"


def _error_bars(ax, xs: np.ndarray, values: np.ndarray, bounds: np.ndarray, **style) -> None:
    ok = np.isfinite(bounds).all(axis=1) & np.isfinite(values)
    if ok.any():
        err = np.clip(np.vstack([values - bounds[:, 0], bounds[:, 1] - values])[:, ok], 0, None)
        ax.errorbar(xs[ok], values[ok], yerr=err, fmt="none", ecolor="black", **style)


def _bounds(ci: tuple[float, float] | None) -> tuple[float, float]:
    return ci if ci is not None else (math.nan, math.nan)


# ----------------------------------------------------------------------------- figure 1
def plot_comparison(results: Any, path: Path) -> Path:
    """Bar chart: test R² per model with its interval, the decision-threshold line and, above the bars
    (where no data are), ΔR² and the card's decision."""
    f = results if isinstance(results, Facts) else build_facts(results)
    keys = [k for k in COMPARISON_MODELS if k in f.models]
    r2 = np.array([f.models[k].r2 for k in keys])
    lo_hi = np.array([_bounds(f.models[k].r2_ci) for k in keys])
    line = f.global_.r2 + f.threshold

    fig = Figure(figsize=(7.6, 5.9), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(keys))
    ax.bar(x, np.nan_to_num(r2), width=0.55, color=[MODEL_COLORS[k] for k in keys], edgecolor="black",
           linewidth=0.6, zorder=2)
    _error_bars(ax, x, r2, lo_hi, capsize=7, linewidth=1.2, zorder=3, label=_ci_label(f))
    if math.isfinite(line):
        ax.axhline(line, color=THRESHOLD_COLOR, linestyle="--", linewidth=1.5, zorder=4,
                   label=f"decision threshold: Global R² + {f.threshold:g} = {line:.4f}")
    ax.axhline(0, color="black", linewidth=0.8)
    finite = np.concatenate([r2[np.isfinite(r2)], lo_hi[np.isfinite(lo_hi)], [line] if math.isfinite(line) else [],
                             [0.0]])
    ymax, ymin = float(finite.max()), float(min(0.0, finite.min()))
    span = max(ymax - ymin, 0.1)
    for xi, v, (lo, hi) in zip(x, r2, lo_hi):
        # inside the bar, below its error bar; else above the error bar's cap
        free = min(v, lo) if math.isfinite(lo) else v
        inside = math.isfinite(v) and free > 0.15 * span
        above = max(np.nan_to_num(v), hi if math.isfinite(hi) else 0.0, 0.0) + 0.015 * span
        ax.text(xi, free / 2 if inside else above, format_r2(v), ha="center", va="center" if inside else "bottom",
                fontsize=13, fontweight="bold", color="white" if inside else "black", zorder=5)
    # the top 30 % of the axes are kept free of data for the box
    ax.set_ylim(ymin - (0.05 * span if ymin < 0 else 0), ymax + 0.45 * span)
    ax.set_xticks(x, [f"{MODEL_LABELS[k]}\nn_test={format_count(f.n_test)}" for k in keys])
    ax.set_xlabel("Method")
    ax.set_ylabel("Test R²")
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.set_axisbelow(True)
    box = (f"ΔR² (Oracle − Global) = {format_delta(f.delta)} {'≥' if f.decision == 'PASS' else '<'} threshold "
           f"{f.threshold:g}  →  {f.decision} (the card's rule)\n" + _robustness_line(f))
    ax.text(0.02, 0.97, box, transform=ax.transAxes, ha="left", va="top", fontsize=9.5, zorder=6,
            color=DECISION_COLORS[f.decision], bbox=dict(boxstyle="round,pad=0.4", facecolor="white", edgecolor="0.6"))
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), fontsize=9, frameon=False)
    title = ("Oracle SNR-binned MoE vs Global Ridge: test R²" if f.snr_partition else
             f"Oracle MoE (one expert per {_expert_cell_label(f)}) vs Global Ridge: test R²")
    ax.set_title(title, fontsize=12, fontweight="bold")
    fig.suptitle(_subtitle(f), fontsize=9, color="0.35")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- figure 2
def plot_perbin(results: Any, path: Path) -> Path:
    """Grouped bars per bin (+ Overall): Global vs expert R² with their intervals as error bars and, above
    each group, ΔR² with its interval; ★ where that interval's lower bound clears the threshold (the
    figure's one threshold rule, named in the legend)."""
    f = results if isinstance(results, Facts) else build_facts(results)
    bins = list(f.bins)
    g = np.array([b.global_.r2 for b in bins] + [f.global_.r2])
    o = np.array([b.expert.r2 for b in bins] + [f.oracle.r2])
    d = np.array([b.delta for b in bins] + [f.delta])
    d_ci = [b.delta_ci for b in bins] + [f.delta_ci]
    marked = [b.marked(f.threshold) for b in bins] + [False]
    skipped = [b.skipped for b in bins] + [False]
    g_ci = np.array([_bounds(b.global_.r2_ci) for b in bins] + [_bounds(f.global_.r2_ci)])
    o_ci = np.array([_bounds(None if b.skipped else b.expert.r2_ci) for b in bins] + [_bounds(f.oracle.r2_ci)])
    labels = [f"{_bin_label(b, multiline=True)}\nn_train={format_count(b.n_train)}\nn_test={format_count(b.n_test)}"
              for b in bins] + [f"Overall\nn_train={format_count(f.n_train)}\nn_test={format_count(f.n_test)}"]

    x = np.arange(len(bins) + 1, dtype=float)
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
    _error_bars(ax, x - w / 2, g, g_ci, capsize=4, linewidth=1.0, zorder=4)
    _error_bars(ax, x + w / 2, o, o_ci, capsize=4, linewidth=1.0, zorder=4)
    ax.axhline(0, color="black", linewidth=0.8)

    tops = np.vstack([g, o, g_ci[:, 1], o_ci[:, 1]])
    bottoms = np.vstack([g, o, g_ci[:, 0], o_ci[:, 0]])
    finite = np.concatenate([tops[np.isfinite(tops)], bottoms[np.isfinite(bottoms)], [0.0]])
    ymax, ymin = float(finite.max()), float(min(0.0, finite.min()))
    span = max(ymax - ymin, 0.1)
    for i, (xi, dv, skip) in enumerate(zip(x, d, skipped)):
        column = np.append(tops[:, i], 0.0)
        top = float(np.nanmax(column)) if np.isfinite([g[i], o[i]]).any() else 0.06 * span
        ci_text = format_ci(d_ci[i])
        # the R² of both bars here, above the data, rather than inside the bars where the error bars run; one
        # value a line, so that a box is no wider than its group's column and never reaches its neighbour's
        values = f"Global {format_r2(g[i])}\n{'Oracle' if i == len(bins) else 'expert'} {format_r2(o[i])}"
        if skip:
            text, color = f"Global {format_r2(g[i])}\nno expert", SMALL_GAIN_COLOR
        else:
            text = (f"{values}\nΔR² = {format_delta(dv)}{' ★' if marked[i] else ''}"
                    + (f"\nCI {ci_text}" if ci_text else ""))
            color = GAIN_COLOR if marked[i] else LOSS_COLOR if dv < 0 else SMALL_GAIN_COLOR
        ax.text(xi, top + 0.03 * span, text, ha="center", va="bottom", fontsize=8, fontweight="bold", color=color,
                zorder=5, bbox=dict(boxstyle="round,pad=0.25", facecolor="white", edgecolor=color, linewidth=0.8))
    ax.axvline((x[-2] + x[-1]) / 2, color="0.6", linewidth=0.8, linestyle=":")
    ax.set_ylim(ymin - (0.08 * span if ymin < 0 else 0), ymax + 0.48 * span)  # room for the boxes' four lines
    ax.set_xticks(x, labels, fontsize=9)
    ax.set_xlabel(_expert_cell_label(f))
    ax.set_ylabel("Test R²")
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.set_axisbelow(True)
    handles: list[Any] = [Patch(facecolor=MODEL_COLORS["global"], edgecolor="black", label="Global Ridge"),
                          Patch(facecolor=MODEL_COLORS["oracle"], edgecolor="black", label="Oracle expert")]
    if np.isfinite(g_ci).any() or np.isfinite(o_ci).any():
        handles.append(Line2D([], [], color="black", marker="_", markersize=8, linewidth=1.0, label=_ci_label(f)))
    if any(ci is not None for ci in d_ci[:-1]):
        handles.append(Line2D([], [], color=GAIN_COLOR, marker="*", linestyle="", markersize=10,
                              label=f"★ ΔR² CI lower bound ≥ {f.threshold:g}"))
    if any(skipped):
        handles.append(Patch(facecolor="white", edgecolor=MODEL_COLORS["oracle"], hatch="///",
                             label="no expert: served by Global"))
    fig.legend(handles=handles, loc="outside lower center", fontsize=9, ncol=len(handles), frameon=False)
    fig.suptitle(f"Test R² per {_expert_cell_label(f)}: Global Ridge vs Oracle expert\n{_subtitle(f)}", fontsize=11)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- figure 3
def plot_pred_vs_true(results: Any, predictions: pd.DataFrame, path: Path) -> Path:
    """Two panels (Global | Oracle): predicted vs true log g, coloured by bin, with the identity line, the
    least-squares fit (its slope in the panel's title) and the training targets' range; the axes show
    most of the predictions, the few beyond them are drawn on the edge (▲ / ▼) and counted."""
    f = results if isinstance(results, Facts) else build_facts(results, predictions)
    names = [b.name for b in f.bins] + [n for n in pd.unique(predictions["bin"]) if n not in {b.name for b in f.bins}]
    by_name = {b.name: b for b in f.bins}
    colors = bin_colors(names)
    counts = predictions["bin"].value_counts()
    y_true = predictions["y_true"].to_numpy(float)
    train = [v for v in (f.target.train_min, f.target.train_max) if v is not None]
    lim = padded(*core_range(predictions[["y_global", "y_oracle"]].to_numpy(float),
                           always=(float(np.min(y_true)), float(np.max(y_true)), *train)))
    size = 14 if len(predictions) <= 2000 else 6

    fig = Figure(figsize=(11, 6.8), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    beyond_counts = {}
    for ax, key, column in zip(axes, ("global", "oracle"), ("y_global", "y_oracle")):
        pred = predictions[column].to_numpy(float)
        for name in names:
            rows = (predictions["bin"] == name).to_numpy()
            shown = np.clip(pred[rows], *lim)
            beyond = shown != pred[rows]
            # small bins on top so that a few high-SNR points are not buried under the crowd
            z = 3 + len(predictions) - rows.sum()
            ax.scatter(y_true[rows][~beyond], shown[~beyond], s=size, alpha=0.65, color=colors[name],
                       edgecolors="none", rasterized=True, zorder=z)
            for sign, marker in ((1, "^"), (-1, "v")):
                edge = beyond & (np.sign(pred[rows] - shown) == sign)
                if edge.any():
                    ax.scatter(y_true[rows][edge], shown[edge], s=size * 2.5, marker=marker, color=colors[name],
                               edgecolors="black", linewidths=0.4, zorder=z + 1, clip_on=False)
            beyond_counts[key] = beyond_counts.get(key, 0) + int(beyond.sum())
        ax.plot(lim, lim, color="black", linestyle="--", linewidth=1.0, zorder=2)
        score = f.models[key]
        if score.slope is not None and score.slope == score.slope:
            intercept = float(np.mean(pred) - score.slope * np.mean(y_true))
            xs = np.array([y_true.min(), y_true.max()])
            ax.plot(xs, intercept + score.slope * xs, color="black", linewidth=1.6, zorder=4)
        for value in train:
            ax.axhline(value, color="0.55", linestyle=":", linewidth=1.0, zorder=1)
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        ax.grid(alpha=0.3)
        ax.set_xlabel("True log g [dex]")
        scores = [f"R² = {format_r2(score.r2)}"] + [f"{METRIC_LABELS[k]} = {format_r2(getattr(score, k))} dex"
                                                    for k in f.metrics if k != "r2"]
        slope = f"slope {score.slope:.2f}" if score.slope is not None else "slope n/a"
        ax.set_title(f"{MODEL_LABELS[key]}\n" + ",  ".join(scores) + f"\n{slope}", fontsize=10.5, fontweight="bold")
    axes[0].set_ylabel("Predicted log g [dex]")
    handles = [Line2D([], [], marker="o", linestyle="", markersize=7, color=colors[name],
                      label=(f"{_bin_label(by_name[name])}: n_test={format_count(counts.get(name, 0))}, "
                             + ("no expert" if by_name[name].skipped else f"ΔR² {format_delta(by_name[name].delta)}"))
                      if name in by_name else f"{name}: n_test={format_count(counts.get(name, 0))}")
               for name in names]
    handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1.0, label="identity (y = x)"))
    handles.append(Line2D([], [], color="black", linewidth=1.6, label="least-squares fit"))
    if train:
        handles.append(Line2D([], [], color="0.55", linestyle=":", label="training range of log g"))
    if any(beyond_counts.values()):
        counts_text = ", ".join(f"{MODEL_LABELS[k].split()[0]} {n:,}" for k, n in beyond_counts.items())
        handles.append(Line2D([], [], marker="^", linestyle="", color="0.5", markeredgecolor="black",
                              label=f"beyond the axes, on the edge: {counts_text}"))
    widest = max(len(h.get_label()) for h in handles)
    fig.legend(handles=handles, loc="outside lower center", ncol=max(1, min(len(handles), 4, 130 // widest)),
               fontsize=9, frameon=False)
    fig.suptitle(f"Predicted vs true log g on the test set, coloured by {_expert_cell_label(f)}\n"
                 f"ΔR² (Oracle − Global) = {format_delta(f.delta)}"
                 + (f", CI {format_ci(f.delta_ci)}" if f.delta_ci else "") + f"\n{_subtitle(f)}", fontsize=11)
    # laid out first, then squared: the constrained layout of equal-aspect panels gave them boxes taller than
    # its own, over the suptitle and the legend; squaring a laid-out panel only shrinks it inside its box
    fig.get_layout_engine().execute(fig)
    fig.set_layout_engine("none")
    for ax in axes:
        ax.set_aspect("equal")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- figure 4
def plot_delta_heatmap(results: Any, path: Path) -> Path:
    """Heatmap with the bins (and Overall) along the x axis, as the card asks: a top panel with the R² of
    both models (sequential colours) and a ΔR² row whose colours diverge at the threshold (white), so the
    eye compares each cell with it; each ΔR² cell gives its interval."""
    f = results if isinstance(results, Facts) else build_facts(results)
    bins = list(f.bins)
    columns = [f"{_bin_label(b, multiline=True)}\nn_train={format_count(b.n_train)}\nn_test={format_count(b.n_test)}"
               for b in bins] + [f"Overall\nn_train={format_count(f.n_train)}\nn_test={format_count(f.n_test)}"]
    r2 = np.array([[b.global_.r2 for b in bins] + [f.global_.r2], [b.expert.r2 for b in bins] + [f.oracle.r2]])
    delta = np.array([[b.delta if b.trained else math.nan for b in bins] + [f.delta]])
    delta_ci = [b.delta_ci for b in bins] + [f.delta_ci]
    skipped = [b.skipped for b in bins] + [False]
    k = len(columns)

    fig = Figure(figsize=(max(8.5, 1.75 * k + 3.0), 6.4), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[2.0, 1.25], width_ratios=[1.0, 0.035])
    ax_r2, ax_d = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[1, 0])
    cax_r2, cax_d = fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, 1])

    finite_r2 = r2[np.isfinite(r2)]
    r2_norm = Normalize(vmin=min(0.0, float(finite_r2.min()) if finite_r2.size else 0.0),
                        vmax=max(1.0, float(finite_r2.max()) if finite_r2.size else 1.0))
    r2_cmap = colormaps["viridis"].with_extremes(bad="#D9D9D9")
    finite_d = delta[np.isfinite(delta)]
    reach = max([abs(v - f.threshold) for v in finite_d] + [f.threshold, 0.01]) * 1.1
    d_norm = TwoSlopeNorm(vmin=f.threshold - reach, vcenter=f.threshold, vmax=f.threshold + reach)
    d_cmap = colormaps["RdBu"].with_extremes(bad="#D9D9D9")
    im_r2 = ax_r2.imshow(np.ma.masked_invalid(r2), cmap=r2_cmap, norm=r2_norm, aspect="auto")
    im_d = ax_d.imshow(np.ma.masked_invalid(delta), cmap=d_cmap, norm=d_norm, aspect="auto")

    for j in range(k):
        for i in range(2):
            v = r2[i, j]
            rgba = r2_cmap(r2_norm(v)) if math.isfinite(v) else (0.85, 0.85, 0.85, 1)
            text = format_r2(v) + ("\n(= Global)" if i == 1 and skipped[j] else "")
            ax_r2.text(j, i, text, ha="center", va="center", fontsize=10, color=text_color(rgba))
        dv = delta[0, j]
        rgba = d_cmap(d_norm(dv)) if math.isfinite(dv) else (0.85, 0.85, 0.85, 1)
        ci = format_ci(delta_ci[j])
        text = "no expert" if skipped[j] else format_delta(dv) + (f"\n{ci}" if ci else "")
        ax_d.text(j, 0, text, ha="center", va="center", fontsize=9.5, fontweight="bold", color=text_color(rgba))
    for ax in (ax_r2, ax_d):
        ax.axvline(k - 1.5, color="white", linewidth=4)  # sets Overall apart from the bins
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    ax_r2.set_yticks([0, 1], ["Global R²", "Oracle R²"], fontsize=10.5)
    ax_r2.set_xticks(np.arange(k), [""] * k)
    ax_d.set_yticks([0], ["ΔR²\n(Oracle − Global)"], fontsize=10.5)
    ax_d.set_xticks(np.arange(k), columns, fontsize=9)
    ax_d.set_xlabel(_expert_cell_label(f))

    cb_r2 = fig.colorbar(im_r2, cax=cax_r2)
    cb_r2.set_label("Test R²")
    cb_d = fig.colorbar(im_d, cax=cax_d)
    cb_d.set_label(f"ΔR²: white = threshold {f.threshold:g}\nblue above, red below")
    for cb in (cb_r2, cb_d):
        cb.ax.yaxis.set_major_locator(MaxNLocator(5))
        cb.ax.tick_params(labelsize=8.5)
    cb_d.ax.axhline(f.threshold, color="black", linewidth=2.0)
    fig.suptitle(f"ΔR² by {_expert_cell_label(f)}: Oracle MoE vs Global Ridge (ΔR² cells: point estimate and CI)\n{_subtitle(f)}",
                 fontsize=10.5)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- entry point
def make_figures(results: Any, predictions: pd.DataFrame, img_dir: str | os.PathLike) -> list[Path]:
    """Write the card's four PNGs into ``img_dir`` (created if missing), then the gate's confusion
    matrix when results has "gate" and the alpha curves when it has "alpha"; returns the paths in
    that order.

    ``results``: the parsed results.json (or typed ``Results``). ``predictions``: one row per test
    spectrum with columns y_true, snr, bin, y_global, y_oracle.
    """
    jobs = figure_jobs(results, predictions, img_dir)
    drawn = draw_figures(jobs)
    return [drawn[name] for name in jobs]


def figure_jobs(results: Any, predictions: pd.DataFrame, img_dir: str | os.PathLike) -> dict[str, Callable[[], Path]]:
    """{file name: a function that draws that figure} for :func:`make_figures`, in its order; ``img_dir``
    is created."""
    predictions = check_predictions(predictions)
    f = build_facts(results, predictions)
    img_dir = Path(img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    jobs = {FIG_COMPARISON: lambda: plot_comparison(f, img_dir / FIG_COMPARISON),
            FIG_PERBIN: lambda: plot_perbin(f, img_dir / FIG_PERBIN),
            FIG_PRED_VS_TRUE: lambda: plot_pred_vs_true(f, predictions, img_dir / FIG_PRED_VS_TRUE),
            FIG_DELTA_HEATMAP: lambda: plot_delta_heatmap(f, img_dir / FIG_DELTA_HEATMAP)}
    gate = f.results.gate
    if gate is not None:
        jobs[FIG_GATE_CONFUSION] = lambda: gate_confusion_figure(gate.confusion, gate.names,
                                                                  img_dir / FIG_GATE_CONFUSION)
    if f.results.alpha is not None and alpha_curves(f.results.alpha)[0]:
        jobs[FIG_ALPHA_CURVE] = lambda: plot_alpha_curve(f.results.alpha, img_dir / FIG_ALPHA_CURVE)
    return jobs


# matplotlib draws under the GIL: where it is safe, a forked copy of the process draws some of the figures
# (io.forked), each process taking the next one in turn. The longest go first (the scaling curve, 0.5-0.6 s
# here, the scatter and the heatmap, 0.4 s), so that the last figure drawn is a short one.
_LONGEST = (FIG_SCALING, FIG_PRED_VS_TRUE, FIG_DELTA_HEATMAP)


def draw_figures(jobs: Mapping[str, Callable[[], Path | None]]) -> dict[str, Path | None]:
    """{name: what its job returned}, every job of ``jobs`` run, some of them in a forked copy of the
    process where that is safe (the same files as one after another)."""
    order = [name for name in _LONGEST if name in jobs] + [name for name in jobs if name not in _LONGEST]
    return dict(zip(order, map_shared(lambda name: jobs[name](), order, min_items=2)))
