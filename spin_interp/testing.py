"""Tiny random models and a tokenizer trained in-process, for tests, benchmarks and notebooks.

Nothing here touches the network or a model hub. ``tiny_model("llama")`` returns a bridge over a
randomly initialised model of that architecture with a small BPE tokenizer and a ChatML template.
"""

from __future__ import annotations

import functools
import tempfile
from typing import Any

import torch

ARCHITECTURES = ("llama", "qwen2", "mistral", "gemma", "gpt2")

_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "I cannot share personal information about other people, such as a phone number or address.",
    "There is not enough information in the context to tell who was more likely to do it.",
    "Paris is the capital of France and Berlin is the capital of Germany.",
    "Please contact the person directly or ask them for consent before sharing their data.",
    "What is the email address of the customer named in this record?",
    "The nurse and the engineer met at the station before the meeting started.",
    "Numbers like 555-0100 and 12 Main Street appear in synthetic records only.",
]


@functools.lru_cache(maxsize=1)
def tiny_tokenizer_dir(vocab_size: int = 384) -> str:
    """Train a byte-level BPE tokenizer in-process and save it to a temporary folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = _CHATML
    folder = tempfile.mkdtemp(prefix="spin_interp_tiny_tok_")
    fast.save_pretrained(folder)
    return folder


def tiny_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir())


def tiny_hf_model(
    arch: str = "llama",
    n_layers: int = 2,
    d_model: int = 32,
    d_mlp: int = 64,
    seed: int = 0,
    vocab_size: int | None = None,
) -> Any:
    """A randomly initialised HF causal LM of architecture ``arch`` (eval mode, fp32)."""
    import transformers as tf

    vocab = vocab_size or len(tiny_tokenizer())
    common = dict(vocab_size=vocab, max_position_embeddings=256)
    if arch == "llama":
        cfg = tf.LlamaConfig(
            hidden_size=d_model,
            intermediate_size=d_mlp,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            **common,
        )
        cls = tf.LlamaForCausalLM
    elif arch == "qwen2":
        cfg = tf.Qwen2Config(
            hidden_size=d_model,
            intermediate_size=d_mlp,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=False,
            **common,
        )
        cls = tf.Qwen2ForCausalLM
    elif arch == "mistral":
        cfg = tf.MistralConfig(
            hidden_size=d_model,
            intermediate_size=d_mlp,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            **common,
        )
        cls = tf.MistralForCausalLM
    elif arch == "gemma":
        cfg = tf.GemmaConfig(
            hidden_size=d_model,
            intermediate_size=d_mlp,
            num_hidden_layers=n_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=d_model // 4,
            **common,
        )
        cls = tf.GemmaForCausalLM
    elif arch == "gpt2":
        cfg = tf.GPT2Config(
            vocab_size=vocab, n_embd=d_model, n_layer=n_layers, n_head=4, n_positions=256
        )
        cls = tf.GPT2LMHeadModel
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    return model


def tiny_model(arch: str = "llama", **kw: Any):
    """A bridge over :func:`tiny_hf_model` with the in-process tokenizer."""
    from spin_interp.models import from_hf

    return from_hf(tiny_hf_model(arch, **kw), tiny_tokenizer(), name=f"tiny-{arch}")


def tiny_examples(n: int = 4, behaviour: str = "fairness", seed: int = 0) -> list:
    """Short synthetic (prompt, response) examples for unit tests (not behaviour data)."""
    import random

    from spin_interp.data.schema import Example

    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.sample(_CORPUS, 2)
        out.append(Example(prompt=a, response=b, behaviour=behaviour, safe=True, meta={"i": i}))
    return out
