"""noise.mode "expected": the statistics with the noise's exact expectation added equal the average of
the statistics over many sampled noise draws (within Monte-Carlo error), and so does the Ridge
solved from them; checked on the numpy core and through the pass layer (blockwork)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import file_blocks, fold_block_by_block
from snrmoe_dask.core.block_pass import PassResult, PassSpec
from snrmoe_dask.core.noise import NoiseSpec, add_noise
from snrmoe_dask.core.partition import make_partition
from snrmoe_dask.core.ridge import solve_ridge
from snrmoe_dask.core.snr import snr_norm
from snrmoe_dask.core.stats import BinStats
from snrmoe_dask.engine.segment import load_block
from snrmoe_dask.engine.sources import ShardFile
from snrmoe_dask.io.shards import PARAM_COLUMNS, write_shard

ROWS, PIXELS, LEVEL = 200, 16, 1.5  # level != 1 so that level and level² cannot be confused
NAMES = ("H", "L")
DRAWS, BATCHES = 2000, 40
ALPHA = 1.0
# Monte-Carlo tolerance: 5 standard errors; over ~600 compared sums a correct implementation
# exceeds it with probability ~1e-4, and the seeds are fixed anyway.
Z = 5.0
MOMENTS = ("s", "S", "u")  # the noise-dependent sums; n, t, q never see the noise


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """flux, error (ROWS, PIXELS) float32, y (ROWS,), interleaved bin_idx (ROWS,) of 2 bins."""
    rng = np.random.default_rng(11)
    flux = (1.0 + 0.1 * rng.standard_normal((ROWS, PIXELS))).astype(np.float32)
    error = (0.2 + 0.2 * rng.random((ROWS, PIXELS))).astype(np.float32)
    y = 2.5 + (flux - 1.0) @ rng.standard_normal(PIXELS) + 0.05 * rng.standard_normal(ROWS)
    return {"flux": flux, "error": error, "y": y, "bin_idx": rng.integers(0, 2, ROWS)}


def empty_stats(data) -> BinStats:
    return BinStats.zeros(NAMES, data["flux"].mean(axis=0), float(data["y"].mean()))


def expected_stats(data) -> BinStats:
    stats = empty_stats(data)
    stats.add_block(data["flux"], data["y"], data["bin_idx"], dtype=np.float64)
    stats.add_noise_variance(data["error"], data["bin_idx"], LEVEL)
    return stats


def sampled_stats(data, seed: int) -> BinStats:
    stats = empty_stats(data)
    noisy = add_noise(data["flux"], data["error"], LEVEL, seed=seed, shard=0)
    stats.add_block(noisy, data["y"], data["bin_idx"], dtype=np.float64)
    return stats


def with_moments(template: BinStats, moments: dict[str, np.ndarray]) -> BinStats:
    """template's n, t, q (identical in every draw) with the given s, S, u."""
    return BinStats(template.names, template.c, template.y0, template.n, moments["s"], moments["S"],
                    template.t, moments["u"], template.q)


def ridge_vector(stats: BinStats) -> np.ndarray:
    """(K * (D + 1),) coefficients and intercept of every bin's Ridge."""
    models = [solve_ridge(stats, ALPHA, k) for k in range(stats.n_bins)]
    return np.concatenate([np.append(m.coef_, m.intercept_) for m in models])


@pytest.fixture(scope="module")
def draws(data) -> dict:
    """Per draw s, S, u (DRAWS, ...), one full draw, and the Ridge of each batch of draws."""
    per_draw = {m: [] for m in MOMENTS}
    first = None
    for seed in range(DRAWS):
        stats = sampled_stats(data, seed)
        first = first or stats
        assert np.array_equal(stats.n, first.n) and np.array_equal(stats.q, first.q)
        for m in MOMENTS:
            per_draw[m].append(getattr(stats, m))
    per_draw = {m: np.array(v) for m, v in per_draw.items()}
    batch_means = {m: v.reshape(BATCHES, -1, *v.shape[1:]).mean(axis=1) for m, v in per_draw.items()}
    batch_ridges = np.array([ridge_vector(with_moments(first, {m: batch_means[m][b] for m in MOMENTS}))
                             for b in range(BATCHES)])
    return {"per_draw": per_draw, "single": first, "batch_ridges": batch_ridges}


def assert_within_mc_error(mean: np.ndarray, se: np.ndarray, target: np.ndarray, what: str) -> None:
    z = np.abs(mean - target) / se
    assert np.all(se > 0), what
    assert z.max() <= Z, f"{what}: worst deviation {z.max():.1f} standard errors"


# ----------------------------------------------------------------------------- numpy core
def test_expected_adds_level_squared_error_squared_on_the_diagonal_only(data):
    clean = empty_stats(data)
    clean.add_block(data["flux"], data["y"], data["bin_idx"], dtype=np.float64)
    expected = expected_stats(data)
    for k in range(len(NAMES)):
        rows = data["error"][data["bin_idx"] == k].astype(np.float64)
        added = expected.S[k] - clean.S[k]
        np.testing.assert_allclose(np.diag(added), LEVEL ** 2 * (rows ** 2).sum(axis=0), rtol=1e-12)
        assert np.array_equal(added - np.diag(np.diag(added)), np.zeros((PIXELS, PIXELS)))
    for m in ("n", "s", "t", "u", "q"):
        assert np.array_equal(getattr(expected, m), getattr(clean, m)), m


def test_expected_equals_the_average_of_sampled_draws(data, draws):
    expected = expected_stats(data)
    for m, values in draws["per_draw"].items():
        se = values.std(axis=0, ddof=1) / np.sqrt(DRAWS)
        assert_within_mc_error(values.mean(axis=0), se, getattr(expected, m), m)
    for m in ("n", "t", "q"):
        assert np.array_equal(getattr(expected, m), getattr(draws["single"], m)), m


def test_a_no_op_noise_variance_would_be_caught(data, draws):
    clean = empty_stats(data)
    clean.add_block(data["flux"], data["y"], data["bin_idx"], dtype=np.float64)
    values = draws["per_draw"]["S"]
    se = values.std(axis=0, ddof=1) / np.sqrt(DRAWS)
    # The noise-free diagonal is far outside the Monte-Carlo band: the test above has teeth.
    diagonal = np.arange(PIXELS)
    z = np.abs(values.mean(axis=0) - clean.S)[:, diagonal, diagonal] / se[:, diagonal, diagonal]
    assert z.min() > 20 * Z


def test_expected_is_not_a_single_draw(data, draws):
    expected, single = expected_stats(data), draws["single"]
    mean_s = draws["per_draw"]["S"].mean(axis=0)
    # One draw's S scatters ~sqrt(DRAWS) = 45 times more around the expectation than the average does.
    assert np.abs(single.S - expected.S).max() > 10 * np.abs(mean_s - expected.S).max()


def test_ridge_from_expected_matches_ridge_from_averaged_statistics(data, draws):
    averaged = with_moments(draws["single"], {m: v.mean(axis=0) for m, v in draws["per_draw"].items()})
    target = ridge_vector(averaged)
    # The mean of all draws is the mean of the batch means: its Ridge's MC error is the batch spread / sqrt(B).
    se = draws["batch_ridges"].std(axis=0, ddof=1) / np.sqrt(BATCHES)
    assert_within_mc_error(target, se, ridge_vector(expected_stats(data)), "ridge")
    # ... and the noise-free Ridge (no attenuation by the noise) is clearly outside that band.
    clean = empty_stats(data)
    clean.add_block(data["flux"], data["y"], data["bin_idx"], dtype=np.float64)
    assert (np.abs(ridge_vector(clean) - target) / se).max() > 4 * Z


# ----------------------------------------------------------------------------- pass layer
PASS_DRAWS = 400


@pytest.fixture(scope="module")
def shard(tmp_path_factory, data):
    rng = np.random.default_rng(5)
    params = pd.DataFrame({c: rng.random(ROWS) for c in PARAM_COLUMNS})
    path = tmp_path_factory.mktemp("expected") / "train_0" / "dataset.h5"
    return write_shard(path, np.linspace(7100.0, 8850.0, PIXELS), data["flux"], data["error"], params, chunk_rows=32)


def pass_spec(data, mode: str, seed: int = 0) -> PassSpec:
    split = float(np.median(snr_norm(data["flux"], data["error"], LEVEL)))
    bins = make_partition("snr", {}, {"H": [split, float("inf")], "L": [0.0, split]})
    return PassSpec(bins=bins, snr_method="norm", noise=NoiseSpec(LEVEL, seed, mode), c=data["flux"].mean(axis=0),
                    y0=float(data["y"].mean()), precision="float64")


def run_segment(shard, data, spec: PassSpec) -> PassResult:
    """The pass over the shard, block by block as a segment does it (upper triangle, mirrored at the end)."""
    # Blocks of 24 rows: several blocks, most starting inside a 16-row noise tile.
    blocks = file_blocks(shard, ROWS, 24)
    assert len(blocks) > 1
    return fold_block_by_block(shard, blocks, data["y"], spec)


def test_pass_expected_mode_is_the_core_expectation(shard, data):
    spec = pass_spec(data, "expected")
    result = run_segment(shard, data, spec)
    flux, error, _ = load_block(ShardFile(str(shard)), file_blocks(shard, ROWS, ROWS)[0])
    bin_idx = spec.bins.assign(snr_norm(flux, error, LEVEL))
    core = BinStats.zeros(spec.bins.names, spec.c, spec.y0)
    core.add_block(flux, data["y"], bin_idx, dtype=np.float64)
    core.add_noise_variance(error, bin_idx, LEVEL)
    assert np.array_equal(result.stats.n, core.n) and set(np.unique(bin_idx)) == {0, 1}
    for m in ("s", "S", "t", "u", "q"):
        np.testing.assert_allclose(getattr(result.stats, m), getattr(core, m), rtol=1e-10, atol=1e-10, err_msg=m)
    assert np.array_equal(result.stats.S, result.stats.S.transpose(0, 2, 1))  # mirrored


def test_pass_expected_mode_equals_the_average_of_sample_mode_passes(shard, data):
    expected = run_segment(shard, data, pass_spec(data, "expected"))
    sampled = [run_segment(shard, data, pass_spec(data, "sample", seed)) for seed in range(PASS_DRAWS)]
    np.testing.assert_array_equal(sampled[0].snr_values, expected.snr_values)  # SNR from the noise-free flux
    for m in MOMENTS:
        values = np.array([getattr(r.stats, m) for r in sampled])
        se = values.std(axis=0, ddof=1) / np.sqrt(PASS_DRAWS)
        assert_within_mc_error(values.mean(axis=0), se, getattr(expected.stats, m), f"pass {m}")
    for m in ("n", "t", "q"):
        assert np.array_equal(getattr(sampled[0].stats, m), getattr(expected.stats, m)), m
