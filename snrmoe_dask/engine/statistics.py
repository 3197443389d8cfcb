"""``bin_statistics``: the one pass over a Dataset of spectra, as a lazy dask object.

For every bin of a partition (SNR bins by default, or cells of params columns) it sums the
sufficient statistics of StandardScaler + Ridge over the noisy spectra of that bin, together with
the per-row SNR and the repair counts, in one read of the data (see ``core.stats`` and ``core.block_pass``).
The result is a ``dask.delayed`` object: ``.compute()``, ``.persist()``, ``dask.compute`` and a
``distributed.Client`` all run it, and its tasks (one per segment of rows) show on the dashboard.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from dask import delayed

from ..core import card_defaults
from ..core.block_pass import PassSpec
from ..core.noise import NoiseSpec
from ..core.params import check_number
from ..core.partition import Partition, make_partition
from ..core.snr import SNR_METHODS
from ..errors import ConfigError, InputError
from .blocks import Block, plan_blocks, split_blocks
from .dataset import DEFAULT_BLOCK_ROWS, SHARD_FILES, shard_files, shard_sources
from .cached_pass import CachedPass
from .graph import ShardRows, SmallShards, gather_small_shards, part_graph, reduce_graph, tree_graph
from .segment import load_block
from .sources import ArrayRows, RowSource

log = logging.getLogger(__name__)

SEGMENT_ROWS = 65536  # rows per task: one running sum each (see engine.blocks)
SHIFT_ROWS = 1024  # rows whose mean is the shift c; fixed, so c does not depend on the block size
PRECISIONS = ("float32", "float64")


def bin_statistics(ds, *, target: str = card_defaults.TARGET, bins: Mapping[str, Sequence[float]] | None = None,
                   by: str | Sequence[str] | np.ndarray | None = None,
                   noise: NoiseSpec | Mapping[str, Any] | None = None, snr: str = card_defaults.SNR_METHOD,
                   precision: str = "float32", clip_flux: bool = True, features: bool = False,
                   block_rows: int | None = None, shift: tuple[np.ndarray, float] | None = None,
                   per_shard: bool = False, splits: int = 1, cache=None, label: str = "train"):
    """The per-bin sufficient statistics of a Dataset of spectra, lazily, in one pass.

    Parameters
    ----------
    ds : xarray.Dataset
        ``flux`` and ``error`` (sample, pixel) float arrays, dask (row-chunked) or numpy, and the
        ``target`` as a (sample,) variable: from :func:`open_shards`, ``xarray.open_zarr``,
        ``xarray.open_mfdataset`` or built by hand. Optional ``shard`` and ``row`` (sample,)
        coordinates give each spectrum's noise identity (default: shard 0, rows 0..N-1).
        Straight from :func:`open_shards`, the shard files are read directly (O_DIRECT); any other
        source through dask's own chunk reads. The same spectra give the same statistics.
    target : str
        The variable to regress (the card: ``log_g``).
    bins : mapping, optional
        ``{name: [low, high)}``. For SNR binning (``by`` None) they must tile [0, inf): the card's
        H, M, L, X by default. With ``by``, bins of that column (required).
    by : str, list of two str or (sample,) array, optional
        Partition by a (sample,) variable (e.g. ``"T_eff"``), by a grid of two (with ``bins``
        ``{col: {name: [low, high)}}``), or by given (sample,) values. None: by SNR.
    noise : NoiseSpec or mapping, optional
        ``{"level": 1.0, "seed": 42, "mode": "sample" | "expected" | "none"}``; the card's by default.
    snr : {"norm", "median", "column"}
        Per-spectrum SNR of the noise-free flux: ||flux|| / ||error * level|| (the card),
        median(flux / error) / level, or the ``snr`` variable / level.
    precision : {"float32", "float64"}
        Dtype of the block products; the sums are float64 either way.
    clip_flux : bool
        Clip negative flux to 0 before the noise (the card).
    features : bool
        Also keep the 10 error-only quality features of every row (for the deployable gate).
    block_rows : int, optional
        Rows per block (default: the row chunk of ``flux``, else 4096). Changes numbers only at rounding.
    shift : (c, y0), optional
        The fixed shift of the products ((D,) and a float); default: the means of the first rows.
        Statistics to be added to others must share it.
    per_shard : bool
        Return one result per shard (in order) instead of their sum. Without it, runs of shards smaller
        than a block are summed together, one task each (``engine.graph.SmallShards``).
    splits : int
        Sum each shard as ``splits`` sub-shards of nearly equal rows, cut on block edges, each a
        result of its own (with ``per_shard``: ``splits`` results per shard, in order). The noise
        is unchanged; the sub-shards add up to the shard's statistics up to rounding (the sums run
        in another order). Each sub-shard's statistics are held, and cached, separately.
    cache : snrmoe_dask.io.cache.ShardCache, optional
        Results kept on disk, per shard and (without ``per_shard``) summed over the shard list:
        used only when the Dataset is straight from shard files. The cache is looked up now, when
        the graph is built (a cached shard becomes a load task, a missing one a pass and a save
        task); entries are read and written only when the graph runs (see ``engine.cached_pass``).

    Returns
    -------
    dask.delayed.Delayed
        Its value is a :class:`PassResult` (``.stats``: the :class:`BinStats` of every bin;
        ``.snr_values``; ``.repairs``), or a list of them with ``per_shard`` (their
        :func:`sum_results` is the value without it, bit for bit when no shard is smaller than a block,
        else to rounding). Its task names follow every input,
        and no task changes a value that another task, graph or client holds: results can be
        computed together, persisted and computed again.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> from snrmoe_dask import bin_statistics
    >>> rng = np.random.default_rng(0)
    >>> flux = 1 + 0.1 * rng.standard_normal((500, 16))
    >>> error = np.full((500, 16), 0.25)
    >>> ds = xr.Dataset({"flux": (("sample", "pixel"), flux), "error": (("sample", "pixel"), error),
    ...                  "log_g": ("sample", rng.uniform(1, 5, 500))})
    >>> result = bin_statistics(ds).compute()
    >>> result.stats.names, int(result.stats.n.sum())
    (('H', 'M', 'L', 'X'), 500)
    """
    plan = _plan(ds, target=target, bins=bins, by=by, noise=noise, snr=snr, precision=precision,
                 clip_flux=clip_flux, features=features, block_rows=block_rows, shift=shift, splits=splits,
                 gather=not per_shard)
    # every task is named after the output it serves: a total's partial sums are added into in place,
    # so they must never be the tasks of a per-shard result (see engine.graph)
    name = f"{label}-{'shards' if per_shard else 'total'}-{plan.token}"
    cached = _through_cache(cache, plan, target)
    if cached is not None and not per_shard:
        total = cached.load_total(name, label)
        if total is not None:
            return total
    parts = cached.part_graphs(name, label) if cached is not None else _part_graphs(plan, name)
    if per_shard:
        return delayed(list, pure=True)(parts, dask_key_name=name)
    total = tree_graph(parts, name)
    return cached.save_total(total, name) if cached is not None else total


def statistics_and_prefixes(ds, readers: Callable[[list[int]], Mapping[int, Callable[[list], Any]]], *,
                            label: str = "train", cache=None, **options):
    """The pass of ``bin_statistics(ds, **options)`` (its total, bit for bit) and, in the same graph, a
    task per chosen prefix of its parts (shards, or sub-shards with ``splits``) that reads their sum.

    readers(rows of each part) -> {k: fn(blocks) -> a delayed value} for some k in 1..parts: ``blocks``
    are delayed partial sums of the pass whose :func:`~snrmoe_dask.core.sum_order.fold_blocks` is the sum
    of the first k parts (bit for bit a pass over them); fn's task must not change them. The pass's
    adds wait for the readers of what they add into, so each prefix is read once, as soon as its parts
    are summed, and no D x D sums are held for it afterwards. Returns a delayed (total PassResult,
    {k: fn's value}).
    """
    plan = _plan(ds, **options)
    readers = readers([rows.n for rows in plan.parts])
    name = f"{label}-prefixes-{plan.token}"
    cached = _through_cache(cache, plan, options.get("target", card_defaults.TARGET))
    parts = cached.part_graphs(name, label) if cached is not None else _part_graphs(plan, name)
    if readers and (min(readers) < 1 or max(readers) > len(parts)):
        raise InputError(f"prefixes {sorted(readers)}: expected counts of parts between 1 and {len(parts)}")
    total, read = reduce_graph(parts, name, readers)
    if cached is not None:
        total = cached.save_total(total, name)
    return delayed(tuple, pure=True)([total, delayed(dict, pure=True)(read, dask_key_name=f"{name}-read")],
                                     dask_key_name=name)


@dataclass(eq=False)
class _Plan:
    """What a pass reads and how: its parts (shards, sub-shards or runs of small shards) with the file of
    each (None for arrays), the specification, the block size and the token of its inputs."""

    parts: list[ShardRows | SmallShards]
    paths: list[Path | tuple[Path, ...] | None]  # a run of small shards: the files of its shards
    spec: PassSpec
    block_rows: int
    token: str
    files: list[Path] | None


def _plan(ds, *, target: str = card_defaults.TARGET, bins=None, by=None, noise=None,
          snr: str = card_defaults.SNR_METHOD, precision: str = "float32", clip_flux: bool = True,
          features: bool = False, block_rows: int | None = None, shift=None, splits: int = 1,
          gather: bool = True) -> _Plan:
    """The arguments of :func:`bin_statistics` checked and turned into the parts of a pass: shards or
    sub-shards, and with ``gather`` runs of small shards (``engine.graph.gather_small_shards``)."""
    flux, error = _spectra(ds)
    y = sample_values(ds, target, "target")
    partition = _partition(bins, by)
    noise = NoiseSpec.of(noise)
    if snr not in SNR_METHODS:
        raise ConfigError(f"snr: expected one of {', '.join(SNR_METHODS)}, got {snr!r}")
    splits = check_number("splits", splits, "an integer >= 1", integer=True, test=lambda n: n >= 1)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision: expected float32 or float64, got {precision!r}")
    table_snr = sample_values(ds, "snr", "the snr column") if snr == "column" else None
    cells = None if partition.is_snr else partition.assign(_labels(ds, partition, by))
    block_rows = int(block_rows or _row_chunk(ds, flux))
    shard, row = _identity(ds, len(y))
    blocks_of = plan_blocks(shard, row, block_rows)
    readers = shard_sources(ds)
    files = [Path(r.name) for r in readers] if readers else None
    first = int(shard[0])
    sources = {k: readers[k - first] if readers else ArrayRows(flux, error, 0) for k in blocks_of}
    c, y0 = shift if shift is not None else _shift(sources[first], blocks_of[first], y, clip_flux)
    spec = PassSpec(bins=partition, snr_method=snr, noise=noise, c=np.asarray(c, np.float64), y0=float(y0),
                    clip_flux=bool(clip_flux), precision=precision, features=bool(features))
    token = _token(flux, error, files, shard, row, (y, table_snr, cells), spec, block_rows, splits)
    parts, paths = [], []
    for k, blocks in blocks_of.items():
        shard_name = files[k - first].parent.name if files else f"shard {k}"
        for j, run in enumerate(split_blocks(blocks, splits, shard_name)):
            at = np.concatenate([np.arange(b.start, b.stop) for b in run])
            parts.append(ShardRows(k, sources[k], tuple(run), y[at], None if table_snr is None else table_snr[at],
                                   None if cells is None else cells[at], (j, splits) if splits > 1 else None))
            paths.append(files[k - first] if files else None)
    if gather:
        path_of = dict(zip(map(id, parts), paths))
        parts = gather_small_shards(parts, block_rows)
        paths = [path_of[id(p)] if isinstance(p, ShardRows) else
                 (tuple(path_of[id(m)] for m in p.members) if files else None) for p in parts]
    return _Plan(parts, paths, spec, block_rows, token, files)


# ----------------------------------------------------------------------------- inputs
def _spectra(ds) -> tuple[Any, Any]:
    """``flux`` and ``error`` as (N, D) dask or numpy float arrays, checked."""
    missing = [v for v in ("flux", "error") if v not in ds.variables]
    if missing:
        raise InputError(f"the Dataset has no {missing[0]!r} variable; expected flux and error (sample, pixel)")
    flux, error = ds["flux"], ds["error"]
    for var in (flux, error):
        if var.ndim != 2 or var.dims[0] != "sample":
            raise InputError(f"{var.name}: expected dims (sample, pixel), got {var.dims}")
        if var.dtype.kind != "f":
            raise InputError(f"{var.name}: expected floating-point values, got dtype {var.dtype}")
    if flux.shape != error.shape:
        raise InputError(f"error has shape {error.shape} but flux has {flux.shape}")
    return flux.data, error.data


def sample_values(ds, name: str, what: str = "a variable") -> np.ndarray:
    """(N,) float64 values of a (sample,) variable; NaN or inf raise naming the first sample."""
    if name not in ds.variables:
        raise InputError(f"the Dataset has no {name!r} variable ({what}); variables: {', '.join(map(str, ds.variables))}")
    var = ds[name]
    if var.dims != ("sample",):
        raise InputError(f"{name}: expected dims (sample,), got {var.dims}")
    try:
        values = np.asarray(var.values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected numbers, got dtype {var.dtype}") from None
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise InputError(f"{describe_row(ds, bad[0])}: {name} is {values[bad[0]]} ({len(bad)} values are NaN or "
                         "inf); expected finite numbers")
    return values


def describe_row(ds, sample: int) -> str:
    """'<file>: row r' for a sample of a Dataset opened from shard files, else 'sample i'."""
    files = ds.attrs.get("files")
    if files and "shard" in ds.variables and "row" in ds.variables:
        k = int(ds["shard"].values[sample]) - int(ds["shard"].values[0])
        if 0 <= k < len(files):
            return f"{files[k]}: row {int(ds['row'].values[sample])}"
    return f"sample {sample}"


def _partition(bins, by) -> Partition:
    if by is None or (isinstance(by, str) and by == "snr"):
        return make_partition("snr", {}, dict(card_defaults.BINS) if bins is None else bins)
    if bins is None:
        raise ConfigError(f"bins: partitioning by {by if isinstance(by, (str, list, tuple)) else 'given values'} "
                          "needs bins {name: [low, high)}")
    return make_partition(by if isinstance(by, (str, list, tuple)) else "labels", bins)


def partition_labels(ds, partition: Partition, snr: np.ndarray | None = None) -> np.ndarray:
    """(N,) or (N, 2) float64 labels of every sample for ``partition``: its (sample,) variables, or
    ``snr`` (N,) for an SNR partition."""
    if partition.is_snr:
        if snr is None:
            raise InputError("an SNR partition bins by the SNR of each spectrum; pass snr")
        return np.asarray(snr, dtype=np.float64)
    columns = [sample_values(ds, c, "a routing column") for c in partition.columns]
    return columns[0] if len(columns) == 1 else np.column_stack(columns)


def _labels(ds, partition: Partition, by) -> np.ndarray:
    if isinstance(by, (str, list, tuple)):
        return partition_labels(ds, partition)
    labels = np.asarray(by, dtype=np.float64)
    if labels.shape != (ds.sizes["sample"],):
        raise InputError(f"by: expected {ds.sizes['sample']} values (one per sample), got shape {labels.shape}")
    return labels


def _identity(ds, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(N,) shard and row of every sample: the ``shard``/``row`` variables, else shard 0 and rows 0..N-1."""
    shard = np.asarray(ds["shard"].values, np.int64) if "shard" in ds.variables else np.zeros(n, np.int64)
    row = np.asarray(ds["row"].values, np.int64) if "row" in ds.variables else np.arange(n, dtype=np.int64)
    return shard, row


def _row_chunk(ds, flux) -> int:
    """The default block size: :func:`open_shards`' own (a small file's chunk is the whole file, shorter),
    else the first row chunk of ``flux``."""
    if shard_files(ds) is not None:
        return int(ds["flux"].encoding[SHARD_FILES]["block_rows"])
    chunks = getattr(flux, "chunks", None)
    return int(chunks[0][0]) if chunks else DEFAULT_BLOCK_ROWS


def pass_shift(ds, *, target: str = card_defaults.TARGET, clip_flux: bool = True,
               block_rows: int | None = None) -> tuple[np.ndarray, float]:
    """(c (D,), y0): the fixed shift that ``bin_statistics(ds, ...)`` chooses (the means of the first rows of
    the first shard). Statistics of other spectra to be compared with or added to these (a validation
    set) are computed with ``shift=pass_shift(ds)``."""
    flux, error = _spectra(ds)
    y = sample_values(ds, target, "target")
    shard, row = _identity(ds, len(y))
    blocks_of = plan_blocks(shard, row, int(block_rows or _row_chunk(ds, flux)))
    readers = shard_sources(ds)
    first = int(shard[0])
    source = readers[0] if readers else ArrayRows(flux, error, 0)
    return _shift(source, blocks_of[first], y, clip_flux)


def _shift(source: RowSource, blocks: list[Block], y: np.ndarray, clip_flux: bool) -> tuple[np.ndarray, float]:
    """(D,) mean repaired noise-free flux and mean target of the first rows of the first shard: the
    fixed shift (c, y0) of the products (DESIGN: close to the column means, so float32 loses nothing)."""
    first = blocks[0]
    run = first
    for b in blocks[1:]:
        if b.start != run.stop or b.row0 != run.row0 + run.rows:
            break
        run = Block(first.shard, first.row0, first.start, b.stop)
    rows = min(run.rows, SHIFT_ROWS)
    head = Block(first.shard, first.row0, first.start, first.start + rows)
    # the pass reads these rows again and warns of their absurd values: once per run, not twice
    flux, _, _ = load_block(source, head, clip_flux, warn=False)
    return flux.mean(axis=0, dtype=np.float64), float(y[head.start:head.stop].mean())


def _file_identity(path: Path) -> tuple:
    """What tells one state of a file from another: resolved path, size, mtime, ctime and inode."""
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _token(flux, error, files: list[Path] | None, shard: np.ndarray, row: np.ndarray,
           values: tuple[np.ndarray | None, ...], spec: PassSpec, block_rows: int, splits: int) -> str:
    """The name of a pass's tasks, from everything its result depends on: the spectra (the shard files'
    identity, or the flux and error arrays' own dask tokens), which rows (shard, row (N,)), the per-row
    values (target, table SNR, cells), the pass specification (bins, noise, SNR, precision, shift...),
    the block cut and the splits. Equal inputs share tasks; any other input gets other tasks."""
    from dask.base import tokenize

    spectra = [_file_identity(f) for f in files] if files else (flux, error)
    return tokenize(spectra, shard, row, values, spec, block_rows, SEGMENT_ROWS, splits)


def _part_graphs(plan: _Plan, name: str) -> list:
    """The delayed result of every part, each a pass; task names start with ``name``."""
    return [part_graph(part, plan.spec, plan.block_rows, SEGMENT_ROWS, name) for part in plan.parts]


def _through_cache(cache, plan: _Plan, target: str) -> CachedPass | None:
    """The pass's entries in ``cache`` (looked up now, see :mod:`.cached_pass`); None without a cache, or
    for arrays that are not shard files (only those are cached)."""
    if cache is None or not plan.files:
        return None
    return CachedPass(cache, plan.parts, plan.paths, plan.spec, target, plan.block_rows, SEGMENT_ROWS)
