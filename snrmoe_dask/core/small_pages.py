"""Large arrays in ordinary (4 KiB) pages, for the arrays a solve, a cache load or a pass's sums fill.

numpy asks the kernel for transparent huge pages for every array of 4 MiB or more. The first touch
of such an array can stall while the kernel finds free 2 MiB pages and, on a VM whose host takes
free memory back (virtio-balloon free page reporting hands it whole free 2 MiB blocks), while the
host backs them again: several times slower than ordinary pages on the AVX2 VM of
docs/performance.md ("A pass's sums in ordinary pages"). Arrays filled once, or added to block
after block in order (a pass's accumulators: few, recycled by core.buffers), lose nothing to
ordinary pages. The buffers a block is read into keep numpy's huge pages: the kernel pins every
page of an O_DIRECT read, and the pass ran slower with them in ordinary ones.
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
    # the array's base is the mapping itself, as np.empty's owns its memory: views of it refer to it
    # (not to an intermediate array), which core.buffers counts on before reusing it
    return np.ndarray(shape, dtype=dtype, buffer=buffer)
