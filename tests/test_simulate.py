"""The simulator: real layout, determinism, parameter draws, SNR calibration and physics."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from snrmoe_dask.io import simulate as sim
from snrmoe_dask.errors import ConfigError, InputError
from snrmoe_dask.io.shards import (
    ERROR_KEY,
    FLUX_KEY,
    PARAM_COLUMNS,
    inspect_shard,
    read_rows,
)

WAVE = sim.make_wave(4096)


def stars(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = sim.shard_rng(seed, 0)
    return sim.draw_params(n, rng), sim.draw_nuisance(n, rng)


def fixed_stars(**columns) -> pd.DataFrame:
    """Stars that differ only in the columns given as arrays."""
    n = max([np.size(v) for v in columns.values()], default=1)
    base = dict(T_eff=4800.0, log_g=3.0, M_H=-0.5, a_M=0.1, C_M=0.0, mag=21.0)
    base.update(columns)
    return pd.DataFrame({k: np.broadcast_to(np.asarray(v, dtype=float), n) for k, v in base.items()})


def window(lo: float, hi: float) -> np.ndarray:
    return (WAVE >= lo) & (WAVE <= hi)


def snr_in_blocks(n: int, seed: int) -> np.ndarray:
    params, nuisance = stars(n, seed)
    return np.concatenate([
        sim.snr_norm(*sim.spectra(params.iloc[s:s + 4096], WAVE, nuisance[s:s + 4096]))
        for s in range(0, n, 4096)
    ])


# ----------------------------------------------------------------------------- grid and parameters
def test_wave_grid_covers_the_mr_arm_unevenly():
    assert WAVE.shape == (4096,) and WAVE.dtype == np.float64
    assert WAVE[0] == pytest.approx(7100.0) and WAVE[-1] == pytest.approx(8850.0)
    step = np.diff(WAVE)
    assert (step > 0).all() and step[-1] / step[0] > 1.2  # log-lambda: not evenly spaced
    pixels_per_fwhm = (WAVE[:-1] / sim.RESOLUTION) / step
    assert 3.0 < pixels_per_fwhm.min() and pixels_per_fwhm.max() < 4.5
    assert sim.make_wave(512).shape == (512,)


def test_params_ranges_and_training_means():
    params, nuisance = stars(20000)
    assert list(params.columns) == list(PARAM_COLUMNS)
    for col, (lo, hi, mean, sd) in sim.BETA_PARAMS.items():
        assert params[col].between(lo, hi).all(), col
        assert params[col].mean() == pytest.approx(mean, abs=0.03 * (hi - lo)), col
        assert params[col].std() == pytest.approx(sd, rel=0.05), col
    assert params["mag"].between(20.5, 22.5).all() and params["mag"].std() == pytest.approx(2 / 12**0.5, rel=0.03)
    assert (params["redshift"] == 0).all() and params["snr"].isna().all()
    assert nuisance.shape == (20000, len(sim.NUISANCE_COLUMNS))


def test_shards_draw_independent_stars():
    a = sim.draw_params(50, sim.shard_rng(0, 0))
    b = sim.draw_params(50, sim.shard_rng(0, 1))
    c = sim.draw_params(50, sim.shard_rng(1, 0))
    assert not np.allclose(a["log_g"], b["log_g"]) and not np.allclose(a["log_g"], c["log_g"])
    pd.testing.assert_frame_equal(a, sim.draw_params(50, sim.shard_rng(0, 0)))


# ----------------------------------------------------------------------------- determinism
def test_spectra_rows_do_not_depend_on_the_block():
    params, nuisance = stars(300)
    wave = sim.make_wave(256)
    flux, error = sim.spectra(params, wave, nuisance)
    for size in (1, 7, 128, 129):
        parts = [sim.spectra(params.iloc[s:s + size], wave, nuisance[s:s + size]) for s in range(0, 300, size)]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), flux)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), error)


def test_files_are_identical_for_any_block_rows_and_workers(tmp_path):
    runs = [(300, 1), (7, 2), (64, 3)]
    paths = [sim.simulate_shard(tmp_path / f"r{i}/dataset.h5", 300, seed=3, shard=1, pixels=256,
                                block_rows=rows, workers=workers) for i, (rows, workers) in enumerate(runs)]
    with h5py.File(paths[0], "r") as ref:
        flux, error = ref[FLUX_KEY][...], ref[ERROR_KEY][...]
    for path in paths[1:]:
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(f[FLUX_KEY][...], flux)
            np.testing.assert_array_equal(f[ERROR_KEY][...], error)
        pd.testing.assert_frame_equal(inspect_shard(path).params, inspect_shard(paths[0]).params)


# ----------------------------------------------------------------------------- files
def test_set_layout_names_and_independent_shards(tmp_path):
    paths = sim.simulate_set(tmp_path, train=(2, 1000), val=1500, test=1000, seed=0, pixels=64,
                             block_rows=400, progress=False)
    names = [p.relative_to(tmp_path).as_posix() for p in paths]
    assert names == ["train_1k_0/dataset.h5", "train_1k_1/dataset.h5", "val_1500/dataset.h5", "test_1k_0/dataset.h5"]
    logg = [inspect_shard(p).params["log_g"].to_numpy() for p in paths]
    assert not np.allclose(logg[0], logg[1]) and not np.allclose(logg[0][:1000], logg[2][:1000])

    only_train = sim.simulate_set(tmp_path / "t", train=(1, 2000), val=0, test=0, seed=0, pixels=64, progress=False)
    assert [p.parent.name for p in only_train] == ["train_2k_0"]
    assert sim.count_label(200000) == "200k" and sim.count_label(1500) == "1500"


def test_round_trip_through_the_reader(tmp_path):
    path = sim.simulate_shard(tmp_path / "s/dataset.h5", 500, seed=1, shard=0, pixels=512, block_rows=128)
    info = inspect_shard(path)
    assert (info.n, info.d) == (500, 512)
    np.testing.assert_allclose(info.wave, sim.make_wave(512), rtol=1e-6)
    flux, error = read_rows(path, 0, 500)
    assert (flux >= 0).all() and np.isfinite(flux).all()
    assert (error > 0).all() and np.isfinite(error).all()
    snr = np.linalg.norm(flux.astype(np.float64), axis=1) / np.linalg.norm(error.astype(np.float64), axis=1)
    np.testing.assert_allclose(info.params["snr"].to_numpy(), snr, rtol=1e-9)
    assert list(info.params.columns) == list(PARAM_COLUMNS)


# ----------------------------------------------------------------------------- calibration and physics
def test_snr_distribution_matches_the_real_training_set():
    snr = snr_in_blocks(20000, seed=7)
    shares = [(snr < 2).mean(), ((snr >= 2) & (snr < 4)).mean(), ((snr >= 4) & (snr < 7)).mean(), (snr >= 7).mean()]
    np.testing.assert_allclose(shares, [0.29, 0.38, 0.30, 0.03], atol=0.04)  # bins X, L, M, H
    assert np.median(snr) == pytest.approx(2.93, abs=0.3)
    assert 8.0 <= snr.max() <= 10.0


def test_error_is_heteroscedastic_with_sky_lines():
    _, error = sim.spectra(fixed_stars(mag=[21.0]), WAVE)
    err = error[0]
    assert err.max() / np.median(err) > 5  # bright OH lines
    peaks = np.flatnonzero((err[1:-1] > 3 * np.median(err)) & (err[1:-1] >= err[:-2]) & (err[1:-1] >= err[2:])) + 1
    assert len(peaks) > 50
    assert (WAVE[peaks] > 7700).mean() > 0.6  # the OH forest is densest redward of 7700 A
    a_band = err[window(7595, 7620)].mean() / err[window(7520, 7560)].mean()
    assert a_band > 1.5  # telluric O2 A band cuts the throughput


def test_fainter_stars_have_larger_errors_and_positive_flux():
    flux, error = sim.spectra(fixed_stars(mag=[20.5, 21.5, 22.5]), WAVE)
    assert (flux > 0).all()
    assert (np.median(error, axis=1)[1:] > np.median(error, axis=1)[:-1] * 2).all()


def test_gravity_lines_deepen_in_dwarfs_at_fixed_temperature():
    logg = np.linspace(1.0, 5.0, 9)
    flux, _ = sim.spectra(fixed_stars(log_g=logg), WAVE)
    ca_wings = flux[:, window(8535, 8538) | window(8546, 8549)].mean(axis=1)
    na = flux[:, window(8193.5, 8196)].mean(axis=1)
    mg = flux[:, window(8805.5, 8808)].mean(axis=1)
    for depth_flux in (ca_wings, na, mg):
        assert (np.diff(depth_flux) < 0).all()
    hot, _ = sim.spectra(fixed_stars(T_eff=5900.0, log_g=logg), WAVE)
    o_i = hot[:, window(7771, 7776)].mean(axis=1)
    assert (np.diff(o_i) > 0).all()  # O I triplet stronger in giants


def test_log_g_correlates_with_line_depth_among_random_stars():
    params, nuisance = stars(4000, seed=3)
    flux, _ = sim.spectra(params, WAVE, nuisance)
    pick = params["T_eff"].between(4600, 5000).to_numpy() & params["M_H"].between(-0.65, -0.35).to_numpy()
    near = flux[:, window(8180, 8200)].mean(axis=1) / flux[:, window(8200, 8215)].mean(axis=1)
    assert pick.sum() > 100
    assert np.corrcoef(near[pick], params["log_g"].to_numpy()[pick])[0, 1] < -0.5


def test_tio_bands_only_in_cool_stars():
    teff = np.array([3750.0, 3850.0, 4500.0, 5000.0, 5900.0])
    for logg in (1.5, 4.5):
        flux, _ = sim.spectra(fixed_stars(T_eff=teff, log_g=logg), WAVE)
        head = 1 - flux[:, window(7592, 7604)].mean(axis=1) / flux[:, window(7568, 7580)].mean(axis=1)
        assert head[0] > 0.05 and head[1] > 0.03
        assert np.abs(head[2:]).max() < 0.02


def test_ridge_learns_log_g_but_not_perfectly():
    params, nuisance = stars(4000, seed=11)
    flux, error = sim.spectra(params, WAVE, nuisance)
    noisy = flux + np.random.default_rng(0).standard_normal(flux.shape, dtype=np.float32) * error
    y, snr = params["log_g"].to_numpy(), sim.snr_norm(flux, error)
    model = make_pipeline(StandardScaler(), Ridge(alpha=3000.0)).fit(noisy[:3000], y[:3000])
    pred = model.predict(noisy[3000:])
    r2 = r2_score(y[3000:], pred)
    assert 0.15 < r2 < 0.9
    high, low = snr[3000:] >= 4, snr[3000:] < 2
    assert r2_score(y[3000:][high], pred[high]) > r2_score(y[3000:][low], pred[low]) + 0.1


# ----------------------------------------------------------------------------- bad input
def test_bad_input_gives_one_line_errors():
    with pytest.raises(ConfigError, match="pixels: expected an integer >= 16, got 0"):
        sim.make_wave(0)
    with pytest.raises(InputError, match="log_g"):
        sim.spectra(fixed_stars().drop(columns="log_g"), WAVE)
    with pytest.raises(InputError, match="nuisance has shape"):
        sim.spectra(fixed_stars(), WAVE, np.zeros((1, 2)))
    with pytest.raises(ConfigError, match="train="):
        sim.simulate_set("/nonexistent", train=(1,), val=0, test=0, seed=0)
    with pytest.raises(ConfigError, match="block_rows: expected an integer >= 1, got 0"):
        sim.simulate_shard("/nonexistent/dataset.h5", 10, seed=0, shard=0, block_rows=0)
