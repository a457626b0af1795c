"""Mean-ablation of MLP units as a weight edit (zero down column + bias), checked against hooks."""

import pytest
import torch

from spin_interp import ablate
from spin_interp.export import export_hf
from spin_interp.models import hf_parameters, model_fingerprint
from spin_interp.select import Selection
from spin_interp.testing import tiny_examples, tiny_model

IDS = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])


def _units(module="model.layers.1.mlp", units=(3, 17, 40), width=64):
    return Selection({module: (width,)}, {module: torch.tensor(units)})


def _hooked_logits(model, layer, units, means):
    """Reference: overwrite the units at blocks.L.mlp.hook_post during a forward pass."""
    units = torch.as_tensor(units)

    def put(act, hook):
        act = act.clone()
        act[..., units] = means.to(act.dtype)
        return act

    return model.run_with_hooks(IDS, fwd_hooks=[(f"blocks.{layer}.mlp.hook_post", put)]).detach()


def test_add_mlp_bias_preserves_the_function_and_fingerprint_alias():
    m = tiny_model("llama")
    before_logits = m(IDS).detach()
    sel = _units()
    sel.meta["model_fingerprint"] = model_fingerprint(m)
    ablate.add_mlp_bias(m)
    params = hf_parameters(m)
    biases = [n for n in params if n.endswith(".bias") and ".mlp." in n]
    assert len(biases) == 2 * 3  # 2 layers x gate/up/down
    assert all(torch.count_nonzero(params[n]) == 0 for n in biases)
    assert torch.equal(m(IDS).detach(), before_logits)
    # a selection made before the surgery is still accepted
    ablate.mean_ablate_units(m, sel, {"model.layers.1.mlp": torch.ones(3)})
    assert ablate.add_mlp_bias(m) is m  # idempotent


def test_mean_ablation_equals_hook_reference_and_reverts_bit_exact():
    m = ablate.add_mlp_bias(tiny_model("llama"))
    sel = _units()
    means = ablate.unit_means(m, tiny_examples(4, behaviour="general"), sel)
    assert set(means) == {"model.layers.1.mlp"} and means["model.layers.1.mlp"].shape == (3,)
    snap = {k: v.detach().clone() for k, v in hf_parameters(m).items()}
    ref = _hooked_logits(m, 1, [3, 17, 40], means["model.layers.1.mlp"])
    plain = m(IDS).detach()
    edit = ablate.mean_ablate_units(m, sel, means)
    with edit.applied():
        got = m(IDS).detach()
        # the down column is zero, so the unit's own activation no longer reaches the residual
        w = hf_parameters(m)["model.layers.1.mlp.down_proj.weight"]
        assert torch.all(w[:, [3, 17, 40]] == 0)
    assert (plain - ref).abs().max() > 1e-4  # the reference really changes something
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(snap[k], v) for k, v in hf_parameters(m).items())
    assert edit.summary()["entries"] == 3 * 32 + 32


def test_mean_ablation_with_zero_means_equals_zero_neurons():
    m = ablate.add_mlp_bias(tiny_model("llama"))
    sel = _units()
    with ablate.mean_ablate_units(m, sel, {"model.layers.1.mlp": torch.zeros(3)}).applied():
        a = m(IDS).detach()
    with ablate.zero_neurons(m, sel).applied():
        b = m(IDS).detach()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_mean_ablated_model_exports_and_reloads(tmp_path):
    from transformers import AutoModelForCausalLM

    m = ablate.add_mlp_bias(tiny_model("llama"))
    sel = _units()
    means = {"model.layers.1.mlp": torch.tensor([0.5, -1.0, 2.0])}
    with ablate.mean_ablate_units(m, sel, means).applied():
        want = m(IDS).detach()
        out = export_hf(m, tmp_path / "exp")
    hf = AutoModelForCausalLM.from_pretrained(out)
    assert hf.config.mlp_bias is True
    torch.testing.assert_close(hf(IDS).logits.detach(), want, rtol=1e-5, atol=1e-5)


def test_gpt2_needs_no_surgery():
    m = tiny_model("gpt2")
    module = "transformer.h.0.mlp"
    width = hf_parameters(m)["transformer.h.0.mlp.c_fc.weight"].shape[1]
    sel = _units(module, (1, 5), width)
    assert ablate.add_mlp_bias(m) is m
    means = {module: torch.tensor([0.3, -0.7])}
    ref = _hooked_logits(m, 0, [1, 5], means[module])
    with ablate.mean_ablate_units(m, sel, means).applied():
        got = m(IDS).detach()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_clear_errors():
    m = tiny_model("llama")
    with pytest.raises(ValueError, match="add_mlp_bias"):
        ablate.mean_ablate_units(m, _units(), {"model.layers.1.mlp": torch.zeros(3)})
    with pytest.raises(ValueError, match="mlp_bias"):
        ablate.add_mlp_bias(tiny_model("qwen2"))
    m = ablate.add_mlp_bias(m)
    with pytest.raises(ValueError, match="2 means"):
        ablate.mean_ablate_units(m, _units(), {"model.layers.1.mlp": torch.zeros(2)})
    fresh = tiny_model("llama")
    with ablate.zero_neurons(fresh, _units()).applied(), pytest.raises(ValueError, match="revert"):
        ablate.add_mlp_bias(fresh)
