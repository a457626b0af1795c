"""Verified Hugging Face export of edited models."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from spin_interp import ablate
from spin_interp.export import ExportVerificationError, export_hf
from spin_interp.models import hf_parameters
from spin_interp.select import Selection
from spin_interp.testing import ARCHITECTURES, tiny_model


def _edit(model):
    name = next(n for n in hf_parameters(model) if "mlp" in n and n.endswith("weight"))
    shape = tuple(hf_parameters(model)[name].shape)
    return ablate.zero_weights(model, Selection({name: shape}, {name: torch.arange(0, 50)}))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_export_reload_matches(arch, tmp_path):
    m = tiny_model(arch)
    edit = _edit(m).apply()
    out = export_hf(m, tmp_path / "out")
    info = json.loads((out / "spin_interp.json").read_text())
    assert info["max_abs_logit_diff"] <= 1e-5 and info["edits"][0]["entries"] == 50
    reloaded = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    name, idx = next(iter(edit.changes.items()))
    got = dict(reloaded.named_parameters())[name].reshape(-1)[idx[0]]
    assert torch.all(got == 0)
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()
    if getattr(reloaded.config, "tie_word_embeddings", False):
        assert (
            reloaded.lm_head.weight.data_ptr() == reloaded.get_input_embeddings().weight.data_ptr()
        )
    edit.revert()


def test_refuses_non_empty_folder(llama, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_hf(llama, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]
    export_hf(llama, tmp_path / "out", overwrite=True)
    assert not (tmp_path / "out" / "keep.txt").exists()


def test_corrupted_export_is_caught_and_removed(llama, tmp_path, monkeypatch):
    """Simulate a writer bug: the saved weights differ from the in-memory model."""
    import spin_interp.export as ex

    real = ex.clean_hf_model

    def buggy(model):
        clean = real(model)
        with torch.no_grad():
            clean.model.layers[0].mlp.down_proj.weight.add_(0.5)  # detached from nothing
        return clean

    monkeypatch.setattr(ex, "clean_hf_model", lambda m: _copy_then(buggy, m))
    with pytest.raises(ExportVerificationError):
        export_hf(llama, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    assert [p for p in tmp_path.iterdir()] == []


def _copy_then(fn, model):
    """Run ``fn`` on a deep copy so the corruption does not touch the in-memory model."""
    import copy

    return fn(copy.deepcopy(model))
