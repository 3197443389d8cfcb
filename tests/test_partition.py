"""Partitions for routing.by: SNR bins, bins of any params column, two-column grids; their config keys."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from test_config import (  # the config suite's helpers (tests/ is on sys.path)
    DEMO,
    _error,
    _write,
)

from snrmoe_dask.core.partition import make_partition
from snrmoe_dask.core.snr import Bins
from snrmoe_dask.errors import ConfigError, InputError
from snrmoe_dask.experiment.config import config_to_dict
from snrmoe_dask.experiment.config_file import load_config

inf = math.inf
CARD = {"H": [7, inf], "M": [4, 7], "L": [2, 4], "X": [0, 2]}
MH = {"poor": ["-inf", -1], "mid": [-1, 0], "rich": [0, ".inf"]}
TEFF = {"cool": [3000, 5000], "hot": [5000, 8000]}
GRID_SET = ("routing.by=[T_eff, M_H]", "routing.bins={T_eff: {cool: [3000, 5000], hot: [5000, 8000]}, "
            "M_H: {poor: [-.inf, 0], rich: [0, .inf]}}", "model.experts=4")


def _names(partition, labels) -> list[str]:
    return [partition.names[i] for i in partition.assign(labels)]


# ----------------------------------------------------------------------------- Bins off the half line
@pytest.mark.parametrize("low", ["-inf", "-.inf", "-Infinity", -inf, None])
def test_bins_may_start_anywhere_off_the_half_line(low) -> None:
    bins = Bins.from_mapping({"lo": [low, -1], "hi": [-1, 2]}, key="routing.bins", half_line=False)
    assert bins.low[0] == -inf and bins.high[1] == 2.0
    assert bins.to_dict() == {"lo": [None, -1.0], "hi": [-1.0, 2.0]}
    assert Bins.from_mapping(bins.to_dict(), half_line=False) == bins


def test_snr_bins_still_tile_the_half_line() -> None:
    for mapping, words in [({"lo": ["-inf", 2], "hi": [2, inf]}, "finite"),
                           ({"lo": [1, 2], "hi": [2, inf]}, "start at 0"),
                           ({"lo": [0, 2], "hi": [2, 5]}, "reach inf")]:
        with pytest.raises(ConfigError, match=words):
            Bins.from_mapping(mapping)
        Bins.from_mapping(mapping, half_line=False)  # any contiguous cover is fine off the half line


# ----------------------------------------------------------------------------- one column
def test_snr_partition_keeps_the_snr_bins() -> None:
    part = make_partition("snr", {}, CARD)
    assert part.names == ("H", "M", "L", "X") and part.columns == ("snr",) and part.is_snr
    assert _names(part, [0.0, 1.999, 2.0, 7.0, inf]) == ["X", "X", "L", "H", "H"]
    np.testing.assert_array_equal(part.assign([3.0, 8.0]), Bins.from_mapping(CARD).assign(np.array([3.0, 8.0])))
    with pytest.raises(InputError, match="negative"):
        part.assign([-1.0])  # SNR's own checks stay
    assert part.describe(0) == {"by": "snr", "low": 7.0, "high": None}


def test_column_bins_half_open_with_infinite_ends() -> None:
    part = make_partition("M_H", MH)
    assert part.names == ("poor", "mid", "rich") and part.columns == ("M_H",) and not part.is_snr
    values = [-inf, -2.5, -1.0000001, -1.0, -0.5, 0.0, 0.3, 1e9, inf]
    assert _names(part, values) == ["poor", "poor", "poor", "mid", "mid", "rich", "rich", "rich", "rich"]
    assert part.describe(0) == {"by": "M_H", "low": None, "high": -1.0}
    assert part.describe(1) == {"by": "M_H", "low": -1.0, "high": 0.0}


def test_column_bins_need_not_start_at_zero_and_keep_user_order() -> None:
    part = make_partition("mag", {"bright": [20.5, 21.5], "faint": [21.5, 22.5], "brightest": [19, 20.5]})
    assert _names(part, [19.0, 20.5, 21.4999, 21.5, 22.4999]) == ["brightest", "bright", "bright", "faint", "faint"]


@pytest.mark.parametrize("value, shown", [(22.5, "22.5"), (18.0, "18.0"), (math.nan, "nan"), (inf, "inf")])
def test_value_outside_every_bin_names_column_and_value(value: float, shown: str) -> None:
    part = make_partition("mag", {"bright": [19, 21], "faint": [21, 22.5]})
    with pytest.raises(InputError) as info:
        part.assign([20.0, value, 21.0, value])
    message = str(info.value)
    assert "'mag'" in message and f"value {shown}" in message and "(row 1)" in message
    assert "2 of 4" in message and "[19, 22.5)" in message and "\n" not in message


# ----------------------------------------------------------------------------- grids
def test_grid_cells_row_major() -> None:
    part = make_partition(["T_eff", "M_H"], {"T_eff": TEFF, "M_H": MH})
    assert part.columns == ("T_eff", "M_H") and part.n_cells == 6
    assert part.names == ("cool|poor", "cool|mid", "cool|rich", "hot|poor", "hot|mid", "hot|rich")
    labels = np.array([[3000, -5], [4999.9, -1], [5000, -inf], [7999, 0.0], [5000, 0.5], [3500, 0.0]])
    assert list(part.assign(labels)) == [0, 1, 3, 5, 5, 2]
    assert part.describe(4) == {"by": ["T_eff", "M_H"], "low": {"T_eff": 5000.0, "M_H": -1.0},
                                "high": {"T_eff": 8000.0, "M_H": 0.0}}
    json.dumps([part.describe(k) for k in range(part.n_cells)])


def test_grid_outside_value_names_its_column() -> None:
    part = make_partition(["T_eff", "M_H"], {"T_eff": TEFF, "M_H": MH})
    with pytest.raises(InputError, match=r"'T_eff': value 9000.0 \(row 1\)"):
        part.assign([[4000, 0.0], [9000, 0.0]])
    with pytest.raises(InputError, match="expected \\(N, 2\\)"):
        part.assign([4000, 0.0])


def test_labels_from_a_params_table() -> None:
    table = pd.DataFrame({"T_eff": [4000.0, 6000.0], "M_H": [-2.0, 0.5]})
    grid = make_partition(["T_eff", "M_H"], {"T_eff": TEFF, "M_H": MH})
    assert list(grid.assign(grid.labels(table))) == [0, 5]
    snr = make_partition("snr", {}, CARD)
    assert list(snr.assign(snr.labels(table, snr=np.array([1.0, 9.0])))) == [3, 0]
    with pytest.raises(InputError, match="'mag' is not in the params table"):
        make_partition("mag", {"a": [0, 30]}).labels(table)


@pytest.mark.parametrize("by, bins, key, words", [
    ("snr", {"a": [0, 1]}, "routing.bins", ["left out"]),
    ("T_eff", {}, "routing.bins", ["required", "'T_eff'"]),
    ("T_eff", {"a": [0, 1], "b": [2, 3]}, "routing.bins", ["gap"]),
    ("T_eff", {"a": [0, 2], "b": [1, 3]}, "routing.bins", ["overlaps"]),
    ("T_eff", {"a": [3, 1]}, "routing.bins", ["low must be < high"]),
    (["T_eff"], {"T_eff": TEFF}, "routing.by", ["exactly 2"]),
    (["T_eff", "M_H"], {"T_eff": TEFF}, "routing.bins", ["one mapping per column"]),
    (["T_eff", "M_H"], {"T_eff": TEFF, "M_H": [0, 1]}, "routing.bins.M_H", ["mapping"]),
    (["T_eff", "M_H"], {"T_eff": TEFF, "M_H": {"a|b": [0, 1]}}, "routing.bins.M_H", ["'|'"]),
])
def test_make_partition_errors(by, bins, key: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        make_partition(by, bins, CARD)
    message = str(info.value)
    assert message.startswith(f"{key}:") and "\n" not in message
    assert all(word in message for word in words)


# ----------------------------------------------------------------------------- config keys
def test_config_default_is_snr_routing() -> None:
    cfg = load_config(DEMO)
    assert cfg.routing.by == "snr" and cfg.routing.bins == {}
    assert cfg.partition.names == cfg.bins.names and cfg.partition.columns == ("snr",)


def test_config_column_routing_from_file(tmp_path) -> None:
    path = _write(tmp_path, "routing:\n  by: M_H\n  bins:\n    poor: [-.inf, -1]\n    mid: [-1, 0]\n"
                            "    rich: [0, .inf]\nmodel:\n  experts: 3\n")
    cfg = load_config(path)
    assert cfg.partition.names == ("poor", "mid", "rich") and cfg.partition.columns == ("M_H",)
    assert cfg.partition.describe(0)["low"] is None
    json.dumps(config_to_dict(cfg))  # -inf stays JSON-able in provenance


def test_config_grid_from_overrides() -> None:
    cfg = load_config(DEMO, GRID_SET)
    assert cfg.routing.by == ["T_eff", "M_H"]
    assert cfg.partition.names == ("cool|poor", "cool|rich", "hot|poor", "hot|rich")
    # one cell's bins can be set alone, inside the grid mapping
    cfg = load_config(DEMO, (*GRID_SET, "routing.bins.M_H.rich=[0, 9]"))
    assert cfg.partition.axes[1].high[1] == 9.0


@pytest.mark.parametrize("overrides, key", [
    (("routing.by=T_eff",), "routing.bins"),  # no bins for a column
    (("routing.bins={a: [0, 1]}",), "routing.bins"),  # bins while by is snr
    (("routing.by=T_eff", "routing.bins={a: [0, 1], b: [1.5, 2]}", "model.experts=2"), "routing.bins"),
    (("routing.by=T_eff", "routing.bins={a: [0, 1], b: [1, 2]}", "model.experts=4"), "model.experts"),
    (("routing.by=[T_eff]",), "routing.by"),
    (("routing.by=[T_eff, M_H, mag]",), "routing.by"),
    (("routing.by=[T_eff, T_eff]",), "routing.by"),
    (("routing.by=5",), "routing.by"),
    (("routing.by=''",), "routing.by"),
    (("routing.by=[T_eff, M_H]", "routing.bins={T_eff: {a: [0, 1]}}"), "routing.bins"),
    (("routing.by=[T_eff, M_H]", "routing.bins={T_eff: {a: [0, 1]}, M_H: [0, 1]}"), "routing.bins.M_H"),
    ((*GRID_SET[:2], "model.experts=3"), "model.experts"),
])
def test_bad_routing_is_one_line_naming_the_key(overrides: tuple[str, ...], key: str) -> None:
    message = _error(DEMO, overrides)
    assert message.startswith(f"{DEMO}: {key}:")


def test_bad_routing_in_a_file(tmp_path) -> None:
    path = _write(tmp_path, "routing:\n  by: [T_eff, M_H]\n  bins:\n    T_eff: {a: [0, 1]}\n"
                            "    M_H: {p: [0, 1], q: [2, 3]}\nmodel:\n  experts: 2\n")
    message = _error(path)
    assert message.startswith(f"{path}: routing.bins.M_H: gap between bin 'p'")
