"""Per-shard cache: exact round trip, keys that change with every input, damage detected, atomic
writes, ls / clear."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from snrmoe_dask.io import cache
from snrmoe_dask.core.block_pass import PassResult, PassSpec
from snrmoe_dask.core.noise import NoiseSpec
from snrmoe_dask.core.repair import RepairCounts
from snrmoe_dask.core.snr import Bins
from snrmoe_dask.core.stats import BinStats
from snrmoe_dask import bin_statistics, open_shards
from snrmoe_dask.engine import graph
from snrmoe_dask.errors import InputError
from snrmoe_dask.io.cache import ShardCache, clear_cache, list_cache, shard_key, verify_cache
from snrmoe_dask.io.digest import block_digest, shard_digest
from snrmoe_dask.io.shards import ERROR_KEY, FLUX_KEY, inspect_shard, read_rows

INF = math.inf
BINS = {"H": [7, INF], "M": [4, 7], "L": [2, 4], "X": [0, 2]}
D = 12


def make_spec(level=1.5, seed=42, noise_mode="sample", **changes) -> PassSpec:
    """A PassSpec built from scratch each call, so equal values are distinct objects."""
    c = np.linspace(0.9, 1.1, D)
    spec = PassSpec(bins=Bins.from_mapping(BINS), snr_method="norm", noise=NoiseSpec(level, seed, noise_mode),
                    c=c, y0=3.25)
    return dataclasses.replace(spec, **changes)


def make_result(rows: int = 90, seed: int = 0, features: int = 3) -> PassResult:
    """A PassResult of three blocks of random rows (features (rows, F) unless features=0)."""
    rng = np.random.default_rng(seed)
    spec = make_spec()
    result = PassResult(BinStats.zeros(spec.bins.names, spec.c, spec.y0),
                        RepairCounts(flux_negative=5, error_nan=2, error_nonpositive=7))
    for block in np.array_split(np.arange(rows), 3):
        x = (1 + 0.1 * rng.standard_normal((len(block), D))).astype(np.float32)
        y = 3 + rng.standard_normal(len(block))
        snr = rng.uniform(0, 10, len(block))
        result.stats.add_block(x, y, spec.bins.assign(snr), dtype=np.float32)
        result.snr.append(snr)
        if features:
            result.features.append(rng.standard_normal((len(block), features)).astype(np.float32))
    return result


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.fixture
def shard(shard_factory):
    return shard_factory("train_0/dataset.h5", n=50, d=D)


def key_of(path, spec=None, target="log_g", block_rows=64, segment_rows=256, shard_index=0) -> str:
    return shard_key(path, spec or make_spec(), target, block_rows, segment_rows, shard_index)


# ----------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("features", [3, 0])
def test_round_trip_is_bit_identical(tmp_path, features):
    result = make_result(features=features)
    store = ShardCache(tmp_path / "cache")
    key = "ab" * 32
    path = store.save(key, result, {"source": "train_0/dataset.h5"})
    assert path == tmp_path / "cache" / f"{key}.h5"
    back = store.load(key)
    assert back is not None
    for name in ("c", "n", "s", "S", "t", "u", "q"):
        assert same_bits(getattr(back.stats, name), getattr(result.stats, name)), name
    assert back.stats.names == result.stats.names and back.stats.y0 == result.stats.y0
    assert back.repairs == result.repairs
    assert len(back.snr) == 1 and same_bits(back.snr[0], np.concatenate(result.snr))
    if features:
        assert len(back.features) == 1 and same_bits(back.features[0], np.concatenate(result.features))
    else:
        assert back.features == []


def test_miss_returns_none_and_bad_key_is_refused(tmp_path):
    store = ShardCache(tmp_path / "nothing-here")
    assert store.load("0" * 64) is None
    with pytest.raises(ValueError, match="hex digest"):
        store.path("../../etc/passwd")


def test_save_refuses_snr_that_disagrees_with_the_counts(tmp_path):
    result = make_result()
    result.snr.append(np.ones(4))
    with pytest.raises(ValueError, match="snr has shape"):
        ShardCache(tmp_path).save("cd" * 32, result)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- keys
def test_same_inputs_same_key(shard):
    key = key_of(shard)
    assert len(key) == 64 and int(key, 16) >= 0
    assert key_of(shard) == key
    assert key_of(inspect_shard(shard)) == key  # a ShardInfo and its path give one key
    assert key_of(shard, make_spec(level=np.float32(1.5), seed=np.int64(42))) == key  # equal numbers, other types
    assert key_of(shard, make_spec(c=np.linspace(0.9, 1.1, D).astype(np.float32).astype(np.float64))) != key


def _other(value):
    """A value of the same kind that differs as little as possible."""
    if isinstance(value, Bins):
        return Bins.from_mapping({"H": [7, INF], "M": [4.5, 7], "L": [2, 4.5], "X": [0, 2]})
    if isinstance(value, NoiseSpec):
        return NoiseSpec(_other(value.level), value.seed, value.mode)
    if isinstance(value, np.ndarray):
        out = value.copy()
        out[-1] = np.nextafter(out[-1], INF)
        return out
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return float(np.nextafter(value, INF))
    if isinstance(value, str):
        return value + "_other"
    pytest.fail(f"no test value for a {type(value).__name__}: teach _other about this new PassSpec field")


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(PassSpec)])
def test_every_passspec_field_changes_the_key(shard, field):
    spec = make_spec()
    assert key_of(shard, dataclasses.replace(spec, **{field: _other(getattr(spec, field))})) != key_of(shard, spec)


@pytest.mark.parametrize("bins", [
    {"H": [7, INF], "M": [4, 7], "L": [2, 4], "X": [0, 2]},  # the reference (must equal the base key)
    {"H": [7.5, INF], "M": [4, 7.5], "L": [2, 4], "X": [0, 2]},  # an edge moved
    {"M": [4, 7], "H": [7, INF], "L": [2, 4], "X": [0, 2]},  # same bins, other order (other indices)
    {"A": [7, INF], "M": [4, 7], "L": [2, 4], "X": [0, 2]},  # a bin renamed
    {"H": [4, INF], "L": [2, 4], "X": [0, 2]},  # a bin fewer
])
def test_bins_change_the_key(shard, bins):
    changed = key_of(shard, make_spec(bins=Bins.from_mapping(bins))) != key_of(shard)
    assert changed == (bins != BINS or list(bins) != list(BINS))


@pytest.mark.parametrize("spec_change", [{"seed": 43}, {"level": 2.0}, {"noise_mode": "expected"},
                                         {"precision": "float64"}, {"snr_method": "median"},
                                         {"clip_flux": False}, {"y0": 3.0}])
def test_named_spec_fields_change_the_key(shard, spec_change):
    assert key_of(shard, make_spec(**spec_change)) != key_of(shard)


@pytest.mark.parametrize("argument", [{"target": "T_eff"}, {"block_rows": 128}, {"segment_rows": 512},
                                      {"shard_index": 1}])
def test_pass_arguments_change_the_key(shard, argument):
    assert key_of(shard, **argument) != key_of(shard)


def test_version_changes_the_key(shard, monkeypatch):
    key = key_of(shard)
    monkeypatch.setattr(cache.keys, "CACHE_VERSION", cache.keys.CACHE_VERSION + 1)
    assert key_of(shard) != key


def test_touched_file_changes_the_key(shard):
    key = key_of(shard)
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert key_of(shard) != key


def test_size_alone_changes_the_key(shard):
    info = inspect_shard(shard)
    key = key_of(info)
    st = shard.stat()
    with open(shard, "ab") as f:
        f.write(b"\0")
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: only the size differs
    assert key_of(info) != key


def test_shape_and_path_change_the_key(shard, tmp_path):
    info = inspect_shard(shard)
    assert key_of(dataclasses.replace(info, n=info.n - 1)) != key_of(info)
    twin = tmp_path / "train_1" / "dataset.h5"
    twin.parent.mkdir()
    shutil.copy2(shard, twin)  # same bytes, size and mtime
    assert twin.stat().st_mtime_ns == shard.stat().st_mtime_ns
    assert key_of(twin) != key_of(shard)


def test_unreadable_shard_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match=str(bad)):
        key_of(bad)


def test_column_partition_in_the_spec_is_hashed(shard):
    # spec.bins may be a Partition (routing by table columns): its columns and every axis count.
    from snrmoe_dask.core.partition import Partition

    axis = Bins.from_mapping(BINS)
    by_snr = make_spec(bins=Partition((axis,), ("snr",)))
    assert key_of(shard, by_snr) == key_of(shard, make_spec(bins=Partition((Bins.from_mapping(BINS),), ("snr",))))
    assert key_of(shard, make_spec(bins=Partition((axis,), ("mag",)))) != key_of(shard, by_snr)
    grid = make_spec(bins=Partition((axis, axis), ("snr", "mag")))
    assert key_of(shard, grid) != key_of(shard, by_snr)


# ----------------------------------------------------------------------------- damage
def _flip_byte(path, dataset: str) -> None:
    """Flip one byte in the middle of a stored dataset's data (the HDF5 structure stays valid)."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        offset = ds.id.get_offset() + ds.id.get_storage_size() // 2
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


def _damage(kind: str, path) -> None:
    if kind == "truncated":
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.truncate(size // 2)
    elif kind.startswith("flip:"):
        _flip_byte(path, kind[5:])
        with h5py.File(path, "r") as f:  # still valid HDF5: only the checksum can tell
            f["stats/S_upper"][()]
    elif kind == "not-hdf5":
        path.write_bytes(b"this is not an HDF5 file\n" * 10)
    elif kind == "foreign-hdf5":
        path.unlink()
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(3)


@pytest.mark.parametrize("kind", ["truncated", "flip:stats/S_upper", "flip:snr", "flip:features", "not-hdf5",
                                  "foreign-hdf5"])
def test_damaged_file_is_logged_deleted_and_missed(tmp_path, caplog, kind):
    store = ShardCache(tmp_path)
    key = "12" * 32
    path = store.save(key, make_result(), {"source": "s.h5"})
    _damage(kind, path)
    with caplog.at_level(logging.WARNING, logger="snrmoe_dask.io.cache"):
        assert store.load(key) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0].getMessage()
    if kind.startswith("flip:"):
        assert "checksum" in warnings[0].getMessage()
    assert not path.exists()
    store.save(key, make_result(), {"source": "s.h5"})  # the recompute path: save again, hit again
    assert store.load(key) is not None


# ----------------------------------------------------------------------------- atomic writes
def _fail_after(monkeypatch, calls: int) -> None:
    """Make h5py's create_dataset raise on its ``calls``-th call: a crash in the middle of a write."""
    real = h5py.Group.create_dataset
    count = {"n": 0}

    def failing(self, *args, **kwargs):
        count["n"] += 1
        if count["n"] >= calls:
            raise OSError("disk full (simulated)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    store = ShardCache(tmp_path)
    _fail_after(monkeypatch, 4)
    with pytest.raises(OSError, match="simulated"):
        store.save("34" * 32, make_result())
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_entry(tmp_path, monkeypatch):
    store = ShardCache(tmp_path)
    key = "56" * 32
    old = make_result(seed=1)
    store.save(key, old)
    monkeypatch.setattr(cache.store.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("rename failed")))
    with pytest.raises(OSError, match="rename failed"):
        store.save(key, make_result(seed=2))
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == [f"{key}.h5"]
    back = store.load(key)
    assert back is not None and same_bits(back.stats.S, old.stats.S)


# ----------------------------------------------------------------------------- ls / clear
def test_list_missing_and_empty(tmp_path):
    assert list_cache(tmp_path / "missing") == [f"no cache at {tmp_path / 'missing'} (folder does not exist)"]
    assert list_cache(tmp_path) == [f"cache {tmp_path} is empty"]
    assert clear_cache(tmp_path / "missing") == 0


def test_list_shows_entries_size_age_last_use_and_total(tmp_path):
    store = ShardCache(tmp_path)
    first = store.save("a1" * 32, make_result(rows=90), {"source": "train_0/dataset.h5"})
    second = store.save("b2" * 32, make_result(rows=60), {"source": "train_1/dataset.h5", "parts": ["a1" * 32]})
    (tmp_path / "notes.txt").write_text("not ours")
    hours_ago = time.time() - 2 * 3600
    os.utime(second, (hours_ago, hours_ago))  # last used two hours ago: listed first, evicted first
    lines = list_cache(tmp_path)
    assert len(lines) == 3
    assert lines[0].startswith("b2" * 6) and "merged" in lines[0] and "train_1/dataset.h5" in lines[0]
    assert "60 rows" in lines[0] and "last used 2.0 h ago" in lines[0]
    assert lines[1].startswith("a1" * 6) and "shard" in lines[1] and "train_0/dataset.h5" in lines[1]
    assert "90 rows" in lines[1] and re.search(r"last used \d+ s ago", lines[1])
    sizes = [first.stat().st_size, second.stat().st_size]
    for line, size in zip(lines[:2], sizes[::-1]):
        assert "bins H,M,L,X" in line and f" {size / 1e6:.1f} MB " in line and re.search(r"created \d+ s ago", line)
    assert lines[2] == f"2 cache files, {sum(sizes) / 1e6:.1f} MB in {tmp_path}"


def test_clear_removes_only_ours(tmp_path, shard_factory):
    store = ShardCache(tmp_path)
    for key in ("c3" * 32, "d4" * 32):
        store.save(key, make_result())
    broken = tmp_path / f"{'e5' * 32}.h5"
    broken.write_bytes(b"truncated")  # named like an entry, unreadable: a damaged entry of ours
    stale = tmp_path / f".{'f6' * 32}.{'0' * 32}.tmp"
    fresh = tmp_path / f".{'f7' * 32}.{'1' * 32}.tmp"
    for tmp in (stale, fresh):
        tmp.write_bytes(b"partial")
    old = time.time() - cache.maintenance.STALE_TEMP_S - 60
    os.utime(stale, (old, old))
    foreign = shard_factory(str(tmp_path / "foreign.h5"), n=10, d=4)  # an HDF5 file that is not ours
    other = tmp_path / "other.h5"
    other.write_bytes(b"someone else's file")  # unreadable, but not named like a key
    assert "damaged" in " ".join(list_cache(tmp_path))
    assert clear_cache(tmp_path) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, foreign.name, other.name])
    assert clear_cache(tmp_path) == 0
    assert list_cache(tmp_path) == [f"cache {tmp_path} is empty"]



# ----------------------------------------------------------------------------- stale statistics
ROWS = 200


@pytest.fixture
def shards(shard_factory):
    """Three shards of the same shape (and file size) with different spectra."""
    return [shard_factory(f"train_{k}/dataset.h5", n=ROWS, d=D, seed=k) for k in range(3)]


def run_pass(paths, store=None, **kw) -> PassResult:
    ds = open_shards([str(p) for p in paths], block_rows=64)
    return bin_statistics(ds, cache=store, **kw).compute(scheduler="sync")


def assert_same(a: PassResult, b: PassResult) -> None:
    for name in ("c", "n", "s", "S", "t", "u", "q"):
        assert same_bits(getattr(a.stats, name), getattr(b.stats, name)), name
    assert a.stats.names == b.stats.names and a.stats.y0 == b.stats.y0
    assert same_bits(a.snr_values, b.snr_values) and a.repairs == b.repairs and a.digests == b.digests


def source_of(entry) -> str:
    with h5py.File(entry, "r") as f:
        return f.attrs["source"]


def identity(path) -> tuple:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def _edit(path, key: str, change) -> None:
    with h5py.File(path, "r+") as f:
        f[key][...] = change(f[key][...])


def _target_column(path):
    """(params block dataset, column index) holding log_g in a pandas fixed-format table."""
    with h5py.File(path, "r") as f:
        for name in f["params"]:
            if name.endswith("_items") and b"log_g" in list(f["params"][name][()]):
                return f"params/{name[:-6]}_values", list(f["params"][name][()]).index(b"log_g")
    raise AssertionError("no log_g column")


def _rewrite(kind: str, path, other, tmp_path) -> None:
    """Change shard ``path`` as a user might, keeping its size and shape (and, except for a replaced
    file, its inode); the caller restores atime and mtime to the nanosecond."""
    if kind == "flux halved":
        _edit(path, FLUX_KEY, lambda flux: flux / 2)
    elif kind == "error changed":
        _edit(path, ERROR_KEY, lambda error: error * 1.5)
    elif kind == "target changed":
        block, column = _target_column(path)
        _edit(path, block, lambda values: np.concatenate([values[:, :column], values[:, column:column + 1] + 0.5,
                                                          values[:, column + 1:]], axis=1))
    elif kind == "copy of another, in place":
        shutil.copyfile(other, path)  # same inode: copyfile truncates and rewrites
    elif kind == "replaced by a copy of another":
        shutil.copyfile(other, tmp_path / "new.h5")
        os.replace(tmp_path / "new.h5", path)  # a new inode
    elif kind == "truncated and re-extended":
        raw = path.read_bytes()
        with open(path, "r+b") as f:
            f.truncate(len(raw) // 2)
            f.seek(len(raw) // 2)
            f.write(raw[len(raw) // 2:])  # the same bytes again: only ctime tells
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["flux halved", "error changed", "target changed", "copy of another, in place",
                                  "replaced by a copy of another", "truncated and re-extended"])
def test_shard_rewritten_with_restored_mtime_is_recomputed(shards, tmp_path, caplog, kind):
    """Issue 12's reproduction (flux halved in place, same size and shape, atime and mtime restored
    to the nanosecond) and variants: the next pass recomputes the shard and says why."""
    store = ShardCache(tmp_path / "cache", min_gflop=0)
    victim = shards[1]  # not the first shard: the shift c and y0 come from the first one's rows
    before = run_pass(shards[:2], store)
    st = victim.stat()
    _rewrite(kind, victim, shards[2], tmp_path)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    size, mtime, inode = identity(victim)
    assert (size, mtime) == (st.st_size, st.st_mtime_ns)  # what the old key looked at is unchanged
    assert inode == st.st_ino or kind == "replaced by a copy of another"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="snrmoe_dask.engine.cached_pass"):
        after = run_pass(shards[:2], store)
    assert_same(after, run_pass(shards[:2]))  # = a pass over the files as they are now
    if kind == "truncated and re-extended":
        assert_same(after, before)  # same bytes: recomputed all the same (ctime changed), same numbers
    else:
        assert not same_bits(after.stats.S, before.stats.S) or not same_bits(after.stats.t, before.stats.t)
    assert "1 shard(s) from the cache ['train_0']" in caplog.text and "1 to compute ['train_1']" in caplog.text
    why = [r.getMessage() for r in caplog.records if "recomputing its statistics" in r.getMessage()]
    assert len(why) == 1 and str(victim) in why[0] and "ctime_ns" in why[0]
    if kind == "target changed":
        assert "target, SNR-column or bin values" in why[0]
    if kind == "replaced by a copy of another":
        assert "inode" in why[0]


def test_the_key_covers_inode_ctime_and_the_row_values(shard, tmp_path):
    facts = cache.key_facts(shard, make_spec(), "log_g", 64, 256, 0, values=(np.arange(50.0), None, None))
    st = shard.stat()
    assert facts["file"] == {"path": str(shard.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                             "ctime_ns": st.st_ctime_ns, "inode": st.st_ino, "shape": [50, D]}
    key = cache.key_of(facts)
    values = np.arange(50.0)

    def key_with(v):
        return shard_key(shard, make_spec(), "log_g", 64, 256, 0, values=v)
    assert key_with((values, None, None)) == key
    values[7] = np.nextafter(values[7], INF)
    assert key_with((values, None, None)) != key  # one target value
    assert key_with((np.arange(40.0), None, None)) != key  # fewer rows of the file used
    assert key_with((np.arange(50.0), np.ones(50), None)) != key  # an SNR column
    assert key_with((np.arange(50.0), None, np.zeros(50, np.int64))) != key  # bins from columns
    os.chmod(shard, 0o600)  # only ctime changes: a new key (the safe direction)
    assert shard.stat().st_mtime_ns == st.st_mtime_ns and key_with((np.arange(50.0), None, None)) != key


def test_fewer_rows_of_a_shard_are_not_served_for_all_of_it(shards, tmp_path):
    store = ShardCache(tmp_path / "cache", min_gflop=0)
    ds = open_shards([str(shards[0])], block_rows=64, max_rows=100)
    bin_statistics(ds, cache=store).compute(scheduler="sync")
    assert_same(run_pass(shards[:1], store), run_pass(shards[:1]))


def test_forged_identity_is_served_stale_and_verify_drops_it(shards, tmp_path, monkeypatch, capsys):
    """What the key cannot see (content changed with size, mtime, ctime and inode forged back, as
    root or a clock change could) is served from the cache; ``cache verify`` finds it and drops it."""
    store = ShardCache(tmp_path / "cache", min_gflop=0)
    before = run_pass(shards[:2], store)
    forged = {str(p.resolve()): cache.keys._file_identity(p) for p in shards[:2]}
    _edit(shards[1], FLUX_KEY, lambda flux: flux / 2)
    real_identity = cache.keys._file_identity
    monkeypatch.setattr(cache.keys, "_file_identity", lambda p: forged.get(str(Path(p).resolve())) or real_identity(p))
    assert_same(run_pass(shards[:2], ShardCache(tmp_path / "cache", min_gflop=0)), before)  # the limit
    lines, changed = verify_cache(tmp_path / "cache")
    status = {line.split()[0]: line for line in lines[:-1]}
    assert changed == 2 and len(status) == 3  # train_1 and the sum of both changed; train_0 is fine
    assert sum("changed" in line for line in status.values()) == 2
    assert sum(" ok " in line for line in status.values()) == len(status) - 2
    for line in status.values():
        if "changed" in line:
            assert str(shards[1]) in line and "rows 0:64 and 3 more blocks differ" in line and line.endswith("dropped")
    assert "2 changed (dropped)" in lines[-1]
    assert_same(run_pass(shards[:2], ShardCache(tmp_path / "cache", min_gflop=0)), run_pass(shards[:2]))
    assert verify_cache(tmp_path / "cache")[1] == 0
    from snrmoe_dask.cli import main

    assert main(["cache", "verify", "--dir", str(tmp_path / "cache")]) == 0
    assert " ok " in capsys.readouterr().out


def test_verify_reports_a_missing_source_and_a_damaged_entry(shards, tmp_path):
    store = ShardCache(tmp_path / "cache", min_gflop=0)
    run_pass(shards[:1], store, per_shard=True)
    run_pass(shards[1:2], store, per_shard=True)
    entries = sorted((tmp_path / "cache").glob("*.h5"))
    assert len(entries) == 2
    shards[0].unlink()
    victim = next(p for p in entries if source_of(p) == str(shards[1]))
    _flip_byte(victim, "stats/S_upper")
    lines, changed = verify_cache(tmp_path / "cache")
    assert changed == 0
    assert any("source missing" in line and f"{shards[0]}: missing" in line for line in lines)
    assert any(line.startswith(victim.name[:12]) and "damaged (checksum mismatch" in line and "dropped" in line
               for line in lines)
    assert not victim.exists() and len(list((tmp_path / "cache").glob("*.h5"))) == 1  # the missing one is kept


def test_an_entry_copied_over_another_keys_is_found(shards, tmp_path):
    """cache verify reported "ok" for an entry file copied over another key's (each is valid on its own)."""
    import shutil

    store = ShardCache(tmp_path / "cache", min_gflop=0)
    run_pass(shards[:1], store, per_shard=True)
    run_pass(shards[1:2], store, per_shard=True)
    first, second = sorted((tmp_path / "cache").glob("*.h5"), key=source_of)
    shutil.copyfile(first, second)  # second's name now holds first's entry (the file and its checksum intact)
    assert store.load(second.stem) is None  # a run refuses it (and recomputes)
    shutil.copyfile(first, second)
    backup = shutil.copyfile(first, tmp_path / "cache" / "my-backup.h5")
    lines, changed = verify_cache(tmp_path / "cache")
    by_name = {line.split()[0]: line for line in lines[:-1]}
    assert f"damaged (written for version {cache.CACHE_VERSION} key {first.stem}" in by_name[second.name[:12]]
    assert by_name[second.name[:12]].endswith("dropped") and not second.exists()
    assert " ok " in by_name[first.name[:12]] and first.exists()
    assert by_name["my-backup.h5"] == "my-backup.h5  not an entry (not named after a key); left alone"
    assert backup.exists()


# ----------------------------------------------------------------------------- the merged entry
def test_merged_entry_is_one_load_bit_identical_to_the_shards_and_a_cold_pass(shards, tmp_path, monkeypatch):
    store = ShardCache(tmp_path / "cache", min_gflop=0)
    cold = run_pass(shards)
    first = run_pass(shards, store)  # computes, caches 3 shards and their sum
    assert len(list((tmp_path / "cache").glob("*.h5"))) == 4
    loads = []
    real_load = ShardCache.load
    monkeypatch.setattr(ShardCache, "load", lambda self, key: loads.append(key) or real_load(self, key))
    monkeypatch.setattr(graph, "segment_pass", lambda *a, **k: pytest.fail("a data pass ran"))
    merged = run_pass(shards, ShardCache(tmp_path / "cache", min_gflop=0))
    assert len(loads) == 1
    (tmp_path / "cache" / f"{loads[0]}.h5").unlink()  # now the per-shard path: three loads
    per_shard = run_pass(shards, ShardCache(tmp_path / "cache", min_gflop=0))
    assert len(loads) == 4
    for result in (first, merged, per_shard):
        assert_same(result, cold)
    assert len(cold.digests) == 3 * 4  # one per block read: 4 blocks of 64 rows per 200-row shard


def test_upper_triangle_and_digests_of_the_raw_blocks_are_stored(shards, tmp_path):
    _edit(shards[0], FLUX_KEY, lambda flux: np.where(np.arange(ROWS)[:, None] == 3, -1.0, flux))  # to be clipped
    store = ShardCache(tmp_path / "cache", min_gflop=0)
    result = run_pass(shards[:1], store, per_shard=True)[0]
    assert result.repairs.flux_negative == D
    raw = [read_rows(shards[0], start, min(start + 64, ROWS)) for start in range(0, ROWS, 64)]
    assert result.digests == [block_digest(flux, error) for flux, error in raw]  # before the repairs
    (entry,) = (tmp_path / "cache").glob("*.h5")
    with h5py.File(entry, "r") as f:
        assert "stats/S" not in f and f["stats/S_upper"].shape == (4, D * (D + 1) // 2)
        assert f["content/digests"].shape == (4, 16) and f["content/blocks"][()].tolist() == [
            [0, 0, 64], [0, 64, 64], [0, 128, 64], [0, 192, 8]]
        assert json.loads(f["content"].attrs["file_digests"]) == [shard_digest(result.digests)]
    back = store.load(entry.stem)
    assert np.array_equal(back.stats.S, np.swapaxes(back.stats.S, 1, 2))
    assert same_bits(back.stats.S, result.stats.S) and back.digests == result.digests


# ----------------------------------------------------------------------------- size: rule, cap, free space
def test_small_shards_are_not_cached(shards, tmp_path, caplog):
    store = ShardCache(tmp_path / "cache", min_gflop=(2 * ROWS + 1) * D ** 2 / 1e9)
    with caplog.at_level(logging.INFO, logger="snrmoe_dask.engine.cached_pass"):
        assert_same(run_pass(shards[:2], store), run_pass(shards[:2]))
    assert "train_0 (too small to cache)" in caplog.text
    assert not (tmp_path / "cache").exists()  # 400 rows in all: their sum is not cached either
    run_pass(shards[:2], ShardCache(tmp_path / "cache", min_gflop=(2 * ROWS - 0.5) * D ** 2 / 1e9))
    assert len(list((tmp_path / "cache").glob("*.h5"))) == 1  # only the sum has enough rows


def test_config_defaults_are_the_library_defaults():
    from snrmoe_dask.experiment.config import ComputeSection

    compute = ComputeSection()
    assert (compute.cache_max_gb, compute.cache_min_gflop, compute.cache_max_ratio) == (
        cache.DEFAULT_MAX_GB, cache.DEFAULT_MIN_GFLOP, cache.DEFAULT_MAX_RATIO)
    # at D = 4096 an entry (4 bins: 269 MB) is kept once it is at most a quarter of the spectra it sums
    assert ShardCache("x").worth_storing(32_809, 4096, 4) and not ShardCache("x").worth_storing(32_808, 4096, 4)
    assert cache.store.entry_bytes(32_809, 4096, 4) <= 0.25 * cache.store.data_bytes(32_809, 4096)
    assert ShardCache("x").worth_storing(15_259, 256, 4) and not ShardCache("x").worth_storing(15_258, 256, 4)  # the flops rule


def test_an_entry_never_outgrows_the_spectra_it_sums(shards, tmp_path, caplog):
    store = ShardCache(tmp_path / "cache", min_gflop=0, max_ratio=1e-9)
    with caplog.at_level(logging.INFO, logger="snrmoe_dask.engine.cached_pass"):
        assert_same(run_pass(shards[:2], store), run_pass(shards[:2]))
    assert "too small to cache" in caplog.text and not (tmp_path / "cache").exists()
    store = ShardCache(tmp_path / "cache", min_gflop=0)
    run_pass(shards[:2], store)
    lines = cache.list_cache(tmp_path / "cache")
    assert all(" of its " in line and "GB of spectra" in line for line in lines[:3]), lines


def _entry_bytes(tmp_path) -> int:
    probe = ShardCache(tmp_path / "probe").save("ff" * 32, make_result())
    return probe.stat().st_size


def _backdate(store: ShardCache, keys: list[str]) -> None:
    """Last uses one minute apart, in the order given, an hour ago."""
    start = time.time() - 3600
    for i, key in enumerate(keys):
        os.utime(store.path(key), (start + 60 * i, start + 60 * i))


def test_cap_evicts_the_least_recently_used_never_one_in_use(tmp_path, caplog):
    size = _entry_bytes(tmp_path)
    need = sum(a.nbytes for a in cache.entry_file._stored(make_result(), None)[1].values()) + cache.entry_file.HDF5_OVERHEAD
    assert size < need  # the estimate of a write is generous
    store = ShardCache(tmp_path / "cache", max_gb=(3 * size + need - 1) / 1e9)  # 3 entries, or 2 and a write
    keys = [f"{i:02x}" * 32 for i in range(1, 7)]
    for key in keys[:3]:
        assert store.save(key, make_result()) is not None
    _backdate(store, keys[:3])
    assert store.load(keys[0]) is not None  # a hit: keys[0] becomes the most recently used
    with caplog.at_level(logging.INFO, logger="snrmoe_dask.io.cache"):
        assert store.save(keys[3], make_result()) is not None
    assert not store.path(keys[1]).exists()  # the least recently used (not the oldest created) went
    assert all(store.path(k).exists() for k in (keys[0], keys[2], keys[3]))
    assert "evicted (least recently used" in caplog.text
    _backdate(store, [keys[2], keys[0], keys[3]])
    store.mark_in_use(keys[2])  # the run needs it: keys[0] goes although keys[2] is older
    assert store.save(keys[4], make_result()) is not None
    assert not store.path(keys[0]).exists() and store.path(keys[2]).exists()
    store.mark_in_use(keys[3], keys[4])  # every entry in use: the write is skipped, nothing is evicted
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="snrmoe_dask.io.cache"):
        assert store.save(keys[5], make_result(), {"source": "train_5/dataset.h5"}) is None
    assert "train_5/dataset.h5 not cached (the run goes on)" in caplog.text and "compute.cache_max_gb" in caplog.text
    assert sorted(p.stem for p in (tmp_path / "cache").iterdir()) == sorted([keys[2], keys[3], keys[4]])
    small = ShardCache(tmp_path / "cache", max_gb=size / 1e9)  # an entry larger than the cap on its own:
    assert small.save(keys[5], make_result()) is None  # skipped, and nothing evicted for nothing
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_write_is_skipped_when_the_disk_is_short(tmp_path, monkeypatch, caplog, shards):
    usage = shutil._ntuple_diskusage(total=100 * 10**9, used=98 * 10**9, free=2 * 10**9)
    monkeypatch.setattr(cache.store.shutil, "disk_usage", lambda path: usage)  # 2 GB free < the 2 % margin
    store = ShardCache(tmp_path / "cache", min_gflop=0)
    with caplog.at_level(logging.WARNING, logger="snrmoe_dask.io.cache"):
        assert store.save("ab" * 32, make_result()) is None
        assert_same(run_pass(shards[:2], store), run_pass(shards[:2]))  # the run goes on, uncached
    assert "not cached (the run goes on): only 2.0 GB free" in caplog.text
    assert list((tmp_path / "cache").iterdir()) == []
    usage = shutil._ntuple_diskusage(total=100 * 10**9, used=90 * 10**9, free=10 * 10**9)
    assert store.save("ab" * 32, make_result()) is not None


def test_a_hit_marks_the_entry_and_its_parts_as_used(tmp_path):
    store = ShardCache(tmp_path)
    part, merged = "0a" * 32, "0b" * 32
    store.save(part, make_result())
    store.save(merged, make_result(), {"parts": [part, "0c" * 32]})  # a part that is gone is no error
    _backdate(store, [part, merged])
    assert store.load(merged) is not None
    assert all(time.time() - store.path(k).stat().st_mtime < 60 for k in (part, merged))


def test_a_cache_that_cannot_be_written_costs_the_cache_not_the_run(shards, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="snrmoe_dask.engine.cached_pass"):
        assert_same(run_pass(shards[:2], ShardCache(blocker / "cache", min_gflop=0)), run_pass(shards[:2]))
    assert caplog.text.count("not cached (the run goes on)") == 3  # two shards and their sum
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("d", [7, 130, 300, 600])
def test_upper_triangles_are_stored_row_by_row_from_tiles_without_densifying(d, tmp_path):
    rng = np.random.default_rng(d)
    stats = BinStats.zeros(["H", "M"], np.zeros(d), 0.0)
    stats._S.data[:] = rng.random(stats._S.data.shape)  # held tiles, as a pass leaves them
    stats.n[:] = 1
    result = PassResult(stats, RepairCounts(), [np.zeros(2)])
    dense = stats.copy().S
    path = cache.ShardCache(tmp_path).save("ab" * 32, result)
    with h5py.File(path) as f:
        stored = f["stats/S_upper"][()]
    assert np.array_equal(stored, np.stack([np.concatenate([dense[b, i, i:] for i in range(d)]) for b in range(2)]))
    assert type(stats._S).__name__ == "GramTiles"  # saving did not make the result dense
    assert np.array_equal(cache.ShardCache(tmp_path).load("ab" * 32).stats.S, dense)
