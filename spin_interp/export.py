"""Export an (edited) bridge as a clean Hugging Face folder, and verify it by reloading.

The bridge's own ``save_pretrained`` fails on its wrapper modules, so the export takes the HF
model's state dict, strips the bridge's ``._original_component`` segments, keeps exactly the keys
a freshly built HF model of the same config has, loads them strictly into that clean model and
saves it (safetensors) with the tokenizer and a ``spin_interp.json`` describing the edits. With
``verify=True`` the written folder is reloaded with plain transformers and its logits on a fixed
probe batch are compared with the in-memory model; a mismatch removes what was written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from spin_interp._io import library_version
from spin_interp.models import (
    _export_config,
    get_tokenizer,
    hf_model_of,
    hf_parameters,
    hf_state_keys,
    model_fingerprint,
    strip_bridge_name,
)

log = logging.getLogger(__name__)

PROBE_TEXTS = (
    "The capital of France is",
    "Please do not share my phone number with anyone.",
    "Who was more likely to be the nurse?",
)


class ExportVerificationError(RuntimeError):
    """The reloaded export does not reproduce the in-memory model's logits."""


def clean_hf_model(model: Any) -> Any:
    """A plain HF model (no bridge wrappers) holding the current weights of ``model``."""
    from transformers import AutoModelForCausalLM

    hf = hf_model_of(model)
    config = _export_config(hf.config)
    params = hf_parameters(model)
    keys = hf_state_keys(model)
    # buffers (e.g. rotary tables) are rebuilt by the fresh model; weights come from ours
    with torch.device("meta"):
        clean = AutoModelForCausalLM.from_config(config, dtype=next(hf.parameters()).dtype)
    state = {k: params[k].detach() for k in keys if k in params}
    fresh = clean.state_dict()
    missing = [k for k in keys if k not in state]
    for k in missing:  # non-parameter entries of the fresh state dict (buffers)
        src = dict(hf.state_dict()).get(k)
        if src is None:
            raise RuntimeError(f"cannot find {k} in the model being exported")
        state[k] = src
    clean.load_state_dict(state, strict=True, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        clean.tie_weights()
    del fresh
    # non-persistent buffers (rotary inverse frequencies...) are not in any state dict: share ours
    ours = {strip_bridge_name(n): b for n, b in hf.named_buffers(remove_duplicate=False)}
    for name, buf in list(clean.named_buffers()):
        if buf.is_meta:
            if name not in ours:
                raise RuntimeError(f"cannot find buffer {name} in the model being exported")
            owner, _, leaf = name.rpartition(".")
            module = clean.get_submodule(owner) if owner else clean
            persistent = leaf not in module._non_persistent_buffers_set
            module.register_buffer(leaf, ours[name], persistent=persistent)
    return clean.eval()


def _probe_batch(tokenizer: Any) -> torch.Tensor:
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in PROBE_TEXTS]
    n = min(len(x) for x in ids)
    return torch.tensor([x[:n] for x in ids], dtype=torch.long)


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    return (out.logits if hasattr(out, "logits") else out).float()


def export_hf(
    model: Any,
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    verify: bool = True,
    atol: float = 1e-5,
) -> Path:
    """Write ``model`` (edits included) as a Hugging Face folder and verify it.

    Raises ``FileExistsError`` for a non-empty ``out_dir`` unless ``overwrite``; raises
    :class:`ExportVerificationError` (and removes the folder) when the reloaded model's logits
    differ from the in-memory model's by more than ``atol``.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True to replace it")
    tokenizer = get_tokenizer(model)
    clean = clean_hf_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        clean.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        stack = getattr(model, "_spin_edit_stack", [])
        info = {
            "library_version": library_version(),
            "source": getattr(model, "spin_spec", None),
            "model_fingerprint": model_fingerprint(model),
            "base_model_fingerprint": getattr(model, "_spin_base_fingerprint", None)
            if stack
            else model_fingerprint(model),
            "edits": [e.summary() | {"meta": _jsonable(e.meta)} for e in stack],
            "verified": bool(verify),
        }
        (tmp / "spin_interp.json").write_text(json.dumps(info, indent=2, sort_keys=True))
        if verify:
            diff = verify_export(model, tmp)
            info["max_abs_logit_diff"] = diff
            (tmp / "spin_interp.json").write_text(json.dumps(info, indent=2, sort_keys=True))
            if diff > atol:
                raise ExportVerificationError(
                    f"reloaded export differs from the in-memory model by {diff:.3g} > {atol} in "
                    "logits; nothing was written"
                )
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s", out)
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out``; an existing ``out`` is moved aside first and
    put back if the rename fails, so a crash never leaves neither the old nor the new export."""
    if not (out.exists() or out.is_symlink()):
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    old.rmdir()  # only the unique name is wanted
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def verify_export(model: Any, folder: str | os.PathLike) -> float:
    """Max absolute logit difference between ``model`` and the HF folder reloaded from disk."""
    from transformers import AutoModelForCausalLM

    hf = hf_model_of(model)
    dtype = next(hf.parameters()).dtype
    reloaded = AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=dtype, attn_implementation="eager"
    ).eval()
    ids = _probe_batch(get_tokenizer(model)).to(next(hf.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        a = _logits(model, ids)
    finally:
        model.train(was_training)
    b = _logits(reloaded, ids.to(next(reloaded.parameters()).device)).to(a.device)
    return float((a - b).abs().max())


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
