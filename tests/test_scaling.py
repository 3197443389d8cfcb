"""Scaling curves from the one pass: every point equals a run on the first k shards, the pass runs
once, sub-shards add up to their shard, the extrapolation recovers known curves and refuses too few
points, and the figure and report section are drawn from results.json alone."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from snrmoe_dask import bin_statistics, open_shards, scaling_curve, simulate_set
from snrmoe_dask.cli import main
from snrmoe_dask.core.extrapolate import MIN_POINTS, fit_curve, threshold_crossing
from snrmoe_dask.engine import graph
from snrmoe_dask.engine.blocks import plan_blocks, split_blocks
from snrmoe_dask.errors import ConfigError, InputError
from snrmoe_dask.experiment.config_file import load_config
from snrmoe_dask.core.block_pass import sum_results
from snrmoe_dask.core.sum_order import prefix_sums
from snrmoe_dask.experiment.scaling import extrapolate
from snrmoe_dask.report.scaling import FIG_SCALING, X_LABEL, scaling_figure, scaling_section
from snrmoe_dask.report.text import render_report

REPO = Path(__file__).resolve().parent.parent
PIXELS = 64
ROWS = 900  # per shard
BLOCK_ROWS = 128
FIELDS = ("n", "s", "S", "t", "u", "q")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scaling")
    simulate_set(root, train=(3, ROWS), val=300, test=400, seed=7, pixels=PIXELS, progress=False)
    return root


def args(root: Path, out: Path, last: int, *extra: str, cache: Path | None = None) -> list[str]:
    """`snrmoe run` on training shards 0..last (no cache unless given one)."""
    return ["run", str(REPO / "config" / "demo.yaml"), "-q",
            "--set", f"data.root={root}", "--set", f'data.train_shards=["train_{ROWS}_{{0..{last}}}/dataset.h5"]',
            "--set", "data.val_file=val_300/dataset.h5", "--set", "data.test_file=test_400_0/dataset.h5",
            "--set", f"data.feature_dim={PIXELS}", "--set", f"output.dir={out}",
            "--set", f"compute.block_rows={BLOCK_ROWS}", "--set", "evaluation.bootstrap=200",
            "--set", "evaluation.min_bin_samples=30",
            *(["--set", "compute.cache=false"] if cache is None else
              ["--set", f"compute.cache_dir={cache}", "--set", "compute.cache_min_gflop=0",
               "--set", "compute.cache_max_ratio=100"]), *extra]  # tiny shards: cached all the same


def results_of(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def numbers(results: dict) -> dict:
    """Everything in results.json that is a main result (not the curve, a timing, a path or a date)."""
    return {k: results[k] for k in ("decision", "delta_r2", "delta_r2_ci", "models", "bins", "snr", "repairs")}


class Folds:
    """Counts the segment tasks of a pass and the (shard, row) of every block they fold."""

    def __init__(self) -> None:
        self.calls, self.rows = 0, []

    def __call__(self, source, blocks, *a, **k):
        self.calls += 1
        self.rows += [(b.shard, r) for b in blocks for r in range(b.row0, b.row0 + b.rows)]
        return self.segment_pass(source, blocks, *a, **k)

    segment_pass = staticmethod(graph.segment_pass)


def counted_run(argv: list[str]) -> Folds:
    folds = Folds()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(graph, "segment_pass", folds)
        assert main(argv) == 0
    return folds


@pytest.fixture(scope="module")
def scaled(data, tmp_path_factory) -> tuple[Path, Folds]:
    out = tmp_path_factory.mktemp("scaled") / "res"
    return out, counted_run(args(data, out, 2, "--set", "evaluation.scaling=true"))


@pytest.fixture(scope="module")
def split(data, tmp_path_factory) -> tuple[Path, Folds]:
    out = tmp_path_factory.mktemp("split") / "res"
    return out, counted_run(args(data, out, 2, "--set", "evaluation.scaling=true",
                                 "--set", "evaluation.scaling_splits=2"))


def _same(point_value, run_value) -> None:
    if run_value is None or isinstance(run_value, (bool, str)):
        assert point_value == run_value
    elif isinstance(run_value, list):
        assert len(point_value) == len(run_value)
        for a, b in zip(point_value, run_value):
            _same(a, b)
    else:
        assert point_value == pytest.approx(run_value, rel=0, abs=1e-9)


def assert_point_equals_run(point: dict, run: dict) -> None:
    """R², ΔR² and every interval of a curve point against results.json of a separate run."""
    assert point["n_train"] == run["models"]["global"]["n_train"]
    for model in ("global", "oracle"):
        _same(point[model]["r2"], run["models"][model]["r2"])
        _same(point[model]["r2_ci"], run["models"][model]["r2_ci"])
    _same(point["delta_r2"], run["delta_r2"])
    _same(point["delta_r2_ci"], run["delta_r2_ci"])
    assert list(point["bins"]) == list(run["bins"])
    for name, b in point["bins"].items():
        r = run["bins"][name]
        assert (b["n_train"], b["skipped"]) == (r["n_train"], r["skipped"])
        for side in ("expert", "global"):
            _same(b[side]["r2"], r[side]["r2"])
            _same(b[side]["r2_ci"], r[side]["r2_ci"])
        _same(b["delta_r2"], r["delta_r2"])
        _same(b["delta_r2_ci"], r["delta_r2_ci"])


# ----------------------------------------------------------------------------- the curve
def test_every_point_equals_a_run_on_the_first_k_shards(data, scaled, tmp_path):
    out, _ = scaled
    curve = results_of(out)["scaling"]
    assert [p["n_train"] for p in curve["points"]] == [ROWS, 2 * ROWS, 3 * ROWS]
    assert curve["splits"] == 1 and [p["parts"] for p in curve["points"]] == [1, 2, 3]
    for k, point in enumerate(curve["points"], start=1):
        assert main(args(data, tmp_path / f"first{k}", k - 1)) == 0
        run = results_of(tmp_path / f"first{k}")
        assert "scaling" not in run
        assert_point_equals_run(point, run)
    # the run's own results: the in-order sum of the per-shard results is the pass's total, bit for bit
    assert numbers(results_of(out)) == numbers(results_of(tmp_path / "first3"))


def test_points_with_alpha_chosen_on_validation_equal_separate_runs(data, tmp_path):
    out = tmp_path / "auto"
    assert main(args(data, out, 1, "--set", "evaluation.scaling=true", "--set", "model.alpha=auto")) == 0
    points = results_of(out)["scaling"]["points"]
    assert main(args(data, tmp_path / "one", 0, "--set", "model.alpha=auto")) == 0
    run = results_of(tmp_path / "one")
    assert_point_equals_run(points[0], run)
    assert points[0]["global"]["alpha"] == run["models"]["global"]["alpha"]


def test_the_pass_runs_once(data, scaled, split, tmp_path):
    plain = counted_run(args(data, tmp_path / "plain", 2))
    everything = sorted((k, r) for k in range(3) for r in range(ROWS))
    for folds in (plain, scaled[1], split[1]):
        assert sorted(folds.rows) == everything  # every training row folded exactly once
    assert scaled[1].calls == plain.calls  # the same segment tasks; the curve itself reads nothing
    assert split[1].calls == 2 * plain.calls  # here one segment per shard, so one per sub-shard


def test_refuses_to_extrapolate_three_points(scaled):
    out, _ = scaled
    extrapolation = results_of(out)["scaling"]["extrapolation"]
    assert extrapolation["extrapolation"] is True and extrapolation["min_points"] == MIN_POINTS
    for fit in [*extrapolation["models"].values(), *[f for b in extrapolation["bins"].values() for f in b.values()]]:
        assert fit["status"] == "refused" and "at least 4" in fit["reason"]
    assert extrapolation["models"]["delta"]["crossing"]["status"] == "refused"
    assert "Only 3 point(s), fewer than 4: no extrapolation." in (out / "report.md").read_text() or \
        "只有 3 个点，少于 4 个：不做外推。" in (out / "report.md").read_text()


def test_splits_give_more_points_that_agree_at_shard_boundaries(scaled, split):
    whole, halves = results_of(scaled[0]), results_of(split[0])
    points = halves["scaling"]["points"]
    assert len(points) == 6 and halves["scaling"]["splits"] == 2
    assert [p["n_train"] for p in points][1::2] == [ROWS, 2 * ROWS, 3 * ROWS]
    assert np.all(np.diff([0] + [p["n_train"] for p in points]) > 0)
    for point, reference in zip(points[1::2], whole["scaling"]["points"]):
        assert_point_equals_run(point, {"models": {m: {**reference[m], "n_train": reference["n_train"]}
                                                   for m in ("global", "oracle")},
                                        **{k: reference[k] for k in ("delta_r2", "delta_r2_ci", "bins")}})
    assert halves["scaling"]["extrapolation"]["models"]["delta"]["status"] != "refused"


# ----------------------------------------------------------------------------- the API
@pytest.fixture(scope="module")
def train(data):
    return open_shards(f"train_{ROWS}_{{0..2}}/dataset.h5", root=data, block_rows=BLOCK_ROWS)


def test_in_order_sum_of_the_shards_is_the_total_bit_for_bit(train):
    total = bin_statistics(train).compute()
    parts = bin_statistics(train, per_shard=True).compute()
    first = parts[0].stats.copy()
    summed = sum_results(parts)
    for f in FIELDS:
        assert np.array_equal(getattr(summed.stats, f), getattr(total.stats, f)), f
    assert np.array_equal(summed.snr_values, total.snr_values) and summed.repairs == total.repairs
    assert all(np.array_equal(getattr(parts[0].stats, f), getattr(first, f)) for f in FIELDS)  # parts untouched
    assert [int(s.stats.n.sum()) for _, s in prefix_sums(parts)] == [ROWS, 2 * ROWS, 3 * ROWS]


@pytest.mark.parametrize("splits", [2, 3])
def test_sub_shards_add_up_to_their_shard(train, splits):
    whole = bin_statistics(train, per_shard=True).compute()
    parts = bin_statistics(train, per_shard=True, splits=splits).compute()
    assert len(parts) == splits * len(whole)
    sizes = [int(p.stats.n.sum()) for p in parts]
    assert max(sizes) - min(sizes) <= train.flux.data.chunks[0][0]  # cut on the edges of blocks of this size
    for k, shard in enumerate(whole):
        summed = sum_results(parts[k * splits:(k + 1) * splits])
        assert np.array_equal(summed.stats.n, shard.stats.n)
        # the same noise on the same rows: only the order of the float64 sums differs
        assert np.array_equal(summed.snr_values, shard.snr_values) and summed.repairs == shard.repairs
        for f in FIELDS[1:]:
            a, b = getattr(summed.stats, f), getattr(shard.stats, f)
            assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(b)), f
    # cumulative statistics at the shard boundaries equal the unsplit ones (to rounding)
    split_sums = [s.stats.S.copy() for _, s in prefix_sums(parts)][splits - 1::splits]
    for a, b in zip(split_sums, [s.stats.S.copy() for _, s in prefix_sums(whole)]):
        assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(b))


def test_split_blocks_cuts_on_block_edges_into_nearly_equal_parts():
    blocks = plan_blocks(np.zeros(1000, int), np.arange(1000), 128)[0]
    for parts in (1, 2, 3, 8):
        groups = split_blocks(blocks, parts)
        assert len(groups) == parts and all(groups)
        assert [b for g in groups for b in g] == blocks
        rows = [sum(b.rows for b in g) for g in groups]
        assert max(rows) - min(rows) <= 128
    with pytest.raises(InputError, match="shard 0: 8 block.*cannot be split into 9 parts"):
        split_blocks(blocks, 9, "shard 0")


def test_bad_splits_are_one_line_errors(data, train, tmp_path, capsys):
    with pytest.raises(ConfigError, match="splits"):
        bin_statistics(train, splits=0)
    with pytest.raises(ConfigError, match="evaluation.scaling_splits: 2 sub-shards only add points"):
        load_config(REPO / "config" / "demo.yaml", ["evaluation.scaling_splits=2"])
    assert main(args(data, tmp_path / "too-many", 0, "--set", "evaluation.scaling=true",
                     "--set", "evaluation.scaling_splits=20")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err) and [line for line in err if "error" in line] == err[-1:]
    assert re.match(r"snrmoe: error: train_900_0: \d block\(s\) of rows cannot be split into 20 parts", err[-1])


def test_log_numbers_the_points_k_of_K(train, data, caplog):
    """'scaling: point k/K' (k-th of K points), not 'point of k parts'."""
    parts = bin_statistics(train, per_shard=True).compute()
    with caplog.at_level(logging.INFO, logger="snrmoe_dask.experiment.scaling"):
        curve = scaling_curve(parts, test=open_shards("test_400_0/dataset.h5", root=data), bootstrap=0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("scaling: point")]
    assert [line.split(",")[0] for line in lines] == ["scaling: point 1/3", "scaling: point 2/3", "scaling: point 3/3"]
    assert [line.split(", ")[1] for line in lines] == [f"N={p['n_train']:,}" for p in curve["points"]]


def test_scaling_curve_refuses_what_is_not_per_shard_statistics(train, data):
    with pytest.raises(InputError, match="per_shard=True"):
        scaling_curve(bin_statistics(train), test=open_shards("test_400_0/dataset.h5", root=data))


def test_split_sub_shards_are_cached_apart(data, tmp_path, caplog):
    cache = tmp_path / "cache"
    splits = ["--set", "evaluation.scaling=true", "--set", "evaluation.scaling_splits=2"]
    assert main(args(data, tmp_path / "a", 2, *splits, cache=cache)) == 0
    assert len(list(cache.glob("*.h5"))) == 7  # 3 shards x 2 parts, and their sum (a re-solve loads one entry)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="snrmoe_dask.engine.cached_pass"):
        assert main(args(data, tmp_path / "b", 2, *splits, cache=cache)) == 0
    assert "train pass: 6 shard(s) from the cache" in caplog.text and "0 to compute" in caplog.text
    assert "part 2/2" in caplog.text
    first, second = results_of(tmp_path / "a"), results_of(tmp_path / "b")
    assert numbers(first) == numbers(second) and first["scaling"]["points"] == second["scaling"]["points"]


# ----------------------------------------------------------------------------- extrapolation
N = np.geomspace(1e3, 1e5, 8)
X = N / N[-1]


def test_fit_recovers_the_limit_of_a_known_curve():
    exact = fit_curve(N, 0.8 - 0.3 * (N / 1e3) ** -0.5, upper=1.0)
    assert exact["status"] == "fitted" and exact["extrapolation"] is True
    assert exact["inf"] == pytest.approx(0.8, abs=1e-6) and exact["b"] == pytest.approx(0.5, abs=1e-4)
    rng = np.random.default_rng(3)
    for trial in range(5):
        noisy = fit_curve(N, 0.8 - 0.3 * (N / 1e3) ** -0.5 + rng.normal(0, 0.002, len(N)), upper=1.0)
        assert noisy["status"] == "fitted"
        assert abs(noisy["inf"] - 0.8) < 0.03
        assert noisy["inf_ci"][0] <= 0.8 <= noisy["inf_ci"][1]


@pytest.mark.parametrize("curve, status, n_star", [
    (0.03 - 0.2 * (N / 1e3) ** -0.5, "crosses", 4e5),  # rises through 0.02 beyond the data
    (0.01 + 0.2 * (N / 1e3) ** -0.5, "falls below", 4e5),  # falls through it beyond the data
    (0.015 - 0.05 * (N / 1e3) ** -0.5, "does not cross", None),  # rises to a limit below it
    (0.05 - 0.01 * (N / 1e3) ** -0.5, "above", None),  # above it already, and stays
])
def test_threshold_crossing_of_known_curves(curve, status, n_star):
    crossing = threshold_crossing(fit_curve(N, curve), 0.02)
    assert crossing["status"] == status and crossing["extrapolation"] is True
    if n_star is None:
        assert crossing["n"] is None
    else:
        assert crossing["n"] == pytest.approx(n_star, rel=1e-4)
        assert crossing["n_ci"][0] <= crossing["n"] <= crossing["n_ci"][1]
    noisy = threshold_crossing(fit_curve(N, curve + np.random.default_rng(1).normal(0, 3e-4, len(N))), 0.02)
    assert noisy["status"] == status
    if n_star is not None:
        lo, hi = noisy["n_ci"]
        assert lo <= n_star and (hi is None or n_star <= hi)


def test_too_few_or_flat_points_are_not_extrapolated():
    refused = fit_curve(N[:3], 0.8 - 0.3 * X[:3] ** -0.5)
    assert refused["status"] == "refused" and "at least 4" in refused["reason"]
    assert threshold_crossing(refused, 0.02)["status"] == "refused"
    flat = fit_curve(N, 0.3 + np.random.default_rng(2).normal(0, 0.01, len(N)), upper=1.0)
    assert flat["status"] == "undetermined" and "do not pin the limit" in flat["reason"]
    with pytest.raises(InputError, match="increasing"):
        fit_curve(N[::-1], N)


# ----------------------------------------------------------------------------- figure and report
@pytest.fixture
def synthetic(scaled) -> dict:
    """results.json of a real run with a scaling section whose curves are known: ΔR² = 0.03 − 0.2·(N/1000)^−½
    crosses 0.02 at N = 400,000."""
    return synthetic_results(results_of(scaled[0]))


def synthetic_results(results: dict, points: int = 6) -> dict:
    n = np.round(np.geomspace(1e3, 1e5, points)).astype(int)
    glob = 0.6 - 0.3 * (n / 1e3) ** -0.5
    delta = 0.03 - 0.2 * (n / 1e3) ** -0.5
    curve = []
    for i in range(points):
        r2 = {"global": (glob[i], [glob[i] - 0.02, glob[i] + 0.02]),
              "oracle": (glob[i] + delta[i], [glob[i] + delta[i] - 0.02, glob[i] + delta[i] + 0.02])}
        bins = {name: {"n_train": int(n[i] * share), "skipped": i == 0 and name == "X", "alpha": 1e5,
                       "expert": {"r2": r2["oracle"][0] - off, "r2_ci": None},
                       "global": {"r2": r2["global"][0] - off, "r2_ci": None},
                       "delta_r2": delta[i], "delta_r2_ci": [delta[i] - 0.01, delta[i] + 0.01]}
                for name, share, off in (("H", 0.3, 0.0), ("M", 0.3, 0.1), ("L", 0.3, 0.2), ("X", 0.1, 0.4))}
        curve.append({"parts": i + 1, "n_train": int(n[i]), "global": {"r2": r2["global"][0], "r2_ci": r2["global"][1]},
                      "oracle": {"r2": r2["oracle"][0], "r2_ci": r2["oracle"][1]}, "delta_r2": delta[i],
                      "delta_r2_ci": [delta[i] - 0.005, delta[i] + 0.005], "bins": bins})
    results = dict(results)
    results["scaling"] = {"splits": 2, "threshold": 0.02, "bootstrap": 200, "points": curve,
                          "extrapolation": extrapolate(curve, 0.02)}
    return json.loads(json.dumps(results))  # as read back from results.json


def test_figure_names_its_axes_and_draws_the_threshold(synthetic):
    fig = scaling_figure(synthetic)
    r2_axis, delta_axis = fig.axes[:2]
    for ax in (r2_axis, delta_axis):
        assert ax.get_xscale() == "log" and ax.get_xlabel() == X_LABEL
    assert r2_axis.get_ylabel() == "Test R²" and delta_axis.get_ylabel().startswith("ΔR²")
    labels = [line.get_label() for line in r2_axis.get_lines()]
    assert {"Global Ridge", "Oracle MoE", "bin H expert", "bin X expert"} <= set(labels)
    assert any(line.get_label() == "threshold 0.02" and set(line.get_ydata()) == {0.02}
               for line in delta_axis.get_lines())
    assert len(r2_axis.collections) >= 2  # the interval bands
    assert "dotted: extrapolated fit" in fig._suptitle.get_text()


@pytest.mark.parametrize("lang, words", [("en", ["## 📈 Scaling", "Extrapolated: the overall ΔR² reaches the "
                                                  "threshold 0.02 at N ≈ 400,000", "every limit in this table is "
                                                  "an extrapolation"]),
                                         ("zh", ["## 📈 规模曲线", "外推：总体 ΔR² 在 N ≈ 400,000", "均为外推值"])])
def test_report_section_labels_the_extrapolation(synthetic, lang, words):
    text = render_report(synthetic, lang=lang)
    for word in words:
        assert word in text
    assert f"![scaling](img/{FIG_SCALING})" in text
    assert scaling_section({k: v for k, v in synthetic.items() if k != "scaling"}, lang) == []


def test_report_command_redraws_the_figure_from_results_json(split, capsys):
    out, _ = split
    figure = out / "img" / FIG_SCALING
    image = imread(figure)
    assert image.ndim == 3 and image.shape[1] > 1000 and image[..., :3].std() > 0.05
    figure.unlink()
    assert main(["report", str(out), "--lang", "en"]) == 0
    assert imread(figure).shape == image.shape
    assert "## 📈 Scaling: R² against training-set size" in (out / "report.md").read_text()
    broken = results_of(out)
    broken["scaling"]["points"] = []
    (out / "results.json").write_text(json.dumps(broken))
    assert main(["report", str(out)]) == 2
    assert "scaling.points" in capsys.readouterr().err


def test_the_curve_s_derivatives_are_those_of_finite_differences():
    from snrmoe_dask.core.extrapolate import _curve, _jacobian

    x = np.geomspace(0.01, 1.0, 9)
    for params in ([0.8, 0.3, 0.5], [0.02, -0.01, 1.7], [0.1, 2.0, 0.003]):
        step = 1e-6
        numeric = np.stack([(_curve(x, *np.add(params, step * e)) - _curve(x, *np.subtract(params, step * e)))
                            / (2 * step) for e in np.eye(3)], axis=1)
        np.testing.assert_allclose(_jacobian(x, *params), numeric, rtol=1e-6, atol=1e-9)
