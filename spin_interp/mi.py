"""Mutual-information estimators with a scikit-learn-style API.

Every estimator takes its parameters in ``__init__``, learns from ``fit(X, Y)`` (which returns the
estimator) and stores the estimate in ``mi_``, in nats. ``X`` and ``Y`` are arrays (or CPU torch
tensors) of shape ``(n_samples, n_features)``; a 1-D array is one column. After ``fit``:

* ``est.shuffle_test(n_perm)`` -> :class:`ShuffleTestResult`: permutation null distribution of the
  estimate (rows of ``Y`` shuffled against ``X``) and the add-one-smoothed p-value
  ``(1 + #{null >= mi_}) / (n_perm + 1)``; also stored as ``null_`` and ``pvalue_``.
* ``est.bootstrap(n_boot, alpha)`` -> :class:`BootstrapResult`: resampling distribution and an
  interval of level ``1 - alpha``; also stored as ``bootstrap_samples_`` and ``ci_``.

Estimators
----------
:class:`KSGEstimator`
    Kraskov–Stögbauer–Grassberger estimator I (k nearest neighbours, max-norm). Accurate for low
    joint dimension (1-D projections, a few features); biased toward 0 as the dimension grows.
:class:`GaussianEstimator`
    Closed form under a joint Gaussian assumption. Exact for Gaussians at any dimension, blind to
    non-linear dependence; a lower-bound-like summary of linear coupling otherwise.
:class:`BinnedEstimator`
    Plug-in estimate with the Miller–Madow correction, for discrete variables (integer codes) and
    1-D continuous variables (binned).
:class:`InfoNCEEstimator`
    Contrastive (InfoNCE) lower bound from a small torch critic, for high-dimensional
    representations; it can never exceed ``log(batch_size)``.

Input rules shared by all estimators: NaN or infinite values, mismatched numbers of rows, arrays
with more than two axes and too few samples raise :class:`ValueError`. Constant inputs are not an
error: a column that is exactly constant carries no information and is dropped with a
:class:`ConstantInputWarning`; if every column of ``X`` (or of ``Y``) is constant the mutual
information is exactly 0, so ``mi_ = 0.0`` with a :class:`ConstantInputWarning`, the shuffle test
returns ``pvalue = 1`` and the bootstrap interval is ``(0, 0)``.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree
from scipy.special import digamma
from sklearn.base import BaseEstimator

__all__ = [
    "BinnedEstimator",
    "BootstrapResult",
    "ConstantInputWarning",
    "GaussianEstimator",
    "InfoNCEEstimator",
    "KSGEstimator",
    "MIEstimator",
    "ShuffleTestResult",
    "check_xy",
    "gaussian_mi",
    "ksg_bruteforce",
    "ksg_kdtree",
    "ksg_preprocess",
]

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
RandomStateLike = int | np.random.Generator | None
Scheme = Literal["auto", "pairs", "half"]

# Byte budget of one (rows x n) float64 block in the brute-force reference.
_BRUTE_BLOCK_BYTES = 32 * 2**20


class ConstantInputWarning(UserWarning):
    """An input column (or a whole variable) is constant; see the module docstring."""


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------


def _as_2d(a: ArrayLike, name: str) -> FloatArray:
    """Return ``a`` as a finite float64 array of shape (n, d); 1-D input becomes one column."""
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()  # type: ignore[union-attr]
    arr = np.asarray(a)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    elif arr.ndim != 2:
        raise ValueError(
            f"{name} must be 1-D (one variable) or 2-D (n_samples, n_features); got shape "
            f"{arr.shape}. Flatten the trailing axes first, e.g. X.reshape(len(X), -1)."
        )
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no columns (shape {arr.shape})")
    out = arr.astype(np.float64)
    bad = ~np.isfinite(out)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(
            f"{name} contains NaN or infinite values in {rows.size} row(s) (first: {rows[:5]}); "
            "drop or impute those rows in both X and Y first."
        )
    return out


def check_xy(
    X: ArrayLike, Y: ArrayLike, min_samples: int = 2, who: str = "this estimator"
) -> tuple[FloatArray, FloatArray]:
    """Validate a pair of samples and return them as float64 arrays of shape (n, dx), (n, dy).

    Raises:
        ValueError: non-numeric input, more than two axes, NaN/inf, different numbers of rows,
            or fewer than ``min_samples`` rows.
    """
    x = _as_2d(X, "X")
    y = _as_2d(Y, "Y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"X and Y must have the same number of samples (rows); got {x.shape[0]} and "
            f"{y.shape[0]}"
        )
    if x.shape[0] < min_samples:
        raise ValueError(f"{who} needs at least {min_samples} samples; got {x.shape[0]}")
    return x, y


def _drop_constant_columns(a: FloatArray, name: str) -> FloatArray:
    """Drop exactly constant columns (warning if only some are constant)."""
    const = np.all(a == a[:1], axis=0)
    if const.any() and not const.all():
        warnings.warn(
            f"{name}: dropping {int(const.sum())} constant column(s) {np.flatnonzero(const)[:10]}; "
            "a constant column carries no information, so the mutual information is unchanged",
            ConstantInputWarning,
            stacklevel=4,
        )
    return a[:, ~const]


def _rng(random_state: RandomStateLike, tag: int | None = None) -> np.random.Generator:
    """A numpy Generator; an int seed with a ``tag`` gives an independent, reproducible stream."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None:
        return np.random.default_rng()
    seed = int(random_state)
    return np.random.default_rng(seed if tag is None else [seed, tag])


def _standardize(a: FloatArray) -> FloatArray:
    """Zero mean, unit (population) standard deviation per column; columns must not be constant."""
    sd = a.std(axis=0)
    if np.any(sd == 0):
        raise ValueError("cannot standardise a constant column; drop it first")
    return (a - a.mean(axis=0)) / sd


# --------------------------------------------------------------------------------------------
# Analytic reference
# --------------------------------------------------------------------------------------------


def gaussian_mi(rho: float | ArrayLike) -> float:
    """Analytic MI (nats) of d independent pairs (X_i, Y_i) of Gaussians with correlations rho_i.

    ``I(X; Y) = -1/2 * sum_i log(1 - rho_i**2)``. ``rho`` is a scalar (one pair) or a sequence.
    """
    r = np.atleast_1d(np.asarray(rho, dtype=np.float64))
    if np.any(np.abs(r) >= 1) or not np.all(np.isfinite(r)):
        raise ValueError(f"correlations must lie strictly inside (-1, 1); got {r}")
    return float(-0.5 * np.sum(np.log1p(-(r**2))))


# --------------------------------------------------------------------------------------------
# Result dataclasses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShuffleTestResult:
    """Permutation test of independence for a fitted estimator.

    Attributes:
        statistic: the estimate on the original pairing (``mi_``).
        null: estimates with the rows of Y permuted, shape (n_perm,).
        pvalue: ``(1 + #{null >= statistic}) / (n_perm + 1)`` (never 0).
        estimator: class name of the estimator that produced it.
    """

    statistic: float
    null: FloatArray
    pvalue: float
    estimator: str

    @property
    def n_perm(self) -> int:
        return int(self.null.size)

    def save(self, path: str | os.PathLike) -> Path:
        """Write one ``.safetensors`` file (null in the tensor, the rest in the JSON header)."""
        import torch

        from spin_interp._io import save_artifact

        meta = {"statistic": self.statistic, "pvalue": self.pvalue, "estimator": self.estimator}
        return save_artifact(path, "mi_shuffle_test", {"null": torch.from_numpy(self.null)}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ShuffleTestResult:
        from spin_interp._io import load_artifact

        tensors, meta = load_artifact(path, "mi_shuffle_test")
        return cls(
            statistic=float(meta["statistic"]),
            null=tensors["null"].numpy().astype(np.float64),
            pvalue=float(meta["pvalue"]),
            estimator=str(meta["estimator"]),
        )


@dataclass(frozen=True)
class BootstrapResult:
    """Resampling interval for a fitted estimator.

    Attributes:
        estimate: the full-sample estimate (``mi_``).
        samples: the resampled estimates, shape (n_boot,).
        ci: (low, high) interval of level ``1 - alpha``.
        alpha: two-sided error level.
        scheme: ``"pairs"`` (n pairs drawn with replacement, plain percentile interval) or
            ``"half"`` (half-samples without replacement, percentile interval re-centred on
            ``estimate``; see :meth:`MIEstimator.bootstrap`).
        estimator: class name of the estimator that produced it.
    """

    estimate: float
    samples: FloatArray
    ci: tuple[float, float]
    alpha: float
    scheme: str
    estimator: str

    def save(self, path: str | os.PathLike) -> Path:
        """Write one ``.safetensors`` file (samples in the tensor, the rest in the JSON header)."""
        import torch

        from spin_interp._io import save_artifact

        meta = {
            "estimate": self.estimate,
            "ci": list(self.ci),
            "alpha": self.alpha,
            "scheme": self.scheme,
            "estimator": self.estimator,
        }
        return save_artifact(
            path, "mi_bootstrap", {"samples": torch.from_numpy(self.samples)}, meta
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> BootstrapResult:
        from spin_interp._io import load_artifact

        tensors, meta = load_artifact(path, "mi_bootstrap")
        lo, hi = meta["ci"]
        return cls(
            estimate=float(meta["estimate"]),
            samples=tensors["samples"].numpy().astype(np.float64),
            ci=(float(lo), float(hi)),
            alpha=float(meta["alpha"]),
            scheme=str(meta["scheme"]),
            estimator=str(meta["estimator"]),
        )


# --------------------------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------------------------


def _progress(it: Iterable[int], total: int, enabled: bool, desc: str) -> Iterable[int]:
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc)


class MIEstimator(BaseEstimator):
    """Common machinery: validation, constant inputs, shuffle test and bootstrap.

    Subclasses implement ``_fit(x, y)``, which receives validated float64 arrays without constant
    columns, must set ``self._px`` / ``self._py`` (the prepared data the resampling methods
    permute or resample row-wise) and return the estimate; and ``_compute(px, py)``, the estimate
    on prepared data (used for the original data, permutations and resamples alike).
    """

    #: default resampling scheme of :meth:`bootstrap`
    _default_scheme: Literal["pairs", "half"] = "pairs"

    random_state: RandomStateLike

    # -- subclass hooks ------------------------------------------------------------------------
    def _min_samples(self) -> int:
        return 2

    def _min_samples_why(self) -> str:
        return type(self).__name__

    def _check_params(self) -> None:
        return None

    def _fit(self, x: FloatArray, y: FloatArray) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _compute(self, px: Any, py: Any) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- public API ----------------------------------------------------------------------------
    def fit(self, X: ArrayLike, Y: ArrayLike) -> Self:
        """Estimate I(X; Y) in nats; the result is ``self.mi_``.

        Args:
            X: array of shape (n_samples, dx) or (n_samples,).
            Y: array of shape (n_samples, dy) or (n_samples,).

        Returns:
            self
        """
        self._check_params()
        x, y = check_xy(X, Y, self._min_samples(), self._min_samples_why())
        self.n_samples_ = x.shape[0]
        self.n_features_x_ = x.shape[1]
        self.n_features_y_ = y.shape[1]
        for attr in ("null_", "pvalue_", "ci_", "bootstrap_samples_"):
            self.__dict__.pop(attr, None)
        x = _drop_constant_columns(x, "X")
        y = _drop_constant_columns(y, "Y")
        self.constant_input_ = x.shape[1] == 0 or y.shape[1] == 0
        if self.constant_input_:
            which = "X" if x.shape[1] == 0 else "Y"
            warnings.warn(
                f"{which} is constant: the mutual information is exactly 0; returning mi_ = 0.0",
                ConstantInputWarning,
                stacklevel=2,
            )
            self._px = self._py = None
            self.mi_ = 0.0
            return self
        self.mi_ = float(self._fit(x, y))
        logger.debug("%s: mi_ = %.6f nats (n=%d)", type(self).__name__, self.mi_, x.shape[0])
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "mi_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(X, Y) first")

    def _method_rng(self, random_state: RandomStateLike, tag: int) -> np.random.Generator:
        if random_state is not None:
            return _rng(random_state)
        return _rng(self.random_state, tag)

    def shuffle_test(
        self,
        n_perm: int = 100,
        *,
        random_state: RandomStateLike = None,
        progress: bool = False,
    ) -> ShuffleTestResult:
        """Permutation test of independence on the fitted data.

        The rows of Y are permuted against X ``n_perm`` times and the estimator is re-run on the
        prepared data (same jitter, bins or standardisation as the fit). The p-value is
        ``(1 + #{null >= mi_}) / (n_perm + 1)``, so it is never below ``1 / (n_perm + 1)``.

        Args:
            n_perm: number of permutations.
            random_state: seed for the permutations; by default derived from the estimator's
                ``random_state`` (reproducible when that is an int).
            progress: show a progress bar.

        Returns:
            A :class:`ShuffleTestResult`; ``null_`` and ``pvalue_`` are set too.
        """
        self._check_fitted()
        if int(n_perm) < 1:
            raise ValueError(f"n_perm must be >= 1; got {n_perm}")
        n_perm = int(n_perm)
        rng = self._method_rng(random_state, tag=1)
        null = np.zeros(n_perm)
        if not self.constant_input_:
            n = len(self._py)
            for b in _progress(range(n_perm), n_perm, progress, "shuffle test"):
                null[b] = self._compute(self._px, self._py[rng.permutation(n)])
        pvalue = float((1 + np.count_nonzero(null >= self.mi_)) / (n_perm + 1))
        self.null_ = null
        self.pvalue_ = pvalue
        return ShuffleTestResult(float(self.mi_), null, pvalue, type(self).__name__)

    def bootstrap(
        self,
        n_boot: int = 200,
        alpha: float = 0.05,
        *,
        scheme: Scheme = "auto",
        random_state: RandomStateLike = None,
        progress: bool = False,
    ) -> BootstrapResult:
        """Resampling interval of level ``1 - alpha`` for ``mi_``.

        Schemes:

        * ``"pairs"``: draw n (x, y) pairs with replacement, re-estimate, and report the
          percentile interval ``(q[alpha/2], q[1 - alpha/2])`` of the resampled estimates.
        * ``"half"``: draw n // 2 pairs *without* replacement (half-sampling). Given the data, the
          variance of a half-sample estimate is about ``sigma^2 (1/m - 1/n) = sigma^2 / n``, the
          sampling variance at the full size, so the spread of the half-sample estimates needs no
          rescaling; the percentile interval is shifted by ``mi_ - median(samples)`` so that the
          (size-dependent) bias of the half-sample estimates does not move it.

        ``"auto"`` picks ``"pairs"`` for the plug-in estimators (Gaussian, binned) and ``"half"``
        for KSG and InfoNCE: resampling with replacement creates exact duplicate points, which
        become each other's nearest neighbours (KSG) or identical negatives (InfoNCE) and bias
        those estimates.

        Args:
            n_boot: number of resamples.
            alpha: two-sided error level, in (0, 1).
            scheme: ``"auto"``, ``"pairs"`` or ``"half"``.
            random_state: seed for the resampling; by default derived from the estimator's
                ``random_state``.
            progress: show a progress bar.

        Returns:
            A :class:`BootstrapResult`; ``bootstrap_samples_`` and ``ci_`` are set too.
        """
        self._check_fitted()
        if int(n_boot) < 2:
            raise ValueError(f"n_boot must be >= 2; got {n_boot}")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1); got {alpha}")
        chosen = self._default_scheme if scheme == "auto" else scheme
        if chosen not in ("pairs", "half"):
            raise ValueError(f"scheme must be 'auto', 'pairs' or 'half'; got {scheme!r}")
        n_boot = int(n_boot)
        rng = self._method_rng(random_state, tag=2)
        samples = np.zeros(n_boot)
        if self.constant_input_:
            ci = (0.0, 0.0)
        else:
            n = len(self._py)
            m = n if chosen == "pairs" else n // 2
            if m < self._resample_min():
                raise ValueError(
                    f"a {chosen!r} resample has {m} rows, fewer than the {self._resample_min()} "
                    f"this estimator needs; use more data or scheme='pairs'"
                )
            for b in _progress(range(n_boot), n_boot, progress, "bootstrap"):
                if chosen == "pairs":
                    idx = rng.integers(0, n, size=n)
                else:
                    idx = rng.choice(n, size=m, replace=False)
                samples[b] = self._compute(self._px[idx], self._py[idx])
            lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
            if chosen == "half":
                shift = self.mi_ - float(np.median(samples))
                lo, hi = lo + shift, hi + shift
            ci = (float(lo), float(hi))
        self.bootstrap_samples_ = samples
        self.ci_ = ci
        return BootstrapResult(
            float(self.mi_), samples, ci, float(alpha), chosen, type(self).__name__
        )

    def _resample_min(self) -> int:
        return self._min_samples()


# --------------------------------------------------------------------------------------------
# KSG
# --------------------------------------------------------------------------------------------


def ksg_preprocess(
    X: ArrayLike,
    Y: ArrayLike,
    *,
    jitter: float = 1e-10,
    standardize: bool = True,
    random_state: RandomStateLike = None,
) -> tuple[FloatArray, FloatArray]:
    """The input preparation of :class:`KSGEstimator`: standardise, then add tiny Gaussian noise.

    With ``standardize`` every column is centred and scaled to unit (population) standard
    deviation. Then noise with standard deviation ``jitter * std(column)`` is added (X first,
    then Y, from ``numpy.random.default_rng(random_state)``), which breaks ties between repeated
    values without moving any distance that matters. Columns must not be constant.
    """
    x, y = check_xy(X, Y, 1)
    if standardize:
        x, y = _standardize(x), _standardize(y)
    if jitter < 0:
        raise ValueError(f"jitter must be >= 0; got {jitter}")
    if jitter > 0:
        rng = _rng(random_state)
        x = x + jitter * x.std(axis=0) * rng.standard_normal(x.shape)
        y = y + jitter * y.std(axis=0) * rng.standard_normal(y.shape)
    return x, y


def _ksg_from_counts(nx: NDArray[np.int64], ny: NDArray[np.int64], k: int, n: int) -> float:
    return float(digamma(k) + digamma(n) - np.mean(digamma(nx + 1)) - np.mean(digamma(ny + 1)))


def _check_k(k: int, n: int) -> int:
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer; got {k}")
    if n < k + 1:
        raise ValueError(f"KSG with k={k} needs at least k+1={k + 1} samples; got {n}")
    return int(k)


def _warn_zero_radius(eps: FloatArray) -> None:
    zeros = int(np.count_nonzero(eps == 0))
    if zeros:
        warnings.warn(
            f"{zeros} point(s) have a zero k-NN radius (duplicate points): the KSG estimate is "
            "unreliable; keep jitter > 0 or deduplicate",
            RuntimeWarning,
            stacklevel=3,
        )


def _leafsize(dim: int) -> int:
    """KD-tree leaf size: scipy's default for low dimension, larger leaves (measured ~2-3x faster
    ball counts at 5-10 dimensions with n = 20,000) above 4 dimensions."""
    return 16 if dim <= 4 else 64


def ksg_kdtree(X: ArrayLike, Y: ArrayLike, k: int = 3) -> float:
    """KSG estimator I on the given data as is (no standardisation, no jitter), with KD-trees.

    eps_i is the max-norm distance from z_i = (x_i, y_i) to its k-th nearest neighbour in the
    joint space; n_x(i) = #{j != i : ||x_j - x_i||_inf < eps_i} and likewise n_y(i);
    ``I = psi(k) + psi(N) - mean(psi(n_x + 1) + psi(n_y + 1))``. Neighbour counts use
    :class:`scipy.spatial.cKDTree` ball queries at radius ``nextafter(eps_i, 0)`` (so that
    "<= radius" is exactly "< eps_i"). A point with eps_i = 0 (exact duplicates) gets
    n_x = n_y = 0, as the strict inequality demands.
    """
    x, y = check_xy(X, Y, 1)
    n = x.shape[0]
    k = _check_k(k, n)
    z = np.hstack([x, y])
    dist, _ = cKDTree(z, leafsize=_leafsize(z.shape[1])).query(z, k=k + 1, p=np.inf)
    eps = dist[:, -1]
    _warn_zero_radius(eps)
    radius = np.nextafter(eps, 0)
    nx, ny = (
        cKDTree(a, leafsize=_leafsize(a.shape[1])).query_ball_point(
            a, radius, p=np.inf, return_length=True
        )
        - 1
        for a in (x, y)
    )
    nx = np.where(eps > 0, nx, 0).astype(np.int64)
    ny = np.where(eps > 0, ny, 0).astype(np.int64)
    return _ksg_from_counts(nx, ny, k, n)


def _chebyshev_block(a: FloatArray, b: FloatArray) -> FloatArray:
    """Max-norm distances between the rows of ``a`` (m, d) and ``b`` (n, d): shape (m, n)."""
    out = np.abs(a[:, None, 0] - b[None, :, 0])
    for c in range(1, a.shape[1]):
        np.maximum(out, np.abs(a[:, None, c] - b[None, :, c]), out=out)
    return out


def ksg_bruteforce(
    X: ArrayLike, Y: ArrayLike, k: int = 3, *, chunk_size: int | None = None
) -> float:
    """Reference O(n^2) implementation of the same KSG estimator as :func:`ksg_kdtree`.

    All pairwise max-norm distances are computed with numpy, ``chunk_size`` rows at a time (by
    default about 32 MiB per distance block), self-distances are set to +inf, eps_i is the k-th
    smallest joint distance and the marginal counts use the strict inequality ``< eps_i``. Feed
    it the output of :func:`ksg_preprocess` to reproduce :class:`KSGEstimator` exactly.
    """
    x, y = check_xy(X, Y, 1)
    n = x.shape[0]
    k = _check_k(k, n)
    if chunk_size is None:
        chunk_size = max(1, _BRUTE_BLOCK_BYTES // (8 * n))
    eps = np.empty(n)
    nx = np.empty(n, dtype=np.int64)
    ny = np.empty(n, dtype=np.int64)
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        rows = np.arange(stop - start)
        dx = _chebyshev_block(x[start:stop], x)
        dy = _chebyshev_block(y[start:stop], y)
        dx[rows, rows + start] = np.inf
        dy[rows, rows + start] = np.inf
        e = np.partition(np.maximum(dx, dy), k - 1, axis=1)[:, k - 1]
        eps[start:stop] = e
        nx[start:stop] = np.count_nonzero(dx < e[:, None], axis=1)
        ny[start:stop] = np.count_nonzero(dy < e[:, None], axis=1)
    _warn_zero_radius(eps)
    return _ksg_from_counts(nx, ny, k, n)


class KSGEstimator(MIEstimator):
    """Kraskov–Stögbauer–Grassberger k-nearest-neighbour estimator (their estimator I).

    Inputs are standardised per column (``standardize=True``) and receive noise of standard
    deviation ``jitter * std`` to break ties (see :func:`ksg_preprocess`), then
    :func:`ksg_kdtree` computes ``psi(k) + psi(N) - <psi(n_x + 1) + psi(n_y + 1)>`` with the
    max-norm in the joint space and strict ``< eps`` counts in the marginals. The estimate is not
    clipped at 0 (independent data give small negative values about half of the time).

    Accuracy: nearly unbiased for a low joint dimension; the bias grows (toward 0) with dx + dy
    and with the mutual information itself; see ``docs/mi_bias.md``.

    Args:
        k: number of neighbours (3 is the usual choice; larger k lowers variance, adds bias).
        jitter: relative noise level for ties; 0 disables it.
        standardize: scale every column to unit variance first (the max-norm is not scale-free).
        random_state: seed for the jitter and (via derived streams) the resampling methods.
    """

    _default_scheme = "half"

    def __init__(
        self,
        k: int = 3,
        jitter: float = 1e-10,
        standardize: bool = True,
        random_state: RandomStateLike = None,
    ) -> None:
        self.k = k
        self.jitter = jitter
        self.standardize = standardize
        self.random_state = random_state

    def _check_params(self) -> None:
        if int(self.k) != self.k or self.k < 1:
            raise ValueError(f"k must be a positive integer; got {self.k}")
        if self.jitter < 0:
            raise ValueError(f"jitter must be >= 0; got {self.jitter}")

    def _min_samples(self) -> int:
        return int(self.k) + 1

    def _min_samples_why(self) -> str:
        return f"KSGEstimator with k={self.k} (k+1={int(self.k) + 1})"

    def _fit(self, x: FloatArray, y: FloatArray) -> float:
        self._px, self._py = ksg_preprocess(
            x, y, jitter=self.jitter, standardize=self.standardize, random_state=self.random_state
        )
        return self._compute(self._px, self._py)

    def _compute(self, px: FloatArray, py: FloatArray) -> float:
        return ksg_kdtree(px, py, int(self.k))


# --------------------------------------------------------------------------------------------
# Gaussian
# --------------------------------------------------------------------------------------------


class GaussianEstimator(MIEstimator):
    """Mutual information of the Gaussian with the sample's covariance (closed form).

    ``I = 1/2 (log det R_xx + log det R_yy - log det R)`` where R is the joint correlation
    matrix (the estimate is invariant to scaling each column, so correlations lose nothing).
    With ``shrinkage = s`` the joint matrix is replaced by ``(1 - s) R + s I`` (shrinkage toward
    its diagonal) and the marginal blocks are taken from the shrunk matrix; ``"auto"`` picks s
    by the Ledoit–Wolf formula (:class:`sklearn.covariance.LedoitWolf` on the standardised data,
    whose target ``mu I`` is the diagonal here). Shrinkage biases the estimate toward 0.

    Exact for jointly Gaussian data (bias about ``dx * dy / (2 n)``); for other data it measures
    linear dependence only.

    Args:
        shrinkage: float in [0, 1] or ``"auto"``.
        random_state: seed for the resampling methods.
    """

    def __init__(
        self, shrinkage: float | Literal["auto"] = 0.0, random_state: RandomStateLike = None
    ):
        self.shrinkage = shrinkage
        self.random_state = random_state

    def _check_params(self) -> None:
        s = self.shrinkage
        if isinstance(s, str):
            if s != "auto":
                raise ValueError(f"shrinkage must be a float in [0, 1] or 'auto'; got {s!r}")
        elif not 0.0 <= float(s) <= 1.0:
            raise ValueError(f"shrinkage must lie in [0, 1]; got {s}")

    def _fit(self, x: FloatArray, y: FloatArray) -> float:
        self._px, self._py = x, y
        mi, self.shrinkage_ = self._mi_and_shrinkage(x, y)
        return mi

    def _compute(self, px: FloatArray, py: FloatArray) -> float:
        return self._mi_and_shrinkage(px, py)[0]

    def _mi_and_shrinkage(self, x: FloatArray, y: FloatArray) -> tuple[float, float]:
        dx = x.shape[1]
        z = np.hstack([x, y])
        sd = z.std(axis=0)
        if np.any(sd == 0):
            raise ValueError(
                "a column is constant in this (re)sample; the Gaussian MI is undefined"
            )
        z = (z - z.mean(axis=0)) / sd
        r = (z.T @ z) / z.shape[0]
        if self.shrinkage == "auto":
            from sklearn.covariance import LedoitWolf

            s = float(LedoitWolf(assume_centered=True).fit(z).shrinkage_)
        else:
            s = float(self.shrinkage)
        if s > 0:
            r = (1 - s) * r + s * np.eye(r.shape[0])
        logdets = []
        for block in (r[:dx, :dx], r[dx:, dx:], r):
            eig = np.linalg.eigvalsh(block)
            if eig[0] <= 1e-10 * eig[-1]:
                raise ValueError(
                    f"the correlation matrix is singular (n={z.shape[0]} samples for "
                    f"dx+dy={r.shape[0]} columns, or collinear columns): use more samples, drop "
                    "redundant columns, or set shrinkage > 0 / 'auto'"
                )
            logdets.append(float(np.sum(np.log(eig))))
        return 0.5 * (logdets[0] + logdets[1] - logdets[2]), s


# --------------------------------------------------------------------------------------------
# Binned / discrete plug-in
# --------------------------------------------------------------------------------------------


def _plugin_mi(cx: NDArray[np.int64], cy: NDArray[np.int64], miller_madow: bool) -> float:
    """Plug-in MI of two integer-coded variables, optionally with the Miller–Madow correction.

    ``I = H(X) + H(Y) - H(X, Y)`` with ``H = -sum p log p`` over non-empty cells; Miller–Madow
    adds ``(m - 1) / (2 N)`` to each entropy (m = number of non-empty cells), i.e.
    ``(m_x + m_y - m_xy - 1) / (2 N)`` to I.
    """
    n = cx.size
    _, cx = np.unique(cx, return_inverse=True)
    _, cy = np.unique(cy, return_inverse=True)
    joint = cx.astype(np.int64) * (int(cy.max()) + 1) + cy
    hs, ms = [], []
    for codes in (cx, cy, joint):
        counts = np.bincount(codes)
        counts = counts[counts > 0]
        p = counts / n
        hs.append(float(-np.sum(p * np.log(p))))
        ms.append(counts.size)
    mi = hs[0] + hs[1] - hs[2]
    if miller_madow:
        mi += (ms[0] + ms[1] - ms[2] - 1) / (2 * n)
    return mi


class BinnedEstimator(MIEstimator):
    """Plug-in mutual information of discrete or 1-D variables, with Miller–Madow correction.

    Each of X and Y is coded separately:

    * discrete (``discrete=True``, or ``"auto"`` and every value is an integer): each distinct
      row is one category (multivariate integer rows are joint categories);
    * continuous with one column: cut into ``bins`` bins, equal-count (``"quantile"``) or
      equal-width (``"uniform"``);
    * continuous with several columns: :class:`ValueError` (a joint histogram of several
      continuous columns is hopelessly biased; project to 1-D first or use another estimator).

    Binning continuous data loses information, so the estimate is biased toward 0 (by a few
    percent for 10 quantile bins at moderate correlation) on top of the small-sample bias that
    Miller–Madow corrects to first order.

    Args:
        bins: number of bins for continuous 1-D variables.
        strategy: ``"quantile"`` or ``"uniform"``.
        miller_madow: add the first-order bias correction ``(m - 1) / (2 N)`` to each entropy.
        discrete: ``"auto"`` (integer-valued inputs are categories), True or False.
        random_state: seed for the resampling methods.
    """

    def __init__(
        self,
        bins: int = 10,
        strategy: Literal["quantile", "uniform"] = "quantile",
        miller_madow: bool = True,
        discrete: bool | Literal["auto"] = "auto",
        random_state: RandomStateLike = None,
    ) -> None:
        self.bins = bins
        self.strategy = strategy
        self.miller_madow = miller_madow
        self.discrete = discrete
        self.random_state = random_state

    def _check_params(self) -> None:
        if int(self.bins) != self.bins or self.bins < 2:
            raise ValueError(f"bins must be an integer >= 2; got {self.bins}")
        if self.strategy not in ("quantile", "uniform"):
            raise ValueError(f"strategy must be 'quantile' or 'uniform'; got {self.strategy!r}")
        if self.discrete not in ("auto", True, False):
            raise ValueError(f"discrete must be 'auto', True or False; got {self.discrete!r}")

    def _codes(self, a: FloatArray, name: str) -> NDArray[np.int64]:
        is_discrete = (
            bool(np.all(a == np.round(a))) if self.discrete == "auto" else bool(self.discrete)
        )
        if is_discrete:
            _, codes = np.unique(a, axis=0, return_inverse=True)
            codes = codes.reshape(-1).astype(np.int64)
            m = int(codes.max()) + 1
            if m > a.shape[0] / 5:
                warnings.warn(
                    f"{name} is treated as discrete with {m} categories for {a.shape[0]} samples: "
                    "the plug-in estimate is strongly biased when categories are not much fewer "
                    "than samples; pass discrete=False to bin a 1-D variable instead",
                    UserWarning,
                    stacklevel=4,
                )
            return codes
        if a.shape[1] != 1:
            raise ValueError(
                f"BinnedEstimator handles discrete variables or 1-D continuous ones; {name} has "
                f"{a.shape[1]} continuous columns. Project {name} to 1-D first (e.g. onto a probe "
                "direction or its first principal component) or use KSGEstimator, "
                "GaussianEstimator or InfoNCEEstimator."
            )
        v = a[:, 0]
        q = np.linspace(0.0, 1.0, int(self.bins) + 1)
        edges = np.quantile(v, q) if self.strategy == "quantile" else v.min() + q * np.ptp(v)
        return np.searchsorted(edges[1:-1], v, side="right").astype(np.int64)

    def _fit(self, x: FloatArray, y: FloatArray) -> float:
        self._px, self._py = self._codes(x, "X"), self._codes(y, "Y")
        return self._compute(self._px, self._py)

    def _compute(self, px: NDArray[np.int64], py: NDArray[np.int64]) -> float:
        return _plugin_mi(px, py, bool(self.miller_madow))


# --------------------------------------------------------------------------------------------
# InfoNCE
# --------------------------------------------------------------------------------------------


def _build_critic(kind: str, dx: int, dy: int, hidden: int, embed_dim: int) -> Any:
    """A torch module mapping (x batch (B, dx), y batch (B', dy)) to scores f(x_i, y_j), (B, B')."""
    import torch
    from torch import nn

    def mlp(d_in: int, d_out: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, d_out),
        )  # fmt: skip

    class SeparableCritic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.g = mlp(dx, embed_dim)
            self.h = mlp(dy, embed_dim)

        def forward(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return self.g(xb) @ self.h(yb).T

    class ConcatCritic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f = mlp(dx + dy, 1)

        def forward(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            b, b2 = xb.shape[0], yb.shape[0]
            pairs = torch.cat(
                [xb[:, None, :].expand(b, b2, dx), yb[None, :, :].expand(b, b2, dy)], dim=-1
            )
            return self.f(pairs).squeeze(-1)

    return SeparableCritic() if kind == "separable" else ConcatCritic()


class InfoNCEEstimator(MIEstimator):
    """InfoNCE (contrastive) lower bound on I(X; Y) from a small learned critic (torch).

    The data are standardised and split at random into a training part and a held-out part
    (``valid_fraction``). A critic f(x, y) is trained with Adam to pick each x's partner among
    the ``batch_size`` y's of its minibatch (cross-entropy over the batch). A fifth of the
    training part is set aside for early stopping: after every epoch the bound is measured
    there, the best critic is kept and training stops after ``patience`` epochs without
    improvement. ``mi_`` is the bound on the held-out part (never used for training or
    stopping), split into batches of at most ``batch_size`` pairs:
    ``mean_i [log b + f(x_i, y_i) - logsumexp_j f(x_i, y_j)]``.

    **Ceiling.** Every term is at most ``log b``, so ``mi_ <= log(batch_size)`` (the exact
    ceiling, ``log(min(batch_size, n_valid_))``, is stored as ``log_batch_``): the estimator
    saturates as the true MI approaches ``log(batch_size)`` and cannot report more. It is a
    *lower* bound, reached only by an optimal critic; with few samples per dimension the critic
    is far from optimal and the estimate can be well below the truth (or slightly negative).

    Shuffle test and bootstrap keep the trained critic fixed and permute / resample the held-out
    pairs, so they test and bound this critic's held-out score (the critic never saw those pairs,
    so the permutation test is valid). Deterministic for an int ``random_state`` on a fixed
    number of torch threads.

    Args:
        hidden: width of the critic's two hidden layers.
        embed_dim: embedding size of the separable critic ``g(x) . h(y)``.
        critic: ``"separable"`` (two MLPs and a dot product; cheap, scales to wide inputs) or
            ``"concat"`` (one MLP on [x, y], evaluated on all B^2 pairs; more flexible, ~10x
            slower).
        epochs: maximum number of passes over the training part.
        lr: Adam learning rate.
        batch_size: minibatch size for training and evaluation; sets the ceiling log(batch_size).
        valid_fraction: share of the samples held out for the estimate, in (0, 1).
        patience: stop after this many epochs without improvement on the early-stopping split.
        random_state: seed for the split, initialisation, batch order and resampling.
    """

    _default_scheme = "half"

    def __init__(
        self,
        hidden: int = 64,
        embed_dim: int = 32,
        critic: Literal["separable", "concat"] = "separable",
        epochs: int = 100,
        lr: float = 2e-3,
        batch_size: int = 128,
        valid_fraction: float = 0.25,
        patience: int = 10,
        random_state: RandomStateLike = None,
    ) -> None:
        self.hidden = hidden
        self.embed_dim = embed_dim
        self.critic = critic
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.valid_fraction = valid_fraction
        self.patience = patience
        self.random_state = random_state

    def _check_params(self) -> None:
        if self.critic not in ("separable", "concat"):
            raise ValueError(f"critic must be 'separable' or 'concat'; got {self.critic!r}")
        for name in ("hidden", "embed_dim", "epochs", "patience"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if int(self.batch_size) < 2:
            raise ValueError(f"batch_size must be >= 2; got {self.batch_size}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must lie in (0, 1); got {self.valid_fraction}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr}")

    def _min_samples(self) -> int:
        return 16

    def _resample_min(self) -> int:
        return 2

    def _fit(self, x: FloatArray, y: FloatArray) -> float:
        import torch

        rng = _rng(self.random_state, 0)
        x, y = _standardize(x), _standardize(y)
        n = x.shape[0]
        n_valid = min(n - 8, max(2, round(self.valid_fraction * n)))
        perm = rng.permutation(n)
        valid, rest = perm[:n_valid], perm[n_valid:]
        n_stop = max(2, rest.size // 5)
        stop, train = rest[:n_stop], rest[n_stop:]
        bsz = min(int(self.batch_size), train.size)
        seed = int(rng.integers(2**31 - 1))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            critic = _build_critic(
                self.critic, x.shape[1], y.shape[1], int(self.hidden), int(self.embed_dim)
            )
        self.critic_ = critic
        xt = torch.as_tensor(x[train], dtype=torch.float32)
        yt = torch.as_tensor(y[train], dtype=torch.float32)
        opt = torch.optim.Adam(critic.parameters(), lr=float(self.lr))
        n_batches = train.size // bsz
        best, best_state, since_best = -math.inf, None, 0
        self.n_epochs_ = 0
        for epoch in range(int(self.epochs)):
            critic.train()
            order = torch.as_tensor(rng.permutation(train.size))
            for b in range(n_batches):
                idx = order[b * bsz : (b + 1) * bsz]
                scores = critic(xt[idx], yt[idx])
                loss = torch.nn.functional.cross_entropy(scores, torch.arange(idx.numel()))
                opt.zero_grad()
                loss.backward()
                opt.step()
            critic.eval()
            score = self._compute(x[stop], y[stop])
            self.n_epochs_ = epoch + 1
            logger.debug("InfoNCE epoch %d: early-stopping bound %.4f", epoch + 1, score)
            if score > best:
                best, since_best = score, 0
                best_state = {k: v.detach().clone() for k, v in critic.state_dict().items()}
            else:
                since_best += 1
                if since_best >= int(self.patience):
                    break
        if best_state is not None:
            critic.load_state_dict(best_state)
        critic.eval()
        self.log_batch_ = math.log(min(int(self.batch_size), n_valid))
        self.n_train_, self.n_valid_ = int(train.size), int(n_valid)
        self._px, self._py = x[valid], y[valid]
        return self._compute(self._px, self._py)

    def _compute(self, px: FloatArray, py: FloatArray) -> float:
        import torch

        n = px.shape[0]
        n_chunks = math.ceil(n / int(self.batch_size))
        xt = torch.as_tensor(px, dtype=torch.float32)
        yt = torch.as_tensor(py, dtype=torch.float32)
        total = 0.0
        with torch.no_grad():
            for idx in np.array_split(np.arange(n), n_chunks):
                ti = torch.as_tensor(idx)
                scores = self.critic_(xt[ti], yt[ti]).double()
                logp = torch.log_softmax(scores, dim=1).diagonal()
                total += float((logp + math.log(idx.size)).sum())
        return total / n
