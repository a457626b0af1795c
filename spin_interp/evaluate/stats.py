"""Interval estimates and paired tests for evaluation metrics.

* :func:`wilson_interval` - the Wilson score interval of a binomial proportion.
* :func:`bootstrap_interval` - a seeded percentile bootstrap interval of a (weighted) mean,
  optionally passed through ``exp`` (used for perplexity).
* :func:`paired_bootstrap` - a seeded percentile bootstrap interval of ``after - before`` on the
  same items, resampling items jointly so that the pairing is kept.
* :func:`mcnemar_exact` - the exact (binomial) McNemar test on the discordant pairs of two binary
  outcomes measured on the same items.

Everything is plain numpy / the standard library; no test here silently accepts an empty sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = [
    "McNemarResult",
    "PairedDifference",
    "bootstrap_interval",
    "mcnemar_exact",
    "mcnemar_from_outcomes",
    "paired_bootstrap",
    "statistic",
    "wilson_interval",
]

TRANSFORMS = ("identity", "exp")


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n`` Bernoulli trials.

    ``centre = (k + z²/2) / (n + z²)``, ``half = z·sqrt(k(n-k)/n + z²/4) / (n + z²)``; the result
    is clipped to [0, 1]. Raises ``ValueError`` for ``n < 1`` or ``successes`` outside [0, n].
    """
    if n < 1:
        raise ValueError("a Wilson interval needs at least one trial (n >= 1)")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    z = _z(confidence)
    z2 = z * z
    centre = (successes + z2 / 2.0) / (n + z2)
    half = z * math.sqrt(successes * (n - successes) / n + z2 / 4.0) / (n + z2)
    return max(0.0, centre - half), min(1.0, centre + half)


def _as_arrays(
    values: Sequence[float], weights: Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError("need a non-empty 1-D sequence of values")
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != v.shape:
        raise ValueError(f"weights have shape {w.shape}, values {v.shape}")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    return v, w


def _apply(x: np.ndarray | float, transform: str) -> np.ndarray | float:
    if transform == "identity":
        return x
    if transform == "exp":
        return np.exp(x)
    raise ValueError(f"unknown transform {transform!r}; choose one of {TRANSFORMS}")


def statistic(
    values: Sequence[float], weights: Sequence[float] | None = None, transform: str = "identity"
) -> float:
    """``transform(sum(w·v) / sum(w))``: a rate, a mean, or (``exp``) a token-weighted
    perplexity."""
    v, w = _as_arrays(values, weights)
    return float(_apply(float((w * v).sum() / w.sum()), transform))


def _resample_stats(v: np.ndarray, w: np.ndarray, idx: np.ndarray, transform: str) -> np.ndarray:
    wi = w[idx]
    denom = wi.sum(axis=1)
    # a resample whose weights are all zero has no defined statistic: drop it (rare, and only
    # possible with zero weights, which perplexity never produces)
    ok = denom > 0
    means = (wi[ok] * v[idx[ok]]).sum(axis=1) / denom[ok]
    return np.asarray(_apply(means, transform))


def _indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    if n_boot < 100:
        raise ValueError("use at least 100 bootstrap resamples")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_boot, n))


def bootstrap_interval(
    values: Sequence[float],
    weights: Sequence[float] | None = None,
    transform: str = "identity",
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Seeded percentile bootstrap interval of :func:`statistic` over items."""
    v, w = _as_arrays(values, weights)
    _z(confidence)
    stats = _resample_stats(v, w, _indices(v.size, n_boot, seed), transform)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedDifference:
    """``after - before`` on paired items with a bootstrap interval."""

    before: float
    after: float
    difference: float
    interval: tuple[float, float]
    n: int
    n_boot: int
    seed: int


def paired_bootstrap(
    before: Sequence[float],
    after: Sequence[float],
    weights_before: Sequence[float] | None = None,
    weights_after: Sequence[float] | None = None,
    transform: str = "identity",
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedDifference:
    """Paired percentile bootstrap of ``statistic(after) - statistic(before)``.

    ``before[i]`` and ``after[i]`` must be measurements of the same item ``i``; each resample
    draws item indices once and uses them for both arms.
    """
    vb, wb = _as_arrays(before, weights_before)
    va, wa = _as_arrays(after, weights_after)
    if vb.shape != va.shape:
        raise ValueError(
            f"paired samples must have the same length, got {vb.size} before and {va.size} after"
        )
    _z(confidence)
    idx = _indices(vb.size, n_boot, seed)
    sb = _apply((wb[idx] * vb[idx]).sum(1) / np.maximum(wb[idx].sum(1), 1e-300), transform)
    sa = _apply((wa[idx] * va[idx]).sum(1) / np.maximum(wa[idx].sum(1), 1e-300), transform)
    diffs = np.asarray(sa) - np.asarray(sb)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(diffs, [alpha, 1.0 - alpha])
    b = statistic(vb, wb, transform)
    a = statistic(va, wa, transform)
    return PairedDifference(b, a, a - b, (float(lo), float(hi)), int(vb.size), n_boot, seed)


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test: ``b`` items went 1 -> 0, ``c`` went 0 -> 1, two-sided ``p_value``."""

    b: int
    c: int
    p_value: float

    @property
    def discordant(self) -> int:
        return self.b + self.c


def _binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly (integer arithmetic, then one division)."""
    total = sum(math.comb(n, i) for i in range(k + 1))
    return total / 2.0**n


def mcnemar_exact(b: int, c: int) -> McNemarResult:
    """Two-sided exact McNemar p-value from the discordant counts.

    Under the null, ``b ~ Binomial(b + c, 1/2)``; ``p = min(1, 2·P(X <= min(b, c)))``. With no
    discordant pair the p-value is 1.
    """
    if b < 0 or c < 0 or int(b) != b or int(c) != c:
        raise ValueError(f"discordant counts must be non-negative integers, got {b}, {c}")
    b, c = int(b), int(c)
    n = b + c
    p = 1.0 if n == 0 else min(1.0, 2.0 * _binom_cdf_half(min(b, c), n))
    return McNemarResult(b, c, p)


def mcnemar_from_outcomes(before: Sequence[float], after: Sequence[float]) -> McNemarResult:
    """Exact McNemar test from paired binary outcomes (0/1) of the same items."""
    vb = np.asarray(before, dtype=np.float64)
    va = np.asarray(after, dtype=np.float64)
    if vb.shape != va.shape or vb.ndim != 1 or vb.size == 0:
        raise ValueError("need two non-empty paired 1-D binary samples of the same length")
    if not (np.isin(vb, (0.0, 1.0)).all() and np.isin(va, (0.0, 1.0)).all()):
        raise ValueError("McNemar's test needs binary (0/1) outcomes")
    b = int(((vb == 1) & (va == 0)).sum())
    c = int(((vb == 0) & (va == 1)).sum())
    return mcnemar_exact(b, c)
