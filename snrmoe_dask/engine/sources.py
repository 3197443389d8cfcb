"""Where a task reads the flux and error of its blocks: a shard file (the fast path) or any array.

A source is small and picklable: it travels with the task and is read inside it, so the same graph
runs on threads, processes and a dask.distributed cluster. ``ShardFile`` reads rows of a plain HDF5
shard with O_DIRECT into reused buffers (``io.shards.RowReader``); ``ArrayRows`` reads through dask's
own chunk reads (zarr, netCDF, HDF5 through xarray, dask or numpy arrays of any chunking).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..io.shards import FileLayout, RowReader
from .blocks import Block


class RowSource(Protocol):
    name: str  # for error messages: a file path or a description of the arrays

    def read(self, block: Block, reader: RowReader | None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, D) float32 C-contiguous flux and error of the block, free to modify in place."""

    def part(self, start: int, stop: int) -> "RowSource":
        """A source of samples start:stop only, to travel with the task that reads them."""


@dataclass(frozen=True)
class ShardFile:
    """One shard file, read by row number: the block's rows ``row0:row0 + rows`` of the file."""

    name: str  # the file's path
    layout: FileLayout | None = None  # where its rows lie, as open_shards found them

    def read(self, block: Block, reader: RowReader | None) -> tuple[np.ndarray, np.ndarray]:
        return (reader or RowReader(reuse=False)).read(self.name, block.row0, block.row0 + block.rows, self.layout)

    def part(self, start: int, stop: int) -> "ShardFile":
        return self


class ArrayRows:
    """(n, D) flux and error arrays (dask or numpy) holding samples ``offset:offset + n`` of the Dataset.

    A plain class, not a dataclass: dask looks for collections inside dataclass arguments and would
    compute the whole arrays before the task; here they must stay lazy until the task reads a block.
    """

    def __init__(self, flux: Any, error: Any, offset: int, name: str = "the flux and error arrays") -> None:
        self.flux, self.error, self.offset, self.name = flux, error, int(offset), name

    def part(self, start: int, stop: int) -> "ArrayRows":
        rows = slice(start - self.offset, stop - self.offset)
        return ArrayRows(self.flux[rows], self.error[rows], start, self.name)

    def read(self, block: Block, reader: RowReader | None = None) -> tuple[np.ndarray, np.ndarray]:
        rows = slice(block.start - self.offset, block.stop - self.offset)
        flux, error = self.flux[rows], self.error[rows]
        if hasattr(flux, "compute"):
            import dask
            import dask.local

            # the task itself is the unit of parallelism: read its chunks here, in this thread (the
            # function, not the name "sync": dask would import distributed to look for a client first)
            flux, error = dask.compute(flux, error, scheduler=dask.local.get_sync)
        # a copy: repairs and noise work in place and must never touch the caller's arrays
        return np.array(flux, dtype=np.float32, order="C"), np.array(error, dtype=np.float32, order="C")
