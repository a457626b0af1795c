"""Reversible weight edits: zero selected entries or whole neurons, compose, sweep.

A :class:`WeightEdit` is a list of (flat indices, new values) per HF weight name. ``apply()`` saves
the entries it overwrites and ``revert()`` writes them back bit-for-bit. Edits applied to one model
form a stack; reverting an edit that is not on top first lifts the edits above it and then puts
them back, so overlapping edits can be reverted in any order.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from spin_interp._io import load_artifact, save_artifact
from spin_interp.attribution import WeightScores, layer_of, module_of
from spin_interp.models import (
    architecture_fingerprint,
    hf_model_of,
    hf_parameters,
    model_fingerprint,
    weight_layout,
)
from spin_interp.select import Selection, random_like, select_coupled

log = logging.getLogger(__name__)

__all__ = [
    "WeightEdit",
    "add_mlp_bias",
    "base_fingerprint",
    "edit_for",
    "mean_ablate_units",
    "project_out",
    "sweep",
    "unit_means",
    "zero_neurons",
    "zero_weights",
]


def _stack(model: Any) -> list[WeightEdit]:
    stack = getattr(model, "_spin_edit_stack", None)
    if stack is None:
        stack = []
        model._spin_edit_stack = stack
    return stack


def base_fingerprint(model: Any) -> str:
    """Fingerprint of the model with no edit applied (recorded when the first edit is applied)."""
    if _stack(model):
        return model._spin_base_fingerprint
    return model_fingerprint(model)


class WeightEdit:
    """Overwrite chosen entries of chosen weight matrices; reversible bit-for-bit."""

    def __init__(
        self,
        model: Any,
        changes: dict[str, tuple[torch.Tensor, torch.Tensor]],
        meta: dict[str, Any] | None = None,
    ) -> None:
        params = hf_parameters(model)
        self.model = model
        self.changes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, (idx, vals) in changes.items():
            if name not in params:
                raise KeyError(f"{name!r} is not a weight of this model")
            idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
            vals = torch.as_tensor(vals).reshape(-1).to(params[name].dtype)
            if idx.numel() != vals.numel():
                raise ValueError(f"{name}: {idx.numel()} indices but {vals.numel()} values")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= params[name].numel()):
                raise IndexError(f"{name}: indices fall outside a matrix of {params[name].numel()}")
            if idx.numel() != torch.unique(idx).numel():
                raise ValueError(f"{name}: repeated indices in one edit")
            self.changes[name] = (idx, vals)
        self.meta = dict(meta or {})
        self.meta.setdefault("architecture", architecture_fingerprint(model))
        self._saved: dict[str, torch.Tensor] | None = None

    # -- state --------------------------------------------------------------------------------
    @property
    def is_applied(self) -> bool:
        return self._saved is not None

    def n_entries(self) -> int:
        return sum(int(i.numel()) for i, _ in self.changes.values())

    @torch.no_grad()
    def _write(self) -> None:
        params = hf_parameters(self.model)
        saved = {}
        for name, (idx, vals) in self.changes.items():
            flat = params[name].view(-1)
            dev_idx = idx.to(flat.device)
            saved[name] = flat[dev_idx].clone()
            flat[dev_idx] = vals.to(flat.device)
        self._saved = saved

    @torch.no_grad()
    def _unwrite(self) -> None:
        params = hf_parameters(self.model)
        assert self._saved is not None
        for name, (idx, _) in self.changes.items():
            flat = params[name].view(-1)
            flat[idx.to(flat.device)] = self._saved[name]
        self._saved = None

    def apply(self) -> WeightEdit:
        """Write the new values into the model (saving what they replace)."""
        if self.is_applied:
            raise RuntimeError("this edit is already applied")
        arch = architecture_fingerprint(self.model)
        if arch != self.meta["architecture"]:
            raise ValueError(
                f"this edit was made for a model of another architecture "
                f"({self.meta['architecture']}, this model {arch})"
            )
        stack = _stack(self.model)
        current = self.model._spin_base_fingerprint if stack else model_fingerprint(self.model)
        made_for = self.meta.get("model_fingerprint")
        if made_for is not None and made_for != current:
            raise ValueError(
                f"this edit was made for model {made_for}, but the model it would change is now "
                f"{current} (other weights, or weights changed outside spin_interp's edits); "
                "rebuild the edit on this model"
            )
        if not stack:
            self.model._spin_base_fingerprint = current
        self._write()
        stack.append(self)
        return self

    def revert(self) -> WeightEdit:
        """Restore the entries this edit overwrote, bit-for-bit (any order of reverts works)."""
        if not self.is_applied:
            raise RuntimeError("this edit is not applied")
        stack = _stack(self.model)
        pos = next(i for i, e in enumerate(stack) if e is self)
        above = stack[pos + 1 :]
        for e in reversed(above):
            e._unwrite()
        self._unwrite()
        del stack[pos:]
        for e in above:
            e._write()
            stack.append(e)
        return self

    @contextlib.contextmanager
    def applied(self) -> Iterator[WeightEdit]:
        """Apply for the duration of a ``with`` block, then revert (even on error)."""
        self.apply()
        try:
            yield self
        finally:
            self.revert()

    # -- composition and reporting ------------------------------------------------------------
    def __add__(self, other: WeightEdit) -> WeightEdit:
        """One edit doing both; where both touch an entry, ``other``'s value wins."""
        if other.model is not self.model:
            raise ValueError("cannot compose edits of two different model objects")
        changes = dict(self.changes)
        for name, (idx, vals) in other.changes.items():
            if name in changes:
                i0, v0 = changes[name]
                keep = ~torch.isin(i0, idx)
                changes[name] = (torch.cat([i0[keep], idx]), torch.cat([v0[keep], vals]))
            else:
                changes[name] = (idx, vals)
        kinds = [self.meta.get("kind"), other.meta.get("kind")]
        meta: dict[str, Any] = {"kind": "+".join(str(k) for k in kinds)}
        made_for = {e.meta.get("model_fingerprint") for e in (self, other)} - {None}
        if len(made_for) > 1:
            raise ValueError(f"cannot compose edits made for different models {sorted(made_for)}")
        if made_for:
            meta["model_fingerprint"] = made_for.pop()
        return WeightEdit(self.model, changes, meta)

    def summary(self) -> dict[str, Any]:
        by_layer: Counter = Counter()
        by_module: Counter = Counter()
        for name, (idx, _) in self.changes.items():
            by_layer[layer_of(name)] += int(idx.numel())
            by_module[module_of(name)] += int(idx.numel())
        return {
            "kind": self.meta.get("kind"),
            "entries": self.n_entries(),
            "matrices": sum(1 for i, _ in self.changes.values() if i.numel()),
            "by_layer": {str(k): v for k, v in sorted(by_layer.items(), key=lambda kv: str(kv[0]))},
            "by_module": dict(sorted(by_module.items())),
            "applied": self.is_applied,
        }

    def save(self, path: str | Path) -> Path:
        tensors = {}
        for name, (idx, vals) in self.changes.items():
            tensors[f"indices/{name}"] = idx
            tensors[f"values/{name}"] = vals
        return save_artifact(path, "weight_edit", tensors, dict(self.meta))

    @classmethod
    def load(cls, path: str | Path, model: Any) -> WeightEdit:
        tensors, meta = load_artifact(path, "weight_edit")
        arch = architecture_fingerprint(model)
        if meta.get("architecture") != arch:
            raise ValueError(
                f"{path} was made for another model (architecture {meta.get('architecture')}, "
                f"this model {arch})"
            )
        base = meta.get("model_fingerprint")
        if base is not None and base != base_fingerprint(model):
            raise ValueError(
                f"{path} was made for model {base}, this model is {base_fingerprint(model)}"
            )
        names = {k.split("/", 1)[1] for k in tensors}
        changes = {n: (tensors[f"indices/{n}"], tensors[f"values/{n}"]) for n in names}
        try:
            return cls(model, changes, meta)
        except (KeyError, IndexError, ValueError) as exc:
            msg = exc.args[0] if exc.args else exc
            raise ValueError(f"{path} does not fit this model: {msg}") from exc

    def __repr__(self) -> str:
        return (
            f"WeightEdit(kind={self.meta.get('kind')!r}, entries={self.n_entries()}, "
            f"applied={self.is_applied})"
        )


# --------------------------------------------------------------------------------------------------
# constructors


def _check_fingerprint(model: Any, fingerprint: str | None, what: str) -> str:
    base = base_fingerprint(model)
    # function-preserving surgery (add_mlp_bias) maps the new fingerprint to the old one
    alias = getattr(model, "_spin_fingerprint_aliases", {}).get(base)
    if fingerprint is not None and fingerprint != base and fingerprint != alias:
        raise ValueError(
            f"the {what} was computed on model {fingerprint}, but this model is {base}: "
            "rescore on this model"
        )
    return base


def zero_weights(model: Any, selection: Selection) -> WeightEdit:
    """An edit that sets every selected weight entry to zero."""
    base = _check_fingerprint(model, selection.fingerprint, "selection")
    params = hf_parameters(model)
    changes = {}
    for name, idx in selection.indices.items():
        if name not in params:
            raise KeyError(f"{name!r} is not a weight of this model (is this a neuron selection?)")
        if tuple(params[name].shape) != tuple(selection.shapes[name]):
            raise ValueError(f"{name}: selection shape {selection.shapes[name]} != model's")
        if idx.numel():
            changes[name] = (idx, torch.zeros(idx.numel(), dtype=params[name].dtype))
    meta = {"kind": "zero_weights", "model_fingerprint": base, "mode": selection.meta.get("mode")}
    return WeightEdit(model, changes, meta)


_HEAD_KEYS = ("num_attention_heads", "n_head")


def neuron_weight_entries(model: Any, module: str, units: torch.Tensor) -> dict[str, torch.Tensor]:
    """Flat weight indices that carry the given units of ``module``.

    ``module`` is an HF module name: an MLP (``model.layers.3.mlp``; unit j = row j of gate/up
    and column j of down, or the Conv1D equivalents) or an attention block
    (``model.layers.3.self_attn``;
    unit h = head h's input slice of the output projection).
    """
    params = hf_parameters(model)
    units = torch.as_tensor(units, dtype=torch.long).reshape(-1)
    mats = {
        n[len(module) + 1 : -len(".weight")]: n
        for n in params
        if n.startswith(module + ".") and n.endswith(".weight") and params[n].ndim == 2
    }
    out: dict[str, torch.Tensor] = {}

    def rows_or_cols(name: str, along_out: bool, width: int = 1) -> torch.Tensor:
        """Entries of units on the output axis (along_out) or the input axis of ``name``."""
        shape = params[name].shape
        layout = weight_layout(model, name)  # "out_in" (nn.Linear) or "in_out" (Conv1D)
        axis = (0 if layout == "out_in" else 1) if along_out else (1 if layout == "out_in" else 0)
        k = (units[:, None] * width + torch.arange(width)[None, :]).reshape(-1)
        grid = torch.arange(shape[0] * shape[1]).reshape(shape)
        sel = grid.index_select(axis, k)
        return sel.reshape(-1).sort().values

    if re.search(r"\.mlp$", module):
        up_like = [k for k in ("gate_proj", "up_proj", "c_fc", "fc1", "w1", "w3") if k in mats]
        down_like = [k for k in ("down_proj", "c_proj", "fc2", "w2") if k in mats]
        if not down_like:
            raise ValueError(f"no down projection found under {module}")
        for k in up_like:
            out[mats[k]] = rows_or_cols(mats[k], along_out=True)
        for k in down_like:
            out[mats[k]] = rows_or_cols(mats[k], along_out=False)
    elif re.search(r"\.(self_attn|attn|attention)$", module):
        o = next((k for k in ("o_proj", "c_proj", "out_proj", "dense") if k in mats), None)
        if o is None:
            raise ValueError(f"no attention output projection found under {module}")
        cfg = getattr(model, "original_model", model).config
        n_heads = next(getattr(cfg, k) for k in _HEAD_KEYS if hasattr(cfg, k))
        layout = weight_layout(model, mats[o])
        width_in = params[mats[o]].shape[1 if layout == "out_in" else 0]
        out[mats[o]] = rows_or_cols(mats[o], along_out=False, width=width_in // n_heads)
    else:
        raise ValueError(f"{module!r} is neither an MLP nor an attention module name")
    return out


def zero_neurons(model: Any, neuron_selection: Selection) -> WeightEdit:
    """Zero whole units: MLP neurons (input rows and output column) or attention heads."""
    base = _check_fingerprint(model, neuron_selection.fingerprint, "neuron selection")
    params = hf_parameters(model)
    changes: dict[str, torch.Tensor] = {}
    for module, units in neuron_selection.indices.items():
        if units.numel() == 0:
            continue
        for name, idx in neuron_weight_entries(model, module, units).items():
            changes[name] = (
                torch.unique(torch.cat([changes[name], idx])) if name in changes else idx
            )
    edit_changes = {
        n: (i, torch.zeros(i.numel(), dtype=params[n].dtype)) for n, i in changes.items()
    }
    return WeightEdit(model, edit_changes, _unit_edit_meta("zero_neurons", base, neuron_selection))


def _unit_edit_meta(kind: str, base: str, neuron_selection: Selection) -> dict[str, Any]:
    return {
        "kind": kind,
        "model_fingerprint": base,
        "units": neuron_selection.count(),
        "mode": neuron_selection.meta.get("mode"),
    }


# --------------------------------------------------------------------------------------------------
# mean-ablation of MLP units

_DOWN_NAMES = ("down_proj", "c_proj", "fc2", "w2")
_UP_NAMES = ("gate_proj", "up_proj", "c_fc", "fc1", "w1", "w3")
_DOWN_RE = re.compile(r"\.mlp\.(" + "|".join(_DOWN_NAMES) + r")\.weight$")
_MLP_LINEAR_RE = re.compile(r"\.mlp\.(" + "|".join(_DOWN_NAMES + _UP_NAMES) + r")\.weight$")


def add_mlp_bias(model: Any) -> Any:
    """Give every MLP projection a zero bias, so that mean-ablation becomes a weight edit.

    Llama-style MLPs (Llama, SmolLM2) have no biases: replacing a unit by a constant then has no
    weight that can carry the constant. This surgery registers all-zero biases on the gate, up
    and down projections and sets ``config.mlp_bias = True``, so the model computes exactly the
    same function (adding zeros), exports as a standard HF Llama with ``mlp_bias`` and accepts
    :func:`mean_ablate_units`. Selections and scores computed before the surgery stay valid: the
    new fingerprint is recorded as an alias of the old one. Models whose MLPs already have a
    down-projection bias (GPT-2) are returned unchanged.

    Raises:
        ValueError: an edit is applied, or the architecture's config has no ``mlp_bias`` switch
            (Qwen2, Mistral, Gemma: their MLP biases are fixed off in transformers).
    """
    import torch.nn as nn

    if _stack(model):
        raise ValueError("revert the applied edits before adding MLP biases")
    params = hf_parameters(model)
    downs = [n for n in params if _DOWN_RE.search(n)]
    if downs and all(n[: -len("weight")] + "bias" in params for n in downs):
        return model
    hf = hf_model_of(model)
    if not hasattr(hf.config, "mlp_bias"):
        raise ValueError(
            f"{type(hf.config).__name__} has no mlp_bias option: its MLPs cannot carry a bias in "
            "transformers, so mean-ablation cannot be a weight edit for this architecture"
        )
    before = model_fingerprint(model)
    owner = {id(m.weight): m for m in hf.modules() if isinstance(m, nn.Linear)}
    for name, w in params.items():
        if not _MLP_LINEAR_RE.search(name):
            continue
        module = owner.get(id(w))
        if module is None:
            raise RuntimeError(f"cannot find the linear module that owns {name}")
        if module.bias is None:
            module.bias = nn.Parameter(
                torch.zeros(module.out_features, dtype=w.dtype, device=w.device),
                requires_grad=w.requires_grad,
            )
    hf.config.mlp_bias = True
    if hasattr(model, "_spin_hf_keys"):  # the HF state-dict keys now include the biases
        del model._spin_hf_keys
    after = model_fingerprint(model)  # its cache is keyed by the (now longer) parameter list
    aliases = getattr(model, "_spin_fingerprint_aliases", {})
    aliases[after] = aliases.get(before, before)
    model._spin_fingerprint_aliases = aliases
    return model


def _down_of(model: Any, module: str) -> tuple[str, str]:
    params = hf_parameters(model)
    for k in _DOWN_NAMES:
        w = f"{module}.{k}.weight"
        if w in params:
            b = f"{module}.{k}.bias"
            if b not in params:
                raise ValueError(
                    f"{w} has no bias, so a unit's mean cannot be written into the model: call "
                    "spin_interp.ablate.add_mlp_bias(model) first (Llama-style MLPs)"
                )
            return w, b
    raise ValueError(f"no MLP down projection found under {module!r}")


@torch.no_grad()
def unit_means(
    model: Any,
    examples: Sequence[Any],
    neuron_selection: Selection,
    positions: str = "all",
    format: str = "chat",
    max_len: int | None = 512,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Mean activation of each selected MLP unit over ``examples`` (e.g. the general set).

    Each example contributes the mean of the unit over its ``positions`` (``"all"`` or
    ``"response"``; read at ``blocks.L.mlp.hook_post``, the input of the down projection) and
    the examples are averaged with equal weight. Returns ``{module: means}`` with the means in
    the order of ``neuron_selection.indices[module]``.
    """
    from spin_interp.graph import candidate_units, collect_unit_activations

    acts = collect_unit_activations(
        model,
        examples,
        neuron_selection,
        positions=positions,
        format=format,
        max_len=max_len,
        progress=progress,
    ).mean(0)
    column = {(mod, u): i for i, (_, mod, u) in enumerate(candidate_units(model, neuron_selection))}
    return {
        mod: torch.stack([acts[column[(mod, int(u))]] for u in idx.tolist()])
        for mod, idx in neuron_selection.indices.items()
        if idx.numel()
    }


@torch.no_grad()
def mean_ablate_units(
    model: Any, neuron_selection: Selection, means: Mapping[str, torch.Tensor]
) -> WeightEdit:
    """An edit that replaces each selected MLP unit by a constant: its mean activation.

    Unit ``j`` of an MLP writes ``a_j * W_down[:, j]`` into the residual stream; mean-ablation
    replaces ``a_j`` by ``m_j`` for every token. As weights: column ``j`` of the down projection
    becomes zero and ``m_j * W_down[:, j]`` is added to its bias (``W[j, :]`` rows for GPT-2's
    Conv1D). The input rows (gate/up) are left alone: once the down column is zero they have no
    effect. The edit reverts bit-for-bit and exports like any :class:`WeightEdit`.

    Args:
        model: a bridge; Llama-style MLPs need :func:`add_mlp_bias` first.
        neuron_selection: MLP units (keys ``model.layers.L.mlp``).
        means: ``{module: means}`` aligned with the selection's indices, e.g. from
            :func:`unit_means` on the general set.
    """
    base = _check_fingerprint(model, neuron_selection.fingerprint, "neuron selection")
    params = hf_parameters(model)
    changes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for module, units in neuron_selection.indices.items():
        if units.numel() == 0:
            continue
        if not re.search(r"\.mlp$", module):
            raise ValueError(f"{module!r} is not an MLP module: mean-ablation is for MLP units")
        m = torch.as_tensor(means[module], dtype=torch.float64).reshape(-1)
        if m.numel() != units.numel():
            raise ValueError(f"{module}: {units.numel()} units but {m.numel()} means")
        w_name, b_name = _down_of(model, module)
        W = params[w_name].detach().to(torch.float64)
        if weight_layout(model, w_name) == "in_out":  # Conv1D: [d_mlp, d_model]
            W = W.T
        shift = W[:, units] @ m  # [d_model]
        bias = params[b_name].detach()
        new_bias = (bias.to(torch.float64) + shift).to(bias.dtype)
        cols = neuron_weight_entries(model, module, units)[w_name]
        changes[w_name] = (cols, torch.zeros(cols.numel()))
        changes[b_name] = (torch.arange(bias.numel()), new_bias.reshape(-1).cpu())
    return WeightEdit(model, changes, _unit_edit_meta("mean_ablate_units", base, neuron_selection))


# --------------------------------------------------------------------------------------------------
# sweeps


def _is_neuron_selection(model: Any, selection: Selection) -> bool:
    params = hf_parameters(model)
    return bool(selection.names()) and all(n not in params for n in selection.names())


def edit_for(model: Any, selection: Selection) -> WeightEdit:
    """``zero_neurons`` for a neuron selection (keys are modules), else ``zero_weights``."""
    if _is_neuron_selection(model, selection):
        return zero_neurons(model, selection)
    return zero_weights(model, selection)


def sweep(
    model: Any,
    a: WeightScores | None = None,
    b: WeightScores | None = None,
    general: WeightScores | None = None,
    fractions: Sequence[float] = (),
    evaluate: Callable[[Any], dict[str, Any]] | None = None,
    modes: Sequence[str] = ("paper",),
    p: float | None = None,
    random_control: bool = True,
    seed: int = 0,
    selections: Mapping[str, Selection] | None = None,
) -> Any:
    """Ablation study: for each setting, apply the edit, evaluate, revert.

    Settings are every (mode, fraction q) of :func:`select_coupled` on the scores ``a``, ``b``,
    ``general`` (``p`` defaults to ``q``, as in the paper), plus every prebuilt selection in
    ``selections`` (label -> weight or neuron Selection, e.g. from ``spin_interp.graph`` or MI
    ranking; neuron selections are applied with :func:`zero_neurons`). ``evaluate(model)`` returns
    a dict of numbers. With ``random_control`` each setting is followed by a same-count random
    selection. Returns a pandas DataFrame when pandas is installed, else a list of dicts; the
    first row is the unedited model.
    """
    if evaluate is None:
        raise ValueError("sweep needs an evaluate(model) -> dict callable")
    if not fractions and not selections:
        raise ValueError("nothing to sweep: give fractions (with scores) or selections")
    if fractions and (a is None or general is None):
        raise ValueError("fractions need the scores a and general (and b for mode='paper')")
    settings: list[tuple[str, float | None, float | None, Selection]] = []
    for mode in modes if fractions else ():
        for q in fractions:
            pp = q if p is None else p
            settings.append((mode, q, pp, select_coupled(a, b, general, p=pp, q=q, mode=mode)))
    for label, sel in (selections or {}).items():
        settings.append((label, sel.meta.get("q"), sel.meta.get("p"), sel))
    rows: list[dict[str, Any]] = [
        {"mode": "original", "q": 0.0, "p": 0.0, "entries": 0, "units": 0, **evaluate(model)}
    ]
    for label, q, pp, sel in settings:
        todo = [(label, sel)]
        if random_control:
            todo.append((f"random({label})", random_like(sel, seed=seed)))
        for name, s in todo:
            edit = edit_for(model, s)
            with edit.applied():
                row = {
                    "mode": name,
                    "q": q,
                    "p": pp,
                    "entries": edit.n_entries(),
                    "units": s.count() if _is_neuron_selection(model, s) else 0,
                    **evaluate(model),
                }
            rows.append(row)
            log.info("sweep %s", row)
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# directional edits

_WRITER_RES = {
    "attn": re.compile(r"\.(self_attn|attn|attention)\.(o_proj|c_proj|out_proj|dense)\.weight$"),
    "mlp": re.compile(r"\.mlp\.(down_proj|c_proj|fc2|fc_out|w2|dense_4h_to_h)\.weight$"),
}
# Norms applied to a block's output before it is added to the residual stream (Gemma 2/3, OLMo 2):
# they rescale each coordinate, so a direction removed from o_proj/down_proj would come back.
_POST_WRITER_NORM_RE = re.compile(r"\.(post_feedforward_layernorm|post_mlp_layernorm)\.")


def _residual_writers(model: Any, layer: int | None = None, kinds: str = "all") -> list[str]:
    """HF weight names of the matrices that write into the residual stream, layers <= ``layer``.

    ``kinds``: ``"attn"`` (attention output projections), ``"mlp"`` (MLP down projections) or
    ``"all"`` (both). Sorted by layer, attention before MLP.
    """
    if kinds not in ("all", "attn", "mlp"):
        raise ValueError(f"writers must be 'all', 'attn', 'mlp' or a list of names, got {kinds!r}")
    wanted = ("attn", "mlp") if kinds == "all" else (kinds,)
    found: list[tuple[int, int, str]] = []
    for name in hf_parameters(model):
        lay = layer_of(name)
        if lay is None or (layer is not None and lay > layer):
            continue
        for rank, kind in enumerate(wanted):
            if _WRITER_RES[kind].search(name):
                found.append((lay, rank, name))
                break
    if not found:
        raise ValueError(
            f"no residual-stream writers ({kinds}) found in layers <= {layer}; pass writers= as a "
            "list of HF weight names (attention output / MLP down projections)"
        )
    return [n for _, _, n in sorted(found)]


def _orthonormal_basis(directions: torch.Tensor, d_model: int) -> torch.Tensor:
    """Orthonormal basis ``Q`` [d_model, r] (float64) of the span of the rows of ``directions``."""
    dirs = torch.as_tensor(directions).detach()
    if dirs.ndim == 1:
        dirs = dirs[None]
    if dirs.ndim != 2 or dirs.shape[0] == 0:
        raise ValueError(f"directions must be a [n, d_model] tensor, got shape {tuple(dirs.shape)}")
    if dirs.shape[1] != d_model:
        raise ValueError(
            f"directions have width {dirs.shape[1]} but the residual stream has d_model={d_model}"
        )
    dirs = dirs.to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(dirs).all():
        raise ValueError("directions contain NaN or inf")
    if bool((dirs.norm(dim=1) == 0).any()):
        raise ValueError("a direction is the zero vector; drop it before projecting out")
    q, r = torch.linalg.qr(dirs.T, mode="reduced")
    diag = r.diagonal().abs()
    if bool((diag <= 1e-10 * diag.max()).any()):
        # linearly dependent directions: QR's extra columns would point outside their span
        u, s, _ = torch.linalg.svd(dirs.T, full_matrices=False)
        keep = s > 1e-10 * s[0]
        log.warning(
            "the %d directions span only %d dimensions; projecting out that span",
            dirs.shape[0],
            int(keep.sum()),
        )
        q = u[:, keep]
    if q.shape[1] >= d_model:
        raise ValueError(
            f"the directions span all {d_model} residual dimensions: projecting them out would "
            "zero every writer"
        )
    return q


def project_out(
    model: Any,
    directions: torch.Tensor,
    layer: int | None = None,
    writers: str | Sequence[str] = "all",
    include_bias: bool = True,
) -> WeightEdit:
    """An edit that removes residual-stream directions from the weights that write into it.

    The rows of ``directions`` ([n, d_model], e.g. SAE decoder directions) are orthonormalised
    (QR, in float64) into ``Q`` and every writer is replaced by its projection onto the orthogonal
    complement: ``W <- (I - Q Q^T) W`` for an nn.Linear weight ([d_model, in]),
    ``W <- W (I - Q Q^T)`` for a GPT-2 Conv1D weight ([in, d_model]) and ``b <- (I - Q Q^T) b`` for
    the writer's bias when it has one (``include_bias``). After the edit the writers' outputs have
    no component along the directions (up to rounding), whatever their input.

    Args:
        model: a bridge from :func:`spin_interp.load_model` (or a plain HF causal LM).
        directions: [n, d_model] or [d_model]; need not be normalised or orthogonal.
        layer: edit writers of decoder layers ``<= layer`` (``None``: every layer). For an SAE at
            ``blocks.L.hook_resid_post`` that is ``L``.
        writers: ``"all"`` (attention output and MLP down projections), ``"attn"``, ``"mlp"``, or a
            list of HF weight names (``model.layers.3.mlp.down_proj.weight``); ``layer`` filters
            the list too.
        include_bias: also project the writers' biases.

    The token embedding also writes into the residual stream and is left alone, so the residual
    stream at the hook keeps whatever component along the directions the embeddings put there.
    The edit stores every entry of each touched matrix (indices and new values), so it reverts
    bit-for-bit and exports like any other :class:`WeightEdit`; it is as large as the matrices
    it touches.
    """
    params = hf_parameters(model)
    post_norms = sorted({m.group(1) for n in params if (m := _POST_WRITER_NORM_RE.search(n))})
    if post_norms:
        raise ValueError(
            f"this architecture normalises block outputs after their projections ({post_norms[0]}),"
            " so editing o_proj/down_proj cannot remove a residual direction; project_out does "
            "not support it"
        )
    if isinstance(writers, str):
        names = _residual_writers(model, layer, writers)
    else:
        names = list(dict.fromkeys(writers))
        unknown = [n for n in names if n not in params]
        if unknown:
            raise ValueError(
                f"these writers are not weights of the model: {unknown[:5]}; names look like "
                f"{_residual_writers(model, None, 'all')[:2]}"
            )
        bad = [n for n in names if params[n].ndim != 2 or not n.endswith(".weight")]
        if bad:
            raise ValueError(f"writers must be 2-D '.weight' matrices, got {bad[:5]}")
        if layer is not None:
            names = [n for n in names if (lay := layer_of(n)) is None or lay <= layer]
        if not names:
            raise ValueError(f"no writer left in layers <= {layer}")
    cfg = getattr(getattr(model, "original_model", model), "config", None)
    d_model = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None)
    if d_model is None:
        first = params[names[0]]
        d_model = first.shape[0 if weight_layout(model, names[0]) == "out_in" else 1]
    n_directions = 1 if torch.as_tensor(directions).ndim == 1 else len(directions)
    q = _orthonormal_basis(directions, int(d_model))
    stack = _stack(model)
    if stack:
        log.warning(
            "project_out is computed on a model with %d edit(s) applied: its new values include "
            "those edits",
            len(stack),
        )
    base = base_fingerprint(model)
    changes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad():
        for name in names:
            w = params[name].detach()
            layout = weight_layout(model, name)
            axis = 0 if layout == "out_in" else 1
            if w.shape[axis] != q.shape[0]:
                raise ValueError(
                    f"{name} ({layout} layout, shape {tuple(w.shape)}) does not write a "
                    f"{q.shape[0]}-dimensional residual stream"
                )
            qd = q.to(w.device)
            w64 = w.double()
            new = w64 - qd @ (qd.T @ w64) if axis == 0 else w64 - (w64 @ qd) @ qd.T
            changes[name] = (torch.arange(w.numel()), new.to(w.dtype).reshape(-1).cpu())
            bias = name[: -len("weight")] + "bias"
            if include_bias and bias in params:
                b = params[bias].detach()
                b64 = b.double()
                new_b = b64 - qd @ (qd.T @ b64)
                changes[bias] = (torch.arange(b.numel()), new_b.to(b.dtype).cpu())
    meta = {
        "kind": "project_out",
        "model_fingerprint": base,
        "layer": layer,
        "writers": names,
        "n_directions": n_directions,
        "rank": int(q.shape[1]),
        "include_bias": include_bias,
        "edits_below": len(stack),
    }
    return WeightEdit(model, changes, meta)
