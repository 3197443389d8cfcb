"""The experiment report (the card's "Step 4" template) and the roadmap/hub tracking blocks.

Everything is rendered from the results dict alone (the parsed ``results.json``); the figures
are embedded by relative path ``img/<name>.png``. Per the card's language rule the header is
English, the body Chinese (``lang="zh"``) or English (``lang="en"``), figure text English.
Files are written atomically (temporary file in the same folder + ``os.replace``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import ConfigError, InputError
from .plots import (
    FIG_COMPARISON,
    FIG_DELTA_HEATMAP,
    FIG_PERBIN,
    FIG_PRED_VS_TRUE,
    as_float,
    bin_delta,
    check_results,
    format_ci,
    format_count,
    format_delta,
    format_r2,
    min_train_count,
    snr_range_label,
)

TITLE = "# 🧪 Experiment: Oracle SNR-binned MoE"
DEFAULT_MVP = "MVP-1.0 (Gate-2)"
HUB_PATH = "logg/moe/moe_snr_hub.md"
ROADMAP_PATH = "logg/moe/moe_snr_roadmap.md"
STATUS = {"PASS": "✅ PASS", "FAIL": "❌ FAIL", "INCONCLUSIVE": "⚠️ INCONCLUSIVE"}
LANGS = ("zh", "en")

Text = Callable[[str, str], str]


# ----------------------------------------------------------------------------- small helpers
def _text(lang: str) -> Text:
    if lang not in LANGS:
        raise ConfigError(f"lang={lang!r}: expected one of {', '.join(map(repr, LANGS))}")
    return (lambda zh, en: zh) if lang == "zh" else (lambda zh, en: en)


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.1f}%" if math.isfinite(fraction) else "n/a"


def _share(count: int, total: int) -> str:
    """'5,950 (29.8%)'."""
    return f"{count:,} ({_pct(count / total)})" if total > 0 else f"{count:,}"


def _with_ci(value: str, ci: Any, signed: bool = True) -> str:
    text = format_ci(ci, signed=signed)
    return f"{value} (CI {text})" if text else value


def _number(value: Any) -> str:
    """Alpha-like numbers: '100,000' for integers, '%g' otherwise; missing -> 'n/a'."""
    v = as_float(value)
    if not math.isfinite(v):
        return "n/a"
    return f"{int(v):,}" if v == int(v) and abs(v) >= 1 else f"{v:g}"


def _level(value: Any) -> str:
    """A noise level as written in configs: '1.0', '0.5'; missing -> 'n/a'."""
    v = as_float(value)
    return str(v) if math.isfinite(v) else "n/a"


def _lookup(mapping: Any, *paths: str) -> Any:
    """First value found at one of the dotted ``paths`` (``"noise.level"``), else None."""
    for path in paths:
        node = mapping
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            return node
    return None


def _seconds(value: Any) -> str:
    v = as_float(value)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:,.1f} s ({v / 60:.1f} min)" if v >= 60 else f"{v:.1f} s"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("-" * max(3, len(h) + 2) for h in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _flatten(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, Mapping):
        out: list[tuple[str, Any]] = []
        for key, value in node.items():
            out += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return [(prefix, node)]


def _cell(value: Any) -> str:
    """A value inside a markdown table cell: pipes escaped, lists joined."""
    if isinstance(value, (list, tuple)):
        value = ", ".join(map(str, value))
    return str(value).replace("|", "\\|").replace("\n", " ")


# ----------------------------------------------------------------------------- facts
@dataclass(frozen=True)
class BinFacts:
    """One SNR bin's numbers, ready for the report."""

    name: str
    snr_range: str
    n_train: int
    n_test: int
    train_fraction: float
    test_fraction: float
    skipped: bool
    r2: float
    r2_global: float
    delta: float
    delta_ci: Any
    mae: float
    rmse: float
    alpha: Any

    @property
    def label(self) -> str:
        return f"{self.name} ({self.snr_range})"


def bin_facts(results: Mapping[str, Any]) -> list[BinFacts]:
    """The bins in results order, with train/test shares of the bins' totals."""
    bins = results["bins"]
    total_train = sum(int(s["n_train"]) for s in bins.values())
    total_test = sum(int(s["n_test"]) for s in bins.values())
    out = []
    for name, spec in bins.items():
        expert = spec["expert"]
        out.append(BinFacts(
            name=str(name), snr_range=snr_range_label(spec.get("low"), spec.get("high")),
            n_train=int(spec["n_train"]), n_test=int(spec["n_test"]),
            train_fraction=int(spec["n_train"]) / total_train if total_train else math.nan,
            test_fraction=int(spec["n_test"]) / total_test if total_test else math.nan,
            skipped=bool(spec.get("skipped", False)), r2=as_float(expert.get("r2")),
            r2_global=as_float(spec["global"].get("r2")), delta=bin_delta(spec),
            delta_ci=spec.get("delta_r2_ci"), mae=as_float(expert.get("mae")), rmse=as_float(expert.get("rmse")),
            alpha=spec.get("alpha"),
        ))
    return out


def coverage(results: Mapping[str, Any]) -> float:
    """Fraction of test spectra routed to a trained expert (not in a skipped bin); NaN without test spectra."""
    bins = results["bins"].values()
    total = sum(int(s["n_test"]) for s in bins)
    trained = sum(int(s["n_test"]) for s in bins if not s.get("skipped", False))
    return trained / total if total else math.nan


def _coverage_text(results: Mapping[str, Any], t: Text) -> str:
    bins = results["bins"].values()
    total = sum(int(s["n_test"]) for s in bins)
    trained = sum(int(s["n_test"]) for s in bins if not s.get("skipped", False))
    return t(f"{_pct(coverage(results))}（{total:,} 条测试光谱中 {trained:,} 条由已训练的 expert 预测）",
             f"{_pct(coverage(results))} ({trained:,} of {total:,} test spectra routed to a trained expert)")


def _status(results: Mapping[str, Any]) -> str:
    decision = str(results["decision"])
    if decision not in STATUS:
        raise InputError(f"results: decision={decision!r}, expected one of {', '.join(STATUS)}")
    return STATUS[decision]


def _verdict_mark(results: Mapping[str, Any]) -> str:
    return _status(results).split()[0]


def _ci_straddles(results: Mapping[str, Any]) -> bool:
    ci = results.get("delta_r2_ci")
    text = format_ci(ci)
    return bool(text) and as_float(ci[0]) < as_float(results["threshold"]) <= as_float(ci[1])


def _next_step(results: Mapping[str, Any], t: Text) -> str:
    step = results.get("next_step")
    if step:
        return str(step)
    return {"PASS": t("继续 MVP-2.0 (Deployable Gate)", "Continue to MVP-2.0 (Deployable Gate)"),
            "FAIL": t("跳到 Gate-4 (Whitening/Conditional)", "Jump to Gate-4 (Whitening/Conditional)"),
            "INCONCLUSIVE": t("增加测试光谱后重新评估", "Re-evaluate on more test spectra")}[str(results["decision"])]


def _models(results: Mapping[str, Any]) -> tuple[Mapping, Mapping, float, float]:
    m = results["models"]
    return m["global"], m["oracle"], as_float(results["delta_r2"]), as_float(results["threshold"])


def _thr(results: Mapping[str, Any]) -> str:
    return f"{as_float(results['threshold']):g}"


# ----------------------------------------------------------------------------- sections
def _header(results: Mapping[str, Any]) -> list[str]:
    mvp = results.get("mvp") or DEFAULT_MVP
    return [TITLE, "",
            f"**Experiment ID:** `{results.get('experiment', 'LOGG-SNR-ORACLE-01')}`  ",
            f"**Date:** {results.get('date', 'n/a')}  ",
            f"**Status:** {_status(results)}  ",
            f"**MVP:** {mvp}", "", "---", ""]


def _upstream(results: Mapping[str, Any], t: Text) -> list[str]:
    rows = [["Hub", f"`{HUB_PATH}`"],
            ["Roadmap", f"`{ROADMAP_PATH}` MVP-1.0"],
            [t("验证假设", "Hypothesis"), t("Q1: SNR 分域是否有 headroom？", "Q1: does splitting by SNR leave headroom?")],
            [t("参考实现", "Reference implementation"), "`SCALING-20251223-oracle-moe-noise1-01` (Teff/[M/H] binning)"],
            [t("SNR 阈值来源", "Source of the SNR edges"), "`SCALING-20251224-fisher-multi-mag`"]]
    return [t("## 🔗 上游追溯", "## 🔗 Upstream"), "", *_table(["Type", "Link"], rows), "", "---", ""]


def _summary_sentence(results: Mapping[str, Any], t: Text) -> str:
    g, o, delta, _ = _models(results)
    thr, ci = _thr(results), format_ci(results.get("delta_r2_ci"))
    decision, status, step = str(results["decision"]), _status(results), _next_step(results, t)
    verb = t("提升到", "raises") if delta >= 0 else t("降低到", "lowers")
    ci_zh, ci_en = (f"，CI {ci}", f", CI {ci}") if ci else ("", "")
    base = t(f"Oracle SNR 路由的 MoE 将测试 R² 从 {format_r2(g['r2'])} {verb} {format_r2(o['r2'])}"
             f"（ΔR² = {format_delta(delta)}{ci_zh}）",
             f"Oracle SNR routing {verb} test R² from {format_r2(g['r2'])} to {format_r2(o['r2'])} "
             f"(ΔR² = {format_delta(delta)}{ci_en})")
    if decision == "PASS":
        tail = t(f"，≥ 阈值 {thr} → {status}：SNR 分域存在 headroom；下一步：{step}。",
                 f", ≥ the {thr} threshold → {status}: splitting by SNR leaves headroom; next: {step}.")
    elif decision == "FAIL":
        tail = t(f"，< 阈值 {thr} → {status}：即使完美路由，SNR 分域的 headroom 也不足；下一步：{step}。",
                 f", < the {thr} threshold → {status}: even perfect routing leaves too little headroom; "
                 f"next: {step}.")
    else:
        why = (t(f"CI 跨越阈值 {thr}", f"the CI straddles the {thr} threshold") if _ci_straddles(results)
               else t(f"相对阈值 {thr} 的不确定性过大", f"too uncertain relative to the {thr} threshold"))
        tail = t(f"，{why} → {status}：现有测试光谱不足以判定；下一步：{step}。",
                 f"; {why} → {status}: the test set is too small to decide; next: {step}.")
    return base + tail


def _at_a_glance(results: Mapping[str, Any], t: Text) -> list[str]:
    g, o, delta, _ = _models(results)
    thr = _thr(results)
    actual = _with_ci(format_delta(delta), results.get("delta_r2_ci"))
    hyp = _table([t("假设", "Hypothesis"), t("预期", "Expected"), t("实际", "Actual"), t("验证", "Verdict")],
                 [[f"H1: ΔR² ≥ {thr}", f"≥ {thr}", actual, _verdict_mark(results)]])
    rows = [["Global Ridge R²", _with_ci(format_r2(g["r2"]), g.get("r2_ci"), signed=False)],
            ["Oracle MoE R²", _with_ci(format_r2(o["r2"]), o.get("r2_ci"), signed=False)],
            ["ΔR²", actual],
            ["Coverage", _coverage_text(results, t)]]
    deployed = results["models"].get("deployed")
    if isinstance(deployed, Mapping):
        rows.append(["Deployed MoE R²", _with_ci(format_r2(deployed.get("r2")), deployed.get("r2_ci"), signed=False)])
        headroom = as_float(o["r2"]) - as_float(g["r2"])
        rho = (as_float(deployed.get("r2")) - as_float(g["r2"])) / headroom if headroom else math.nan
        rows.append(["ρ = (R²_deployed − R²_global) / (R²_oracle − R²_global)",
                     f"{rho:.2f}" if math.isfinite(rho) else "n/a"])
    rows.append([t("判定", "Decision"), f"{_status(results)} → {_next_step(results, t)}"])
    return [t("## ⚡ 核心结论速览", "## ⚡ Key results at a glance"), "",
            f"> **{t('一句话总结', 'One-sentence summary')}**: {_summary_sentence(results, t)}", "",
            *hyp, "", *_table([t("关键数字", "Key number"), t("值", "Value")], rows), "", "---", ""]


def _goal(results: Mapping[str, Any], t: Text) -> list[str]:
    thr = _thr(results)
    lines = t(
        f"验证 **\"按 SNR 分专家\"** 在 oracle routing 下能带来多少 headroom：\n\n"
        f"- 核心问题：SNR-based MoE 是否值得做？\n"
        f"- 验收标准：**Oracle ΔR² ≥ {thr}**（相对 Global 单模型 Ridge）\n"
        f"- 若 ΔR² < {thr} → MoE 不值得，转向 whitening/conditional (Gate-4)\n"
        f"- Oracle 路由使用每条测试光谱的真实 SNR，因此 ΔR² 是 SNR 分专家能达到的上限（headroom），"
        f"而不是可部署模型的性能",
        f"Measure how much headroom **one expert per SNR bin** gives under oracle routing:\n\n"
        f"- Core question: is an SNR-based MoE worth building?\n"
        f"- Acceptance: **Oracle ΔR² ≥ {thr}** relative to one global Ridge\n"
        f"- If ΔR² < {thr}: the MoE is not worth it; move to whitening/conditional models (Gate-4)\n"
        f"- Oracle routing uses each test spectrum's true SNR, so ΔR² is an upper bound (headroom) "
        f"for SNR experts, not the performance of a deployable model")
    return [t("## 🎯 目标", "## 🎯 Goal"), "", lines, "", "---", ""]


def _snr_method(method: Any, t: Text) -> str:
    if method == "norm":
        return t("SNR = ‖flux‖ / ‖error × noise_level‖（像素 L2 范数，用无噪声 flux，即 oracle SNR）",
                 "SNR = ‖flux‖ / ‖error × noise_level‖ (L2 norms over pixels, noise-free flux: oracle SNR)")
    if method == "median":
        return t("SNR = median(flux / error)（用无噪声 flux，即 oracle SNR）",
                 "SNR = median(flux / error) (noise-free flux: oracle SNR)")
    return t(f"方法 `{method}`", f"method `{method}`")


def _files(files: Any, limit: int = 6) -> str:
    files = [str(f) for f in (files or [])]
    shown = ", ".join(f"`{f}`" for f in files[:limit])
    return shown + (f", … (+{len(files) - limit})" if len(files) > limit else "")


def _design(results: Mapping[str, Any], t: Text) -> list[str]:
    data, snr, config = results.get("data", {}), results.get("snr", {}), results.get("config", {}) or {}
    g, _, _, _ = _models(results)
    bins = bin_facts(results)
    n_train = data.get("n_train", g["n_train"])
    n_test = data.get("n_test", g["n_test"])
    files = data.get("train_files") or []
    source = _lookup(config, "data.source")
    target = _lookup(config, "data.target") or "log_g"
    data_rows = []
    if source:
        data_rows.append([t("数据源", "Source"), _cell(source)])
    data_rows += [
        [t("训练集", "Train"), t(f"{format_count(n_train)} 条光谱，{len(files)} 个 shard：{_files(files)}",
                                f"{format_count(n_train)} spectra in {len(files)} shards: {_files(files)}")],
        [t("测试集", "Test"), t(f"{format_count(n_test)} 条光谱：`{data.get('test_file', 'n/a')}`",
                               f"{format_count(n_test)} spectra: `{data.get('test_file', 'n/a')}`")],
        [t("特征维度", "Features"), t(f"{format_count(data['pixels'])} 像素", f"{format_count(data['pixels'])} pixels")
         if "pixels" in data else "n/a"],
        [t("目标", "Target"), f"`{target}`"],
    ]

    minimum = min_train_count(results)
    bin_rows = []
    for b in bins:
        if b.skipped:
            why = f"n_train={b.n_train:,} < {minimum:,}" if minimum is not None else f"n_train={b.n_train:,}"
            expert = t(f"— 跳过（{why}），由 Global Ridge 服务", f"— skipped ({why}); served by Global Ridge")
        else:
            expert = t("✅ 已训练", "✅ trained")
        bin_rows.append([f"**{b.name}**", b.snr_range, _share(b.n_train, sum(x.n_train for x in bins)),
                         _share(b.n_test, sum(x.n_test for x in bins)), expert])
    snr_stats = t(
        f"训练集 SNR 中位数 {as_float(snr.get('train_median')):.2f}，最大值 {as_float(snr.get('train_max')):.2f}；"
        f"测试集中位数 {as_float(snr.get('test_median')):.2f}，最大值 {as_float(snr.get('test_max')):.2f}",
        f"train SNR median {as_float(snr.get('train_median')):.2f}, max {as_float(snr.get('train_max')):.2f}; "
        f"test median {as_float(snr.get('test_median')):.2f}, max {as_float(snr.get('test_max')):.2f}")

    alpha = g.get("alpha", _lookup(config, "model.alpha"))
    alphas = {b.name: b.alpha for b in bins if b.alpha is not None and not b.skipped}
    alpha_text = _number(alpha)
    if any(as_float(a) != as_float(alpha) for a in alphas.values()):
        alpha_text += t("（expert：", " (experts: ") + ", ".join(f"{k} {_number(a)}" for k, a in alphas.items()) + \
            t("）", ")")
    n_experts = sum(not b.skipped for b in bins)
    scaler = _lookup(config, "preprocessing.scaler") or "StandardScaler"
    clip = _lookup(config, "preprocessing.clip_flux")
    clip_text = t("flux 截断负值（clip ≥ 0）", "flux clipped at 0") if clip in (None, True) else \
        t("flux 不截断", "flux not clipped")
    level = _lookup(config, "noise.level", "noise_level")
    noise_cfg = _lookup(config, "noise")
    seeds = ", ".join(f"{k}={v}" for k, v in noise_cfg.items() if "seed" in str(k)) \
        if isinstance(noise_cfg, Mapping) else ""
    seeds_text = t(f"（{seeds}）", f" ({seeds})") if seeds else ""
    ci_note = t("；ΔR² 与 R² 附 CI", "; ΔR² and R² with CI") if results.get("delta_r2_ci") else ""
    model_rows = [
        [t("模型", "Model"), t(f"Ridge：1 个 Global + {n_experts} 个 SNR bin expert",
                              f"Ridge: 1 global + {n_experts} SNR-bin experts")],
        ["alpha", alpha_text],
        [t("预处理", "Preprocessing"), t(f"{scaler}（每个 expert 用本 bin 的训练光谱独立拟合；Global 用全部训练光谱）；{clip_text}",
                                       f"{scaler} (fitted per expert on its bin's training spectra; the global model on all); "
                                       f"{clip_text}")],
        [t("噪声", "Noise"), t(f"异方差高斯噪声：flux + N(0,1) × error × {_level(level)}；训练集即时加噪，测试集固定 seed 加噪一次"
                             f"{seeds_text}",
                             f"heteroscedastic Gaussian: flux + N(0,1) × error × {_level(level)}; training noise drawn "
                             f"on the fly, test noise drawn once with a fixed seed{seeds_text}")],
        [t("路由", "Routing"), t("Oracle：每条测试光谱按真实（无噪声）SNR 分到对应 bin 的 expert；跳过的 bin 回退到 Global Ridge",
                               "oracle: each test spectrum goes to the expert of its true (noise-free) SNR bin; "
                               "skipped bins fall back to Global Ridge")],
        [t("评估", "Evaluation"), t(f"R²、MAE、RMSE，总体 + 每个 bin；对照组：Global Ridge{ci_note}",
                                  f"R², MAE, RMSE, overall and per bin; baseline: Global Ridge{ci_note}")],
    ]
    return [t("## 🧪 实验设计", "## 🧪 Experiment design"), "",
            t("### 1. 数据", "### 1. Data"), "", *_table([t("项目", "Item"), t("值", "Value")], data_rows), "",
            t("### 2. SNR 分箱", "### 2. SNR bins"), "",
            f"- {_snr_method(snr.get('method'), t)}", f"- {snr_stats}",
            t(f"- 每个 bin 最少训练样本：{minimum:,}（不足则不训练 expert）" if minimum is not None else
              "- 样本不足的 bin 不训练 expert",
              f"- minimum training spectra per expert: {minimum:,} (below it no expert is trained)"
              if minimum is not None else "- bins with too few training spectra get no expert"), "",
            *_table(["Bin", t("SNR 范围", "SNR range"), t("N_train（占比）", "N_train (share)"),
                     t("N_test（占比）", "N_test (share)"), "Expert"], bin_rows), "",
            t("### 3. 模型与评估", "### 3. Model and evaluation"), "",
            *_table([t("项目", "Item"), t("值", "Value")], model_rows), "", "---", ""]


def _figures(t: Text) -> list[str]:
    items = [
        ("Figure 1: Oracle vs Global R² Comparison", "comparison", FIG_COMPARISON,
         t("Global 与 Oracle 的测试 R²（有 CI 时带误差棒），红色虚线为决策阈值 R²_global + 阈值。",
           "Test R² of Global and Oracle (CI error bars when available); the dashed red line is the decision "
           "threshold R²_global + threshold.")),
        ("Figure 2: Per-bin R²", "perbin", FIG_PERBIN,
         t("每个 SNR bin 的 Global 与 Oracle expert R²，横轴标签给出每个 bin 的训练/测试样本数，柱上标注 ΔR²。",
           "Global vs Oracle expert R² per SNR bin; tick labels give each bin's train/test counts, ΔR² above "
           "each group.")),
        ("Figure 3: Prediction vs True", "pred_vs_true", FIG_PRED_VS_TRUE,
         t("测试集真实 vs 预测 log g，按 SNR bin 着色，左 Global、右 Oracle。",
           "True vs predicted log g on the test set, coloured by SNR bin; Global left, Oracle right.")),
        ("Figure 4: ΔR² Heatmap", "delta_heatmap", FIG_DELTA_HEATMAP,
         t("每个 bin（及总体）的 Global R²、Oracle R² 与 ΔR²；★ 标出 ΔR² ≥ 阈值的格子。",
           "Global R², Oracle R² and ΔR² per bin and overall; ★ marks cells with ΔR² ≥ threshold.")),
    ]
    lines = [t("## 📊 实验图表", "## 📊 Figures"), ""]
    for title, alt, name, caption in items:
        lines += [f"### {title}", f"![{alt}](img/{name})", "", caption, ""]
    return lines + ["---", ""]


def _bin_of(value: float, bins: list[BinFacts], results: Mapping[str, Any]) -> str | None:
    for b in bins:
        spec = results["bins"][b.name]
        lo, hi = as_float(spec.get("low")), as_float(spec.get("high"))
        if (not math.isfinite(lo) or value >= lo) and (not math.isfinite(hi) or value < hi):
            return b.name
    return None


def _insights(results: Mapping[str, Any], t: Text) -> list[str]:
    bins = bin_facts(results)
    thr = as_float(results["threshold"])
    trained = [b for b in bins if not b.skipped and math.isfinite(b.delta)]
    out: list[str] = []

    if trained:
        best, worst = max(trained, key=lambda b: b.delta), min(trained, key=lambda b: b.delta)
        s = t(f"**增益最大的 bin 是 {best.label}**：ΔR² = {format_delta(best.delta)}"
              f"（expert {format_r2(best.r2)} vs global {format_r2(best.r2_global)}）",
              f"**The largest gain is in bin {best.label}**: ΔR² = {format_delta(best.delta)} "
              f"(expert {format_r2(best.r2)} vs global {format_r2(best.r2_global)})")
        if worst is not best:
            s += t(f"；增益最小的是 {worst.label}：ΔR² = {format_delta(worst.delta)}。",
                   f"; the smallest is in {worst.label}: ΔR² = {format_delta(worst.delta)}.")
        else:
            s += t("。", ".")
        above = [b.name for b in trained if b.delta >= thr]
        s += t(f"ΔR² ≥ {thr:g} 的 bin：{', '.join(above) if above else '无'}。",
               f" Bins with ΔR² ≥ {thr:g}: {', '.join(above) if above else 'none'}.")
        out.append(s)

    worse = [b for b in trained if b.delta < 0]
    if worse:
        names = ", ".join(f"{b.label} ({format_delta(b.delta)})" for b in worse)
        out.append(t(f"**expert 比 Global 更差的 bin**：{names}。在这些 bin 上单独训练的 expert 没有带来收益，"
                     f"可部署方案可考虑在此回退到 Global 模型或与相邻 bin 合并。",
                     f"**Bins where the expert is worse than Global**: {names}. A dedicated expert does not help "
                     f"there; a deployable scheme may fall back to the global model or merge with a neighbour."))
    elif trained:
        out.append(t("所有训练了 expert 的 bin 上，expert 都不差于 Global 模型。",
                     "In every bin with an expert, the expert is at least as good as the global model."))

    snr = results.get("snr", {})
    shares = " · ".join(f"{b.name} {_pct(b.train_fraction)}" for b in bins)
    median = as_float(snr.get("train_median"))
    home = _bin_of(median, bins, results) if math.isfinite(median) else None
    where = t(f"（落在 bin {home}）", f" (in bin {home})") if home else ""
    out.append(t(f"**训练集 SNR 分布**：中位数 {median:.2f}{where}，最大值 {as_float(snr.get('train_max')):.2f}；"
                 f"训练样本占比 {shares}。",
                 f"**Training SNR distribution**: median {median:.2f}{where}, max "
                 f"{as_float(snr.get('train_max')):.2f}; training shares {shares}."))

    r2_trend = " → ".join(f"{b.name} {format_r2(b.r2)}" for b in bins)
    g_trend = " → ".join(f"{b.name} {format_r2(b.r2_global)}" for b in bins)
    out.append(t(f"**R² 随 SNR bin 变化**：Oracle {r2_trend}；Global {g_trend}。",
                 f"**R² across SNR bins**: Oracle {r2_trend}; Global {g_trend}."))

    skipped = [b for b in bins if b.skipped]
    minimum = min_train_count(results)
    if skipped:
        names = ", ".join(t(f"{b.label}（n_train={b.n_train:,}，n_test={b.n_test:,}）",
                            f"{b.label} (n_train={b.n_train:,}, n_test={b.n_test:,})") for b in skipped)
        limit = t(f"少于 {minimum:,} 条训练光谱", f"fewer than {minimum:,} training spectra") \
            if minimum is not None else t("训练光谱过少", "too few training spectra")
        out.append(t(f"**跳过的 bin**：{names}{limit}，没有训练 expert，其测试光谱由 Global Ridge 预测"
                     f"（该 bin ΔR² 恒为 0）；Coverage = {_pct(coverage(results))}。",
                     f"**Skipped bins**: {names} had {limit}; no expert was trained and their test spectra are "
                     f"served by Global Ridge (ΔR² = 0 there); coverage = {_pct(coverage(results))}."))
    else:
        out.append(t("所有 bin 都训练了 expert（Coverage = 100%）。",
                     "Every bin has an expert (coverage = 100%)."))

    with_ci = [b for b in trained if format_ci(b.delta_ci)]
    if with_ci:
        sure = [b.name for b in with_ci if as_float(b.delta_ci[0]) > 0]
        out.append(t(f"**bin 级 ΔR² 的 CI**：" + "；".join(f"{b.name} {format_ci(b.delta_ci)}" for b in with_ci)
                     + f"。CI 完全大于 0 的 bin：{', '.join(sure) if sure else '无'}。",
                     "**Per-bin ΔR² CIs**: " + "; ".join(f"{b.name} {format_ci(b.delta_ci)}" for b in with_ci)
                     + f". Bins whose CI lies above 0: {', '.join(sure) if sure else 'none'}."))
    small = [b for b in bins if 0 < b.n_test < 100 and not b.skipped]
    if small:
        names = ", ".join(f"{b.name} (n_test={b.n_test:,})" for b in small)
        out.append(t(f"**小样本提醒**：{names} 的测试光谱少于 100 条，其 bin 级 R² 的不确定性大。",
                     f"**Small samples**: {names} have fewer than 100 test spectra, so their per-bin R² is "
                     f"uncertain."))
    return [t("## 💡 关键洞见", "## 💡 Key insights"), "", *[f"{i}. {s}" for i, s in enumerate(out, 1)], "", "---", ""]


def _conclusion(results: Mapping[str, Any], t: Text) -> list[str]:
    g, o, delta, _ = _models(results)
    thr, decision = _thr(results), str(results["decision"])
    ci = results.get("delta_r2_ci")
    n_train, n_test = format_count(o["n_train"]), format_count(o["n_test"])
    cmp_ = "≥" if delta >= as_float(results["threshold"]) else "<"
    finding = t(
        f"在 {n_train} 条训练光谱、{n_test} 条测试光谱上，oracle SNR 路由的 MoE 测试 R² 为 {format_r2(o['r2'])}，"
        f"Global Ridge 为 {format_r2(g['r2'])}：ΔR² = {_with_ci(format_delta(delta), ci)} {cmp_} 阈值 {thr}，"
        f"Gate-2 判定为 **{_status(results)}**。",
        f"On {n_train} training and {n_test} test spectra, the oracle SNR-routed MoE reaches test R² "
        f"{format_r2(o['r2'])} against {format_r2(g['r2'])} for Global Ridge: ΔR² = "
        f"{_with_ci(format_delta(delta), ci)} {cmp_} the {thr} threshold, so Gate-2 is **{_status(results)}**.")
    implication = {
        "PASS": t("SNR 分域存在可用的 headroom：值得构建可部署的 gate（MVP-2.0：只用 error 向量的统计量预测 SNR bin，"
                  "soft routing），并以 ρ = (R²_deployed − R²_global) / (R²_oracle − R²_global) 衡量能兑现多少 headroom。",
                  "Splitting by SNR leaves usable headroom: build a deployable gate (MVP-2.0: predict the SNR bin "
                  "from error-vector statistics only, soft routing) and measure how much headroom it keeps with "
                  "ρ = (R²_deployed − R²_global) / (R²_oracle − R²_global)."),
        "FAIL": t("即使完美（oracle）路由，SNR 分专家的增益也低于阈值：SNR-based MoE 不值得继续，转向 Gate-4 "
                  "（whitening / conditional 模型），让单个模型直接利用噪声信息。",
                  "Even perfect (oracle) routing gains less than the threshold: an SNR-based MoE is not worth "
                  "pursuing; move to Gate-4 (whitening / conditional models) so one model uses the noise "
                  "information directly."),
        "INCONCLUSIVE": t("ΔR² 相对阈值的不确定性过大，无法判定：需要更多测试光谱（如 test_10k）缩小 CI 后重新评估，"
                          "再决定进入 MVP-2.0 还是 Gate-4。",
                          "ΔR² is too uncertain relative to the threshold to decide: evaluate on more test spectra "
                          "(e.g. test_10k) to narrow the CI, then choose between MVP-2.0 and Gate-4."),
    }[decision]
    marker = {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 2}[decision]
    gate_rows = [[f"ΔR² ≥ {thr}", t("✅ 通过", "✅ pass"), t("继续 MVP-2.0 (Deployable Gate)",
                                                          "Continue to MVP-2.0 (Deployable Gate)")],
                 [f"ΔR² < {thr}", t("❌ 不通过", "❌ fail"), t("跳到 Gate-4 (Whitening/Conditional)",
                                                            "Jump to Gate-4 (Whitening/Conditional)")],
                 [t(f"CI 跨越 {thr}", f"CI straddles {thr}"), t("⚠️ 无法判定", "⚠️ inconclusive"),
                  t("增加测试光谱后重评", "Re-evaluate on more test spectra")]]
    gate_rows[marker] = [f"**👉 {c}**" for c in gate_rows[marker]]
    quick = [["Global Ridge R²", format_r2(g["r2"])], ["Oracle MoE R²", format_r2(o["r2"])],
             ["ΔR²", _with_ci(format_delta(delta), ci)], [t("阈值", "Threshold"), thr],
             ["Coverage", _pct(coverage(results))], ["N_train / N_test", f"{n_train} / {n_test}"]]
    quick += [[f"ΔR² bin {b.name}", t("无 expert（= Global）", "no expert (= Global)") if b.skipped
               else format_delta(b.delta)] for b in bin_facts(results)]
    total = _lookup(results, "timings_s.total")
    if total is not None:
        quick.append([t("总耗时", "Total time"), _seconds(total)])
    return [t("## 📝 结论", "## 📝 Conclusion"), "",
            t("### 核心发现", "### Core finding"), "", finding, "",
            t("### 设计启示（Decision Gate）", "### Design implication (Decision Gate)"), "", implication, "",
            *_table([t("结果", "Result"), t("判定", "Verdict"), t("下一步", "Next step")], gate_rows), "",
            t(f"**下一步**：{_next_step(results, t)}", f"**Next step**: {_next_step(results, t)}"), "",
            t("### 关键数字速查", "### Key numbers"), "",
            *_table([t("指标", "Metric"), t("值", "Value")], quick), "", "---", ""]


def _appendix(results: Mapping[str, Any], t: Text) -> list[str]:
    models = results["models"]
    bins = bin_facts(results)
    total_train = sum(b.n_train for b in bins)
    rows = []
    for key, name in (("global", "Global Ridge"), ("oracle", "Oracle MoE"), ("deployed", "Deployed MoE")):
        m = models.get(key)
        if isinstance(m, Mapping):
            rows.append([name, format_r2(m.get("r2")), format_r2(m.get("mae")), format_r2(m.get("rmse")),
                         format_count(m["n_train"]), format_count(m["n_test"])])
    for b in bins:
        note = t(", 无 expert", ", no expert") if b.skipped else ""
        rows.append([f"- Bin {b.label}", f"{format_r2(b.r2)} (global {format_r2(b.r2_global)}{note})",
                     format_r2(b.mae), format_r2(b.rmse), _share(b.n_train, total_train), format_count(b.n_test)])
    phases = {"pass": t("数据 pass（读取、加噪、SNR、分 bin、累积统计量）", "data pass (read, noise, SNR, bin, sums)"),
              "solve": t("求解 Global + experts", "solve global + experts"),
              "test": t("测试集路由与评估", "route and score the test set"),
              "total": t("总计", "total")}
    timings = results.get("timings_s") or {}
    timing_rows = [[f"`{k}`", phases.get(k, ""), _seconds(v)] for k, v in timings.items()]
    lines = [t("## 📎 附录", "## 📎 Appendix"), "", t("### 数值结果表", "### Numerical results"), "",
             *_table(["Model", "R²", "MAE", "RMSE", "N_train", "N_test"], rows), "",
             t("Bin 行给出 expert 的数值（跳过的 bin 为 Global 的数值），括号内为同一 bin 上 Global Ridge 的 R²。",
               "Bin rows give the expert's numbers (the global model's for skipped bins); the R² of Global Ridge "
               "on the same bin is in parentheses."), ""]
    if timing_rows:
        lines += [t("### 耗时", "### Timings"), "",
                  *_table([t("阶段", "Phase"), t("说明", "What"), t("耗时", "Time")], timing_rows), ""]
    provenance = _flatten(results.get("provenance") or {})
    if provenance:
        lines += [t("### 溯源", "### Provenance"), "",
                  *_table([t("键", "Key"), t("值", "Value")], [[f"`{k}`", _cell(v)] for k, v in provenance]), ""]
    config = results.get("config")
    if config:
        lines += [t("### 完整配置", "### Full configuration"), "", "```json",
                  json.dumps(config, indent=2, ensure_ascii=False, default=str), "```", ""]
    return lines


# ----------------------------------------------------------------------------- public API
def render_report(results: Mapping[str, Any], lang: str = "zh") -> str:
    """The experiment report as markdown: English header, body in ``lang`` ("zh" or "en")."""
    t = _text(lang)
    check_results(results)
    _status(results)
    lines = [*_header(results), *_upstream(results, t), *_at_a_glance(results, t), *_goal(results, t),
             *_design(results, t), *_figures(t), *_insights(results, t), *_conclusion(results, t),
             *_appendix(results, t)]
    return "\n".join(lines).rstrip("\n") + "\n"


def _atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and ``os.replace`` it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(results: Mapping[str, Any], out_dir: str | os.PathLike, lang: str = "zh") -> Path:
    """Write ``out_dir/report.md`` atomically (figures are expected under ``out_dir/img/``); returns its path."""
    text = render_report(results, lang=lang)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.md"
    _atomic_write_text(path, text)
    return path


def update_tracking_block(path: str | os.PathLike, experiment_id: str, body: str) -> None:
    """Insert or replace the block ``<!-- snrmoe:{id}:begin -->`` ... ``<!-- snrmoe:{id}:end -->`` in ``path``.

    Idempotent: the same body gives the same file. A missing file is created; a new block is
    appended after the existing text; text outside the block is kept byte for byte.
    """
    experiment_id = str(experiment_id)
    if not experiment_id.strip() or any(s in experiment_id for s in ("-->", "\n", "\r", ":")):
        raise ConfigError(f"experiment_id={experiment_id!r}: expected a non-empty id without ':', '-->' or newlines")
    path = Path(path)
    begin, end = f"<!-- snrmoe:{experiment_id}:begin -->", f"<!-- snrmoe:{experiment_id}:end -->"
    block = f"{begin}\n{body.strip(chr(10))}\n{end}"
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the tracking file: {exc}") from None
    start = text.find(begin)
    if start >= 0:
        stop = text.find(end, start)
        if stop < 0:
            raise InputError(f"{path}: found {begin} but no matching {end}")
        new = text[:start] + block + text[stop + len(end):]
    else:
        new = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"
    if new != text:
        _atomic_write_text(path, new)


def roadmap_block(results: Mapping[str, Any], lang: str = "zh") -> str:
    """Key numbers for the roadmap's MVP-1.0 entry (markdown)."""
    t = _text(lang)
    check_results(results)
    g, o, delta, _ = _models(results)
    head = (f"**{results.get('experiment', 'LOGG-SNR-ORACLE-01')}** ({results.get('date', 'n/a')}) · "
            f"{results.get('mvp') or DEFAULT_MVP} · {_status(results)} → {_next_step(results, t)}")
    row = [format_r2(g["r2"]), format_r2(o["r2"]), _with_ci(format_delta(delta), results.get("delta_r2_ci")),
           _thr(results), _pct(coverage(results)), f"{format_count(o['n_train'])} / {format_count(o['n_test'])}"]
    per_bin = " · ".join(f"{b.name} " + (t("无 expert", "no expert") if b.skipped else format_delta(b.delta))
                         for b in bin_facts(results))
    return "\n".join([head, "",
                      *_table(["Global R²", "Oracle R²", "ΔR²", t("阈值", "Threshold"), "Coverage",
                               "N_train / N_test"], [row]), "",
                      t(f"每个 bin 的 ΔR²（expert − global）：{per_bin}", f"Per-bin ΔR² (expert − global): {per_bin}")])


def hub_block(results: Mapping[str, Any], lang: str = "zh") -> str:
    """The hypothesis verdict (H1 / Q1) for the hub (markdown)."""
    t = _text(lang)
    check_results(results)
    _, _, delta, _ = _models(results)
    thr = _thr(results)
    source = f"`{results.get('experiment', 'LOGG-SNR-ORACLE-01')}` ({results.get('date', 'n/a')})"
    row = [t(f"H1 (Q1: SNR 分域是否有 headroom？): ΔR² ≥ {thr}", f"H1 (Q1: does splitting by SNR leave headroom?): "
             f"ΔR² ≥ {thr}"), f"≥ {thr}", _with_ci(format_delta(delta), results.get("delta_r2_ci")),
           _status(results), source]
    answer = {"PASS": t("是", "yes"), "FAIL": t("否", "no"), "INCONCLUSIVE": t("尚无定论", "not yet decided")}[
        str(results["decision"])]
    return "\n".join([*_table([t("假设", "Hypothesis"), t("预期", "Expected"), t("实际", "Actual"),
                               t("验证", "Verdict"), t("来源", "Source")], [row]), "",
                      t(f"> **Q1 结论**：{answer}（ΔR² = {format_delta(delta)}）→ {_next_step(results, t)}",
                        f"> **Q1 answer**: {answer} (ΔR² = {format_delta(delta)}) → {_next_step(results, t)}")])
