"""Float64 buffers of Gram accumulators, handed on once nobody can read them any more.

A pass makes one (K, D (D + 1) / 2) accumulator per segment and one per sum of two results; a fresh
one costs the kernel a page fault and a page clear on every page (in ordinary pages: see
:mod:`~snrmoe_dask.core.small_pages`). Here a buffer goes back to a small pool only when the object
that owned it has been garbage-collected and no view of its memory survives: a value that a dask
task returned is never recycled while another task, a persisted result or a client can still read
it. The pool keeps buffers only while pass tasks run in this process (:func:`pass_running`), so
nothing is held once a pass is over.
"""

from __future__ import annotations

import sys
import threading
import weakref
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from . import small_pages

_KEEP = 2  # buffers kept per process: enough for the accumulators that end while others start
_lock = threading.Lock()
_pool: list[np.ndarray] = []
_running = 0  # pass tasks running in this process


def _references_when_unshared() -> int:
    """sys.getrefcount of a buffer inside its finaliser when only its dying owner (which keeps it as an
    attribute, as GramTiles does) and the finaliser refer to it: no view, no other holder."""
    seen: list[int] = []

    class Owner:
        pass

    owner = Owner()
    owner.data = np.empty(1)
    weakref.finalize(owner, lambda b: seen.append(sys.getrefcount(b)), owner.data)
    del owner
    return seen[0]


_UNSHARED = _references_when_unshared()


def _give_back(buffer: np.ndarray) -> None:
    # a view (a tile someone kept, a slice) holds a reference to its base: such a buffer is never reused
    if sys.getrefcount(buffer) != _UNSHARED:
        return
    # Never wait: the collector runs finalisers in whichever thread allocates, also one that holds the
    # lock (inside owned_buffer), and waiting there would hang that thread, and the exit, for good.
    if not _lock.acquire(blocking=False):
        return
    try:
        if _running and len(_pool) < _KEEP:
            _pool.append(buffer)
    finally:
        _lock.release()


def owned_buffer(owner: object, shape: tuple[int, int], zero: bool) -> np.ndarray:
    """A float64 array of ``shape`` for ``owner``'s sole use, which ``owner`` keeps as an attribute: a
    pooled buffer when one fits, else a new one (zeroed when ``zero``). It returns to the pool when
    ``owner`` is garbage-collected and no view of it survives."""
    with _lock:
        found = next((i for i, b in enumerate(_pool) if b.shape == shape), None)
        buffer = _pool.pop(found) if found is not None else None
    if buffer is None:
        buffer = small_pages.empty(shape)
    if zero:
        buffer.fill(0.0)
    weakref.finalize(owner, _give_back, buffer).atexit = False  # at exit there is no next accumulator
    return buffer


@contextmanager
def pass_running() -> Iterator[None]:
    """Marks a pass task running in this process: while any does, freed buffers are kept for the
    next accumulators; when the last one ends, the kept buffers are released."""
    global _running
    with _lock:
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if not _running:
                _pool.clear()


def pooled() -> int:
    """How many buffers the pool holds now (for tests)."""
    with _lock:
        return len(_pool)
