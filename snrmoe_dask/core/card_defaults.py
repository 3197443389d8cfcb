"""The values of experiment card LOGG-SNR-ORACLE-01, defined once for every layer.

Every default of the library and of the config file is one of these, so that the API with
no arguments computes exactly what the card specifies.
"""

from __future__ import annotations

import math

EXPERIMENT_ID = "LOGG-SNR-ORACLE-01"
# name -> [low, high): half-open SNR intervals, in the card's report order
BINS: dict[str, tuple[float, float]] = {"H": (7.0, math.inf), "M": (4.0, 7.0), "L": (2.0, 4.0), "X": (0.0, 2.0)}
# Fisher-information ceilings of R² per bin that the card quotes (R²_max), and its expected training shares
R2_CEILING = {"H": 0.89, "M": 0.74, "L": 0.37, "X": 0.0}
EXPECTED_SHARE = {"H": 0.30, "M": 0.30, "L": 0.20, "X": 0.10}
ALPHA = 100000.0
TARGET = "log_g"
NOISE_LEVEL = 1.0
NOISE_SEED = 42
TEST_SEED = 2025
SNR_METHOD = "norm"
THRESHOLD = 0.02  # Gate-2: PASS when ΔR² >= THRESHOLD
MIN_BIN_SAMPLES = 100  # the card's troubleshooting rule: fewer training spectra -> no expert
RHO_BAR = 0.7  # the owner's bar for the deployable gate (MVP-2.0): keep >= 70 % of the headroom
