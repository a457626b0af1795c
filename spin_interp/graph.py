"""Graphs of candidate MLP units: who writes into whom, who fires with whom, which groups to edit.

A node is one MLP unit (neuron) of a decoder layer, named ``"L{layer}.mlp.{unit}"`` (for example
``"L3.mlp.17"``), with the attributes ``layer``, ``module`` (the HF module name, e.g.
``model.layers.3.mlp``) and ``unit``, plus any behaviour scores (``fairness``, ``privacy``,
``general``) and mutual-information values that were passed in.

Two kinds of edge:

- ``edges="weights"`` (a :class:`networkx.DiGraph`): the *virtual weight* from an earlier unit ``i``
  to a later unit ``j``. Unit ``i`` writes its activation along its output direction ``o_i`` (its
  column of the down projection, a vector in the residual stream); unit ``j`` reads the residual
  stream through its input directions (its rows of the gate and up projections). The edge weight
  is the cosine ``cos(o_i, r_j)``; the plain dot product ``o_i . r_j`` is kept as ``dot``. With
  two read directions (gate and up) the one with the larger ``|cos|`` is used (``read="max"``).
  Edges only go from a lower to a higher layer: units of one layer cannot talk to each other.
- ``edges="coactivation"`` (a :class:`networkx.Graph`): the Pearson correlation, over a pool of
  prompts, of the units' mean activations (``blocks.L.mlp.hook_post`` of the bridge).

An edge is kept when ``|weight| >= threshold``. All pairs are scored with block matrix products of
normalised vectors, never a Python loop over pairs.

The analysis helpers (components, Louvain communities, centrality, layer profile, summaries) read a
graph; :func:`select_by_graph` turns a graph into a neuron :class:`~spin_interp.select.Selection`
that :func:`spin_interp.ablate.zero_neurons` applies, and :func:`to_weight_selection` gives the
same units as weight entries for :func:`spin_interp.ablate.zero_weights`. Nothing here edits a
model.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch
from jaxtyping import Float

from spin_interp._io import atomic_write, library_version
from spin_interp.attribution import WeightScores, layer_of, neuron_modules
from spin_interp.models import (
    encode_examples,
    hf_model_of,
    hf_parameters,
    weight_layout,
)
from spin_interp.select import Selection

log = logging.getLogger(__name__)

__all__ = [
    "EDGE_KINDS",
    "POLICIES",
    "annotate_graph",
    "build_neuron_graph",
    "candidate_units",
    "centrality",
    "collect_unit_activations",
    "communities",
    "components",
    "draw_graph",
    "graph_summary",
    "layer_profile",
    "load_graph",
    "node_id",
    "save_graph",
    "select_by_graph",
    "summary",
    "to_weight_selection",
]

EDGE_KINDS = ("weights", "coactivation")
POLICIES = ("hubs", "community", "coupled_core")
READS = ("max", "gate", "up")
POSITIONS = ("response", "all")
DEFAULT_THRESHOLD = {"weights": 0.2, "coactivation": 0.5}
GRAPH_FORMAT = "spin_interp.graph"
GRAPH_FORMAT_VERSION = 1

# names of an MLP's matrices under its module (same families as spin_interp.ablate)
_GATE = ("gate_proj", "w1")
_UP = ("up_proj", "c_fc", "fc1", "w3", "fc_in")
_DOWN = ("down_proj", "c_proj", "fc2", "w2", "fc_out")
# the norm applied to the MLP input, relative to the layer prefix
_MLP_NORMS = ("post_attention_layernorm", "pre_feedforward_layernorm", "ln_2")
_NODE_RE = re.compile(r"^L(\d+)\.mlp\.(\d+)$")
# pair blocks are cut so that one block holds about this many scores
_BLOCK_ELEMENTS = 4_000_000


def node_id(layer: int, unit: int) -> str:
    """The graph's name for MLP unit ``unit`` of layer ``layer``: ``"L{layer}.mlp.{unit}"``."""
    return f"L{int(layer)}.mlp.{int(unit)}"


def _node_key(G: nx.Graph, node: Any) -> tuple[int, int, str]:
    """Sort key (layer, unit) of a node, falling back on its name."""
    data = G.nodes[node]
    if "layer" in data and "unit" in data:
        return int(data["layer"]), int(data["unit"]), str(node)
    m = _NODE_RE.match(str(node))
    if m:
        return int(m.group(1)), int(m.group(2)), str(node)
    return 1 << 30, 0, str(node)


# --------------------------------------------------------------------------------------------------
# the MLPs of a model and the candidate units


@dataclass(frozen=True)
class _Mlp:
    """One MLP block: module name, layer, width and where its unit directions live."""

    module: str
    layer: int
    d_mlp: int
    down: str
    reads: dict[str, str]  # "gate"/"up" -> weight name


def _mlps(model: Any) -> dict[str, _Mlp]:
    """Every MLP block of the model, keyed by HF module name, in layer order."""
    params = hf_parameters(model)
    out: dict[str, _Mlp] = {}
    for module in neuron_modules(model, "mlp"):
        names = {
            n[len(module) + 1 : -len(".weight")]: n
            for n in params
            if n.startswith(module + ".") and n.endswith(".weight") and params[n].ndim == 2
        }
        down = next((names[k] for k in _DOWN if k in names), None)
        if down is None:
            raise ValueError(f"no down projection found under {module}; cannot build unit graph")
        reads: dict[str, str] = {}
        gate = next((names[k] for k in _GATE if k in names), None)
        up = next((names[k] for k in _UP if k in names), None)
        if gate is not None:
            reads["gate"] = gate
        if up is not None:
            reads["up"] = up
        if not reads:
            raise ValueError(f"no gate/up projection found under {module}")
        axis = 1 if weight_layout(model, down) == "out_in" else 0
        layer = layer_of(module + ".")
        assert layer is not None
        out[module] = _Mlp(module, layer, int(params[down].shape[axis]), down, reads)
    if not out:
        raise ValueError("this model has no MLP blocks that spin_interp recognises")
    return out


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small acyclic objects (edge dicts).

    Creating a million edge dicts triggers repeated full collections that scan the whole heap
    (measured: about 40% of a 1.4 M-edge build); the objects hold no cycles, so nothing is lost.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def candidate_units(
    model: Any, candidates: Selection | Iterable[tuple[int | str, int]]
) -> list[tuple[int, str, int]]:
    """The candidate units as ``(layer, module, unit)``, sorted by layer then unit, no repeats.

    This is the node order of :func:`build_neuron_graph` and the column order of
    :func:`collect_unit_activations`.

    Args:
        model: the bridge (or HF model) the units belong to.
        candidates: a neuron :class:`~spin_interp.select.Selection` (keys are MLP module names such
            as ``model.layers.3.mlp``, indices are unit ids), or pairs ``(layer, unit)`` or
            ``(module, unit)``.

    Raises:
        ValueError: empty candidates, a weight-entry selection, an unknown module or layer, or a
            unit outside the MLP's width.
    """
    mlps = _mlps(model)
    by_layer = {m.layer: m for m in mlps.values()}
    pairs: set[tuple[int, int]] = set()
    if isinstance(candidates, Selection):
        for name, idx in candidates.indices.items():
            if name not in mlps:
                if name.endswith((".weight", ".bias")):
                    raise ValueError(
                        f"{name!r} is a weight matrix: the graph needs a NEURON selection keyed by "
                        "MLP module names (from score_neurons / select_coupled on neuron scores), "
                        "not a weight-entry selection"
                    )
                raise ValueError(
                    f"{name!r} is not an MLP module of this model; MLP modules are named like "
                    f"{list(mlps)[:2]}"
                )
            mlp = mlps[name]
            shape = tuple(candidates.shapes[name])
            if shape != (mlp.d_mlp,):
                raise ValueError(
                    f"{name}: the selection has shape {shape} but this MLP has {mlp.d_mlp} units"
                )
            pairs.update((mlp.layer, int(u)) for u in idx.tolist())
    elif isinstance(candidates, (str, bytes)) or not isinstance(candidates, Iterable):
        raise TypeError(
            "candidates must be a neuron Selection or an iterable of (layer, unit) pairs, "
            f"got {type(candidates).__name__}"
        )
    else:
        for item in candidates:
            if not isinstance(item, Sequence) or isinstance(item, str) or len(item) != 2:
                raise ValueError(
                    f"candidate {item!r} is not a (layer, unit) or (module, unit) pair"
                )
            where, unit = item
            if isinstance(where, str):
                if where not in mlps:
                    raise ValueError(
                        f"candidate {item!r}: {where!r} is not an MLP module of this model; "
                        f"modules are named like {list(mlps)[:2]}"
                    )
                mlp = mlps[where]
            elif _is_int(where):
                if int(where) not in by_layer:
                    raise ValueError(
                        f"candidate {item!r}: layer {where} does not exist (layers "
                        f"{min(by_layer)}..{max(by_layer)})"
                    )
                mlp = by_layer[int(where)]
            else:
                raise ValueError(f"candidate {item!r}: the layer must be an int or a module name")
            if not _is_int(unit) or not 0 <= int(unit) < mlp.d_mlp:
                raise ValueError(
                    f"candidate {item!r}: unit must be an int in [0, {mlp.d_mlp}) for {mlp.module}"
                )
            pairs.add((mlp.layer, int(unit)))
    for layer, unit in pairs:
        if not 0 <= unit < by_layer[layer].d_mlp:  # Selection indices are range-checked already
            raise ValueError(f"unit {unit} is outside layer {layer}'s {by_layer[layer].d_mlp}")
    if not pairs:
        raise ValueError(
            "the candidate set is empty: pass at least one (layer, unit) or a non-empty neuron "
            "selection"
        )
    return [(layer, by_layer[layer].module, unit) for layer, unit in sorted(pairs)]


# --------------------------------------------------------------------------------------------------
# activations


def _hook_name(layer: int) -> str:
    return f"blocks.{layer}.mlp.hook_post"


@torch.no_grad()
def collect_unit_activations(
    model: Any,
    examples: Iterable[Any],
    candidates: Selection | Iterable[tuple[int | str, int]],
    positions: str = "response",
    format: str = "chat",
    max_len: int | None = 512,
    progress: bool = True,
) -> Float[torch.Tensor, "n_prompts n_candidates"]:
    """Mean activation of each candidate unit on each prompt, read from the bridge's cache.

    One forward pass per example with ``run_with_cache(names_filter=...)`` over the hooks
    ``blocks.L.mlp.hook_post`` of the layers that hold candidates (for Llama-style MLPs unit ``j``
    is ``act(gate_j) * up_j``; for GPT-2 it is ``gelu(fc_j)``).

    Args:
        model: a :class:`TransformerBridge` from :func:`spin_interp.load_model`.
        examples: ``si.data.Example`` objects or ``(input_ids, labels)`` pairs (-100 on prompt
            positions).
        candidates: as in :func:`candidate_units`; the columns follow that order.
        positions: ``"response"`` averages over the positions whose token belongs to the response
            (label not -100, as :func:`spin_interp.attribution.score_neurons` does); ``"all"``
            averages over every position.
        format, max_len: tokenisation (see :func:`spin_interp.models.encode_example`).
        progress: show a progress bar.

    Returns:
        A float32 tensor ``[n_prompts, n_candidates]``.
    """
    if positions not in POSITIONS:
        raise ValueError(f"unknown positions {positions!r}; choose one of {POSITIONS}")
    if not hasattr(model, "run_with_cache") or not hasattr(model, "hook_dict"):
        raise TypeError("collect_unit_activations needs a TransformerBridge (si.load_model)")
    units = candidate_units(model, candidates)
    layers = sorted({u[0] for u in units})
    hooks = {layer: _hook_name(layer) for layer in layers}
    missing = [h for h in hooks.values() if h not in model.hook_dict]
    if missing:
        raise ValueError(f"this bridge has no hook {missing[0]}")
    encoded, skipped = encode_examples(model, examples, format=format, max_len=max_len)
    if not encoded:
        raise ValueError(
            "no examples to run (the pool is empty or every example was truncated away)"
        )
    if skipped:
        log.warning("%d examples had no response token left and were skipped", skipped)
    columns = {
        layer: torch.tensor([u[2] for u in units if u[0] == layer], dtype=torch.long)
        for layer in layers
    }
    wanted = set(hooks.values())
    device = next(hf_model_of(model).parameters()).device
    rows = []
    was_training = model.training
    model.eval()
    it: Iterable[Any] = encoded
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(encoded, total=len(encoded), desc="activations", leave=False)
    try:
        for enc in it:
            ids = enc.input_ids[None].to(device)
            _, cache = model.run_with_cache(ids, names_filter=lambda name: name in wanted)
            if positions == "response":
                mask = (enc.labels != -100).to(device)
            else:
                mask = torch.ones_like(enc.labels, dtype=torch.bool, device=device)
            parts = []
            for layer in layers:
                act = cache[hooks[layer]][0][mask].float()  # [pos, d_mlp]
                parts.append(act.mean(0)[columns[layer].to(device)])
            rows.append(torch.cat(parts).cpu())
            del cache
    finally:
        model.train(was_training)
    return torch.stack(rows)


# --------------------------------------------------------------------------------------------------
# building


def _unit_vectors(
    model: Any,
    mlp: _Mlp,
    units: torch.Tensor,
    reads: Sequence[str],
    fold_norm: bool,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Output directions ``[n, d_model]`` and input directions per read ``[n, d_model]``."""
    params = hf_parameters(model)
    w = params[mlp.down].detach()
    out = (w[:, units].T if weight_layout(model, mlp.down) == "out_in" else w[units, :]).to(dtype)
    ins: dict[str, torch.Tensor] = {}
    scale = _mlp_input_scale(model, mlp).to(dtype) if fold_norm else None
    for r in reads:
        name = mlp.reads[r]
        w = params[name].detach()
        rows = (w[units, :] if weight_layout(model, name) == "out_in" else w[:, units].T).to(dtype)
        ins[r] = rows * scale[None, :] if scale is not None else rows
    return out.contiguous(), ins


def _mlp_input_scale(model: Any, mlp: _Mlp) -> torch.Tensor:
    """The per-dimension gain of the norm in front of an MLP (Gemma's RMSNorm uses ``1 + w``)."""
    params = hf_parameters(model)
    prefix = mlp.module.rsplit(".", 1)[0]
    for n in _MLP_NORMS:
        name = f"{prefix}.{n}.weight"
        if name in params:
            gain = params[name].detach().float()
            model_type = getattr(hf_model_of(model).config, "model_type", "")
            return 1.0 + gain if str(model_type).startswith("gemma") else gain
    raise ValueError(
        f"fold_norm=True but no MLP input norm was found in front of {mlp.module} "
        f"(looked for {', '.join(_MLP_NORMS)}); use fold_norm=False"
    )


def _normalise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows divided by their norms (a zero row stays zero) and the norms."""
    norms = x.norm(dim=1)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    return x / safe[:, None], norms


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if not (0.0 <= float(threshold) <= 1.0):
        raise ValueError(f"threshold must be in [0, 1] (a |cosine| or |r|), got {threshold}")
    return float(threshold)


class _EdgeBudget:
    def __init__(self, max_edges: int | None, threshold: float, kind: str) -> None:
        self.max_edges, self.threshold, self.kind, self.n = max_edges, threshold, kind, 0

    def add(self, k: int) -> None:
        self.n += k
        if self.max_edges is not None and self.n > self.max_edges:
            raise ValueError(
                f"threshold={self.threshold} keeps more than max_edges={self.max_edges} "
                f"{self.kind} edges; raise the threshold, use fewer candidates, or pass "
                "max_edges=None to allow it"
            )


def _weight_edges(
    model: Any,
    units: list[tuple[int, str, int]],
    mlps: dict[str, _Mlp],
    read: str,
    fold_norm: bool,
    threshold: float,
    dtype: torch.dtype,
    budget: _EdgeBudget,
) -> list[tuple[int, int, dict[str, Any]]]:
    """Virtual-weight edges (source index, target index, attributes) over all layer pairs."""
    if read == "max":
        reads = [r for r in ("gate", "up") if all(r in m.reads for m in mlps.values())]
    else:
        missing = [m.module for m in mlps.values() if read not in m.reads]
        if missing:
            raise ValueError(
                f"read={read!r}: {missing[0]} has no {read} projection; use read='max' or 'up'"
            )
        reads = [read]
    if not reads:
        raise ValueError("the MLPs share no read direction (gate or up)")
    layers = sorted({u[0] for u in units})
    outs, ins = [], {r: [] for r in reads}
    starts = {}
    pos = 0
    for layer in layers:
        sub = torch.tensor([u[2] for u in units if u[0] == layer], dtype=torch.long)
        mlp = mlps[units[pos][1]]
        o, i = _unit_vectors(model, mlp, sub, reads, fold_norm, dtype)
        outs.append(o)
        for r in reads:
            ins[r].append(i[r])
        starts[layer] = pos
        pos += sub.numel()
    o_hat, o_norm = _normalise(torch.cat(outs))
    r_hat, r_norm = {}, {}
    for r in reads:
        r_hat[r], r_norm[r] = _normalise(torch.cat(ins[r]))
    n_zero = int((o_norm == 0).sum()) + sum(int((v == 0).sum()) for v in r_norm.values())
    if n_zero:
        log.warning("%d unit directions are all zero (edited units?); they get no edges", n_zero)
    edges: list[tuple[int, int, dict[str, Any]]] = []
    n = len(units)
    for li, layer in enumerate(layers[:-1]):
        src0 = starts[layer]
        src1 = starts[layers[li + 1]]
        tgt0 = src1  # every unit of a later layer
        width = n - tgt0
        step = max(1, _BLOCK_ELEMENTS // max(width, 1))
        for a in range(src0, src1, step):
            b = min(a + step, src1)
            cos = {r: o_hat[a:b] @ r_hat[r][tgt0:].T for r in reads}
            keep = cos[reads[0]].abs() >= threshold
            for r in reads[1:]:
                keep |= cos[r].abs() >= threshold
            ii, jj = torch.nonzero(keep, as_tuple=True)
            del keep
            budget.add(int(ii.numel()))
            if not ii.numel():
                continue
            gi, gj = ii + a, jj + tgt0
            src, tgt = gi.tolist(), gj.tolist()
            if len(reads) == 2:
                cg, cu = cos["gate"][ii, jj], cos["up"][ii, jj]
                use_up = cu.abs() > cg.abs()
                w = torch.where(use_up, cu, cg).clamp(-1.0, 1.0)
                dot = w * o_norm[gi] * torch.where(use_up, r_norm["up"][gj], r_norm["gate"][gj])
                which = ["up" if u else "gate" for u in use_up.tolist()]
                cols = zip(
                    src, tgt, w.tolist(), dot.tolist(), which, cg.tolist(), cu.tolist(), strict=True
                )
                edges.extend(
                    (
                        s,
                        t,
                        {
                            "weight": x,
                            "abs_weight": abs(x),
                            "dot": d,
                            "read": rd,
                            "cos_gate": g,
                            "cos_up": c,
                        },
                    )
                    for s, t, x, d, rd, g, c in cols
                )
            else:
                r = reads[0]
                w = cos[r][ii, jj].clamp(-1.0, 1.0)
                dot = w * o_norm[gi] * r_norm[r][gj]
                edges.extend(
                    (s, t, {"weight": x, "abs_weight": abs(x), "dot": d, "read": r})
                    for s, t, x, d in zip(src, tgt, w.tolist(), dot.tolist(), strict=True)
                )
    return edges


def _coactivation_edges(
    activations: torch.Tensor, threshold: float, budget: _EdgeBudget
) -> list[tuple[int, int, dict[str, Any]]]:
    """Pearson-correlation edges between every pair of columns (float64, upper triangle)."""
    x = activations.detach().to(torch.float64)
    z = x - x.mean(0, keepdim=True)
    zh, norms = _normalise(z.T.contiguous())  # [n, n_prompts]
    flat = int((norms == 0).sum())
    if flat:
        log.warning(
            "%d units have the same activation on every prompt (no correlation defined); they "
            "get no coactivation edges",
            flat,
        )
    n = zh.shape[0]
    edges: list[tuple[int, int, dict[str, Any]]] = []
    step = max(1, _BLOCK_ELEMENTS // max(n, 1))
    for a in range(0, n, step):
        b = min(a + step, n)
        r = (zh[a:b] @ zh[a:].T).clamp(-1.0, 1.0)  # rows a..b against columns a..n
        rows = torch.arange(a, b, device=r.device)[:, None]
        cols = torch.arange(a, n, device=r.device)[None, :]
        keep = (r.abs() >= threshold) & (cols > rows)
        ii, jj = torch.nonzero(keep, as_tuple=True)
        budget.add(int(ii.numel()))
        if not ii.numel():
            continue
        edges.extend(
            (s, t, {"weight": v, "abs_weight": abs(v)})
            for s, t, v in zip(
                (ii + a).tolist(), (jj + a).tolist(), r[ii, jj].tolist(), strict=True
            )
        )
    return edges


def _neuron_scores(
    scores: Mapping[str, WeightScores] | None, mlps: dict[str, _Mlp]
) -> dict[str, WeightScores]:
    if scores is None:
        return {}
    if not isinstance(scores, Mapping):
        raise TypeError(
            'scores must be a dict like {"fairness": s_f, "privacy": s_p, "general": s_g}'
        )
    out = {}
    for key, s in scores.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"score name {key!r} must be a plain identifier (an attribute name)")
        if s is None:
            continue
        if not isinstance(s, WeightScores):
            raise TypeError(f"scores[{key!r}] must be WeightScores, got {type(s).__name__}")
        if not s.dense:
            raise ValueError(f"scores[{key!r}] are sparse; neuron scores (score_neurons) are dense")
        for module, mlp in mlps.items():
            if module not in s:
                weight_like = [n for n in s.names() if n.endswith(".weight")]
                hint = (
                    " (these are weight-entry scores: use spin_interp.score_neurons)"
                    if weight_like
                    else ""
                )
                raise ValueError(f"scores[{key!r}] has no entry for {module}{hint}")
            if tuple(s.shapes[module]) != (mlp.d_mlp,):
                raise ValueError(
                    f"scores[{key!r}][{module}] has shape {tuple(s.shapes[module])}, expected "
                    f"({mlp.d_mlp},): pass neuron scores of the MLP units"
                )
        out[key] = s
    fps = {s.fingerprint for s in out.values() if s.fingerprint is not None}
    if len(fps) > 1:
        raise ValueError(
            f"the scores come from different models (fingerprints {sorted(fps)}); score every "
            "dataset on the same model"
        )
    return out


def _mi_values(mi: Mapping[Any, float] | None, nodes: list[str]) -> dict[str, float]:
    if not mi:
        return {}
    known = set(nodes)
    out = {}
    for key, value in mi.items():
        if isinstance(key, tuple) and len(key) == 2 and _is_int(key[0]) and _is_int(key[1]):
            name = node_id(key[0], key[1])
        else:
            name = str(key)
        if name not in known:
            raise ValueError(
                f"mi has a value for {key!r}, which is not a candidate node (nodes look like "
                f"{nodes[:2]})"
            )
        out[name] = float(value)
    return out


def build_neuron_graph(
    model: Any,
    candidates: Selection | Iterable[tuple[int | str, int]],
    *,
    scores: Mapping[str, WeightScores] | None = None,
    edges: str = "weights",
    threshold: float | None = None,
    activations: torch.Tensor | np.ndarray | None = None,
    examples: Iterable[Any] | None = None,
    mi: Mapping[Any, float] | None = None,
    read: str = "max",
    fold_norm: bool = False,
    positions: str = "response",
    max_edges: int | None = 2_000_000,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> nx.DiGraph | nx.Graph:
    """Build the graph of candidate MLP units.

    Args:
        model: the bridge (or HF model) the candidates belong to.
        candidates: a neuron :class:`~spin_interp.select.Selection` or ``(layer, unit)`` pairs.
        scores: neuron scores per behaviour, e.g. ``{"fairness": s_f, "privacy": s_p,
            "general": s_g}`` from :func:`spin_interp.score_neurons`; each becomes a node
            attribute of that name. They must come from this model (same fingerprint).
        edges: ``"weights"`` (virtual weights, directed from the earlier to the later layer) or
            ``"coactivation"`` (Pearson correlation of unit activations, undirected).
        threshold: keep edges with ``|weight| >= threshold``; defaults to 0.2 for ``weights``
            and 0.5 for ``coactivation``.
        activations: for ``coactivation``, a ``[n_prompts, n_candidates]`` matrix whose columns
            follow :func:`candidate_units` (e.g. from :func:`collect_unit_activations`).
        examples: for ``coactivation`` without ``activations``: a prompt pool to run.
        mi: optional mutual-information value per node (keys ``"L3.mlp.17"`` or ``(3, 17)``).
        read: which input direction of the later unit is compared: ``"max"`` (of gate and up, the
            larger ``|cos|``), ``"gate"`` or ``"up"`` (GPT-2's ``c_fc`` counts as ``up``).
        fold_norm: multiply the read directions by the gain of the norm in front of the MLP
            (``post_attention_layernorm``/``ln_2``), so the cosine is taken in the space the unit
            actually reads. Off by default: the plain weights are compared.
        positions: for collected activations: ``"response"`` or ``"all"`` positions.
        max_edges: refuse to build more edges than this (a too-low threshold on many candidates
            makes a dense graph that networkx holds badly); ``None`` for no limit.
        dtype: precision of the virtual-weight products (float32; float64 for exact checks).
        progress: progress bar while collecting activations.

    Returns:
        A :class:`networkx.DiGraph` (``weights``) or :class:`networkx.Graph` (``coactivation``).
        Graph attributes: ``edges``, ``threshold``, ``model_fingerprint``, ``shapes`` (module ->
        number of units, for every MLP of the model), ``scores`` (attribute names) and the
        options used. Edge attributes: ``weight`` (signed cosine or r), ``abs_weight``; for
        ``weights`` also ``dot``, ``read`` and, with two reads, ``cos_gate`` and ``cos_up``.
    """
    if edges not in EDGE_KINDS:
        raise ValueError(f"unknown edges kind {edges!r}; choose one of {EDGE_KINDS}")
    if read not in READS:
        raise ValueError(f"unknown read {read!r}; choose one of {READS}")
    threshold = _check_threshold(DEFAULT_THRESHOLD[edges] if threshold is None else threshold)
    mlps = _mlps(model)
    units = candidate_units(model, candidates)
    nodes = [node_id(layer, unit) for layer, _, unit in units]
    neuron_scores = _neuron_scores(scores, mlps)
    mi_values = _mi_values(mi, nodes)
    from spin_interp.ablate import base_fingerprint

    fingerprint = base_fingerprint(model)
    scored_on = next((s.fingerprint for s in neuron_scores.values() if s.fingerprint), None)
    if scored_on is not None and scored_on != fingerprint:
        raise ValueError(
            f"the scores were computed on model {scored_on}, but this model is {fingerprint}: "
            "score the neurons of this model (score_neurons) before building its graph"
        )
    budget = _EdgeBudget(max_edges, threshold, edges)
    info: dict[str, Any] = {}
    if edges == "weights":
        if activations is not None or examples is not None:
            raise ValueError("activations/examples are for edges='coactivation', not 'weights'")
        with _gc_paused():
            pairs = _weight_edges(model, units, mlps, read, fold_norm, threshold, dtype, budget)
        info.update(read=read, fold_norm=fold_norm)
        G: nx.Graph = nx.DiGraph()
    else:
        if activations is None:
            if examples is None:
                raise ValueError(
                    "edges='coactivation' needs activations ([n_prompts, n_candidates], see "
                    "collect_unit_activations) or examples (a prompt pool to run)"
                )
            activations = collect_unit_activations(
                model, examples, candidates, positions=positions, progress=progress
            )
            info["positions"] = positions
        acts = torch.as_tensor(activations)
        if acts.ndim != 2 or acts.shape[1] != len(units):
            raise ValueError(
                f"activations must be [n_prompts, {len(units)}] (one column per candidate, in "
                f"candidate_units order), got {tuple(acts.shape)}"
            )
        if acts.shape[0] < 3:
            raise ValueError(f"need at least 3 prompts for a correlation, got {acts.shape[0]}")
        if not torch.isfinite(acts).all():
            raise ValueError("activations contain NaN or inf")
        with _gc_paused():
            pairs = _coactivation_edges(acts, threshold, budget)
        info["n_prompts"] = int(acts.shape[0])
        G = nx.Graph()
    G.graph.update(
        format=GRAPH_FORMAT,
        format_version=GRAPH_FORMAT_VERSION,
        library_version=library_version(),
        edges=edges,
        threshold=threshold,
        model_fingerprint=fingerprint,
        shapes={m.module: m.d_mlp for m in mlps.values()},
        scores=sorted(neuron_scores),
        has_mi=bool(mi_values),
        **info,
    )
    values = {k: {} for k in neuron_scores}
    for key, s in neuron_scores.items():
        for module in {u[1] for u in units}:
            values[key][module] = s[module].detach().double().cpu().numpy()
    for name, (layer, module, unit) in zip(nodes, units, strict=True):
        attrs: dict[str, Any] = {"layer": layer, "module": module, "unit": unit}
        for key in neuron_scores:
            attrs[key] = float(values[key][module][unit])
        if name in mi_values:
            attrs["mi"] = mi_values[name]
        G.add_node(name, **attrs)
    with _gc_paused():
        G.add_edges_from((nodes[s], nodes[t], a) for s, t, a in pairs)
    del pairs
    log.info(
        "neuron graph (%s, |w| >= %g): %d nodes, %d edges",
        edges,
        threshold,
        G.number_of_nodes(),
        G.number_of_edges(),
    )
    return G


# --------------------------------------------------------------------------------------------------
# analysis


def _sorted_nodes(G: nx.Graph) -> list[Any]:
    return sorted(G.nodes, key=lambda n: _node_key(G, n))


def _abs_undirected(G: nx.Graph) -> nx.Graph:
    """The undirected graph with ``w = |weight|`` (summed over both directions), nodes in order."""
    H = nx.Graph()
    H.add_nodes_from(_sorted_nodes(G))
    for u, v, d in G.edges(data=True):
        w = abs(float(d.get("weight", 1.0)))
        if H.has_edge(u, v):
            H[u][v]["w"] += w
        else:
            H.add_edge(u, v, w=w)
    return H


def _order_groups(G: nx.Graph, groups: Iterable[Iterable[Any]]) -> list[set[Any]]:
    out = [set(g) for g in groups]
    return sorted(out, key=lambda g: (-len(g), min(_node_key(G, n) for n in g)))


def components(G: nx.Graph) -> list[set[Any]]:
    """Connected components (weakly connected for a directed graph), largest first."""
    comps = nx.weakly_connected_components(G) if G.is_directed() else nx.connected_components(G)
    return _order_groups(G, comps)


def communities(G: nx.Graph, seed: int = 0, resolution: float = 1.0) -> list[set[Any]]:
    """Louvain communities of the undirected graph weighted by ``|weight|``, largest first.

    The same graph and seed give the same communities (nodes are visited in (layer, unit) order
    before networkx shuffles them with ``seed``).
    """
    if G.number_of_nodes() == 0:
        return []
    H = _abs_undirected(G)
    found = nx.community.louvain_communities(H, weight="w", resolution=resolution, seed=seed)
    return _order_groups(G, found)


def _auto_k(n: int, k: int | None | str) -> int | None:
    if k == "auto":
        return None if n <= 1000 else min(n, 128)
    if k is not None and (not _is_int(k) or int(k) < 1):
        raise ValueError(f"betweenness k must be a positive int, None or 'auto', got {k!r}")
    return None if k is None else min(int(k), n)


def centrality(
    G: nx.Graph, kind: str = "degree", k: int | None | str = "auto", seed: int = 0
) -> dict[Any, float]:
    """Node centrality: ``"degree"`` (in + out degree over n - 1) or ``"betweenness"``.

    Betweenness follows edge directions (earlier -> later layer for virtual weights) and ignores
    weights. ``k`` samples that many source nodes (``seed`` fixes the sample); ``"auto"`` is exact
    up to 1,000 nodes and samples 128 sources above that; ``None`` is always exact.
    """
    if kind == "degree":
        return nx.degree_centrality(G) if G.number_of_nodes() > 1 else dict.fromkeys(G, 0.0)
    if kind == "betweenness":
        kk = _auto_k(G.number_of_nodes(), k)
        return nx.betweenness_centrality(G, k=kk, seed=seed if kk is not None else None)
    raise ValueError(f"unknown centrality {kind!r}; choose 'degree' or 'betweenness'")


def layer_profile(G: nx.Graph) -> list[dict[str, Any]]:
    """Per layer: units, edges to later / from earlier layers, edges within the layer, degree and
    the mean of each score attribute."""
    score_keys = list(G.graph.get("scores", []))
    rows: dict[int, dict[str, Any]] = {}
    for node, d in G.nodes(data=True):
        layer = _node_key(G, node)[0]
        row = rows.setdefault(
            layer, {"layer": layer, "units": 0, "out_later": 0, "in_earlier": 0, "within": 0}
        )
        row["units"] += 1
        for key in score_keys:
            if key in d:
                row.setdefault(f"_{key}", []).append(float(d[key]))
    for u, v in G.edges():
        lu, lv = _node_key(G, u)[0], _node_key(G, v)[0]
        if lu == lv:
            rows[lu]["within"] += 1
        else:
            early, late = (lu, lv) if lu < lv else (lv, lu)
            rows[early]["out_later"] += 1
            rows[late]["in_earlier"] += 1
    out = []
    for layer in sorted(rows):
        row = rows[layer]
        row["mean_degree"] = (row["out_later"] + row["in_earlier"] + 2 * row["within"]) / row[
            "units"
        ]
        for key in score_keys:
            vals = row.pop(f"_{key}", [])
            row[f"mean_{key}"] = float(np.mean(vals)) if vals else None
        out.append(row)
    return out


def annotate_graph(
    G: nx.Graph, seed: int = 0, betweenness_k: int | None | str = "auto", resolution: float = 1.0
) -> nx.Graph:
    """Write ``degree``, ``degree_centrality``, ``betweenness``, ``component`` and ``community``
    (0 = largest) onto every node, in place; returns ``G``. Handy before saving or drawing."""
    deg = dict(G.degree())
    dc = centrality(G, "degree")
    bc = centrality(G, "betweenness", k=betweenness_k, seed=seed)
    for i, comp in enumerate(components(G)):
        for n in comp:
            G.nodes[n]["component"] = i
    for i, comm in enumerate(communities(G, seed=seed, resolution=resolution)):
        for n in comm:
            G.nodes[n]["community"] = i
    for n in G.nodes:
        G.nodes[n].update(degree=int(deg[n]), degree_centrality=dc[n], betweenness=bc[n])
    G.graph["annotation_seed"] = seed
    return G


def graph_summary(
    G: nx.Graph, seed: int = 0, betweenness: bool = False, top: int = 10
) -> dict[str, Any]:
    """Headline numbers of a graph: size, density, components, Louvain communities (count, sizes,
    modularity), weight statistics, the top hubs by degree and the layer profile.

    Betweenness (sampled as in :func:`centrality`) is added when ``betweenness=True``.
    """
    n, m = G.number_of_nodes(), G.number_of_edges()
    comps = components(G)
    comms = communities(G, seed=seed)
    weights = np.array([float(d.get("weight", 0.0)) for _, _, d in G.edges(data=True)])
    deg = dict(G.degree())
    hubs = sorted(G.nodes, key=lambda x: (-deg[x], _node_key(G, x)))[:top]
    out: dict[str, Any] = {
        "edges_kind": G.graph.get("edges"),
        "threshold": G.graph.get("threshold"),
        "directed": G.is_directed(),
        "nodes": n,
        "edges": m,
        "density": nx.density(G) if n > 1 else 0.0,
        "isolated": sum(1 for x in G.nodes if deg[x] == 0),
        "components": len(comps),
        "largest_component": len(comps[0]) if comps else 0,
        "communities": len(comms),
        "community_sizes": [len(c) for c in comms[:top]],
        "modularity": (
            float(nx.community.modularity(_abs_undirected(G), comms, weight="w")) if m else 0.0
        ),
        "mean_abs_weight": float(np.abs(weights).mean()) if m else 0.0,
        "positive_fraction": float((weights > 0).mean()) if m else 0.0,
        "mean_degree": 2.0 * m / n if n else 0.0,
        "top_hubs": [{"node": str(x), "degree": int(deg[x])} for x in hubs],
        "layers": layer_profile(G),
        "seed": seed,
    }
    if betweenness and n:
        bc = centrality(G, "betweenness", seed=seed)
        best = sorted(G.nodes, key=lambda x: (-bc[x], _node_key(G, x)))[:top]
        out["top_betweenness"] = [{"node": str(x), "betweenness": bc[x]} for x in best]
    return out


def summary(
    G: nx.Graph, seed: int = 0, top: int | None = None, betweenness: bool = False
) -> list[dict[str, Any]]:
    """A table (one dict per unit) sorted by degree: node, layer, unit, degrees, degree
    centrality, component, community, scores and MI; ``top`` keeps the first rows."""
    deg = dict(G.degree())
    dc = centrality(G, "degree")
    bc = centrality(G, "betweenness", seed=seed) if betweenness else None
    comp_of = {n: i for i, c in enumerate(components(G)) for n in c}
    comm_of = {n: i for i, c in enumerate(communities(G, seed=seed)) for n in c}
    extra = [*G.graph.get("scores", []), "mi"]
    rows = []
    for node in sorted(G.nodes, key=lambda x: (-deg[x], _node_key(G, x))):
        d = G.nodes[node]
        layer, unit, _ = _node_key(G, node)
        row: dict[str, Any] = {"node": str(node), "layer": layer, "unit": unit, "degree": deg[node]}
        if G.is_directed():
            row["in_degree"], row["out_degree"] = G.in_degree(node), G.out_degree(node)
        row["degree_centrality"] = dc[node]
        if bc is not None:
            row["betweenness"] = bc[node]
        row["component"], row["community"] = comp_of[node], comm_of[node]
        for key in extra:
            if key in d:
                row[key] = d[key]
        rows.append(row)
    return rows if top is None else rows[:top]


# --------------------------------------------------------------------------------------------------
# graph-guided selection


def _rank01(x: np.ndarray) -> np.ndarray:
    """Average ranks scaled to [0, 1] (0 = lowest, 1 = highest; ties share their mean rank)."""
    n = x.size
    if n == 1:
        return np.ones(1)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = (ends - counts + ends - 1) / 2.0
    return mean_rank[inv] / (n - 1)


def _score_ranks(G: nx.Graph, nodes: list[Any], keys: Sequence[str], policy: str) -> dict:
    out = {}
    for key in keys:
        missing = [n for n in nodes if key not in G.nodes[n]]
        if missing:
            raise ValueError(
                f"policy={policy!r} needs a {key!r} score on every node ({missing[0]!r} has "
                f'none); build the graph with scores={{"{key}": ...}}'
            )
        vals = np.array([float(G.nodes[n][key]) for n in nodes])
        if not np.isfinite(vals).all():
            raise ValueError(f"the {key!r} scores contain NaN or inf")
        out[key] = _rank01(vals)
    return out


def _check_budget(budget: Any) -> int:
    if not _is_int(budget) or int(budget) < 1:
        raise ValueError(f"budget must be a positive int (a number of units), got {budget!r}")
    return int(budget)


def select_by_graph(
    G: nx.Graph,
    policy: str = "hubs",
    budget: int = 32,
    seed: int = 0,
    *,
    high: float = 0.5,
    low: float = 0.5,
    min_community: int = 2,
    resolution: float = 1.0,
) -> Selection:
    """Pick at most ``budget`` units from the graph as a neuron selection for SPIN edits.

    Scores are compared as ranks among the graph's nodes, scaled to [0, 1] (``r_f``, ``r_p``,
    ``r_g`` for fairness, privacy, general); the coupling of a unit is ``min(r_f, r_p)``.

    - ``"hubs"``: the units with the highest degree centrality (ties: lower layer, then unit);
      units without edges are never hubs.
    - ``"community"``: Louvain communities (``seed``, ``resolution``) of at least
      ``min_community`` units, ranked by their mean coupling; the best community's units are taken
      in order of coupling, and if it has fewer than ``budget`` units the next community fills the
      rest, and so on.
    - ``"coupled_core"``: units high in both behaviours and low in general ability (``r_f >= high``,
      ``r_p >= high``, ``r_g <= low``); among them the densest k-core whose largest connected
      component still holds ``budget`` units (or the largest such component), trimmed to the
      budget by ``min(r_f, r_p) - r_g``.

    Returns:
        A :class:`~spin_interp.select.Selection` keyed by MLP module with shapes ``(d_mlp,)`` for
        every MLP of the model, ``meta["mode"] = "graph-<policy>"`` and the graph's model
        fingerprint, ready for :func:`spin_interp.ablate.zero_neurons`.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {POLICIES}")
    budget = _check_budget(budget)
    if not _is_int(min_community) or int(min_community) < 1:
        raise ValueError(f"min_community must be a positive int, got {min_community!r}")
    for name, x in (("high", high), ("low", low)):
        if not isinstance(x, (int, float)) or not 0.0 <= float(x) <= 1.0:
            raise ValueError(f"{name} must be a rank quantile in [0, 1], got {x!r}")
    if G.number_of_nodes() == 0:
        raise ValueError("the graph has no nodes")
    shapes = G.graph.get("shapes")
    if not isinstance(shapes, Mapping) or not shapes:
        raise ValueError(
            "the graph carries no module shapes (G.graph['shapes']); build it with "
            "build_neuron_graph or load it with load_graph"
        )
    nodes = _sorted_nodes(G)
    index = {n: i for i, n in enumerate(nodes)}
    info: dict[str, Any] = {}
    if policy == "hubs":
        deg = dict(G.degree())
        ranked = sorted((n for n in nodes if deg[n] > 0), key=lambda n: (-deg[n], index[n]))
        chosen = ranked[:budget]
        info["min_degree"] = int(deg[chosen[-1]]) if chosen else 0
    elif policy == "community":
        ranks = _score_ranks(G, nodes, ("fairness", "privacy"), policy)
        coupling = np.minimum(ranks["fairness"], ranks["privacy"])
        comms = communities(G, seed=seed, resolution=resolution)
        comms = [c for c in comms if len(c) >= min_community]
        if not comms:
            raise ValueError(
                f"the graph has no community of at least {min_community} units (too few edges); "
                "lower the threshold or use policy='hubs'"
            )
        scored = [(float(np.mean([coupling[index[n]] for n in c])), c) for c in comms]
        scored.sort(key=lambda sc: (-sc[0], -len(sc[1]), min(index[n] for n in sc[1])))
        chosen, used = [], []
        for mean_c, comm in scored:
            if len(chosen) >= budget:
                break
            members = sorted(comm, key=lambda n: (-coupling[index[n]], index[n]))
            take = members[: budget - len(chosen)]
            chosen.extend(take)
            used.append({"size": len(comm), "mean_coupling": mean_c, "taken": len(take)})
        info["communities_used"] = used
    else:
        ranks = _score_ranks(G, nodes, ("fairness", "privacy", "general"), policy)
        rf, rp, rg = ranks["fairness"], ranks["privacy"], ranks["general"]
        coupled = np.minimum(rf, rp) - rg
        eligible = [n for n in nodes if rf[index[n]] >= high and rp[index[n]] >= high]
        eligible = [n for n in eligible if rg[index[n]] <= low]
        if not eligible:
            raise ValueError(
                f"no unit has fairness and privacy ranks >= {high} and a general rank <= {low}; "
                "loosen high/low"
            )
        H = _abs_undirected(G).subgraph(eligible)
        core = nx.core_number(H)
        target = min(budget, len(eligible))
        best: tuple[int, set[Any]] | None = None
        for k in range(max(core.values()), -1, -1):
            K = H.subgraph([n for n in eligible if core[n] >= k])
            comp = max(
                _order_groups(G, nx.connected_components(K)),
                key=lambda c: (len(c), float(np.mean([coupled[index[n]] for n in c]))),
            )
            if best is None or len(comp) > len(best[1]):
                best = (k, comp)
            if len(comp) >= target:
                break
        assert best is not None
        k, comp = best
        chosen = sorted(comp, key=lambda n: (-coupled[index[n]], index[n]))[:budget]
        info.update(eligible=len(eligible), core_k=k, core_component=len(comp))
    if len(chosen) < budget:
        log.info("select_by_graph(%s): %d units chosen (budget %d)", policy, len(chosen), budget)
    by_module: dict[str, list[int]] = {}
    for n in chosen:
        d = G.nodes[n]
        module = d.get("module")
        if module not in shapes:
            raise ValueError(f"node {n!r} has module {module!r}, which the graph's shapes lack")
        by_module.setdefault(module, []).append(int(d["unit"]))
    meta = {
        "model_fingerprint": G.graph.get("model_fingerprint"),
        "mode": f"graph-{policy}",
        "granularity": "neuron",
        "budget": budget,
        "seed": seed,
        "edges": G.graph.get("edges"),
        "threshold": G.graph.get("threshold"),
        "graph_nodes": G.number_of_nodes(),
        "graph_edges": G.number_of_edges(),
        **info,
    }
    return Selection(
        {m: (int(d),) for m, d in shapes.items()},
        {m: torch.tensor(sorted(u), dtype=torch.long) for m, u in by_module.items()},
        meta,
    )


def to_weight_selection(model: Any, neuron_selection: Selection) -> Selection:
    """The weight entries that carry the selected units (gate/up rows and down columns of MLP
    units, or the output-projection slices of attention heads), as a weight-entry selection.

    ``zero_weights(model, to_weight_selection(model, sel))`` zeroes exactly what
    ``zero_neurons(model, sel)`` zeroes.
    """
    from spin_interp.ablate import neuron_weight_entries

    params = hf_parameters(model)
    known = set(neuron_modules(model, "mlp")) | set(neuron_modules(model, "attn"))
    shapes: dict[str, tuple[int, ...]] = {}
    indices: dict[str, torch.Tensor] = {}
    for module, units in neuron_selection.indices.items():
        if module not in known:
            raise ValueError(
                f"{module!r} is not an MLP or attention module of this model; a neuron selection "
                f"is keyed by names like {sorted(known)[:2]}"
            )
        entries = neuron_weight_entries(model, module, units)
        for name, idx in entries.items():
            shapes[name] = tuple(params[name].shape)
            prev = indices.get(name)
            indices[name] = idx if prev is None else torch.cat([prev, idx])
    meta = dict(neuron_selection.meta)
    meta.update(granularity="weight", from_neurons=neuron_selection.count())
    return Selection(shapes, indices, meta)


# --------------------------------------------------------------------------------------------------
# saving, loading, drawing

_SCALARS = (bool, int, float, str)


def _scalar(value: Any, where: str) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, _SCALARS):
        raise ValueError(
            f"{where} is a {type(value).__name__}; GraphML holds only bool, int, float and str "
            "attributes (save as .json to keep other values)"
        )
    return value


def _graphml_copy(G: nx.Graph) -> nx.Graph:
    """A copy with scalar attributes only; non-scalar graph attributes are JSON strings."""
    H = G.__class__()
    encoded = []
    for k, v in G.graph.items():
        if v is None:
            continue
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, _SCALARS):
            H.graph[k] = v
        else:
            H.graph[k] = json.dumps(v, sort_keys=True)
            encoded.append(k)
    H.graph["json_attributes"] = json.dumps(sorted(encoded))
    for n, d in G.nodes(data=True):
        attrs = {
            k: _scalar(x, f"node {n!r} attribute {k!r}") for k, x in d.items() if x is not None
        }
        H.add_node(n, **attrs)
    for u, v, d in G.edges(data=True):
        H.add_edge(
            u,
            v,
            **{k: _scalar(x, f"edge {u!r}->{v!r} attribute {k!r}") for k, x in d.items()},
        )
    return H


def save_graph(G: nx.Graph, path: str | Path) -> Path:
    """Save a graph as GraphML (``.graphml``) or node-link JSON (``.json``), atomically.

    GraphML keeps only scalar node and edge attributes (anything else is a ``ValueError``); graph
    attributes that are not scalars (e.g. ``shapes``) are stored as JSON text and decoded by
    :func:`load_graph`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".graphml":
        H = _graphml_copy(G)
        return atomic_write(path, lambda tmp: nx.write_graphml(H, str(tmp)))
    if suffix == ".json":
        doc = {
            "format": GRAPH_FORMAT,
            "format_version": GRAPH_FORMAT_VERSION,
            "graph": nx.node_link_data(G, edges="edges"),
        }
        text = json.dumps(doc, default=_json_default)
        return atomic_write(path, lambda tmp: tmp.write_text(text))
    raise ValueError(f"unknown graph file type {path.suffix!r}: use .graphml or .json")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot store a {type(value).__name__} in graph JSON")


def load_graph(path: str | Path) -> nx.Graph:
    """Load a graph written by :func:`save_graph` (GraphML or JSON), attributes restored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no graph file at {path}")
    suffix = path.suffix.lower()
    if suffix == ".graphml":
        try:
            with _gc_paused():
                G = nx.read_graphml(str(path), node_type=str)
            encoded = json.loads(G.graph.pop("json_attributes", "[]"))
            for k in encoded:
                G.graph[k] = json.loads(G.graph[k])
        except Exception as exc:  # XML parse errors are SyntaxErrors; JSON ones ValueErrors
            raise ValueError(f"{path} is not a readable GraphML graph (truncated?): {exc}") from exc
        # graphs built by this module carry their format; refuse another one (files from other
        # tools carry none and load as plain graphs)
        if "format" in G.graph and G.graph["format"] != GRAPH_FORMAT:
            raise ValueError(f"{path} holds a {G.graph['format']!r} graph, not {GRAPH_FORMAT!r}")
        version = G.graph.get("format_version", GRAPH_FORMAT_VERSION)
        if version != GRAPH_FORMAT_VERSION:
            raise ValueError(
                f"{path} has graph format version {version}; this library reads "
                f"{GRAPH_FORMAT_VERSION}"
            )
        return G
    if suffix == ".json":
        try:
            with _gc_paused():
                doc = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not valid JSON (truncated?): {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != GRAPH_FORMAT:
            raise ValueError(f"{path} is not a graph saved by spin_interp.graph.save_graph")
        if doc.get("format_version") != GRAPH_FORMAT_VERSION:
            raise ValueError(
                f"{path} has graph format version {doc.get('format_version')}; this library "
                f"reads {GRAPH_FORMAT_VERSION}"
            )
        try:
            with _gc_paused():
                return nx.node_link_graph(doc["graph"], edges="edges")
        except (KeyError, TypeError, nx.NetworkXError) as exc:
            raise ValueError(f"{path}: the graph inside is malformed ({exc!r})") from exc
    raise ValueError(f"unknown graph file type {path.suffix!r}: use .graphml or .json")


def draw_graph(
    G: nx.Graph,
    path: str | Path,
    color_by: str = "community",
    max_edges: int = 3000,
    label_top: int = 12,
    seed: int = 0,
    title: str | None = None,
    figsize: tuple[float, float] = (11.0, 6.5),
    dpi: int = 150,
) -> Path:
    """Draw the graph with layers on the x axis and save it (PNG, PDF or SVG by suffix).

    Node colour shows ``color_by`` (a node attribute, e.g. ``"fairness"``; ``"community"`` runs
    Louvain with ``seed`` if the nodes carry no ``community`` attribute) and units are stacked
    within their layer sorted by it, so communities appear as runs of one colour. Node size grows
    with degree and the ``label_top`` highest-degree units are labelled. At most ``max_edges``
    edges are drawn (the strongest by ``|weight|``), blue for positive and red for negative
    weights. Needs matplotlib (``pip install matplotlib``); imported only here.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.collections import LineCollection
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("draw_graph needs matplotlib: pip install matplotlib") from exc
    if G.number_of_nodes() == 0:
        raise ValueError("the graph has no nodes to draw")
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "pdf", "svg"):
        raise ValueError(f"unknown image type {path.suffix!r}: use .png, .pdf or .svg")
    nodes = _sorted_nodes(G)
    layers = sorted({_node_key(G, n)[0] for n in nodes})
    deg = dict(G.degree())
    if color_by == "community" and not all("community" in G.nodes[n] for n in nodes):
        colour_of = {n: i for i, c in enumerate(communities(G, seed=seed)) for n in c}
    else:
        missing = [n for n in nodes if color_by not in G.nodes[n]]
        if missing:
            raise ValueError(f"node {missing[0]!r} has no attribute {color_by!r} to colour by")
        colour_of = {n: G.nodes[n][color_by] for n in nodes}
    categorical = color_by == "community"
    per_layer: dict[int, list[Any]] = {}
    for n in sorted(nodes, key=lambda x: (float(colour_of[x]), _node_key(G, x))):
        per_layer.setdefault(_node_key(G, n)[0], []).append(n)
    pos: dict[Any, tuple[float, float]] = {}
    rng = np.random.default_rng(seed)
    for layer, members in per_layer.items():
        m = len(members)
        ys = np.linspace(0.0, 1.0, m) if m > 1 else np.array([0.5])
        xs = layer + rng.uniform(-0.18, 0.18, m) if m > 1 else np.array([float(layer)])
        for n, x, y in zip(members, xs, ys, strict=True):
            pos[n] = (float(x), float(y))
    values = [colour_of[n] for n in nodes]

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    edges = sorted(G.edges(data=True), key=lambda e: -abs(float(e[2].get("weight", 0.0))))[
        :max_edges
    ]
    if edges:
        segs = [(pos[u], pos[v]) for u, v, _ in edges]
        w = np.array([float(d.get("weight", 0.0)) for _, _, d in edges])
        top = float(np.abs(w).max()) or 1.0
        colours = [
            (0.13, 0.40, 0.80, 0.15 + 0.6 * abs(x) / top)
            if x >= 0
            else (0.84, 0.19, 0.15, 0.15 + 0.6 * abs(x) / top)
            for x in w
        ]
        ax.add_collection(LineCollection(segs, colors=colours, linewidths=0.6, zorder=1))
    xy = np.array([pos[n] for n in nodes])
    sizes = 12.0 + 60.0 * np.sqrt(np.array([deg[n] for n in nodes], dtype=float))
    if categorical:
        cvals = np.array(values, dtype=float) % 20
        sc = ax.scatter(
            xy[:, 0],
            xy[:, 1],
            s=sizes,
            c=cvals,
            cmap="tab20",
            vmin=0,
            vmax=19,
            edgecolors="black",
            linewidths=0.3,
            zorder=2,
        )
    else:
        sc = ax.scatter(
            xy[:, 0],
            xy[:, 1],
            s=sizes,
            c=np.array(values, dtype=float),
            cmap="viridis",
            edgecolors="black",
            linewidths=0.3,
            zorder=2,
        )
        cbar = fig.colorbar(sc, ax=ax, fraction=0.04, pad=0.02)
        cbar.set_label(color_by, fontsize=11)
    hubs = sorted(nodes, key=lambda n: (-deg[n], _node_key(G, n)))[: max(0, label_top)]
    for n in hubs:
        if deg[n] == 0:
            continue
        ax.annotate(str(n), pos[n], xytext=(4, 4), textcoords="offset points", fontsize=8, zorder=3)
    ax.set_xticks(layers)
    ax.set_xlim(min(layers) - 0.6, max(layers) + 0.6)
    ax.set_ylim(-0.05, 1.08)
    ax.set_xlabel("layer", fontsize=12)
    ax.set_ylabel(f"units of the layer, sorted by {color_by}", fontsize=12)
    if edges:
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], color=(0.13, 0.40, 0.80), label="positive weight"),
            Line2D([], [], color=(0.84, 0.19, 0.15), label="negative weight"),
        ]
        ax.legend(handles=handles, loc="upper right", fontsize=9, framealpha=0.85)
    ax.tick_params(labelsize=10)
    kind = G.graph.get("edges", "?")
    thr = G.graph.get("threshold", "?")
    shown = f"{len(edges)} of {G.number_of_edges()}" if edges else "0"
    ax.set_title(
        title
        or f"MLP units: {G.number_of_nodes()} nodes, {shown} {kind} edges (|w| >= {thr}); "
        f"colour = {color_by}",
        fontsize=12,
    )
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(str(tmp), format=fmt))
