"""Tests of spin_interp.coupling: the mixed KSG estimator against scikit-learn and closed forms,
neuron relevance on a tiny model with planted units, I(f; p) on synthetic Gaussian activations,
compare_coupling's revert and null edit, errors, and one integration run on SmolLM2."""

from __future__ import annotations

import math
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from scipy.special import digamma  # noqa: E402
from sklearn.feature_selection import mutual_info_classif  # noqa: E402

from spin_interp import ablate  # noqa: E402
from spin_interp import coupling as C  # noqa: E402
from spin_interp.data.schema import Example  # noqa: E402
from spin_interp.mi import gaussian_mi  # noqa: E402
from spin_interp.models import hf_parameters, model_fingerprint  # noqa: E402
from spin_interp.select import Selection  # noqa: E402
from spin_interp.testing import tiny_examples, tiny_model  # noqa: E402

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# mixed continuous-discrete KSG
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize(("n", "n_classes"), [(120, 2), (301, 3), (400, 5)])
def test_mixed_ksg_equals_sklearn(n: int, n_classes: int, k: int) -> None:
    """Same jitter (same RandomState draw) -> the same numbers as mutual_info_classif.

    Every class here has more than 2k + 1 members, so scikit-learn searches neighbours with a
    KD-tree (exact distances), like our sorted search.
    """
    rng = np.random.default_rng(n + k)
    y = rng.integers(0, n_classes, n)
    X = rng.standard_normal((n, 12)) + 0.6 * y[:, None] * rng.standard_normal(12)
    X[:, 1] = np.round(X[:, 1], 1)  # ties, broken by the jitter
    X[:, 2] = np.exp(X[:, 2])  # skewed column
    ours = C.mixed_ksg_mi(X, y, k, random_state=11, clip=True)
    ref = mutual_info_classif(X, y, n_neighbors=k, random_state=11)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_mixed_ksg_small_classes_close_to_sklearn() -> None:
    """Classes of <= 2k + 1 points: scikit-learn then uses brute-force distances (dot-product
    form), which can be an ulp too large, so its radius ``nextafter(r, 0)`` sometimes still
    reaches the k-th neighbour and m_i counts one point too many; ours use exact |a - b|."""
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(6), [3, 4, 5, 6, 7, 2])
    X = rng.standard_normal((y.size, 30)) + 0.4 * y[:, None]
    ours = C.mixed_ksg_mi(X, y, 3, random_state=0, clip=True)
    ref = mutual_info_classif(X, y, n_neighbors=3, random_state=0)
    assert np.mean(np.abs(ours - ref)) < 0.05
    # an extra count only lowers scikit-learn's value: ours is never below it
    assert np.all(ours >= ref - 1e-12)


def test_mixed_ksg_closed_forms() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    y = np.repeat([0, 1], n // 2)
    # two well-separated balanced classes: exactly psi(N) - psi(N/2) -> log 2
    X = 50.0 * y[:, None] + rng.standard_normal((n, 4))
    mi = C.mixed_ksg_mi(X, y)
    np.testing.assert_allclose(mi, digamma(n) - digamma(n // 2), rtol=0, atol=1e-12)
    assert abs(mi[0] - math.log(2)) < 1e-3
    # unbalanced, separated: psi(N) - <psi(N_label)>, the plug-in entropy in the limit
    y3 = np.repeat([0, 1, 2], [200, 300, 500])
    X3 = 100.0 * y3[:, None] + rng.standard_normal((1000, 2))
    want = digamma(1000) - np.mean(digamma(np.bincount(y3)[y3]))
    np.testing.assert_allclose(C.mixed_ksg_mi(X3, y3), want, atol=1e-12)
    h = -sum(q * math.log(q) for q in (0.2, 0.3, 0.5))
    assert abs(want - h) < 2e-3
    # independent: near zero, and label-shuffled matrices average to ~0
    Xi = rng.standard_normal((n, 200))
    mi_i = C.mixed_ksg_mi(Xi, y)
    assert abs(mi_i.mean()) < 0.005 and mi_i.std() < 0.02
    assert (mi_i < 0).any()  # raw estimates are not clipped
    assert (C.mixed_ksg_mi(Xi, y, clip=True) >= 0).all()


def test_mixed_ksg_constant_labels_and_errors() -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 3))
    X[:, 0] = 2.5  # constant unit -> exactly 0
    y = rng.integers(0, 2, 50)
    assert C.mixed_ksg_mi(X, y)[0] == 0.0
    # string labels and a torch input work; labels are codes of any values
    a = C.mixed_ksg_mi(torch.from_numpy(X), np.where(y == 1, "f", "p"))
    np.testing.assert_allclose(a, C.mixed_ksg_mi(X, y), atol=0)
    with pytest.raises(ValueError, match="samples"):
        C.mixed_ksg_mi(X, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        C.mixed_ksg_mi(np.full((5, 2), np.nan), np.arange(5) % 2)
    with pytest.raises(ValueError, match="k must"):
        C.mixed_ksg_mi(X, y, k=0)


# ---------------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def _pairs(n: int, seed: int) -> list[Example]:
    out = []
    for i, ex in enumerate(tiny_examples(n, "fairness", seed)):
        out.append(Example(ex.prompt, ex.response, "fairness", safe=bool(i % 2)))
    return out


def test_collect_activations_batched_equals_single(model, monkeypatch) -> None:
    exs = _pairs(7, 0)
    hooks = ["blocks.0.hook_resid_post", "blocks.0.mlp.hook_post"]
    calls = []
    real = model.run_with_cache

    def counting(*a, **kw):
        calls.append(kw.get("stop_at_layer"))
        return real(*a, **kw)

    monkeypatch.setattr(model, "run_with_cache", counting)
    batched = C.collect_activations(model, exs, hooks, batch_size=3, progress=False)
    assert len(calls) == 3 and calls[0] == 1  # ceil(7/3) forwards, stopped after layer 0
    monkeypatch.undo()
    single = C.collect_activations(model, exs, hooks, batch_size=1, progress=False)
    for h in hooks:
        assert batched[h].shape == (7, 32 if "resid" in h else 64)
        torch.testing.assert_close(batched[h], single[h], rtol=1e-5, atol=1e-6)
    # by hand: run one example, mean over its response positions
    from spin_interp.models import encode_example, get_tokenizer

    enc = encode_example(get_tokenizer(model), exs[4].prompt, exs[4].response)
    with torch.no_grad():
        _, cache = model.run_with_cache(enc.input_ids[None], names_filter=hooks)
    mask = enc.labels != -100
    for h in hooks:
        torch.testing.assert_close(batched[h][4], cache[h][0][mask].mean(0), rtol=1e-5, atol=1e-6)
    last = C.collect_activations(model, exs[4:5], hooks, positions="last_prompt", progress=False)
    first = int(torch.nonzero(mask)[0])
    torch.testing.assert_close(last[hooks[0]][0], cache[hooks[0]][0, first - 1])
    with pytest.raises(ValueError, match="no hook"):
        C.collect_activations(model, exs, ["blocks.9.hook_resid_post"], progress=False)
    with pytest.raises(ValueError, match="empty"):
        C.collect_activations(model, [], hooks, progress=False)
    with pytest.raises(ValueError, match="positions"):
        C.collect_activations(model, exs, hooks, positions="middle", progress=False)


# ---------------------------------------------------------------------------------------------
# neuron relevance with planted units
# ---------------------------------------------------------------------------------------------

T1, T2, UNIT_A, UNIT_B = 100, 200, 5, 17


@pytest.fixture(scope="module")
def planted():
    """Layer-0 unit A fires on token T1 (in fairness AND privacy responses), unit B on T2
    (fairness only): A is the 'coupled' unit, B a fairness-only unit."""
    m = tiny_model("llama")
    params = hf_parameters(m)
    with torch.no_grad():
        for unit, tok in ((UNIT_A, T1), (UNIT_B, T2)):
            e = params["model.embed_tokens.weight"][tok]
            params["model.layers.0.mlp.gate_proj.weight"][unit] = 3.0 * e / e.norm()
            params["model.layers.0.mlp.up_proj.weight"][unit] = 3.0 * e / e.norm()
    vocab = params["model.embed_tokens.weight"].shape[0]
    rng = np.random.default_rng(0)
    base = [t for t in range(10, vocab) if t not in (T1, T2)]

    def make(n: int, markers: list[int]) -> list[tuple[list[int], list[int]]]:
        out = []
        for _ in range(n):
            prompt = [int(t) for t in rng.choice(base, 8)]
            resp = [int(t) for t in rng.choice(base, 8)]
            pos = rng.choice(8, 2 * len(markers), replace=False)
            for i, tok in enumerate(markers):
                resp[pos[2 * i]] = resp[pos[2 * i + 1]] = tok
            out.append((prompt + resp, [-100] * 8 + resp))
        return out

    pools = {"fairness": make(20, [T1, T2]), "privacy": make(20, [T1]), "general": make(20, [])}
    rel = C.neuron_relevance(m, pools, layers=[0, 1], progress=False)
    return m, pools, rel


def test_planted_units_rank_top(planted) -> None:
    m, _, rel = planted
    l0 = "model.layers.0.mlp"
    assert rel.modules == [l0, "model.layers.1.mlp"]
    assert rel.shapes[l0] == (64,)
    # B separates fairness from the rest perfectly: the estimator's ceiling psi(N) - <psi(N_d)>
    ceiling = digamma(60) - (20 * digamma(20) + 40 * digamma(40)) / 60
    assert float(rel.mi_fairness[l0][UNIT_B]) == pytest.approx(ceiling, abs=1e-12)
    assert rel.top(1, rule="fairness")[0]["unit"] == UNIT_B
    # A separates fairness and privacy from general perfectly
    pair = digamma(40) - digamma(20)
    assert float(rel.mi_privacy_vs_general[l0][UNIT_A]) == pytest.approx(pair, abs=1e-12)
    assert float(rel.mi_fairness_vs_general[l0][UNIT_A]) == pytest.approx(pair, abs=1e-12)
    assert float(rel.mi_privacy_vs_general[l0][UNIT_B]) < 0.1  # B is blind to privacy
    sel = rel.to_selection(top_k=1, rule="both", contrast="general")
    assert sel.counts() == {l0: 1, "model.layers.1.mlp": 0}
    assert sel[l0].tolist() == [UNIT_A]
    assert sel.shapes == {l0: (64,), "model.layers.1.mlp": (64,)}
    assert sel.fingerprint == model_fingerprint(m)
    assert sel.meta["mode"] == "mi-guided"
    # one-vs-rest cannot tell a coupled unit from a single-behaviour unit: for both A and B one of
    # the two binary MIs is the "rules out" value; the min-rank rule does not put A first
    assert rel.top(1, rule="both", contrast="rest")[0]["unit"] != UNIT_A
    # fractions, and the selection works as an edit
    assert rel.to_selection(fraction=0.1).count() == math.floor(0.1 * 128)
    edit = ablate.zero_neurons(m, sel)
    with edit.applied():
        down = hf_parameters(m)["model.layers.0.mlp.down_proj.weight"].detach()
        assert float(down[:, UNIT_A].abs().sum()) == 0
    with pytest.raises(ValueError, match="exactly one"):
        rel.to_selection()
    with pytest.raises(ValueError, match="rule"):
        rel.to_selection(top_k=1, rule="any")


def test_relevance_candidates_pvalues_and_roundtrip(planted, tmp_path) -> None:
    m, pools, rel = planted
    l0 = "model.layers.0.mlp"
    cand = Selection({l0: (64,)}, {l0: torch.tensor([UNIT_A, UNIT_B, 40])})
    sub = C.neuron_relevance(m, pools, candidates=cand, n_perm=19, progress=False)
    assert sub.modules == [l0]
    v = sub.mi_fairness[l0]
    assert torch.isnan(v).sum() == 61 and not torch.isnan(v[[UNIT_A, UNIT_B, 40]]).any()
    # the same jitter stream per layer and measure -> the same values on the candidate columns?
    # (the noise is drawn for the candidate columns only, so compare loosely)
    assert float(v[UNIT_B]) == pytest.approx(float(rel.mi_fairness[l0][UNIT_B]), abs=1e-9)
    assert float(sub.pvalues["mi_fairness"][l0][UNIT_B]) == pytest.approx(1 / 20)
    assert [r["unit"] for r in sub.ranking("fairness")][0] == UNIT_B
    path = rel.save(tmp_path / "rel.safetensors")
    back = C.NeuronRelevance.load(path)
    assert back.modules == rel.modules and back.meta["pool_sizes"] == rel.meta["pool_sizes"]
    for ms in rel.measures():
        for mod in rel.modules:
            torch.testing.assert_close(back.scores[ms][mod], rel.scores[ms][mod], equal_nan=True)
    assert back.to_selection(top_k=3) == rel.to_selection(top_k=3)


def test_relevance_custom_estimator_is_sklearn(planted) -> None:
    """A callable estimator gets the same (activations, labels, seed) as the built-in one:
    scikit-learn seeded with that seed jitters identically, so the values agree (clipped)."""
    m, pools, rel = planted

    def sk(x: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
        return mutual_info_classif(x, labels, n_neighbors=3, random_state=seed)

    other = C.neuron_relevance(m, pools, layers=[0], estimator=sk, progress=False)
    for ms in other.measures():
        got = other.scores[ms]["model.layers.0.mlp"].numpy()
        want = np.maximum(rel.scores[ms]["model.layers.0.mlp"].numpy(), 0)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        C.neuron_relevance(m, pools, layers=[0], estimator=lambda x, y, s: np.zeros(3))


def test_relevance_errors(model) -> None:
    exs = tiny_examples(4)
    with pytest.raises(ValueError, match="privacy"):
        C.neuron_relevance(model, {"fairness": exs}, progress=False)
    with pytest.raises(ValueError, match="non-empty"):
        C.neuron_relevance(model, {}, progress=False)
    with pytest.raises(ValueError, match="needs >= 2"):
        C.neuron_relevance(model, {"fairness": exs, "privacy": []}, progress=False)
    with pytest.raises(ValueError, match="out of range"):
        C.neuron_relevance(model, {"fairness": exs, "privacy": exs}, layers=[2], progress=False)
    bad = Selection({"model.layers.0.self_attn": (4,)}, {"model.layers.0.self_attn": [1]})
    with pytest.raises(ValueError, match="not an MLP"):
        C.neuron_relevance(model, {"fairness": exs, "privacy": exs}, candidates=bad)


# ---------------------------------------------------------------------------------------------
# I(f; p) on synthetic activations
# ---------------------------------------------------------------------------------------------


def _synthetic(rho: float, n_pool: int = 2000, d: int = 16, seed: int = 0, cos: float = 0.0):
    """Directions d_f, d_p with cosine ``cos``; pool projections on them are a Gaussian pair
    with correlation rho, so I(f; p) = -1/2 log(1 - rho^2)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    d_f = q[:, 0]
    d_p = cos * q[:, 0] + math.sqrt(1 - cos**2) * q[:, 1]
    noise = rng.standard_normal((30, d))
    acts = {
        "f_safe": noise + d_f,
        "f_unsafe": noise - d_f,
        "p_safe": noise[:20] + 3 * d_p,
        "p_unsafe": noise[:20] - 3 * d_p,
    }
    # pool = a f-coordinate + b p-coordinate (in the dual basis) + orthogonal junk
    z = rng.standard_normal((n_pool, 2))
    z, _ = np.linalg.qr(z - z.mean(0))  # sample correlation of (f, p) is then exactly rho
    z *= math.sqrt(n_pool)
    fp = np.column_stack([z[:, 0], rho * z[:, 0] + math.sqrt(1 - rho**2) * z[:, 1]])
    basis = np.stack([d_f, d_p])  # (2, d)
    coef = fp @ np.linalg.inv(basis @ basis.T)  # rows c with c @ basis @ [d_f, d_p]^T = fp
    junk = rng.standard_normal((n_pool, d - 2)) @ q[:, 2:].T
    pool = coef @ basis + junk
    return acts, pool, d_f, d_p


@pytest.mark.parametrize("rho", [0.0, 0.6, 0.9])
def test_coupling_from_activations_gaussian(rho: float) -> None:
    acts, pool, d_f, d_p = _synthetic(rho)
    res = C.coupling_from_activations(
        acts["f_safe"], acts["f_unsafe"], acts["p_safe"], acts["p_unsafe"], pool,
        n_boot=100, n_perm=99, seed=0,
    )  # fmt: skip
    np.testing.assert_allclose(res.direction_f.numpy(), d_f, atol=1e-12)
    np.testing.assert_allclose(res.direction_p.numpy(), d_p, atol=1e-12)
    assert res.cosine == pytest.approx(0.0, abs=1e-12)
    assert res.meta["norm_f"] == pytest.approx(2.0) and res.meta["norm_p"] == pytest.approx(6.0)
    truth = gaussian_mi(rho) if rho else 0.0
    assert abs(res.mi - truth) < 0.03
    assert res.ci[0] - 0.03 < truth < res.ci[1] + 0.03
    assert res.pearson_r == pytest.approx(rho, abs=1e-12)
    np.testing.assert_allclose(res.f.numpy(), pool @ d_f, atol=1e-12)
    if rho == 0:
        assert res.pvalue > 0.05
    else:
        assert res.pvalue == pytest.approx(1 / 100)
    g = C.coupling_from_activations(
        acts["f_safe"], acts["f_unsafe"], acts["p_safe"], acts["p_unsafe"], pool,
        estimator="gaussian", n_boot=0, n_perm=0,
    )  # fmt: skip
    # the Gaussian estimator is exact here: the sample correlation is rho by construction
    assert g.mi == pytest.approx(truth, abs=1e-10)
    assert math.isnan(g.pvalue) and math.isnan(g.ci[0])


def test_coupling_overlapping_directions_and_roundtrip(tmp_path) -> None:
    acts, pool, _, _ = _synthetic(0.3, n_pool=400, cos=0.5)
    res = C.coupling_from_activations(
        acts["f_safe"], acts["f_unsafe"], acts["p_safe"], acts["p_unsafe"], pool,
        n_boot=20, n_perm=20,
    )  # fmt: skip
    assert res.cosine == pytest.approx(0.5, abs=1e-12)
    back = C.CouplingResult.load(res.save(tmp_path / "c.safetensors"))
    assert str(back.row()) == str(res.row()) and back.meta == res.meta  # NaN-safe
    torch.testing.assert_close(back.f, res.f)
    torch.testing.assert_close(back.boot_samples, res.boot_samples)


def test_within_group_mi_removes_cluster_coupling() -> None:
    """Three clusters whose means differ along both directions: f and p share the cluster
    identity (large I(f; p)) but are independent inside each cluster (I(f; p | group) ~ 0)."""
    acts, _, d_f, d_p = _synthetic(0.0, n_pool=30)
    rng = np.random.default_rng(5)
    centres = np.array([[0.0, 0.0], [4.0, 4.0], [8.0, -1.0]])
    labels = np.repeat(["fairness", "privacy", "general"], 300)
    fp = centres[np.repeat(np.arange(3), 300)] + rng.standard_normal((900, 2))
    pool = fp[:, :1] * d_f + fp[:, 1:] * d_p
    res = C.coupling_from_activations(
        acts["f_safe"], acts["f_unsafe"], acts["p_safe"], acts["p_unsafe"], pool,
        n_boot=0, n_perm=0, groups=labels,
    )  # fmt: skip
    assert res.mi > 0.5
    assert set(res.mi_by_group) == {"fairness", "privacy", "general"}
    assert abs(res.mi_within) < 0.06  # KSG noise at n = 300 per group is ~0.03
    assert res.mi_within == pytest.approx(np.mean(list(res.mi_by_group.values())))
    with pytest.raises(ValueError, match="labels"):
        C.coupling_from_directions(d_f, d_p, pool, groups=labels[:-1], n_boot=0, n_perm=0)


def test_coupling_errors() -> None:
    acts, pool, d_f, d_p = _synthetic(0.3, n_pool=50)
    a = acts
    with pytest.raises(ValueError, match="widths"):
        C.coupling_from_activations(
            a["f_safe"], a["f_unsafe"][:, :8], a["p_safe"], a["p_unsafe"], pool
        )
    with pytest.raises(ValueError, match="width"):
        C.coupling_from_activations(
            a["f_safe"], a["f_unsafe"], a["p_safe"], a["p_unsafe"], pool[:, :8]
        )
    with pytest.raises(ValueError, match="empty"):
        C.coupling_from_activations(
            a["f_safe"][:0], a["f_unsafe"], a["p_safe"], a["p_unsafe"], pool
        )
    with pytest.raises(ValueError, match="identical"):
        C.coupling_from_activations(a["f_safe"], a["f_safe"], a["p_safe"], a["p_unsafe"], pool)
    with pytest.raises(ValueError, match="same length"):
        C.paired_coupling_difference(pool[:, 0], pool[:, 1], pool[:-1, 0], pool[:, 1])
    with pytest.raises(ValueError, match="zero"):
        C.coupling_from_directions(np.zeros(16), d_p, pool)
    with pytest.raises(ValueError, match="estimator"):
        C.coupling_from_directions(d_f, d_p, pool, estimator="magic")


def test_paired_difference_null_and_shift() -> None:
    rng = np.random.default_rng(0)
    f = rng.standard_normal(400)
    p = 0.8 * f + 0.6 * rng.standard_normal(400)
    same = C.paired_coupling_difference(f, p, f, p, n_boot=50, n_perm=50)
    assert same.delta == 0.0 and same.ci == (0.0, 0.0) and same.pvalue == 1.0
    weaker = 0.3 * f + math.sqrt(1 - 0.09) * rng.standard_normal(400)
    d = C.paired_coupling_difference(f, p, f, weaker, n_boot=100, n_perm=99)
    assert d.delta == pytest.approx(gaussian_mi(0.3) - gaussian_mi(0.8), abs=0.08)
    assert d.ci[1] < 0 and d.pvalue == pytest.approx(0.01)
    assert d.scheme == "half"


# ---------------------------------------------------------------------------------------------
# model level
# ---------------------------------------------------------------------------------------------


def _behaviour(n: int, name: str, seed: int) -> list[Example]:
    safe = tiny_examples(n, name, seed)
    unsafe = tiny_examples(n, name, seed + 100)
    return [Example(e.prompt, e.response, name, True) for e in safe] + [
        Example(e.prompt, e.response, name, False) for e in unsafe
    ]


@pytest.fixture(scope="module")
def data():
    pool = tiny_examples(12, "fairness", 7) + tiny_examples(12, "privacy", 8)
    return _behaviour(6, "fairness", 1), _behaviour(6, "privacy", 2), pool


def test_coupling_profile_matches_pure_function(model, data) -> None:
    fair, priv, pool = data
    prof = C.coupling_profile(
        model, [1, 0], fairness=fair, privacy=priv, pool=pool, n_boot=20, n_perm=20, progress=False
    )
    assert prof.layers == [0, 1] and len(prof) == 2
    hook = "blocks.1.hook_resid_post"
    groups = [e for e in fair if e.safe], [e for e in fair if not e.safe]
    groups += [e for e in priv if e.safe], [e for e in priv if not e.safe]
    acts = [C.collect_activations(model, g, [hook], progress=False)[hook] for g in groups]
    pool_acts = C.collect_activations(model, pool, [hook], progress=False)[hook]
    ref = C.coupling_from_activations(*acts, pool_acts, n_boot=20, n_perm=20, layer=1)
    got = prof.at(1)
    torch.testing.assert_close(got.direction_f, ref.direction_f, rtol=1e-5, atol=1e-6)
    assert got.cosine == pytest.approx(ref.cosine, abs=1e-5)
    assert got.mi == pytest.approx(ref.mi, abs=1e-6)
    assert got.meta["n_f_safe"] == 6 and got.meta["directions"] == "computed"
    one = C.coupling_mi(model, 1, fairness=fair, privacy=priv, pool=pool, n_boot=20, n_perm=20,
                        progress=False)  # fmt: skip
    assert str(one.row()) == str(got.row())
    # reuse the directions on another pool
    again = C.coupling_profile(
        model, [0, 1], pool=pool[:10], directions=prof, n_boot=0, n_perm=0, progress=False
    )
    torch.testing.assert_close(again.at(0).direction_f, prof.at(0).direction_f)
    assert again.at(0).n_pool == 10 and again.meta["directions"] == "given"
    assert "| layer |" in prof.to_markdown()


def test_coupling_profile_errors(model, data) -> None:
    fair, priv, pool = data
    kw = dict(n_boot=0, n_perm=0, progress=False)
    with pytest.raises(ValueError, match="out of range"):
        C.coupling_profile(model, [2], fairness=fair, privacy=priv, pool=pool, **kw)
    with pytest.raises(ValueError, match="out of range"):
        C.coupling_mi(model, -1, fairness=fair, privacy=priv, pool=pool, **kw)
    with pytest.raises(ValueError, match="pool is empty"):
        C.coupling_profile(model, [0], fairness=fair, privacy=priv, pool=[], **kw)
    with pytest.raises(ValueError, match="safe=False"):
        C.coupling_profile(model, [0], fairness=[e for e in fair if e.safe], privacy=priv,
                           pool=pool, **kw)  # fmt: skip
    with pytest.raises(ValueError, match="fairness is empty"):
        C.coupling_profile(model, [0], fairness=[], privacy=priv, pool=pool, **kw)
    with pytest.raises(ValueError, match="no directions"):
        C.coupling_profile(model, [0, 1], pool=pool, directions={0: (torch.ones(32),) * 2}, **kw)


def test_compare_coupling_reverts_and_null_edit(model, data, tmp_path) -> None:
    fair, priv, pool = data
    before = {k: v.detach().clone() for k, v in hf_parameters(model).items()}
    fp = model_fingerprint(model)
    kw = dict(fairness=fair, privacy=priv, pool=pool, n_boot=30, n_perm=30, progress=False)
    empty = ablate.WeightEdit(model, {})
    null = C.compare_coupling(model, empty, [0, 1], **kw)
    assert null.delta == [0.0, 0.0]
    assert all(d.ci == (0.0, 0.0) and d.pvalue == 1.0 for d in null.differences)
    sel = Selection(
        {"model.layers.0.mlp": (64,), "model.layers.1.mlp": (64,)},
        {"model.layers.0.mlp": torch.arange(0, 64, 2), "model.layers.1.mlp": torch.arange(20)},
        {"model_fingerprint": fp},
    )
    edit = ablate.zero_neurons(model, sel)
    cmp = C.compare_coupling(model, edit, [0, 1], **kw)
    assert not edit.is_applied
    assert model_fingerprint(model) == fp
    for name, t in hf_parameters(model).items():
        assert torch.equal(t, before[name]), name
    assert cmp.meta["edited_fingerprint"] != fp
    assert any(abs(d) > 0 for d in cmp.delta)
    for b, a in zip(cmp.before, cmp.after, strict=True):  # same directions, same pool
        torch.testing.assert_close(b.direction_f, a.direction_f, rtol=0, atol=0)
        assert a.mi - b.mi == pytest.approx(cmp.differences[cmp.before.results.index(b)].delta)
    back = C.CouplingComparison.load(cmp.save(tmp_path / "cmp.safetensors"))
    assert str(back.rows()) == str(cmp.rows())
    rec = C.compare_coupling(model, edit, [1], recompute_directions=True, **kw)
    assert not torch.equal(rec.before[0].direction_f, rec.after[0].direction_f)
    with edit.applied(), pytest.raises(RuntimeError, match="already applied"):
        C.compare_coupling(model, edit, [0], **kw)
    assert model_fingerprint(model) == fp


# ---------------------------------------------------------------------------------------------
# integration: SmolLM2
# ---------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_smollm2_relevance_and_coupling(smollm2) -> None:
    from spin_interp.data import load_behaviour

    m = smollm2
    n = 6
    pools = {
        b: load_behaviour(b, split="eval", n=n, seed=0) for b in ("fairness", "privacy", "general")
    }
    rel = C.neuron_relevance(m, pools, layers=[2, 4], progress=False)
    assert rel.shapes == {"model.layers.2.mlp": (1536,), "model.layers.4.mlp": (1536,)}
    assert all(torch.isfinite(t).all() for t in rel.mi_label.values())
    sel = rel.to_selection(top_k=8, rule="both", contrast="general")
    assert sel.count() == 8 and sel.fingerprint == model_fingerprint(m)
    fair = load_behaviour("fairness", split="val", n=n) + load_behaviour(
        "fairness", split="val", n=n, safe=False
    )
    priv = load_behaviour("privacy", split="val", n=n) + load_behaviour(
        "privacy", split="val", n=n, safe=False
    )
    pool = [e for v in pools.values() for e in v]
    cmp = C.compare_coupling(
        m, ablate.zero_neurons(m, sel), [2, 4], fairness=fair, privacy=priv, pool=pool,
        n_boot=20, n_perm=20, progress=False,
    )  # fmt: skip
    assert cmp.before.layers == [2, 4]
    for r in cmp.before:
        assert math.isfinite(r.mi) and -1 <= r.cosine <= 1 and r.n_pool == 3 * n
        assert r.meta["norm_f"] > 0 and r.meta["norm_p"] > 0
    assert model_fingerprint(m) == cmp.meta["model_fingerprint"]
