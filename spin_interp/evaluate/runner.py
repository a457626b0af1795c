"""Batched forward passes and greedy generation on the plain HF twin of a bridge.

Everything in :mod:`spin_interp.evaluate` runs through a :class:`Runner`: it holds the clean
Hugging Face model that shares the bridge's weight tensors
(:func:`spin_interp.export.clean_hf_model`, so edits applied to the bridge are seen), the project
tokenizer, and two primitives:

* :meth:`Runner.continuation_logprobs` - log-probabilities of several continuations of one
  prefix, computed in ONE forward pass per batch: the prefix and all its continuations are packed
  into a single row with a block attention mask (each continuation sees the prefix and itself,
  never the other continuations) and position ids that restart after the prefix. The result is
  the same as scoring ``prefix + continuation`` separately, at a fraction of the cost.
* :meth:`Runner.generate` - batched greedy decoding with left padding (``bridge.generate`` with
  its KV cache is wrong for SmolLM2; the HF model's ``generate`` is right and faster).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["Runner", "as_runner"]


def _progress(iterable: Any, enabled: bool, desc: str, total: int | None = None) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


def _token_list(out: Any) -> list[int]:
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    if isinstance(out, torch.Tensor):
        out = out.tolist()
    if out and isinstance(out[0], list):
        out = out[0]
    return [int(x) for x in out]


class Runner:
    """A model ready for evaluation: the clean HF twin, the tokenizer and batching limits.

    Args:
        model: a bridge from :func:`spin_interp.load_model` (or a plain HF causal LM, then with
            ``tokenizer``).
        tokenizer: defaults to :func:`spin_interp.models.get_tokenizer` of ``model``.
        max_batch_tokens: padded tokens per forward pass (memory bound).
        max_batch: rows per forward pass.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        max_batch_tokens: int = 2048,
        max_batch: int = 16,
    ) -> None:
        from transformers import PreTrainedModel

        from spin_interp.models import get_tokenizer

        if isinstance(model, PreTrainedModel):
            self.hf = model.eval()
        else:
            from spin_interp.export import clean_hf_model

            self.hf = clean_hf_model(model)
        self.source = model
        self.tokenizer = tokenizer if tokenizer is not None else get_tokenizer(model)
        if self.tokenizer is None or len(self.tokenizer) == 0:
            raise ValueError("the evaluation needs a real tokenizer")
        self.max_batch_tokens = int(max_batch_tokens)
        self.max_batch = int(max_batch)
        self.device = next(self.hf.parameters()).device
        self.dtype = next(self.hf.parameters()).dtype
        tok = self.tokenizer
        pad = tok.pad_token_id
        if pad is None:
            pad = tok.eos_token_id if tok.eos_token_id is not None else 0
        self.pad_id = int(pad)

    # ---------------------------------------------------------------------------- tokenising

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def chat_prefix(self, prompt: str) -> list[int]:
        """Token ids of a user turn ``prompt`` followed by the assistant generation prompt."""
        if not self.has_chat_template:
            raise ValueError("this tokenizer has no chat template: use chat=False")
        out = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        return _token_list(out)

    def text_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` with no special tokens."""
        return _token_list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, prompt: str, chat: bool) -> list[int]:
        """The chat prefix, or the tokenizer's own encoding of ``prompt`` (with its specials)."""
        if chat:
            return self.chat_prefix(prompt)
        ids = _token_list(self.tokenizer(prompt)["input_ids"])
        if not ids:
            raise ValueError("empty prompt")
        return ids

    def document_start_id(self) -> int:
        """The token that conditions the first token of a plain sentence (see
        :func:`spin_interp.models.document_start_id`)."""
        from spin_interp.models import document_start_id

        return document_start_id(self.tokenizer)

    # ---------------------------------------------------------------------------- scoring

    @staticmethod
    def _pack(prefix: Sequence[int], conts: Sequence[Sequence[int]]):
        p = len(prefix)
        ids = list(prefix)
        pos = list(range(p))
        seg = [-1] * p
        targets: list[list[tuple[int, int]]] = []
        for i, c in enumerate(conts):
            start = len(ids)
            tg = []
            for t, tok in enumerate(c):
                tg.append((p - 1 if t == 0 else start + t - 1, int(tok)))
            targets.append(tg)
            ids.extend(int(x) for x in c)
            pos.extend(range(p, p + len(c)))
            seg.extend([i] * len(c))
        return ids, pos, seg, targets

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        cur: list[int] = []
        for i in order:
            width = lengths[cur[0]] if cur else lengths[i]
            if cur and (
                len(cur) + 1 > self.max_batch or (len(cur) + 1) * width > self.max_batch_tokens
            ):
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
        return batches

    @torch.no_grad()
    def continuation_logprobs(
        self,
        requests: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
        progress: bool = False,
        desc: str = "scoring",
    ) -> list[list[np.ndarray]]:
        """Per-token log-probabilities of each continuation given its prefix.

        ``requests[i] = (prefix_ids, [cont_ids_0, cont_ids_1, ...])``; the result has the same
        nesting, one float64 array per continuation (its length is the continuation's).
        Raises ``ValueError`` for an empty request list, an empty prefix or continuation.
        """
        if not requests:
            raise ValueError("nothing to score: the request list is empty")
        packed = []
        for prefix, conts in requests:
            if len(prefix) == 0:
                raise ValueError("every continuation needs a non-empty prefix to condition on")
            if not conts or any(len(c) == 0 for c in conts):
                raise ValueError("every request needs at least one non-empty continuation")
            packed.append(self._pack(prefix, conts))
        results: list[list[np.ndarray] | None] = [None] * len(packed)
        batches = self._batches([len(pk[0]) for pk in packed])
        neg = torch.finfo(self.dtype).min
        for batch in _progress(batches, progress, desc):
            width = max(len(packed[i][0]) for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            pos = torch.zeros((len(batch), width), dtype=torch.long)
            seg = torch.full((len(batch), width), -2, dtype=torch.long)
            for r, i in enumerate(batch):
                n = len(packed[i][0])
                ids[r, :n] = torch.tensor(packed[i][0])
                pos[r, :n] = torch.tensor(packed[i][1])
                seg[r, :n] = torch.tensor(packed[i][2])
            q = torch.arange(width)
            causal = q[None, :, None] >= q[None, None, :]  # [1, q, k]
            sq, sk = seg[:, :, None], seg[:, None, :]
            allowed = causal & ((sk == -1) | (sk == sq)) & (sk != -2)
            allowed |= torch.eye(width, dtype=torch.bool)[None]  # pads attend to themselves
            mask = torch.zeros((len(batch), 1, width, width), dtype=self.dtype)
            mask.masked_fill_(~allowed[:, None], neg)
            needed = sorted({p for i in batch for tg in packed[i][3] for p, _ in tg})
            col = {p: j for j, p in enumerate(needed)}
            keep = torch.tensor(needed, dtype=torch.long, device=self.device)
            out = self.hf(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=pos.to(self.device),
                use_cache=False,
                logits_to_keep=keep,
            )
            logp = torch.log_softmax(out.logits.float(), dim=-1).cpu()
            for r, i in enumerate(batch):
                res = []
                for tg in packed[i][3]:
                    cols = torch.tensor([col[p] for p, _ in tg])
                    toks = torch.tensor([t for _, t in tg])
                    res.append(logp[r, cols, toks].double().numpy())
                results[i] = res
        return [r for r in results if r is not None]

    # ---------------------------------------------------------------------------- generation

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 64,
        batch_size: int = 8,
        chat: bool = True,
        progress: bool = False,
        desc: str = "generating",
    ) -> list[str]:
        """Greedy continuations of ``prompts`` (decoded, special tokens removed, stripped).

        Prompts are sorted by length into left-padded batches of ``batch_size`` and returned in
        the input order. Decoding stops at the tokenizer's EOS or after ``max_new_tokens``.
        """
        if not prompts:
            raise ValueError("nothing to generate: the prompt list is empty")
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        encoded = [self.prompt_ids(p, chat) for p in prompts]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        out: list[str | None] = [None] * len(encoded)
        eos = self.tokenizer.eos_token_id
        for chunk in _progress(chunks, progress, desc):
            width = max(len(encoded[i]) for i in chunk)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            att = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, i in enumerate(chunk):
                n = len(encoded[i])
                ids[r, width - n :] = torch.tensor(encoded[i])
                att[r, width - n :] = 1
            gen = self.hf.generate(
                input_ids=ids.to(self.device),
                attention_mask=att.to(self.device),
                do_sample=False,
                num_beams=1,
                max_new_tokens=max_new_tokens,
                pad_token_id=self.pad_id,
                eos_token_id=eos,
                temperature=None,
                top_p=None,
                top_k=None,
            )
            new = gen[:, width:].cpu()
            for r, i in enumerate(chunk):
                toks = new[r].tolist()
                if eos is not None and eos in toks:
                    toks = toks[: toks.index(eos)]
                out[i] = self.tokenizer.decode(toks, skip_special_tokens=True).strip()
        return [o if o is not None else "" for o in out]


def as_runner(model: Any, tokenizer: Any = None) -> Runner:
    """``model`` itself when it is already a :class:`Runner`, else a new one around it."""
    if isinstance(model, Runner):
        return model
    return Runner(model, tokenizer=tokenizer)
