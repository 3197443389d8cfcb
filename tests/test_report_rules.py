"""Every sentence of the report is a rule over the numbers: for constructed results (the cases of issue
24 among them), which sentences appear and which do not, the premises in the summary and the tracking
blocks, the language of the body, and the report's length at the card's defaults."""

from __future__ import annotations

import copy
import re

import pytest

from report_cases import SIMULATED, make_results, one_m_style, ten_k_fail, with_gate
from snrmoe_dask.report import rules
from snrmoe_dask.report.facts import build_facts
from snrmoe_dask.report.prose import en, zh
from snrmoe_dask.report.text import body_of, render_report
from snrmoe_dask.report.tracking import hub_block, roadmap_block


def kinds(statements) -> list[str]:
    return [s.kind for s in statements]


def insight(results, kind):
    return next((s for s in rules.insights(build_facts(results)) if s.kind == kind), None)


def premise(results, kind):
    return next((s for s in rules.premises(build_facts(results)) if s.kind == kind), None)


def section(text: str, heading_start: str) -> str:
    return text.split(heading_start, 1)[1].split("\n---\n", 1)[0]


# ----------------------------------------------------------------------------- claims within the numbers
def test_the_1m_report_claims_nothing_its_intervals_do_not_support():
    """Issue: "所有训练了 expert 的 bin 上，expert 都不差于 Global" while bin X's MAE is worse and the
    intervals of H, L and X include 0."""
    results = one_m_style()
    found = kinds(rules.insights(build_facts(results)))
    assert "expert_better_everywhere" not in found
    assert [b.name for b in insight(results, "within_noise")["bins"]] == ["H", "L", "X"]
    assert [b.name for b in insight(results, "mae_disagrees")["bins"]] == ["X"]
    assert insight(results, "expert_worse") is None  # no interval lies below 0
    zh_text, en_text = render_report(results, "zh"), render_report(results, "en")
    assert "都不差于" not in zh_text and "at least as good" not in en_text
    assert "H、L、X 区间的 ΔR² 置信区间包含 0" in zh_text
    assert "In bins H, L and X the ΔR² interval includes 0" in en_text
    assert "MAE 专家 0.8580、Global Ridge 0.8413 dex" in zh_text  # per-bin global MAE shown beside the expert's
    assert "| - Bin X (SNR < 2) | 0.3094 / 0.2517 | 0.8580 / 0.8413 | 1.0300 / 1.0450 |" in en_text


def test_expert_not_worse_everywhere_only_when_every_interval_and_error_agrees():
    results = one_m_style()
    for name, spec in results["bins"].items():
        spec["delta_r2_ci"] = [0.001, 0.09]
        spec["expert"]["mae"] = spec["global"]["mae"] - 0.01
        spec["expert"]["rmse"] = spec["global"]["rmse"] - 0.01
    assert insight(results, "expert_better_everywhere") is not None
    assert "专家都不差于 Global Ridge" in render_report(results, "zh")
    worse_rmse = copy.deepcopy(results)
    worse_rmse["bins"]["L"]["expert"]["rmse"] = 0.9
    assert insight(worse_rmse, "expert_better_everywhere") is None
    no_interval = copy.deepcopy(results)
    for spec in no_interval["bins"].values():
        del spec["delta_r2_ci"]
    assert insight(no_interval, "expert_better_everywhere") is None  # point estimates never claim "everywhere"


def test_a_worse_expert_is_named_by_its_interval_or_as_a_point_estimate():
    results = make_results("PASS")
    results["bins"]["L"]["delta_r2_ci"] = [-0.03, -0.001]
    statement = insight(results, "expert_worse")
    assert [b.name for b in statement["bins"]] == ["L"] and statement["interval"]
    for spec in results["bins"].values():
        spec.pop("delta_r2_ci", None)
    statement = insight(results, "expert_worse")
    assert [b.name for b in statement["bins"]] == ["L"] and not statement["interval"]
    assert "按点估计，L 区间的专家不如 Global Ridge" in render_report(results, "zh")


def test_predictions_that_regress_or_leave_the_training_range_are_said():
    results = one_m_style()
    text = render_report(results, "en")
    assert "the slope of predicted on true log g is Global Ridge 0.44, the Oracle MoE 0.47" in text
    assert "outside the training targets' range [1.00, 5.00]: Global Ridge 2.1% (predictions from -0.06 to 6.52)" in text
    assert "RMSE (Global / Oracle) | 0.9000 / 0.8710 dex (the test targets' standard deviation: 1.2000 dex)" in text
    results["diagnostics"]["models"]["global"].update(slope=0.95, outside_train_range=0.0)
    results["diagnostics"]["models"]["oracle"].update(slope=0.97, outside_train_range=0.0)
    assert insight(results, "shrinkage") is None and insight(results, "outside_range") is None


# ----------------------------------------------------------------------------- premises
def test_simulated_data_qualifies_the_summary_the_conclusion_and_the_blocks():
    results = one_m_style()
    for lang, words, lead in (("zh", "输入文件是模拟数据", "在这批模拟光谱上"), ("en", "The input files are simulated",
                                                                   "On these simulated spectra")):
        text = render_report(results, lang)
        glance = section(text, zh.HEADINGS["glance"] if lang == "zh" else en.HEADINGS["glance"])
        assert lead in glance and words in glance and SIMULATED in glance
        conclusion = section(text, zh.HEADINGS["conclusion"] if lang == "zh" else en.HEADINGS["conclusion"])
        assert ("若上述前提成立" if lang == "zh" else "If the premises above hold") in conclusion
        for block in (roadmap_block(results, lang), hub_block(results, lang)):
            assert words in block
    real = one_m_style()
    for file in real["provenance"]["files"]:
        file["source"] = None
    assert premise(real, "simulated") is None
    assert "模拟" not in section(render_report(real, "zh"), zh.HEADINGS["glance"])


def test_the_robustness_is_stated_once_and_a_small_test_set_is_a_premise():
    results = one_m_style()  # CI [+0.013, +0.049] includes the threshold
    assert premise(results, "not_robust").warn
    for lang in ("zh", "en"):
        text = render_report(results, lang)
        said = "不稳健" if lang == "zh" else "not robust"
        assert text.count(said) == 1
        assert "**Robustness:**" not in text
    robust = make_results("PASS")
    assert not premise(robust, "robust").warn and rules.caveats(build_facts(robust)) == []
    assert "✅ 判定稳健" in render_report(robust, "zh") and "若上述前提成立" not in render_report(robust, "zh")


def test_models_at_the_same_edge_of_the_alpha_grid_are_named_in_one_phrase():
    """All five models at alpha = 1e4, the grid's lowest, were listed one by one, the edge repeated five times."""
    results = ten_k_fail()
    alpha = results["alpha"]
    expert = {**alpha["global"], "source": "validation"}
    alpha["experts"] = {name: dict(expert) for name in "LMH"}
    alpha["experts"]["X"] = {**expert, "alpha": 1e6, "val_r2": 0.0301}  # the other edge: a phrase of its own
    zh_text, en_text = render_report(results, "zh"), render_report(results, "en")
    assert ("(Global Ridge and the experts of bins L, M and H at α = 10,000 (the grid's lowest); the bin X expert "
            "at α = 1,000,000 (the grid's highest))") in en_text
    assert "Global Ridge 与 L、M、H 区间的专家 α = 10,000（网格下端）；X 区间的专家 α = 1,000,000（网格上端）" in zh_text
    assert en_text.count("the grid's lowest") == zh_text.count("网格下端") == 1


def test_the_10k_fail_states_its_premises_and_only_what_its_figures_show():
    """Issue: the FAIL on 10,000 spectra with alpha chosen at the edge of its grid, no bootstrap, and R²
    still climbing was written as the final word; the scaling section described bands and fits it lacked."""
    results = ten_k_fail()
    assert kinds(rules.caveats(build_facts(results))) == ["no_interval", "simulated", "alpha_edge", "still_rising"]
    zh_text, en_text = render_report(results, "zh"), render_report(results, "en")
    assert "Global Ridge α = 10,000（网格下端）" in zh_text
    assert "from 8,000 to 10,000 training spectra, R² still rose (Global Ridge from 0.1370 to 0.1560" in en_text
    for text, bands, fits, undetermined in ((zh_text, "阴影", "点线为外推拟合", "无法确定 | — |"),
                                            (en_text, "Bands", "Dotted", "undetermined | — |")):
        scaling = section(text, "## 📈")
        assert bands not in scaling and fits not in scaling and undetermined not in scaling
    assert "ΔR² goes from -0.0180 to -0.0600, further from the 0.02 threshold" in en_text
    assert "离阈值 0.02 越来越远" in zh_text
    for block in (roadmap_block(results, "en"), hub_block(results, "en")):
        assert "No confidence interval" in block and "edge of its candidate grid" in block and "Not saturated" in block


def test_a_fixed_alpha_is_a_premise_when_experts_lose_to_the_global_model():
    results = make_results("FAIL")
    results["bins"]["L"]["delta_r2_ci"] = [-0.03, -0.001]
    statement = premise(results, "alpha_untuned")
    assert statement["bins"] == ["L"] and statement["alpha"] == 100000.0
    assert "α 固定为 100,000，未在验证集上调节" in render_report(results, "zh")
    assert premise(make_results("FAIL"), "alpha_untuned") is None  # no expert worse: no premise


def test_negative_r2_brings_the_cards_troubleshooting_advice():
    results = one_m_style()
    results["bins"]["X"]["expert"]["r2"] = -0.079
    statement = premise(results, "negative_r2")
    assert statement["found"] == [("X", "expert", -0.079)]
    zh_text = render_report(results, "zh")
    assert "⚠️ 出现负 R²（比直接预测均值还差）：X 区间的专家（-0.0790）；按卡片的故障排除，应检查特征缩放与正则化。" in zh_text
    row = next(line for line in section(zh_text, zh.HEADINGS["checks"]).splitlines() if line.startswith("| R² 为负"))
    assert "X 区间的专家（-0.0790）" in row
    assert premise(one_m_style(), "negative_r2") is None


def test_a_deployed_model_above_the_oracle_is_said_and_the_oracle_is_not_called_an_upper_bound():
    """Issue: the goal called the oracle ΔR² "the upper bound" while the deployed MoE beat it (0.2831 vs
    0.2799; bins H and X too)."""
    results = make_results("PASS")
    results["models"]["oracle"]["r2"], results["models"]["global"]["r2"] = 0.2799, 0.2387
    results["delta_r2"] = 0.2799 - 0.2387
    results = with_gate(results, 0.2831, {"H": 0.70, "X": 0.32, "M": 0.70, "L": 0.49})
    statement = premise(results, "deployed_above_oracle")
    assert [n for n, _, _ in statement["bins"]] == ["X"]  # H has no expert; M and L are below theirs
    text = render_report(results, "zh")
    assert "Deployed MoE（可部署门控）的 R²（0.2831）高于 Oracle MoE（0.2799），X 区间亦然" in text
    assert "上限（headroom）" not in text and "能达到的上限" not in text
    assert premise(with_gate(results, 0.25, {}), "deployed_above_oracle") is None


def test_the_fisher_check_flags_by_interval_checks_both_models_and_skips_simulated_data():
    """Issue: the check flagged L and X as suspicious and dismissed its own flag; it flagged an expert R²
    within noise while the global model's in the same bin went unchecked."""
    results = one_m_style()
    check = next(s for s in rules.checks(build_facts(results)) if s.kind == "check_ceilings")
    assert not check["applies"] and check["simulated"]  # simulated: the ceilings are the real data's
    for file in results["provenance"]["files"]:
        file["source"] = None
    x = results["bins"]["X"]
    x["expert"].update(r2=0.0227, r2_ci=[-0.03, 0.07])
    x["global"].update(r2=0.1154, r2_ci=[0.07, 0.16])
    check = next(s for s in rules.checks(build_facts(results)) if s.kind == "check_ceilings")
    flagged = [(n, m) for n, m, *_ in check["above"]]
    assert ("X", "global") in flagged and ("X", "expert") not in flagged
    text = render_report(results, "zh")
    assert "可疑" not in text
    assert "X 区间的 Global Ridge 0.1154 [0.0700, 0.1600] 高于上限 0" in text


def test_the_troubleshooting_table_always_shows_the_repair_counts():
    results = make_results("PASS")
    row = next(line for line in render_report(results, "en").splitlines() if line.startswith("| NaN in the SNR"))
    assert "train 0 / 0 / 0; test 0 / 0 / 0" in row
    results["repairs"]["error_nonpositive"] = 12
    assert rules.checks(build_facts(results))[1].warn
    del results["test_repairs"]
    row = next(line for line in render_report(results, "zh").splitlines() if line.startswith("| SNR 计算出现 NaN"))
    assert "训练集 12 / 0 / 0；测试集未记录" in row


def test_rounding_is_noted_only_when_the_shown_numbers_disagree():
    results = make_results("PASS")  # 0.5041 - 0.4629 = 0.0412: agrees
    assert en.ROUNDING_NOTE not in render_report(results, "en")
    results["models"]["oracle"]["r2"] = 0.49384
    results["models"]["global"]["r2"] = 0.46296
    results["delta_r2"] = 0.49384 - 0.46296  # shown 0.4938 - 0.4630 = 0.0308, but ΔR² shows +0.0309
    assert en.ROUNDING_NOTE in render_report(results, "en")


# ----------------------------------------------------------------------------- language and length
ENGLISH_IN_ZH = re.compile(r"\b(?:expert|experts|bin|bins|shard|shards|pass|coverage|soft routing|gate)\b", re.I)


def zh_body_words(text: str) -> list[str]:
    """English words of the zh body that are not names: code, tables' card labels, file names, figure
    titles (the card's, English) and the model names are left out."""
    body = body_of(text).split("\n---\n", 1)[1]
    body = re.sub(r"`[^`]*`|Deployable Gate|Decision Gate|Gate-\d|（Coverage）", " ", body)  # the card's own names
    body = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", body)
    body = "\n".join(line for line in body.splitlines() if not line.startswith("### Figure"))
    return ENGLISH_IN_ZH.findall(body)


@pytest.mark.parametrize("case", [make_results("PASS"), make_results("FAIL"), one_m_style(), ten_k_fail(),
                                  with_gate(make_results("PASS"), 0.5, {})])
def test_the_zh_body_speaks_chinese(case):
    text = render_report(case, "zh")
    assert zh_body_words(text) == []
    for block in (roadmap_block(case, "zh"), hub_block(case, "zh")):
        assert ENGLISH_IN_ZH.findall(re.sub(r"`[^`]*`|Deployable Gate|Gate-\d", " ", block)) == []


def test_both_languages_have_the_same_words_defined():
    public = {name for name in dir(zh) if not name.startswith("_")} - {"annotations"}
    assert public == {name for name in dir(en) if not name.startswith("_")} - {"annotations"}
    assert set(zh.HEADINGS) == set(en.HEADINGS) and set(zh.LABELS) == set(en.LABELS)


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("case", ["1m", "worst"])
def test_the_report_is_short_at_the_cards_defaults(case, lang):
    """At the card's defaults (4 bins, bootstrap, no gate, alpha or scaling): a body of at most 120
    non-empty lines and at most 220 lines in all, even with every premise that can hold there."""
    results = one_m_style()
    if case == "worst":
        results["bins"]["X"]["expert"]["r2"] = -0.079  # negative R²
        results["bins"]["L"]["delta_r2_ci"] = [-0.02, -0.001]  # an expert worse: alpha untuned
        results["bins"]["H"]["n_test"] = 31  # a small bin
        results["repairs"] = {"flux_negative": 10, "error_nan": 5, "error_nonpositive": 2}
    facts = build_facts(results)
    assert len(rules.caveats(facts)) >= (4 if case == "worst" else 2)
    text = render_report(results, lang)
    body = body_of(text)
    assert len([line for line in body.splitlines() if line.strip()]) <= 120
    assert len(text.splitlines()) <= 220


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_each_fact_appears_once(lang):
    results = one_m_style()
    results["provenance"]["config"] = results["config"]
    text = render_report(results, lang)
    assert text.count("train_200k_0/dataset.h5") == 1  # the shard paths: the appendix only
    assert text.count('"evaluation": {') == 1  # the config once
    assert text.count("| Global Ridge R² |") == 1  # the key-number table once
    assert text.count("★") <= 1 + text.count("### Figure 2")  # the ★ rule said once
    assert "110.3 s" not in body_of(text)  # the run's time is no key number
