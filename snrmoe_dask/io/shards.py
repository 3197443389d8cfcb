"""Shard file backend: find, validate, open lazily, read row blocks, write.

The only module that knows the HDF5 layout of a shard (described in ``docs/data.md``):

    spectrumdataset/wave          float32 (D,)
    dataset/arrays/flux/value     float32 (N, D)
    dataset/arrays/error/value    float32 (N, D)
    one pandas object (any key)   N rows, columns T_eff, log_g, M_H, a_M, C_M, mag, redshift, snr

Everything here is file access; the numerics live elsewhere. Like xarray's backends, the lazy
arrays hold only a path and a key and open the file inside each read, so a graph built on
them pickles and runs under processes and on a dask.distributed cluster.

One module, though over 500 lines: the layout's checks, its readers and its writer are one
specification of the file (the keys, dtypes and chunking each side must agree on). The pandas params
table, whose format is pandas' own, is read by ``io.params_table``.
"""

from __future__ import annotations

import glob
import numbers
import os
import re
import stat
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import h5py
import numpy as np
import pandas as pd

from ..errors import InputError
from .direct_io import DirectUnsupported, FileChanged, RunBuffer, file_identity, read_runs
from .forked import map_shared
from .params_table import FloatTable, dataset_at, read_table, whole_value

FLUX_KEY = "dataset/arrays/flux/value"
ERROR_KEY = "dataset/arrays/error/value"
WAVE_KEY = "spectrumdataset/wave"
PARAMS_KEY = "params"
SOURCE_ATTR = "source"  # root attribute: where the spectra come from (written by the simulator)
PARAM_COLUMNS = ("T_eff", "log_g", "M_H", "a_M", "C_M", "mag", "redshift", "snr")

_BRACE = re.compile(r"\{(-?\d+)\.\.(-?\d+)\}")


# ----------------------------------------------------------------------------- finding files
def expand_braces(pattern: str) -> list[str]:
    """``train_200k_{0..4}/dataset.h5`` -> five patterns, in numeric order (nested ranges too)."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    lo, hi = int(m.group(1)), int(m.group(2))
    step = 1 if hi >= lo else -1
    out: list[str] = []
    for i in range(lo, hi + step, step):
        out.extend(expand_braces(pattern[: m.start()] + str(i) + pattern[m.end():]))
    return out


def resolve_shards(root: str | os.PathLike | None, patterns: str | Sequence[str]) -> list[Path]:
    """Paths of the shards named by brace ranges and globs, relative to ``root``, in the given order.

    A literal path must exist; a glob must match at least one file. Every path must be a regular
    file (a folder, FIFO or device is refused: opening a FIFO would wait for a writer forever).
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    base = Path(root) if root not in (None, "") else Path(".")
    paths: list[Path] = []
    for pattern in patterns:
        for expanded in expand_braces(str(pattern)):
            full = base / expanded
            if glob.has_magic(expanded):
                hits = sorted(glob.glob(str(full)))
                if not hits:
                    raise InputError(f"{full}: no file matches this pattern")
                paths.extend(check_regular_file(Path(h)) for h in hits)
            else:
                paths.append(check_regular_file(full))
    if not paths:
        raise InputError(f"no shard given (patterns {list(patterns)!r} under {base})")
    return paths


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def check_regular_file(path: Path) -> Path:
    """``path`` if it is a regular file (or a link to one); InputError naming what it is otherwise."""
    try:
        mode = path.stat().st_mode  # follows links; never opens the file, so a FIFO cannot block here
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot access: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
        raise InputError(f"{path}: is {kind}, expected an HDF5 shard file")
    return path


def refuse_duplicates(groups: Mapping[str, Sequence[Path]]) -> None:
    """Refuse a file named twice, within a group or across groups (``{"data.train_shards": [...], ...}``).

    Two names are the same file when they resolve to one inode (links and ``..`` included).
    """
    seen: dict[tuple[int, int], tuple[str, int, Path]] = {}
    for group, paths in groups.items():
        for position, path in enumerate(paths):
            st = path.stat()
            first = seen.setdefault((st.st_dev, st.st_ino), (group, position, path))
            if first[:2] == (group, position):
                continue
            other_group, other_position, other = first
            where = (f"positions {other_position} and {position} of {group}" if other_group == group
                     else f"{other_group} (position {other_position}) and {group}")
            same = "" if other == path else f" (as {other})"
            raise InputError(f"{path}: the same file is listed twice{same}: {where}; each file may appear once")


# ----------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class ShardInfo:
    """What opening a shard learns without reading its arrays."""

    path: Path
    n: int  # spectra
    d: int  # pixels
    chunk_rows: int  # rows per HDF5 chunk (the whole array if contiguous)
    wave: np.ndarray  # (D,) float
    table: FloatTable | pd.DataFrame  # the params, N rows (the usual float64 table as one array)
    source: str | None = None  # the file's own account of its spectra (see read_source)
    layout: "FileLayout | None" = None  # where its rows lie, when a read may skip HDF5 (see FileLayout)

    @property
    def params(self) -> pd.DataFrame:
        """The params table as a DataFrame."""
        return self.table.frame() if isinstance(self.table, FloatTable) else self.table


# A file of more chunks is read through HDF5 per block: one open per block of thousands of rows costs
# nothing next to its products, and its layout would weigh on every task that carries it.
LAYOUT_CHUNKS = 64


@dataclass(frozen=True)
class FileLayout:
    """Where a shard's flux and error rows lie in its file, taken when it was opened, and which version of
    the file that was (:func:`io.direct_io.file_identity`): its rows are then read by offset, without
    opening the file through HDF5 again (which holds the GIL for about a millisecond a file)."""

    identity: tuple[int, int, int, int]
    n: int  # rows
    row_bytes: int
    chunk_rows: int  # rows per chunk (n if contiguous)
    offsets: tuple[tuple[int, ...], tuple[int, ...]]  # byte offset of each chunk of flux, of error

    def runs(self, dataset: int, start: int, stop: int) -> list[tuple[int, int]]:
        """[(file offset, nbytes), ...] of rows start:stop of flux (``dataset`` 0) or error (1)."""
        first = start - start % self.chunk_rows
        offsets = self.offsets[dataset][first // self.chunk_rows:]
        return _merged_runs(offsets, first, self.chunk_rows, self.row_bytes, start, stop)


def _file_layout(fid, flux, error) -> FileLayout | None:
    """The layout of an open shard (``fid``, ``flux``, ``error``: low-level file and dataset ids) whose
    flux and error are plain float32 rows in the same chunking, of at most LAYOUT_CHUNKS chunks; None
    otherwise."""
    n = flux.shape[0]
    found = [_row_chunks(ds, 0, n, LAYOUT_CHUNKS) for ds in (flux, error)]
    if found[0] is None or found[1] is None or found[0][0] != found[1][0]:
        return None
    try:
        identity = file_identity(os.fstat(fid.get_vfd_handle()))
    except (OSError, ValueError, TypeError):  # a driver without one file descriptor
        return None
    return FileLayout(identity, n, flux.shape[1] * 4, found[0][0], (tuple(found[0][1]), tuple(found[1][1])))


@contextmanager
def _h5open(path: Path) -> Iterator[h5py.h5f.FileID]:
    """The file open read-only as a low-level id (h5py's File object costs 0.2 ms more a file to open and
    close, which a survey of thousands of small shards pays in turn)."""
    check_regular_file(path)
    try:
        fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY)
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file (truncated or another format): {exc}") from None
    try:
        yield fid
    finally:
        fid.close()


def _datasets(fid) -> list[str]:
    names: list[str] = []
    h5py.File(fid).visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


# Datasets of flux and error must hold floats of these sizes; the O_DIRECT reader takes native
# float32 and h5py converts the others on read.
FLOAT_SIZES = (2, 4, 8)


def _check_float(path: Path, key: str, ds) -> None:
    if ds.dtype.kind != "f" or ds.dtype.itemsize not in FLOAT_SIZES:
        raise InputError(f"{path}: {key} has dtype {ds.dtype}; expected float16, float32 or float64 "
                         "(other types are not converted silently)")


def _numeric_column(path: Path, table: FloatTable | pd.DataFrame, column: str, *, target: bool) -> None:
    """Check a params column the run reads and store it as float64 in ``table``.

    The target must be finite; ``snr`` must be >= 0 (+inf allowed: it goes to the top bin); a
    routing column must not be NaN (its bins may reach +-inf). InputError names the first bad row.
    """
    if isinstance(table, FloatTable):
        raw = values = table.values[:, table.columns.index(column)]
        numeric = True
    else:
        raw = table[column]
        numeric = raw.dtype == np.float64  # the usual table: checked in place, no copy
        values = raw.to_numpy() if numeric else pd.to_numeric(raw, errors="coerce").to_numpy(np.float64,
                                                                                            na_value=np.nan)
    if target:
        bad, expected = ~np.isfinite(values), "a finite number"
    elif column == "snr":
        bad, expected = ~(values >= 0), "an SNR >= 0"  # NaN compares False
    else:
        bad, expected = np.isnan(values), "a number"
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        value = raw[row] if isinstance(table, FloatTable) else raw.iloc[row]
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        what = f"value {value}" if number else f"{value!r} is not a number"
        raise InputError(f"{path}: params column {column!r} row {row}: {what}; expected {expected} "
                         f"({int(bad.sum())} of {len(values)} rows are bad)")
    if not numeric:
        table[column] = values


def inspect_shard(path: str | os.PathLike, target: str | None = "log_g", columns: Sequence[str] = ()) -> ShardInfo:
    """Validate a shard's layout and read its small parts (wave, params). Arrays are not read.

    Flux and error must be float arrays; the ``target`` column (None: no target) and the other params
    ``columns`` a run reads (``snr``, routing columns) must hold numbers (see :func:`_numeric_column`);
    they are stored as float64 in ``params``.
    """
    path = Path(path)
    with _h5open(path) as f:
        flux, error, wave = found = [dataset_at(f, k) for k in (FLUX_KEY, ERROR_KEY, WAVE_KEY)]
        missing = [k for k, ds in zip((FLUX_KEY, ERROR_KEY, WAVE_KEY), found) if ds is None]
        if missing:
            present = ", ".join(_datasets(f)) or "none"
            raise InputError(f"{path}: missing dataset {missing[0]} (datasets present: {present})")
        shape = flux.shape
        if flux.rank != 2:
            raise InputError(f"{path}: {FLUX_KEY} has shape {shape}, expected (spectra, pixels)")
        if error.shape != shape:
            raise InputError(f"{path}: {ERROR_KEY} has shape {error.shape} but {FLUX_KEY} has {shape}")
        _check_float(path, FLUX_KEY, flux)
        _check_float(path, ERROR_KEY, error)
        n, d = shape
        if n == 0:
            raise InputError(f"{path}: {FLUX_KEY} has 0 rows, expected at least one spectrum")
        if wave.shape != (d,):
            raise InputError(f"{path}: {WAVE_KEY} has shape {wave.shape}, expected ({d},) to match {d} pixels")
        wave_values = np.asarray(whole_value(wave), dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(wave_values))
        if len(bad):  # checked here, so that the grid comparison across shards blames the file that is wrong
            raise InputError(f"{path}: {WAVE_KEY} pixel {bad[0]} is {wave_values[bad[0]]}; expected a finite "
                             f"wavelength ({len(bad)} of {d} pixels are not)")
        dcpl = flux.get_create_plist()
        chunk_rows = dcpl.get_chunk()[0] if dcpl.get_layout() == h5py.h5d.CHUNKED else n
        table = read_table(path, f)
        source = _source_attr(f)
        layout = _file_layout(f, flux, error)
    read = list(dict.fromkeys([*([target] if target is not None else []), *columns]))
    names = list(table.columns)
    for column in read:
        if column not in names:
            raise InputError(f"{path}: params table has no column {column!r} (columns: {', '.join(map(str, names))})")
    if len(table.values) != n:
        raise InputError(f"{path}: params table has {len(table.values)} rows but the arrays have {n} spectra")
    for column in read:
        _numeric_column(path, table, column, target=column == target)
    if isinstance(table, pd.DataFrame) and "snr" in names and "snr" not in columns \
            and not pd.api.types.is_numeric_dtype(table["snr"]):
        # unused by this run (not snr.method: column), but carried along with the rows: never fail on it
        table["snr"] = pd.to_numeric(table["snr"], errors="coerce")
    return ShardInfo(path=path, n=n, d=d, chunk_rows=int(chunk_rows), wave=wave_values, table=table,
                     source=source, layout=layout)


def read_source(path: str | os.PathLike) -> str | None:
    """The file's own account of where its spectra come from (root attribute ``source``, written by
    ``snrmoe simulate``); None when the file does not say (the real data set)."""
    with _h5open(Path(path)) as f:
        return _source_attr(f)


def _source_attr(fid) -> str | None:
    try:
        attr = h5py.h5a.open(fid, SOURCE_ATTR.encode())
    except KeyError:
        return None
    value = whole_value(attr)[()]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# HDF5 keeps a file's superblock and first object headers at its start and, as pandas and snrmoe write
# them, the params table at its end: asked for both ends of every file at once, the disk fetches them
# together instead of in one small read after another as each file is opened in turn.
METADATA_BYTES = 1 << 16


def prefetch(paths: Iterable[str | os.PathLike], whole_up_to: int = 0) -> None:
    """Ask the kernel to read ahead each regular file of at most ``whole_up_to`` bytes whole, and the first
    and last METADATA_BYTES of any other: a hint, so errors are ignored here (each file's own problem is
    named when it is opened)."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block here
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_size <= whole_up_to:
                advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            elif stat.S_ISREG(st.st_mode):
                advise(fd, 0, min(st.st_size, METADATA_BYTES), os.POSIX_FADV_WILLNEED)
                if st.st_size > METADATA_BYTES:
                    advise(fd, max(METADATA_BYTES, st.st_size - METADATA_BYTES), 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


# Opening costs about 1.6 ms a file under the GIL: with this many files or more, a forked copy of the
# process shares their opening (io.forked), where that is safe.
PARALLEL_OPEN_FILES = 128


def inspect_shards(paths: Iterable[str | os.PathLike], target: str | None = "log_g",
                   columns: Sequence[str] = ()) -> list[ShardInfo]:
    """Validate every shard (see :func:`inspect_shard`), and that all share one pixel count and one
    wavelength grid. Of PARALLEL_OPEN_FILES or more, a forked copy of this process opens some of them
    where that is safe (:func:`io.forked.map_shared`): the same results, and the same first error."""
    paths = list(paths)
    prefetch(paths)
    infos = map_shared(partial(inspect_shard, target=target, columns=columns), paths, PARALLEL_OPEN_FILES)
    first = infos[0]
    for other in infos[1:]:
        if other.d != first.d:
            raise InputError(f"{other.path}: {other.d} pixels but {first.path} has {first.d}")
        if not np.allclose(other.wave, first.wave, rtol=0, atol=1e-3):
            raise InputError(f"{other.path}: wavelength grid differs from that of {first.path}")
    return infos


# ----------------------------------------------------------------------------- reading
class RowReader:
    """Reads rows of flux and error from shards, with O_DIRECT where the file and its layout allow.

    With ``reuse=True`` the reader keeps its two buffers between reads, so the arrays returned by
    one :meth:`read` are valid only until the next: a block task that reads block after block then
    touches no fresh memory. Rows that are not plain float32 bytes in the file (compressed or
    filtered, chunks narrower than a row, another dtype or byte order) are read through h5py; with
    ``direct=False``, or where the file system has no O_DIRECT, the others are read through the page
    cache too. ``direct_reads`` and ``buffered_reads`` count which.
    """

    def __init__(self, reuse: bool = True, direct: bool = True) -> None:
        self._buffers = {FLUX_KEY: RunBuffer(), ERROR_KEY: RunBuffer()} if reuse else None
        self.direct = direct
        self.direct_reads = self.buffered_reads = 0

    def read(self, path: str | os.PathLike, start: int, stop: int,
             layout: FileLayout | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw flux and error of rows ``start:stop``: float32 arrays (stop - start, D); no repair. With the
        file's ``layout`` (from :func:`inspect_shard`) the rows are read by offset while the file is still
        that version, else through HDF5."""
        try:
            if layout is not None:
                start, stop, _ = slice(start, stop).indices(layout.n)
                try:
                    return self._read_runs(path, [layout.runs(i, start, stop) for i in (0, 1)], stop - start,
                                           layout.row_bytes // 4, layout.identity)
                except FileChanged:
                    pass  # rewritten since it was opened: read as it is now
            with h5py.File(path, "r") as f:
                datasets = [f[FLUX_KEY], f[ERROR_KEY]]
                start, stop, _ = slice(start, stop).indices(datasets[0].shape[0])  # as h5py would clip them
                runs = [_runs(ds, start, stop) if self.direct else None for ds in datasets]
                if any(r is None for r in runs):
                    self.buffered_reads += 1
                    return tuple(np.asarray(ds[start:stop], dtype=np.float32) for ds in datasets)
                d = datasets[0].shape[1]
            return self._read_runs(path, runs, stop - start, d)
        except DirectUnsupported:
            self.direct = False  # the same file system will refuse the next read too
            return self.read(path, start, stop, layout)

    def _read_runs(self, path, runs: list[list[tuple[int, int]]], rows: int, d: int,
                   identity: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        out = tuple(read_runs(path, r, self._buffers and self._buffers[key], direct=self.direct,
                              identity=identity).view(np.float32).reshape(rows, d)
                    for r, key in zip(runs, (FLUX_KEY, ERROR_KEY)))
        if self.direct:
            self.direct_reads += 1
        else:
            self.buffered_reads += 1
        return out


def read_rows(path: str | os.PathLike, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw flux and error of rows ``start:stop`` as new float32 arrays (stop - start, D); no repair."""
    return RowReader(reuse=False).read(path, start, stop)


def _row_chunks(ds, start: int, stop: int, max_chunks: int | None = None) -> tuple[int, list[int]] | None:
    """(rows per chunk, the byte offsets of the chunks holding rows start:stop, from the one holding
    ``start``) when the rows of a 2-D dataset (low-level id) are plain native float32 bytes in this file,
    whole rows to a chunk (a contiguous dataset: one chunk of all its rows); None otherwise, when a chunk
    was never written (HDF5 would return the fill value), or when there are more than ``max_chunks``."""
    dcpl = ds.get_create_plist()
    if dcpl.get_nfilters() or dcpl.get_external_count() or ds.dtype != np.dtype(np.float32):
        return None
    layout, (n, d) = dcpl.get_layout(), ds.shape
    if layout == h5py.h5d.CONTIGUOUS:
        offset = ds.get_offset()
        return None if offset is None or n == 0 else (n, [offset])
    if layout != h5py.h5d.CHUNKED or dcpl.get_chunk()[1] != d:  # compact (in the header), virtual
        return None
    step = dcpl.get_chunk()[0]
    rows = range(start - start % step, stop, step)
    if max_chunks is not None and len(rows) > max_chunks:
        return None
    offsets = [ds.get_chunk_info_by_coord((row, 0)).byte_offset for row in rows]
    return None if None in offsets else (step, offsets)


def _merged_runs(offsets: Sequence[int], first: int, step: int, row_bytes: int, start: int,
                 stop: int) -> list[tuple[int, int]]:
    """[(file offset, nbytes), ...] of rows start:stop, in row order, adjacent runs merged, where
    ``offsets[i]`` is the byte offset of the chunk of rows ``first + i * step``."""
    runs: list[tuple[int, int]] = []
    for offset, row in zip(offsets, range(first, stop, step)):
        a, b = max(row, start), min(row + step, stop)
        offset, nbytes = offset + (a - row) * row_bytes, (b - a) * row_bytes
        if runs and runs[-1][0] + runs[-1][1] == offset:
            runs[-1] = (runs[-1][0], runs[-1][1] + nbytes)
        else:
            runs.append((offset, nbytes))
    return runs


def _runs(ds: h5py.Dataset, start: int, stop: int) -> list[tuple[int, int]] | None:
    """[(file offset, nbytes), ...] holding rows start:stop of a 2-D dataset, in row order, adjacent runs
    merged; None when those rows are not plain native float32 bytes in this file."""
    found = _row_chunks(ds.id, start, stop)
    if found is None:
        return None
    step, offsets = found
    return _merged_runs(offsets, start - start % step, step, ds.shape[1] * 4, start, stop)


class H5Rows:
    """A picklable lazy 2-D HDF5 dataset for ``dask.array.from_array``: opens the file per read."""

    def __init__(self, path: str | os.PathLike, key: str, shape: tuple[int, int], dtype=np.float32):
        self.path, self.key = str(path), key
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), 2

    def __getitem__(self, index) -> np.ndarray:
        with h5py.File(self.path, "r") as f:
            return np.asarray(f[self.key][index], dtype=self.dtype)

    def __repr__(self) -> str:
        return f"H5Rows({self.path!r}, {self.key!r}, shape={self.shape})"


def aligned_block_rows(block_rows: int, chunk_rows: int) -> int:
    """The block size rounded to a whole number of HDF5 chunks (at least one chunk)."""
    if block_rows <= 0:
        raise InputError(f"block_rows={block_rows}: expected a positive number of rows")
    return max(chunk_rows, (block_rows // chunk_rows) * chunk_rows)


# ----------------------------------------------------------------------------- writing
class ShardWriter:
    """Write one shard in the real layout, block by block, atomically.

    Data go to ``<path>.partial`` and are renamed onto ``path`` only by :meth:`close`, so a
    crash never leaves a shard that looks complete.

        with ShardWriter(path, n, wave) as w:
            w.write(0, flux_block, error_block)   # (rows, D) each
            ...
            w.close(params)                       # DataFrame with N rows
    """

    def __init__(self, path: str | os.PathLike, n: int, wave: np.ndarray, chunk_rows: int = 256,
                 source: str | None = None):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.n, self.d = int(n), len(wave)
        chunk = (min(chunk_rows, self.n), self.d) if self.n else None
        self._file = h5py.File(self.partial, "w")
        self._file.create_dataset(WAVE_KEY, data=np.asarray(wave, dtype=np.float32))
        if source is not None:
            self._file.attrs[SOURCE_ATTR] = source
        self._flux = self._file.create_dataset(FLUX_KEY, shape=(self.n, self.d), dtype=np.float32, chunks=chunk)
        self._error = self._file.create_dataset(ERROR_KEY, shape=(self.n, self.d), dtype=np.float32, chunks=chunk)

    def write(self, start: int, flux: np.ndarray, error: np.ndarray) -> None:
        """Write rows ``start : start + len(flux)``."""
        if len(flux) == 0:
            return
        self._flux[start : start + len(flux)] = flux
        self._error[start : start + len(error)] = error

    def close(self, params: pd.DataFrame) -> Path:
        """Write the params table with ``DataFrame.to_hdf`` (key ``params``) and publish the file."""
        if len(params) != self.n:
            raise ValueError(f"params has {len(params)} rows, expected {self.n}")
        self._file.close()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params.reset_index(drop=True).to_hdf(self.partial, key=PARAMS_KEY, mode="a")
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        if self._file.id.valid:
            self._file.close()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self.partial.exists():
            self.abort()


def write_shard(path: str | os.PathLike, wave: np.ndarray, flux: np.ndarray, error: np.ndarray,
                params: pd.DataFrame, chunk_rows: int = 256) -> Path:
    """Write a whole in-memory shard (small data, tests) in the real layout."""
    with ShardWriter(path, len(flux), wave, chunk_rows) as w:
        w.write(0, flux, error)
        return w.close(params)
