"""A list's work split with a forked copy of this process, for work that holds the GIL: h5py's calls
(opening a survey of small HDF5 files, about 2.5 ms a file here) and matplotlib's drawing (the figures).

Threads cannot share such work. A process can, and a forked one starts in milliseconds with everything
already imported. Forking is safe only where no other thread may hold a lock at that moment (an import,
the logging or h5py lock): :func:`map_halves` forks only a single-threaded process, on Linux, with a second
core to run on; elsewhere it is the plain loop. The results, and the first error in list order, are those
of the plain loop; a child that dies or cannot send its results costs its half computed again here.
"""

from __future__ import annotations

import gc
import os
import pickle
import select
import signal
import sys
import threading
import time
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def fork_is_safe() -> bool:
    """Whether this process may fork a copy of itself to share work: Linux, one thread, two cores or more."""
    return (sys.platform.startswith("linux") and hasattr(os, "fork") and threading.active_count() == 1
            and len(os.sched_getaffinity(0)) > 1)


def map_halves(fn: Callable[[T], R], items: Sequence[T], min_items: int) -> list[R]:
    """``[fn(x) for x in items]``, the second half computed in a forked child while this process computes
    the first, when there are at least ``min_items`` and :func:`fork_is_safe`."""
    if len(items) < min_items or not fork_is_safe():
        return [fn(x) for x in items]
    half = len(items) // 2
    read_end, write_end = os.pipe()
    # Frozen, the inherited objects are left alone by the child's collector: scanning them would write to
    # every page that holds one, and each such page is copied for the child (copy on write). Not when
    # something else froze objects already: unfreezing would release those too.
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    try:
        pid = os.fork()
    except OSError:  # no memory or processes to spare for the copy
        pid = -1
    if pid != 0 and freeze:
        gc.unfreeze()
    if pid < 0:
        os.close(read_end)
        os.close(write_end)
        return [fn(x) for x in items]
    if pid == 0:  # the child: its half, sent whole, then out without the parent's exit handlers
        code = 1
        try:
            os.close(read_end)
            try:
                message = ("done", [fn(x) for x in items[half:]])
            except Exception as exc:  # noqa: BLE001 - the parent raises it, or computes the half again
                message = ("error", exc)
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(message, pipe, protocol=pickle.HIGHEST_PROTOCOL)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    reaped = False
    try:
        start = time.monotonic()
        first = [fn(x) for x in items[:half]]
        # the child has as much to do: a child that sends nothing for ten times as long is stuck, not slow
        wait = 60 + 10 * (time.monotonic() - start)
        kind, value = "lost", None
        with os.fdopen(read_end, "rb") as pipe:
            read_end = -1
            if select.select([pipe], [], [], wait)[0]:
                try:
                    kind, value = pickle.load(pipe)
                except Exception:  # noqa: BLE001 - the child died or its message does not load
                    pass
        if kind == "lost":  # dead (killing a dead child is harmless) or stuck
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        reaped = True
        if kind == "error":
            raise value
        return first + (value if kind == "done" else [fn(x) for x in items[half:]])
    finally:
        if read_end >= 0:
            os.close(read_end)
        if not reaped:  # an error in this half, a signal, or a lost child: its work is not wanted
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
