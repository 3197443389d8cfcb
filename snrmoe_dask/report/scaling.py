"""The scaling curve of results.json ``scaling``: its figure and its report section.

    snr_oracle_moe_scaling.png   left: test R² against the training-set size N (log axis), Global,
                                 Oracle and each bin's expert; right: ΔR² against N (overall and per
                                 bin) with the decision threshold. Interval bands only where the run
                                 has intervals, the dotted extrapolated fit R²∞ − a·(N/N_max)^(−b)
                                 only where a curve was fitted; the title says which.

Both are drawn from the results alone (``snrmoe report DIR`` redraws them) and only when they have a
``scaling`` section. Figure text English; the section in the report's language.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..experiment.results_schema import Results, Scaling, load_results
from .facts import Facts, build_facts
from .formatting import format_count, format_delta, format_r2, table
from .prose import prose
from .files import FIG_SCALING

X_LABEL = "Training spectra N (log scale)"
EXTEND = 10.0  # the fitted curves are drawn up to this many times the largest N


def _value(v: Any) -> float:
    return math.nan if v is None else float(v)


def _series(values: list[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P,) values and interval ends of one curve from (value, interval) pairs; NaN where missing."""
    return (np.array([_value(v) for v, _ in values]), np.array([_value(ci[0]) if ci else math.nan for _, ci in values]),
            np.array([_value(ci[1]) if ci else math.nan for _, ci in values]))


def _line(ax, n, series, color, label, bold=True) -> tuple[list[np.ndarray], bool]:
    """One curve with its interval band where it has one (faint for a bin); returns what the y range must
    show (the band too for a bold model curve: a small bin's band can be very wide) and whether a band
    was drawn."""
    values, lo, hi = series
    ax.plot(n, values, "-" if bold else "--", color=color, linewidth=2.0 if bold else 1.2,
            marker="o" if bold else "s", markersize=5 if bold else 3.5, label=label)
    band = bool(np.isfinite(lo).any())
    if band:
        ax.fill_between(n, lo, hi, color=color, alpha=0.18 if bold else 0.07, linewidth=0)
    return ([values, lo, hi] if bold else [values]), band


def _y_range(ax, shown: list[np.ndarray], also: tuple[float, ...] = ()) -> None:
    values = np.concatenate([np.ravel(v) for v in shown] + [np.array(also, dtype=float)])
    values = values[np.isfinite(values)]
    if len(values):
        lo, hi = float(values.min()), float(values.max())
        pad = 0.08 * (hi - lo) or 0.01
        ax.set_ylim(lo - pad, hi + pad)


def _fitted(ax, fit, n_first: float, color: str) -> list[np.ndarray]:
    """The extrapolated fit as a dotted line from the first N to EXTEND x N_max; its values (none
    when the curve has no fit)."""
    if fit is None or fit.status != "fitted" or None in (fit.n_max, fit.inf, fit.a, fit.b):
        return []
    n = np.geomspace(n_first, fit.n_max * EXTEND, 200)
    values = fit.inf - fit.a * (n / fit.n_max) ** (-fit.b)
    ax.plot(n, values, ":", color=color, linewidth=1.6)
    return [values]


def _scaling(results: Any) -> tuple[Results, Scaling]:
    results = load_results(results)
    if results.scaling is None:
        raise InputError("results.json has no 'scaling' section (run with evaluation.scaling: true)")
    return results, results.scaling


def scaling_figure(results: Any):
    """The two panels of ``snr_oracle_moe_scaling.png`` (R² and ΔR² against N) as a matplotlib Figure."""
    from matplotlib import colormaps  # the section's text needs no matplotlib
    from matplotlib.figure import Figure

    from .figure_style import MODEL_COLORS, MODEL_LABELS, THRESHOLD_COLOR
    results, scaling = _scaling(results)
    points = scaling.points
    threshold = scaling.threshold if scaling.threshold is not None else results.threshold
    fits = scaling.extrapolation.models
    n = np.array([float(p.n_train) for p in points])
    names = list(points[-1].bins)
    palette = colormaps["Dark2"].colors  # the bin colours of the card's figures
    colors = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    fig = Figure(figsize=(13.5, 5.6), layout="constrained")
    ax_r2, ax_d = fig.subplots(1, 2)
    shown_r2, shown_d, fitted, bands = [], [], [], False
    for model in ("global", "oracle"):
        series = _series([(getattr(p, "global_" if model == "global" else "oracle").r2,
                           getattr(p, "global_" if model == "global" else "oracle").r2_ci) for p in points])
        shown, band = _line(ax_r2, n, series, MODEL_COLORS[model], MODEL_LABELS[model])
        shown_r2 += shown
        bands |= band
        fitted += _fitted(ax_r2, fits.get(model), n[0], MODEL_COLORS[model])
    shown_r2 += fitted
    for name in names:
        series = _series([(None, None) if p.bins[name].skipped else (p.bins[name].expert.r2, p.bins[name].expert.r2_ci)
                          for p in points])
        shown_r2 += _line(ax_r2, n, series, colors[name], f"bin {name} expert", bold=False)[0]
    shown, band = _line(ax_d, n, _series([(p.delta_r2, p.delta_r2_ci) for p in points]), "black", "overall")
    shown_d += shown
    bands |= band
    fitted_d = _fitted(ax_d, fits.get("delta"), n[0], "black")
    shown_d += fitted_d
    extrapolated = bool(fitted or fitted_d)
    for name in names:
        series = _series([(None, None) if p.bins[name].skipped else (p.bins[name].delta_r2, p.bins[name].delta_r2_ci)
                          for p in points])
        shown_d += _line(ax_d, n, series, colors[name], f"bin {name}", bold=False)[0]
    _y_range(ax_r2, shown_r2)
    _y_range(ax_d, shown_d, (threshold, 0.0))
    ax_d.axhline(threshold, color=THRESHOLD_COLOR, linestyle="--", linewidth=1.5, label=f"threshold {threshold:g}")
    ax_d.axhline(0.0, color="#888888", linewidth=0.8)
    for ax, title, ylabel in ((ax_r2, "Test R² vs training-set size", "Test R²"),
                              (ax_d, "ΔR² vs training-set size", "ΔR² = R²(Oracle MoE) − R²(Global Ridge)")):
        ax.set_xscale("log")
        ax.set_xlim(n[0] / 1.25, n[-1] * (EXTEND if extrapolated else 1.25))
        ax.set_xlabel(X_LABEL)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=8, loc="best")
    shards = len(points) // max(scaling.splits, 1)
    notes = (["bands: 95 % bootstrap intervals"] if bands else ["no intervals (bootstrap off)"]) + \
        (["dotted: extrapolated fit R²∞ − a·(N/N_max)^−b"] if extrapolated else [])
    fig.suptitle(f"{results.experiment}: models solved on the first k of {shards} shards"
                 + (f" ({scaling.splits} parts each)" if scaling.splits > 1 else "") + "; " + "; ".join(notes),
                 fontsize=11)
    return fig


def plot_scaling(results: Any, img_dir: str | os.PathLike) -> Path | None:
    """Write ``img_dir/snr_oracle_moe_scaling.png`` when results has a scaling curve; returns its path."""
    if load_results(results).scaling is None:
        return None
    img_dir = Path(img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    from .figure_style import save_figure

    return save_figure(scaling_figure(results), img_dir / FIG_SCALING)


# ----------------------------------------------------------------------------- the report section
def _r2(value: Any, ci: Any = None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    text = format_delta(value) if signed else format_r2(value)
    if ci and ci[0] is not None and ci[1] is not None:
        fmt = format_delta if signed else format_r2
        text += f" [{fmt(ci[0])}, {fmt(ci[1])}]"
    return text


def scaling_section(results: Any, lang: str = "zh", img: str = "img") -> list[str]:
    """The report's scaling section (markdown lines, in ``lang``); none without a curve."""
    f = results if isinstance(results, Facts) else build_facts(results)
    scaling = f.results.scaling
    if scaling is None:
        return []
    p = prose(lang)
    points = scaling.points
    names = list(points[-1].bins)
    bands = any(pt.delta_r2_ci or pt.global_.r2_ci for pt in points)
    models = scaling.extrapolation.models
    delta = models.get("delta")
    # the figure draws the fits of the two models and of the overall ΔR² only
    fitted = any(fit.status == "fitted" for key, fit in models.items() if key in ("global", "oracle", "delta"))
    lines = [p.HEADINGS["scaling"], "", p.scaling_intro(len(points), scaling.splits), "",
             f"![scaling]({img}/{FIG_SCALING})", "", p.scaling_caption(bands, fitted), ""]
    first, last = points[0], points[-1]
    if len(points) > 1 and None not in (first.global_.r2, last.global_.r2, first.oracle.r2, last.oracle.r2,
                                        first.delta_r2, last.delta_r2):
        lines += [p.scaling_trend(first.n_train, last.n_train, (first.global_.r2, last.global_.r2),
                                  (first.oracle.r2, last.oracle.r2), (first.delta_r2, last.delta_r2), f.threshold), ""]
    rows = []
    for pt in points:
        cells = [format_count(pt.n_train), _r2(pt.global_.r2, pt.global_.r2_ci), _r2(pt.oracle.r2, pt.oracle.r2_ci),
                 _r2(pt.delta_r2, pt.delta_r2_ci, True)]
        cells += [p.SCALING_NO_EXPERT if pt.bins[n].skipped else _r2(pt.bins[n].delta_r2, signed=True) for n in names]
        rows.append(cells)
    lines += [*table(["N_train", "Global R²", "Oracle R²", "ΔR²", *[f"ΔR² {n}" for n in names]], rows), "",
              p.HEADINGS["extrapolation"], ""]
    if delta is None or delta.status == "refused":
        return lines + [p.scaling_refused(len(points), scaling.extrapolation.min_points), "", "---", ""]
    curves = [("Global R²", models.get("global"), False), ("Oracle R²", models.get("oracle"), False), ("ΔR²", delta, True)]
    for name, fits in scaling.extrapolation.bins.items():
        curves += [(p.SCALING_EXPERT.format(name=name), fits.get("expert"), False), (f"ΔR² {name}", fits.get("delta"), True)]
    shown = [(label, fit, signed) for label, fit, signed in curves if fit is not None and fit.status == "fitted"]
    others = [label for label, fit, _ in curves if fit is not None and fit.status != "fitted"]
    if shown:
        L = p.LABELS
        lines += [p.scaling_fit_form(), "",
                  *table([L["curve"], L["limit"], "a", "b"],
                         [[label, _r2(fit.inf, fit.inf_ci, signed), f"{fit.a:+.4g}", f"{fit.b:.3g}"]
                          for label, fit, signed in shown]), ""]
    if others:
        lines += [p.scaling_not_fitted(others), ""]
    crossing = delta.crossing
    lines += [p.scaling_crossing(crossing.status if crossing else None, delta.status, f.threshold,
                                 crossing.n if crossing else None, crossing.n_ci if crossing else None, delta.inf), ""]
    if shown:
        lines += [p.SCALING_UNCERTAINTY, ""]
    return lines + ["---", ""]
