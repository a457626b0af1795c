"""Reversible edits: bit-exact revert, stacking in any order, neuron edits, sweeps."""

import pytest
import torch

from spin_interp import ablate
from spin_interp.attribution import score_weights
from spin_interp.models import hf_parameters
from spin_interp.select import Selection, random_like, select_coupled
from spin_interp.testing import ARCHITECTURES, tiny_examples, tiny_model


def _snapshot(model):
    return {k: v.detach().clone() for k, v in hf_parameters(model).items()}


def _same(model, snap):
    return all(torch.equal(snap[k], v) for k, v in hf_parameters(model).items())


def _coupled(model, q=0.1):
    sf, sp, sg = (
        score_weights(model, tiny_examples(3, seed=s), keep_fraction=0.2, progress=False)
        for s in (1, 2, 3)
    )
    return select_coupled(sf, sp, sg, p=q / 2, q=q)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_zero_and_revert_bit_exact(arch):
    m = tiny_model(arch)
    sel = _coupled(m)
    assert sel.count() > 0
    snap = _snapshot(m)
    edit = ablate.zero_weights(m, sel)
    with edit.applied():
        params = hf_parameters(m)
        for name, idx in sel.indices.items():
            assert torch.all(params[name].reshape(-1)[idx] == 0)
        changed = sum(int((snap[k] != v).sum()) for k, v in params.items())
        assert 0 < changed <= sel.count()
    assert _same(m, snap)


def test_overlapping_edits_revert_in_any_order(llama):
    snap = _snapshot(llama)
    name = "model.layers.0.mlp.up_proj.weight"
    shape = tuple(hf_parameters(llama)[name].shape)
    s1 = Selection({name: shape}, {name: torch.arange(0, 40)})
    s2 = Selection({name: shape}, {name: torch.arange(20, 60)})
    for order in ("fifo", "lifo"):
        e1, e2 = ablate.zero_weights(llama, s1), ablate.zero_weights(llama, s2)
        e1.apply()
        e2.apply()
        first, second = (e1, e2) if order == "fifo" else (e2, e1)
        first.revert()
        # the edit still applied is still in force
        still = second.changes[name][0]
        assert torch.all(hf_parameters(llama)[name].reshape(-1)[still] == 0)
        second.revert()
        assert _same(llama, snap), order


def test_compose(llama):
    name = "model.layers.1.mlp.down_proj.weight"
    shape = tuple(hf_parameters(llama)[name].shape)
    e1 = ablate.zero_weights(llama, Selection({name: shape}, {name: torch.tensor([1, 2])}))
    e2 = ablate.zero_weights(llama, Selection({name: shape}, {name: torch.tensor([2, 3])}))
    both = e1 + e2
    assert both.n_entries() == 3
    snap = _snapshot(llama)
    with both.applied():
        assert torch.all(hf_parameters(llama)[name].reshape(-1)[[1, 2, 3]] == 0)
    assert _same(llama, snap)


def test_zero_neurons_removes_unit_contribution(llama):
    """Zeroing MLP unit j makes blocks.L.mlp.hook_post[..., j] exactly zero."""
    module = "model.layers.1.mlp"
    units = torch.tensor([3, 17, 40])
    sel = Selection({module: (64,)}, {module: units})
    edit = ablate.zero_neurons(llama, sel)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with edit.applied():
        _, cache = llama.run_with_cache(ids, names_filter="blocks.1.mlp.hook_post")
        post = cache["blocks.1.mlp.hook_post"]
        assert torch.all(post[..., units] == 0)
        assert torch.all(post[..., 4] != 0)
    s = edit.summary()
    assert s["entries"] == 3 * 3 * 32 and s["by_module"]["mlp.down_proj"] == 3 * 32


def test_zero_heads_gpt2_and_llama():
    for arch, module in (("llama", "model.layers.0.self_attn"), ("gpt2", "transformer.h.0.attn")):
        m = tiny_model(arch)
        sel = Selection({module: (4,)}, {module: torch.tensor([1])})
        edit = ablate.zero_neurons(m, sel)
        assert edit.n_entries() == 32 * 8  # d_model x d_head
        snap = _snapshot(m)
        with edit.applied():
            pass
        assert _same(m, snap)


def test_edit_save_load_and_wrong_model(llama, tmp_path):
    sel = _coupled(llama)
    edit = ablate.zero_weights(llama, sel)
    path = edit.save(tmp_path / "edit.safetensors")
    back = ablate.WeightEdit.load(path, llama)
    assert back.n_entries() == edit.n_entries()
    other = tiny_model("qwen2")
    with pytest.raises(ValueError, match="another model"):
        ablate.WeightEdit.load(path, other)
    different_weights = tiny_model("llama", seed=5)
    with pytest.raises(ValueError, match="made for model"):
        ablate.WeightEdit.load(path, different_weights)
    with pytest.raises(ValueError, match="rescore"):
        ablate.zero_weights(different_weights, sel)


def test_apply_twice_and_revert_unapplied(llama):
    edit = ablate.zero_weights(llama, _coupled(llama))
    with pytest.raises(RuntimeError, match="not applied"):
        edit.revert()
    edit.apply()
    with pytest.raises(RuntimeError, match="already applied"):
        edit.apply()
    edit.revert()


def test_sweep_rows_and_model_restored(llama):
    sf, sp, sg = (
        score_weights(llama, tiny_examples(3, seed=s), keep_fraction=0.2, progress=False)
        for s in (1, 2, 3)
    )
    snap = _snapshot(llama)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])

    def evaluate(model):
        with torch.no_grad():
            logits = model(ids)
        return {"logit_sum": float(logits.sum())}

    rows = ablate.sweep(
        llama, sf, sp, sg, fractions=[0.05, 0.1], evaluate=evaluate, modes=("paper", "single")
    )
    rows = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    assert [r["mode"] for r in rows][:3] == ["original", "paper", "random(paper)"]
    assert len(rows) == 1 + 2 * 2 * 2
    paper = [r for r in rows if r["mode"] == "paper"]
    assert paper[0]["entries"] <= paper[1]["entries"]
    assert all(r["entries"] == rr["entries"] for r, rr in zip(rows[1::2], rows[2::2], strict=True))
    assert _same(llama, snap)
    assert random_like  # imported API


def test_sweep_prebuilt_neuron_and_weight_selections(llama):
    snap = _snapshot(llama)
    module = "model.layers.0.mlp"
    neurons = Selection({module: (64,)}, {module: torch.tensor([1, 2, 3])}, {"mode": "graph-hubs"})
    weights = _coupled(llama)
    ids = torch.tensor([[5, 6, 7, 8]])

    def evaluate(model):
        with torch.no_grad():
            return {"logit_sum": float(model(ids).sum())}

    rows = ablate.sweep(llama, selections={"hubs": neurons, "paper": weights}, evaluate=evaluate)
    rows = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    assert [r["mode"] for r in rows] == [
        "original",
        "hubs",
        "random(hubs)",
        "paper",
        "random(paper)",
    ]
    assert rows[1]["units"] == rows[2]["units"] == 3
    assert rows[1]["entries"] == 3 * 3 * 32
    assert rows[3]["entries"] == rows[4]["entries"] == weights.count()
    assert rows[1]["logit_sum"] != rows[0]["logit_sum"]
    assert _same(llama, snap)
    with pytest.raises(ValueError, match="nothing to sweep"):
        ablate.sweep(llama, evaluate=evaluate)
