"""A list's work shared with a forked copy of this process, for work that holds the GIL: h5py's calls
(opening a survey of small HDF5 files, about 1.6 ms a file here) and matplotlib's drawing (the figures).

Threads cannot share such work. A process can, and a forked one starts in milliseconds with everything
already imported. Forking is safe only where no other thread may hold a lock at that moment (an import,
the logging or h5py lock): :func:`map_shared` forks only a single-threaded process, on Linux, with a second
core to run on; elsewhere it is the plain loop. The two processes take the items in list order from one
queue, so that neither waits while the other has work left; this process may first spend time on work of
its own that a caller leaves for it (:func:`spare_time`: the imports a command needs later). The results,
and the first error in list order, are those of the plain loop; a child that dies or cannot send its
results costs its items computed again here.
"""

from __future__ import annotations

import array
import fcntl
import gc
import os
import pickle
import select
import signal
import sys
import termios
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Items go through a pipe as 4-byte numbers, written whole before the fork: the pipe holds 64 KiB, and a
# longer list goes in runs of consecutive items, one number a run.
MAX_TOKENS = 8192
_spare: list[Callable[[], object]] = []


def fork_is_safe() -> bool:
    """Whether this process may fork a copy of itself to share work: Linux, one thread, two cores or more."""
    return (sys.platform.startswith("linux") and hasattr(os, "fork") and threading.active_count() == 1
            and len(os.sched_getaffinity(0)) > 1)


@contextmanager
def spare_time(steps: Sequence[Callable[[], object]]) -> Iterator[None]:
    """Within this block, :func:`map_shared` runs these steps in this process (in order, each at most once
    overall) while its child starts on the items, as long as items are left; the steps must not raise. What
    it has not run is for the caller to do."""
    _spare[:] = steps
    try:
        yield
    finally:
        _spare.clear()


def _left(fd: int) -> int:
    """Bytes left to read in pipe ``fd``."""
    out = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, out)
    return out[0]


def _take(fd: int, step: int, n: int) -> Iterator[int]:
    """The item numbers of the runs read from ``fd`` until it is empty: Linux reads a pipe under its lock,
    so each read takes one whole number, and the two processes never take the same run."""
    while len(token := os.read(fd, 4)) == 4:
        first = int.from_bytes(token, "little") * step
        yield from range(first, min(first + step, n))


def _map(fn: Callable[[T], R], items: Sequence[T], fd: int, step: int) -> tuple[dict[int, R], tuple | None]:
    """{item number: fn(item)} of the runs taken from ``fd`` and the first error (number, exception), if
    any: then the rest of the queue is emptied, since nothing after that item is wanted."""
    done: dict[int, R] = {}
    for i in _take(fd, step, len(items)):
        try:
            done[i] = fn(items[i])
        except Exception as exc:  # noqa: BLE001 - the caller raises the first in list order
            while os.read(fd, 1 << 16):
                pass
            return done, (i, exc)
    return done, None


def map_shared(fn: Callable[[T], R], items: Sequence[T], min_items: int) -> list[R]:
    """``[fn(x) for x in items]``, shared with a forked child when there are at least ``min_items`` and
    :func:`fork_is_safe`: each process takes the next items in list order until none are left."""
    if len(items) < min_items or not fork_is_safe():
        return [fn(x) for x in items]
    step = -(-len(items) // MAX_TOKENS)
    queue_r, queue_w = os.pipe()
    os.write(queue_w, b"".join(k.to_bytes(4, "little") for k in range(-(-len(items) // step))))
    os.close(queue_w)  # both ends see the end of the queue once it is empty
    result_r, result_w = os.pipe()
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
        for fd in (queue_r, result_r, result_w):
            os.close(fd)
        return [fn(x) for x in items]
    if pid == 0:  # the child: its items, sent whole, then out without the parent's exit handlers
        code = 1
        try:
            os.close(result_r)
            message = _map(fn, items, queue_r, step)
            with os.fdopen(result_w, "wb") as pipe:
                pickle.dump(message, pipe, protocol=pickle.HIGHEST_PROTOCOL)
            code = 0
        finally:
            os._exit(code)
    os.close(result_w)
    reaped = False
    try:
        start = time.monotonic()
        while _spare and _left(queue_r):
            _spare.pop(0)()
        mine, error = _map(fn, items, queue_r, step)
        # the child takes items only while this process does: one that sends nothing for ten times as long
        # is stuck, not slow
        wait = 60 + 10 * (time.monotonic() - start)
        theirs = their_error = None
        with os.fdopen(result_r, "rb") as pipe:
            result_r = -1
            if select.select([pipe], [], [], wait)[0]:
                try:
                    theirs, their_error = pickle.load(pipe)
                except Exception:  # noqa: BLE001 - the child died, or its message does not load: lost
                    theirs, their_error = None, None
        if theirs is None:  # dead (killing a dead child is harmless) or stuck
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        reaped = True
        errors = [e for e in (error, their_error) if e is not None]
        first_error = min(errors, key=lambda e: e[0]) if errors else None
        done = {**mine, **(theirs or {})}
        out = []
        for i, x in enumerate(items):  # what the child took and did not send, computed here
            if first_error is not None and i == first_error[0]:
                raise first_error[1]
            out.append(done[i] if i in done else fn(x))
        return out
    finally:
        for fd in (queue_r, result_r):
            if fd >= 0:
                os.close(fd)
        if not reaped:  # an error here, a signal: the child's work is not wanted
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
