"""The statistics cache: finished pass results (per-bin statistics, repairs, per-row SNR) kept on
disk, one HDF5 file per key, so that a rerun, a new alpha, merged bins or an added shard does not
read the spectra again (docs/cache.md).

``keys`` names a result by what it depends on (:func:`shard_key`, :func:`merged_key`); ``entry_file``
is an entry's file layout, its checksum and :data:`CACHE_VERSION`; ``store`` is :class:`ShardCache`
(load, save, which results are worth an entry, the LRU size cap, the free-space margin);
``maintenance`` lists, clears and verifies a cache folder (``snrmoe cache ls|clear|verify``).
Which entries a pass loads or saves is decided in ``engine.cached_pass``.
"""

from .entry_file import CACHE_VERSION, Content
from .keys import key_facts, key_of, merged_key, shard_key
from .maintenance import clear_cache, list_cache, remove_dead_temp_files, verify_cache
from .store import DEFAULT_MAX_GB, DEFAULT_MAX_RATIO, DEFAULT_MIN_GFLOP, ShardCache

__all__ = ["CACHE_VERSION", "DEFAULT_MAX_GB", "DEFAULT_MAX_RATIO", "DEFAULT_MIN_GFLOP", "Content", "ShardCache",
           "clear_cache", "key_facts", "key_of", "list_cache", "merged_key", "remove_dead_temp_files", "shard_key",
           "verify_cache"]
