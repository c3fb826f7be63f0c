"""Frame fingerprints for deduplication and leakage audits.

Two hashes per frame:

* ``pixel_hash``: SHA-1 of the decoded uint8 pixels (shape included), so the same picture saved as
  PNG, as JPEG-free TIFF or as one frame of a DICOM matches exactly, whatever the container.
* ``phash``: the 64-bit DCT perceptual hash (Zauner 2010 style): grayscale, area-resize to 32x32,
  2-D DCT, keep the 8x8 lowest frequencies, one bit per coefficient above their median. Frames that
  look alike (re-encoded, resized, consecutive cine frames) differ in a few bits only, so
  "near duplicate" means Hamming distance <= a threshold (6 of 64 bits by default).

:class:`HammingIndex` finds every stored hash within the threshold of a query without comparing all
pairs: by the pigeonhole principle, two 64-bit codes at distance <= t agree exactly on at least one
of t+1 disjoint bit blocks, so each block value is a bucket key and only bucket mates are checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable

import cv2
import numpy as np

PHASH_BITS = 64
_MASK64 = (1 << 64) - 1


def pixel_hash(pixels: np.ndarray) -> str:
    """SHA-1 hex digest of a frame's pixels and shape.

    Args:
        pixels: (H, W) or (H, W, C) array; hashed as C-contiguous bytes.
    """
    digest = hashlib.sha1(f"{pixels.shape}|{pixels.dtype.str}".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def phash(pixels: np.ndarray) -> int:
    """64-bit DCT perceptual hash of a frame, as a non-negative Python int.

    Args:
        pixels: (H, W) gray or (H, W, 3) RGB uint8 frame (any size).

    Returns:
        Bit 63 is the DCT coefficient (0, 0), then row-major over the 8x8 low-frequency block.
    """
    gray = pixels if pixels.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(pixels[..., :3]), cv2.COLOR_RGB2GRAY)
    # INTER_AREA averages every source pixel, so the hash does not depend on the input size.
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()
    bits = low > np.median(low)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def phash_to_hex(value: int) -> str:
    """16-character hex form of a hash (what the manifest stores next to the int64 form)."""
    return f"{value & _MASK64:016x}"


def phash_to_int64(value: int) -> int:
    """Two's-complement int64 view of an unsigned 64-bit hash (Parquet has no uint64 in pandas)."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def phash_from_int64(value: int) -> int:
    """Inverse of :func:`phash_to_int64`."""
    return int(value) & _MASK64


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return ((a ^ b) & _MASK64).bit_count()


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances.

    Args:
        a: (N,) uint64 hashes. b: (M,) uint64 hashes.

    Returns:
        (N, M) uint8 distances.
    """
    xor = np.bitwise_xor(a.astype(np.uint64)[:, None], b.astype(np.uint64)[None, :])
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(xor).astype(np.uint8)
    as_bytes = xor.view(np.uint8).reshape(*xor.shape, 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1, dtype=np.uint8)


class HammingIndex:
    """Incremental index answering "which stored hashes are within ``threshold`` bits of h?".

    Args:
        threshold: largest Hamming distance that counts as a match (0..31).
    """

    def __init__(self, threshold: int) -> None:
        if not 0 <= threshold < 32:
            raise ValueError("phash threshold must be in 0..31")
        self.threshold = threshold
        n_blocks = threshold + 1
        edges = np.linspace(0, PHASH_BITS, n_blocks + 1).round().astype(int)
        self._blocks = [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
        self._buckets: list[dict[int, list[int]]] = [{} for _ in self._blocks]
        self._hashes: list[int] = []
        self._keys: list[Hashable] = []

    def __len__(self) -> int:
        return len(self._hashes)

    def _block_values(self, h: int) -> Iterable[int]:
        for lo, hi in self._blocks:
            yield (h >> lo) & ((1 << (hi - lo)) - 1)

    def add(self, h: int, key: Hashable) -> None:
        """Store hash ``h`` under ``key`` (keys need not be unique)."""
        slot = len(self._hashes)
        self._hashes.append(h & _MASK64)
        self._keys.append(key)
        for buckets, value in zip(self._buckets, self._block_values(h), strict=True):
            buckets.setdefault(value, []).append(slot)

    def query(self, h: int) -> list[tuple[Hashable, int]]:
        """All stored ``(key, distance)`` with distance <= threshold, in insertion order."""
        slots: set[int] = set()
        for buckets, value in zip(self._buckets, self._block_values(h), strict=True):
            slots.update(buckets.get(value, ()))
        hits = []
        for slot in sorted(slots):
            distance = hamming(h, self._hashes[slot])
            if distance <= self.threshold:
                hits.append((self._keys[slot], distance))
        return hits

    def nearest(self, h: int) -> tuple[Hashable, int] | None:
        """The closest stored ``(key, distance)`` within the threshold (earliest on ties), or None."""
        hits = self.query(h)
        return min(hits, key=lambda kd: kd[1]) if hits else None


class GroupedHammingIndex:
    """Per-group near-duplicate search that stays small for corpora of many tiny groups.

    Most groups are one image or a short clip: those keep a plain list scanned linearly; a group
    that grows past ``promote_at`` members gets its own :class:`HammingIndex`.

    Args:
        threshold: largest Hamming distance that counts as a match.
        promote_at: group size from which a bucket index replaces the linear scan.
    """

    def __init__(self, threshold: int, promote_at: int = 64) -> None:
        self.threshold, self.promote_at = threshold, promote_at
        self._lists: dict[Hashable, list[tuple[int, Hashable]]] = {}
        self._indexes: dict[Hashable, HammingIndex] = {}

    def add(self, group: Hashable, h: int, key: Hashable) -> None:
        """Store hash ``h`` under ``key`` in ``group``."""
        if group in self._indexes:
            self._indexes[group].add(h, key)
            return
        members = self._lists.setdefault(group, [])
        members.append((h & _MASK64, key))
        if len(members) >= self.promote_at:
            index = HammingIndex(self.threshold)
            for value, k in self._lists.pop(group):
                index.add(value, k)
            self._indexes[group] = index

    def nearest(self, group: Hashable, h: int) -> tuple[Hashable, int] | None:
        """Closest ``(key, distance)`` in ``group`` within the threshold (earliest on ties), or None."""
        if group in self._indexes:
            return self._indexes[group].nearest(h)
        best = None
        for value, key in self._lists.get(group, ()):
            distance = hamming(h, value)
            if distance <= self.threshold and (best is None or distance < best[1]):
                best = (key, distance)
        return best
