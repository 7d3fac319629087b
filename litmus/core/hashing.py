"""Deterministic unit bucketing (docs/DEVELOPING.md, "Assignment, step by step"): murmur3_x86_32, seed 1, into [0, 10000)."""

from __future__ import annotations

from mmh3 import hash as _murmur3_32

BUCKETS = 10_000
SEED = 1


def bucket(s: str) -> int:
    """Return floor(murmur3_x86_32(utf8(s), seed=1) * 10000 / 2**32), an int in [0, 10000)."""
    # mmh3 5.x segfaults on a str holding a lone surrogate (it cannot be UTF-8 encoded);
    # encoding non-ASCII text ourselves turns that into a UnicodeEncodeError and hashes the
    # same UTF-8 bytes.  isascii() is O(1), so ASCII ids pay almost nothing for the check.
    # Positional arguments: the keyword form costs ~50 ns more per call.
    if s.isascii():
        return (_murmur3_32(s, SEED, False) * BUCKETS) >> 32
    return (_murmur3_32(s.encode("utf-8"), SEED, False) * BUCKETS) >> 32
