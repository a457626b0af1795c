"""Top-fraction sets of scored entries and the set algebra of SPIN.

Every set is a :class:`Selection`: per matrix (HF name), a sorted 1-D int64 tensor of flat indices
into that matrix. For neuron scores the "matrix" is a module (e.g. ``model.layers.3.mlp``) and the
indices are unit ids.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spin_interp._io import load_artifact, save_artifact
from spin_interp.attribution import WeightScores, layer_of, module_of

MODES = ("paper", "reference", "single")


@dataclass
class Selection:
    """A set of entries per matrix: ``sel[name]`` is a sorted int64 tensor of flat indices."""

    shapes: dict[str, tuple[int, ...]]
    indices: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, idx in self.indices.items():
            if name not in self.shapes:
                raise ValueError(f"{name} has indices but no shape")
            raw = torch.as_tensor(idx)
            if raw.numel() and (
                raw.is_floating_point() or raw.is_complex() or raw.dtype == torch.bool
            ):
                raise TypeError(
                    f"indices of {name} must be integers, got dtype {raw.dtype} (a mask or scores?)"
                )
            idx = raw.to(torch.long).reshape(-1)
            idx = torch.unique(idx)  # sorted, unique
            if idx.numel() and (int(idx[0]) < 0 or int(idx[-1]) >= math.prod(self.shapes[name])):
                raise ValueError(f"indices of {name} fall outside its shape {self.shapes[name]}")
            self.indices[name] = idx
        for name in self.shapes:
            self.indices.setdefault(name, torch.empty(0, dtype=torch.long))

    @property
    def fingerprint(self) -> str | None:
        return self.meta.get("model_fingerprint")

    def names(self) -> list[str]:
        return list(self.shapes)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.indices:
            raise KeyError(f"{name!r} is not in this selection; it has {self.names()[:3]}...")
        return self.indices[name]

    def __contains__(self, name: str) -> bool:
        return name in self.indices

    def __len__(self) -> int:
        return self.count()

    def count(self) -> int:
        """Total number of selected entries."""
        return sum(int(v.numel()) for v in self.indices.values())

    def counts(self) -> dict[str, int]:
        return {n: int(v.numel()) for n, v in self.indices.items()}

    def counts_by_layer(self) -> dict[int | None, int]:
        c: Counter = Counter()
        for n, v in self.indices.items():
            c[layer_of(n)] += int(v.numel())
        return dict(sorted(c.items(), key=lambda kv: -1 if kv[0] is None else kv[0]))

    def counts_by_module(self) -> dict[str, int]:
        c: Counter = Counter()
        for n, v in self.indices.items():
            c[module_of(n)] += int(v.numel())
        return dict(sorted(c.items()))

    def to_sets(self) -> dict[str, set[int]]:
        return {n: set(v.tolist()) for n, v in self.indices.items()}

    # -- set algebra --------------------------------------------------------------------------
    def _combine(self, other: Selection, op: str) -> Selection:
        if not isinstance(other, Selection):
            return NotImplemented
        _check_same_model([self.fingerprint, other.fingerprint])
        shapes = dict(self.shapes)
        for n, s in other.shapes.items():
            if n in shapes and tuple(shapes[n]) != tuple(s):
                raise ValueError(f"{n} has shape {shapes[n]} in one selection and {s} in the other")
            shapes.setdefault(n, s)
        empty = torch.empty(0, dtype=torch.long)
        out = {}
        for n in shapes:
            a, b = self.indices.get(n, empty), other.indices.get(n, empty)
            if op == "and":
                out[n] = a[torch.isin(a, b)]
            elif op == "or":
                out[n] = torch.cat([a, b])
            elif op == "sub":
                out[n] = a[~torch.isin(a, b)]
            else:  # xor
                out[n] = torch.cat([a[~torch.isin(a, b)], b[~torch.isin(b, a)]])
        meta = {"model_fingerprint": self.fingerprint or other.fingerprint, "mode": f"set-{op}"}
        return Selection(shapes, out, meta)

    def __and__(self, other: Selection) -> Selection:
        return self._combine(other, "and")

    def __or__(self, other: Selection) -> Selection:
        return self._combine(other, "or")

    def __sub__(self, other: Selection) -> Selection:
        return self._combine(other, "sub")

    def __xor__(self, other: Selection) -> Selection:
        return self._combine(other, "xor")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Selection):
            return NotImplemented
        names = set(self.names()) | set(other.names())
        empty = torch.empty(0, dtype=torch.long)
        return all(
            torch.equal(self.indices.get(n, empty), other.indices.get(n, empty)) for n in names
        )

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        meta = dict(self.meta)
        meta["shapes"] = {n: list(s) for n, s in self.shapes.items()}
        return save_artifact(path, "selection", dict(self.indices), meta)

    @classmethod
    def load(cls, path: str | Path) -> Selection:
        tensors, meta = load_artifact(path, "selection")
        shapes = {n: tuple(s) for n, s in meta.pop("shapes").items()}
        unknown = set(tensors) - set(shapes)
        if unknown:
            raise ValueError(f"{path}: tensors without a shape: {sorted(unknown)[:3]}")
        return cls(
            shapes, {n: tensors.get(n, torch.empty(0, dtype=torch.long)) for n in shapes}, meta
        )

    def __repr__(self) -> str:
        return (
            f"Selection(mode={self.meta.get('mode')!r}, entries={self.count()}, "
            f"matrices={len(self.shapes)}, model={self.fingerprint})"
        )


def _check_same_model(fingerprints: list[str | None]) -> None:
    known = {f for f in fingerprints if f is not None}
    if len(known) > 1:
        raise ValueError(
            f"these scores/selections come from different models (fingerprints {sorted(known)}); "
            "score every dataset on the same model before combining them"
        )


def _check_fraction(name: str, x: float) -> None:
    if not isinstance(x, (int, float)) or not (0 < x <= 1):
        raise ValueError(f"{name} must be a fraction in (0, 1], got {x!r}")


def top_fraction(scores: WeightScores, fraction: float) -> Selection:
    """Per matrix, the top ``floor(fraction * numel)`` entries (ties broken by lower index)."""
    _check_fraction("fraction", fraction)
    out = {}
    for name in scores.names():
        k = math.floor(fraction * scores.numel(name))
        if k > scores.n_kept(name):
            raise ValueError(
                f"{name}: fraction {fraction} needs {k} entries but the scores kept only "
                f"{scores.n_kept(name)}; rescore with keep_fraction >= {fraction} or dense=True"
            )
        out[name] = scores.topk(name, k)[1]
    meta = {
        "model_fingerprint": scores.fingerprint,
        "mode": "top",
        "fraction": fraction,
        "method": scores.meta.get("method"),
        "data_fingerprint": scores.meta.get("data_fingerprint"),
    }
    return Selection(dict(scores.shapes), out, meta)


def _reference_positional(a: torch.Tensor, b: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The released code's selection: a and b are sorted index lists of equal length; keep a[j]
    where a[j] and b[j] are both outside g (a positional AND, not a set intersection)."""
    n = min(a.numel(), b.numel())
    a, b = a[:n], b[:n]
    keep = ~torch.isin(a, g) & ~torch.isin(b, g)
    return a[keep]


def select_coupled(
    a: WeightScores,
    b: WeightScores | None,
    general: WeightScores,
    p: float,
    q: float,
    mode: str = "paper",
) -> Selection:
    """SPIN's coupled set per matrix.

    - ``paper``: ``(top_q(a) & top_q(b)) - top_p(general)`` (the method as the paper states it).
    - ``single``: ``top_q(a) - top_p(general)`` (``b`` is ignored; a one-behaviour control).
    - ``reference``: what the publicly released code does, reproduced on purpose: the top-q index
      lists of ``a`` and ``b`` sorted ascending, each position marked "not in top_p(general)", the
      two marks combined by a positional AND, ``a``'s indices kept. It is a subset of
      ``top_q(a) - top_p(general)`` and ``b``'s importance barely matters; pass the privacy scores
      as ``a`` to match the released code. This is a reproduction of a defect, for comparison.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    _check_fraction("p", p)
    _check_fraction("q", q)
    if mode != "single" and b is None:
        raise ValueError(f"mode={mode!r} needs two behaviour scores (a and b)")
    all_scores = [s for s in (a, b, general) if s is not None]
    _check_same_model([s.fingerprint for s in all_scores])
    names = a.names()
    for s in all_scores[1:]:
        if set(s.names()) != set(names):
            diff = sorted(set(s.names()) ^ set(names))[:3]
            raise ValueError(f"scores cover different matrices (e.g. {diff}); use the same targets")
        for n in names:
            if tuple(s.shapes[n]) != tuple(a.shapes[n]):
                raise ValueError(f"{n} has different shapes in the scores")
    A = top_fraction(a, q)
    G = top_fraction(general, p)
    if mode == "paper":
        sel = (A & top_fraction(b, q)) - G  # type: ignore[arg-type]
    elif mode == "single":
        sel = A - G
    else:
        B = top_fraction(b, q)  # type: ignore[arg-type]
        sel = Selection(
            dict(a.shapes),
            {n: _reference_positional(A[n], B[n], G[n]) for n in names},
        )
    sel.meta = {
        "model_fingerprint": a.fingerprint,
        "mode": mode,
        "p": p,
        "q": q,
        "sources": {
            "a": a.meta.get("data_fingerprint"),
            "b": None if b is None else b.meta.get("data_fingerprint"),
            "general": general.meta.get("data_fingerprint"),
        },
        "method": a.meta.get("method"),
    }
    return sel


def random_like(selection: Selection, seed: int = 0) -> Selection:
    """A control: per matrix, the same number of entries drawn uniformly without replacement."""
    out = {}
    for name, idx in selection.indices.items():
        numel = math.prod(selection.shapes[name])
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        draw = rng.choice(numel, size=int(idx.numel()), replace=False)
        out[name] = torch.from_numpy(np.sort(draw).astype(np.int64))
    meta = {
        "model_fingerprint": selection.fingerprint,
        "mode": "random",
        "seed": seed,
        "matched_to": selection.meta.get("mode"),
    }
    return Selection(dict(selection.shapes), out, meta)
