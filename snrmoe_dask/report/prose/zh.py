"""The report's words in Chinese (the card's body language): headings, labels and one sentence per
statement of ``rules``. Model names (Global Ridge, Oracle MoE), the card's stage names and units stay
as the card writes them; everything else is Chinese. ``en`` has the same names in English.

One module, though over 500 lines: every sentence of the report in one language, side by side
with ``en`` name for name, so that a translator reads one file."""

from __future__ import annotations

from typing import Any

from ..facts import BinFacts, Facts
from ..formatting import code, format_ci, format_count, format_delta, format_number, format_r2, pct
from ..rules import Statement

SEP = "、"  # between items of a list
VERDICT = {"PASS": "✅ 通过", "FAIL": "❌ 不通过"}  # the card's Decision Gate words
NEXT_STEP = {"PASS": "继续 MVP-2.0 (Deployable Gate)", "FAIL": "跳到 Gate-4 (Whitening/Conditional)"}
MODEL = {"global": "Global Ridge", "oracle": "Oracle MoE", "deployed": "Deployed MoE", "noisy_snr_routed": "含噪 SNR 硬路由",
         "expert": "专家"}

HEADINGS = {
    "upstream": "## 🔗 上游追溯", "glance": "## ⚡ 核心结论速览", "goal": "## 🎯 目标", "design": "## 🧪 实验设计",
    "data": "### 1. 数据", "bins": "### 2. SNR 分箱", "model": "### 3. 模型与评估",
    "checks": "## 🔧 故障排除与卡片预期", "figures": "## 📊 实验图表", "gate": "## 🚦 可部署门控（MVP-2.0）",
    "alpha": "## 🎚️ α 的选择", "insights": "## 💡 关键洞见", "conclusion": "## 📝 结论", "finding": "### 核心发现",
    "implication": "### 设计启示（Decision Gate）", "quick": "### 关键数字速查", "appendix": "## 📎 附录",
    "numbers": "### 数值结果表", "timings": "### 耗时", "provenance": "### 溯源",
    "config": "### 配置（本次运行，完整）", "confusion": "### 混淆矩阵（行：真实区间，列：门控预测的区间）",
    "scaling": "## 📈 规模曲线：R² 随训练集大小的变化", "extrapolation": "### 外推（超出已测范围，仅供参考）",
}
LABELS = {
    "hypothesis": "假设", "expected": "预期", "actual": "实际", "verdict": "验证", "key": "关键数字", "value": "值",
    "item": "项目", "range": "SNR 范围", "n_train_share": "N_train（占比）",
    "n_test_share": "N_test（占比）", "expert": "专家", "result": "结果", "decision": "判定", "next": "下一步",
    "problem": "问题（卡片）", "card_fix": "卡片的处理", "found": "本次结果", "unit": "区间",
    "std": "σ(log g)（dex）",
    "delta_ci": "ΔR²（95% 置信区间）", "slope": "斜率（专家 / Global）", "outside": "超出训练范围（专家 / Global）",
    "overall": "总体", "model": "模型", "chosen": "选中的 α", "val_r2": "验证 R²（选中 α）", "gain": "增益",
    "note": "备注", "curve": "曲线", "limit": "外推极限 R²∞（95% 区间）",
    "true_pred": "真实 ↓ / 预测 →",
}
UPSTREAM = [("Hub", "`logg/moe/moe_snr_hub.md`"), ("Roadmap", "`logg/moe/moe_snr_roadmap.md` MVP-1.0"),
            ("验证假设", "Q1: SNR 分域是否有 headroom？"),
            ("参考实现", "`SCALING-20251223-oracle-moe-noise1-01`（按 Teff/[M/H] 分箱）"),
            ("SNR 阈值来源", "`SCALING-20251224-fisher-multi-mag`")]
PHASES = {"open": "打开并检查所有输入文件", "pass": "训练集遍历：读取、修复、加噪、SNR、分区间、累加统计量",
          "validation pass": "验证集遍历，用于选择 α", "solve": "求解 Global Ridge 与各专家",
          "test": "读取测试集、路由与评分，含置信区间", "scaling": "规模曲线的各点", "write": "写出结果、图表与报告",
          "total": "写出阶段之前的总计"}


def unit(f: Facts) -> str:
    """What one expert covers: '区间' (one column), '单元' (a grid cell)."""
    return "单元" if len(f.columns) > 1 else "区间"


def names(bins: list) -> str:
    """'H、L、X' for bins (or their names)."""
    return SEP.join(b if isinstance(b, str) else b.name for b in bins)


def _routed_by(f: Facts) -> str:
    return f"按真实 {f.split} 路由的 Oracle MoE "


# ----------------------------------------------------------------------------- summary and premises
def summary(f: Facts, caveated: bool) -> str:
    """The one-sentence summary (the card's 一句话总结)."""
    where = "在这批模拟光谱上，" if f.simulated_sources else ""
    verb = "提高到" if f.delta >= 0 else "降到"
    cmp_ = "≥" if f.decision == "PASS" else "<"
    text = (f"{where}{_routed_by(f)}把测试 R² 从 {format_r2(f.global_.r2)} {verb} {format_r2(f.oracle.r2)}"
            f"（ΔR² = {format_delta(f.delta)} {cmp_} 阈值 {f.threshold:g}），按卡片规则判定为 {VERDICT[f.decision]}，"
            f"下一步：{NEXT_STEP[f.decision]}。")
    return text + ("请结合下列前提阅读这一结论。" if caveated else "")


def _ci(ci: Any) -> str:
    return format_ci(ci) or "n/a"


def _alpha_models(models: list[str], f: Facts) -> str:
    """'Global Ridge 与 L、M、X 区间的专家' for the models named ("global" or a bin)."""
    experts = [m for m in models if m != "global"]
    said = ["Global Ridge"] if "global" in models else []
    if experts:
        said.append(f"{names(experts)} {unit(f)}的专家")
    return " 与 ".join(said)


def _negatives(found: list[tuple[str, str, float]], f: Facts) -> str:
    """'Oracle MoE（-0.0100）；X 区间的专家（-0.0133）与 Global Ridge（-0.0379）': grouped by where."""
    groups: dict[str, list[str]] = {}
    for where, model, value in found:
        groups.setdefault(where, []).append(f"{MODEL[model]}（{format_r2(value)}）")
    return "；".join(("" if where == "overall" else f"{where} {unit(f)}的") + "与".join(items)
                    for where, items in groups.items())


def premise(s: Statement, f: Facts) -> str:
    """One premise of the conclusion, one line."""
    d = s.data
    if s.kind == "robust":
        side = "高于" if d["decision"] == "PASS" else "低于"
        return (f"✅ 判定稳健：ΔR² 的 95% 置信区间 {_ci(d['ci'])} 整体{side}阈值 {d['threshold']:g}"
                f"（{format_count(d['n_test'])} 条测试光谱）。")
    if s.kind == "not_robust":
        settle = (f"按当前效应大小，约需 {format_count(d['needed'])} 条测试光谱才能定论（估计）" if d["needed"]
                  else "ΔR² 恰好等于阈值，增加测试光谱也无法定论")
        return (f"⚠️ 测试集偏小：ΔR² 的 95% 置信区间 {_ci(d['ci'])} 跨过阈值 {d['threshold']:g}，"
                f"{format_count(d['n_test'])} 条测试光谱下判定不稳健；{settle}。")
    if s.kind == "no_interval":
        return (f"⚠️ 未计算置信区间（`evaluation.bootstrap: 0`）：无法判断 {format_count(d['n_test'])} 条测试光谱下"
                f"判定是否稳健。")
    if s.kind == "simulated":
        return (f"⚠️ 输入文件是模拟数据（文件的 source 属性：{SEP.join(code(x) for x in d['sources'])}），"
                f"不是真实的 BOSZ/PFS 光谱；结论只适用于这批模拟数据。")
    if s.kind == "alpha_edge":
        models = "；".join(f"{_alpha_models(n, f)} α = {format_number(a)}（网格{'下' if e == 'low' else '上'}端）"
                          for n, a, e in d["models"])
        return f"⚠️ α 选在候选网格的边缘：{models}；验证曲线在网格之外可能仍在上升，最优 α 可能不在网格内。"
    if s.kind == "alpha_untuned":
        return (f"⚠️ α 固定为 {format_number(d['alpha'])}，未在验证集上调节：专家只用本{unit(f)}的光谱训练"
                f"（占全部训练光谱的 {pct(d['share_min'])}–{pct(d['share_max'])}），同样的 α 对它们约束更强，"
                f"而 {SEP.join(d['bins'])} {unit(f)}的专家不如 Global Ridge；ΔR² 可能因此偏低，可用 "
                f"`model.alpha: auto` 复核。")
    if s.kind == "still_rising":
        parts = SEP.join(f"{MODEL[m]} 从 {format_r2(a)} 升至 {format_r2(b)}" for m, a, b in d["models"])
        return (f"⚠️ 训练数据尚未饱和：训练光谱从 {format_count(d['n_before'])} 条增至 {format_count(d['n_last'])} 条时，"
                f"{parts}；更多训练数据可能改变结论。")
    if s.kind == "negative_r2":
        return (f"⚠️ 出现负 R²（比直接预测均值还差）：{_negatives(d['found'], f)}；按卡片的故障排除，"
                f"应检查特征缩放与正则化。")
    if s.kind == "deployed_above_oracle":
        bins = f"，{SEP.join(n for n, _, _ in d['bins'])} {unit(f)}亦然" if d["bins"] else ""
        return (f"⚠️ Deployed MoE（可部署门控）的 R²（{format_r2(d['deployed'])}）高于 Oracle MoE（{format_r2(d['oracle'])}）{bins}："
                f"Oracle 的 ΔR² 因此不是可部署方案的上限（软路由对几个专家的预测加权平均）。")
    raise KeyError(s.kind)


# ----------------------------------------------------------------------------- insights
def insight(s: Statement, f: Facts) -> str:
    d, u = s.data, unit(f)
    if s.kind == "gain_extremes":
        best, worst = d["best"], d["worst"]
        return (f"ΔR² 的点估计在 {best.name} {u}（{best.label}）最大：{format_delta(best.delta)}"
                f"（专家 {format_r2(best.expert.r2)}，Global Ridge {format_r2(best.global_.r2)}）；"
                f"在 {worst.name} {u}（{worst.label}）最小：{format_delta(worst.delta)}。")
    if s.kind == "expert_better_everywhere":
        return (f"每个训练了专家的{u}里，专家都不差于 Global Ridge：ΔR² 的 95% 置信区间下限均 ≥ 0，"
                f"MAE 与 RMSE 也都不更差。")
    if s.kind == "expert_worse":
        if d["interval"]:
            cis = SEP.join(f"{b.name} {_ci(b.delta_ci)}" for b in d["bins"])
            return (f"{names(d['bins'])} {u}的专家明显不如 Global Ridge（ΔR² 的置信区间整体低于 0：{cis}）；"
                    f"这些{u}可改由 Global Ridge 预测，或与相邻{u}合并。")
        deltas = SEP.join(f"{b.name} {format_delta(b.delta)}" for b in d["bins"])
        return (f"按点估计，{names(d['bins'])} {u}的专家不如 Global Ridge（ΔR²：{deltas}）；"
                f"未计算置信区间，无法判断差别是否超出测试集的抽样噪声。")
    if s.kind == "within_noise":
        cis = SEP.join(f"{b.name} {_ci(b.delta_ci)}" for b in d["bins"])
        return (f"{names(d['bins'])} {u}的 ΔR² 置信区间包含 0（{cis}）：这些{u}里专家与 Global Ridge 的差别"
                f"没有超出测试集的抽样噪声。")
    if s.kind == "mae_disagrees":
        items = SEP.join(f"{b.name}（ΔR² {format_delta(b.delta)}；MAE 专家 {format_r2(b.expert.mae)}、"
                         f"Global Ridge {format_r2(b.global_.mae)} dex）" for b in d["bins"])
        return f"按 R² 专家更好、按 MAE 却更差的{u}：{items}；两个指标的结论不一致。"
    if s.kind == "small_bins":
        bins = d["bins"]
        if len(bins) == 1:
            return (f"{bins[0].name} {u}只有 {format_count(bins[0].n_test)} 条测试光谱（少于 {d['limit']} 条），"
                    f"R² 与 ΔR² 的不确定性很大。")
        counts = SEP.join(f"{format_count(b.n_test)} 条" for b in bins)
        return f"{names(bins)} {u}的测试光谱少于 {d['limit']} 条（分别为 {counts}），R² 与 ΔR² 的不确定性很大。"
    if s.kind == "skipped":
        items = SEP.join(f"{b.name}（{b.label}，{format_count(b.n_train)} 条）" for b in d["bins"])
        limit = f"少于 {format_count(d['minimum'])} 条" if d["minimum"] is not None else "太少"
        return (f"{items} {u}的训练光谱{limit}，未训练专家，其测试光谱由 Global Ridge 预测（ΔR² 记为 0）；"
                f"覆盖率 {pct(f.coverage)}。")
    if s.kind == "shrinkage":
        slopes = SEP.join(f"{MODEL[m]} {v:.2f}" for m, v in d["slopes"])
        return (f"预测向均值收缩：预测值对真实 log g 的回归斜率为 {slopes}（1 表示没有收缩），"
                f"即低 log g 被高估、高 log g 被低估。")
    if s.kind == "outside_range":
        span = (f" [{d['low']:.2f}, {d['high']:.2f}]" if d["low"] is not None else "")
        items = SEP.join(f"{MODEL[m]} {pct(share)}（预测值 {lo:.2f} 至 {hi:.2f}）" for m, share, lo, hi in d["models"])
        return f"部分预测超出训练目标的范围{span}：{items}。"
    raise KeyError(s.kind)


# ----------------------------------------------------------------------------- the card's checks
def check(s: Statement, f: Facts) -> list[str]:
    """A row of the troubleshooting table: the card's problem, its fix, what this run found."""
    d, u = s.data, unit(f)
    if s.kind == "check_min_train":
        minimum = format_count(d["minimum"]) if d["minimum"] is not None else "最小样本数"
        if d["skipped"]:
            found = SEP.join(f"{b.name} {u} {format_count(b.n_train)} 条" for b in d["skipped"]) + \
                    "：未训练专家，由 Global Ridge 预测"
        else:
            small = d["smallest"]
            found = f"各{u}均达到要求（最少为 {small.name} {u}的 {format_count(small.n_train)} 条）"
        return [f"某{u}样本太少", f"少于 {minimum} 条训练光谱则不训练专家", found]
    if s.kind == "check_repairs":
        parts = []
        for name, counts, _ in d["sets"]:
            label = "训练集" if name == "train" else "测试集"
            parts.append(f"{label}未记录" if counts is None else
                         f"{label} {format_count(counts['error_nonpositive'])} / {format_count(counts['error_nan'])} / "
                         f"{format_count(counts['flux_negative'])}")
        return ["SNR 计算出现 NaN", "error = 0 时截断到 1e-6",
                "；".join(parts) + "（像素数：error ≤ 0 截断为 1e-6 / error 为 NaN 用相邻像素填补 / flux < 0 截为 0）"]
    if s.kind == "check_negative_r2":
        found = _negatives(d["found"], f) or "无"
        return ["R² 为负", "模型预测太差，检查特征缩放与正则化", found]
    if s.kind == "check_shares":
        if not d["applies"]:
            found = f"本次的{u}不是卡片的 H/M/L/X，不适用"
        elif d["low"]:
            found = "低于预期：" + SEP.join(f"{n} {pct(v)}（预期 ~{e:.0%}+）" for n, v, e in d["low"])
        else:
            found = "各区间均不低于预期"
        return ["预期样本比例", "H ~30%+ · M ~30%+ · L ~20%+ · X ~10%+", found]
    if s.kind == "check_ceilings":
        if not d["applies"]:
            found = ("模拟数据，不与上限比较（上限是针对真实 BOSZ 数据估计的）" if d["simulated"]
                     else f"本次的{u}不是卡片的 H/M/L/X，不适用")
        elif d["above"]:
            found = "⚠️ " + SEP.join(
                f"{n} {u}的{'专家' if m == 'expert' else ' Global Ridge'} {format_r2(v)}"
                + (f" {format_ci(ci, signed=False)}" if ci else "（无置信区间）") + f" 高于上限 {c:g}"
                for n, m, v, ci, c in d["above"]) + "：数据或评估可能有问题（如泄漏），需核查"
        else:
            found = "没有模型的 R² 置信区间高于上限"
        return ["R² 不应超过 Fisher 上限 R²_max", "H 0.89 · M 0.74 · L 0.37 · X 0", found]
    raise KeyError(s.kind)


REPAIR_LABELS = {"flux_negative": "flux < 0 → 0", "error_nan": "error 为 NaN → 最近像素", "error_nonpositive": "error ≤ 0 → 1e-6",
                 "flux_absurd": "flux 超过本行典型值 10⁶ 倍 → 最近像素",
                 "error_absurd": "error 超过本行典型值 10⁶ 倍 → 最近像素"}


def repairs_line(name: str, counts: dict[str, int], pixels: int) -> str:
    total = sum(counts.values())
    kinds = "；".join(f"{REPAIR_LABELS.get(k, k)} {format_count(n)} 个" for k, n in counts.items())
    label = "训练集" if name == "train" else "测试集"
    return (f"> ⚠️ 读取时的修复改动了{label} {format_count(pixels)} 个像素中的 {format_count(total)} 个"
            f"（{pct(total / pixels)}）：{kinds}。")


# ----------------------------------------------------------------------------- sections
def goal(f: Facts) -> list[str]:
    threshold_text = f"{f.threshold:g}"
    lines = ["验证 **“按 SNR 分专家”** 在 oracle 路由下能带来多少提升空间（headroom）：", "",
             "- 核心问题：SNR-based MoE 是否值得做？",
             f"- 验收标准：**Oracle ΔR² ≥ {threshold_text}**（相对 Global 单模型）",
             f"- 若 ΔR² < {threshold_text}：MoE 不值得做，转向 whitening/conditional（Gate-4）",
             "- Oracle 路由使用每条测试光谱的真实 SNR：ΔR² 衡量完美路由下的提升空间，不是可部署模型的表现，"
             "也不保证是它的上限（软路由可能超过它）"]
    if not f.snr_partition:
        lines.append(f"- 本次运行的专家按参数表的 `{f.split}` 划分，而不是按 SNR；ΔR² 因此是按 {f.split} 分专家的提升空间")
    return lines


def source_cell(f: Facts) -> str:
    """Where the spectra come from: what the files say, what the config says, and whether they agree."""
    parts = [f"文件：{code(s)}（{n} 个文件）" for s, n in f.named_sources]
    if f.unnamed_files:
        parts.append(f"{f.unnamed_files} 个文件没有 source 属性（真实数据文件不带）")
    if f.configured_source is not None:
        parts.append(f"配置 data.source：{code(f.configured_source)}"
                     + ("（⚠️ 与文件所写不一致，数字来自这些文件）" if f.source_mismatch else ""))
    return "；".join(parts) or "未记录"


def data_rows(f: Facts, target: str) -> list[list[str]]:
    data = f.results.data
    files = len(data.train_files)
    spread = f.target
    target_text = f"`{target}`" + (f"（训练范围 {spread.train_min:.2f}–{spread.train_max:.2f} dex）"
                                   if spread.train_min is not None else "")
    return [["数据源", source_cell(f)],
            ["训练集", f"{format_count(f.n_train)} 条光谱" + (f"，{files} 个分片（路径见附录）" if files else "")],
            ["测试集", f"{format_count(f.n_test)} 条光谱" + (f"；每条光谱 {format_count(data.pixels)} 个像素" if data.pixels else "")],
            ["目标", target_text]]


def snr_lines(f: Facts) -> list[str]:
    snr = f.results.snr
    method = {"norm": "SNR = ‖flux‖ / ‖error × noise_level‖（像素 L2 范数，用无噪声 flux，即 oracle SNR）",
              "median": "SNR = median(flux / error)（用无噪声 flux，即 oracle SNR）"}.get(snr.method, f"方法 `{snr.method}`")
    lines = [f"- {method}；训练集中位数 {_num(snr.train_median)}、最大值 {_num(snr.train_max)}，"
             f"测试集中位数 {_num(snr.test_median)}、最大值 {_num(snr.test_max)}"]
    if f.snr_partition:
        lines.append("- 区间左闭右开，下限 ≤ SNR < 上限，与卡片 Step 1 的代码 `low <= snr < high` 一致；卡片表格写作 "
                     "4 < SNR ≤ 7，两者只在 SNR 恰好等于边界时不同")
    else:
        lines.append(f"- 专家按参数表的 `{f.split}` 划分（{len(f.bins)} 个{unit(f)}）；SNR 照常计算，只用于描述数据")
    minimum = f.min_train
    lines.append(f"- 每个{unit(f)}至少 {format_count(minimum)} 条训练光谱才训练专家" if minimum is not None
                 else f"- 训练光谱太少的{unit(f)}不训练专家")
    return lines


def _num(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "n/a"


def expert_cell(b: BinFacts, f: Facts) -> str:
    if not b.skipped:
        return "✅ 已训练"
    why = f"{format_count(b.n_train)} < {format_count(f.min_train)}" if f.min_train is not None else "样本太少"
    return f"— 未训练（{why}），由 Global Ridge 预测"


def model_rows(f: Facts) -> list[list[str]]:
    scaling = (f"{f.scaler}（用全部训练光谱拟合一个，Global Ridge 与所有专家共用）" if f.shared_scaler
               else f"{f.scaler}（每个专家用本{unit(f)}的训练光谱单独拟合，Global Ridge 用全部训练光谱）")
    clip = "flux 的负值截为 0" if f.clips_flux else "flux 不截断"
    routing = ("Oracle：每条测试光谱按真实（无噪声）SNR 交给所在区间的专家；未训练专家的区间由 Global Ridge 预测"
               if f.snr_partition else f"Oracle：每条测试光谱按参数表中真实的 {f.split} 交给所在{unit(f)}的专家")
    if f.results.gate is not None:
        routing += "；另评估了可部署门控（见下文）"
    alpha = f.alpha_shown
    if f.expert_alphas:
        alpha += "（专家：" + SEP.join(f"{n} {format_number(a)}" for n, a in f.expert_alphas.items()) + "）"
    if f.alpha_selected:
        alpha += "；每个模型在验证集上选择，见“α 的选择”"
    where = "总体与每个区间" if f.per_bin else "只看总体"
    return [["模型", f"Ridge：1 个 Global Ridge + {f.n_experts} 个专家（每个{unit(f)}一个）"], ["α", alpha],
            ["预处理", f"{scaling}；{clip}"],
            ["噪声", f"异方差高斯噪声 flux + N(0,1) × error × {f.config('noise.level', 1.0)}；训练时即时加噪，"
                     f"测试集用固定种子加噪一次" + (f"（{f.seeds}）" if f.seeds else "")],
            ["路由", routing],
            ["评估", f"{SEP.join(f.metric_names)}，{where}；对照组：Global Ridge" + ("，附 95% 置信区间" if f.delta_ci else "")]]


def marks_note(f: Facts) -> str:
    return (f"图 2 中的 ★ 表示该{unit(f)} ΔR² 置信区间的下限 ≥ {f.threshold:g}；{f.threshold:g} 是总体 ΔR² 的判定阈值，"
            f"{unit(f)}级的标记只用于描述，不参与判定。")


def captions(f: Facts) -> list[str]:
    u = unit(f)
    return [f"Global Ridge 与 Oracle MoE 的测试 R²（误差棒为 95% 置信区间），虚线为判定阈值 R²_Global + {f.threshold:g}。",
            f"各{u}上 Global Ridge 与专家的测试 R²，柱上方为 ΔR² 及其置信区间；横轴标签给出{u}范围与样本数。",
            "测试集上预测与真实 log g 的对比，按区间着色；实线为最小二乘拟合，虚线为 y = x，灰色横线为训练目标的范围。",
            f"ΔR² 热图：横轴为{u}（及总体）；ΔR² 一行的颜色以阈值 {f.threshold:g} 为中点（蓝色 ≥ 阈值，红色 < 阈值），"
            f"格内为 ΔR² 及其置信区间，上方两行为两个模型的 R²。"]


def finding(f: Facts, best: BinFacts | None, worse: list[BinFacts]) -> str:
    cmp_ = "≥" if f.decision == "PASS" else "<"
    text = f"按卡片规则，Gate-2 判定为 **{VERDICT[f.decision]}**（ΔR² = {format_delta(f.delta)} {cmp_} {f.threshold:g}）"
    if best is not None and f.per_bin:
        text += f"；ΔR² 在 {best.name} {unit(f)}最大（{format_delta(best.delta)}）"
        if worse:
            text += f"，{names(worse)} {unit(f)}的专家不如 Global Ridge"
    return text + "。"


def implication(f: Facts, caveated: bool) -> str:
    lead = "若上述前提成立，" if caveated else ""
    if f.decision == "PASS":
        return (f"{lead}按 {f.split} 分专家有可用的提升空间：下一步构建可部署的门控（MVP-2.0：只用 error 向量的统计量"
                f"预测 {f.split} 区间，软路由），并以 ρ = (R²_deployed − R²_global) / (R²_oracle − R²_global) 衡量它能保留"
                f"多少提升空间。")
    return (f"{lead}即使路由完美，按 {f.split} 分专家的增益也达不到阈值：SNR-based MoE 不值得继续，转向 Gate-4"
            f"（whitening / conditional 模型），让单个模型直接利用噪声信息。")


QUICK = "见“⚡ 核心结论速览”的关键数字表与“📎 附录”的数值结果表。"
BIN_ROWS_NOTE = "区间行的格式为“专家 / Global Ridge”；未训练专家的区间两者相同。"
ROUNDING_NOTE = "ΔR² 由未舍入的 R² 相减得到，与表中四舍五入后的 R² 之差可能相差 0.0001。"


def ci_definition(f: Facts) -> str:
    rob = f.robustness
    if rob is None:
        return "本次运行未计算置信区间（`evaluation.bootstrap: 0`）。"
    return (f"置信区间均为 95% 配对百分位 bootstrap 区间：对测试光谱有放回重采样 {format_count(rob.resamples)} 次，"
            f"训练好的模型保持不变；不包含训练噪声抽样带来的变化。")


def provenance_lines(f: Facts, root: Any, files: list[tuple[str, str]]) -> list[str]:
    prov = f.results.provenance
    if prov is None:
        return ["未记录。"]
    lines = []
    if files:
        where = f"（相对于 data.root = `{root}`）" if root else ""
        lines.append(f"- 输入文件{where}：" + SEP.join(f"{name}（{size}）" for name, size in files))
    if prov.packages:
        lines.append("- 软件版本：" + "，".join(f"{k} {v}" for k, v in prov.packages.items() if v))
    if prov.git_commit:
        lines.append(f"- git 提交：`{prov.git_commit}`")
    if prov.seeds:
        lines.append("- 随机种子：" + "，".join(f"{k} = {v}" for k, v in prov.seeds.items()))
    return lines


# ----------------------------------------------------------------------------- optional sections
def gate_intro(fallback: str) -> str:
    return (f"Oracle 路由用的是真实 SNR，部署时拿不到。可部署门控只用 error 向量的 10 个统计量，以多项 logistic 回归预测"
            f" SNR 区间，预测值 = Σ_k p_k · expert_k（软路由）；max_k p_k < {fallback} 时改用 Global Ridge。"
            f"另一个可部署基线按含噪 flux 上测得的 SNR 做硬路由。")


GATE_ROWS = {"accuracy": "门控准确率（测试集，argmax 对真实区间）", "fallback": "回退率（max p < {f} → Global Ridge）",
             "delta": "ΔR²（可部署 − Global）", "noisy": "含噪 SNR 硬路由 R²（基线）",
             "noisy_acc": "含噪 SNR 硬路由的路由准确率"}


def rho_text(rho: float | None, bar: float, why: str | None) -> str:
    if rho is None:
        return f"无定义（Oracle 没有提升空间：{why}）"
    return f"{rho:.2f} ≥ 门槛 {bar:g} ✅" if rho >= bar else f"{rho:.2f} < 门槛 {bar:g} ❌"


def rho_undefined(ci: str | None, delta: str) -> str:
    return f"ΔR² 的置信区间 {ci} 没有整体大于 0" if ci else f"ΔR² = {delta} 不大于 0"


def rho_bar(bar: float) -> str:
    return f"负责人设定的门槛：ρ ≥ {bar:g}，即可部署门控至少保留 Oracle 提升空间的 {bar:.0%}。"


GATE_FIGURE = ("### Figure 5: Gate confusion matrix", "门控的混淆矩阵：行为真实 SNR 区间，列为门控预测的区间；"
               "颜色为每行占比，格内为计数与占比，对角线加框。")


def alpha_intro(spec: str, val_file: str, fixed: str) -> str:
    return (f"`model.alpha: {spec}`：每个模型（Global Ridge 与每个专家）在验证集 `{val_file}` 上按 R² 选择 α，"
            f"只用统计量求解，不再遍历训练数据。固定 α = {fixed} 总在候选之中，因此验证集上的增益 ≥ 0。")


def alpha_flag(kind: str, **v: Any) -> str:
    return {"global": f"验证光谱只有 {v.get('n')} 条：沿用 Global Ridge 的 α",
            "edge": "⚠️ 选在候选网格的边缘",
            "few": f"⚠️ 只用 {v.get('n')} 条验证光谱选出"}[kind]


ALPHA_FIGURE = ("### Figure 6: Validation R² vs α", "每个模型的验证 R² 随 Ridge α 的变化（对数横轴），★ 为选中的 α，"
                "虚线为固定 α；纵轴范围按多数点取，落在下方之外的点画在下边缘。")


# ----------------------------------------------------------------------------- scaling curve
def scaling_intro(points: int, splits: int) -> str:
    part = "子分片" if splits > 1 else "分片"
    text = (f"对 k = 1..{points}，用前 k 个训练{part}（按列表顺序）的统计量之和重新求解 Global Ridge 和每个专家，"
            f"并在同一测试集上评分。这些点来自同一次数据遍历的分片统计量，不需要额外遍历。")
    return text + (f"每个分片在块边界上切成 {splits} 个子分片，以得到更多的点。" if splits > 1 else "")


def scaling_caption(bands: bool, fitted: bool) -> str:
    text = "左：测试 R² 随训练光谱数 N 的变化（对数横轴），含 Global Ridge、Oracle MoE 与各区间的专家；右：ΔR² 随 N 的变化与阈值线。"
    if bands:
        text += "阴影为 95% 置信区间。"
    if fitted:
        text += "点线为外推拟合。"
    return text


def scaling_trend(n0: int, n1: int, g: tuple, o: tuple, d: tuple, threshold: float) -> str:
    """How the curve moves from its first point to its last."""
    toward = abs(d[1] - threshold) < abs(d[0] - threshold)
    return (f"训练光谱从 {format_count(n0)} 条增至 {format_count(n1)} 条时，Global Ridge 的 R² 从 {format_r2(g[0])} "
            f"变为 {format_r2(g[1])}，Oracle MoE 从 {format_r2(o[0])} 变为 {format_r2(o[1])}；ΔR² 从 {format_delta(d[0])} "
            f"变为 {format_delta(d[1])}，离阈值 {threshold:g} {'越来越近' if toward else '越来越远'}。")


SCALING_NO_EXPERT = "无专家"
SCALING_EXPERT = "{name} 专家 R²"


def scaling_refused(points: int, needed: int) -> str:
    return f"只有 {points} 个点，少于 {needed} 个：不做外推。"


def scaling_fit_form() -> str:
    return "拟合 R²(N) = R²∞ − a·(N/N_max)^(−b)；下表的极限值均为外推值。"


def scaling_not_fitted(curves: list[str]) -> str:
    return f"以下曲线的点不足以确定极限（曲线平坦或噪声大），不做外推：{SEP.join(curves)}。"


def scaling_crossing(status: str | None, fit_status: str, threshold: float, n: float | None, n_ci: Any,
                     limit: float | None) -> str:
    if status in ("crosses", "falls below"):
        lo, hi = (n_ci or [None, None])
        interval = (f"，95% 区间 [{_n(lo)}, {_n(hi) if hi is not None else '∞'}" + ("]" if hi is not None else ")")
                    if n_ci else "")
        verb = "升至" if status == "crosses" else "降至"
        return f"外推：总体 ΔR² 在 N ≈ {_n(n)}{interval} 处{verb}阈值 {threshold:g}。"
    if status == "above":
        return f"外推：总体 ΔR² 在最大 N 处已高于阈值 {threshold:g}，拟合曲线此后保持在阈值之上（ΔR²∞ = {limit:+.4f}）。"
    if status == "does not cross":
        return f"外推：总体 ΔR² 不会达到阈值 {threshold:g}（拟合极限 ΔR²∞ = {limit:+.4f}）。"
    why = {"undetermined": "这些点无法确定总体 ΔR² 的极限（曲线平坦或噪声大）", "failed": "拟合未收敛"}
    return f"不外推阈值交点：{why.get(fit_status, '总体 ΔR² 的曲线没有拟合')}。"


def _n(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


SCALING_UNCERTAINTY = ("不确定度来自拟合协方差（按各点偏离曲线的散布缩放，t 分布，自由度 = 点数 − 3），不包含所有点共享的"
                       "测试集抽样误差（即每个点自身的区间）。")


# ----------------------------------------------------------------------------- small pieces of the template
SUMMARY = "一句话总结"


def spread_note(std: float) -> str:
    return f"（测试集 log g 的标准差 {std:.4f} dex）"


def coverage_row(share: str, trained: int, total: int) -> list[str]:
    return ["覆盖率（Coverage）", f"{share}（{format_count(total)} 条测试光谱中 {format_count(trained)} 条由专家预测）"]


def split_heading(split: str) -> str:
    return f"### 2. 按 {split} 划分的专家"


def split_range(split: str) -> str:
    return f"{split} 范围"


def val_r2_fixed(fixed: str) -> str:
    return f"验证 R²（α = {fixed}）"


def timings_line(items: list[tuple[str, str, str]]) -> str:
    """'`pass` 6.4 s（训练集遍历…）、…。' from (phase, time, what)."""
    return SEP.join(f"`{k}` {t}（{what}）" for k, t, what in items) + "。"


TRACK = {"threshold": "阈值", "coverage": "覆盖率", "no_expert": "无专家", "source": "来源",
         "h1": "H1（Q1: SNR 分域是否有 headroom？）"}


def per_bin_delta(items: str) -> str:
    return f"各区间的 ΔR²（专家 − Global）：{items}"


def q1_answer(passed: bool, caveated: bool, delta: str, step: str) -> str:
    return (f"> **Q1 结论**：{'是' if passed else '否'}{'（须结合下列前提）' if caveated else ''}（ΔR² = {delta}）"
            f"→ {step}")
