"""snrmoe-dask: out-of-core oracle SNR-binned Ridge experts vs one global Ridge (LOGG-SNR-ORACLE-01)."""

__version__ = "0.1.0"
