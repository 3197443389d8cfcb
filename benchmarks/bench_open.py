"""How long ``open_shards`` takes over many shard files: cold (their pages dropped from the page cache)
and warm, each in this process after a first open of two files (the imports).

    python benchmarks/bench_open.py [--train 1000x100] [--pixels 512] [--workdir bench-data/full]

Simulates the set once as ``bench_full.py`` does; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import bench_full as bf
from machine import cpu_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default="1000x100", help="SHARDSxROWS")
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--pixels", type=int, default=512)
    ap.add_argument("--workdir", type=Path, default=Path("bench-data/full"))
    args = ap.parse_args()
    shards, rows = (int(x) for x in args.train.lower().split("x"))
    _, paths, _ = bf.ensure_set(args.workdir, shards, rows, args.test, args.pixels)

    from snrmoe_dask import open_shards

    open_shards(paths[:2], columns=["snr"])  # the imports, outside the timings
    times = {}
    for state in ("cold", "warm"):
        if state == "cold":
            bf.cold(paths)
        start = time.perf_counter()
        open_shards(paths, columns=["snr"])
        times[f"{state}_s"] = round(time.perf_counter() - start, 3)
    print(json.dumps({"shards": len(paths), "rows": rows, "pixels": args.pixels, **times,
                      "ms_per_shard_warm": round(1000 * times["warm_s"] / len(paths), 2), "cpu": cpu_model()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
