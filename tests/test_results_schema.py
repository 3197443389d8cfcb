"""results.json has one schema (experiment.results_schema): what the driver writes passes it, what
`snrmoe report` reads is checked by it, and a damaged file is one line naming the key."""

from __future__ import annotations

import copy
import json
import math

import pytest

from report_cases import make_results, one_m_style, ten_k_fail, with_gate
from snrmoe_dask.errors import InputError
from snrmoe_dask.experiment.results_schema import Results, load_results


def _subset(original, dumped, path=""):
    """Every key and value of ``original`` is in ``dumped`` (NaN equal to NaN)."""
    if isinstance(original, dict):
        for key, value in original.items():
            assert key in dumped, f"{path}.{key} lost"
            _subset(value, dumped[key], f"{path}.{key}")
    elif isinstance(original, list):
        assert len(original) == len(dumped), path
        for i, (a, b) in enumerate(zip(original, dumped)):
            _subset(a, b, f"{path}[{i}]")
    elif isinstance(original, float) and math.isnan(original):
        assert math.isnan(dumped), path
    else:
        assert original == dumped and type(original) is type(dumped), f"{path}: {dumped!r} != {original!r}"


@pytest.mark.parametrize("results", [make_results("PASS"), one_m_style(), ten_k_fail(),
                                     with_gate(make_results("FAIL"), 0.47, {})])
def test_round_trip_keeps_every_key_and_value(results):
    results["a_key_of_a_later_version"] = {"x": [1, 2]}  # unknown keys are kept, not refused
    results["bins"]["M"]["expert"]["r2_ci"] = [float("nan"), 0.7]  # NaN, as json writes an undefined bound
    typed = load_results(json.loads(json.dumps(results)))
    dumped = json.loads(typed.to_json())
    _subset(json.loads(json.dumps(results)), dumped)
    assert load_results(dumped) == typed
    assert typed.models.global_.r2 == results["models"]["global"]["r2"]
    assert typed.bins["M"].global_.mae == results["bins"]["M"]["global"]["mae"]


def _damaged(path: list, value) -> dict:
    results = make_results("PASS")
    node = results
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return results


@pytest.mark.parametrize("path, value, words", [
    (["models", "oracle", "rmse"], KeyError, "results.json: missing key 'models.oracle.rmse'"),
    (["models", "global", "r2"], "0.46", "results.json: 'models.global.r2': '0.46' is not a number"),
    (["bins", "M", "n_test"], 118.5, "'bins.M.n_test' is 118.5, expected a count (an integer >= 0)"),
    (["bins", "M", "n_train"], -1, "'bins.M.n_train' is -1, expected a count"),
    (["bins", "L", "skipped"], "no", "'bins.L.skipped' is 'no', expected true or false"),
    (["bins", "X", "global"], 3, "'bins.X.global' must be a dict, got int"),
    (["delta_r2_ci"], [0.1], "'delta_r2_ci' has an unexpected type or shape: expected at least 2 item(s)"),
    (["bins"], {}, "'bins' has an unexpected type or shape"),
    (["threshold"], float("inf"), "threshold=inf, expected a finite number"),
    (["decision"], "INCONCLUSIVE", "decision='INCONCLUSIVE' but the card's rule gives PASS"),
    (["repairs"], [1], "'repairs' must be a dict, got list"),
])
def test_a_damaged_file_is_one_line_naming_the_key(path, value, words):
    with pytest.raises(InputError) as info:
        load_results(_damaged(path, value), "results.json")
    message = str(info.value)
    assert words in message and "\n" not in message and message.startswith("results.json: ")


def test_not_a_dict_is_refused():
    for value in ([1], 3, "x", None):
        with pytest.raises(InputError, match="expected a dict"):
            load_results(value, "results.json")


def test_typed_results_pass_through():
    typed = load_results(make_results("FAIL"))
    assert isinstance(typed, Results) and load_results(typed) is typed
    assert typed.decision == "FAIL" and typed.bins["H"].skipped


def test_the_decision_must_be_the_cards_rule_on_the_files_own_numbers():
    results = make_results("PASS")
    results["delta_r2"] = 0.0100
    with pytest.raises(InputError, match="decision='PASS' but the card's rule gives FAIL for ΔR² = \\+0.0100"):
        load_results(copy.deepcopy(results))
