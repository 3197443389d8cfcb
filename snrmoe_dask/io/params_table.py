"""A shard's pandas params table, read through h5py's low-level calls where it is a plain frame.

``read_params`` gives what ``pandas.read_hdf(path)`` gives: the file's single pandas object. A plain
numeric frame in pandas' "fixed" format (what ``DataFrame.to_hdf`` writes by default, and the real data
set) is read here through h5py's low-level ids, about a millisecond a file; anything else through
pandas and PyTables, which cost several times more per file (docs/performance.md). Opening a survey of
thousands of small shards pays this per file, so every h5py call counts: its high-level objects cost
tens of microseconds more per read than the low-level ids used here. ``read_table`` gives the usual table
(float64 columns in one block) as a :class:`FloatTable`, one array, and makes no DataFrame of it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import pandas as pd

from ..errors import InputError


class FloatTable(NamedTuple):
    """A params table of float64 columns as its file holds it: values (N, K) and the K column names. The
    usual table, kept as one array: a DataFrame costs a tenth of a millisecond to make, and as much to
    load from a pickle, which a survey of thousands of small shards would pay per file."""

    values: np.ndarray
    columns: tuple[str, ...]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.values, columns=list(self.columns))

    def head(self, n: int) -> "FloatTable":
        """The first ``n`` rows (as ``DataFrame.head``)."""
        return FloatTable(self.values[:n], self.columns)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _pandas_groups(fid) -> list[str]:
    """The names of the groups that carry a ``pandas_type`` attribute: the pandas objects, as
    HDFStore.keys() finds them. Walks the file's objects without making an h5py object of each."""
    found: list[str] = []

    def visit(name: bytes, info) -> None:
        if info.type == h5py.h5o.TYPE_GROUP and h5py.h5a.exists(fid, b"pandas_type", obj_name=name):
            found.append(name.decode())

    h5py.h5o.visit(fid, visit, info=True)
    return found


def whole_value(obj) -> np.ndarray:
    """The whole value of a low-level dataset or attribute id (h5py's high-level objects cost tens of
    microseconds more per read, which a survey of small files pays thousands of times)."""
    out = np.empty(obj.shape, obj.dtype)
    if isinstance(obj, h5py.h5a.AttrID):
        obj.read(out)
    else:
        obj.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
    return out


def _attr(oid, name: str, default=None):
    """Attribute ``name`` of a low-level object id (text decoded), or ``default``."""
    try:
        attr = h5py.h5a.open(oid, name.encode())
    except KeyError:
        return default
    value = whole_value(attr)[()]
    return _text(value) if isinstance(value, (bytes, np.bytes_)) else value


def dataset_at(gid, name: str):
    """The low-level id of dataset ``name`` (a path) under group ``gid``; None if there is none (as for
    h5py's ``Group.get``, a broken link or an unreadable header is none)."""
    try:
        oid = h5py.h5o.open(gid, name.encode())
    except (KeyError, OSError, RuntimeError):
        return None
    return oid if isinstance(oid, h5py.h5d.DatasetID) else None


def _fixed_frame(fid) -> FloatTable | pd.DataFrame | None:
    """The single pandas DataFrame of an open file (``fid``, a low-level file id) when it is written in
    pandas' plain "fixed" format with numeric columns (what ``DataFrame.to_hdf`` writes by default), read
    straight through h5py: a FloatTable when its columns are float64 in one block; None for anything else
    (table format, text or date columns, several objects), which :func:`read_params` leaves to pandas.

    A fixed-format frame is a group with attributes pandas_type="frame", nblocks and encoding, and datasets
    axis0 (column names), axis1 (index), and per block ``block{i}_items`` (its column names) and
    ``block{i}_values`` (rows x its columns, ``transposed``). Opening PyTables for it costs far more per
    shard than this read (docs/performance.md), and h5py's low-level calls a fraction of its high-level
    ones. Only the attributes that decide the reading are read: a multi-level axis (``*_variety``
    "multi") has no axis0 or ``block{i}_items`` dataset, and the index (axis1) is not used.
    """
    groups = _pandas_groups(fid)
    if len(groups) != 1:
        return None
    g = h5py.h5o.open(fid, groups[0].encode())
    if not isinstance(g, h5py.h5g.GroupID) or _attr(g, "pandas_type") != "frame":
        return None
    blocks = int(_attr(g, "nblocks", 0))
    encoding = _attr(g, "encoding", "UTF-8")
    names, arrays = [], []
    for i in range(blocks):
        items, values = dataset_at(g, f"block{i}_items"), dataset_at(g, f"block{i}_values")
        if items is None or values is None:
            return None
        # value_type: objects or dates; shape: an empty block's placeholder
        if (h5py.h5a.exists(values, b"value_type") or h5py.h5a.exists(values, b"shape")
                or not _attr(values, "transposed", 0) or values.dtype.kind not in "fiub" or values.rank != 2
                or items.dtype.kind != "S"):
            return None
        names += [n.decode(encoding) for n in whole_value(items)]
        arrays.append(whole_value(values))
    order = dataset_at(g, "axis0")
    if not arrays or order is None or order.dtype.kind != "S":
        return None
    columns = [n.decode(encoding) for n in whole_value(order)]
    if sorted(columns) != sorted(names) or len({a.shape[0] for a in arrays}) != 1 or \
            sum(a.shape[1] for a in arrays) != len(names):
        return None
    if len(arrays) == 1 and names == columns and arrays[0].dtype == np.float64:
        return FloatTable(arrays[0], tuple(columns))
    if len(arrays) == 1 and names == columns:  # one block in order: the frame without a copy per column
        return pd.DataFrame(arrays[0], columns=columns)
    by_name = {name: a[:, j] for a, block in zip(arrays, np.split(np.array(names, dtype=object),
                                                              np.cumsum([a.shape[1] for a in arrays])[:-1]))
               for j, name in enumerate(block)}
    return pd.DataFrame({name: by_name[name] for name in columns})


def read_params(path: str | os.PathLike, fid=None) -> pd.DataFrame:
    """The shard's single pandas table, whatever its key (as ``pandas.read_hdf(path)`` does); through h5py
    (``fid``, the file already open as a low-level id, or ``path``) when it is a plain numeric fixed-format
    frame."""
    table = read_table(path, fid)
    return table.frame() if isinstance(table, FloatTable) else table


def read_table(path: str | os.PathLike, fid=None) -> FloatTable | pd.DataFrame:
    """:func:`read_params`, with a table of float64 columns in one block as a FloatTable."""
    path = Path(path)
    try:
        if fid is not None:
            frame = _fixed_frame(fid)
        else:
            with h5py.File(path, "r") as f:
                frame = _fixed_frame(f.id)
    except (OSError, KeyError, ValueError, TypeError, UnicodeDecodeError):
        frame = None  # pandas reads it, or says why it cannot
    if frame is not None:
        return frame
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pd.HDFStore(path, mode="r") as store:
                keys = store.keys()
                if len(keys) != 1:
                    what = "no pandas table" if not keys else f"{len(keys)} pandas objects {keys}"
                    raise InputError(f"{path}: expected exactly one pandas params table, found {what}")
                df = store.get(keys[0])
    except InputError:
        raise
    except Exception as exc:  # PyTables raises many types for damaged files
        raise InputError(f"{path}: cannot read the pandas params table: {exc}".splitlines()[0]) from None
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{path}: the pandas object {keys[0]} is a {type(df).__name__}, expected a DataFrame")
    return df.reset_index(drop=True)
