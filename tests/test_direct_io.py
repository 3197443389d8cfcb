"""O_DIRECT row reads: the same bytes as h5py for every layout, and a clean fall back where O_DIRECT is refused."""

from __future__ import annotations

import errno
import os

import h5py
import numpy as np
import pytest

from snrmoe_dask.io import direct_io
from snrmoe_dask.io import shards as io


def _direct_ok(path) -> bool:
    """Whether this file system accepts O_DIRECT opens (tmpfs does not)."""
    flag = getattr(os, "O_DIRECT", None)
    if flag is None:
        return False
    try:
        os.close(os.open(path, os.O_RDONLY | flag))
        return True
    except OSError:
        return False


def _h5_rows(path, start, stop):
    with h5py.File(path, "r") as f:
        return f[io.FLUX_KEY][start:stop], f[io.ERROR_KEY][start:stop]


def _write_arrays(path, flux, error, **kwargs):
    with h5py.File(path, "w") as f:
        f.create_dataset(io.FLUX_KEY, data=flux, **kwargs)
        f.create_dataset(io.ERROR_KEY, data=error, **kwargs)


def _interleaved(path, flux, error, chunk_rows):
    """Chunks written back to front, so that no two are in row order in the file, and (as a chunk is not a
    multiple of 4096 bytes) each starts at another offset modulo 4096."""
    n, d = flux.shape
    with h5py.File(path, "w") as f:
        fd = f.create_dataset(io.FLUX_KEY, shape=(n, d), dtype=np.float32, chunks=(chunk_rows, d))
        ed = f.create_dataset(io.ERROR_KEY, shape=(n, d), dtype=np.float32, chunks=(chunk_rows, d))
        for a in reversed(range(0, n, chunk_rows)):
            fd[a:a + chunk_rows] = flux[a:a + chunk_rows]
            ed[a:a + chunk_rows] = error[a:a + chunk_rows]


@pytest.fixture
def arrays():
    rng = np.random.default_rng(3)
    return (rng.standard_normal((300, 257)).astype(np.float32),
            rng.uniform(0.1, 2.0, (300, 257)).astype(np.float32))


RANGES = [(0, 300), (0, 1), (5, 7), (63, 129), (64, 128), (250, 300), (299, 300), (120, 120)]


@pytest.mark.parametrize("layout", ["chunked", "contiguous", "interleaved"])
def test_rows_equal_h5py(tmp_path, arrays, layout):
    path = tmp_path / "shard.h5"
    flux, error = arrays
    if layout == "interleaved":
        _interleaved(path, flux, error, chunk_rows=32)
        with h5py.File(path) as f:
            runs = io._runs(f[io.FLUX_KEY], 0, 300)
        # the test must really cover separate runs of different phases
        assert len(runs) > 2 and len({off % direct_io.ALIGN for off, _ in runs}) > 2
    else:
        _write_arrays(path, flux, error, **({"chunks": (64, 257)} if layout == "chunked" else {}))
    reader = io.RowReader()
    for start, stop in RANGES:
        got = reader.read(path, start, stop)
        want = _h5_rows(path, start, stop)
        for g, w in zip(got, want):
            assert g.dtype == np.float32 and g.shape == w.shape and g.flags.aligned
            np.testing.assert_array_equal(g, w)
    assert reader.direct_reads == (len(RANGES) if _direct_ok(path) else 0)


def test_reused_buffers_and_fresh_arrays(tmp_path, arrays):
    path = tmp_path / "shard.h5"
    _write_arrays(path, *arrays, chunks=(64, 257))
    reader = io.RowReader()
    first, _ = reader.read(path, 0, 64)
    kept = first.copy()
    reader.read(path, 64, 128)
    if reader.direct_reads:  # a reusing reader hands out the same memory again
        assert not np.array_equal(first, kept)
    fresh, _ = io.read_rows(path, 0, 64)
    io.read_rows(path, 64, 128)
    np.testing.assert_array_equal(fresh, kept)


def test_filtered_or_other_dtype_reads_through_h5py(tmp_path, arrays):
    flux, error = arrays
    for name, kwargs, data in [("gzip.h5", {"chunks": (64, 257), "compression": "gzip"}, arrays),
                               ("float64.h5", {}, (flux.astype(np.float64), error.astype(np.float64))),
                               ("bigendian.h5", {}, (flux.astype(">f4"), error.astype(">f4")))]:
        path = tmp_path / name
        _write_arrays(path, *data, **kwargs)
        reader = io.RowReader()
        for g, w in zip(reader.read(path, 10, 100), arrays):
            np.testing.assert_array_equal(g, w[10:100])
        assert (reader.direct_reads, reader.buffered_reads) == (0, 1), name


def test_refused_o_direct_falls_back(tmp_path, arrays, monkeypatch):
    path = tmp_path / "shard.h5"
    _write_arrays(path, *arrays, chunks=(64, 257))

    def refuse(*args, **kwargs):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(direct_io.os, "preadv", refuse)
    reader = io.RowReader()
    for _ in range(2):
        np.testing.assert_array_equal(reader.read(path, 0, 100)[0], arrays[0][:100])
    assert (reader.direct_reads, reader.buffered_reads, reader.direct) == (0, 2, False)
    monkeypatch.delattr(direct_io.os, "O_DIRECT", raising=False)
    np.testing.assert_array_equal(io.read_rows(path, 3, 9)[1], arrays[1][3:9])


def test_read_runs_any_offsets(tmp_path):
    """Runs at every phase, adjacent and apart, short and long, back to back in one buffer."""
    data = np.random.default_rng(5).integers(0, 256, 3 * direct_io.ALIGN * 7 + 123, dtype=np.uint8)
    path = tmp_path / "bytes.bin"
    data.tofile(path)
    if not _direct_ok(path):
        pytest.skip("this file system refuses O_DIRECT")
    rng = np.random.default_rng(6)
    buffer = direct_io.RunBuffer()
    for _ in range(50):
        runs, offset = [], int(rng.integers(0, 100))
        while len(runs) < int(rng.integers(1, 6)):
            nbytes = int(rng.integers(1, 3 * direct_io.ALIGN))
            if offset + nbytes > data.size:
                break
            runs.append((offset, nbytes))
            offset += nbytes + int(rng.choice([0, 0, int(rng.integers(1, 5000))]))
        if not runs:
            continue
        got = direct_io.read_runs(path, runs, buffer)
        np.testing.assert_array_equal(got, np.concatenate([data[o:o + n] for o, n in runs]))
    with pytest.raises(direct_io.DirectUnsupported):  # cut short inside a window: h5py's read reports it
        direct_io.read_runs(path, [(data.size - 10, 20)], buffer)
    with pytest.raises(OSError, match="file ends"):
        direct_io.read_runs(path, [(data.size + 5000, 20)], buffer)


def _shard_with_arrays(path, flux, error, **kwargs):
    """A shard file that inspect_shard accepts: the arrays (written with ``kwargs``), wave and params."""
    import pandas as pd

    n, d = flux.shape
    _write_arrays(path, flux, error, **kwargs)
    with h5py.File(path, "a") as f:
        f.create_dataset(io.WAVE_KEY, data=np.linspace(4000, 9000, d))
    pd.DataFrame({"log_g": np.linspace(1, 5, n)}).to_hdf(path, key="params")


@pytest.mark.parametrize("kwargs", [{}, {"chunks": (64, 257)}], ids=["contiguous", "chunked"])
@pytest.mark.parametrize("direct", [True, False])
def test_rows_by_the_layout_taken_at_open_equal_h5py(tmp_path, arrays, kwargs, direct):
    path = tmp_path / "shard.h5"
    _shard_with_arrays(path, *arrays, **kwargs)
    layout = io.inspect_shard(path).layout
    assert layout is not None and layout.n == 300
    reader = io.RowReader(direct=direct)
    for start, stop in RANGES:
        for g, w in zip(reader.read(path, start, stop, layout), _h5_rows(path, start, stop)):
            assert g.dtype == np.float32 and g.shape == w.shape
            np.testing.assert_array_equal(g, w)
    # every read came from the layout: through h5py, a buffered reader would read through HDF5
    assert reader.direct_reads + reader.buffered_reads == len(RANGES)


def test_a_file_rewritten_after_open_is_read_as_it_is_now(tmp_path, arrays, monkeypatch):
    """The layout is of the file as it was opened; a file replaced since (other chunks, other offsets)
    is read through HDF5, never at the old offsets."""
    path = tmp_path / "shard.h5"
    flux, error = arrays
    _shard_with_arrays(path, flux, error)
    layout = io.inspect_shard(path).layout
    new = tmp_path / "new.h5"
    _shard_with_arrays(new, flux[::-1] * 2, error[::-1], chunks=(32, 257))
    os.replace(new, path)
    assert io.inspect_shard(path).layout.offsets != layout.offsets
    got = io.RowReader().read(path, 10, 50, layout)
    for g, w in zip(got, _h5_rows(path, 10, 50)):
        np.testing.assert_array_equal(g, w)


def test_no_layout_where_rows_are_not_plain_float32(tmp_path, arrays):
    flux, error = arrays
    for name, kwargs, data in [("gzip.h5", {"chunks": (64, 257), "compression": "gzip"}, arrays),
                               ("float64.h5", {}, (flux.astype(np.float64), error.astype(np.float64))),
                               ("many-chunks.h5", {"chunks": (2, 257)}, arrays)]:
        path = tmp_path / name
        _shard_with_arrays(path, *data, **kwargs)
        assert io.inspect_shard(path).layout is None, name


def test_runs_at_another_phase_read_through_a_small_scratch_a_piece_at_a_time(tmp_path, arrays, monkeypatch):
    path = tmp_path / "shard.h5"
    _interleaved(path, *arrays, chunk_rows=32)
    monkeypatch.setattr(direct_io, "SCRATCH_BYTES", 3 * direct_io.ALIGN)  # 12 KB pieces of 32 KB runs
    reader = io.RowReader()
    for start, stop in RANGES:
        for g, w in zip(reader.read(path, start, stop), _h5_rows(path, start, stop)):
            np.testing.assert_array_equal(g, w)
    if _direct_ok(path):
        scratch = reader._buffers[io.FLUX_KEY].scratch()
        assert 0 < scratch._raw.size <= 3 * direct_io.ALIGN + 4 * direct_io.ALIGN  # used, never a whole run
