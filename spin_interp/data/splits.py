"""Deterministic split assignment and seeded sampling.

Every underlying item (a BBQ template instance, a privacy template, a fake identity, a
question, a wiki sentence) has a *group key*. The split of a group is a pure function of that
key, so the three splits are disjoint by construction and do not depend on the order in which
data is read, on ``n`` or on ``seed``:

* :func:`assign_split` hashes one key to ``"score"`` (60 %), ``"val"`` (20 %) or ``"eval"``
  (20 %);
* :func:`rank_partition` is used where the number of keys is small (ten request templates per
  PII type): keys are ordered by their hash and the first 60 % go to ``score``, the next 20 %
  to ``val`` and the rest to ``eval``, so that every split gets at least one of each kind.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

__all__ = [
    "SPLITS",
    "SPLIT_FRACTIONS",
    "assign_split",
    "check_split",
    "key_hash",
    "rank_partition",
    "seeded_order",
    "stable_seed",
    "take",
    "UnionFind",
]

T = TypeVar("T")

#: The split names, in order.
SPLITS: tuple[str, ...] = ("score", "val", "eval")
#: Target fraction of group keys per split.
SPLIT_FRACTIONS: dict[str, float] = {"score": 0.6, "val": 0.2, "eval": 0.2}
_SALT = "spin-interp-split-v1"


def check_split(split: str) -> str:
    """Return ``split`` if it is a valid split name, else raise ``ValueError`` listing them."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return split


def key_hash(key: str, salt: str = _SALT) -> float:
    """Map ``key`` to a float in [0, 1) via SHA-256 (stable across runs and platforms)."""
    digest = hashlib.sha256(f"{salt}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def stable_seed(*parts: object) -> int:
    """Return a 64-bit integer seed derived from ``parts`` (stable, unlike ``hash()``)."""
    text = "|".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def assign_split(key: str) -> str:
    """Return the split of a group key: ``score`` (60 %), ``val`` (20 %) or ``eval`` (20 %)."""
    h = key_hash(key)
    if h < SPLIT_FRACTIONS["score"]:
        return "score"
    if h < SPLIT_FRACTIONS["score"] + SPLIT_FRACTIONS["val"]:
        return "val"
    return "eval"


def rank_partition(keys: Iterable[str]) -> dict[str, str]:
    """Partition a small set of keys into the splits by hash rank.

    Keys are sorted by :func:`key_hash`; the first ``round(0.6 * k)`` go to ``score`` and the
    remainder is shared between ``val`` and ``eval`` (``val`` gets the extra one when the
    remainder is odd). With at least three keys every split receives at least one.
    """
    unique = sorted(set(keys), key=lambda k: (key_hash(k), k))
    k = len(unique)
    if k == 0:
        return {}
    n_score = max(1, round(SPLIT_FRACTIONS["score"] * k)) if k >= 3 else k
    n_score = min(n_score, k - 2) if k >= 3 else n_score
    rest = k - n_score
    n_val = math.ceil(rest / 2)
    out: dict[str, str] = {}
    for i, key in enumerate(unique):
        if i < n_score:
            out[key] = "score"
        elif i < n_score + n_val:
            out[key] = "val"
        else:
            out[key] = "eval"
    return out


def seeded_order(
    items: Sequence[T],
    seed: int,
    stratum: Callable[[T], Hashable] | None = None,
) -> list[T]:
    """Return ``items`` in a seeded, deterministic order.

    Without ``stratum`` this is a seeded shuffle. With it, each stratum is shuffled on its own
    and the strata are interleaved round-robin (in sorted stratum order), so any prefix of the
    result mixes the strata as evenly as their sizes allow. Taking the first ``n`` items is
    therefore a stratified sample, and a smaller ``n`` is always a prefix of a larger one.
    """
    rng = random.Random(stable_seed("spin-interp-sample", seed))
    if stratum is None:
        out = list(items)
        rng.shuffle(out)
        return out
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(stratum(item), []).append(item)
    ordered = [groups[k] for k in sorted(groups, key=repr)]
    for group in ordered:
        rng.shuffle(group)
    out = []
    longest = max((len(g) for g in ordered), default=0)
    for i in range(longest):
        for group in ordered:
            if i < len(group):
                out.append(group[i])
    return out


def take(
    items: Sequence[T],
    n: int | None,
    seed: int,
    what: str,
    stratum: Callable[[T], Hashable] | None = None,
) -> list[T]:
    """Seeded (optionally stratified) sample of ``n`` items; all of them when ``n`` is None.

    Raises ``ValueError`` when ``n`` is not a positive integer or exceeds what is available;
    ``what`` names the pool in the message.
    """
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer or None, got {n!r}")
        if n > len(items):
            raise ValueError(
                f"requested n={n} examples but only {len(items)} are available for {what}; "
                f"pass n<={len(items)} or n=None"
            )
    ordered = seeded_order(items, seed, stratum)
    return ordered if n is None else ordered[:n]


class UnionFind:
    """Minimal union-find over string keys (used to merge BBQ items into split groups)."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        """Return the representative of ``key`` (the smallest key of its component)."""
        parent = self._parent.setdefault(key, key)
        if parent == key:
            return key
        root = self.find(parent)
        self._parent[key] = root
        return root

    def union(self, a: str, b: str) -> None:
        """Merge the components of ``a`` and ``b``; the smaller key becomes the root."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        lo, hi = (ra, rb) if ra < rb else (rb, ra)
        self._parent[hi] = lo
