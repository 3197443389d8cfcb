"""The numpy core: the math of the experiment, with no files, no dask and no config.

Per-bin sufficient statistics (``stats``) and the Ridge + StandardScaler solved from them
(``ridge``), the reproducible noise (``noise``), SNR and bins (``snr``, ``partition``), repairs
(``repair``), a pass's fused per-block work and its result (``block_pass``), the fixed order of its
adds (``sum_order``), arrays in ordinary pages (``small_pages``), metrics, bootstrap intervals, alpha
selection, the deployable gate and routing; ``card_defaults`` holds the experiment card's values,
defined once.
Everything here works on in-memory arrays and imports nothing from the layers above.
"""
