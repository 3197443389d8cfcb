"""The schema of ``results.json``, defined once: the driver validates what it writes with it and the
report reads the typed object it returns.

Every model keeps unknown keys (``extra="allow"``), so a field added later does not make an older
reader refuse a file, and optional sections default to None. Numbers are strict (a text "0.5" is
not a number), counts are integers >= 0, and the decision must be the card's rule on the file's own
ΔR² and threshold. :func:`load_results` turns a validation error into one line naming the key::

    results.json: 'models.global.n_train' is 'x', expected a count (an integer >= 0)
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from ..core import card_defaults
from ..core.metrics import decision_for
from ..errors import InputError

Number = Annotated[float, Strict()]
Count = Annotated[int, Strict(), Field(ge=0)]
Flag = Annotated[bool, Strict()]
Text = Annotated[str, Strict()]
# a [low, high] interval; an end is None (NaN in JSON) where the bootstrap could not compute it
Interval = Annotated[list[Number | None], Field(min_length=2, max_length=2)]
Edge = Number | None | dict[str, Number | None]


class Record(BaseModel):
    """A results.json object: unknown keys are kept, known ones typed."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


# ----------------------------------------------------------------------------- scores
class Metrics(Record):
    """One model's scores on a set of test spectra (MAE and RMSE in dex); None where undefined."""

    r2: Number | None
    mae: Number | None
    rmse: Number | None
    r2_ci: Interval | None = None


class ModelScores(Metrics):
    n_train: Count
    n_test: Count
    alpha: Number | None = None


class Models(Record):
    global_: ModelScores = Field(alias="global")
    oracle: ModelScores
    deployed: ModelScores | None = None
    noisy_snr_routed: ModelScores | None = None


class BinResult(Record):
    """One bin (or grid cell): its edges, counts, the expert's and the global model's scores."""

    by: Text | list[Text] | None = None
    low: Edge = None
    high: Edge = None
    n_train: Count
    n_test: Count
    skipped: Flag = False
    delta_r2: Number | None = None
    delta_r2_ci: Interval | None = None
    expert: Metrics
    global_: Metrics = Field(alias="global")
    alpha: Number | None = None
    deployed: Metrics | None = None


class Robustness(Record):
    ci: Interval
    level: Number
    method: Text | None = None
    resamples: Count = 0
    n_test: Count
    verdict: Literal["robust", "not robust"]
    test_spectra_needed: Count | None = None


class Gate(Record):
    accuracy: Number | None = None
    confusion: list[list[Count]]
    fallback_rate: Number | None = None
    rho: Number | None = None
    names: list[Text]
    fallback: Number | None = None
    noisy_snr_accuracy: Number | None = None
    delta_r2_ci: Interval | None = None


# ----------------------------------------------------------------------------- alpha chosen on validation
class AlphaCurve(Record):
    alpha: list[Number] = []
    val_r2: list[Number | None] | None = None


class ModelAlpha(Record):
    alpha: Number | None = None
    source: Text | None = None
    note: Text | None = None
    n_train: Count | None = None
    n_val: Count | None = None
    val_r2: Number | None = None
    val_r2_fixed: Number | None = None
    gain_over_fixed: Number | None = None
    curve: AlphaCurve = AlphaCurve()


class AlphaChoice(Record):
    fixed_alpha: Number | None = None
    global_: ModelAlpha = Field(alias="global")
    experts: dict[str, ModelAlpha] = {}


# ----------------------------------------------------------------------------- scaling curve
class PointScore(Record):
    r2: Number | None = None
    r2_ci: Interval | None = None
    alpha: Number | None = None


class PointBin(Record):
    n_train: Count
    skipped: Flag = False
    alpha: Number | None = None
    expert: PointScore
    global_: PointScore = Field(alias="global")
    delta_r2: Number | None = None
    delta_r2_ci: Interval | None = None


class ScalingPoint(Record):
    parts: Count | None = None
    n_train: Count
    global_: PointScore = Field(alias="global")
    oracle: PointScore
    delta_r2: Number | None = None
    delta_r2_ci: Interval | None = None
    bins: dict[str, PointBin]


class Crossing(Record):
    status: Text | None = None
    threshold: Number | None = None
    n: Number | None = None
    n_ci: list[Number | None] | None = None
    reason: Text | None = None


class Fit(Record):
    status: Text
    reason: Text | None = None
    inf: Number | None = None
    inf_ci: list[Number | None] | None = None
    a: Number | None = None
    b: Number | None = None
    n_max: Number | None = None
    crossing: Crossing | None = None


class Extrapolation(Record):
    min_points: Count = 4
    models: dict[str, Fit] = {}
    bins: dict[str, dict[str, Fit]] = {}


class Scaling(Record):
    splits: Count = 1
    threshold: Number | None = None
    bootstrap: Count | None = None
    points: Annotated[list[ScalingPoint], Field(min_length=1)]
    extrapolation: Extrapolation = Extrapolation()


# ----------------------------------------------------------------------------- what an astronomer checks
class PredictionCheck(Record):
    """Predictions of one model on a set of test spectra against the truth: the least-squares slope of
    prediction on truth (1: no regression to the mean) and the share outside the training range."""

    slope: Number | None = None
    intercept: Number | None = None
    pred_min: Number | None = None
    pred_max: Number | None = None
    outside_train_range: Number | None = None


class TargetSpread(Record):
    train_min: Number | None = None
    train_max: Number | None = None
    test_mean: Number | None = None
    test_std: Number | None = None


class BinCheck(Record):
    target_std: Number | None = None
    expert: PredictionCheck = PredictionCheck()
    global_: PredictionCheck = Field(default=PredictionCheck(), alias="global")


class Diagnostics(Record):
    target: TargetSpread = TargetSpread()
    models: dict[str, PredictionCheck] = {}
    bins: dict[str, BinCheck] = {}


# ----------------------------------------------------------------------------- the rest of the run
class Snr(Record):
    method: Text | None = None
    train_median: Number | None = None
    train_max: Number | None = None
    test_median: Number | None = None
    test_max: Number | None = None


class Repairs(Record):
    flux_negative: Count = 0
    error_nan: Count = 0
    error_nonpositive: Count = 0
    flux_absurd: Count = 0  # more than 1e6 x the row's typical magnitude (core.repair)
    error_absurd: Count = 0


class Data(Record):
    n_train: Count | None = None
    n_test: Count | None = None
    pixels: Count | None = None
    train_files: list[Text] = []
    test_file: Text | None = None
    val_file: Text | None = None


class InputFile(Record):
    path: Text
    bytes: Count | None = None
    source: Text | None = None


class Provenance(Record):
    packages: dict[str, Text | None] = {}
    git_commit: Text | None = None
    files: list[InputFile] | None = None
    seeds: dict[str, Any] = {}


class Partition(Record):
    by: Text | list[Text] | None = None
    names: list[Text] = []


class Results(Record):
    """The whole of results.json."""

    experiment: Text = card_defaults.EXPERIMENT_ID
    date: Text | None = None
    card_date: Text | None = None
    mvp: Text | None = None
    threshold: Number
    delta_r2: Number
    delta_r2_ci: Interval | None = None
    decision: Text
    next_step: Text | None = None
    robustness: Robustness | None = None
    models: Models
    partition: Partition | None = None
    bins: Annotated[dict[str, BinResult], Field(min_length=1)]
    skipped_bins: list[Text] = []
    gate: Gate | None = None
    snr: Snr = Snr()
    repairs: Repairs | None = None
    test_repairs: Repairs | None = None
    alpha: AlphaChoice | None = None
    scaling: Scaling | None = None
    diagnostics: Diagnostics | None = None
    data: Data = Data()
    config: dict[str, Any] = {}
    provenance: Provenance | None = None
    output_dir: Text | None = None
    timings_s: dict[str, Number] = {}

    @model_validator(mode="after")
    def _the_card_decides(self) -> Results:
        for key in ("threshold", "delta_r2"):
            if not math.isfinite(getattr(self, key)):
                raise ValueError(f"{key}={getattr(self, key)!r}, expected a finite number")
        expected = decision_for(self.delta_r2, self.threshold)[0]
        if self.decision != expected:
            raise ValueError(f"decision={self.decision!r} but the card's rule gives {expected} for "
                             f"ΔR² = {self.delta_r2:+.4f} and threshold {self.threshold:g}; rerun `snrmoe run`")
        return self

    def to_json(self) -> str:
        """The JSON text of results.json (aliases, e.g. "global", and every key kept)."""
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2)


# ----------------------------------------------------------------------------- one-line errors
_EXPECTED = {
    "float_type": "is not a number", "int_type": "expected a count (an integer >= 0)",
    "greater_than_equal": "expected a count (an integer >= 0)", "bool_type": "expected true or false",
    "string_type": "expected a text", "literal_error": "expected one of {expected}",
}
_CONTAINERS = {"dict_type": "a dict", "model_type": "a dict", "model_attributes_type": "a dict"}
_SEQUENCES = {"list_type": "a list", "too_short": "at least {min_length} item(s)",
              "too_long": "at most {max_length} item(s)"}


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _one_line(exc: ValidationError) -> str:
    """The first problem of a validation error as a phrase: "'models.global.r2': 'abc' is not a number"."""
    errors = exc.errors()
    # a union reports one error per member; the member the value came closest to is the last
    err = next((e for e in errors if e["type"] not in ("none_required", "dict_type") or len(errors) == 1), errors[0])
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in ("float", "int", "none"))))
    key, kind, value = _dotted(loc), err["type"], err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return f"missing key {key!r}"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    if kind in _CONTAINERS:
        return f"{key!r} must be {_CONTAINERS[kind]}, got {type(value).__name__}"
    if kind in _SEQUENCES:
        return f"{key!r} has an unexpected type or shape: expected {_SEQUENCES[kind].format(**ctx)}, got {value!r}"
    if kind == "float_type":
        return f"{key!r}: {value!r} is not a number"
    expected = _EXPECTED.get(kind)
    return f"{key!r} is {value!r}, " + (expected.format(**ctx) if expected else str(err["msg"]))


def load_results(obj: Any, where: str = "results") -> Results:
    """The typed results of ``obj`` (a parsed results.json, or already :class:`Results`); raises
    InputError ``"<where>: <the first problem>"``."""
    if isinstance(obj, Results):
        return obj
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a dict (parsed results.json), got {type(obj).__name__}")
    try:
        return Results.model_validate(obj)
    except ValidationError as exc:
        raise InputError(f"{where}: {_one_line(exc)}") from None
