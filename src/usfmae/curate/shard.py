"""``--shard I/N``: a deterministic split of a stage's inputs over N machines (e.g. a SLURM array).

A file belongs to shard ``sha1(relative path) mod N``: the same on every machine and in every run,
independent of the order or number of the other files, so adding files to a corpus never moves
the ones already done to another shard (each shard's resume stays valid). ``usfmae merge``
(:mod:`usfmae.curate.merge`) checks that all N shards finished and combines them into what a single
run would have written.
"""

from __future__ import annotations

import hashlib

from usfmae.errors import ConfigError


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; None stays None.

    Raises:
        ConfigError: anything else (one line).
    """
    if text is None:
        return None
    parts = str(text).split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"shard must be I/N (e.g. 0/4), got {text!r}")
    index, count = (int(p) for p in parts)
    if not 0 <= index < count:
        raise ConfigError(f"shard {text}: I must be in 0..N-1")
    return index, count


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) of an input named ``key`` (its path relative to the input root)."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") % count


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    """Whether ``key`` belongs to ``shard`` (always, without one)."""
    return shard is None or shard_of(key, shard[1]) == shard[0]
