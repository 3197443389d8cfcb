"""The pass's fixed order of adds: groups of CHAIN shards left to right, the groups in a binary tree; the same
in the dask graph, in sum_results and in the sums of first shards; adds that can run in parallel."""

from __future__ import annotations

import re

import numpy as np
import pytest

from snrmoe_dask import bin_statistics, open_shards, simulate_set, sum_results
from snrmoe_dask.core.sum_order import CHAIN, prefix_sums, tree_split, tree_sum

SHARDS = 2 * CHAIN + 3


def shape(parts):
    """The recursive definition: each group a left chain, then tree_split over the groups."""
    groups = []
    for i in range(0, len(parts), CHAIN):
        group = parts[i]
        for part in parts[i + 1:i + CHAIN]:
            group = (group, part)
        groups.append(group)

    def node(lo, hi):
        if hi - lo == 1:
            return groups[lo]
        m = lo + tree_split(hi - lo)
        return node(lo, m), node(m, hi)

    return node(0, len(groups))


def pair(a, b):
    return a, b


def test_tree_sum_and_prefix_sums_follow_the_definition():
    for n in range(1, 5 * CHAIN + 2):
        parts = list(range(n))
        assert tree_sum(parts, pair) == shape(parts), n
        assert [v for _, v in prefix_sums(parts, pair)] == [shape(parts[:k]) for k in range(1, n + 1)], n
    assert tree_sum(list(range(5)), pair) == ((((0, 1), 2), 3), 4)  # up to CHAIN shards: left to right


def test_prefix_sums_reuse_the_blocks_of_the_whole_sum():
    adds = []

    def counted(a, b):
        adds.append((a, b))
        return a, b

    n = 4 * CHAIN + 3
    list(prefix_sums(list(range(n)), counted, at=lambda k, last: last))
    alone = len(adds)
    adds.clear()
    list(prefix_sums(list(range(n)), counted))
    # every prefix reuses the groups and blocks: a few adds on its right edge each, not k - 1
    assert alone == n - 1 and len(adds) <= alone + n * (np.log2(n) + 1)


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    simulate_set(root, train=(SHARDS, 40), val=0, test=0, seed=2, pixels=16, progress=False)
    return open_shards(f"train_40_{{0..{SHARDS - 1}}}/dataset.h5", root=root, block_rows=16)


def test_the_graph_adds_in_the_same_order_and_in_parallel(many):
    lazy = bin_statistics(many)
    total = lazy.compute(scheduler="threads")
    parts = bin_statistics(many, per_shard=True).compute(scheduler="threads")
    summed = sum_results(parts)
    for f in ("n", "s", "S", "t", "u", "q"):
        assert getattr(total.stats, f).tobytes() == getattr(summed.stats, f).tobytes(), f
        left_to_right = getattr(sum(parts).stats, f)
        assert np.allclose(left_to_right, getattr(total.stats, f), rtol=1e-12, atol=1e-12), f
    assert np.array_equal(total.snr_values, summed.snr_values)
    # the adds above the shards: CHAIN - 1 in each full group, then a binary tree over the groups
    names = [str(k) for k in dict(lazy.__dask_graph__())]
    groups = -(-SHARDS // CHAIN)
    assert sum(1 for k in names if re.fullmatch(r".*-group-\d+-add-\d+", k)) == SHARDS - groups
    assert sorted(k.rsplit("-", 2)[1:] for k in names if re.fullmatch(r"train-total-[0-9a-f]+-\d+-\d+", k)) == \
        sorted([["0", str(groups)], ["0", "2"]])  # 3 groups: (g0 + g1) + g2


def test_reduce_graph_has_the_order_and_the_prefixes_of_tree_sum(monkeypatch):
    """The dask graph against core.sum_order, on parts that record how they were added; node names say which
    groups they sum."""
    import dask
    from dask import delayed

    from snrmoe_dask.core.sum_order import fold_blocks
    from snrmoe_dask.engine import graph

    monkeypatch.setattr(graph, "add_into", lambda a, b, *after: (a, b))
    for n in (1, 5, CHAIN, CHAIN + 1, 6 * CHAIN, 7 * CHAIN + 2):
        parts = [delayed((i,), name=f"p{i}") for i in range(n)]
        readers = {k: (lambda blocks: delayed(lambda *b: fold_blocks(b, pair))(*blocks)) for k in range(1, n + 1)}
        total, read = graph.reduce_graph(parts, "x", readers)
        got_total, got_read = dask.compute(total, read, scheduler="sync")
        assert got_total == tree_sum([(i,) for i in range(n)], pair)
        assert got_read == dict(prefix_sums([(i,) for i in range(n)], pair)), n
        if n == 6 * CHAIN:
            names = sorted(k for k in dict(total.__dask_graph__()) if isinstance(k, str) and re.fullmatch(r"x-\d+-\d+", k))
            assert names == ["x-0-2", "x-0-4", "x-0-6", "x-2-4", "x-4-6"]
