"""Shards as one lazy ``xarray.Dataset`` of dask arrays, the form every engine function takes."""

from __future__ import annotations

import operator
import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..core import card_defaults
from ..core.params import check_number
from ..errors import InputError, InvalidParameterError
from ..io.direct_io import file_identity
from ..io.params_table import FloatTable
from ..io.shards import (ERROR_KEY, FLUX_KEY, H5Rows, ShardInfo, aligned_block_rows, inspect_shards,
                         resolve_shards)
from .sources import ShardFile

# encoding key of ``flux`` / ``error`` naming the shard files they were opened from (the fast path's sign)
SHARD_FILES = "snrmoe_shard_files"
DEFAULT_BLOCK_ROWS = 4096


def open_shards(paths: str | os.PathLike | Sequence[str | os.PathLike], *, target: str | None = card_defaults.TARGET,
                block_rows: int = DEFAULT_BLOCK_ROWS, first_shard: int = 0, root: str | os.PathLike | None = None,
                max_rows: int | None = None, columns: Sequence[str] = (), chunks: str = "files"):
    """Open HDF5 shards lazily as one ``xarray.Dataset``; nothing of size N x D is read.

    Parameters
    ----------
    paths : path, pattern or list of them
        Shard files ``dataset.h5`` in the real layout; ``{a..b}`` ranges and globs are expanded,
        relative to ``root`` when given.
    target : str or None
        A params column that must exist (``log_g``); None checks none.
    block_rows : int
        Rows per dask chunk, rounded to whole HDF5 chunks: the block size of a pass over the Dataset.
    first_shard : int
        The ``shard`` coordinate of the first file (the next ones count up). Noise is drawn from
        (seed, shard, row), so two sets opened with the same first_shard get the same noise stream.
    max_rows : int, optional
        Keep only the first ``max_rows`` spectra, in file order (the last file kept is cut short).
    columns : list of str
        More params columns that must exist and hold numbers (``snr``, routing columns); the target
        must be finite. The first bad row is named (``io.shards.inspect_shard``).
    chunks : {"files", "uniform"}
        "files": each file's rows in chunks of ``block_rows``, so a file's last chunk may be shorter.
        "uniform": every chunk as long as the first, across the files (only the set's last chunk is
        shorter), as ``to_zarr`` needs: ``open_shards(..., chunks="uniform").to_zarr(store)``. A pass
        gives the same numbers on either: its blocks follow the files and the first chunk's length.

    Returns
    -------
    xarray.Dataset
        ``flux``, ``error``: (sample, pixel) float32 dask arrays chunked as ``chunks`` says;
        every params column as a (sample,) variable; coordinates ``wave`` (pixel), ``shard`` and
        ``row`` (sample: the file's position + first_shard, and the row inside the file); attrs
        ``files``. Picklable: each chunk read opens its file itself.

    Examples
    --------
    >>> import tempfile
    >>> from snrmoe_dask import open_shards, simulate_set
    >>> root = tempfile.mkdtemp()
    >>> _ = simulate_set(root, train=(2, 300), val=0, test=0, seed=1, pixels=64, progress=False)
    >>> ds = open_shards("train_300_{0..1}/dataset.h5", root=root)
    >>> ds.flux.shape, ds.flux.dtype.name, int(ds.shard.max())
    ((600, 64), 'float32', 1)
    """
    import xarray as xr
    from dask.base import tokenize

    if chunks not in ("files", "uniform"):
        raise InvalidParameterError(f"open_shards: chunks={chunks!r}: expected 'files' or 'uniform'", "chunks")
    infos = inspect_shards(resolve_shards(root, paths), target, columns)
    # absolute paths: the chunks' readers may run on workers with another working directory
    infos = [replace(i, path=i.path.absolute()) for i in infos]
    if max_rows is not None:
        infos = _first_rows(infos, max_rows)
    rows = [aligned_block_rows(block_rows, info.chunk_rows) for info in infos]
    # which versions of which files (a link and its target are one), not the paths: a stat a file
    token = tokenize([(i.layout.identity if i.layout else file_identity(os.stat(i.path)), i.n, r)
                      for i, r in zip(infos, rows)])
    flux, error = (_file_rows(key, infos, rows, token) for key in (FLUX_KEY, ERROR_KEY))
    files = [str(i.path) for i in infos]
    if chunks == "uniform":
        flux, error = flux.rechunk((flux.chunks[0][0], -1)), error.rechunk((flux.chunks[0][0], -1))
    data_vars = {"flux": (("sample", "pixel"), flux), "error": (("sample", "pixel"), error)}
    data_vars.update({str(col): ("sample", values) for col, values in _joined_params([i.table for i in infos]).items()})
    ds = xr.Dataset(data_vars, coords={
        "wave": ("pixel", infos[0].wave),
        "shard": ("sample", np.concatenate([np.full(i.n, first_shard + k, np.int64) for k, i in enumerate(infos)])),
        "row": ("sample", np.concatenate([np.arange(i.n, dtype=np.int64) for i in infos])),
    }, attrs={"files": files, "sources": [i.source or "" for i in infos]})
    for name in ("flux", "error"):
        # read by bin_statistics: the arrays are still exactly these files' rows (no selection, no
        # arithmetic) while the dask array keeps this name; then it may read the files directly
        ds[name].encoding[SHARD_FILES] = {"name": ds[name].data.name, "files": files, "rows": [i.n for i in infos],
                                          "first_shard": first_shard, "block_rows": max(rows),
                                          "layouts": [i.layout for i in infos]}
    return ds


def _file_rows(key: str, infos: list[ShardInfo], rows: list[int], token: str):
    """The (sample, pixel) float32 dask array of dataset ``key`` over the files, in chunks of ``rows[k]``
    rows of file k (the last of each file shorter). One graph built at once: an array per file joined by
    ``concatenate`` costs milliseconds a file, seconds for a survey's thousand small files."""
    import dask.array as da

    name, graph, lengths = f"{key.split('/')[-2]}-{token}", {}, []
    for info, step in zip(infos, rows):
        source = H5Rows(info.path, key, (info.n, info.d))
        for start in range(0, info.n, step):
            graph[(name, len(lengths), 0)] = (operator.getitem, source, (slice(start, min(start + step, info.n)),
                                                                         slice(None)))
            lengths.append(min(step, info.n - start))
    return da.Array(graph, name, chunks=(tuple(lengths), (infos[0].d,)), meta=np.empty((0, 0), np.float32))


def _joined_params(tables: list[FloatTable | pd.DataFrame]) -> dict[str, np.ndarray]:
    """{column: (N,) values} of the files' params tables one after another, as ``pandas.concat`` joins
    them (a column that a file lacks is NaN there); the usual float64 tables without making a DataFrame
    of each."""
    first = tables[0]
    if all(isinstance(t, FloatTable) and t.columns == first.columns for t in tables):
        columns = np.concatenate([t.values for t in tables]).T.copy()  # a column's values contiguous
        return dict(zip(first.columns, columns))
    params = pd.concat([t.frame() if isinstance(t, FloatTable) else t for t in tables], ignore_index=True)
    return {col: params[col].to_numpy() for col in params.columns}


def _first_rows(infos: list[ShardInfo], max_rows: int) -> list[ShardInfo]:
    max_rows = check_number("max_rows", max_rows, "a positive number of spectra", integer=True,
                            test=lambda n: n >= 1, error=InputError)
    out, left = [], max_rows
    for info in infos:
        if left <= 0:
            break
        n = min(info.n, left)
        out.append(replace(info, n=n, table=info.table.head(n)))
        left -= n
    return out


def shard_files(ds) -> list[Path] | None:
    """The shard files behind ``ds.flux`` and ``ds.error`` when both are still exactly their rows as
    :func:`open_shards` made them, with the shard and row coordinates it gave; else None."""
    marks = [ds[name].encoding.get(SHARD_FILES) for name in ("flux", "error")]
    if any(m is None or getattr(ds[name].data, "name", None) != m["name"] for m, name in zip(marks, ("flux", "error"))):
        return None
    if marks[0]["files"] != marks[1]["files"] or "shard" not in ds.coords or "row" not in ds.coords:
        return None
    rows, first = marks[0]["rows"], marks[0]["first_shard"]
    shard = np.repeat(np.arange(first, first + len(rows)), rows)
    row = np.concatenate([np.arange(n) for n in rows])
    if not (np.array_equal(ds["shard"].values, shard) and np.array_equal(ds["row"].values, row)):
        return None
    return [Path(f) for f in marks[0]["files"]]


def shard_sources(ds) -> list[ShardFile] | None:
    """The readers of the shard files behind ``ds`` (see :func:`shard_files`), each with the file's layout
    as :func:`open_shards` found it; else None."""
    files = shard_files(ds)
    if files is None:
        return None
    layouts = ds["flux"].encoding[SHARD_FILES].get("layouts") or [None] * len(files)
    return [ShardFile(str(f), layout) for f, layout in zip(files, layouts)]
