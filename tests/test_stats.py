"""Per-bin sufficient statistics: definitions against plain numpy, exact sums, files."""


import h5py
import numpy as np
import pytest

from snrmoe_dask.core.stats import BinStats, GramTiles
from snrmoe_dask.errors import ConfigError, InputError

NAMES = ("H", "M", "L", "X")
FIELDS = ("n", "s", "S", "t", "u", "q")


def spectra_like(n=2000, d=48, seed=0):
    """Positive spectra ~1 with correlated pixels, a target, and 4 unequal bins."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 4))
    x = 1.0 + latent @ (0.1 * rng.standard_normal((4, d))) + 0.02 * rng.standard_normal((n, d))
    y = 3.0 + latent @ np.array([1.0, -0.5, 0.3, 0.0])
    bins = rng.choice(4, size=n, p=[0.1, 0.2, 0.3, 0.4])
    return x.astype(np.float32), y, bins


@pytest.fixture(scope="module")
def data():
    return spectra_like()


def fresh(x, y):
    return BinStats.zeros(NAMES, x[:256].mean(axis=0, dtype=np.float64), float(y.mean()))


def accumulate(x, y, bins, block, dtype=np.float64, stats=None):
    stats = stats or fresh(x, y)
    for i in range(0, len(x), block):
        stats.add_block(x[i:i + block], y[i:i + block], bins[i:i + block], dtype=dtype)
    return stats


def assert_stats_close(a, b, rtol):
    """Each field within rtol of its natural size (sums of deviations can cancel to ~0)."""
    diag = np.einsum("kii->ki", b.S)
    scale = {"n": b.n.max(), "S": diag.max(), "q": b.q.max(),
             "s": np.sqrt(b.n[:, None] * diag).max(), "t": np.sqrt(b.n * b.q).max(),
             "u": np.sqrt(diag * b.q[:, None]).max()}
    for f in FIELDS:
        assert np.abs(getattr(a, f) - getattr(b, f)).max() <= rtol * scale[f], f


def test_definitions_against_numpy(data):
    x, y, bins = data
    stats = accumulate(x, y, bins, block=len(x))
    for k in range(4):
        d = x[bins == k].astype(np.float64) - stats.c
        e = y[bins == k] - stats.y0
        assert stats.n[k] == len(e)
        np.testing.assert_allclose(stats.s[k], d.sum(0), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(stats.S[k], d.T @ d, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(stats.t[k], e.sum(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(stats.u[k], d.T @ e, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(stats.q[k], e @ e, rtol=1e-10)
        assert np.array_equal(stats.S[k], stats.S[k].T)


def test_wide_spectra_gram_panels():
    """D above the Gram's column panel (and not a multiple of it or of the mirror tile)."""
    x, y, bins = spectra_like(n=60, d=1100, seed=3)
    stats = accumulate(x, y, bins % 2, block=60, dtype=np.float32)
    for k in range(2):
        d = x[bins % 2 == k].astype(np.float64) - stats.c
        np.testing.assert_allclose(stats.S[k], d.T @ d, rtol=0, atol=1e-5 * np.abs(d.T @ d).max())
        assert np.array_equal(stats.S[k], stats.S[k].T)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_upper_tiles_then_one_mirror_equal_a_dense_sum_mirrored_each_block(dtype):
    """A pass holds only the upper triangle's tiles and mirrors once, when S is read: the same bits as
    adding every block into dense (K, D, D) sums and mirroring after each."""
    x, y, bins = spectra_like(n=300, d=1100, seed=4)
    tiles = fresh(x, y)
    empty = fresh(x, y)  # the dense path, as statistics loaded from a file
    dense = BinStats(empty.names, empty.c, empty.y0, empty.n, empty.s, np.zeros((empty.n_bins, empty.d, empty.d)),
                     empty.t, empty.u, empty.q)
    for i in range(0, len(x), 30):
        tiles.add_block(x[i:i + 30], y[i:i + 30], bins[i:i + 30], dtype=dtype, mirror=False)
        dense.add_block(x[i:i + 30], y[i:i + 30], bins[i:i + 30], dtype=dtype, mirror=True)
    assert isinstance(tiles._S, GramTiles) and tiles._S.data.size < 0.55 * dense.S.size
    halves = fresh(x, y)  # and partial sums add up tile by tile
    other = fresh(x, y)
    for i in range(0, len(x), 30):  # the same blocks, the first four summed apart
        (halves if i < 120 else other).add_block(x[i:i + 30], y[i:i + 30], bins[i:i + 30], dtype=dtype)
    halves += other
    assert np.array_equal(tiles.S, tiles.S.transpose(0, 2, 1))
    for f in FIELDS:
        assert np.array_equal(getattr(tiles, f), getattr(dense, f)), f
        np.testing.assert_allclose(getattr(halves, f), getattr(tiles, f), rtol=0,
                                   atol=1e-6 * np.abs(getattr(tiles, f)).max()), f


def test_blocks_equal_one_block(data):
    x, y, bins = data
    one = accumulate(x, y, bins, block=len(x))
    for block in (1000, 333, 17):
        assert_stats_close(accumulate(x, y, bins, block), one, rtol=1e-12)


def test_float32_path_close_to_float64(data):
    x, y, bins = data
    assert_stats_close(accumulate(x, y, bins, 500, dtype=np.float32), accumulate(x, y, bins, 500), rtol=1e-5)


def test_sorted_and_unsorted_bins_agree(data):
    x, y, bins = data
    order = np.argsort(bins, kind="stable")
    unsorted = accumulate(x, y, bins, len(x))
    in_order = accumulate(x[order], y[order], bins[order], len(x), stats=BinStats.zeros(NAMES, unsorted.c, unsorted.y0))
    assert_stats_close(in_order, unsorted, rtol=1e-12)


def test_add_is_exact_sum_and_iadd_in_place(data):
    x, y, bins = data
    a = accumulate(x[:1200], y[:1200], bins[:1200], 400, stats=fresh(x, y))
    b = accumulate(x[1200:], y[1200:], bins[1200:], 400, stats=fresh(x, y))
    a_values, b_values = {f: getattr(a, f) for f in FIELDS}, {f: getattr(b, f) for f in FIELDS}
    total = a + b
    for f in FIELDS:
        assert np.array_equal(getattr(total, f), a_values[f] + b_values[f])
        # a sum is new statistics: neither operand changes
        assert np.array_equal(getattr(a, f), a_values[f]) and np.array_equal(getattr(b, f), b_values[f]), f
    before = a._S.data
    a += b
    assert a._S.data is before  # += adds into the held tiles
    for f in FIELDS:
        assert np.array_equal(getattr(a, f), getattr(total, f))


def test_total_equals_one_bin_accumulation(data):
    x, y, bins = data
    per_bin = accumulate(x, y, bins, 700)
    single = BinStats.zeros(["global"], per_bin.c, per_bin.y0)
    accumulate(x, y, np.zeros_like(bins), 700, stats=single)
    total = per_bin.total()
    assert total.names == ("global",) and total.n_bins == 1
    assert_stats_close(total, single, rtol=1e-12)


def test_merge_and_select(data):
    x, y, bins = data
    stats = accumulate(x, y, bins, 1000)
    merged = stats.merge({"HM": ["H", "M"], "L": ["L"], "X": ["X"]})
    assert merged.names == ("HM", "L", "X")
    for f in FIELDS:
        arr = getattr(stats, f)
        assert np.array_equal(getattr(merged, f), np.stack([arr[0] + arr[1], arr[2], arr[3]]))
    relabelled = BinStats.zeros(["HM", "L", "X"], stats.c, stats.y0)
    accumulate(x, y, np.array([0, 0, 1, 2])[bins], 1000, stats=relabelled)
    assert_stats_close(merged, relabelled, rtol=1e-12)
    picked = stats.select(["X", "H"])
    assert picked.names == ("X", "H")
    for f in FIELDS:
        assert np.array_equal(getattr(picked, f), getattr(stats, f)[[3, 0]])
    with pytest.raises(ConfigError, match="'H' is in both"):
        stats.merge({"A": ["H"], "B": ["H", "M"]})
    with pytest.raises(ConfigError, match="unknown bin 'Q'"):
        stats.select(["Q"])


def test_shift_is_float32_exact(data):
    x, y, _ = data
    stats = BinStats.zeros(NAMES, np.full(x.shape[1], 0.1), 0.0)
    assert np.array_equal(stats.c, stats.c.astype(np.float32).astype(np.float64))
    assert stats.d == x.shape[1] and stats.n_bins == 4


def test_noise_variance_adds_to_diagonal(data):
    x, y, bins = data
    err = np.abs(x) * 0.1
    stats = fresh(x, y)
    stats.add_noise_variance(err, bins, 2.0)
    for k in range(4):
        expected = 4.0 * (err[bins == k].astype(np.float64) ** 2).sum(0)
        np.testing.assert_allclose(np.diag(stats.S[k]), expected, rtol=1e-12)
        assert np.count_nonzero(stats.S[k] - np.diag(np.diag(stats.S[k]))) == 0


def test_save_load_round_trip(tmp_path, data):
    from snrmoe_dask.io.models import read_stats, write_stats

    x, y, bins = data
    stats = accumulate(x, y, bins, 1000, dtype=np.float32)
    with h5py.File(tmp_path / "group.h5", "w") as f:
        write_stats(f.create_group("shard0"), stats)
        write_stats(f["shard0"], stats)  # again into the same group: datasets replaced
    with h5py.File(tmp_path / "group.h5", "r") as f:
        loaded = read_stats(f["shard0"])
        assert loaded.names == stats.names and loaded.y0 == stats.y0
        for name in ("c",) + FIELDS:
            assert np.array_equal(getattr(loaded, name), getattr(stats, name))
            assert getattr(loaded, name).dtype == getattr(stats, name).dtype
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["g/c"] = np.zeros(3)
        with pytest.raises(InputError, match="not a BinStats"):
            read_stats(f["g"])


def test_bad_input_leaves_stats_unchanged(data):
    x, y, bins = data
    stats = accumulate(x[:100], y[:100], bins[:100], 100)
    before = stats.copy()
    bad = x[:50].copy()
    bad[7, 3] = np.nan
    with pytest.raises(InputError, match="NaN or inf"):
        stats.add_block(bad, y[:50], bins[:50])
    with pytest.raises(InputError, match="bin_idx must lie"):
        stats.add_block(x[:50], y[:50], bins[:50] + 4)
    with pytest.raises(InputError, match=r"expected \(B, 48\)"):
        stats.add_block(x[:50, :10], y[:50], bins[:50])
    with pytest.raises(ConfigError, match="compute.precision"):
        stats.add_block(x[:50], y[:50], bins[:50], dtype=np.float16)
    for f in FIELDS:
        assert np.array_equal(getattr(stats, f), getattr(before, f))


def test_incompatible_sums_refused(data):
    x, y, _ = data
    a = fresh(x, y)
    with pytest.raises(InputError, match="bins"):
        a + BinStats.zeros(["A", "B", "C", "D"], a.c, a.y0)
    with pytest.raises(InputError, match="shifts"):
        a + BinStats.zeros(NAMES, a.c + 1, a.y0)
    with pytest.raises(InputError, match="shifts"):
        a + BinStats.zeros(NAMES, a.c, a.y0 + 1)
    with pytest.raises(InputError, match="pixels"):
        a + BinStats.zeros(NAMES, a.c[:5], a.y0)


@pytest.mark.parametrize("d", [8, 1024])  # numpy's own array; a mapping of its own (core.small_pages)
def test_an_accumulator_buffer_is_reused_only_when_nobody_can_read_it(d):
    import gc

    from snrmoe_dask.core import buffers

    gc.collect()  # garbage of earlier tests, collected while the pool is open, would fill it
    with buffers.pass_running():
        first = GramTiles(2, d)
        first.data[:] = 7.0
        address = first.data.__array_interface__["data"][0]
        kept = first.tile(0, 0)  # a view someone still holds: its buffer must never be handed on
        del first
        gc.collect()
        assert buffers.pooled() == 0 and (kept == 7.0).all()
        del kept
        second = GramTiles(2, d)
        second.data[:] = 5.0
        address = second.data.__array_interface__["data"][0]
        del second
        gc.collect()
        assert buffers.pooled() == 1  # nobody holds it: kept for the next accumulator of its shape
        assert GramTiles(3, d).data.__array_interface__["data"][0] != address  # another shape: a new buffer
        reused = GramTiles(2, d)
        assert reused.data.__array_interface__["data"][0] == address and not reused.data.any()  # zeroed
        total = reused + reused  # a sum is new; its operands do not change
        assert total.data is not reused.data and not reused.data.any()
        del reused, total
        gc.collect()
    assert buffers.pooled() == 0  # nothing is kept once no pass task runs


def test_an_accumulator_freed_while_its_thread_holds_the_pool_lock_does_not_wait():
    # the collector runs finalisers in whichever thread allocates: also inside owned_buffer, which holds the
    # pool's lock; a finaliser that waited for it there hung that task, and the process at exit, for good
    import threading

    from snrmoe_dask.core import buffers

    def free_under_the_lock() -> None:
        with buffers.pass_running():
            owner = GramTiles(2, 8)
            with buffers._lock:
                del owner  # its finaliser runs here, in this thread
            assert buffers.pooled() == 0  # not kept: a buffer the pool cannot take is simply freed

    thread = threading.Thread(target=free_under_the_lock, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the finaliser waited for a lock its own thread holds"


@pytest.mark.parametrize("d", [5, 129, 300])
def test_packed_upper_round_trips_through_the_tiles(d):
    from snrmoe_dask.core.stats import packed_start

    rng = np.random.default_rng(d)
    stats = BinStats.zeros(["H", "M"], np.zeros(d), 0.0)
    stats._S.data[:] = rng.random(stats._S.data.shape)
    dense = stats.copy().S
    packed = np.zeros((2, packed_start(d, d)))
    for k in range(2):
        for start, values in stats.packed_upper(k, rows=64):
            packed[k, start:start + values.size] = values
        assert np.array_equal(packed[k], np.concatenate([dense[k, i, i:] for i in range(d)]))
    back = BinStats(stats.names, stats.c, 0.0, stats.n, stats.s, GramTiles.from_packed(packed, d), stats.t,
                    stats.u, stats.q)
    assert np.array_equal(back.S, dense)


def test_the_total_read_tile_by_tile_is_the_total_bit_for_bit():
    """BinStats.total_tiles: what a solver reads of total(), with no summed copy of S (D above a tile)."""
    x, y, bins = spectra_like(n=400, d=700, seed=5)
    stats = accumulate(x, y, bins, block=100, dtype=np.float32)
    stats.mirror()
    total, view = stats.total(), stats.total_tiles()
    for f in ("n", "s", "t", "u"):
        assert np.array_equal(getattr(view, f), getattr(total, f)), f
    assert np.array_equal(view.gram_diagonal(0), total.gram_diagonal(0))
    tiles = [(i0, i1, j0, j1, np.vstack([tile[r:r + 50].copy() for r in range(0, i1 - i0, 50)]))
             for i0, i1, j0, j1, tile in view.upper_tiles("global")]  # read as a solver reads them
    assert len(tiles) > 1 and [t[:4] for t in tiles] == [t[:4] for t in total.upper_tiles(0)]
    for (*_, a), (*_, b) in zip(tiles, total.upper_tiles(0)):
        assert np.array_equal(a, b)
    with pytest.raises(ConfigError, match="unknown bin"):
        view.index("H")
