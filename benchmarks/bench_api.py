"""The library API: BinnedRidge re-fit for a new alpha from statistics in memory (the global model +
4 experts at D = 4096), and bin_statistics from zarr vs HDF5 on the same spectra (µs per spectrum).

    .venv/bin/python benchmarks/bench_api.py                 # 100,000 x 4096 (simulated once)
    .venv/bin/python benchmarks/bench_api.py --rows 20000 --pixels 1024

Prints one line per measurement and a last JSON line. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr
from machine import blas_kernel, drop_page_cache, usable_cores

from snrmoe_dask import BinnedRidge, bin_statistics, open_shards
from snrmoe_dask.engine.cluster import compute_context
from snrmoe_dask.io.simulate import count_label, simulate_set

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--pixels", type=int, default=4096)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--workers", type=int, default=usable_cores())
    ap.add_argument("--data", type=Path, default=ROOT / "bench-data" / "api")
    ap.add_argument("--refits", type=int, default=5, help="alphas timed for the re-fit")
    args = ap.parse_args()

    per_shard = args.rows // args.shards
    pattern = f"train_{count_label(per_shard)}_{{0..{args.shards - 1}}}/dataset.h5"
    data = args.data / f"{args.rows}x{args.pixels}"
    if not (data / "COMPLETE").exists():
        print(f"simulating {args.rows:,} x {args.pixels} into {data} ...", flush=True)
        simulate_set(data, train=(args.shards, per_shard), val=0, test=0, seed=3, pixels=args.pixels, progress=False)
        (data / "COMPLETE").write_text("bench_api\n")
    out: dict = {"rows": args.rows, "pixels": args.pixels, "workers": args.workers, "blas": blas_kernel(),
                 "cores": usable_cores()}
    print(f"machine: {usable_cores()} cores, BLAS {blas_kernel()}")

    ds = open_shards(pattern, root=data)
    with compute_context("threads", args.workers, progress=False) as compute:
        drop_page_cache([Path(f) for f in ds.attrs["files"]])
        start = time.perf_counter()
        hdf5 = compute(bin_statistics(ds))
        out["hdf5_us_per_spectrum"] = round((time.perf_counter() - start) / args.rows * 1e6, 2)

        store = data / "train.zarr"
        if not store.exists():
            ds.chunk({"sample": ds.flux.data.chunks[0][0]}).to_zarr(store, consolidated=False)
        zarr_files = [p for p in store.rglob("*") if p.is_file()]
        drop_page_cache(zarr_files)
        start = time.perf_counter()
        zarr = compute(bin_statistics(xr.open_zarr(store, consolidated=False)))
        out["zarr_us_per_spectrum"] = round((time.perf_counter() - start) / args.rows * 1e6, 2)
    out["identical"] = all(np.array_equal(getattr(hdf5.stats, f), getattr(zarr.stats, f))
                           for f in ("n", "s", "S", "t", "u", "q"))
    print(f"bin_statistics, cold: HDF5 {out['hdf5_us_per_spectrum']} µs/spectrum, zarr "
          f"{out['zarr_us_per_spectrum']} µs/spectrum (zarr / HDF5 = "
          f"{out['zarr_us_per_spectrum'] / out['hdf5_us_per_spectrum']:.2f}); identical statistics: {out['identical']}")

    model = BinnedRidge().fit(hdf5)
    times = []
    for alpha in np.logspace(2, 6, args.refits):
        start = time.perf_counter()
        model.set_params(alpha=float(alpha)).fit()
        times.append(time.perf_counter() - start)
    experts = sum(e is not None for e in model.experts_.values())
    out.update(refit_s=round(min(times), 3), refit_s_all=[round(t, 3) for t in times], experts=experts)
    print(f"BinnedRidge.set_params(alpha).fit(): global + {experts} experts at D = {args.pixels}: "
          f"best {min(times):.3f} s, all {', '.join(f'{t:.2f}' for t in times)} s (target <= 1.5 s)")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
