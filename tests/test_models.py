"""Model loading errors, fingerprints, tokenisation of (prompt, response) pairs."""

import pytest
import torch

from spin_interp.models import (
    encode_example,
    encode_examples,
    hf_parameters,
    list_aliases,
    load_model,
    model_fingerprint,
)
from spin_interp.testing import tiny_model


def test_chat_labels_mask_the_prompt(tok):
    e = encode_example(tok, "Where is Paris?", "In France.", "chat")
    n_prompt = int((e.labels == -100).sum())
    prompt_only = tok.apply_chat_template(
        [{"role": "user", "content": "Where is Paris?"}], tokenize=True, add_generation_prompt=True
    )
    prompt_only = prompt_only["input_ids"] if hasattr(prompt_only, "keys") else prompt_only
    assert n_prompt == len(prompt_only)
    assert e.input_ids[:n_prompt].tolist() == list(prompt_only)
    assert torch.equal(e.input_ids[n_prompt:], e.labels[n_prompt:])
    assert "In France." in tok.decode(e.input_ids[n_prompt:])


def test_plain_format_and_truncation(tok):
    e = encode_example(tok, "Where is Paris?", " In France.", "plain")
    assert e.input_ids[0] == tok.convert_tokens_to_ids("<|endoftext|>")
    r = tok(" In France.", add_special_tokens=False)["input_ids"]
    assert e.input_ids[-len(r) :].tolist() == r and e.labels[-len(r) :].tolist() == r
    full = len(e.input_ids)
    t = encode_example(tok, "Where is Paris?", " In France.", "plain", max_len=len(r) + 1)
    assert len(t.input_ids) == len(r) + 1 and t.labels[-len(r) :].tolist() == r  # prompt cut left
    assert full > len(t.input_ids)
    assert encode_example(tok, "Where is Paris?", "", "plain") is None


def test_encode_examples_counts_skipped(llama):
    from spin_interp.data.schema import Example

    exs = [Example("a b c", "d e", "fairness"), Example("a b c", "", "fairness")]
    enc, skipped = encode_examples(llama, exs, format="plain")
    assert len(enc) == 1 and skipped == 1
    with pytest.raises(TypeError, match="cannot score"):
        encode_examples(llama, [42])


def test_fingerprint_tracks_weights(llama):
    f0 = model_fingerprint(llama)
    assert f0 == model_fingerprint(llama) and len(f0) == 16
    p = hf_parameters(llama)["model.layers.0.mlp.up_proj.weight"]
    with torch.no_grad():
        p[0, 0] += 1
    assert model_fingerprint(llama) != f0
    with torch.no_grad():
        p[0, 0] -= 1
    assert model_fingerprint(tiny_model("llama", seed=3)) != f0
    # a write through .data bypasses the version counters: the cache cannot see it
    with torch.no_grad():
        p[0, 0] = p.new_tensor(0.5)  # a tracked write
        f1 = model_fingerprint(llama)
        original = p.data[0, 1].clone()
        p.data[0, 1] += 1
        assert model_fingerprint(llama) == f1  # cached: the .data write went unseen
        assert model_fingerprint(llama, cache=False) != f1
        p.data[0, 1] = original
        assert model_fingerprint(llama, cache=False) == f1


def test_hf_names(llama):
    names = set(hf_parameters(llama))
    assert "model.layers.1.mlp.down_proj.weight" in names
    assert not any("_original_component" in n for n in names)
    assert "lm_head.bias" not in names


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="smollm2-135m-instruct"):
        load_model(str(tmp_path / "nope"))
    folder = tmp_path / "no_tok"
    folder.mkdir()
    from spin_interp.testing import tiny_hf_model

    tiny_hf_model("llama").save_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        load_model(folder)
    with pytest.raises(FileNotFoundError, match="GGUF"):
        load_model(tmp_path / "x.gguf")
    assert "smollm2-135m-instruct" in list_aliases()


def test_load_local_folder_roundtrip(tmp_path, tok):
    from spin_interp.testing import tiny_hf_model

    hf = tiny_hf_model("qwen2")
    hf.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    m = load_model(tmp_path / "m")
    ids = torch.tensor([[3, 4, 5, 6]])
    hf.set_attn_implementation("eager")
    with torch.no_grad():
        assert torch.equal(m(ids), hf(ids).logits)


def test_hub_unreachable_message():
    with pytest.raises(OSError, match="smollm2-135m-instruct"):
        load_model("no-such-org/no-such-model-xyz")
