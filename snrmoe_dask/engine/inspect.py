"""``snrmoe inspect``: what a shard holds, what it needs repaired, and how its SNR falls in bins."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from dask import delayed

from ..core import card_defaults
from ..core.repair import RepairCounts
from ..core.snr import Bins, snr_norm
from ..io.shards import aligned_block_rows, inspect_shard
from .blocks import Block, plan_blocks, plan_segments
from .segment import load_block
from .sources import ShardFile


def _scan(source: ShardFile, blocks: list[Block]) -> tuple[RepairCounts, np.ndarray]:
    counts, snrs = RepairCounts(), []
    for block in blocks:
        flux, error, c = load_block(source, block)
        counts = counts + c
        snrs.append(snr_norm(flux, error))
    return counts, np.concatenate(snrs)


def survey_shard(path: str | Path, compute: Callable, block_rows: int = 4096, bins: Bins | None = None) -> dict:
    """N, D, wavelength range, repairs needed, SNR quantiles and per-bin counts of one shard."""
    info = inspect_shard(path)
    bins = bins or Bins.from_mapping(card_defaults.BINS)
    rows = aligned_block_rows(block_rows, info.chunk_rows)
    blocks = plan_blocks(np.zeros(info.n, np.int64), np.arange(info.n), rows)[0]
    source = ShardFile(str(info.path), info.layout)
    parts = compute([delayed(_scan)(source, seg) for seg in plan_segments(blocks, rows, rows * 8)])
    counts = sum((p[0] for p in parts), RepairCounts())
    snr = np.concatenate([p[1] for p in parts])
    per_bin = np.bincount(bins.assign(snr), minlength=bins.n_bins)
    return {
        "path": str(info.path), "n": info.n, "pixels": info.d,
        "wave_min": float(info.wave.min()), "wave_max": float(info.wave.max()),
        "repairs": counts.to_dict(),
        "snr_quantiles": {q: float(np.quantile(snr, float(q))) for q in ("0.0", "0.1", "0.5", "0.9", "1.0")},
        "bins": {name: {"count": int(c), "share": float(c / info.n)} for name, c in zip(bins.names, per_bin)},
    }


def format_survey(summary: dict) -> str:
    """A short human-readable block for the terminal."""
    q = summary["snr_quantiles"]
    r = summary["repairs"]
    lines = [
        f"{summary['path']}",
        f"  spectra {summary['n']:,}  pixels {summary['pixels']}  wave {summary['wave_min']:.1f}-{summary['wave_max']:.1f} A",
        f"  repairs: flux<0 {r['flux_negative']:,}  error NaN {r['error_nan']:,}  error<=0 {r['error_nonpositive']:,}  "
        f"absurd flux {r['flux_absurd']:,}  absurd error {r['error_absurd']:,} pixels",
        "  SNR (||flux||/||error||): min {0:.2f}  p10 {1:.2f}  median {2:.2f}  p90 {3:.2f}  max {4:.2f}".format(
            *(q[k] for k in ("0.0", "0.1", "0.5", "0.9", "1.0"))),
        "  bins: " + "  ".join(f"{n} {b['count']:,} ({100 * b['share']:.1f}%)" for n, b in summary["bins"].items()),
    ]
    return "\n".join(lines)


def survey(paths: Sequence[str | Path], compute: Callable, block_rows: int = 4096) -> list[dict]:
    return [survey_shard(p, compute, block_rows) for p in paths]
