"""The thin dask layer: one task per segment of training rows, summed in a fixed order.

Graph for shards k = 0..K-1 with segments j:

    segment(k, j) --add--> shard(k) --add--> total

Every ``add`` is a fixed left-to-right fold, so the order of the floating-point sums is part of
the graph and the numbers are identical on the threaded, process and distributed schedulers.
Only paths, row ranges and small per-row vectors (target, table SNR) travel with the tasks;
each task opens its HDF5 file itself.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from dask import delayed
from dask.base import tokenize

from .blocks import plan_segments
from .blockwork import PassResult, PassSpec, segment_pass


def _add(total: PassResult, other: PassResult) -> PassResult:
    # In place: each partial sum feeds exactly one later task, so nobody else sees the mutation,
    # and the running sum never needs a second D x D accumulator per bin.
    total += other
    return total


def _chain(parts: list, name: str):
    """Fold delayed parts left to right: ((p0 + p1) + p2) + ..."""
    total = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        total = delayed(_add, pure=True)(total, part, dask_key_name=f"{name}-add-{i}")
    return total


def shard_graphs(paths: Sequence[str], targets: Sequence[np.ndarray], table_snrs: Sequence[np.ndarray | None],
                 spec: PassSpec, block_rows: int, segment_rows: int, token: str | None = None) -> list:
    """One delayed :class:`PassResult` per training shard (in shard order).

    targets[k], table_snrs[k]: (N_k,) per shard; table SNR only used by the ``column`` method.
    """
    token = token or tokenize(list(map(str, paths)), spec.snr_method, spec.level, spec.seed, spec.c, spec.y0,
                              spec.bins.names, block_rows, segment_rows)
    segments = plan_segments([str(p) for p in paths], [len(t) for t in targets], block_rows, segment_rows)
    per_shard: list[list] = [[] for _ in paths]
    for seg in segments:
        k, lo, hi = seg[0].shard, seg[0].start, seg[-1].stop
        snr_col = None if table_snrs[k] is None or spec.snr_method != "column" else table_snrs[k][lo:hi]
        per_shard[k].append(delayed(segment_pass, pure=True)(
            seg, targets[k][lo:hi], snr_col, spec, dask_key_name=f"segment-{k}-{lo}-{token}"))
    return [_chain(parts, f"shard-{k}-{token}") for k, parts in enumerate(per_shard)]


def total_graph(shard_results: list, token: str = "total"):
    """The sum over shards, in shard order (a delayed :class:`PassResult`)."""
    return _chain(shard_results, f"total-{token}")


def run_graph(obj, compute: Callable | None = None):
    """Compute a delayed object with ``compute`` (see :mod:`snrmoe_dask.cluster`) or dask's default."""
    if compute is None:
        return obj.compute()
    return compute(obj)
