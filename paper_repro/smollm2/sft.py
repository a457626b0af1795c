"""Supervised fine-tuning on behaviour data (full or LoRA), for the trade-off phenomenon.

The model is a bridge from ``spin_interp.load_model``; training runs on its clean HF twin, whose
tensors are the bridge's own, so the bridge sees the trained weights (LoRA adapters are merged
into them at the end). Loss: mean cross-entropy over response tokens (chat format).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import torch

from spin_interp.export import clean_hf_model
from spin_interp.models import encode_example, get_tokenizer

log = logging.getLogger(__name__)


def _batches(encoded: list[Any], batch_size: int, steps: int, seed: int, pad: int):
    rng = random.Random(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:
            fresh = list(range(len(encoded)))
            rng.shuffle(fresh)
            order += fresh
        idx, order = order[:batch_size], order[batch_size:]
        chunk = [encoded[i] for i in idx]
        width = max(len(e.input_ids) for e in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, e in enumerate(chunk):
            n = len(e.input_ids)
            ids[j, :n], labels[j, :n], mask[j, :n] = e.input_ids, e.labels, 1
        yield ids, labels, mask


def finetune(
    model: Any,
    examples: list[Any],
    method: str = "full",
    steps: int = 48,
    batch_size: int = 8,
    lr: float | None = None,
    lora_rank: int = 16,
    max_len: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place on ``examples``; returns the loss curve and timing."""
    if method not in ("full", "lora"):
        raise ValueError("method must be 'full' or 'lora'")
    torch.manual_seed(seed)
    tok = get_tokenizer(model)
    encoded = [
        e
        for e in (encode_example(tok, x.prompt, x.response, "chat", max_len) for x in examples)
        if e is not None
    ]
    hf = clean_hf_model(model)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(
            r=lora_rank,
            lora_alpha=2 * lora_rank,
            lora_dropout=0.0,
            target_modules=[
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
        )
        train_model = get_peft_model(hf, cfg)
        lr = lr or 2e-4
    else:
        train_model = hf
        lr = lr or 1e-5
    params = [p for p in train_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    train_model.train()
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    losses = []
    t0 = time.perf_counter()
    for step, (ids, labels, mask) in enumerate(_batches(encoded, batch_size, steps, seed, pad)):
        out = train_model(input_ids=ids, attention_mask=mask)
        logits = out.logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        log.info("sft %s step %d loss %.4f", method, step, losses[-1])
    train_model.eval()
    if method == "lora":
        with torch.no_grad():
            train_model.merge_and_unload()  # writes B·A into the shared base weights
    for p in model.parameters():
        p.grad = None
    model.eval()
    return {
        "method": method,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "examples": len(encoded),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "losses": losses,
        "seconds": time.perf_counter() - t0,
        "lora_rank": lora_rank if method == "lora" else None,
    }
