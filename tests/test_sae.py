"""SAE latents: splice leaves the forward unchanged, attribution = direct autograd, coupled latents,
projecting decoder directions out of the residual writers (property, revert, export), errors."""

import math

import pytest
import torch

from spin_interp import ablate
from spin_interp import sae as S
from spin_interp.attribution import WeightScores, _response_loss, layer_of, score_neurons
from spin_interp.export import export_hf
from spin_interp.models import encode_examples, hf_parameters
from spin_interp.select import select_coupled
from spin_interp.testing import tiny_examples, tiny_model

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def sae(model):
    return S.train_tiny_sae(
        model, HOOK, tiny_examples(16, seed=9), d_sae=64, k=4, steps=200, batch_size=32
    )


@pytest.fixture(scope="module")
def scores(model, sae):
    return {
        name: S.score_latents(model, sae, tiny_examples(4, seed=seed), progress=False)
        for name, seed in (("f", 1), ("p", 2), ("g", 3))
    }


def _snapshot(model):
    return {k: v.detach().clone() for k, v in hf_parameters(model).items()}


def _same(model, snap):
    return all(torch.equal(snap[k], v) for k, v in hf_parameters(model).items())


def _config_sae(hook, d_in, d_sae=16, k=3, seed=0):
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    return TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, metadata=SAEMetadata(hook_name=hook)))


# --------------------------------------------------------------------------------------------------
# training and scoring


def test_train_tiny_sae(model, sae):
    from sae_lens import TopKSAE

    assert isinstance(sae, TopKSAE)
    assert sae.cfg.metadata.hook_name == HOOK
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k) == (model.cfg.d_model, 64, 4)
    acts = S.collect_activations(model, HOOK, tiny_examples(4, seed=5), progress=False)
    with torch.no_grad():
        latents = sae.encode(acts)
        recon = sae.decode(latents)
    assert int((latents != 0).sum(-1).max()) <= 4
    fvu = float(((recon - acts) ** 2).sum() / ((acts - acts.mean(0)) ** 2).sum())
    assert fvu < 0.7, fvu  # far better than predicting the mean


def test_splice_leaves_forward_unchanged(model, sae):
    ids = encode_examples(model, tiny_examples(1, seed=4))[0][0].input_ids[None]
    with torch.no_grad():
        plain = model(ids)
        store = {}
        with model.hooks(fwd_hooks=[(HOOK, S._splice(sae, HOOK, store))]):
            spliced = model(ids)
    assert torch.equal(plain, spliced)
    assert store[HOOK].shape == (1, ids.shape[1], sae.cfg.d_sae)


def _direct_attribution(model, sae, example):
    """sum over response positions of |a * dl/da| from the gradient at the hook, by hand."""
    enc = encode_examples(model, [example])[0][0]
    ids, labels = enc.input_ids[None], enc.labels[None]
    held = {}

    def leaf(x, hook):
        held["x"] = x.detach().requires_grad_(True)
        return held["x"]

    with model.hooks(fwd_hooks=[(HOOK, leaf)]):
        loss = _response_loss(model(ids), labels)
    (g,) = torch.autograd.grad(loss, held["x"])
    with torch.no_grad():
        a = sae.encode(held["x"])
        w_dec = sae.W_dec
        g_a = g @ w_dec.T  # decode(a) = (a / |W_dec|) @ W_dec + b_dec with rescaling
        if sae.cfg.rescale_acts_by_decoder_norm:
            g_a = g_a / w_dec.norm(dim=-1)
    mask = (labels != -100)[0]
    return (a * g_a)[0][mask].abs().sum(0)


def test_latent_attribution_equals_direct_autograd(model, sae):
    ex = tiny_examples(2, seed=6)
    expected = [_direct_attribution(model, sae, e) for e in ex]
    one = S.score_latents(model, sae, ex[:1], progress=False)
    both = S.score_latents(model, sae, ex, progress=False)
    assert one.names() == [HOOK] and one.shapes[HOOK] == (64,) and one.dense
    assert int((expected[0] > 0).sum()) >= 4
    torch.testing.assert_close(one[HOOK], expected[0], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(both[HOOK], expected[0] + expected[1], rtol=1e-5, atol=1e-8)
    assert one.meta["method"] == "sae_latent_attribution"
    assert one.meta["model_fingerprint"] == one.fingerprint
    assert one.meta["saes"][HOOK]["fingerprint"] == S.sae_fingerprint(sae)
    # the model's weights are untouched and their requires_grad flags restored
    assert all(p.grad is None for p in model.parameters())


def test_two_saes_score_as_each_alone(model, sae):
    early = _config_sae("blocks.0.hook_resid_post", model.cfg.d_model, d_sae=16, k=3)
    ex = tiny_examples(2, seed=7)
    together = S.score_latents(model, [early, sae], ex, progress=False)
    alone = S.score_latents(model, sae, ex, progress=False)
    alone_early = S.score_latents(model, early, ex, progress=False)
    assert together.names() == ["blocks.0.hook_resid_post", HOOK]
    torch.testing.assert_close(together[HOOK], alone[HOOK], rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(
        together["blocks.0.hook_resid_post"], alone_early["blocks.0.hook_resid_post"]
    )


def test_latent_scores_save_load(scores, tmp_path):
    path = scores["f"].save(tmp_path / "lat.safetensors")
    back = WeightScores.load(path)
    assert torch.equal(back[HOOK], scores["f"][HOOK])
    assert back.meta["saes"] == scores["f"].meta["saes"]


# --------------------------------------------------------------------------------------------------
# coupled latents


def test_coupled_latents_set_algebra(scores):
    p, q = 0.1, 0.3
    sel = S.coupled_latents(scores["f"], scores["p"], scores["g"], p=p, q=q)
    assert sel == select_coupled(scores["f"], scores["p"], scores["g"], p=p, q=q)

    def top(s, frac):
        v = s[HOOK]
        k = math.floor(frac * v.numel())
        order = sorted(range(v.numel()), key=lambda i: (-float(v[i]), i))
        return set(order[:k])

    expected = (top(scores["f"], q) & top(scores["p"], q)) - top(scores["g"], p)
    assert set(sel[HOOK].tolist()) == expected
    assert sel.counts_by_layer() == {1: len(expected)}


def test_coupled_latents_rejects_mixed_inputs(model, sae, scores):
    neurons = score_neurons(model, tiny_examples(2, seed=1), progress=False)
    with pytest.raises(ValueError, match="not SAE latent scores"):
        S.coupled_latents(neurons, scores["p"], scores["g"], p=0.1, q=0.3)
    other = _config_sae(HOOK, model.cfg.d_model, d_sae=64, k=4, seed=3)
    s_other = S.score_latents(model, other, tiny_examples(2, seed=2), progress=False)
    with pytest.raises(ValueError, match="different SAEs"):
        S.coupled_latents(scores["f"], s_other, scores["g"], p=0.1, q=0.3)


def test_decoder_directions(sae, scores):
    sel = S.coupled_latents(scores["f"], scores["p"], scores["g"], p=0.1, q=0.3)
    dirs = S.decoder_directions(sae, sel)
    assert torch.equal(dirs, sae.W_dec.detach()[sel[HOOK]])
    assert torch.equal(S.decoder_directions(sae, [3, 1]), sae.W_dec.detach()[[3, 1]])
    with pytest.raises(IndexError):
        S.decoder_directions(sae, [64])


# --------------------------------------------------------------------------------------------------
# projecting directions out of the residual writers


def _writer_outputs(model, ids, layers):
    """Outputs of every attention/MLP block in ``layers`` and the residual stream around them."""
    store = {}

    def keep(name):
        def hook(x, hook):
            store[name] = x.detach()
            return x

        return hook

    names = [
        f"blocks.{i}.{h}"
        for i in layers
        for h in ("hook_attn_out", "hook_mlp_out", "hook_resid_pre", "hook_resid_post")
    ]
    with torch.no_grad(), model.hooks(fwd_hooks=[(n, keep(n)) for n in names]):
        model(ids)
    return store


def _rel_component(x, q):
    x = x.reshape(-1, x.shape[-1]).double()
    return float((x @ q).norm() / x.norm())


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_project_out_removes_directions(arch):
    m = tiny_model(arch, n_layers=3)
    d = m.cfg.d_model
    torch.manual_seed(0)
    dirs = torch.randn(3, d)
    dirs[2] = dirs[0] + 0.5 * dirs[1] + 0.1 * torch.randn(d)  # correlated, not orthogonal
    q = torch.linalg.qr(dirs.T.double()).Q
    ids = encode_examples(m, tiny_examples(2, seed=8))[0][0].input_ids[None]
    before = _writer_outputs(m, ids, range(3))
    snap = _snapshot(m)
    edit = ablate.project_out(m, dirs, layer=1)
    assert edit.meta["rank"] == 3
    assert {layer_of(n) for n in edit.meta["writers"]} == {0, 1}
    assert len(edit.meta["writers"]) == 4  # attention output + MLP down projection per layer
    if arch == "gpt2":  # Conv1D writers carry biases: projected too
        assert sum(n.endswith(".bias") for n in edit.changes) == 4
    with edit.applied():
        after = _writer_outputs(m, ids, range(3))
        for layer in (0, 1):
            for h in ("hook_attn_out", "hook_mlp_out"):
                name = f"blocks.{layer}.{h}"
                assert _rel_component(before[name], q) > 0.05
                assert _rel_component(after[name], q) <= 1e-5, name
        # what layers 0..1 added to the residual stream has no component along the directions
        written = after["blocks.1.hook_resid_post"] - after["blocks.0.hook_resid_pre"]
        assert _rel_component(written, q) <= 1e-5
        for name, value in hf_parameters(m).items():
            if name not in edit.changes:
                assert torch.equal(value, snap[name]), name
    assert _same(m, snap)


def test_project_out_residual_at_hook(model, sae, scores):
    sel = S.coupled_latents(scores["f"], scores["p"], scores["g"], p=0.1, q=0.3)
    assert sel.count() > 0
    q = torch.linalg.qr(S.decoder_directions(sae, sel).T.double()).Q
    ids = encode_examples(model, tiny_examples(1, seed=8))[0][0].input_ids[None]
    snap = _snapshot(model)
    edit = S.project_out_latents(model, sae, sel)
    assert edit.meta["hook_name"] == HOOK and edit.meta["rank"] == sel.count()
    with edit.applied():
        out = _writer_outputs(model, ids, range(2))
        written = out[HOOK] - out["blocks.0.hook_resid_pre"]
        assert _rel_component(written, q) <= 1e-5
    assert _same(model, snap)


def test_project_out_export_and_reload(model, sae, scores, tmp_path):
    from transformers import AutoModelForCausalLM

    sel = S.coupled_latents(scores["f"], scores["p"], scores["g"], p=0.1, q=0.3)
    snap = _snapshot(model)
    edit = S.project_out_latents(model, sae, sel)
    saved = edit.save(tmp_path / "edit.safetensors")
    loaded = ablate.WeightEdit.load(saved, model)
    assert set(loaded.changes) == set(edit.changes)
    for n, (i, v) in edit.changes.items():
        assert torch.equal(loaded.changes[n][0], i) and torch.equal(loaded.changes[n][1], v)
    with loaded.applied():
        out = export_hf(model, tmp_path / "exported")
        reloaded = AutoModelForCausalLM.from_pretrained(str(out), attn_implementation="eager")
        ids = encode_examples(model, tiny_examples(1, seed=2))[0][0].input_ids[None]
        with torch.no_grad():
            ours, theirs = model(ids), reloaded(ids).logits
        assert float((ours - theirs).abs().max()) <= 1e-5
        state = reloaded.state_dict()
        for name in edit.changes:
            assert torch.equal(state[name], hf_parameters(model)[name]), name
        assert not torch.equal(state[edit.meta["writers"][0]], snap[edit.meta["writers"][0]])
    assert _same(model, snap)


def test_project_out_dependent_directions_and_errors(model):
    d = model.cfg.d_model
    v = torch.randn(d)
    edit = ablate.project_out(model, torch.stack([v, 2 * v]), layer=0, writers="mlp")
    assert edit.meta["rank"] == 1 and edit.meta["writers"] == [
        "model.layers.0.mlp.down_proj.weight"
    ]
    with pytest.raises(ValueError, match="d_model"):
        ablate.project_out(model, torch.randn(2, d + 1))
    with pytest.raises(ValueError, match="zero vector"):
        ablate.project_out(model, torch.zeros(1, d))
    with pytest.raises(ValueError, match="all"):
        ablate.project_out(model, torch.randn(d + 4, d))
    with pytest.raises(ValueError, match="not weights"):
        ablate.project_out(model, v, writers=["model.layers.0.mlp.nope.weight"])
    with pytest.raises(ValueError, match="writers must be"):
        ablate.project_out(model, v, writers="embeddings")


# --------------------------------------------------------------------------------------------------
# bad input


def test_bad_hook_and_width(model, sae):
    ex = tiny_examples(1)
    missing = _config_sae("blocks.7.hook_resid_post", model.cfg.d_model)
    with pytest.raises(ValueError, match="no hook 'blocks.7.hook_resid_post'"):
        S.score_latents(model, missing, ex, progress=False)
    narrow = _config_sae(HOOK, model.cfg.d_model // 2)
    with pytest.raises(ValueError, match="d_in=16 does not match"):
        S.score_latents(model, narrow, ex, progress=False)
    with pytest.raises(ValueError, match="trained on"):
        S.score_latents(model, sae, ex, hook_name="blocks.0.hook_resid_post", progress=False)
    with pytest.raises(ValueError, match="no hook"):
        S.train_tiny_sae(model, "blocks.1.hook_resid_psot", activations=torch.randn(64, 32))
    with pytest.raises(ValueError, match="width 8"):
        S.train_tiny_sae(model, HOOK, activations=torch.randn(64, 8))
    with pytest.raises(ValueError, match="exactly one"):
        S.train_tiny_sae(model, HOOK)
    with pytest.raises(ValueError, match="residual-stream hook"):
        S.hook_layer("blocks.1.mlp.hook_post")


def test_load_pretrained_sae_errors(monkeypatch):
    with pytest.raises(ValueError, match="not a SAELens pretrained release"):
        S.load_pretrained_sae("gpt2-small-res-jbb", "blocks.8.hook_resid_pre")
    with pytest.raises(ValueError, match="not an SAE of release"):
        S.load_pretrained_sae("gpt2-small-res-jb", "blocks.99.hook_resid_pre")
    import sae_lens

    def unreachable(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", unreachable)
    with pytest.raises(S.SAEUnavailableError, match="unreachable"):
        S.load_pretrained_sae("gpt2-small-res-jb", "blocks.8.hook_resid_pre")
