"""Variants of SPIN's selection and operation, as first-class Selections and WeightEdits.

Each function returns something :mod:`spin_interp.ablate` takes (``zero_weights``, ``edit_for``,
``sweep(selections=...)``), so variants are measured exactly like the paper's method:

- :func:`soft_coupled`: rank entries by the worse of their two normalised ranks (a soft
  intersection) instead of requiring both top-q sets;
- :func:`magnitude_guard`: drop entries whose |W| is above a per-matrix quantile (guards against
  zeroing "super weights", which DESIGN.md §3 found the coupled set is rich in);
- :func:`exclude`: remove entries of further protected sets (e.g. the top-p of a second general
  dataset);
- :func:`cap_per_matrix`: at most ``k`` entries per matrix, keeping the best-ranked ones;
- :func:`scale_weights`: multiply the selected entries by ``alpha`` instead of zeroing them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from spin_interp.ablate import WeightEdit, _check_fingerprint
from spin_interp.attribution import WeightScores
from spin_interp.models import hf_parameters
from spin_interp.select import Selection, _check_fraction, _check_same_model, top_fraction

__all__ = ["cap_per_matrix", "exclude", "magnitude_guard", "scale_weights", "soft_coupled"]


def _normalised_ranks(scores: WeightScores, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat indices, rank / kept) of the kept entries, best = 1/kept; absent entries rank 1."""
    vals, idx = scores.topk(name)
    kept = max(int(idx.numel()), 1)
    return idx, (torch.arange(idx.numel(), dtype=torch.float64) + 1) / kept


def soft_coupled(
    a: WeightScores, b: WeightScores, general: WeightScores, p: float, q: float
) -> Selection:
    """Per matrix, the ``floor(q * numel)`` entries whose WORSE normalised rank in ``a`` and
    ``b`` is best (a soft intersection), then minus ``top_p(general)`` (as in the paper's order:
    form the behaviour set, then protect general ability).

    Ranks are positions in each behaviour's kept top list divided by its length; an entry absent
    from one list gets rank 1 there. Ties are broken by flat index.
    """
    _check_fraction("p", p)
    _check_fraction("q", q)
    _check_same_model([a.fingerprint, b.fingerprint, general.fingerprint])
    G = top_fraction(general, p)
    out = {}
    for name in a.names():
        ia, ra = _normalised_ranks(a, name)
        ib, rb = _normalised_ranks(b, name)
        cand = torch.unique(torch.cat([ia, ib]))
        pa = torch.ones(cand.numel(), dtype=torch.float64)
        pb = torch.ones(cand.numel(), dtype=torch.float64)
        pos_a = torch.searchsorted(cand, ia)
        pos_b = torch.searchsorted(cand, ib)
        pa[pos_a] = ra
        pb[pos_b] = rb
        worst = torch.maximum(pa, pb)
        k = min(math.floor(q * a.numel(name)), int(cand.numel()))
        chosen = cand[torch.sort(worst, stable=True).indices[:k]]  # cand sorted: ties by index
        out[name] = chosen[~torch.isin(chosen, G[name])]
    meta = {"model_fingerprint": a.fingerprint, "mode": "soft", "p": p, "q": q}
    return Selection(dict(a.shapes), out, meta)


def magnitude_guard(selection: Selection, model: Any, quantile: float = 0.99) -> Selection:
    """Drop selected entries whose |W| exceeds the ``quantile`` of |W| in their matrix."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    params = hf_parameters(model)
    out = {}
    for name, idx in selection.indices.items():
        if name not in params:
            raise KeyError(f"{name!r} is not a weight of this model")
        w = params[name].detach().abs().reshape(-1).float()
        thresh = (
            torch.quantile(
                w[
                    torch.randperm(w.numel(), generator=torch.Generator().manual_seed(0))[
                        :1_000_000
                    ]
                ],
                quantile,
            )
            if w.numel() > 1_000_000
            else torch.quantile(w, quantile)
        )
        out[name] = idx[w[idx] <= thresh]
    meta = dict(selection.meta)
    meta.update(mode=f"{selection.meta.get('mode')}+guard{quantile:g}", guard_quantile=quantile)
    return Selection(dict(selection.shapes), out, meta)


def exclude(selection: Selection, *protected: Selection) -> Selection:
    """``selection`` minus every protected set (e.g. top-p of a second general dataset)."""
    out = selection
    for s in protected:
        out = out - s
    out.meta = dict(selection.meta) | {"mode": f"{selection.meta.get('mode')}-protected"}
    return out


def cap_per_matrix(selection: Selection, ranking: WeightScores, k: int) -> Selection:
    """At most ``k`` entries per matrix, keeping those ``ranking`` scores highest."""
    if k < 0:
        raise ValueError("k must be >= 0")
    out = {}
    for name, idx in selection.indices.items():
        if idx.numel() <= k:
            out[name] = idx
            continue
        vals, top_idx = ranking.topk(name)
        rank = {int(i): r for r, i in enumerate(top_idx.tolist())}
        order = sorted(idx.tolist(), key=lambda i: (rank.get(i, len(rank)), i))
        out[name] = torch.tensor(sorted(order[:k]), dtype=torch.long)
    meta = dict(selection.meta) | {"mode": f"{selection.meta.get('mode')}+cap{k}", "cap": k}
    return Selection(dict(selection.shapes), out, meta)


def scale_weights(model: Any, selection: Selection, alpha: float) -> WeightEdit:
    """An edit multiplying every selected entry by ``alpha`` (0 would be ``zero_weights``)."""
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    base = _check_fingerprint(model, selection.fingerprint, "selection")
    params = hf_parameters(model)
    changes = {}
    for name, idx in selection.indices.items():
        if idx.numel():
            flat = params[name].detach().reshape(-1)
            changes[name] = (idx, (flat[idx.to(flat.device)] * alpha).cpu())
    meta = {
        "kind": f"scale_weights({alpha:g})",
        "model_fingerprint": base,
        "mode": selection.meta.get("mode"),
        "alpha": alpha,
    }
    return WeightEdit(model, changes, meta)
