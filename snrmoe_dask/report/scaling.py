"""The scaling curve of results.json ``scaling``: its figure and its report section.

    snr_oracle_moe_scaling.png   left: test R² against the training-set size N (log axis), Global,
                                 Oracle and each bin's expert, with 95 % interval bands; right: ΔR²
                                 against N (overall and per bin) with the decision threshold;
                                 dotted: the extrapolated fit R²∞ − a·(N/N_max)^(−b)

Both are drawn from the results dict alone (``snrmoe report DIR`` redraws them) and only when it
has a ``scaling`` section. Figure text English; the section in the report's language.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from ..errors import InputError
from .plots import MODEL_COLORS, MODEL_LABELS, THRESHOLD_COLOR, _save

FIG_SCALING = "snr_oracle_moe_scaling.png"
X_LABEL = "Training spectra N (log scale)"
EXTEND = 10.0  # the fitted curves are drawn up to this many times the largest N

Text = Callable[[str, str], str]


# ----------------------------------------------------------------------------- reading results
def scaling_points(results: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """results["scaling"]["points"], checked; None when the run made no scaling curve."""
    scaling = results.get("scaling")
    if scaling is None:
        return None
    points = scaling.get("points") if isinstance(scaling, Mapping) else None
    if not isinstance(points, list) or not points or not all(
            isinstance(p, Mapping) and {"n_train", "global", "oracle", "delta_r2", "bins"} <= set(p) for p in points):
        raise InputError("results.json: scaling.points: expected a non-empty list of points with n_train, global, "
                         "oracle, delta_r2 and bins")
    return points


def _value(v: Any) -> float:
    return math.nan if v is None else float(v)


def _series(points, get) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P,) values and interval ends of one curve; NaN where missing."""
    values, lo, hi = [], [], []
    for p in points:
        entry = get(p)
        value, ci = (None, None) if entry is None else entry
        values.append(_value(value))
        lo.append(_value(ci[0]) if ci else math.nan)
        hi.append(_value(ci[1]) if ci else math.nan)
    return np.array(values), np.array(lo), np.array(hi)


def _expert(name: str):
    def get(p):
        b = p["bins"][name]
        return None if b.get("skipped") else (b["expert"]["r2"], b["expert"].get("r2_ci"))
    return get


def _bin_delta(name: str):
    def get(p):
        b = p["bins"][name]
        return None if b.get("skipped") else (b["delta_r2"], b.get("delta_r2_ci"))
    return get


# ----------------------------------------------------------------------------- the figure
def _line(ax, n, series, color, label, bold=True) -> list[np.ndarray]:
    """One curve with its interval band (faint for a bin); returns what the y range must show: the
    values, and the band too for a bold (model) curve, since a small bin's band can be very wide."""
    values, lo, hi = series
    ax.plot(n, values, "-" if bold else "--", color=color, linewidth=2.0 if bold else 1.2,
            marker="o" if bold else "s", markersize=5 if bold else 3.5, label=label)
    if np.isfinite(lo).any():
        ax.fill_between(n, lo, hi, color=color, alpha=0.18 if bold else 0.07, linewidth=0)
    return [values, lo, hi] if bold else [values]


def _y_range(ax, shown: list[np.ndarray], also: tuple[float, ...] = ()) -> None:
    values = np.concatenate([np.ravel(v) for v in shown] + [np.array(also, dtype=float)])
    values = values[np.isfinite(values)]
    if len(values):
        lo, hi = float(values.min()), float(values.max())
        pad = 0.08 * (hi - lo) or 0.01
        ax.set_ylim(lo - pad, hi + pad)


def _fitted(ax, fit: Mapping[str, Any] | None, n_first: float, color: str) -> list[np.ndarray]:
    """The extrapolated fit as a dotted line from the first N to EXTEND x N_max; returns its values
    (none when the curve has no fit)."""
    if not isinstance(fit, Mapping) or fit.get("status") != "fitted":
        return []
    n_max = float(fit["n_max"])
    n = np.geomspace(n_first, n_max * EXTEND, 200)
    values = fit["inf"] - fit["a"] * (n / n_max) ** (-fit["b"])
    ax.plot(n, values, ":", color=color, linewidth=1.6)
    return [values]


def scaling_figure(results: Mapping[str, Any]) -> Figure:
    """The two panels of ``snr_oracle_moe_scaling.png`` (R² and ΔR² against N) as a matplotlib Figure."""
    points = scaling_points(results)
    if points is None:
        raise InputError("results.json has no 'scaling' section (run with evaluation.scaling: true)")
    scaling = results["scaling"]
    threshold = float(scaling.get("threshold", results.get("threshold", 0.02)))
    fits = (scaling.get("extrapolation") or {}).get("models") or {}
    n = np.array([float(p["n_train"]) for p in points])
    names = list(points[-1]["bins"])
    palette = colormaps["Dark2"].colors  # the bin colours of the card's figures
    colors = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    fig = Figure(figsize=(13.5, 5.6), layout="constrained")
    ax_r2, ax_d = fig.subplots(1, 2)
    shown_r2, shown_d, fitted = [], [], []
    for model in ("global", "oracle"):
        shown_r2 += _line(ax_r2, n, _series(points, lambda p, m=model: (p[m]["r2"], p[m].get("r2_ci"))),
                          MODEL_COLORS[model], MODEL_LABELS[model])
        fitted += _fitted(ax_r2, fits.get(model), n[0], MODEL_COLORS[model])
    shown_r2 += fitted
    for name in names:
        shown_r2 += _line(ax_r2, n, _series(points, _expert(name)), colors[name], f"bin {name} expert", bold=False)
    shown_d += _line(ax_d, n, _series(points, lambda p: (p["delta_r2"], p.get("delta_r2_ci"))), "black", "overall")
    fitted_d = _fitted(ax_d, fits.get("delta"), n[0], "black")
    shown_d += fitted_d
    extrapolated = bool(fitted or fitted_d)
    for name in names:
        shown_d += _line(ax_d, n, _series(points, _bin_delta(name)), colors[name], f"bin {name}", bold=False)
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
    splits = int(scaling.get("splits", 1) or 1)
    shards = len(points) // splits
    fig.suptitle(f"{results.get('experiment', 'LOGG-SNR-ORACLE-01')}: models solved on the first k of "
                 f"{shards} shards" + (f" ({splits} parts each)" if splits > 1 else "")
                 + "; bands: 95 % bootstrap intervals"
                 + ("; dotted: extrapolated fit R²∞ − a·(N/N_max)^−b" if extrapolated else ""), fontsize=11)
    return fig


def plot_scaling(results: Mapping[str, Any], img_dir: str | os.PathLike) -> Path | None:
    """Write ``img_dir/snr_oracle_moe_scaling.png`` when results has a scaling curve; returns its path."""
    if scaling_points(results) is None:
        return None
    img_dir = Path(img_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    return _save(scaling_figure(results), img_dir / FIG_SCALING)


# ----------------------------------------------------------------------------- the report section
def _r2(value: Any, ci: Any = None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    text = f"{value:+.4f}" if signed else f"{value:.4f}"
    if ci and ci[0] is not None and ci[1] is not None:
        text += f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if signed else f" [{ci[0]:.4f}, {ci[1]:.4f}]"
    return text


def _n(value: Any) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _fit_row(label: str, fit: Mapping[str, Any], signed: bool, t: Text) -> list[str]:
    status = {"fitted": t("已拟合", "fitted"), "undetermined": t("无法确定", "undetermined"),
              "refused": t("拒绝（点数不足）", "refused (too few points)"), "failed": t("拟合失败", "fit failed")}
    if fit.get("status") != "fitted":
        return [label, status.get(fit.get("status"), str(fit.get("status"))), "—", "—", "—"]
    limit = _r2(fit["inf"], fit.get("inf_ci"), signed)
    return [label, status[fit["status"]], limit, f"{fit['a']:+.4g}", f"{fit['b']:.3g}"]


def _crossing(fit: Mapping[str, Any], t: Text) -> str:
    crossing = fit.get("crossing") or {}
    thr = crossing.get("threshold")
    status = crossing.get("status")
    if status in ("crosses", "falls below"):
        lo, hi = (crossing.get("n_ci") or [None, None])
        span = f"[{_n(lo)}, {_n(hi)}]" if hi is not None else f"[{_n(lo)}, ∞)"
        interval = t(f"，95 % 区间 {span}", f", 95 % interval {span}") if crossing.get("n_ci") else ""
        verb = t("升至", "reaches") if status == "crosses" else t("降至", "falls below")
        return t(f"外推：总体 ΔR² 在 N ≈ {_n(crossing['n'])}{interval} 处{verb}阈值 {thr:g}。",
                 f"Extrapolated: the overall ΔR² {verb} the threshold {thr:g} at N ≈ {_n(crossing['n'])}{interval}.")
    if status == "above":
        return t(f"外推：总体 ΔR² 在最大 N 处已高于阈值 {thr:g}，拟合曲线此后保持在阈值之上（ΔR²∞ = {fit['inf']:+.4f}）。",
                 f"Extrapolated: the overall ΔR² is above the threshold {thr:g} at the largest N and the fitted curve "
                 f"stays above it (ΔR²∞ = {fit['inf']:+.4f}).")
    if status == "does not cross":
        return t(f"外推：总体 ΔR² 不会达到阈值 {thr:g}（拟合极限 ΔR²∞ = {fit['inf']:+.4f}）。",
                 f"Extrapolated: the overall ΔR² does not cross the threshold {thr:g} (fitted limit "
                 f"ΔR²∞ = {fit['inf']:+.4f}).")
    why = {"undetermined": t("这些点无法确定 ΔR² 的极限（曲线平坦或噪声大）", "the points do not pin the limit of ΔR² "
                                                                  "(a flat or noisy curve)"),
           "failed": t("拟合未收敛", "the fit did not converge")}.get(fit.get("status"), str(fit.get("reason")))
    return t(f"不外推阈值交点：{why}。", f"No extrapolated threshold crossing: {why}.")


def scaling_section(results: Mapping[str, Any], t: Text, img: str = "img") -> list[str]:
    """The report's scaling section (markdown lines, in the language of ``t``); none without a curve."""
    points = scaling_points(results)
    if points is None:
        return []
    scaling = results["scaling"]
    splits = int(scaling.get("splits", 1) or 1)
    names = list(points[-1]["bins"])
    lines = [t("## 📈 规模曲线：R² 随训练集大小的变化", "## 📈 Scaling: R² against training-set size"), "",
             t(f"对 k = 1..{len(points)}，用前 k 个训练{'子分片' if splits > 1 else '分片'}（按列表顺序）的统计量之和重新求解"
               "全局模型和每个专家，并在同一测试集上评分（区间与主结果相同：配对 bootstrap 95 %）。这些点来自同一次数据遍历的"
               "分片统计量，不需要额外遍历。"
               + (f"每个分片被切成 {splits} 个子分片（在块边界上），以得到更多点。" if splits > 1 else ""),
               f"For k = 1..{len(points)} the global model and every expert are solved again on the summed statistics "
               f"of the first k training {'sub-shards' if splits > 1 else 'shards'} (in list order) and scored on "
               "the same test set (intervals as in the main results: paired bootstrap, 95 %). The points come from "
               "the per-shard statistics of the one data pass; no extra pass."
               + (f" Each shard was summed as {splits} sub-shards (cut on block edges) to give more points."
                  if splits > 1 else "")), "",
             f"![scaling]({img}/{FIG_SCALING})", "",
             t("左：测试 R² 随 N 变化（对数横轴），Global、Oracle 及每个 bin 的专家，阴影为 95 % 区间；右：ΔR² 随 N 变化与阈值线。"
               "点线为外推拟合。",
               "Left: test R² against N (log axis) for Global, Oracle and each bin's expert, bands are 95 % intervals; "
               "right: ΔR² against N with the threshold line. Dotted: the extrapolated fit."), ""]
    header = ["N_train", "Global R²", "Oracle R²", "ΔR²", *[f"ΔR² {name}" for name in names]]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for p in points:
        cells = [_n(p["n_train"]), _r2(p["global"]["r2"], p["global"].get("r2_ci")),
                 _r2(p["oracle"]["r2"], p["oracle"].get("r2_ci")), _r2(p["delta_r2"], p.get("delta_r2_ci"), True)]
        for name in names:
            b = p["bins"][name]
            cells.append(t("无专家", "no expert") if b.get("skipped") else _r2(b["delta_r2"], signed=True))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", t("### 外推（超出已测 N 的范围，仅供参考）", "### Extrapolation (beyond the measured N; an estimate only)"), ""]
    extrapolation = scaling.get("extrapolation") or {}
    models = extrapolation.get("models") or {}
    delta = models.get("delta") or {}
    if delta.get("status") == "refused":
        lines += [t(f"只有 {len(points)} 个点，少于 {extrapolation.get('min_points', 4)} 个：不做外推。",
                    f"Only {len(points)} point(s), fewer than {extrapolation.get('min_points', 4)}: no extrapolation."),
                  "", "---", ""]
        return lines
    lines.append(t("拟合 R²(N) = R²∞ − a·(N/N_max)^(−b)；下表所有极限值均为外推值。",
                   "Fit R²(N) = R²∞ − a·(N/N_max)^(−b); every limit in this table is an extrapolation."))
    lines.append("")
    rows = [("Global R²", models.get("global"), False), ("Oracle R²", models.get("oracle"), False),
            ("ΔR²", delta, True)]
    for name, fits in (extrapolation.get("bins") or {}).items():
        rows += [(f"bin {name} expert R²", fits.get("expert"), False), (f"bin {name} ΔR²", fits.get("delta"), True)]
    table = [t("曲线", "Curve"), t("状态", "Status"), t("外推极限 R²∞（95 % 区间）", "Extrapolated limit R²∞ (95 % interval)"),
             "a", "b"]
    lines.append("| " + " | ".join(table) + " |")
    lines.append("|" + "---|" * len(table))
    lines += ["| " + " | ".join(_fit_row(label, fit, signed, t)) + " |" for label, fit, signed in rows if fit]
    lines += ["", _crossing(delta, t), "",
              t("不确定度：拟合协方差（按各点偏离曲线的散布缩放，t 分布，自由度 = 点数 − 3）。它不包含所有点共享的测试集抽样误差"
                "（即每个点自身的区间）。“无法确定”表示这些点不足以确定极限（曲线平坦或噪声大）。",
                "Uncertainty: the fit's covariance (scaled by the scatter of the points about the curve; Student t with "
                "points − 3 degrees of freedom). It leaves out the test-set sampling error that all points share "
                "(each point's own interval). \"Undetermined\": the points do not pin the limit (a flat or noisy "
                "curve)."), "", "---", ""]
    return lines
