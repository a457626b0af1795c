"""Tests of spin_interp.mi: analytic Gaussian MI, independent references, bad input."""

from __future__ import annotations

import math
import os
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.feature_selection import mutual_info_regression  # noqa: E402
from sklearn.metrics import mutual_info_score  # noqa: E402

from spin_interp.mi import (  # noqa: E402
    BinnedEstimator,
    BootstrapResult,
    ConstantInputWarning,
    GaussianEstimator,
    InfoNCEEstimator,
    KSGEstimator,
    ShuffleTestResult,
    gaussian_mi,
    ksg_bruteforce,
    ksg_kdtree,
    ksg_preprocess,
)

torch.set_num_threads(1)


def correlated_gaussians(
    n: int, d: int, rho: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """d independent pairs (X_i, Y_i), each standard normal with correlation rho."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rho * x + math.sqrt(1 - rho**2) * rng.standard_normal((n, d))
    return x, y


# ---------------------------------------------------------------------------------------------
# analytic helper
# ---------------------------------------------------------------------------------------------


def test_gaussian_mi_closed_form() -> None:
    assert gaussian_mi(0.5) == pytest.approx(-0.5 * math.log(0.75), abs=1e-15)
    assert gaussian_mi([0.5, 0.8]) == pytest.approx(
        -0.5 * (math.log(1 - 0.25) + math.log(1 - 0.64)), abs=1e-15
    )
    assert gaussian_mi(0.0) == 0.0
    with pytest.raises(ValueError, match="inside"):
        gaussian_mi(1.0)


# ---------------------------------------------------------------------------------------------
# KSG
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("rho", [0.2, 0.5, 0.65])
def test_ksg_matches_analytic_gaussian_mi(d: int, rho: float) -> None:
    """Bias check. Measured over 100 datasets of n = 2000, one KSG estimate has a standard
    deviation of 0.016-0.026 nats here, so a single draw misses 0.05 a few percent of the time;
    the mean of 4 independent datasets must lie within 0.05 (about 4 sd), each within 0.1."""
    truth = gaussian_mi([rho] * d)
    errors = [
        KSGEstimator(random_state=0).fit(*correlated_gaussians(2000, d, rho, seed=s)).mi_ - truth
        for s in range(4)
    ]
    assert abs(np.mean(errors)) <= 0.05
    assert max(abs(e) for e in errors) <= 0.1


@pytest.mark.parametrize(
    ("dx", "dy", "k", "n"),
    [(1, 1, 3, 600), (2, 2, 3, 500), (1, 3, 1, 400), (3, 2, 5, 450), (5, 5, 3, 300)],
)
def test_ksg_equals_bruteforce(dx: int, dy: int, k: int, n: int) -> None:
    rng = np.random.default_rng(dx * 100 + dy * 10 + k)
    x = rng.standard_normal((n, dx))
    y = x[:, :1] * 0.7 + rng.standard_normal((n, dy))
    est = KSGEstimator(k=k, random_state=3).fit(x, y)
    xp, yp = ksg_preprocess(x, y, random_state=3)
    brute = ksg_bruteforce(xp, yp, k, chunk_size=37)  # odd chunk size: exercise the chunk edges
    assert abs(est.mi_ - brute) <= 1e-9
    assert abs(ksg_kdtree(xp, yp, k) - brute) <= 1e-9


def test_ksg_equals_bruteforce_with_ties_and_duplicates() -> None:
    # Integer data without jitter: many equal distances (strict '<' matters) and exact
    # duplicate points (zero k-NN radius); both implementations must agree anyway.
    rng = np.random.default_rng(7)
    x = rng.integers(0, 6, size=(400, 2)).astype(float)
    y = (x[:, :1] + rng.integers(0, 3, size=(400, 1))).astype(float)
    with pytest.warns(RuntimeWarning, match="zero k-NN radius"):
        fast = ksg_kdtree(x, y, 3)
    with pytest.warns(RuntimeWarning, match="zero k-NN radius"):
        brute = ksg_bruteforce(x, y, 3)
    assert abs(fast - brute) <= 1e-9
    # integer grid without duplicates but with many ties at exactly eps
    g = np.arange(300, dtype=float)
    tied_x, tied_y = g % 17, (g * 7) % 23
    assert abs(ksg_kdtree(tied_x, tied_y, 2) - ksg_bruteforce(tied_x, tied_y, 2)) <= 1e-9


@pytest.mark.parametrize("seed", [0, 1])
def test_ksg_equals_sklearn_mutual_info_regression(seed: int) -> None:
    """KSG on 1-D inputs equals sklearn's implementation of the same estimator.

    sklearn scales x and y to unit variance and adds its own noise of relative size 1e-10 before
    counting neighbours. (a) Feed both the same pre-jittered, standardised data: sklearn's
    re-scaling changes the data by a relative ~1e-10 and its extra noise by ~1e-10, which could
    only change a neighbour count if two distances coincided to ~1e-10 (probability ~1e-6 here),
    so the integer counts, hence the estimates, agree to floating-point round-off. (b) Raw data,
    each side with its own noise: the same argument applies. sklearn clips negative estimates at
    0, so dependent data are used.
    """
    x, y = correlated_gaussians(1500, 1, 0.6, seed=seed)
    x = 3.0 * x + 1.0  # non-unit scale: standardisation has to happen on both sides
    xp, yp = ksg_preprocess(x, y, random_state=seed)
    ours = KSGEstimator(k=3, jitter=0.0, standardize=False).fit(xp, yp).mi_
    theirs = mutual_info_regression(xp, yp[:, 0], n_neighbors=3, random_state=seed)[0]
    assert ours > 0.1
    assert abs(ours - theirs) <= 1e-12
    ours_raw = KSGEstimator(k=3, random_state=seed).fit(x, y).mi_
    theirs_raw = mutual_info_regression(x, y[:, 0], n_neighbors=3, random_state=seed + 100)[0]
    assert abs(ours_raw - theirs_raw) <= 1e-12


def test_ksg_deterministic_and_clonable() -> None:
    x, y = correlated_gaussians(500, 2, 0.5, seed=1)
    a = KSGEstimator(k=4, random_state=5).fit(x, y).mi_
    b = clone(KSGEstimator(k=4, random_state=5)).fit(x, y).mi_
    assert a == b
    assert KSGEstimator(k=4).get_params()["k"] == 4


def test_torch_tensor_input() -> None:
    x, y = correlated_gaussians(300, 2, 0.5, seed=2)
    a = KSGEstimator(random_state=0).fit(torch.from_numpy(x).requires_grad_(), torch.from_numpy(y))
    b = KSGEstimator(random_state=0).fit(x, y)
    assert a.mi_ == b.mi_


# ---------------------------------------------------------------------------------------------
# Gaussian
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 5])
@pytest.mark.parametrize("rho", [0.2, 0.5, 0.8])
def test_gaussian_estimator_matches_analytic(d: int, rho: float) -> None:
    x, y = correlated_gaussians(20_000, d, rho, seed=d + int(10 * rho))
    est = GaussianEstimator().fit(x, y)
    assert abs(est.mi_ - gaussian_mi([rho] * d)) <= 0.04


def test_gaussian_estimator_equals_canonical_correlations() -> None:
    """Independent route: I = -1/2 sum log(1 - c_i^2), c_i = canonical correlations, computed as
    singular values of Q_x^T Q_y from the thin QR of the centred blocks (a different algorithm
    from the log-determinants of the estimator)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((700, 3)) @ rng.standard_normal((3, 3))
    y = x[:, :2] @ rng.standard_normal((2, 4)) + rng.standard_normal((700, 4))
    qx, _ = np.linalg.qr(x - x.mean(axis=0))
    qy, _ = np.linalg.qr(y - y.mean(axis=0))
    c = np.linalg.svd(qx.T @ qy, compute_uv=False)
    expected = -0.5 * np.sum(np.log1p(-(c**2)))
    assert abs(GaussianEstimator().fit(x, y).mi_ - expected) <= 1e-10


def test_gaussian_shrinkage() -> None:
    x, y = correlated_gaussians(200, 3, 0.6, seed=4)
    z = np.hstack([x, y])
    zs = (z - z.mean(0)) / z.std(0)
    r = zs.T @ zs / len(zs)
    s = 0.3
    rs = (1 - s) * r + s * np.eye(6)
    expected = 0.5 * (
        np.linalg.slogdet(rs[:3, :3])[1]
        + np.linalg.slogdet(rs[3:, 3:])[1]
        - np.linalg.slogdet(rs)[1]
    )
    assert abs(GaussianEstimator(shrinkage=s).fit(x, y).mi_ - expected) <= 1e-12
    assert GaussianEstimator(shrinkage=1.0).fit(x, y).mi_ == pytest.approx(0.0, abs=1e-12)
    auto = GaussianEstimator(shrinkage="auto").fit(x, y)
    assert 0.0 < auto.shrinkage_ < 1.0
    assert auto.mi_ < GaussianEstimator().fit(x, y).mi_
    # n < dx + dy: singular without shrinkage, fine with it
    xs, ys = correlated_gaussians(5, 4, 0.5, seed=5)
    with pytest.raises(ValueError, match="singular"):
        GaussianEstimator().fit(xs, ys)
    assert np.isfinite(GaussianEstimator(shrinkage="auto").fit(xs, ys).mi_)


# ---------------------------------------------------------------------------------------------
# Binned / discrete
# ---------------------------------------------------------------------------------------------


def _hand_mi(counts: np.ndarray) -> float:
    """Plug-in MI from a contingency table, written out cell by cell."""
    n = counts.sum()
    mi = 0.0
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            if counts[i, j] > 0:
                pxy = counts[i, j] / n
                px = counts[i].sum() / n
                py = counts[:, j].sum() / n
                mi += pxy * math.log(pxy / (px * py))
    return mi


def test_binned_discrete_equals_hand_computation() -> None:
    # contingency table with one empty cell; X in {0, 1, 2}, Y in {0, 1, 2, 3}
    table = np.array([[30, 5, 0, 10], [4, 25, 6, 3], [1, 2, 40, 9]])
    xs, ys = [], []
    for i in range(3):
        for j in range(4):
            xs += [i] * table[i, j]
            ys += [j] * table[i, j]
    x, y = np.array(xs), np.array(ys) * 10 - 7  # arbitrary integer labels for Y
    n = table.sum()
    m_x, m_y, m_xy = 3, 4, int(np.count_nonzero(table))
    plugin = _hand_mi(table)
    assert abs(BinnedEstimator(miller_madow=False).fit(x, y).mi_ - plugin) <= 1e-12
    assert abs(mutual_info_score(x, y) - plugin) <= 1e-12  # independent implementation
    mm = plugin + ((m_x - 1) + (m_y - 1) - (m_xy - 1)) / (2 * n)
    assert abs(BinnedEstimator().fit(x, y).mi_ - mm) <= 1e-12


def test_binned_multivariate_discrete_and_continuous_1d() -> None:
    rng = np.random.default_rng(8)
    a = rng.integers(0, 2, size=(1000, 2))  # 4 joint categories
    y = a[:, 0] * 2 + a[:, 1]  # a bijection of the rows: I = H(a)
    counts = np.bincount(y)
    h = -np.sum(counts / 1000 * np.log(counts / 1000))
    assert abs(BinnedEstimator(miller_madow=False).fit(a, y).mi_ - h) <= 1e-12
    # 1-D continuous: quantile bins equal a hand-made decile coding
    xc, yc = correlated_gaussians(1000, 1, 0.7, seed=9)
    codes = np.searchsorted(np.quantile(xc[:, 0], np.linspace(0, 1, 11))[1:-1], xc[:, 0], "right")
    ycodes = np.searchsorted(np.quantile(yc[:, 0], np.linspace(0, 1, 11))[1:-1], yc[:, 0], "right")
    assert (
        abs(BinnedEstimator(miller_madow=False).fit(xc, yc).mi_ - mutual_info_score(codes, ycodes))
        <= 1e-12
    )
    # continuous vs discrete mix is allowed; multivariate continuous is not
    assert BinnedEstimator().fit(xc, a[:, 0]).mi_ < 0.02
    with pytest.raises(ValueError, match="1-D"):
        BinnedEstimator().fit(np.hstack([xc, yc]), yc)


# ---------------------------------------------------------------------------------------------
# Independence, dependence and permutation tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "est", [KSGEstimator(random_state=0), GaussianEstimator(random_state=0), BinnedEstimator()]
)
def test_independence_near_zero_and_not_significant(est: object) -> None:
    """Six independent datasets with n = 2000: the mean estimate is within 0.03 of 0 (one KSG
    estimate has a measured sd of 0.017 under independence, Binned 0.0035, Gaussian 0.0004) and
    the permutation test (39 permutations) gives p > 0.05 on at least 4 of the 6 (a valid test
    rejects with probability 0.05, so 3 or more rejections has probability 0.002)."""
    values, pvalues = [], []
    for s in range(6):
        x, _ = correlated_gaussians(2000, 1, 0.0, seed=100 + s)
        _, y = correlated_gaussians(2000, 1, 0.0, seed=200 + s)
        fitted = clone(est).fit(x, y)
        res = fitted.shuffle_test(n_perm=39)
        assert isinstance(res, ShuffleTestResult)
        assert fitted.pvalue_ == res.pvalue and fitted.null_.shape == (39,)
        values.append(fitted.mi_)
        pvalues.append(res.pvalue)
    assert abs(np.mean(values)) <= 0.03
    assert max(abs(v) for v in values) <= 0.07
    assert sum(p > 0.05 for p in pvalues) >= 4


@pytest.mark.parametrize("est", [KSGEstimator(random_state=0), GaussianEstimator(random_state=0)])
def test_dependence_is_significant(est: object) -> None:
    x, y = correlated_gaussians(500, 2, 0.4, seed=13)
    fitted = clone(est).fit(x, y)
    res = fitted.shuffle_test(n_perm=49)
    assert res.pvalue == pytest.approx(1 / 50)  # no permutation reaches the observed value
    assert res.pvalue < 0.05


def test_shuffle_and_bootstrap_reproducible_and_saved(tmp_path: object) -> None:
    x, y = correlated_gaussians(400, 1, 0.5, seed=14)
    a = KSGEstimator(random_state=1).fit(x, y)
    b = KSGEstimator(random_state=1).fit(x, y)
    assert np.array_equal(a.shuffle_test(20).null, b.shuffle_test(20).null)
    ra, rb = a.bootstrap(20), b.bootstrap(20)
    assert np.array_equal(ra.samples, rb.samples) and ra.scheme == "half"
    path = tmp_path / "boot.safetensors"  # type: ignore[operator]
    ra.save(path)
    loaded = BootstrapResult.load(path)
    assert loaded.ci == ra.ci and np.array_equal(loaded.samples, ra.samples)
    st = a.shuffle_test(10, random_state=3)
    st.save(tmp_path / "null.safetensors")  # type: ignore[operator]
    back = ShuffleTestResult.load(tmp_path / "null.safetensors")  # type: ignore[operator]
    assert np.array_equal(back.null, st.null) and back.pvalue == st.pvalue
    assert back.statistic == st.statistic and back.n_perm == 10


def test_bootstrap_intervals() -> None:
    rho = 0.5
    x, y = correlated_gaussians(2000, 1, rho, seed=15)
    g = GaussianEstimator(random_state=0).fit(x, y)
    res = g.bootstrap(n_boot=200, alpha=0.05)
    assert res.scheme == "pairs"
    lo, hi = res.ci
    assert lo < g.mi_ < hi and lo < gaussian_mi(rho) < hi
    assert res.ci == (
        pytest.approx(np.quantile(res.samples, 0.025)),
        pytest.approx(np.quantile(res.samples, 0.975)),
    )
    k = KSGEstimator(random_state=0).fit(x, y)
    kr = k.bootstrap(n_boot=100)
    assert kr.ci[0] < k.mi_ < kr.ci[1] and kr.ci[0] < gaussian_mi(rho) < kr.ci[1]
    assert 0.01 < kr.ci[1] - kr.ci[0] < 0.2
    assert k.ci_ == kr.ci
    with pytest.raises(ValueError, match="alpha"):
        k.bootstrap(10, alpha=1.5)


# ---------------------------------------------------------------------------------------------
# InfoNCE
# ---------------------------------------------------------------------------------------------


def test_infonce_bound_and_accuracy() -> None:
    rho = 0.8
    x, y = correlated_gaussians(2000, 1, rho, seed=16)
    est = InfoNCEEstimator(batch_size=128, random_state=0).fit(x, y)
    truth = gaussian_mi(rho)
    assert est.mi_ <= est.log_batch_ <= math.log(128)
    assert est.mi_ > 0.5 * truth
    assert est.mi_ < truth + 0.15
    again = InfoNCEEstimator(batch_size=128, random_state=0).fit(x, y)
    assert again.mi_ == est.mi_  # deterministic for an int random_state
    assert est.shuffle_test(n_perm=19).pvalue == pytest.approx(1 / 20)


def test_infonce_saturates_at_log_batch() -> None:
    x, y = correlated_gaussians(1200, 8, 0.95, seed=17)  # true MI = 9.2 nats >> log 16
    est = InfoNCEEstimator(batch_size=16, epochs=20, random_state=0).fit(x, y)
    assert gaussian_mi([0.95] * 8) > 9
    assert est.mi_ <= math.log(16)
    assert est.mi_ > 0.8 * math.log(16)


def test_infonce_independent_and_concat_critic() -> None:
    x, _ = correlated_gaussians(1000, 2, 0.0, seed=18)
    _, y = correlated_gaussians(1000, 2, 0.0, seed=19)
    est = InfoNCEEstimator(critic="concat", epochs=10, batch_size=64, random_state=0).fit(x, y)
    assert abs(est.mi_) <= 0.05
    assert est.shuffle_test(n_perm=19).pvalue > 0.05


# ---------------------------------------------------------------------------------------------
# Bad and degenerate inputs
# ---------------------------------------------------------------------------------------------

ALL_ESTIMATORS = [
    KSGEstimator(random_state=0),
    GaussianEstimator(),
    BinnedEstimator(),
    InfoNCEEstimator(epochs=2, random_state=0),
]


@pytest.mark.parametrize("est", ALL_ESTIMATORS, ids=lambda e: type(e).__name__)
def test_bad_inputs_raise(est: object) -> None:
    x, y = correlated_gaussians(50, 1, 0.5, seed=20)
    with pytest.raises(ValueError, match="same number of samples"):
        clone(est).fit(x, y[:-1])
    bad = x.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        clone(est).fit(bad, y)
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        clone(est).fit(x, bad)
    with pytest.raises(ValueError, match="1-D .* or 2-D"):
        clone(est).fit(x.reshape(50, 1, 1), y)
    with pytest.raises(ValueError, match="at least"):
        clone(est).fit(x[:1], y[:1])
    with pytest.raises(ValueError, match="numeric"):
        clone(est).fit(np.array(["a"] * 50), y)
    with pytest.raises(RuntimeError, match="not fitted"):
        clone(est).shuffle_test(5)


def test_too_few_samples_for_k_and_bad_params() -> None:
    x, y = correlated_gaussians(5, 1, 0.5)
    with pytest.raises(ValueError, match=r"k=5 \(k\+1=6\) needs at least 6 samples; got 5"):
        KSGEstimator(k=5).fit(x, y)
    KSGEstimator(k=4, random_state=0).fit(x, y)  # exactly k+1 samples is enough
    with pytest.raises(ValueError, match="k must"):
        KSGEstimator(k=0).fit(x, y)
    with pytest.raises(ValueError, match="shrinkage"):
        GaussianEstimator(shrinkage=2.0).fit(x, y)
    with pytest.raises(ValueError, match="strategy"):
        BinnedEstimator(strategy="kmeans").fit(x, y)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="valid_fraction"):
        InfoNCEEstimator(valid_fraction=1.0).fit(x, y)


@pytest.mark.parametrize("est", ALL_ESTIMATORS, ids=lambda e: type(e).__name__)
def test_constant_input_gives_zero_with_warning(est: object) -> None:
    x, y = correlated_gaussians(60, 2, 0.5, seed=21)
    const = np.full((60, 1), 3.0)
    with pytest.warns(ConstantInputWarning, match="constant"):
        fitted = clone(est).fit(const, y)
    assert fitted.mi_ == 0.0
    assert fitted.shuffle_test(5).pvalue == 1.0
    assert fitted.bootstrap(5).ci == (0.0, 0.0)


def test_constant_column_is_dropped() -> None:
    x, y = correlated_gaussians(300, 2, 0.5, seed=22)
    padded = np.hstack([x, np.ones((300, 1))])
    with pytest.warns(ConstantInputWarning, match="dropping 1 constant column"):
        a = GaussianEstimator().fit(padded, y).mi_
    assert a == GaussianEstimator().fit(x, y).mi_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        b = KSGEstimator(jitter=0.0).fit(padded, y).mi_
    assert b == KSGEstimator(jitter=0.0).fit(x, y).mi_
