"""Set algebra of SPIN: worked examples of DESIGN.md §1 and properties against Python sets."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spin_interp.attribution import WeightScores
from spin_interp.select import Selection, random_like, select_coupled, top_fraction

NAME = "model.layers.0.mlp.up_proj.weight"


def scores_with_top(top: list[int], fingerprint: str = "m0", shape=(4, 4)) -> WeightScores:
    """Dense scores on a matrix whose highest entries are exactly ``top`` (in that order)."""
    n = math.prod(shape)
    v = torch.zeros(n)
    for rank, i in enumerate(top):
        v[i] = 100.0 - rank
    return WeightScores(
        {NAME: shape},
        {NAME: v.reshape(shape)},
        None,
        {"model_fingerprint": fingerprint, "method": "snip"},
    )


G = scores_with_top([0, 1, 2, 3])


def test_worked_example_1():
    P = scores_with_top([3, 5, 9, 12])
    F = scores_with_top([5, 6, 9, 14])
    paper = select_coupled(P, F, G, p=0.25, q=0.25, mode="paper")
    assert paper[NAME].tolist() == [5, 9]
    ref = select_coupled(P, F, G, p=0.25, q=0.25, mode="reference")
    assert ref[NAME].tolist() == [5, 9, 12]
    single = select_coupled(P, None, G, p=0.25, q=0.25, mode="single")
    assert single[NAME].tolist() == [5, 9, 12]


def test_worked_example_2():
    P = scores_with_top([4, 7, 8, 13])
    F = scores_with_top([5, 6, 10, 15])
    assert select_coupled(P, F, G, p=0.25, q=0.25, mode="paper")[NAME].tolist() == []
    assert select_coupled(P, F, G, p=0.25, q=0.25, mode="reference")[NAME].tolist() == [4, 7, 8, 13]


def test_top_fraction_floor_and_ties():
    s = WeightScores(
        {NAME: (2, 5)},
        {NAME: torch.tensor([[1.0, 2, 2, 0, 2], [0, 0, 0, 0, 3]])},
        None,
        {"model_fingerprint": "m"},
    )
    assert top_fraction(s, 0.39)[NAME].tolist() == [1, 2, 9]  # floor(3.9) = 3; ties by index
    assert top_fraction(s, 0.2)[NAME].tolist() == [1, 9]  # 9 (score 3), then 1 (first of ties)
    assert top_fraction(s, 0.05).count() == 0


def test_errors():
    P = scores_with_top([3, 5, 9, 12])
    other = scores_with_top([3, 5, 9, 12], fingerprint="m1")
    with pytest.raises(ValueError, match="different models"):
        select_coupled(P, other, G, p=0.25, q=0.25)
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            select_coupled(P, P, G, p=bad, q=0.25)
        with pytest.raises(ValueError, match="fraction"):
            select_coupled(P, P, G, p=0.25, q=bad)
    with pytest.raises(ValueError, match="mode"):
        select_coupled(P, P, G, p=0.25, q=0.25, mode="soft")
    sparse = WeightScores(
        {NAME: (4, 4)},
        {NAME: torch.tensor([9.0, 8.0])},
        {NAME: torch.tensor([3, 5])},
        {"model_fingerprint": "m0"},
    )
    with pytest.raises(ValueError, match="kept only 2"):
        top_fraction(sparse, 0.25)
    a = Selection({NAME: (4, 4)}, {NAME: torch.tensor([1])}, {"model_fingerprint": "x"})
    b = Selection({NAME: (4, 4)}, {NAME: torch.tensor([1])}, {"model_fingerprint": "y"})
    with pytest.raises(ValueError, match="different models"):
        a & b


ranks = st.lists(st.integers(0, 63), min_size=8, max_size=8, unique=True)


@settings(max_examples=200, deadline=None)
@given(pa=ranks, pb=ranks, pg=ranks, kq=st.integers(1, 8), kp=st.integers(1, 8))
def test_properties_against_python_sets(pa, pb, pg, kq, kp):
    shape = (8, 8)
    a, b, g = (scores_with_top(x, shape=shape) for x in (pa, pb, pg))
    q, p = kq / 64, kp / 64
    A, B, Gs = set(pa[:kq]), set(pb[:kq]), set(pg[:kp])
    paper = set(select_coupled(a, b, g, p=p, q=q)[NAME].tolist())
    assert paper == (A & B) - Gs
    assert paper == set(select_coupled(b, a, g, p=p, q=q)[NAME].tolist())  # symmetric
    ref = set(select_coupled(a, b, g, p=p, q=q, mode="reference")[NAME].tolist())
    assert ref <= A - Gs
    sa, sb = sorted(A), sorted(B)
    assert ref == {x for x, y in zip(sa, sb, strict=True) if x not in Gs and y not in Gs}
    single = set(select_coupled(a, None, g, p=p, q=q, mode="single")[NAME].tolist())
    assert single == A - Gs


@settings(max_examples=100, deadline=None)
@given(x=st.sets(st.integers(0, 15)), y=st.sets(st.integers(0, 15)))
def test_selection_operators(x, y):
    def sel(s):
        return Selection(
            {NAME: (4, 4)},
            {NAME: torch.tensor(sorted(s), dtype=torch.long)},
            {"model_fingerprint": "m"},
        )

    for op in ("__and__", "__or__", "__sub__", "__xor__"):
        got = set(getattr(sel(x), op)(sel(y))[NAME].tolist())
        assert got == getattr(x, op)(y)


def test_random_like_and_save_load(tmp_path):
    P = scores_with_top([3, 5, 9, 12], shape=(16, 16))
    F = scores_with_top([5, 6, 9, 14], shape=(16, 16))
    Gb = scores_with_top([0, 1, 2, 3], shape=(16, 16))
    sel = select_coupled(P, F, Gb, p=4 / 256, q=4 / 256)
    r1, r2 = random_like(sel, seed=1), random_like(sel, seed=1)
    assert r1 == r2 and r1.count() == sel.count() == 2
    assert any(random_like(sel, seed=s) != r1 for s in range(2, 6))
    assert r1.counts() == sel.counts()
    path = sel.save(tmp_path / "sel.safetensors")
    back = Selection.load(path)
    assert back == sel and back.meta["mode"] == "paper" and back.meta["q"] == 4 / 256
    assert back.counts_by_layer() == {0: 2} and back.counts_by_module() == {"mlp.up_proj": 2}
