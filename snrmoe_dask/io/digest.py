"""Content digests of shards, taken from the bytes a pass reads: xxHash's XXH3, 128 bits.

A block's digest covers its raw flux and error values as read (float32, before any repair); a
shard's digest combines its block digests in block order. The pass hashes every byte it reads, so
the hash must cost little beside the read: XXH3 is many times faster than sha256 or blake2b (its
measured share of a pass is in docs/performance.md, from benchmarks/). These digests detect change,
not tampering: XXH3 is not cryptographic.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import xxhash

DIGEST_BYTES = 16


def block_digest(flux: np.ndarray, error: np.ndarray) -> bytes:
    """The 16-byte digest of one block: its flux then its error (rows, D) values, C order."""
    h = xxhash.xxh3_128()
    for values in (flux, error):
        h.update(memoryview(np.ascontiguousarray(values)).cast("B"))
    return h.digest()


def shard_digest(block_digests: Iterable[bytes]) -> str:
    """The 32-hex-digit digest of a sequence of block digests, in order."""
    h = xxhash.xxh3_128()
    for d in block_digests:
        h.update(d)
    return h.hexdigest()

