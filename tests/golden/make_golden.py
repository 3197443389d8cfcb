"""Writes tests/golden/results_small.json: results.json numbers of `snrmoe run` on a fixed small set.

Run once with the code whose numbers are the reference (it was run on commit c22e5fd, the last commit
before the engine became a library), then commit the JSON; tests/test_regression.py reruns the same
runs with the current code and compares. Usage: .venv/bin/python tests/golden/make_golden.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PIXELS = 48
SEED = 7
# name -> extra --set overrides of each reference run
RUNS = {
    "card": [],
    "auto_alpha_gate": ["model.alpha=auto", "evaluation.deployable_gate=true"],
    "teff_partition": ["model.experts=2", "routing.by=T_eff", "routing.bins={cool: [3700, 4700], hot: [4700, 6100]}"],
    "expected_noise_float64": ["noise.mode=expected", "compute.precision=float64"],
}
RESULT_KEYS = ("decision", "delta_r2", "delta_r2_ci", "models", "bins", "snr", "repairs", "alpha", "gate")


def simulate(root: Path) -> None:
    from snrmoe_dask.io.simulate import simulate_set

    simulate_set(root, train=(2, 900), val=300, test=300, seed=SEED, pixels=PIXELS, progress=False)


def run_args(root: Path, out: Path, extra: list[str]) -> list[str]:
    sets = [f"data.root={root}", 'data.train_shards=["train_900_{0..1}/dataset.h5"]',
            "data.val_file=val_300/dataset.h5", "data.test_file=test_300_0/dataset.h5",
            f"data.feature_dim={PIXELS}", f"output.dir={out}", "compute.block_rows=256",
            "compute.cache=false", "evaluation.bootstrap=100", "evaluation.min_bin_samples=30",
            "model.alpha=1000", *extra]
    return ["run", str(REPO / "config" / "demo.yaml"), "-q", *[a for s in sets for a in ("--set", s)]]


def numbers(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    return {k: results[k] for k in RESULT_KEYS if k in results}


def main() -> int:
    from snrmoe_dask.cli import main as cli

    golden = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        simulate(root)
        for name, extra in RUNS.items():
            out = Path(tmp) / name
            if cli(run_args(root, out, extra)) != 0:
                raise SystemExit(f"run {name} failed")
            golden[name] = numbers(out)
    (HERE / "results_small.json").write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
