"""The numbers of `snrmoe run` stay what they were when the engine became a library.

tests/golden/results_small.json was written by tests/golden/make_golden.py with the code before that
change (commit c22e5fd); here the same runs are repeated with the current code. Numbers must agree to
rounding (float32 block products may round differently on another CPU's BLAS kernel). Only numbers
are compared: the wording of the verdict (decision, next step, rho) is the report's business.
"""

from __future__ import annotations

import json
import math

import pytest

from golden.make_golden import HERE, RUNS, numbers, run_args, simulate
from snrmoe_dask.cli import main

VERDICT_WORDS = {"decision", "next_step", "rho", "note"}


def _compare(expected, actual, path: str, problems: list[str]) -> None:
    if isinstance(expected, dict):
        for key, value in expected.items():
            if key in VERDICT_WORDS:
                continue
            if key not in actual:
                problems.append(f"{path}.{key}: missing")
            else:
                _compare(value, actual[key], f"{path}.{key}", problems)
    elif isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            problems.append(f"{path}: {actual!r} != {expected!r}")
            return
        for i, (e, a) in enumerate(zip(expected, actual)):
            _compare(e, a, f"{path}[{i}]", problems)
    elif isinstance(expected, float) and not isinstance(actual, bool) and isinstance(actual, (int, float)):
        if not math.isclose(expected, actual, rel_tol=1e-6, abs_tol=1e-9):
            problems.append(f"{path}: {actual!r} != {expected!r}")
    elif expected != actual:
        problems.append(f"{path}: {actual!r} != {expected!r}")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden") / "data"
    simulate(root)
    return root


@pytest.mark.parametrize("name", list(RUNS))
def test_numbers_equal_the_reference(name, data, tmp_path):
    golden = json.loads((HERE / "results_small.json").read_text())[name]
    out = tmp_path / name
    assert main(run_args(data, out, RUNS[name])) == 0
    problems: list[str] = []
    _compare(golden, numbers(out), name, problems)
    assert not problems, "\n".join(problems[:20])
