"""The one pass over the training (or validation) shards, with the per-shard statistics cache.

Builds the :class:`PassSpec` from the config, the per-shard row vectors, and one graph in which
every shard either loads its finished result from the cache or is computed from the files and
then written to the cache; the shards are then summed in shard order (see :mod:`graph`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from dask import delayed

from ..core.fold import PassResult, PassSpec
from ..engine.blocks import Block
from ..engine.graph import ShardRows, shard_graph, sum_shard, then, total_graph
from ..engine.segment import load_block
from ..errors import InputError
from ..io.shards import ShardInfo, aligned_block_rows
from .config import ExperimentConfig

log = logging.getLogger(__name__)

SEGMENT_ROWS = 65536
SHIFT_ROWS = 1024  # rows whose mean is the shift c; fixed, so c does not depend on the block size
VAL_SHARD_INDEX = 1_000_000  # seeds the validation set's noise apart from every training shard


def _shift(info: ShardInfo, clip_flux: bool) -> np.ndarray:
    """(D,) the mean repaired noise-free flux of the first rows: the fixed shift c of DESIGN.md."""
    flux, _, _ = load_block(Block(str(info.path), 0, 0, min(info.n, SHIFT_ROWS)), clip_flux)
    return flux.mean(axis=0, dtype=np.float64)


def pass_spec(cfg: ExperimentConfig, infos: Sequence[ShardInfo]) -> PassSpec:
    """The pass's parameters. The shifts c and y0 come from the first training shard only, so that
    adding shards to the list leaves the cached statistics of the others valid."""
    return PassSpec(
        bins=cfg.partition, snr_method=cfg.snr.method, level=cfg.noise.level, seed=cfg.noise.seed,
        c=_shift(infos[0], cfg.preprocessing.clip_flux),
        y0=float(infos[0].params[cfg.data.target].to_numpy(np.float64)[:SHIFT_ROWS].mean()),
        clip_flux=cfg.preprocessing.clip_flux, precision=cfg.compute.precision, noise_mode=cfg.noise.mode,
        features=cfg.evaluation.deployable_gate,
    )


def shard_rows(cfg: ExperimentConfig, info: ShardInfo, index: int) -> ShardRows:
    """Per-row vectors of one shard: target, table SNR, and the bins of a column partition."""
    params, partition = info.params, cfg.partition
    bins = None
    if not partition.is_snr:
        try:
            bins = partition.assign(partition.labels(params))
        except InputError as exc:
            raise InputError(f"{info.path}: {exc}") from None
    return ShardRows(str(info.path), index, params[cfg.data.target].to_numpy(np.float64),
                     params["snr"].to_numpy(np.float64) if "snr" in params else None, bins)


def run_pass(cfg: ExperimentConfig, spec: PassSpec, infos: Sequence[ShardInfo], compute: Callable,
             cache_dir: Path | None = None, indices: Sequence[int] | None = None, label: str = "train") -> PassResult:
    """Sum the pass over ``infos`` (shard order), loading finished shards from the cache.

    indices: the noise index of each shard (default 0..K-1, the training list positions).
    """
    block_rows = aligned_block_rows(cfg.compute.block_rows, infos[0].chunk_rows)
    indices = list(range(len(infos))) if indices is None else list(indices)
    cache = None
    if cache_dir is not None:
        from ..io.cache import ShardCache, shard_key
        cache = ShardCache(Path(cache_dir))
    parts, cached, computed = [], [], []
    for info, index in zip(infos, indices):
        rows = shard_rows(cfg, info, index)
        graph = shard_graph(rows, spec, block_rows, SEGMENT_ROWS)
        if cache is not None:
            key = shard_key(info, spec, cfg.data.target, block_rows, SEGMENT_ROWS, index)
            base = shard_key(info, replace(spec, bins=None), cfg.data.target, block_rows, SEGMENT_ROWS, index)
            meta = {"source": str(info.path), "rows": info.n, "base_key": base,
                    "names": list(spec.bins.names), "edges": _edges(spec)}
            found, groups = (key, None) if cache.path(key).exists() else _finer_entry(cache, base, spec)
            if found is not None:
                parts.append(delayed(_load_or_pass, pure=False)(cache, found, groups, key, meta, rows, spec,
                                                                block_rows, dask_key_name=f"cached-{key}"))
                cached.append(info.path.parent.name + (" (merged bins)" if groups else ""))
                continue
            graph = then(_save, graph, cache, key, meta, name=f"save-{key}")
        computed.append(info.path.parent.name)
        parts.append(graph)
    if cache is not None:
        log.info("%s pass: %d shard(s) from the cache %s, %d to compute %s", label, len(cached), cached,
                 len(computed), computed)
    return compute(total_graph(parts, name=f"{label}-total"))


def _save(result: PassResult, cache, key: str, meta: dict) -> PassResult:
    cache.save(key, result, meta)
    return result


def _edges(spec: PassSpec) -> list[list[float]] | None:
    """[[low, high], ...] of an SNR partition in bin order (None for column partitions)."""
    if not spec.bins.is_snr:
        return None
    axis = spec.bins.axes[0]
    return [[float(lo), float(hi)] for lo, hi in zip(axis.low, axis.high)]


def _finer_entry(cache, base: str, spec: PassSpec) -> tuple[str | None, dict[str, list[str]] | None]:
    """A cached result of the same shard and pass whose SNR bins merge into ``spec``'s bins.

    Each new bin must be the union of whole cached bins; the statistics then add up exactly
    (BinStats.merge), so merging bins needs no pass. Returns (key, {new bin: [cached bins]}).
    """
    edges = _edges(spec)
    if edges is None:
        return None, None
    for key, meta in cache.metas():
        if meta.get("base_key") != base or not meta.get("edges"):
            continue
        old = list(zip(meta["names"], meta["edges"]))
        groups = {}
        for name, (lo, hi) in zip(spec.bins.names, edges):
            inside = [(n, a, b) for n, (a, b) in old if lo <= a and b <= hi]
            # the cached bins tile [0, inf) without gaps, so whole bins cover [lo, hi) iff the ends match
            if not inside or min(a for _, a, _ in inside) != lo or max(b for _, _, b in inside) != hi:
                break
            groups[name] = [n for n, _, _ in inside]
        else:
            return key, groups
    return None, None


def _load_or_pass(cache, found: str, groups: dict[str, list[str]] | None, key: str, meta: dict,
                  rows: ShardRows, spec: PassSpec, block_rows: int) -> PassResult:
    """The cached result ``found`` of a shard, its bins merged into ``groups`` when given. If the file
    turns out damaged (the cache logs and drops it), the shard is summed here in the graph's order
    and cached under ``key``."""
    result = cache.load(found)
    if result is None:
        return _save(sum_shard(rows, spec, block_rows, SEGMENT_ROWS), cache, key, meta)
    if groups is not None:
        result.stats = result.stats.merge(groups)
    return result
