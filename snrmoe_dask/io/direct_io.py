"""Byte runs of a file read straight into numpy memory with O_DIRECT (no page cache, no copy), or
through the page cache where that is better (files just fetched whole).

A buffered read of a file larger than memory costs the CPU twice: the kernel copies every page
into the process, and must evict an older page to cache each new one. Measured on the 2-core
development box, cold: ~1.2 CPU-seconds per GB buffered, ~0.05 with O_DIRECT (the device writes
into the buffer), and 3.2 GB/s against 0.8 GB/s. On a 2-core machine that is a quarter of a
core for the whole pass.

O_DIRECT wants the file offset, the length and the buffer address aligned (``ALIGN`` = 4096
covers 512- and 4096-byte devices), while the data of an HDF5 dataset starts anywhere. So the
buffer is placed at the data's phase: each run is read as the aligned window around it, which
lands in the buffer with the run's bytes exactly where they belong. The window's head overlaps
the end of the run before it: those few bytes are saved and put back. A run of another phase is
read into a scratch window and copied.
"""

from __future__ import annotations

import errno
import os
from typing import Sequence

import numpy as np

ALIGN = 4096
SCRATCH_BYTES = 1 << 22  # a run that cannot be read in place goes through the scratch buffer this much at a time


class DirectUnsupported(Exception):
    """This file cannot be read with O_DIRECT here (platform, file system or alignment): read it buffered."""


class FileChanged(Exception):
    """The file at this path is not the version whose layout the runs were taken from: read it afresh."""


def file_identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """(device, inode, size, mtime in ns): what tells one version of a file from another without reading it."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _floor(x: int) -> int:
    return x - x % ALIGN


def _ceil(x: int) -> int:
    return -(-x // ALIGN) * ALIGN


class RunBuffer:
    """A growable byte buffer that can hand out a region starting at any phase modulo ALIGN."""

    def __init__(self) -> None:
        self._raw = np.empty(0, dtype=np.uint8)
        self._scratch: RunBuffer | None = None

    def scratch(self) -> "RunBuffer":
        """A second buffer kept with this one, for runs that cannot be read in place (SCRATCH_BYTES at a
        time): a fresh one per run cost a page fault and a page clear on every page it touched (about a
        gigabyte per 100,000 spectra of 4096 pixels whose chunks lie at other phases)."""
        if self._scratch is None:
            self._scratch = RunBuffer()
        return self._scratch

    def region(self, nbytes: int, phase: int) -> tuple[np.ndarray, int]:
        """(raw, start): raw[start:start + nbytes] is free to use, with address(raw[start]) % ALIGN == phase,
        and ALIGN spare bytes on either side of it for the aligned windows."""
        need = nbytes + 3 * ALIGN
        if self._raw.size < need:
            self._raw = np.empty(need, dtype=np.uint8)
        start = ALIGN + (phase - self._raw.ctypes.data) % ALIGN
        return self._raw, start


def _pread_full(fd: int, view: memoryview, offset: int, need: int, direct: bool = True) -> None:
    """Read into ``view`` from ``offset`` until at least ``need`` bytes have come (a window may pass the file's end)."""
    done = 0
    while done < need:
        try:
            got = os.preadv(fd, [view[done:]], offset + done)
        except OSError as exc:
            if direct and exc.errno == errno.EINVAL:  # alignment this device or file system does not accept
                raise DirectUnsupported(str(exc)) from None
            raise
        if got <= 0:
            raise OSError(errno.EIO, f"file ends {need - done} bytes before the data at offset {offset + done}")
        done += got
        if direct and done < need and done % ALIGN:
            raise DirectUnsupported(f"short unaligned read ({got} bytes) at offset {offset}")


def read_runs(path: str | os.PathLike, runs: Sequence[tuple[int, int]], buffer: RunBuffer | None = None, *,
              direct: bool = True, identity: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The bytes of ``runs`` [(file offset, nbytes), ...] one after the other: a (sum nbytes,) uint8 array.

    The array is a view of ``buffer`` (valid until the buffer's next use) or of a new buffer. With
    ``direct=False`` the runs are read through the page cache. With an ``identity``, raises FileChanged
    (before reading) when the file at ``path`` is no longer that version (:func:`file_identity`).
    Raises DirectUnsupported where O_DIRECT cannot be used, OSError for real read errors.
    """
    flag = getattr(os, "O_DIRECT", None) if direct else 0
    if flag is None:
        raise DirectUnsupported("this platform has no O_DIRECT")
    total = sum(n for _, n in runs)
    buffer = buffer or RunBuffer()
    raw, start = buffer.region(total, runs[0][0] % ALIGN if runs else 0)
    try:
        fd = os.open(path, os.O_RDONLY | flag)
    except OSError as exc:
        if direct and exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # e.g. tmpfs
            raise DirectUnsupported(str(exc)) from None
        raise
    try:
        if identity is not None and file_identity(os.fstat(fd)) != identity:
            raise FileChanged(f"{path} changed since its layout was read")
        whole = memoryview(raw)
        pos = start
        for offset, nbytes in runs:
            head = offset % ALIGN
            window = _ceil(head + nbytes)
            if not direct:
                _pread_full(fd, whole[pos:pos + nbytes], offset, nbytes, direct=False)
            elif (raw.ctypes.data + pos - offset) % ALIGN == 0:
                saved = raw[pos - head:pos].copy() if pos > start else None  # the end of the previous run
                _pread_full(fd, whole[pos - head:pos - head + window], _floor(offset), head + nbytes)
                if saved is not None:
                    raw[pos - head:pos] = saved
            else:  # through the scratch buffer, a piece at a time: it stays small
                scratch, at = buffer.scratch().region(min(nbytes, SCRATCH_BYTES) + ALIGN, 0)
                for done in range(0, nbytes, SCRATCH_BYTES):
                    piece, size = offset + done, min(SCRATCH_BYTES, nbytes - done)
                    head = piece % ALIGN
                    _pread_full(fd, memoryview(scratch)[at:at + _ceil(head + size)], _floor(piece), head + size)
                    raw[pos + done:pos + done + size] = scratch[at + head:at + head + size]
            pos += nbytes
    finally:
        os.close(fd)
    return raw[start:start + total]
