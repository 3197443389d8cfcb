"""The config's schema: the experiment card's YAML blocks as validated pydantic models.

Each section's keys, types, defaults and rules (bins that tile [0, inf), routing that fits the
experts, ...). Every key has the card's value (``LOGG-SNR-ORACLE-01``) as its default, so a file only
needs to say what differs from the card; ``data.root`` has none (the card's data folder is named in
``config/oracle_snr.yaml``). Reading a file, ``--set`` overrides and the one-line error messages are
``experiment.config_file``.
"""

from __future__ import annotations

import math
import re
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from ..core import card_defaults
from ..errors import ConfigError

if TYPE_CHECKING:  # snr imports nothing from here, but keep the import lazy so config loads alone
    from ..core.partition import Partition
    from ..core.snr import Bins

SCHEDULERS = ("threads", "processes", "local-cluster", "sync")
_METRIC_ALIASES = {"r²": "R2", "r2": "R2", "mae": "MAE", "rmse": "RMSE"}
_ADDRESS = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")
_EXPERIMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(gt=0)]
Seed = Annotated[int, Field(ge=0)]


class _Section(BaseModel):
    # strict: a number written as a string ("1.0"), a bool as a number, a float for an integer key
    # are refused, not converted (the YAML loader reads 1e5 as a number, see experiment.yaml_file)
    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True)


# ----------------------------------------------------------------------------- sections
class ExperimentSection(_Section):
    id: str = card_defaults.EXPERIMENT_ID
    date: str | None = None
    title: str | None = None

    @field_validator("id")
    @classmethod
    def _id_is_a_folder_name(cls, v: str) -> str:
        # the id names the default output folder results/<id>/
        if not _EXPERIMENT_ID.match(v):
            raise ValueError(f"must be a name of letters, digits, '.', '_' or '-', got {v!r}")
        return v

    @field_validator("date", mode="before")
    @classmethod
    def _date_as_text(cls, v: Any) -> Any:
        # YAML reads 2025-12-26 as a date; keep it as ISO text so the config stays JSON-able
        return v.isoformat() if isinstance(v, date) else v


class DataSection(_Section):
    source: str = "BOSZ simulated spectra"
    # the folder shard paths are relative to; None: the current directory. The card's data folder is
    # named in config/oracle_snr.yaml, not here: a default in code would point every user at one machine's path
    root: str | None = None
    train_shards: list[str] = Field(default=["train_200k_{0..4}/dataset.h5"], min_length=1)
    val_file: str | None = None
    test_file: str = "test_1k_0/dataset.h5"
    feature_dim: PosInt = 4096
    target: str = card_defaults.TARGET

    @field_validator("train_shards", mode="before")
    @classmethod
    def _one_pattern_is_a_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class SnrSection(_Section):
    method: Literal["norm", "median", "column"] = card_defaults.SNR_METHOD
    # name -> (low, high), half-open [low, high); insertion order is the user's bin order
    bins: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(card_defaults.BINS))

    @field_validator("bins", mode="before")
    @classmethod
    def _bins_tile_half_line(cls, v: Any) -> Any:
        from ..core.snr import Bins

        if not isinstance(v, dict):
            return v  # pydantic's "must be a mapping"
        try:  # the edges' own rules: numbers or an infinity spelling ("inf", .inf), no numeric strings
            bins = Bins.from_mapping(v, key="snr.bins")
        except ConfigError as exc:
            # pydantic puts the key in front again; keep the line free of a doubled "snr.bins:"
            raise ValueError(str(exc).removeprefix("snr.bins:").strip()) from None
        return {name: (float(low), float(high)) for name, low, high in zip(bins.names, bins.low, bins.high)}


class ModelSection(_Section):
    type: Literal["Ridge"] = "Ridge"
    alpha: float | Literal["auto"] | list[float] = card_defaults.ALPHA
    experts: PosInt | None = None

    @field_validator("alpha", mode="before")
    @classmethod
    def _alpha(cls, v: Any) -> float | str | list[float]:
        if isinstance(v, str) and v.strip().lower() == "auto":
            return "auto"
        if isinstance(v, (list, tuple)):
            if not v:
                raise ValueError("must be a number >= 0, 'auto' or a non-empty list of numbers, got []")
            return [_non_negative_float(a) for a in v]
        return _non_negative_float(v)


class PreprocessingSection(_Section):
    scaler: Literal["StandardScaler"] = "StandardScaler"
    clip_flux: bool = True
    per_expert_scaler: bool = True


class NoiseSection(_Section):
    level: float = Field(default=card_defaults.NOISE_LEVEL, gt=0, allow_inf_nan=False)
    apply: Literal["train"] = "train"
    seed: Seed = card_defaults.NOISE_SEED
    test_seed: Seed = card_defaults.TEST_SEED
    test: Literal["fixed", "pre_noised"] = "fixed"
    mode: Literal["sample", "expected"] = "sample"


class RoutingSection(_Section):
    type: Literal["oracle"] = "oracle"
    # "snr" (bins from snr.bins), a params-table column, or [column, column] for a grid
    by: str | list[str] = "snr"
    # for by != snr: name -> [low, high] (one column) or {column: {name: [low, high]}} (grid);
    # empty means "not given". Checked with routing.by by ExperimentConfig (a cross-field rule).
    bins: dict[str, Any] = Field(default_factory=dict)

    @field_validator("by", mode="before")
    @classmethod
    def _by(cls, v: Any) -> Any:
        # one message instead of pydantic's one error per member of the union
        if isinstance(v, str) and v.strip():
            return v.strip()
        if isinstance(v, (list, tuple)) and all(isinstance(c, str) and c.strip() for c in v):
            if len(v) != 2 or len({c.strip() for c in v}) != 2:
                raise ValueError(f"a grid needs exactly 2 distinct columns, got {list(v)!r}")
            return [c.strip() for c in v]
        raise ValueError(f"must be 'snr', a params column name or a list of 2 column names, got {short_repr(v)}")

    @field_validator("bins", mode="before")
    @classmethod
    def _no_bins_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v


class EvaluationSection(_Section):
    metrics: list[str] = Field(default=["R2", "MAE", "RMSE"], min_length=1)
    per_bin: bool = True
    comparison: Literal["Global Ridge"] = "Global Ridge"
    threshold: float = Field(default=card_defaults.THRESHOLD, allow_inf_nan=False)
    min_bin_samples: NonNegInt = card_defaults.MIN_BIN_SAMPLES
    bootstrap: NonNegInt = 2000
    deployable_gate: bool = False
    gate_fallback: float = Field(default=0.4, ge=0, le=1)
    scaling: bool = False  # R² and ΔR² against N from the per-shard statistics of the one pass
    scaling_splits: PosInt = 1  # each shard summed as this many sub-shards: more points on the curve
    scaling_points: int = Field(default=8, ge=2)  # training sizes solved, nearly geometric in N

    @field_validator("metrics", mode="before")
    @classmethod
    def _metric_names(cls, v: Any) -> Any:
        if not isinstance(v, (list, tuple)):
            return v
        names = []
        for name in v:
            canonical = _METRIC_ALIASES.get(str(name).strip().lower()) if isinstance(name, str) else None
            if canonical is None:
                raise ValueError(f"must name metrics among 'R²' (or 'R2'), 'MAE', 'RMSE', got {short_repr(name)}")
            if canonical in names:
                raise ValueError(f"names {short_repr(name)} twice")
            names.append(canonical)
        if "R2" not in names:
            raise ValueError(f"must include 'R²' (the decision is on ΔR²), got {list(v)!r}")
        return names


class OutputSection(_Section):
    dir: str | None = None
    # the owner's layout, outside the results folder: the report file ({date} -> the run's date,
    # YYYYMMDD) and the figures' folder (default: img/ beside the report)
    report: str | None = None
    img_dir: str | None = None

    @field_validator("report", "img_dir")
    @classmethod
    def _only_date_placeholder(cls, v: str | None) -> str | None:
        if v is not None:
            if not v.strip():
                raise ValueError("must be a path or null, got ''")
            unknown = [m for m in re.findall(r"\{([^{}]*)\}", v) if m != "date"]
            if unknown:
                raise ValueError(f"only {{date}} is expanded, got {{{unknown[0]}}} in {v!r}")
        return v


class ComputeSection(_Section):
    block_rows: PosInt = 4096
    scheduler: str = "threads"
    workers: PosInt = 2
    precision: Literal["float32", "float64"] = "float32"
    cache: bool = True  # keep each shard's finished statistics (see io.cache and docs/cache.md)
    cache_dir: str | None = None  # None: .snrmoe-cache beside the results folder (cache: false turns it off)
    # the cache's size cap: least recently used entries are evicted (io.cache.DEFAULT_MAX_GB)
    cache_max_gb: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 20.0
    # shards (and shard lists) whose pass multiplies fewer than rows x pixels² = this x 1e9 are not
    # cached: such a pass costs about what a load does (io.cache.DEFAULT_MIN_GFLOP)
    cache_min_gflop: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1.0
    # an entry is kept only when at most this fraction of the spectra it sums (io.cache.DEFAULT_MAX_RATIO)
    cache_max_ratio: Annotated[float, Field(gt=0)] = 0.25
    # seconds to reach a scheduler address (and for it to show it is a dask scheduler)
    connect_timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 30.0

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, v: str) -> str:
        if v not in SCHEDULERS and not _ADDRESS.match(v):
            raise ValueError(
                "must be 'threads', 'processes', 'local-cluster', 'sync' or a scheduler address "
                f"such as 'tcp://host:8786', got {v!r}"
            )
        return v


# ----------------------------------------------------------------------------- the whole card
class ExperimentConfig(_Section):
    """One experiment: the card's YAML blocks. Defaults are the card's values."""

    experiment: ExperimentSection = Field(default_factory=ExperimentSection)
    data: DataSection = Field(default_factory=DataSection)
    snr: SnrSection = Field(default_factory=SnrSection)
    model: ModelSection = Field(default_factory=ModelSection)
    preprocessing: PreprocessingSection = Field(default_factory=PreprocessingSection)
    noise: NoiseSection = Field(default_factory=NoiseSection)
    routing: RoutingSection = Field(default_factory=RoutingSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    output: OutputSection = Field(default_factory=OutputSection)
    compute: ComputeSection = Field(default_factory=ComputeSection)

    _source: str | None = PrivateAttr(default=None)  # the file it came from, for error lines

    @model_validator(mode="before")
    @classmethod
    def _empty_section_is_default(cls, raw: Any) -> Any:
        # "output:" with every key commented out reads as None; it means "all defaults"
        if isinstance(raw, dict):
            return {k: ({} if v is None and k in cls.model_fields else v) for k, v in raw.items()}
        return raw

    @model_validator(mode="after")
    def _routing_and_experts_fit(self) -> ExperimentConfig:
        # routing.bins depends on routing.by and model.experts on both: no single field owns these
        # rules, so each message (partition.make_partition's too) starts with its own key
        try:
            n_cells = self.partition.n_cells
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        what = "snr.bins" if self.routing.by == "snr" else "routing.bins cells"
        if self.model.experts is None:
            self.model.experts = n_cells  # derived from the cells: it never has to be repeated
        elif self.model.experts != n_cells:
            raise ValueError(
                f"model.experts: must equal the number of {what} ({n_cells}), got {self.model.experts}"
            )
        return self

    @model_validator(mode="after")
    def _splits_need_scaling(self) -> ExperimentConfig:
        splits = self.evaluation.scaling_splits
        if splits > 1 and not self.evaluation.scaling:
            raise ValueError(f"evaluation.scaling_splits: {splits} sub-shards only add points to the scaling curve; "
                             "set evaluation.scaling: true as well")
        return self

    @property
    def output_dir(self) -> Path:
        """``output.dir``, or ``results/<experiment id>/`` when it is not set."""
        if self.output.dir:
            return Path(self.output.dir)
        return Path("results") / self.experiment.id

    @property
    def bins(self) -> Bins:
        """The SNR bins as ``snr.Bins``, in the user's order."""
        from ..core.snr import Bins

        return Bins.from_mapping(self.snr.bins, key="snr.bins")

    @property
    def partition(self) -> Partition:
        """The experts' cells: ``snr.bins`` for ``routing.by: snr``, else ``routing.bins``."""
        from ..core.partition import make_partition

        return make_partition(self.routing.by, self.routing.bins, self.snr.bins)


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as plain JSON-able data (``inf`` -> ``"inf"``), for provenance records."""
    return _json_safe(cfg.model_dump(mode="python"))


def check_feature_dim(cfg: ExperimentConfig, d: int) -> None:
    """Raise ConfigError when ``data.feature_dim`` differs from the pixel count ``d`` of the shards."""
    if cfg.data.feature_dim != int(d):
        prefix = f"{cfg._source}: " if cfg._source else ""
        raise ConfigError(
            f"{prefix}data.feature_dim: config says {cfg.data.feature_dim} but the shards have {int(d)} pixels"
        )


# ----------------------------------------------------------------------------- helpers
def _non_negative_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"must be a number >= 0, 'auto' or a list of numbers, got {short_repr(v)}"
                         + (QUOTED_NUMBER_HINT if isinstance(v, str) else ""))
    x = float(v)
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"must be >= 0, got {v!r}")
    return x


# added to "must be a number" when the value was a quoted number
QUOTED_NUMBER_HINT = " (a string: write the number without quotes)"


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters for an error line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Path):
        return str(value)
    return value
