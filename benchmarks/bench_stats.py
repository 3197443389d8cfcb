"""The statistics pass against this machine's bound, and against scikit-learn.

    python benchmarks/bench_stats.py [--rows 200000] [--pixels 4096] [--block-rows 4096]

1. Simulates one training shard of ``--rows`` spectra under ``bench-data/`` (once; reused).
2. Measures gemm_rate and rng_rate (see ``machine.py``) and the bound of the pass.
3. Runs the one-pass statistics of config/oracle_snr.yaml on that shard (threads scheduler, one
   worker per core) and reports pass time, bound / pass (target >= 0.8) and peak RSS (<= 3 GB).
4. Fits scikit-learn's StandardScaler + Ridge (one global model) on the materialised noisy matrix
   of the largest N that fits in memory, and times our pass + solve (five models) on the same N.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from machine import (
    PeakRSS,
    best_time,
    blas_kernel,
    bound_s,
    gemm_rate,
    rng_rate,
    usable_cores,
)

from snrmoe_dask import BinnedRidge, bin_statistics, open_shards
from snrmoe_dask.engine.cluster import compute_context
from snrmoe_dask.experiment import plan
from snrmoe_dask.experiment.config_file import load_config
from snrmoe_dask.io.shards import inspect_shards
from snrmoe_dask.io.simulate import count_label, simulate_set

ROOT = Path(__file__).resolve().parent.parent
GB = 1024 ** 3


def shard(data: Path, rows: int, pixels: int) -> Path:
    """One simulated training shard of ``rows`` spectra (simulated once, then reused)."""
    path = data / f"train_{count_label(rows)}_0" / "dataset.h5"
    if not path.exists():
        print(f"simulating {rows:,} x {pixels} into {path.parent} ...", flush=True)
        simulate_set(data, train=(1, rows), val=0, test=0, seed=7, pixels=pixels, progress=False)
    return path


def experiment(path: Path, block_rows: int, workers: int):
    """The card's config pointed at one shard."""
    return load_config(ROOT / "config" / "oracle_snr.yaml", [
        f"data.root={path.parent.parent}", f"data.train_shards=[{path.parent.name}/dataset.h5]",
        f"data.test_file={path.parent.name}/dataset.h5", f"data.feature_dim={inspect_shards([path])[0].d}",
        f"compute.block_rows={block_rows}", f"compute.workers={workers}"])


def our_pass(path: Path, block_rows: int, workers: int) -> tuple[float, float, float, object]:
    """(pass seconds, solve seconds for global + every bin, peak RSS bytes, the statistics)."""
    cfg = experiment(path, block_rows, workers)
    ds = open_shards([path], target=cfg.data.target, block_rows=block_rows)
    gc.collect()
    with PeakRSS() as rss, compute_context("threads", workers, progress=False) as compute:
        start = time.perf_counter()
        train = compute(bin_statistics(ds, **plan.pass_options(cfg)))
        pass_s = time.perf_counter() - start
    start = time.perf_counter()
    model = BinnedRidge(**plan.model_options(cfg)).fit(train)
    return pass_s, time.perf_counter() - start, rss.peak, (cfg, model)


def sklearn_rows(pixels: int) -> int:
    """Largest N whose float32 matrix, StandardScaler copy and Ridge's centred copy fit in 70 % of free RAM."""
    free = psutil.virtual_memory().available * 0.7
    return int(free // (3 * pixels * 4) // 8192 * 8192)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--pixels", type=int, default=4096)
    ap.add_argument("--block-rows", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=usable_cores())
    ap.add_argument("--data", type=Path, default=ROOT / "bench-data")
    ap.add_argument("--sklearn-rows", type=int, default=None, help="N for the scikit-learn comparison (default: largest that fits)")
    ap.add_argument("--skip-sklearn", action="store_true")
    args = ap.parse_args()

    path = shard(args.data, args.rows, args.pixels)
    gemm, rng = gemm_rate(args.block_rows, args.pixels), rng_rate()
    bound = bound_s(args.rows, args.pixels, gemm, rng)
    print(f"machine: {usable_cores()} cores, gemm_rate {gemm / 1e9:.0f} GFLOP/s (float32 X.T@X on "
          f"{args.block_rows}x{args.pixels}), rng_rate {rng / 1e6:.0f} M/s (float32, 1 thread); BLAS {blas_kernel()}")
    our_pass(path, args.block_rows, args.workers)  # warm the page cache and the allocator
    pass_s, solve_s, peak, (cfg, _) = our_pass(path, args.block_rows, args.workers)
    print(f"pass: N={args.rows:,} D={args.pixels} block_rows={args.block_rows} workers={args.workers}: "
          f"{pass_s:.2f} s; bound {bound:.2f} s; bound/pass = {bound / pass_s:.3f} (target >= 0.8); "
          f"peak RSS {peak / GB:.2f} GB (target <= 3); solve 5 models {solve_s:.2f} s")
    if args.skip_sklearn:
        return 0

    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = min(args.sklearn_rows or sklearn_rows(args.pixels), args.rows)
    small = path if n == args.rows else shard(args.data / "sklearn", n, args.pixels)
    from bench_full import materialise

    x, y, _ = materialise(inspect_shards([small], cfg.data.target), cfg)
    model = make_pipeline(StandardScaler(), Ridge(alpha=cfg.model.alpha))
    sk_s = best_time(lambda: model.fit(x, y), repeat=1)
    ours_pass, ours_solve, _, (_, fitted) = our_pass(small, args.block_rows, args.workers)
    ours = ours_pass + ours_solve
    ref = model.predict(x[:2000])
    mine = fitted.global_.predict(x[:2000])
    print(f"scikit-learn StandardScaler+Ridge, 1 model, N={n:,} in memory: {sk_s:.2f} s; ours from the files "
          f"(pass + 5 models): {ours:.2f} s; sklearn/ours = {sk_s / ours:.2f}; max |dpred| / std(y) "
          f"= {np.abs(ref - mine).max() / y.std():.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
