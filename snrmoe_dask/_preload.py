"""Imports that a command needs only after its pass, made in a background thread while the pass runs.

The pass spends its time in numpy and BLAS, which release the GIL, so the interpreter is mostly idle
then; scikit-learn (with scipy.stats) and matplotlib take seconds to import, and a run needs them only
for the solve, the scores and the figures. A failed import here is ignored: the real import, later in
the main thread, raises it where it belongs.
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Iterable


def import_quietly(name: str) -> None:
    """Import module ``name``, ignoring a failure (see the module docstring)."""
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - see the module docstring
        pass


def preload(modules: Iterable[str]) -> threading.Thread:
    """Start importing ``modules`` in a daemon thread; returns the thread."""
    names = [name for name in modules if name not in sys.modules]

    def load() -> None:
        for name in names:
            import_quietly(name)

    thread = threading.Thread(target=load, name="snrmoe-preload", daemon=True)
    thread.start()
    return thread
