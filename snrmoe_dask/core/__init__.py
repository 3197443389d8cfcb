"""The numpy core: the math of the experiment, with no files, no dask and no config.

Per-bin sufficient statistics (``stats``) and the Ridge + StandardScaler solved from them
(``ridge``), the reproducible noise (``noise``), SNR and bins (``snr``, ``partition``), repairs
(``repair``), the fused per-block work (``fold``), metrics, bootstrap intervals, alpha selection,
the deployable gate and routing; ``card`` holds the experiment card's values, defined once.
Everything here works on in-memory arrays and imports nothing from the layers above.
"""
