"""notebooks/oracle_snr_moe.ipynb: committed without outputs, and runs end to end on tiny data.

The notebook is executed with nbclient in a kernel started from *this* interpreter (a kernelspec
written into a temporary folder whose argv is ``sys.executable -m ipykernel_launcher``), so it
imports the same installed snrmoe_dask as the tests, whatever kernels the machine has registered.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import AsyncKernelManager  # noqa: E402

from snrmoe_dask.io.simulate import simulate_set  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "oracle_snr_moe.ipynb"
KERNEL = "snrmoe-test-python"
PIXELS = 64


def _tagged(nb, tag: str):
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def _text(outputs) -> str:
    parts = []
    for out in outputs:
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out and "text/plain" in out["data"]:
            parts.append(out["data"]["text/plain"])
    return "".join(parts)


def _kernel_manager(tmp: Path) -> AsyncKernelManager:
    """A kernel manager whose only custom kernelspec runs this interpreter."""
    from ipykernel.kernelspec import write_kernel_spec

    kernels = tmp / "kernels"
    write_kernel_spec(kernels / KERNEL, overrides={"display_name": "snrmoe test kernel"})
    spec = json.loads((kernels / KERNEL / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    return AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"cells {dirty} carry outputs or execution counts; clear them before committing"
    assert nb.cells.index(_tagged(nb, "parameters")) == min(nb.cells.index(c) for c in code), \
        "the parameters cell must be the first code cell"
    _tagged(nb, "delta-r2-vs-alpha")


def test_notebook_runs_on_tiny_data(tmp_path):
    data = tmp_path / "data"
    simulate_set(data, train=(2, 1500), val=0, test=300, seed=11, pixels=PIXELS, progress=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    _tagged(nb, "parameters").source = "\n".join([
        "SIMULATE_DEMO = False",
        f"DATA_DIR = {str(tmp_path / 'unused-demo-data')!r}",
        f"ROOT = {str(data)!r}",
        "TRAIN = 'train_1500_{0..1}/dataset.h5'",
        "TEST = 'test_300_0/dataset.h5'",
        "BLOCK_ROWS = 256",
        "N_WORKERS = 2",
        "ALPHAS = [1e3, 1e5]",
        "BOOTSTRAP = 100",
    ])

    client = nbclient.NotebookClient(nb, km=_kernel_manager(tmp_path), timeout=180,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError, with the cell's traceback, on any error

    assert not any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert not (tmp_path / "unused-demo-data").exists()
    progress = [c for c in nb.cells if "progress(per_shard)" in c.source]
    assert len(progress) == 1 and any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                                      for o in progress[0].outputs), "the progress bar is not a Jupyter widget"
    plot = _tagged(nb, "delta-r2-vs-alpha")
    assert any("image/png" in o.get("data", {}) for o in plot.outputs), "the ΔR² vs alpha cell drew no figure"
    text = "\n".join(_text(c.outputs) for c in nb.cells if c.cell_type == "code")
    assert "3,000 training spectra x 64 pixels in 2 shards" in text
    assert re.search(r"one pass over 3,000 spectra", text)
    assert "2 alphas solved from the statistics" in text and "no data pass" in text
    assert "statistics from zarr are identical to those from HDF5: True" in text
    figures = set(re.findall(r"snr_oracle_moe_\w+\.png", text))
    assert len(figures) >= 4, figures
