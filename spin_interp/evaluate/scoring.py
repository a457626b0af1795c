"""Choice rules for multiple-choice items and sentence log-likelihoods.

One packed forward pass per item (see :class:`~spin_interp.evaluate.runner.Runner`) gives, after
the chat-formatted lettered prompt, the log-probability of each option's letter and of each
option's text as the start of the answer. Four rules turn these into a choice:

``letter_calibrated`` (the headline rule)
    argmax over options of ``log p(letter | prompt) - log p(letter | content-free prompt)``,
    where the content-free prompt has the same layout with every field replaced by ``N/A``
    (one extra forward pass per layout, not per item). All letters are one token, so option
    length plays no part, and the model's prior for a letter (e.g. always "A") is divided out.
``letter``
    argmax of ``log p(letter | prompt)``: length-robust, but carries the letter prior.
``loglik_mean``
    argmax of the mean per-token log-likelihood of the option text (length-normalised).
``loglik_sum``
    argmax of the summed log-likelihood of the option text: favours short options. On BBQ the
    "unknown" options are longer, so this rule under-picks them (DESIGN §3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spin_interp.evaluate.benchmarks import LETTERS, MCItem, PairItem
from spin_interp.evaluate.runner import Runner

__all__ = [
    "HEADLINE_RULE",
    "RULES",
    "MCScores",
    "pair_logliks",
    "score_multiple_choice",
    "sentence_logliks",
]

RULES: tuple[str, ...] = ("letter_calibrated", "letter", "loglik_mean", "loglik_sum")
HEADLINE_RULE = "letter_calibrated"


@dataclass(frozen=True)
class MCScores:
    """Log-probabilities behind the choice rules for one item (arrays over options)."""

    letter: np.ndarray
    letter_cf: np.ndarray
    text_sum: np.ndarray
    text_len: np.ndarray

    def values(self, rule: str) -> np.ndarray:
        """The score of each option under ``rule`` (higher is chosen)."""
        if rule == "letter_calibrated":
            return self.letter - self.letter_cf
        if rule == "letter":
            return self.letter
        if rule == "loglik_mean":
            return self.text_sum / self.text_len
        if rule == "loglik_sum":
            return self.text_sum
        raise ValueError(f"unknown choice rule {rule!r}; choose one of {RULES}")

    def choice(self, rule: str) -> int:
        """The chosen option (the first one on an exact tie)."""
        return int(np.argmax(self.values(rule)))


def score_multiple_choice(
    runner: Runner,
    items: Sequence[MCItem],
    chat: bool = True,
    progress: bool = False,
    desc: str = "multiple choice",
) -> list[MCScores]:
    """Score every option of every item under all :data:`RULES` (see the module docstring).

    With ``chat=True`` the prompt is the user turn of the chat template and the letter / option
    text is the start of the assistant turn; with ``chat=False`` the raw prompt is followed by
    ``" A"`` / ``" " + option``.
    """
    if not items:
        raise ValueError("no multiple-choice items to score")
    sep = "" if chat else " "

    def request(prompt: str, options: Sequence[str]) -> tuple[list[int], list[list[int]]]:
        prefix = runner.prompt_ids(prompt, chat)
        letters = [runner.text_ids(sep + LETTERS[i]) for i in range(len(options))]
        texts = [runner.text_ids(sep + o) for o in options]
        if any(not t for t in texts):
            raise ValueError(f"an option tokenises to nothing: {list(options)!r}")
        return prefix, letters + texts

    cf_keys = sorted({(it.cf_prompt, len(it.options)) for it in items})
    cf_reqs = [request(p, ["N/A"] * k) for p, k in cf_keys]
    cf_out = runner.continuation_logprobs(cf_reqs)
    cf_letters = {
        key: np.array([lp.sum() for lp in out[: key[1]]])
        for key, out in zip(cf_keys, cf_out, strict=True)
    }
    reqs = [request(it.prompt, it.options) for it in items]
    outs = runner.continuation_logprobs(reqs, progress=progress, desc=desc)
    scores = []
    for it, out in zip(items, outs, strict=True):
        k = len(it.options)
        scores.append(
            MCScores(
                letter=np.array([lp.sum() for lp in out[:k]]),
                letter_cf=cf_letters[(it.cf_prompt, k)],
                text_sum=np.array([lp.sum() for lp in out[k:]]),
                text_len=np.array([float(len(lp)) for lp in out[k:]]),
            )
        )
    return scores


def pair_logliks(
    runner: Runner, pairs: Sequence[PairItem], progress: bool = False, desc: str = "sentence pairs"
) -> list[tuple[float, float]]:
    """``(log p(more), log p(less))`` of each pair: summed token log-likelihood of the whole
    sentence, its first token conditioned on :meth:`Runner.document_start_id`."""
    if not pairs:
        raise ValueError("no sentence pairs to score")
    start = [runner.document_start_id()]
    reqs = [(start, [runner.text_ids(p.more), runner.text_ids(p.less)]) for p in pairs]
    outs = runner.continuation_logprobs(reqs, progress=progress, desc=desc)
    return [(float(a.sum()), float(b.sum())) for a, b in outs]


def sentence_logliks(
    runner: Runner, texts: Sequence[str], progress: bool = False, desc: str = "sentences"
) -> list[tuple[float, int]]:
    """``(summed log-likelihood, number of tokens)`` of each text (first token conditioned on
    :meth:`Runner.document_start_id`)."""
    if not texts:
        raise ValueError("no sentences to score")
    start = [runner.document_start_id()]
    reqs = []
    for t in texts:
        ids = runner.text_ids(t)
        if not ids:
            raise ValueError(f"text tokenises to nothing: {t!r}")
        reqs.append((start, [ids]))
    outs = runner.continuation_logprobs(reqs, progress=progress, desc=desc)
    return [(float(o[0].sum()), len(o[0])) for o in outs]
