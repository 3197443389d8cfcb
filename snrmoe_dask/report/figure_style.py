"""What every figure of the report shares: the models' names and colours, the threshold, gain and loss
colours, the bins' palette, and how a PNG is written (atomically, marked as this tool's).

The card's four figures are ``report.plots``, the gate's and the alpha curves' ``report.gate_alpha_plots``,
the scaling curve ``report.scaling``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure

from .._version import __version__
from ..io.atomic import atomic_file

MODEL_LABELS = {"global": "Global Ridge", "oracle": "Oracle MoE", "deployed": "Deployed MoE",
                "noisy_snr_routed": "Noisy-SNR routed"}
MODEL_COLORS = {"global": "#4C72B0", "oracle": "#DD8452", "deployed": "#55A868", "noisy_snr_routed": "#8172B3"}
GAIN_COLOR, SMALL_GAIN_COLOR, LOSS_COLOR, THRESHOLD_COLOR = "#1B7837", "#555555", "#B2182B", "#C44E52"
SOFTWARE = f"snrmoe-dask {__version__}"  # PNG metadata "Software": marks the files this tool wrote
DPI = 150


def save_figure(fig: Figure, path: Path) -> Path:
    """Write the PNG through a temporary file and ``os.replace`` so a reader never sees half a file."""
    with atomic_file(path) as fh:
        fig.savefig(fh, format="png", dpi=DPI, metadata={"Software": SOFTWARE})
    return path


def padded(low: float, high: float, share: float = 0.05) -> tuple[float, float]:
    """(low, high) widened by ``share`` of its width on each side."""
    margin = share * (high - low)
    return low - margin, high + margin


def text_color(rgba) -> str:
    """Black on light cells, white on dark ones (relative luminance)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def bin_colors(names: list[str]) -> dict[str, Any]:
    """A colour per bin name, in order, from the Dark2 palette."""
    palette = colormaps["Dark2"].colors
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}
