"""The two figures drawn when results.json has their section: the deployable gate's confusion matrix
("gate": ``snr_oracle_moe_gate_confusion.png``) and validation R² against the Ridge alpha per model
("alpha": ``snr_oracle_moe_alpha_curve.png``).

Each is drawn from plain arrays (:func:`gate_confusion_figure`, :func:`alpha_curve_figure`) or from
the results' section (:func:`plot_gate_confusion`, :func:`plot_alpha_curve`); ``plots.make_figures``
draws them after the card's four.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from ..errors import InputError
from ..experiment.results_schema import AlphaChoice
from .figure_style import MODEL_COLORS, MODEL_LABELS, bin_colors, padded, save_figure, text_color
from .formatting import as_float, format_count


def plot_gate_confusion(gate: Any, path: Path) -> Path:
    """The confusion matrix of results["gate"] (rows: true bin, columns: the gate's bin)."""
    get = gate.get if isinstance(gate, Mapping) else (lambda key: getattr(gate, key, None))
    if get("confusion") is None or get("names") is None:
        raise InputError("results: 'gate' needs keys 'confusion' and 'names'")
    return gate_confusion_figure(get("confusion"), get("names"), path)


def alpha_curves(alpha: Any) -> tuple[dict[str, tuple[list[float], list[Any]]], dict[str, float]]:
    """(curves, chosen) of results["alpha"] for :func:`alpha_curve_figure`: the global model, then the
    experts; a model without a validation curve (it took the global alpha) is left out, and so are
    alphas <= 0, which a log axis cannot show (a chosen alpha of 0 is then not starred)."""
    if not isinstance(alpha, AlphaChoice):
        alpha = AlphaChoice.model_validate(alpha)
    curves: dict[str, tuple[list[float], list[Any]]] = {}
    chosen: dict[str, float] = {}
    for name, model in [("global", alpha.global_), *alpha.experts.items()]:
        alphas, r2 = model.curve.alpha, model.curve.val_r2
        if not alphas or not r2 or len(alphas) != len(r2):
            continue
        points = [(a, v) for a, v in zip(alphas, r2) if a > 0]
        if not points:
            continue
        curves[str(name)] = ([a for a, _ in points], [v for _, v in points])
        if model.alpha is not None and model.alpha > 0:
            chosen[str(name)] = model.alpha
    return curves, chosen


def plot_alpha_curve(alpha: Any, path: Path) -> Path:
    """Validation R² against alpha for every model of results["alpha"], the fixed alpha as a reference line."""
    curves, chosen = alpha_curves(alpha)
    fixed = (alpha.fixed_alpha if isinstance(alpha, AlphaChoice) else AlphaChoice.model_validate(alpha).fixed_alpha)
    return alpha_curve_figure(curves, chosen, fixed if fixed is not None and fixed > 0 else None, path)


# ----------------------------------------------------------------------------- the gate's confusion matrix
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
                    fontweight="bold" if i == j else "normal", color=text_color(rgba))
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
    return save_figure(fig, path)


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


def alpha_y_range(values: np.ndarray) -> tuple[float, float]:
    """The y range of the alpha curves: from the best value down to where most curves are; a curve that
    collapses at one end (an expert at a tiny alpha, R² −7.9) would otherwise flatten all the others."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    top = float(values.max())
    typical = float(np.percentile(values, 25))
    low = max(float(values.min()), typical - 1.5 * max(top - typical, 0.01))
    return padded(low, top, 0.08)


def alpha_curve_figure(curves: Mapping[str, Any], chosen: Mapping[str, Any], fixed_alpha: float | None,
                       path: str | os.PathLike) -> Path:
    """Validation R² against the Ridge alpha (log x axis), one line per model.

    curves: {model name: (alphas (A,), validation R² (A,))}, e.g. "global" and the bin names;
    chosen: {model name: selected alpha}, marked with a star on its curve; fixed_alpha: the
    card's fixed penalty, drawn as a vertical reference line (None: no line). Missing R²
    (None/NaN) leave gaps. The y range follows most of the values (:func:`alpha_y_range`); values
    below it are drawn on its lower edge (▼) and counted in the legend.
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
    colors = {**bin_colors(others), **{n: MODEL_COLORS[n] for n in data if n in MODEL_COLORS}}
    low, high = alpha_y_range(np.concatenate([r2 for _, r2 in data.values()]))

    fig = Figure(figsize=(8.4, 5.2), layout="constrained")
    ax = fig.add_subplot()
    below = 0
    for name, (alphas, r2) in data.items():
        label = MODEL_LABELS.get(name, name)
        shown = np.clip(r2, low, None)
        under = np.isfinite(r2) & (r2 < low)
        below += int(under.sum())
        if name in chosen:
            a = _positive(chosen[name], f"the chosen alpha of {name!r}")
            ax.plot([a], [max(_r2_at(a, alphas, r2), low)], marker="*", markersize=16, color=colors[name],
                    markeredgecolor="black", linestyle="none", zorder=4)
            label += f" (chosen α = {a:g})"
        ax.plot(alphas, shown, marker="o", markersize=4, linewidth=1.6, color=colors[name], label=label, zorder=3)
        if under.any():
            ax.plot(alphas[under], shown[under], marker="v", markersize=8, color=colors[name], markeredgecolor="black",
                    linestyle="none", zorder=4, clip_on=False)
    if fixed is not None:
        ax.axvline(fixed, color="0.25", linestyle="--", linewidth=1.3, label=f"fixed α = {fixed:g}", zorder=2)
    ax.set_xscale("log")
    ax.set_ylim(low, high)
    ax.set_xlabel("Ridge α (log scale)")
    ax.set_ylabel("Validation R²")
    ax.grid(alpha=0.3, which="both", zorder=0)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], marker="*", markersize=12, color="0.5", markeredgecolor="black", linestyle="none"))
    labels.append("chosen α")
    if below:
        handles.append(Line2D([], [], marker="v", markersize=8, color="0.5", markeredgecolor="black", linestyle="none"))
        labels.append(f"below the axis, drawn on its edge: {below}")
    # outside the axes: with one curve per bin an inside legend would hide the curves' peaks
    fig.legend(handles, labels, loc="outside right upper", fontsize=8.5, frameon=False)
    fig.suptitle("Validation R² vs Ridge α per model", fontsize=12)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)
