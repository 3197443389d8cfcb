"""The one-pass statistics on simulated shards: scikit-learn on the materialised noisy matrix is the
peer; the numbers do not depend on the scheduler, the worker count or (beyond rounding) the block
size; peak memory does not grow with N."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from snrmoe_dask.core.noise import add_noise
from snrmoe_dask.core.repair import repair_block
from snrmoe_dask.core.ridge import solve_ridge
from snrmoe_dask.core.snr import snr_norm
from snrmoe_dask.engine import statistics
from snrmoe_dask.engine.blocks import Block, plan_segments
from snrmoe_dask.engine.cluster import compute_context
from snrmoe_dask.engine.dataset import open_shards
from snrmoe_dask.engine.statistics import bin_statistics
from snrmoe_dask.experiment import plan
from snrmoe_dask.experiment.config_file import load_config
from snrmoe_dask.io.shards import ERROR_KEY, FLUX_KEY, inspect_shards
from snrmoe_dask.io.simulate import simulate_set

REPO = Path(__file__).resolve().parent.parent
PIXELS = 64


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("pass")
    return simulate_set(root, train=(2, 2500), val=0, test=0, seed=3, pixels=PIXELS, progress=False)


def config(paths: list[Path], **compute):
    sets = [f"data.root={paths[0].parent.parent}",
            f"data.train_shards=[{', '.join(p.parent.name + '/dataset.h5' for p in paths)}]",
            f"data.feature_dim={PIXELS}", "evaluation.bootstrap=0"]
    sets += [f"compute.{k}={v}" for k, v in compute.items()]
    return load_config(REPO / "config" / "demo.yaml", sets)


def run_pass(paths, scheduler="threads", workers=2, **compute):
    cfg = config(paths, **compute)
    ds = open_shards(paths, block_rows=cfg.compute.block_rows)
    with compute_context(scheduler, workers, progress=False) as comp:
        return cfg, comp(bin_statistics(ds, **plan.pass_options(cfg)))


def materialise(paths, cfg):
    """The noisy matrix the pass sees (N, D) float64, target (N,), bin index (N,)."""
    xs, ys, snrs = [], [], []
    for k, path in enumerate(paths):
        with h5py.File(path) as f:
            flux, error = f[FLUX_KEY][...], f[ERROR_KEY][...]
        repair_block(flux, error)
        snrs.append(snr_norm(flux, error, cfg.noise.level))
        xs.append(add_noise(flux, error, cfg.noise.level, seed=cfg.noise.seed, shard=k, row0=0))
        ys.append(inspect_shards([path])[0].params["log_g"].to_numpy())
    return np.vstack(xs).astype(np.float64), np.concatenate(ys), cfg.bins.assign(np.concatenate(snrs))


@pytest.mark.parametrize("precision, tol", [("float64", 1e-6), ("float32", 1e-4)])
def test_every_model_matches_sklearn_on_the_noisy_matrix(shards, precision, tol):
    cfg, train = run_pass(shards, precision=precision, block_rows=512)
    x, y, bins = materialise(shards, cfg)
    assert train.stats.n.tolist() == np.bincount(bins, minlength=len(cfg.bins.names)).tolist()
    for alpha in (1.0, 1e3, 1e5):
        cases = [(train.stats.total(), 0, np.ones(len(y), bool))]
        cases += [(train.stats, k, bins == k) for k in range(len(cfg.bins.names)) if (bins == k).sum() > 10]
        assert len(cases) >= 4
        for stats, k, rows in cases:
            ref = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x[rows], y[rows]).predict(x)
            ours = solve_ridge(stats, alpha, k).predict(x)
            # Relative to the prediction, floored at the target's spread: a log g near 0 is no harder.
            assert np.max(np.abs(ours - ref) / np.maximum(np.abs(ref), y.std())) <= tol, (alpha, k)


def test_statistics_identical_on_every_scheduler(shards, monkeypatch):
    # Several segments per shard, so the reduction tree has real structure.
    monkeypatch.setattr(statistics, "SEGMENT_ROWS", 1024)
    _, ref = run_pass(shards, "threads", 2, block_rows=256)
    from snrmoe_dask.core import buffers

    assert buffers.pooled() == 0  # accumulator buffers reused within the pass are freed after it
    for scheduler, workers in [("processes", 2), ("sync", 1), ("threads", 1)]:
        _, other = run_pass(shards, scheduler, workers, block_rows=256)
        for field in ("n", "s", "S", "t", "u", "q"):
            assert np.array_equal(getattr(ref.stats, field), getattr(other.stats, field)), (scheduler, field)
        assert np.array_equal(ref.snr_values, other.snr_values)


def _blocks(rows: int, block_rows: int = 4096) -> list[Block]:
    return [Block(0, r, r, min(r + block_rows, rows)) for r in range(0, rows, block_rows)]


@pytest.mark.parametrize("rows,sizes", [
    (20000, [2, 3]),            # the demo's shards: two segments, not one (a worker idled a whole shard)
    (4096, [1]),                # one block: one segment
    (8192, [1, 1]),
    (65536, [8, 8]),            # 16 blocks fit one segment, but a shard of two blocks or more gets two
    (200000, [12, 12, 12, 13]),  # the real shards: segment_rows decides, as before
])
def test_segments_keep_every_block_in_order(rows, sizes):
    blocks = _blocks(rows)
    segments = plan_segments(blocks, 4096, 65536)
    assert [len(s) for s in segments] == sizes
    assert [b for s in segments for b in s] == blocks


def test_block_size_changes_numbers_only_at_rounding(shards):
    _, a = run_pass(shards, precision="float64", block_rows=1000)
    _, b = run_pass(shards, precision="float64", block_rows=1536)
    assert np.array_equal(a.stats.n, b.stats.n)
    for field in ("s", "S", "t", "u", "q"):
        x, y = getattr(a.stats, field), getattr(b.stats, field)
        assert np.max(np.abs(x - y)) <= 1e-9 * np.max(np.abs(x)), field


def _peak_bytes(paths, block_rows: int) -> int:
    tracemalloc.start()
    try:
        run_pass(paths, "sync", 1, block_rows=block_rows)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_grow_with_n(tmp_path):
    block, d = 256, 2048
    small = simulate_set(tmp_path / "4x", train=(1, 4 * block), val=0, test=0, seed=1, pixels=d, progress=False)
    large = simulate_set(tmp_path / "16x", train=(1, 16 * block), val=0, test=0, seed=1, pixels=d, progress=False)
    p_small, p_large = _peak_bytes(small, block), _peak_bytes(large, block)
    extra_rows = 12 * block
    # Only per-row metadata may grow with N: the params table (8 float64 columns, and the copy that
    # joins the shards' tables), the target, the SNR, the shard and row coordinates: ~150 bytes a row.
    # Holding the extra flux alone would add extra_rows * d * 4 bytes (8 kB a row here).
    assert p_large - p_small <= 192 * extra_rows, (p_small, p_large)
    assert p_large - p_small < 0.05 * extra_rows * d * 4
