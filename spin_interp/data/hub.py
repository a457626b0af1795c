"""The paper's data sources (Hugging Face Hub), or local files with the same columns.

* **BeaverTails** (``PKU-Alignment/BeaverTails``, split ``330k_train``; CC BY-NC 4.0): columns
  ``prompt``, ``response``, ``category`` (a dict of 14 booleans) and ``is_safe``. Fairness uses
  the category ``discrimination,stereotype,injustice``, privacy ``privacy_violation``
  (:data:`BEAVERTAILS_CATEGORIES`). A prompt belongs to a behaviour when at least one of its
  responses is flagged with that category; ``safe=True`` returns the responses to those prompts
  marked ``is_safe``, ``safe=False`` the flagged responses.
* **Alpaca-cleaned** (``yahma/alpaca-cleaned``; CC BY 4.0): ``instruction``, ``input``,
  ``output`` -> general examples; rows matching :data:`ALPACA_SAFETY_PATTERN` (safety, privacy,
  bias, harm, ... keywords) are dropped so that general data carries no safety behaviour.
* **SALAD-Bench base set** (``OpenSafetyLab/Salad-Data``, config ``base_set``; Apache-2.0):
  ``question`` and ``1-category`` / ``2-category`` / ``3-category``; fairness questions are
  those whose ``2-category`` is "O2: Unfair Representation", privacy "O9: Privacy
  Infringement" (:data:`SALAD_CATEGORIES`; matched without the "On:" prefix).

``source`` may also be a path to a CSV / JSONL / JSON / parquet file with one of those column
sets, or with plain ``prompt`` / ``response`` (and optional ``safe``) columns. In CSV files the
``category`` cell holds a JSON object. Splits are assigned by a hash of the normalised prompt,
so every response to one prompt lands in the same split.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spin_interp.data.files import (
    TABLE_SUFFIXES,
    Row,
    parse_bool,
    parse_mapping,
    read_table,
    row_error,
)
from spin_interp.data.schema import Example
from spin_interp.data.splits import assign_split, check_split, take

__all__ = [
    "ALPACA",
    "ALPACA_SAFETY_PATTERN",
    "BEAVERTAILS",
    "BEAVERTAILS_CATEGORIES",
    "SALAD",
    "SALAD_CATEGORIES",
    "hub_examples",
    "load_salad_questions",
    "read_source",
]

logger = logging.getLogger(__name__)

#: (repository, config, split) of each hub data set.
BEAVERTAILS: tuple[str, str | None, str] = ("PKU-Alignment/BeaverTails", None, "330k_train")
ALPACA: tuple[str, str | None, str] = ("yahma/alpaca-cleaned", None, "train")
SALAD: tuple[str, str | None, str] = ("OpenSafetyLab/Salad-Data", "base_set", "train")

BEAVERTAILS_CATEGORIES: dict[str, str] = {
    "fairness": "discrimination,stereotype,injustice",
    "privacy": "privacy_violation",
}
SALAD_CATEGORIES: dict[str, str] = {
    "fairness": "Unfair Representation",
    "privacy": "Privacy Infringement",
}

#: Alpaca rows whose instruction, input or output match this are not general data.
ALPACA_SAFETY_PATTERN = re.compile(
    r"\b(safe|safety|unsafe|privacy|private|personal (?:data|information)|confidential"
    r"|discriminat\w*|stereotyp\w*|bias(?:ed|es)?|prejudic\w*|racis\w*|sexis\w*|gender"
    r"|harm\w*|illegal|unethical|ethic\w*|hate\w*|offensive|violen\w*|weapon\w*|drugs?"
    r"|password\w*|social security|credit card|ssn)\b",
    re.IGNORECASE,
)

_BEAVERTAILS_COLUMNS = ("prompt", "response", "category", "is_safe")
_ALPACA_COLUMNS = ("instruction", "output")
_PLAIN_COLUMNS = ("prompt", "response")
_SALAD_COLUMNS = ("question", "2-category")


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _is_path(source: str) -> bool:
    return source not in ("offline", "hub")


def _hub_rows(dataset: tuple[str, str | None, str], how_to: str) -> list[Row]:
    repo, config, split = dataset
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"source='hub' needs the Hugging Face `datasets` package (pip install datasets). "
            f"Without it, export {repo} to a local file and pass source=<path>: {how_to}"
        ) from err
    try:
        ds = datasets.load_dataset(repo, config, split=split)
    except Exception as err:  # network, auth and cache errors come in many types
        raise RuntimeError(
            f"could not load {repo} (config={config!r}, split={split!r}) from the Hugging Face "
            f"Hub: {err}. If the hub is unreachable, download the table elsewhere and pass "
            f"source=<path>: {how_to}"
        ) from err
    logger.info("loaded %d rows of %s from the hub", len(ds), repo)
    return [Row.at(dict(r), f"hf://{repo}", f"row {i}") for i, r in enumerate(ds, start=1)]


def read_source(source: str | Path, dataset: tuple[str, str | None, str], how_to: str) -> list[Row]:
    """Rows of a hub data set (``source="hub"``) or of a local file (``source=<path>``)."""
    if str(source) == "hub":
        return _hub_rows(dataset, how_to)
    path = Path(source)
    if not path.is_file():
        raise ValueError(
            f"source must be 'offline', 'hub' or a path to an existing data file "
            f"({', '.join(TABLE_SUFFIXES)}); got {str(source)!r}"
        )
    return read_table(path)


def _require(row: Row, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in row]
    if missing:
        raise row_error(row, f"missing column(s) {missing}; found {sorted(row)}")


def _text(row: Row, column: str, required: bool = True) -> str:
    value = row.get(column)
    if value is None or (isinstance(value, float) and value != value):  # NaN from pandas
        if required:
            raise row_error(row, f"column {column!r} is empty")
        return ""
    if not isinstance(value, str):
        raise row_error(row, f"column {column!r} must be text, got {type(value).__name__}")
    return value


def _row_id(row: Row) -> str:
    name = row.path.rsplit("/", 1)[-1]
    return f"{name}:{row.where.replace(' ', '-')}"


def _detect(rows: list[Row]) -> str:
    if not rows:
        return "empty"
    cols = set(rows[0])
    if set(_BEAVERTAILS_COLUMNS) <= cols:
        return "beavertails"
    if set(_ALPACA_COLUMNS) <= cols:
        return "alpaca"
    if set(_SALAD_COLUMNS) <= cols:
        return "salad"
    if set(_PLAIN_COLUMNS) <= cols:
        return "plain"
    raise row_error(
        rows[0],
        "unrecognised columns "
        f"{sorted(cols)}; expected BeaverTails ({', '.join(_BEAVERTAILS_COLUMNS)}), Alpaca "
        f"({', '.join(_ALPACA_COLUMNS)}[, input]), SALAD ({', '.join(_SALAD_COLUMNS)}) or "
        f"plain ({', '.join(_PLAIN_COLUMNS)}[, safe])",
    )


def _beavertails(rows: list[Row], behaviour: str, safe: bool) -> list[tuple[Example, str]]:
    if behaviour not in BEAVERTAILS_CATEGORIES:
        raise ValueError(
            f"BeaverTails rows provide {sorted(BEAVERTAILS_CATEGORIES)} data, not {behaviour!r}"
        )
    category = BEAVERTAILS_CATEGORIES[behaviour]
    parsed = []
    for row in rows:
        _require(row, _BEAVERTAILS_COLUMNS)
        cats = parse_mapping(row, "category")
        if category not in cats:
            raise row_error(row, f"'category' has no key {category!r}")
        flags = {str(k): bool(v) for k, v in cats.items()}
        is_safe = parse_bool(row, "is_safe")
        parsed.append((row, _text(row, "prompt"), _text(row, "response"), flags, is_safe))
    tagged = {_norm(p) for _, p, _, flags, _ in parsed if flags[category]}
    out = []
    for row, prompt, response, flags, is_safe in parsed:
        keep = (is_safe and _norm(prompt) in tagged) if safe else flags[category]
        if not keep:
            continue
        meta: dict[str, Any] = {
            "id": _row_id(row),
            "source": row.path,
            "category": sorted(k for k, v in flags.items() if v),
            "is_safe": is_safe,
        }
        out.append((Example(prompt, response, behaviour, safe, meta), "hub:" + _norm(prompt)))
    return out


def _alpaca(rows: list[Row], behaviour: str, safe: bool) -> list[tuple[Example, str]]:
    if behaviour != "general":
        raise ValueError(f"Alpaca rows provide 'general' data, not {behaviour!r}")
    if not safe:
        raise ValueError("behaviour 'general' has no unsafe (safe=False) examples")
    out = []
    dropped = 0
    for row in rows:
        _require(row, _ALPACA_COLUMNS)
        instruction = _text(row, "instruction").strip()
        extra = _text(row, "input", required=False).strip()
        output = _text(row, "output").strip()
        if not instruction or not output:
            continue
        if any(ALPACA_SAFETY_PATTERN.search(t) for t in (instruction, extra, output)):
            dropped += 1
            continue
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
        meta = {"id": _row_id(row), "source": row.path, "kind": "instruction", "answer": output}
        out.append((Example(prompt, output, "general", True, meta), "hub:" + _norm(prompt)))
    logger.info("Alpaca: dropped %d safety-related rows", dropped)
    return out


def _plain(rows: list[Row], behaviour: str, safe: bool) -> list[tuple[Example, str]]:
    has_safe = "safe" in rows[0]
    if not safe and not has_safe:
        raise ValueError(f"{rows[0].path} has no 'safe' column, so it has no unsafe examples")
    out = []
    for row in rows:
        _require(row, _PLAIN_COLUMNS)
        row_safe = parse_bool(row, "safe") if has_safe else True
        if row_safe != safe:
            continue
        prompt, response = _text(row, "prompt"), _text(row, "response")
        meta = {"id": _row_id(row), "source": row.path}
        out.append((Example(prompt, response, behaviour, safe, meta), "hub:" + _norm(prompt)))
    return out


_HOW_TO = {
    "fairness": "a table with columns prompt, response, category (dict of booleans), is_safe",
    "privacy": "a table with columns prompt, response, category (dict of booleans), is_safe",
    "general": "a table with columns instruction, input, output",
}


def hub_examples(
    behaviour: str,
    source: str | Path = "hub",
    split: str = "score",
    n: int | None = None,
    seed: int = 0,
    safe: bool = True,
) -> list[Example]:
    """Behaviour examples from the paper's sources (see the module docstring)."""
    check_split(split)
    dataset = ALPACA if behaviour == "general" else BEAVERTAILS
    rows = read_source(source, dataset, _HOW_TO[behaviour])
    kind = _detect(rows)
    if kind == "beavertails":
        pairs = _beavertails(rows, behaviour, safe)
    elif kind == "alpaca":
        pairs = _alpaca(rows, behaviour, safe)
    elif kind == "plain":
        pairs = _plain(rows, behaviour, safe)
    elif kind == "salad":
        raise ValueError(
            f"{rows[0].path} holds SALAD-Bench questions without responses; use "
            "load_salad_questions() for them"
        )
    else:
        pairs = []
    for ex, key in pairs:
        ex.meta["group"] = key
    pool = [ex for ex, key in pairs if assign_split(key) == split]
    what = f"behaviour={behaviour!r}, source={str(source)!r}, split={split!r}, safe={safe}"
    return take(pool, n, seed, what)


def _salad_category(value: Any) -> str:
    return re.sub(r"^\s*O\d+\s*:\s*", "", str(value or "")).strip().lower()


def load_salad_questions(
    behaviour: str,
    source: str | Path = "hub",
    n: int | None = None,
    seed: int = 0,
    split: str | None = None,
) -> list[str]:
    """SALAD-Bench base-set questions of one behaviour, for awareness evaluation.

    Args:
        behaviour: ``"fairness"`` or ``"privacy"`` (see :data:`SALAD_CATEGORIES`).
        source: ``"hub"`` or a path to a local table with ``question`` and ``2-category``.
        n: seeded sample size; ``None`` for all (in file order, duplicates removed).
        seed: sampling seed.
        split: optionally keep one split only (hash of the normalised question).
    """
    if behaviour not in SALAD_CATEGORIES:
        raise ValueError(
            f"SALAD questions exist for {', '.join(sorted(SALAD_CATEGORIES))}, not {behaviour!r}"
        )
    if split is not None:
        check_split(split)
    if str(source) == "offline":
        raise ValueError("SALAD-Bench is not available offline; pass source='hub' or a path")
    how_to = "a table with columns question, 1-category, 2-category, 3-category"
    rows = read_source(source, SALAD, how_to)
    wanted = SALAD_CATEGORIES[behaviour].lower()
    questions: list[str] = []
    seen: set[str] = set()
    for row in rows:
        _require(row, _SALAD_COLUMNS)
        if _salad_category(row.get("2-category")) != wanted:
            continue
        question = _text(row, "question").strip()
        key = _norm(question)
        if not question or key in seen:
            continue
        if split is not None and assign_split("hub:" + key) != split:
            continue
        seen.add(key)
        questions.append(question)
    if n is None:
        return questions
    what = f"SALAD questions, behaviour={behaviour!r}, source={str(source)!r}"
    return take(questions, n, seed, what)
