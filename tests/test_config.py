"""Experiment config: the shipped YAML files give the card's values; every mistake is one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from snrmoe_dask.errors import ConfigError
from snrmoe_dask.experiment.config import ExperimentConfig, check_feature_dim, config_to_dict
from snrmoe_dask.experiment.config_file import load_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
ORACLE = CONFIG_DIR / "oracle_snr.yaml"
DEMO = CONFIG_DIR / "demo.yaml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- shipped files
@pytest.mark.parametrize("path", [ORACLE, DEMO], ids=["oracle_snr", "demo"])
def test_shipped_files_give_the_card_values(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.model.type == "Ridge"
    assert cfg.model.alpha == 100000.0
    assert cfg.model.experts == 4
    assert list(cfg.snr.bins) == ["H", "M", "L", "X"]
    assert cfg.snr.bins == {"H": (7.0, math.inf), "M": (4.0, 7.0), "L": (2.0, 4.0), "X": (0.0, 2.0)}
    assert cfg.snr.method == "norm"
    assert cfg.evaluation.threshold == 0.02
    assert cfg.evaluation.min_bin_samples == 100
    assert cfg.evaluation.metrics == ["R2", "MAE", "RMSE"]
    assert cfg.noise.level == 1.0 and cfg.noise.apply == "train"
    assert cfg.preprocessing.scaler == "StandardScaler" and cfg.preprocessing.clip_flux
    assert cfg.routing.type == "oracle" and cfg.data.feature_dim == 4096 and cfg.data.target == "log_g"
    assert cfg.data.test_file == "test_1k_0/dataset.h5"


def test_oracle_file_points_at_the_real_data_and_equals_the_defaults() -> None:
    cfg = load_config(ORACLE)
    assert cfg.experiment.id == "LOGG-SNR-ORACLE-01"
    assert cfg.data.root == "/datascope/subaru/user/swei20/data/bosz50000/z0/mag205_225_lowT_1M"
    assert cfg.data.train_shards == ["train_200k_{0..4}/dataset.h5"]
    assert cfg.output_dir == Path("results") / "LOGG-SNR-ORACLE-01"
    # the file spells out the card; the defaults are the card too
    defaults = config_to_dict(ExperimentConfig())
    written = config_to_dict(cfg)
    written["experiment"].update(date=None, title=None)
    written["data"].update(root=None)  # the card's data folder is named in the file only, never in code
    assert written == defaults


def test_demo_file_points_at_the_demo_data() -> None:
    cfg = load_config(DEMO)
    assert cfg.data.root == ".demo-data/demo"
    assert cfg.data.train_shards == ["train_20k_{0..4}/dataset.h5"]
    assert cfg.data.val_file == "val_1k/dataset.h5"
    assert cfg.output_dir == Path("results/demo")


def test_bins_object_keeps_the_user_order() -> None:
    assert list(load_config(DEMO).bins.names) == ["H", "M", "L", "X"]


def test_config_to_dict_is_json_and_writes_inf_as_text() -> None:
    data = config_to_dict(load_config(ORACLE))
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["snr"]["bins"]["H"] == [7.0, "inf"]
    assert json.loads(text)["experiment"]["date"] == "2025-12-26"


# ----------------------------------------------------------------------------- values in the file
@pytest.mark.parametrize("alpha", ["100000", "1e5", "1.0e+5", "1E5", "+1e5", "100_000"])
def test_alpha_written_with_or_without_a_dot(tmp_path: Path, alpha: str) -> None:
    cfg = load_config(_write(tmp_path, f"model:\n  alpha: {alpha}\n"))
    assert cfg.model.alpha == 100000.0 and isinstance(cfg.model.alpha, float)


@pytest.mark.parametrize("text, key, value", [
    ("noise:\n  level: '1.0'\n", "noise.level", "'1.0'"),
    ('noise:\n  level: "1"\n', "noise.level", "'1'"),
    ("model:\n  alpha: '1e5'\n", "model.alpha", "'1e5'"),
    ("model:\n  alpha: [1e3, '1e4']\n", "model.alpha", "'1e4'"),
    ("evaluation:\n  threshold: '0.02'\n", "evaluation.threshold", "'0.02'"),
    ("evaluation:\n  bootstrap: '100'\n", "evaluation.bootstrap", "'100'"),
    ("compute:\n  workers: '2'\n", "compute.workers", "'2'"),
    ("compute:\n  cache_max_gb: '5'\n", "compute.cache_max_gb", "'5'"),
    ("noise:\n  seed: '42'\n", "noise.seed", "'42'"),
])
def test_numbers_written_as_strings_are_refused(tmp_path: Path, text: str, key: str, value: str) -> None:
    """Strict numbers: a quoted number is a string, refused (it was converted silently)."""
    message = _error(_write(tmp_path, text))
    assert f": {key}: must be" in message and value in message and "without quotes" in message


@pytest.mark.parametrize("text, key", [
    ("compute:\n  workers: 2.0\n", "compute.workers"), ("noise:\n  level: true\n", "noise.level"),
    ("preprocessing:\n  clip_flux: 1\n", "preprocessing.clip_flux"),
    ("preprocessing:\n  clip_flux: 'true'\n", "preprocessing.clip_flux"),
    ("snr:\n  bins: {H: ['4', .inf], L: [0, 4]}\n", "snr.bins: bin 'H' edge: expected a number or 'inf', got '4'"),
    ("routing:\n  by: T_eff\n  bins: {a: [-.inf, '5000'], b: [5000, .inf]}\n", "routing.bins: bin 'a' edge: expected a number or 'inf', got '5000'"),
])
def test_other_loose_types_are_refused(tmp_path: Path, text: str, key: str) -> None:
    assert f": {key}" in _error(_write(tmp_path, text))


@pytest.mark.parametrize("text, key, value", [
    ("noise:\n  level: 1\n", ("noise", "level"), 1.0),
    ("evaluation:\n  threshold: 2e-2\n", ("evaluation", "threshold"), 0.02),
    ("compute:\n  cache_max_gb: 5\n", ("compute", "cache_max_gb"), 5.0),
])
def test_integers_and_exponents_are_numbers(tmp_path: Path, text: str, key: tuple[str, str], value: float) -> None:
    cfg = load_config(_write(tmp_path, text))
    assert getattr(getattr(cfg, key[0]), key[1]) == value


@pytest.mark.parametrize("upper", [".inf", "inf", '"inf"', "Infinity"])
def test_infinite_upper_bound_spellings(tmp_path: Path, upper: str) -> None:
    text = f"snr:\n  bins:\n    H: [7, {upper}]\n    M: [4, 7]\n    L: [2, 4]\n    X: [0, 2]\n"
    assert load_config(_write(tmp_path, text)).snr.bins["H"] == (7.0, math.inf)


def test_missing_sections_take_the_card_defaults(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "experiment:\n  id: small\noutput:\n"))
    assert cfg.noise.seed == 42 and cfg.noise.test_seed == 2025
    assert cfg.noise.test == "fixed" and cfg.noise.mode == "sample"
    assert cfg.compute.scheduler == "threads" and cfg.compute.block_rows == 4096
    assert cfg.compute.workers == 2 and cfg.compute.precision == "float32"
    assert cfg.evaluation.bootstrap == 2000 and cfg.evaluation.gate_fallback == 0.4
    assert cfg.preprocessing.per_expert_scaler is True
    assert cfg.output_dir == Path("results") / "small"


# ----------------------------------------------------------------------------- overrides
def test_overrides_scalars_lists_and_nested_mappings() -> None:
    cfg = load_config(
        DEMO,
        [
            'data.train_shards=["train_2k_{0..4}/dataset.h5"]',
            "model.alpha=1e3",
            "snr.bins={H: [5, .inf], L: [0, 5]}",
            "model.experts=2",
            "compute.scheduler=tcp://10.0.0.1:8786",
            "evaluation.metrics=[R², RMSE]",
            "output.dir=",
        ],
    )
    assert cfg.data.train_shards == ["train_2k_{0..4}/dataset.h5"]
    assert cfg.model.alpha == 1000.0
    assert list(cfg.snr.bins) == ["H", "L"] and cfg.snr.bins["L"] == (0.0, 5.0)
    assert cfg.compute.scheduler == "tcp://10.0.0.1:8786"
    assert cfg.evaluation.metrics == ["R2", "RMSE"]
    assert cfg.output_dir == Path("results") / cfg.experiment.id


def test_override_inside_a_mapping_keeps_its_order() -> None:
    cfg = load_config(DEMO, ["snr.bins.M=[4, 7.0]", "model.alpha=auto"])
    assert list(cfg.snr.bins) == ["H", "M", "L", "X"]
    assert cfg.model.alpha == "auto"


def test_alpha_list_for_later_selection() -> None:
    assert load_config(DEMO, ["model.alpha=[1, 1e3, 1e5]"]).model.alpha == [1.0, 1000.0, 100000.0]


def test_override_creates_a_missing_section(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "experiment:\n  id: x\n"), ["compute.workers=8"])
    assert cfg.compute.workers == 8


# ----------------------------------------------------------------------------- mistakes: one line, dotted key
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.alpha=-1", "model.alpha"),
        ("model.alpha=[1, -2]", "model.alpha"),
        ("model.alpha=cheap", "model.alpha"),
        ("snr.bins={H: [7, .inf], M: [4, 7], L: [2, 4.5], X: [0, 2]}", "snr.bins"),  # overlap
        ("snr.bins={H: [7, .inf], M: [4, 7], X: [0, 2]}", "snr.bins"),  # gap [2, 4)
        ("snr.bins={H: [7, 50], M: [4, 7], L: [2, 4], X: [0, 2]}", "snr.bins"),  # does not reach inf
        ("snr.bins.H=[7, .inf, 3]", "snr.bins: bin 'H'"),
        ("evaluation.metrics=[R2, MSE]", "evaluation.metrics"),
        ("compute.scheduler=yarn", "compute.scheduler"),
        ("compute.block_rows=0", "compute.block_rows"),
        ("compute.precision=float16", "compute.precision"),
        ("data.feature_dim=abc", "data.feature_dim"),
        ("data.train_shards=[]", "data.train_shards"),
        ("noise.level=0", "noise.level"),
        ("noise.seed=1.5", "noise.seed"),
        ("noise.test=random", "noise.test"),
        ("snr.method=mean", "snr.method"),
        ("evaluation.per_bin=maybe", "evaluation.per_bin"),
        ("evaluation.gate_fallback=1.5", "evaluation.gate_fallback"),
        ("evaluation.min_bin_samples=-1", "evaluation.min_bin_samples"),
        ("model.type=Lasso", "model.type"),
        ("model.experts=3", "model.experts"),
        ("data={flux: 1}", "data.flux"),
        ("experiment.id=a/b", "experiment.id"),
    ],
)
def test_bad_value_names_file_and_key(override: str, key: str) -> None:
    message = _error(DEMO, (override,))
    assert message.startswith(f"{DEMO}: {key}")
    assert override in message  # says which override set it


def test_negative_alpha_message() -> None:
    message = _error(DEMO, ("model.alpha=-1",))
    assert message.startswith(f"{DEMO}: model.alpha: must be >= 0, got -1")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("colour: blue\n", "colour"),  # unknown top-level key
        ("model:\n  alpah: 3\n", "model.alpah"),  # unknown nested key
        ("model:\n  alpha: -1\n", "model.alpha"),
        ("data:\n  feature_dim: [1, 2]\n", "data.feature_dim"),  # wrong type
        ("data:\n  train_shards: 5\n", "data.train_shards"),
        ("snr:\n  bins:\n    H: [7, .inf]\n    M: [3, 7]\n    L: [2, 4]\n    X: [0, 2]\n", "snr.bins"),
        ("snr:\n  bins:\n    H: [x, .inf]\n    L: [0, 7]\n", "snr.bins: bin 'H'"),
        ("snr:\n  bins: [0, 7]\n", "snr.bins"),
        ("evaluation:\n  metrics: [R2, accuracy]\n", "evaluation.metrics"),
        ("compute:\n  scheduler: 'localhost:8786'\n", "compute.scheduler"),
        ("noise: 1.0\n", "noise"),
    ],
)
def test_bad_file_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = _write(tmp_path, text)
    assert _error(path).startswith(f"{path}: {key}")


def test_unknown_key_lists_the_allowed_ones(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, "model:\n  alpah: 3\n"))
    assert "unknown key" in message and "alpha" in message and "experts" in message


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("model.alpah=3", "model.alpah"),
        ("modell.alpha=3", "modell.alpha"),
        ("model.alpha.x=3", "model.alpha.x"),
        ("model.alpha", "model.alpha"),  # no '='
        ("=3", "=3"),
        ("model..alpha=3", "model..alpha"),
        ("model.alpha=[1, 2", "model.alpha"),  # value is not YAML
    ],
)
def test_bad_override_is_one_line_naming_it(override: str, named: str) -> None:
    message = _error(DEMO, (override,))
    assert message.startswith(f"{DEMO}: override") and named in message


def test_missing_file_and_broken_yaml(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    assert _error(missing).startswith(f"{missing}:")
    broken = _write(tmp_path, "model:\n  alpha: [1, 2\n")
    assert _error(broken).startswith(f"{broken}: not valid YAML")
    assert _error(_write(tmp_path, "")).startswith(f"{tmp_path / 'exp.yaml'}:")
    assert "top level" in _error(_write(tmp_path, "- 1\n- 2\n"))


def test_duplicate_key_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "snr:\n  bins:\n    H: [7, .inf]\n    H: [0, 7]\n")
    assert "duplicate key 'H'" in _error(path)


# ----------------------------------------------------------------------------- routing (see test_partition.py)
def test_shipped_files_route_by_snr_bins() -> None:
    for path in (ORACLE, DEMO):
        cfg = load_config(path)
        assert cfg.routing.by == "snr" and cfg.routing.bins == {}
        assert cfg.partition.names == ("H", "M", "L", "X") and cfg.partition.columns == ("snr",)


def test_experts_count_follows_routing_bins() -> None:
    routing = ["routing.by=mag", "routing.bins={bright: [19, 21], faint: [21, 23]}"]
    cfg = load_config(DEMO, [*routing, "model.experts=2"])
    assert cfg.partition.names == ("bright", "faint")
    # derived from the cells: it never has to be repeated
    assert load_config(DEMO, routing).model.experts == 2
    assert load_config(DEMO, ["snr.bins={HM: [4, .inf], L: [2, 4], X: [0, 2]}"]).model.experts == 3
    # an error only when it contradicts them
    message = _error(DEMO, (*routing, "model.experts=4"))
    assert message == (f"{DEMO}: model.experts: must equal the number of routing.bins cells (2), got 4 "
                       f"(set by override 'model.experts=4')")


def test_evaluation_keys_are_honoured_or_rejected() -> None:
    cfg = load_config(DEMO, ["evaluation.metrics=[R², RMSE]", "evaluation.per_bin=false"])
    assert cfg.evaluation.metrics == ["R2", "RMSE"] and cfg.evaluation.per_bin is False
    for override, words in (("evaluation.comparison=Ridge", ("evaluation.comparison", "'Global Ridge'", "'Ridge'")),
                            ("evaluation.metrics=[MAE, RMSE]", ("evaluation.metrics", "must include 'R²'")),
                            ("evaluation.metrics=[R2, r²]", ("evaluation.metrics", "twice")),
                            ("evaluation.metrics=[R2, MAPE]", ("evaluation.metrics", "'MAPE'"))):
        message = _error(DEMO, (override,))
        assert message.startswith(f"{DEMO}: ") and all(w in message for w in words), message


def test_owner_layout_keys() -> None:
    cfg = load_config(DEMO, ["output.report=logg/moe/exp/exp_logg_snr_oracle_01_{date}.md",
                             "output.img_dir=logg/moe/exp/img/"])
    assert cfg.output.report.endswith("_{date}.md") and cfg.output.img_dir == "logg/moe/exp/img/"
    assert load_config(DEMO).output.report is None and load_config(DEMO).output.img_dir is None
    message = _error(DEMO, ("output.report=exp_{id}.md",))
    assert message.startswith(f"{DEMO}: output.report: only {{date}} is expanded, got {{id}}")


# ----------------------------------------------------------------------------- checks the pipeline makes
def test_check_feature_dim() -> None:
    cfg = load_config(DEMO)
    check_feature_dim(cfg, 4096)
    with pytest.raises(ConfigError, match="data.feature_dim: config says 4096 but the shards have 64 pixels"):
        check_feature_dim(cfg, 64)


def test_demo_config_is_found_and_valid():
    from snrmoe_dask.experiment.driver import demo_config_path

    assert load_config(demo_config_path()).experiment.id.endswith("demo")
