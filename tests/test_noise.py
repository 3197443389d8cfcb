"""Noise is a pure function of (seed, shard, row): block layout never changes a bit of it."""

import numpy as np
import pytest

from snrmoe_dask.core.noise import TILE_ROWS, add_noise, noise_draws
from snrmoe_dask.errors import ConfigError, InputError

N, D = 3000, 64


@pytest.fixture(scope="module")
def spectra():
    rng = np.random.default_rng(11)
    flux = (1.0 + 0.1 * rng.standard_normal((N, D))).astype(np.float32)
    error = (0.05 + 0.3 * rng.random((N, D))).astype(np.float32)
    return flux, error


def in_blocks(flux, error, block, **kw):
    return np.concatenate([add_noise(flux[i:i + block], error[i:i + block], 1.0, row0=i, **kw)
                           for i in range(0, len(flux), block)])


def test_slicing_invariant_bit_identical(spectra):
    flux, error = spectra
    whole = add_noise(flux, error, 1.0, seed=3, shard=2)
    for block in (1000, 777, 1, TILE_ROWS + 1):
        assert np.array_equal(in_blocks(flux, error, block, seed=3, shard=2).view(np.uint32), whole.view(np.uint32))


def test_row0_offsets_address_absolute_rows(spectra):
    flux, error = spectra
    whole = noise_draws(N, D, seed=5, shard=0)
    for a, b in [(0, 1), (5, 37), (16, 32), (1234, 2999), (2999, 3000)]:
        assert np.array_equal(noise_draws(b - a, D, seed=5, shard=0, row0=a), whole[a:b])


def test_documented_recipe_reproduces_draws():
    seed, shard, row0, n = 7, 4, 40, 30
    z = noise_draws(n, D, seed=seed, shard=shard, row0=row0)
    for row in range(row0, row0 + n):
        seq = np.random.SeedSequence(seed, spawn_key=(shard, row // TILE_ROWS))
        gen = np.random.Generator(np.random.SFC64(seq))
        tile = gen.standard_normal((TILE_ROWS, D), dtype=np.float32)
        assert np.array_equal(z[row - row0], tile[row % TILE_ROWS])


@pytest.mark.parametrize("level", [1.0, 0.5, 2.0])
def test_add_noise_is_flux_plus_scaled_draws(spectra, level):
    flux, error = spectra
    z = noise_draws(N, D, seed=1, shard=9)
    expected = flux + (z * error) * np.float32(level)
    assert np.array_equal(add_noise(flux, error, level, seed=1, shard=9), expected)


def test_level_only_scales_z():
    zeros, ones = np.zeros((100, D), np.float32), np.ones((100, D), np.float32)
    z = noise_draws(100, D, seed=2, shard=1)
    for level in (0.3, 1.0, 3.0):
        assert np.array_equal(add_noise(zeros, ones, level, seed=2, shard=1), z * np.float32(level))


@pytest.mark.parametrize("level", [0.0, -1.0, float("nan"), float("inf"), True, "1"])
def test_one_level_rule_everywhere(level):
    # the same rule (finite, > 0) for the noise, the SNR, the expected-noise sums and the spec
    from snrmoe_dask.core.noise import NoiseSpec
    from snrmoe_dask.core.snr import snr_norm
    from snrmoe_dask.core.stats import BinStats

    flux = np.ones((3, D), np.float32)
    stats = BinStats.zeros(["a"], np.zeros(D), 0.0)
    for call in (lambda: add_noise(flux, flux, level, seed=0, shard=0), lambda: snr_norm(flux, flux, level),
                 lambda: stats.add_noise_variance(flux, np.zeros(3, np.int8), level),
                 lambda: NoiseSpec(level=level)):
        with pytest.raises(ConfigError, match="noise.level"):
            call()


def test_seed_and_shard_change_the_noise():
    base = noise_draws(200, D, seed=0, shard=0)
    others = [noise_draws(200, D, seed=1, shard=0), noise_draws(200, D, seed=0, shard=1),
              noise_draws(200, D, seed=2 ** 64, shard=0), noise_draws(200, D, seed=2 ** 127 + 5, shard=0)]
    for other in others:
        assert np.mean(other == base) < 1e-3
        assert abs(np.corrcoef(base.ravel(), other.ravel())[0, 1]) < 0.02


def test_draws_look_standard_normal_and_rows_independent():
    z = noise_draws(N, D, seed=42, shard=3).astype(np.float64)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    # neighbouring rows (inside and across tiles) are uncorrelated
    r = np.corrcoef(z[:-1].ravel(), z[1:].ravel())[0, 1]
    assert abs(r) < 0.01
    row_means = z.mean(axis=1)
    assert abs(row_means.std() * np.sqrt(D) - 1.0) < 0.05


def test_dtype_and_in_place(spectra):
    flux, error = spectra
    expected = add_noise(flux, error, 0.7, seed=8, shard=1, row0=3)
    assert expected.dtype == np.float32
    work = flux.copy()
    result = add_noise(work, error, 0.7, seed=8, shard=1, row0=3, out=work)
    assert result is work and np.array_equal(work, expected)
    as64 = add_noise(flux.astype(np.float64), error.astype(np.float64), 0.7, seed=8, shard=1, row0=3)
    assert as64.dtype == np.float32 and np.array_equal(as64, expected)


def test_empty_block():
    assert add_noise(np.zeros((0, D), np.float32), np.zeros((0, D), np.float32), 1.0, seed=0, shard=0).shape == (0, D)


@pytest.mark.parametrize("kw", [dict(seed=-1, shard=0), dict(seed=0, shard=1.5), dict(seed=0, shard=0, row0=-3),
                                dict(seed=2 ** 128, shard=0), dict(seed=0, shard=2 ** 32),
                                dict(seed=0, shard=0, row0=2 ** 36 - 1)])
def test_bad_indices(spectra, kw):
    with pytest.raises(ConfigError):
        add_noise(spectra[0][:2], spectra[1][:2], 1.0, **kw)


def test_bad_level_and_shapes(spectra):
    flux, error = spectra
    with pytest.raises(ConfigError, match="noise.level"):
        add_noise(flux, error, -1.0, seed=0, shard=0)
    with pytest.raises(InputError, match="same shape"):
        add_noise(flux, error[:, :10], 1.0, seed=0, shard=0)
    with pytest.raises(InputError, match="out must be"):
        add_noise(flux, error, 1.0, seed=0, shard=0, out=np.empty(flux.shape, np.float64))
