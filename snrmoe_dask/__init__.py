"""snrmoe-dask: out-of-core oracle SNR-binned Ridge experts vs one global Ridge (LOGG-SNR-ORACLE-01)."""

from ._version import __version__

__all__ = ["__version__"]
