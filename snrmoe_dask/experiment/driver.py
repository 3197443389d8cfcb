"""The driver: one pass over the training shards, every model solved, the test set routed and scored,
results, figures and report written atomically."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .._preload import import_quietly, preload
from ..core.alpha import is_selection
from ..engine.cluster import compute_context
from ..engine.dataset import open_shards
from ..engine.statistics import bin_statistics, pass_shift
from ..errors import InputError
from ..io.cache import ShardCache, remove_dead_temp_files
from ..io.forked import spare_time
from ..io.shards import refuse_duplicates
from ..io.space import Need, reason
from . import plan
from .config import ExperimentConfig, check_feature_dim, config_to_dict
from .evaluation import check_scorable, load_test_set, score
from .output_dir import claim_output_dir, protected_paths
from .write_results import Render, provenance, results_size, write_json, write_outputs

log = logging.getLogger(__name__)
# what a run needs only after its pass (the solves, scikit-learn, scipy.stats): imported while the pass runs
# (xarray's to_netcdf, which writes metrics.nc, imports dask.distributed to look for a client)
AFTER_THE_PASS = ("snrmoe_dask.engine.model", "scipy.linalg", "sklearn.metrics", "scipy.stats",
                  "snrmoe_dask.experiment.scaling", "netCDF4", "dask.distributed")
# how the log names each phase of ``timings_s`` (its keys stay as results.json has always had them)
PHASE_LABELS = {"pass": "train", "validation pass": "validation"}


# ----------------------------------------------------------------------------- phases
class Timer:
    """Phase timings for the log and results.json (a phase entered twice counts both times)."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.timings: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        took = time.perf_counter() - start
        self.timings[name] = round(self.timings.get(name, 0.0) + took, 3)
        log.info("%s: done in %.2f s", PHASE_LABELS.get(name, name), took)

    def finish(self) -> dict[str, float]:
        self.timings["total"] = round(time.perf_counter() - self.t0, 3)
        return self.timings


def cache_dir(cfg: ExperimentConfig) -> Path | None:
    """Where the per-shard statistics live: compute.cache_dir, by default beside the results."""
    if not cfg.compute.cache:
        return None
    # absolute: a worker resolves a relative path in its own working directory
    folder = Path(cfg.compute.cache_dir) if cfg.compute.cache_dir else cfg.output_dir.parent / ".snrmoe-cache"
    return folder.absolute()


def _made(folder: Path | None) -> list[Path]:
    """[folder], created if missing (so that workers can be asked whether they see it); [] when it
    cannot be: the cache then warns and the run goes on without it."""
    if folder is None:
        return []
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return []
    return [folder]


def _open(cfg: ExperimentConfig):
    """The training, test and (when alpha is chosen on it) validation sets as lazy Datasets, checked
    before any pass: layout, dtypes, the params columns the run reads, no file named twice, and test
    and validation sets that R² can score."""
    root, target, rows = cfg.data.root, cfg.data.target, cfg.compute.block_rows
    if is_selection(cfg.model.alpha) and not cfg.data.val_file:
        raise InputError(f"model.alpha: {cfg.model.alpha!r} chooses alpha on a validation set; set data.val_file")
    partition = cfg.partition
    columns = [] if partition.is_snr else list(partition.columns)  # routing columns of the table
    train_columns = columns + ["snr"] * (cfg.snr.method == "column")
    test_columns = train_columns + ["snr"] * (cfg.noise.test == "pre_noised")
    train = open_shards(cfg.data.train_shards, target=target, block_rows=rows, root=root, columns=train_columns)
    test = open_shards([cfg.data.test_file], target=target, block_rows=rows, root=root, columns=test_columns)
    val = (open_shards([cfg.data.val_file], target=target, block_rows=rows, root=root, first_shard=plan.VAL_SHARD_INDEX,
                       columns=train_columns) if is_selection(cfg.model.alpha) else None)
    scored = {"data.test_file": test, "data.val_file": val}
    for key, ds in scored.items():
        files = ds.attrs["files"] if ds is not None else []
        if len(files) > 1:
            raise InputError(f"{key}: {getattr(cfg.data, key.split('.')[1])!r} names {len(files)} files "
                             f"({files[0]}, {files[1]}, ...); expected one")
    sets = {"data.train_shards": train, **scored}
    refuse_duplicates({key: [Path(f) for f in ds.attrs["files"]] for key, ds in sets.items() if ds is not None})
    for key, ds in scored.items():
        if ds is not None:
            check_scorable(ds[target].values, ds.attrs["files"], target, key)
    check_feature_dim(cfg, train.sizes["pixel"])
    for ds in (test, val):
        if ds is None:
            continue
        path, first = ds.attrs["files"][0], train.attrs["files"][0]
        if ds.sizes["pixel"] != train.sizes["pixel"]:
            raise InputError(f"{path}: {ds.sizes['pixel']} pixels but {first} has {train.sizes['pixel']}")
        if not np.allclose(ds.wave.values, train.wave.values, rtol=0, atol=1e-3):
            raise InputError(f"{path}: wavelength grid differs from that of {first}")
    return train, test, val


def _labelled(obj, label: str):
    """``obj`` under a key named ``label`` (a pass-through task), so that progress lines say which phase
    they count ('train: 12/40 tasks'), whatever the graph's last task is (a cache save, a list of shards)."""
    from dask import delayed
    from dask.base import tokenize

    return delayed(_same, pure=True)(obj, dask_key_name=f"{label}-{tokenize(obj)}")


def _same(value):
    return value


def _target_range(ds, target: str) -> tuple[float, float]:
    """(min, max) of the training targets (a params-table column, in memory)."""
    values = np.asarray(ds[target].values, dtype=np.float64)
    return float(values.min()), float(values.max())


def run_experiment(cfg: ExperimentConfig, render: Render | None = None, progress: bool = True,
                   room: Sequence[Need] = ()) -> dict:
    """Run the whole experiment of ``cfg``; returns the results dict also written to results.json.

    render: writes the human-readable outputs (figures, report) into the folder before it is
    published, e.g. ``snrmoe_dask.report.render.renderer("zh")``; None writes the data files only.
    room: what the caller will write elsewhere after the run (the owner's copies, tracking files, a
    log), checked with the results folder for permission and free space before the pass.
    """
    timer = Timer()
    later = ["dask.array", *AFTER_THE_PASS, *getattr(render, "modules", ())]
    # the imports, while a forked copy of the process opens a survey's files (io.forked): the pass would
    # otherwise share the GIL with them
    with timer.phase("open"), spare_time([lambda name=name: import_quietly(name) for name in later]):
        train_ds, test_ds, val_ds = _open(cfg)
        target_range = _target_range(train_ds, cfg.data.target)
        log.info("training on %d shards, %s spectra x %d pixels", len(train_ds.attrs["files"]),
                 f"{train_ds.sizes['sample']:,}", train_ds.sizes["pixel"])
    folder = cache_dir(cfg)
    cache = (ShardCache(folder, max_gb=cfg.compute.cache_max_gb, min_gflop=cfg.compute.cache_min_gflop,
                        max_ratio=cfg.compute.cache_max_ratio)
             if folder is not None else None)
    options = plan.pass_options(cfg)
    opened = [ds for ds in (train_ds, test_ds, val_ds) if ds is not None]
    files = [Path(f) for ds in opened for f in ds.attrs["files"]]
    sources = [s or None for ds in opened for s in ds.attrs["sources"]]
    # every check on output.dir, and the lock held until the results are in place, before the pass
    size = results_size(cfg.partition.n_cells, train_ds.sizes["pixel"], test_ds.sizes["sample"])
    with claim_output_dir(cfg.output_dir, cfg.experiment.id, protected_paths(cfg, files, folder), size,
                          room) as output:
        remove_dead_temp_files(folder)
        test = val = shift = None
        seen = [*files, *_made(folder)]  # every worker must see them, at these (absolute) paths
        if cfg.evaluation.scaling:  # the curve's points are tasks of the pass: the test set goes in first
            with timer.phase("test"):  # (before the imports below, which would share the GIL with it)
                test = load_test_set(test_ds, partition=cfg.partition, **plan.test_options(cfg))
        preload(later)
        with compute_context(cfg.compute.scheduler, cfg.compute.workers, progress, cfg.compute.connect_timeout,
                             seen) as compute:
            if val_ds is not None:  # first, so that the points of a scaling curve can choose alphas on it
                shift = pass_shift(train_ds, **plan.shift_options(cfg))
                with timer.phase("validation pass"):
                    val = compute(_labelled(bin_statistics(val_ds, **options, shift=shift, cache=cache,
                                                           label="validation"), "validation"))
            if cfg.evaluation.scaling:
                from .scaling import curve_graph  # (its points import the model in their tasks, during the pass)

                with timer.phase("pass"):
                    train, points = compute(_labelled(curve_graph(
                        train_ds, model=plan.model_options(cfg), test=test, val=val,
                        partition=cfg.partition, cache=cache, label="train", shift=shift, **options,
                        **plan.scaling_options(cfg)), "train"))
            else:
                with timer.phase("pass"):
                    train = compute(_labelled(bin_statistics(train_ds, **options, shift=shift, cache=cache,
                                                             label="train"), "train"))
        from ..engine.model import BinnedRidge

        with timer.phase("solve"), plan.config_keys():
            model = BinnedRidge(**plan.model_options(cfg)).fit(train, val)
        with timer.phase("test"):
            if test is None:
                test = load_test_set(test_ds, partition=cfg.partition, **plan.test_options(cfg))
            results, predictions = score(model, test, partition=cfg.partition, train=train,
                                         train_target_range=target_range, **plan.score_options(cfg))
        if cfg.evaluation.scaling:
            from .scaling import curve, point_of

            with timer.phase("scaling"):
                parts = len(train_ds.attrs["files"]) * cfg.evaluation.scaling_splits
                last = point_of(results, parts)
                log.info("scaling: point %d/%d, N=%s, dR2 %+.4f (the whole set: the run's own results)",
                         len(points) + 1, len(points) + 1, f"{last['n_train']:,}", last["delta_r2"])
                results["scaling"] = {"splits": cfg.evaluation.scaling_splits,
                                      **curve([*points, last], **plan.curve_options(cfg))}
        results["data"] = {"n_train": int(train.stats.n.sum()), "n_test": len(test.y),
                           "pixels": train_ds.sizes["pixel"], "train_files": train_ds.attrs["files"],
                           "test_file": test_ds.attrs["files"][0],
                           "val_file": val_ds.attrs["files"][0] if val_ds is not None else None}
        results["config"] = config_to_dict(cfg)
        results["provenance"] = provenance(cfg, files, sources)
        results["output_dir"] = str(cfg.output_dir)
        with output.build() as partial:
            try:
                with timer.phase("write"):
                    results["timings_s"] = dict(timer.finish())  # what the figures and the report show
                    write_outputs(partial, results, predictions, model, render)
                # the write phase counts too: results.json's total ends when the folder is complete
                results["timings_s"] = dict(timer.finish())
                write_json(partial / "results.json", results)
            except (OSError, RuntimeError) as exc:  # h5py and netCDF report a full disk as either
                what = Path(exc.filename).name if getattr(exc, "filename", None) else "the results"
                raise InputError(f"output.dir {cfg.output_dir}: cannot write {what} ({reason(exc)}); "
                                 "nothing was published") from None
    log.info("results in %s", cfg.output_dir)
    return results


DEMO_TRAIN = (5, 20000)
DEMO_VAL = DEMO_TEST = 1000
DEMO_SEED = 20251226
DEMO_PIXELS = 4096


def demo_config_path() -> Path:
    return Path(__file__).resolve().parents[2] / "config" / "demo.yaml"


def ensure_demo_data(data_dir: Path = Path(".demo-data"), progress: bool = True) -> Path:
    """The demo set's root ``data_dir/demo``, simulated there once (5 x 20,000 train, 1,000 val,
    1,000 test, 4096 pixels); a ``COMPLETE`` marker, written last, says a finished set is there."""
    from ..io.simulate import simulate_set

    root = Path(data_dir) / "demo"
    marker = root / "COMPLETE"
    if not marker.exists():
        log.info("simulating the demo set into %s (once)", root)
        simulate_set(root, train=DEMO_TRAIN, val=DEMO_VAL, test=DEMO_TEST, seed=DEMO_SEED, pixels=DEMO_PIXELS,
                     progress=progress)
        marker.write_text("simulated by snrmoe demo\n")
    return root
