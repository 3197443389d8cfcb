"""The fixed order in which a pass's partial results are added, so that every scheduler gives the same bits.

Parts (per block, per segment, per shard) are added left to right in groups of :data:`CHAIN`, then the
groups in a binary tree (:func:`tree_sum`); :func:`prefix_sums` gives the sum of every first k parts with
the same bits as a pass over those k alone. Generic over what is added (``add`` is an argument): in a
run, the ``PassResult`` of ``core.block_pass``.
"""

from __future__ import annotations

import operator
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from ..errors import InputError

T = TypeVar("T")


# Parts are added left to right in groups of this many, then the groups in a binary tree: up to CHAIN
# parts (the usual number of shards) hold one running sum, as a plain left-to-right sum would, while
# many parts still reduce in parallel, in about log2(parts / CHAIN) + CHAIN add rounds.
CHAIN = 8


def tree_split(n: int) -> int:
    """Where the binary tree cuts n >= 2 groups: before group m, m the largest power of two < n."""
    return 1 << ((n - 1).bit_length() - 1)


def tree_sum(parts: Iterable[T], add: Callable[[T, T], T] = operator.add) -> T:
    """``parts`` added in the pass's fixed order: each run of :data:`CHAIN` consecutive parts left to right
    (a group), then the groups in a binary tree, the sum of groups[:m] plus the sum of groups[m:],
    m = tree_split(number of groups).

    The shape depends only on the number of parts, so every scheduler adds the same numbers in the same
    order (bit-identical sums), while groups and halves can be added at the same time. The parts are taken
    one at a time and at most log2(groups) + 2 partial sums are held. ``add`` may add into its left
    operand when every part is the caller's own.
    """
    total = None
    for _, total in prefix_sums(parts, add, at=lambda k, last: last):
        pass
    if total is None:
        raise InputError("no results to add up")
    return total


def prefix_sums(parts: Iterable[T], add: Callable[[T, T], T] = operator.add,
                at: Callable[[int, bool], bool] | None = None) -> Iterator[tuple[int, T]]:
    """(k, ``tree_sum(parts[:k])``) for k = 1, 2, ..., n, or the k where ``at(k, k == n)`` holds: each the
    same bits as a pass over the first k parts. The sums of first parts reuse the groups and tree blocks
    of the whole sum (the tree's nodes are the aligned blocks of a binary counter over the groups), with
    at most log2(k) adds of their own on the right edge. ``add`` must not change its right operand, nor
    its left one when prefixes other than the last are asked for."""
    stack: list[tuple[int, T]] = []  # complete groups' blocks: (groups summed, their sum), largest first
    partial, count = None, 0  # the current group's running sum
    parts = iter(parts)
    part = next(parts, _END)
    k = 0
    while part is not _END:
        following = next(parts, _END)
        k += 1
        partial = part if partial is None else add(partial, part)
        count += 1
        if count == CHAIN:
            size, value = 1, partial
            while stack and stack[-1][0] == size:
                below, left = stack.pop()
                size, value = size + below, add(left, value)
            stack.append((size, value))
            partial, count = None, 0
        if at is None or at(k, following is _END):
            yield k, fold_blocks([value for _, value in stack] + ([partial] if partial is not None else []), add)
        part = following


_END = object()


def fold_blocks(blocks: Sequence[T], add: Callable[[T, T], T] = operator.add) -> T:
    """The sum of the first parts from the partial sums that hold it (complete blocks of the tree, then the
    running group), added right to left: b1 + (b2 + (... + bj)). A single block is returned as it is."""
    total = blocks[-1]
    for left in reversed(blocks[:-1]):
        total = add(left, total)
    return total
