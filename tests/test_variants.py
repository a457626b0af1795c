"""SPIN variants against direct Python computations."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spin_interp import ablate
from spin_interp.attribution import WeightScores
from spin_interp.models import hf_parameters
from spin_interp.select import Selection, top_fraction
from spin_interp.variants import (
    cap_per_matrix,
    exclude,
    magnitude_guard,
    scale_weights,
    soft_coupled,
)

NAME = "model.layers.0.mlp.up_proj.weight"


def sparse(top, shape=(8, 8), fp="m"):
    vals = torch.arange(len(top), 0, -1, dtype=torch.float32)
    return WeightScores(
        {NAME: shape}, {NAME: vals}, {NAME: torch.tensor(top)}, {"model_fingerprint": fp}
    )


def soft_reference(ta, tb, tg, k):
    """Plain Python: rank by the worse normalised rank, ties by index, minus G."""
    ra = {i: (r + 1) / len(ta) for r, i in enumerate(ta)}
    rb = {i: (r + 1) / len(tb) for r, i in enumerate(tb)}
    cand = sorted(set(ta) | set(tb))
    cand.sort(key=lambda i: (max(ra.get(i, 1.0), rb.get(i, 1.0)), i))
    return sorted(set(cand[:k]) - set(tg))


ranks = st.lists(st.integers(0, 63), min_size=12, max_size=12, unique=True)


@settings(max_examples=150, deadline=None)
@given(ta=ranks, tb=ranks, tg=ranks, kq=st.integers(1, 12), kp=st.integers(1, 12))
def test_soft_coupled_matches_reference(ta, tb, tg, kq, kp):
    a, b, g = sparse(ta), sparse(tb), sparse(tg)
    sel = soft_coupled(a, b, g, p=kp / 64, q=kq / 64)
    assert sel[NAME].tolist() == soft_reference(ta, tb, tg[:kp], kq)


def test_soft_equals_hard_when_lists_agree():
    top = [3, 5, 9, 12, 1, 2]
    a = b = sparse(top)
    g = sparse([9, 40, 41, 42, 43, 44])
    assert soft_coupled(a, b, g, p=1 / 64, q=4 / 64)[NAME].tolist() == [3, 5, 12]
    assert (top_fraction(a, 4 / 64) - top_fraction(g, 1 / 64))[NAME].tolist() == [3, 5, 12]


def test_magnitude_guard_and_cap(llama):
    name = "model.layers.0.mlp.down_proj.weight"
    w = hf_parameters(llama)[name].detach().abs().reshape(-1)
    shape = tuple(hf_parameters(llama)[name].shape)
    idx = torch.arange(0, w.numel(), 7)
    sel = Selection({name: shape}, {name: idx}, {"model_fingerprint": None, "mode": "paper"})
    guarded = magnitude_guard(sel, llama, quantile=0.5)
    thresh = torch.quantile(w, 0.5)
    assert guarded[name].tolist() == [i for i in idx.tolist() if w[i] <= thresh]
    assert guarded.meta["mode"] == "paper+guard0.5"
    ranking = WeightScores({name: shape}, {name: w.reshape(shape)}, None, {})
    capped = cap_per_matrix(sel, ranking, 5)
    best = sorted(idx.tolist(), key=lambda i: (-float(w[i]), i))[:5]
    assert capped[name].tolist() == sorted(best)
    other = Selection({name: shape}, {name: idx[:3]})
    assert exclude(sel, other).count() == sel.count() - 3
    with pytest.raises(ValueError):
        magnitude_guard(sel, llama, quantile=0)


def test_scale_weights_apply_revert(llama):
    name = "model.layers.1.mlp.gate_proj.weight"
    shape = tuple(hf_parameters(llama)[name].shape)
    sel = Selection({name: shape}, {name: torch.tensor([0, 10, 20])})
    before = hf_parameters(llama)[name].detach().clone().reshape(-1)
    edit = scale_weights(llama, sel, 0.25)
    with edit.applied():
        now = hf_parameters(llama)[name].reshape(-1)
        assert torch.equal(now[[0, 10, 20]], before[[0, 10, 20]] * 0.25)
        assert torch.equal(now[1:10], before[1:10])
    assert torch.equal(hf_parameters(llama)[name].reshape(-1), before)
    with pytest.raises(ValueError):
        scale_weights(llama, sel, 1.0)
    assert math.isclose(edit.meta["alpha"], 0.25)
    assert isinstance(edit, ablate.WeightEdit)
