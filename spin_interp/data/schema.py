"""The record type shared by every behaviour dataset, and its fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BEHAVIOURS", "Example", "dataset_fingerprint"]

#: The behaviours this package knows how to build, in a fixed order.
BEHAVIOURS: tuple[str, ...] = ("fairness", "privacy", "general")


@dataclass(frozen=True)
class Example:
    """One (prompt, response) pair of a behaviour dataset.

    Attributes:
        prompt: the user turn, without any chat template applied.
        response: the assistant turn whose tokens carry the loss when scoring.
        behaviour: one of :data:`BEHAVIOURS` (or a free name for user data).
        safe: ``True`` when ``response`` shows the desired behaviour (a refusal, an
            "insufficient information" answer, a correct answer), ``False`` when it shows
            the undesired one (a disclosure, a stereotyped answer).
        meta: JSON-serialisable provenance and labels. Its keys depend on the source; the
            offline fairness and privacy sources follow fixed contracts (see ``docs/data.md``).

    Equality compares all fields; the hash leaves ``meta`` out (a dict is not hashable), so
    equal examples still hash equally. The object is frozen, but ``meta`` is an ordinary
    dict: the loaders hand out fresh copies, so editing one does not affect later loads.
    """

    prompt: str
    response: str
    behaviour: str
    safe: bool = True
    meta: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in ("prompt", "response", "behaviour"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(
                    f"Example.{name} must be a str, got {type(getattr(self, name)).__name__}"
                )
        if not isinstance(self.safe, bool):
            raise TypeError(f"Example.safe must be a bool, got {type(self.safe).__name__}")
        if not isinstance(self.meta, dict):
            raise TypeError(f"Example.meta must be a dict, got {type(self.meta).__name__}")
        try:
            json.dumps(self.meta, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"Example.meta must be JSON-serialisable: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict with the five fields."""
        return {
            "prompt": self.prompt,
            "response": self.response,
            "behaviour": self.behaviour,
            "safe": self.safe,
            "meta": json.loads(json.dumps(self.meta)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Example:
        """Build an example from the output of :meth:`to_dict`."""
        missing = {"prompt", "response", "behaviour"} - set(data)
        if missing:
            raise ValueError(f"Example.from_dict: missing keys {sorted(missing)}")
        return cls(
            prompt=data["prompt"],
            response=data["response"],
            behaviour=data["behaviour"],
            safe=bool(data.get("safe", True)),
            meta=dict(data.get("meta") or {}),
        )


def dataset_fingerprint(examples: Iterable[Example]) -> str:
    """Return a short, stable SHA-256 fingerprint of a list of examples.

    The hash covers, in order, each example's ``prompt``, ``response``, ``behaviour`` and
    ``safe`` (``meta`` is left out, so adding provenance does not change it). The order of the
    examples matters. Returns the first 16 hex digits.
    """
    digest = hashlib.sha256(b"spin-interp-dataset-v1\n")
    count = 0
    for ex in examples:
        if not isinstance(ex, Example):
            raise TypeError(f"dataset_fingerprint expects Example objects, got {type(ex).__name__}")
        record = [ex.prompt, ex.response, ex.behaviour, ex.safe]
        digest.update(json.dumps(record, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
        count += 1
    digest.update(f"count={count}".encode())
    return digest.hexdigest()[:16]
