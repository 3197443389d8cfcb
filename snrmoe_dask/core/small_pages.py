"""Large arrays in ordinary (4 KiB) pages, for the arrays a solve or a cache load fills once.

numpy asks the kernel for transparent huge pages for every array of 4 MiB or more. The first touch
of such an array can stall while the kernel finds (and, on a VM, the host backs) free 2 MiB pages,
most of all on a machine whose memory is full of page cache; ordinary pages need no such search, so a
fresh solve's problem or a loaded cache entry fills faster in them. A pass's accumulators are not made
here: they are few, recycled, and added to block after block, and the pass ran slower with them in
ordinary pages. The measurements, and the machine they were taken on, are in docs/performance.md
("Why 3 s for a re-solve ... were out of reach").
"""

from __future__ import annotations

import mmap

import numpy as np

_SMALL = 4 << 20  # below numpy's huge-page threshold: a plain numpy array


def empty(shape: int | tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """``np.empty(shape, dtype)``, in an anonymous mapping of ordinary pages when it is large."""
    return _mapped(shape, dtype) if _nbytes(shape, dtype) >= _SMALL else np.empty(shape, dtype)


def zeros(shape: int | tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """``np.zeros(shape, dtype)``, likewise (a fresh anonymous mapping reads as zeros)."""
    return _mapped(shape, dtype) if _nbytes(shape, dtype) >= _SMALL else np.zeros(shape, dtype)


def _nbytes(shape, dtype) -> int:
    return int(np.prod(shape)) * np.dtype(dtype).itemsize


def _mapped(shape, dtype) -> np.ndarray:
    try:
        buffer = mmap.mmap(-1, _nbytes(shape, dtype), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (AttributeError, TypeError, OSError):  # no anonymous private mappings on this platform
        return np.zeros(shape, dtype)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)
