"""Experiment configuration: the experiment card's YAML blocks as validated pydantic models.

``load_config(path, overrides)`` reads a YAML file, applies ``key.path=VALUE`` overrides and
validates. Every mistake (unknown key, wrong type, bad value, bins that do not tile [0, inf))
becomes one ``ConfigError`` line naming the file and the dotted key, e.g.
``config/demo.yaml: model.alpha: must be >= 0, got -1``.

Every key has the card's value (``LOGG-SNR-ORACLE-01``) as its default, so a file only needs to
say what differs from the card.
"""

from __future__ import annotations

import math
import os
import re
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Sequence

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from ..core import card
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
    # are refused, not converted (the YAML loader reads 1e5 as a number, see _UniqueKeyLoader)
    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True)


# ----------------------------------------------------------------------------- sections
class ExperimentSection(_Section):
    id: str = card.EXPERIMENT_ID
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
    root: str = "/datascope/subaru/user/swei20/data/bosz50000/z0/mag205_225_lowT_1M"
    train_shards: list[str] = Field(default=["train_200k_{0..4}/dataset.h5"], min_length=1)
    val_file: str | None = None
    test_file: str = "test_1k_0/dataset.h5"
    feature_dim: PosInt = 4096
    target: str = card.TARGET

    @field_validator("train_shards", mode="before")
    @classmethod
    def _one_pattern_is_a_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class SnrSection(_Section):
    method: Literal["norm", "median", "column"] = card.SNR_METHOD
    # name -> (low, high), half-open [low, high); insertion order is the user's bin order
    bins: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(card.BINS))

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
    alpha: float | Literal["auto"] | list[float] = card.ALPHA
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
    level: float = Field(default=card.NOISE_LEVEL, gt=0, allow_inf_nan=False)
    apply: Literal["train"] = "train"
    seed: Seed = card.NOISE_SEED
    test_seed: Seed = card.TEST_SEED
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
        raise ValueError(f"must be 'snr', a params column name or a list of 2 column names, got {_short_repr(v)}")

    @field_validator("bins", mode="before")
    @classmethod
    def _no_bins_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v


class EvaluationSection(_Section):
    metrics: list[str] = Field(default=["R2", "MAE", "RMSE"], min_length=1)
    per_bin: bool = True
    comparison: Literal["Global Ridge"] = "Global Ridge"
    threshold: float = Field(default=card.THRESHOLD, allow_inf_nan=False)
    min_bin_samples: NonNegInt = card.MIN_BIN_SAMPLES
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
                raise ValueError(f"must name metrics among 'R²' (or 'R2'), 'MAE', 'RMSE', got {_short_repr(name)}")
            if canonical in names:
                raise ValueError(f"names {_short_repr(name)} twice")
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
    cache: bool = True  # keep each shard's finished statistics (see snrmoe_dask.cache)
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


# ----------------------------------------------------------------------------- loading
def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a YAML config, apply ``key.path=VALUE`` overrides (VALUE parsed as YAML), validate.

    Raises ConfigError (one line naming the file and the dotted key) on any problem.
    """
    where = str(path)
    raw = _read_yaml(Path(path))
    overridden: list[tuple[str, str]] = []
    for item in overrides:
        dotted, value = _parse_override(where, item)
        _set_path(where, raw, dotted, value, item)
        overridden.append((dotted, item))
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(exc, overridden)}") from None
    except ConfigError as exc:  # raised by a validator outside pydantic's error types
        raise ConfigError(f"{where}: {exc}") from None
    cfg._source = where
    return cfg


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
class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a repeated key (PyYAML would silently keep the last one)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (line {line})")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)
# YAML 1.1 (PyYAML) reads 1e5 and 2e-2, floats without a dot, as strings; YAML 1.2 and every user read
# them as numbers. With strict numbers a string is refused, so they must load as floats.
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                       list("-+0123456789"))


# Far beyond any config (routing.bins of a grid is 4 levels, a config a few hundred values); PyYAML's
# parser recurses per level, and aliases can make a small file expand to billions of values.
MAX_DEPTH = 32
MAX_VALUES = 100_000


class _TooLarge(yaml.YAMLError):
    pass


def _load_yaml_text(text: str) -> Any:
    """YAML text -> data; _TooLarge (a YAMLError) when nested more than MAX_DEPTH levels or, with
    aliases expanded, more than MAX_VALUES values."""
    too_deep = f"nested too deeply (more than {MAX_DEPTH} levels of lists or mappings)"
    try:
        value = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise _TooLarge(too_deep) from None
    sizes: dict[int, int] = {}  # expanded size of every list/mapping, by id: an alias is counted each time

    def size(node: Any, depth: int) -> int:  # recursion bounded by MAX_DEPTH
        if not isinstance(node, (dict, list)):
            return 1
        if depth > MAX_DEPTH:
            raise _TooLarge(too_deep)
        if id(node) not in sizes:
            children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
            sizes[id(node)] = 1 + sum(size(child, depth + 1) for child in children)
        return sizes[id(node)]

    try:
        values = size(value, 1)
    except RecursionError:  # a self-referencing alias
        raise _TooLarge(too_deep) from None
    if values > MAX_VALUES:
        raise _TooLarge(f"expands to {values:,} values (through aliases); expected a config of at most "
                        f"{MAX_VALUES:,}")
    return value


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(f"{problem}{at}".split())


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML config file")
    if not path.is_file():  # a FIFO or device: reading it could wait forever
        raise ConfigError(f"{path}: is not a regular file, expected a YAML config file")
    try:
        raw = _load_yaml_text(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    if raw is None:
        raise ConfigError(f"{path}: file is empty, expected a mapping of sections (experiment, data, snr, ...)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    return raw


def _parse_override(where: str, item: str) -> tuple[str, Any]:
    dotted, sep, text = str(item).partition("=")
    dotted = dotted.strip()
    if not sep or not dotted:
        raise ConfigError(f"{where}: override {_short_repr(item)}: expected KEY.PATH=VALUE, e.g. model.alpha=1e3")
    if any(not part for part in dotted.split(".")):
        raise ConfigError(f"{where}: override {_short_repr(item)}: {dotted!r} is not a dotted key such as model.alpha")
    try:
        value = _load_yaml_text(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: override {_short_repr(item)}: value is not valid YAML: {_yaml_problem(exc)}") from None
    return dotted, value


def _set_path(where: str, raw: dict[str, Any], dotted: str, value: Any, item: str) -> None:
    """Set ``raw[a][b][c] = value`` for ``a.b.c``, refusing keys the models do not define."""
    parts = dotted.split(".")
    model: type[BaseModel] | None = ExperimentConfig
    node = raw
    for depth, part in enumerate(parts):
        if model is not None:
            if part not in model.model_fields:
                prefix = ".".join(parts[:depth])
                allowed = ", ".join(model.model_fields)
                scope = f" in {prefix}" if prefix else ""
                raise ConfigError(
                    f"{where}: override {_short_repr(item)}: unknown key {dotted}{scope} (expected one of: {allowed})"
                )
            annotation = model.model_fields[part].annotation
            model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            if model is None and depth < len(parts) - 1 and not _is_mapping_field(parts[: depth + 1]):
                raise ConfigError(
                    f"{where}: override {_short_repr(item)}: {'.'.join(parts[: depth + 1])} is not a section, "
                    f"so {dotted} is not a key"
                )
        if depth == len(parts) - 1:
            node[part] = value
            return
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"{where}: override {_short_repr(item)}: {'.'.join(parts[: depth + 1])} is not a mapping in the file"
            )
        node = child


def _is_mapping_field(parts: list[str]) -> bool:
    model: Any = ExperimentConfig
    for part in parts:
        model = model.model_fields[part].annotation
    return getattr(model, "__origin__", None) is dict


def _non_negative_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"must be a number >= 0, 'auto' or a list of numbers, got {_short_repr(v)}"
                         + (_QUOTED if isinstance(v, str) else ""))
    x = float(v)
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"must be >= 0, got {v!r}")
    return x


_QUOTED = " (a string: write the number without quotes)"
_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "literal_error": "must be one of {expected}",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "tuple_type": "must be a list of two numbers [low, high]",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping of keys",
    "model_attributes_type": "must be a mapping of keys",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
}


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _allowed_keys(loc: tuple[Any, ...]) -> str:
    model: Any = ExperimentConfig
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return ""
        model = fields[part].annotation
    fields = getattr(model, "model_fields", None)
    return f" (expected one of: {', '.join(fields)})" if fields else ""


def _describe_one(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    key = _dotted(loc)
    if kind == "extra_forbidden":
        return f"{key}: unknown key{_allowed_keys(loc[:-1])}"
    if kind == "missing":
        return f"{key}: is required"
    if kind == "value_error":
        message = str(err["msg"]).removeprefix("Value error, ")
        return f"{key}: {message}" if key else message
    template = _MESSAGES.get(kind)
    message = template.format(**err.get("ctx", {})) if template else str(err["msg"])
    quoted = _QUOTED if kind in ("float_type", "int_type") and isinstance(err.get("input"), str) else ""
    return f"{key}: {message}, got {_short_repr(err.get('input'))}{quoted}"


def _describe(exc: ValidationError, overridden: list[tuple[str, str]]) -> str:
    lines = []
    for err in exc.errors():
        line = _describe_one(err)
        # a cross-field rule has no loc; its message starts with the key it is about
        key = _dotted(tuple(err["loc"])) or line.partition(":")[0]
        for dotted, item in reversed(overridden):  # the last override of a key is the one that holds
            # the key itself, a key inside it, or (a mapping's own rule, e.g. snr.bins) a key it holds
            if key == dotted or key.startswith((dotted + ".", dotted + "[")) or dotted.startswith(key + "."):
                line += f" (set by override {_short_repr(item)})"
                break
        lines.append(line)
    return "; ".join(lines)


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
