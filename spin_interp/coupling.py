"""Coupling measures on a model: which neurons carry both behaviours, and how much information the
model's fairness awareness and privacy awareness share.

Two measurements, both on activations read from bridge hooks in one forward pass per example
(all requested layers at once, ``torch.no_grad``, right-padded batches):

**Neuron relevance** (:func:`neuron_relevance`). For every candidate MLP unit j the activation
``a_j(x)`` is ``blocks.L.mlp.hook_post[..., j]`` averaged over the response-token positions of
example x (encoded with the response it carries, normally the safe one). Over a pool of
fairness, privacy and general examples it estimates, per unit,

* ``mi_label``: I(a_j; pool label) with one class per pool (fairness / privacy / general);
* ``mi_fairness``, ``mi_privacy``: I(a_j; is_fairness), I(a_j; is_privacy), one-vs-rest;
* ``mi_fairness_vs_general``, ``mi_privacy_vs_general``: the same against the general pool only
  (fairness rows vs general rows; privacy rows vs general rows), when a general pool is given.

The estimator is the mixed continuous-discrete k-nearest-neighbour estimator of Ross (2014), the
one behind :func:`sklearn.feature_selection.mutual_info_classif`, implemented here for a whole
matrix of units at once (:func:`mixed_ksg_mi`). :meth:`NeuronRelevance.to_selection` turns the
scores into a neuron :class:`~spin_interp.select.Selection` (the "MI-guided" selection).

**Representation coupling** (:func:`coupling_mi`, :func:`coupling_profile`,
:func:`compare_coupling`). At layer L the fairness-awareness direction ``d_f`` is the difference
of the mean residual activation (``blocks.L.hook_resid_post``, averaged over response tokens)
between fairness examples with safe and with unsafe responses, scaled to unit length; likewise
``d_p`` for privacy. A common pool of examples is projected on both, ``f(x) = <h_L(x), d_f>`` and
``p(x) = <h_L(x), d_p>``, and I(f; p) is estimated with KSG (1-D against 1-D, where it is nearly
unbiased; see ``docs/mi_bias.md``), with a bootstrap interval and a shuffle p-value. The cosine
between the two directions and Pearson's r of (f, p) are reported beside it.
:func:`coupling_from_activations` is the same computation on given activation matrices (no model);
:func:`compare_coupling` measures before and with an edit applied (same pool, same directions) and
reports paired differences (:func:`paired_coupling_difference`).

See ``docs/coupling.md`` for the definitions, the choices made and a measurement on SmolLM2.
"""

from __future__ import annotations

import logging
import math
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from numpy.typing import ArrayLike, NDArray
from scipy.special import digamma
from scipy.stats import rankdata

from spin_interp._io import load_artifact, save_artifact
from spin_interp.attribution import layer_of, neuron_modules
from spin_interp.models import Encoded, encode_examples, get_tokenizer, model_fingerprint
from spin_interp.select import Selection

__all__ = [
    "CouplingComparison",
    "CouplingProfile",
    "CouplingResult",
    "NeuronRelevance",
    "PairedDifference",
    "awareness_direction",
    "collect_activations",
    "compare_coupling",
    "coupling_from_activations",
    "coupling_from_directions",
    "coupling_mi",
    "coupling_profile",
    "mixed_ksg_mi",
    "neuron_relevance",
    "paired_coupling_difference",
]

log = logging.getLogger(__name__)

Positions = Literal["response", "prompt", "last_prompt"]
POSITIONS: tuple[str, ...] = ("response", "prompt", "last_prompt")
RandomState = int | np.random.RandomState | None

_MLP_HOOK = "blocks.{layer}.mlp.hook_post"
_RESID_HOOK = "blocks.{layer}.hook_resid_post"
_HOOK_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")
# byte budget of the (n, units, 2k) neighbour-distance block of the mixed estimator
_BLOCK_BYTES = 64 * 2**20


# --------------------------------------------------------------------------------------------------
# Mixed continuous-discrete KSG (Ross 2014), vectorised over columns
# --------------------------------------------------------------------------------------------------


def _label_codes(labels: ArrayLike, n: int) -> NDArray[np.int64]:
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-D (one label per sample); got shape {lab.shape}")
    if lab.shape[0] != n:
        raise ValueError(f"X has {n} samples (rows) but labels has {lab.shape[0]}; they must match")
    _, codes = np.unique(lab, return_inverse=True)
    return codes.reshape(-1).astype(np.int64)


def _as_matrix(X: ArrayLike, name: str = "X") -> NDArray[np.float64]:
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().double().numpy()
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D (n_samples, n_units); got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _rng_legacy(random_state: RandomState) -> np.random.RandomState:
    if isinstance(random_state, np.random.RandomState):
        return random_state
    return np.random.RandomState(random_state)


def _prepare_continuous(
    X: NDArray[np.float64], random_state: RandomState, jitter: bool
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Scale every column to unit (population) std and add noise of relative size 1e-10.

    The same preparation as scikit-learn's ``mutual_info_classif`` (no centring; noise
    ``1e-10 * max(1, mean|x|) * N(0, 1)`` drawn as one ``(n, n_columns)`` block from
    ``RandomState(random_state)``), so with the same integer ``random_state`` both see the same
    numbers. Returns the prepared matrix and the mask of exactly constant columns.
    """
    const = np.all(X == X[:1], axis=0)
    sd = X.std(axis=0)
    sd[sd == 0] = 1.0
    out = X / sd
    if jitter:
        scale = np.maximum(1.0, np.mean(np.abs(out), axis=0))
        out = out + 1e-10 * scale * _rng_legacy(random_state).standard_normal(size=out.shape)
    return out, const


def _kth_within(g: NDArray[np.float64], k: int) -> NDArray[np.float64]:
    """Distance from each row of ``g`` (m, u) to its k-th nearest other row, per column.

    In one dimension the k nearest neighbours of a point lie within k places of it in sorted
    order, so the k-th smallest of the 2k distances to those places is the answer.
    """
    m = g.shape[0]
    order = np.argsort(g, axis=0, kind="stable")
    gs = np.take_along_axis(g, order, axis=0)
    pos = np.arange(m)[:, None]
    cand = np.full((m, g.shape[1], 2 * k), np.inf)
    for j, off in enumerate([*range(-k, 0), *range(1, k + 1)]):
        idx = pos + off
        ok = (idx >= 0) & (idx < m)
        other = np.take_along_axis(gs, np.clip(idx, 0, m - 1), axis=0)
        cand[:, :, j] = np.where(ok, np.abs(other - gs), np.inf)
    r_sorted = np.partition(cand, k - 1, axis=2)[:, :, k - 1]
    r = np.empty_like(r_sorted)
    np.put_along_axis(r, order, r_sorted, axis=0)
    return r


def _count_ahead(s: NDArray[np.float64], rad: NDArray[np.float64]) -> NDArray[np.int64]:
    """For sorted columns ``s`` (n, u): #{o >= 1 : s[i + o] - s[i] <= rad[i]} per entry.

    ``s[i + o] - s[i]`` never decreases with o (rounding is monotone), so the qualifying offsets
    form a prefix 1..c and c is found by binary lifting (log2 n vectorised steps).
    """
    n = s.shape[0]
    pos = np.arange(n)[:, None]
    cnt = np.zeros(s.shape, dtype=np.int64)
    step = 1 << max(0, (n - 1).bit_length() - 1) if n > 1 else 0
    while step >= 1:
        cand = cnt + step
        idx = pos + cand
        valid = idx <= n - 1
        other = np.take_along_axis(s, np.minimum(idx, n - 1), axis=0)
        ok = valid & (other - s <= rad)
        cnt = np.where(ok, cand, cnt)
        step //= 2
    return cnt


def _ross_mi(c: NDArray[np.float64], codes: NDArray[np.int64], k: int) -> NDArray[np.float64]:
    """Ross (2014) estimate of I(c_u; d) for every column u of ``c`` (n, u), no clipping.

    Per point i with label d_i: r_i is the distance to its k-th nearest neighbour among the
    points with the same label (k lowered to n_label - 1 for small classes), m_i the number of
    points of any label within distance ``nextafter(r_i, 0)`` (itself included), and
    ``I = psi(N) + <psi(k_i)> - <psi(N_{d_i})> - <psi(m_i)>``. Points whose label occurs once are
    left out (they have no neighbour of their own label), as in scikit-learn.
    """
    counts = np.bincount(codes)
    keep = counts[codes] > 1
    if not keep.all():
        c, codes = c[keep], codes[keep]
    n, u = c.shape
    if n < 2:
        return np.zeros(u)
    rad = np.empty((n, u))
    k_all = np.empty(n)
    n_lab = np.empty(n)
    for lab in np.unique(codes):
        rows = np.flatnonzero(codes == lab)
        kl = min(k, rows.size - 1)
        rad[rows] = np.nextafter(_kth_within(c[rows], kl), 0)
        k_all[rows] = kl
        n_lab[rows] = rows.size
    order = np.argsort(c, axis=0, kind="stable")
    s = np.take_along_axis(c, order, axis=0)
    rs = np.take_along_axis(rad, order, axis=0)
    ahead = _count_ahead(s, rs)
    behind = _count_ahead(-s[::-1], rs[::-1])[::-1]  # negation is exact: same distances
    m_all = ahead + behind + 1
    return (
        digamma(n)
        + np.mean(digamma(k_all))
        - np.mean(digamma(n_lab))
        - np.mean(digamma(m_all), axis=0)
    )


def _ross_mi_chunked(
    c: NDArray[np.float64], codes: NDArray[np.int64], k: int
) -> NDArray[np.float64]:
    n, u = c.shape
    step = max(1, _BLOCK_BYTES // (8 * max(1, n) * 2 * k))
    out = np.empty(u)
    for start in range(0, u, step):
        out[start : start + step] = _ross_mi(c[:, start : start + step], codes, k)
    return out


def _check_k(k: int) -> int:
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer; got {k}")
    return int(k)


def mixed_ksg_mi(
    X: ArrayLike | torch.Tensor,
    labels: ArrayLike,
    k: int = 3,
    *,
    random_state: RandomState = 0,
    jitter: bool = True,
    clip: bool = False,
) -> NDArray[np.float64]:
    """I(X[:, u]; labels) in nats for every column u of X: the mixed KSG estimator of Ross (2014).

    Each column is a 1-D continuous variable, ``labels`` a discrete one (any hashable values).
    The columns are scaled to unit standard deviation and receive noise of relative size 1e-10
    to break ties (``jitter``), exactly as :func:`sklearn.feature_selection.mutual_info_classif`
    prepares its input, so ``mixed_ksg_mi(X, y, k, random_state=s, clip=True)`` equals
    ``mutual_info_classif(X, y, n_neighbors=k, random_state=s)`` up to rounding. The work is
    vectorised over columns (sorting instead of KD-trees: in 1-D the k nearest neighbours are
    within k places in sorted order), so thousands of units cost one call.

    Exactly constant columns get 0 (they carry no information). Estimates of independent data
    scatter around 0 and can be negative; ``clip=True`` replaces negatives by 0 as scikit-learn
    does (that biases averages upward, so rankings and paired comparisons keep the raw values).

    Args:
        X: (n_samples, n_units) array or tensor (a 1-D input is one unit).
        labels: (n_samples,) discrete labels.
        k: neighbours within the same label (3, as in scikit-learn).
        random_state: seed (or ``numpy.random.RandomState``) of the tie-breaking noise.
        jitter: add the tie-breaking noise; without it, tied values make the estimate unreliable.
        clip: replace negative estimates by 0.

    Returns:
        (n_units,) float64 array.
    """
    k = _check_k(k)
    x = _as_matrix(X)
    codes = _label_codes(labels, x.shape[0])
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 samples; got {x.shape[0]}")
    prepared, const = _prepare_continuous(x, random_state, jitter)
    mi = _ross_mi_chunked(prepared, codes, k)
    mi[const] = 0.0
    return np.maximum(mi, 0.0) if clip else mi


# --------------------------------------------------------------------------------------------------
# Activations from the bridge
# --------------------------------------------------------------------------------------------------


def _n_layers(model: Any) -> int:
    cfg = getattr(model, "cfg", None)
    n = getattr(cfg, "n_layers", None)
    if isinstance(n, int) and n > 0:
        return n
    hf = getattr(model, "original_model", model)
    config = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
    return int(config.num_hidden_layers)


def _check_layers(model: Any, layers: int | Sequence[int] | None) -> list[int]:
    n = _n_layers(model)
    if layers is None:
        return list(range(n))
    seq = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
    if not seq:
        raise ValueError("layers is empty: pass at least one layer index")
    out = []
    for layer in seq:
        if isinstance(layer, bool) or int(layer) != layer:
            raise TypeError(f"layer indices must be integers; got {layer!r}")
        if not 0 <= int(layer) < n:
            raise ValueError(f"layer {layer} is out of range: this model has layers 0..{n - 1}")
        if int(layer) not in out:
            out.append(int(layer))
    return sorted(out)


def _hook_layer(hook: str) -> int:
    m = _HOOK_LAYER_RE.match(hook)
    if m is None:
        raise ValueError(f"cannot tell the layer of hook {hook!r} (expected 'blocks.L....')")
    return int(m.group(1))


def _encode_all(
    model: Any, examples: Sequence[Any], format: str, max_len: int | None
) -> list[Encoded]:
    out: list[Encoded] = []
    for i, ex in enumerate(examples):
        enc, skipped = encode_examples(model, [ex], format=format, max_len=max_len)
        if skipped or not enc:
            raise ValueError(
                f"example {i} has no response token left after truncation to max_len={max_len}; "
                "raise max_len or shorten the prompt"
            )
        out.append(enc[0])
    return out


def _position_mask(enc: Encoded, positions: str) -> torch.Tensor:
    resp = enc.labels != -100
    if positions == "response":
        return resp
    first = int(torch.nonzero(resp)[0])  # encode_examples guarantees a response token
    if first == 0:
        raise ValueError(f"positions={positions!r} needs prompt tokens; this example has none")
    if positions == "prompt":
        return ~resp
    mask = torch.zeros_like(resp)
    mask[first - 1] = True
    return mask


def collect_activations(
    model: Any,
    examples: Sequence[Any],
    hooks: Sequence[str],
    *,
    positions: Positions | Sequence[Positions] = "response",
    batch_size: int = 8,
    format: str = "chat",
    max_len: int | None = 512,
    progress: bool = True,
) -> dict[str, Float[torch.Tensor, "n d"]]:
    """Mean activation of each hook over chosen token positions, one row per example.

    All hooks are read in the same forward pass (``run_with_cache`` with a ``names_filter`` of
    every hook, stopped after the deepest hooked layer), under ``torch.no_grad`` and in eval
    mode. Examples are sorted by length and run in right-padded batches of ``batch_size``: in a
    causal decoder a position never attends to later ones, so padding on the right leaves every
    real position's activation as it is and no attention mask is needed.

    Args:
        model: a TransformerBridge (:func:`spin_interp.load_model`).
        examples: ``si.data.Example`` objects or ``(input_ids, labels)`` pairs.
        hooks: bridge hook names, e.g. ``blocks.3.mlp.hook_post`` or ``blocks.3.hook_resid_post``.
        positions: ``"response"`` (mean over response tokens, i.e. labels != -100),
            ``"prompt"`` (mean over prompt tokens) or ``"last_prompt"`` (the last prompt token,
            the position that predicts the first response token); one value for all examples or
            one per example.
        batch_size: examples per forward pass.
        format: ``"chat"`` or ``"plain"`` (see :func:`spin_interp.models.encode_example`).
        max_len: truncation length (prompt tokens are dropped first).
        progress: show a progress bar.

    Returns:
        ``{hook: float32 CPU tensor of shape (n_examples, width)}`` in the order of ``examples``.
    """
    if not hasattr(model, "run_with_cache") or not hasattr(model, "hook_dict"):
        raise TypeError("collect_activations needs a TransformerBridge (spin_interp.load_model)")
    hooks = list(dict.fromkeys(hooks))
    if not hooks:
        raise ValueError("no hooks to read")
    missing = [h for h in hooks if h not in model.hook_dict]
    if missing:
        raise ValueError(f"this bridge has no hook {missing[0]!r}")
    if len(examples) == 0:
        raise ValueError("no examples: the list is empty")
    pos_list = [positions] * len(examples) if isinstance(positions, str) else list(positions)
    if len(pos_list) != len(examples):
        raise ValueError(f"{len(pos_list)} position choices for {len(examples)} examples")
    bad = sorted({p for p in pos_list if p not in POSITIONS})
    if bad:
        raise ValueError(f"unknown positions {bad}; choose from {POSITIONS}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    encoded = _encode_all(model, examples, format, max_len)
    masks = [_position_mask(e, p) for e, p in zip(encoded, pos_list, strict=True)]
    stop = max(_hook_layer(h) for h in hooks) + 1
    stop_at = stop if stop < _n_layers(model) else None
    tok = get_tokenizer(model)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    device = next(getattr(model, "original_model", model).parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: -encoded[i].input_ids.numel())
    out: dict[str, torch.Tensor | None] = dict.fromkeys(hooks)
    batches = [order[s : s + int(batch_size)] for s in range(0, len(order), int(batch_size))]
    it: Any = batches
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(batches, desc="activations", leave=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in it:
                width = max(encoded[i].input_ids.numel() for i in batch)
                ids = torch.full((len(batch), width), int(pad_id), dtype=torch.long)
                for row, i in enumerate(batch):
                    ids[row, : encoded[i].input_ids.numel()] = encoded[i].input_ids
                _, cache = model.run_with_cache(
                    ids.to(device), names_filter=hooks, stop_at_layer=stop_at
                )
                for h in hooks:
                    acts = cache[h]
                    if out[h] is None:
                        out[h] = torch.empty(len(encoded), acts.shape[-1], dtype=torch.float32)
                    for row, i in enumerate(batch):
                        sel = acts[row, : masks[i].numel()][masks[i].to(acts.device)]
                        out[h][i] = sel.float().mean(0).cpu()  # type: ignore[index]
                del cache
    finally:
        model.train(was_training)
    return {h: t for h, t in out.items() if t is not None}


# --------------------------------------------------------------------------------------------------
# Neuron relevance
# --------------------------------------------------------------------------------------------------

RelevanceEstimator = Callable[[NDArray[np.float64], NDArray[np.int64], int], NDArray[np.float64]]
RULES = ("both", "fairness", "privacy", "label")
CONTRASTS = ("rest", "general")


def _derived_seed(seed: int, *tags: int) -> int:
    return int(np.random.SeedSequence([int(seed), *tags]).generate_state(1)[0])


@dataclass
class NeuronRelevance:
    """Per-unit mutual information between MLP activations and behaviour labels.

    Every tensor is keyed by HF module name (``model.layers.3.mlp``) and has one float64 entry
    per unit of that MLP (``d_mlp``); units that were not candidates hold NaN.

    Attributes:
        modules: HF MLP module names, in layer order.
        shapes: ``{module: (d_mlp,)}``.
        scores: ``{measure: {module: tensor}}`` for the measures ``mi_label``, ``mi_fairness``,
            ``mi_privacy`` and, with a general pool, ``mi_fairness_vs_general`` and
            ``mi_privacy_vs_general``.
        pvalues: ``{measure: {module: tensor}}`` from label permutations (empty unless
            ``n_perm > 0``).
        meta: model fingerprint, pool sizes and fingerprints, estimator settings.
    """

    modules: list[str]
    shapes: dict[str, tuple[int, ...]]
    scores: dict[str, dict[str, torch.Tensor]]
    pvalues: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def mi_label(self) -> dict[str, torch.Tensor]:
        return self.scores["mi_label"]

    @property
    def mi_fairness(self) -> dict[str, torch.Tensor]:
        return self.scores["mi_fairness"]

    @property
    def mi_privacy(self) -> dict[str, torch.Tensor]:
        return self.scores["mi_privacy"]

    @property
    def mi_fairness_vs_general(self) -> dict[str, torch.Tensor] | None:
        return self.scores.get("mi_fairness_vs_general")

    @property
    def mi_privacy_vs_general(self) -> dict[str, torch.Tensor] | None:
        return self.scores.get("mi_privacy_vs_general")

    @property
    def fingerprint(self) -> str | None:
        return self.meta.get("model_fingerprint")

    def measures(self) -> list[str]:
        return list(self.scores)

    def _flat(self, measure: str) -> tuple[np.ndarray, list[tuple[str, int]]]:
        """Candidate values of one measure across modules, with their (module, unit) keys."""
        if measure not in self.scores:
            raise KeyError(
                f"no measure {measure!r} here (have {self.measures()}); the *_vs_general "
                "measures need a 'general' pool"
            )
        vals, keys = [], []
        for m in self.modules:
            v = self.scores[measure][m].double().numpy()
            units = np.flatnonzero(~np.isnan(v))
            vals.append(v[units])
            keys.extend((m, int(u)) for u in units)
        return (np.concatenate(vals) if vals else np.zeros(0)), keys

    def _rule_measures(self, rule: str, contrast: str) -> list[str]:
        if rule not in RULES:
            raise ValueError(f"unknown rule {rule!r}; choose one of {RULES}")
        if contrast not in CONTRASTS:
            raise ValueError(f"unknown contrast {contrast!r}; choose one of {CONTRASTS}")
        if rule == "label":
            return ["mi_label"]
        suffix = "" if contrast == "rest" else "_vs_general"
        names = {"both": ["fairness", "privacy"], "fairness": ["fairness"]}.get(rule, ["privacy"])
        return [f"mi_{b}{suffix}" for b in names]

    def ranking(
        self, rule: str = "both", contrast: Literal["rest", "general"] = "rest"
    ) -> list[dict[str, Any]]:
        """All candidate units, best first, with the normalised ranks behind the order.

        The normalised rank of a unit under a measure is ``(rank - 1) / (N - 1)`` in [0, 1]
        (average ranks for ties; 1 is the highest MI among the N candidates). ``rule="both"``
        orders by the minimum of the fairness and privacy normalised ranks (high only when a
        unit is high in both), ties broken by their sum and then by layer and unit index.
        """
        measures = self._rule_measures(rule, contrast)
        cols, keys = [], None
        for ms in measures:
            v, k = self._flat(ms)
            cols.append(v)
            keys = k
        assert keys is not None
        n = len(keys)
        if n == 0:
            return []
        ranks = [(rankdata(v) - 1) / max(1, n - 1) for v in cols]
        primary = np.minimum.reduce(ranks)
        secondary = np.add.reduce(ranks)
        order = np.lexsort((np.arange(n), -secondary, -primary))
        rows = []
        for i in order:
            m, u = keys[i]
            row: dict[str, Any] = {"module": m, "layer": layer_of(m), "unit": u}
            row["score"] = float(primary[i])
            for ms, v, r in zip(measures, cols, ranks, strict=True):
                row[ms] = float(v[i])
                row[f"{ms}_rank"] = float(r[i])
            rows.append(row)
        return rows

    def top(
        self, k: int = 10, rule: str = "both", contrast: Literal["rest", "general"] = "rest"
    ) -> list[dict[str, Any]]:
        """The first ``k`` rows of :meth:`ranking`."""
        return self.ranking(rule, contrast)[: int(k)]

    def to_selection(
        self,
        top_k: int | None = None,
        fraction: float | None = None,
        rule: str = "both",
        contrast: Literal["rest", "general"] = "rest",
    ) -> Selection:
        """The "MI-guided" neuron selection: the best units under ``rule`` (see :meth:`ranking`).

        Args:
            top_k: number of units, over all candidate modules together.
            fraction: alternatively, ``floor(fraction * n_candidates)`` units.
            rule: ``"both"`` (high in both the fairness and the privacy measure: minimum of the
                two normalised ranks), ``"fairness"``, ``"privacy"`` or ``"label"``.
            contrast: ``"rest"`` uses I(a; is_fairness) and I(a; is_privacy) one-vs-rest;
                ``"general"`` uses fairness-vs-general and privacy-vs-general, which separates
                units shared by both behaviours from single-behaviour units (see
                ``docs/coupling.md``).

        Returns:
            A :class:`~spin_interp.select.Selection` with shapes ``{module: (d_mlp,)}`` (every
            scored module, possibly with no unit) and the model fingerprint in its meta, ready
            for :func:`spin_interp.ablate.zero_neurons`.
        """
        if (top_k is None) == (fraction is None):
            raise ValueError("pass exactly one of top_k and fraction")
        rows = self.ranking(rule, contrast)
        if fraction is not None:
            if not 0 < float(fraction) <= 1:
                raise ValueError(f"fraction must lie in (0, 1]; got {fraction}")
            k = math.floor(float(fraction) * len(rows))
        else:
            if int(top_k) != top_k or int(top_k) < 0:  # type: ignore[arg-type]
                raise ValueError(f"top_k must be a non-negative integer; got {top_k}")
            k = int(top_k)  # type: ignore[arg-type]
            if k > len(rows):
                raise ValueError(f"top_k={k} but only {len(rows)} candidate units were scored")
        picked: dict[str, list[int]] = {m: [] for m in self.modules}
        for row in rows[:k]:
            picked[row["module"]].append(row["unit"])
        meta = {
            "model_fingerprint": self.fingerprint,
            "mode": "mi-guided",
            "rule": rule,
            "contrast": contrast,
            "top_k": k,
            "fraction": fraction,
            "granularity": "neuron",
        }
        return Selection(
            dict(self.shapes),
            {m: torch.tensor(v, dtype=torch.long) for m, v in picked.items()},
            meta,
        )

    def save(self, path: str | Path) -> Path:
        """One ``.safetensors`` file: tensors ``<measure>/<module>`` (+ ``pvalue/...``)."""
        tensors = {f"{ms}/{m}": t for ms, d in self.scores.items() for m, t in d.items()}
        tensors.update(
            {f"pvalue:{ms}/{m}": t for ms, d in self.pvalues.items() for m, t in d.items()}
        )
        meta = dict(self.meta)
        meta["modules"] = list(self.modules)
        meta["shapes"] = {m: list(s) for m, s in self.shapes.items()}
        meta["measures"] = list(self.scores)
        meta["pvalue_measures"] = list(self.pvalues)
        return save_artifact(path, "neuron_relevance", tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> NeuronRelevance:
        tensors, meta = load_artifact(path, "neuron_relevance")
        modules = list(meta.pop("modules"))
        shapes = {m: tuple(s) for m, s in meta.pop("shapes").items()}
        measures = meta.pop("measures")
        pmeasures = meta.pop("pvalue_measures")
        scores = {ms: {m: tensors[f"{ms}/{m}"] for m in modules} for ms in measures}
        pvalues = {ms: {m: tensors[f"pvalue:{ms}/{m}"] for m in modules} for ms in pmeasures}
        return cls(modules, shapes, scores, pvalues, meta)

    def __repr__(self) -> str:
        n = sum(int((~torch.isnan(t)).sum()) for t in self.mi_label.values())
        return (
            f"NeuronRelevance(modules={len(self.modules)}, candidates={n}, "
            f"pools={self.meta.get('pool_sizes')}, model={self.fingerprint})"
        )


def _check_pools(pools: Mapping[str, Sequence[Any]]) -> list[str]:
    if not isinstance(pools, Mapping) or not pools:
        raise ValueError("pools must be a non-empty dict {name: list of examples}")
    for need in ("fairness", "privacy"):
        if need not in pools:
            raise ValueError(
                f"pools needs a {need!r} entry (got {sorted(pools)}); mi_fairness and mi_privacy "
                "are defined by those two pools"
            )
    for name, exs in pools.items():
        if len(exs) < 2:
            raise ValueError(f"pool {name!r} has {len(exs)} example(s); each pool needs >= 2")
    if len(pools) == 2:
        log.warning(
            "only the fairness and privacy pools were given: is_fairness and is_privacy are then "
            "complements and mi_fairness == mi_privacy; add a 'general' pool"
        )
    return list(pools)


def _resolve_candidates(
    model: Any, layers: Sequence[int] | int | None, candidates: Selection | None
) -> tuple[list[int], dict[int, str], dict[int, np.ndarray | None]]:
    modules = neuron_modules(model, "mlp")
    by_layer = {layer_of(m): m for m in modules}
    if candidates is None:
        chosen = _check_layers(model, layers)
        return chosen, {lay: by_layer[lay] for lay in chosen}, dict.fromkeys(chosen)
    if not isinstance(candidates, Selection):
        raise TypeError(f"candidates must be a neuron Selection; got {type(candidates).__name__}")
    unknown = [m for m in candidates.names() if m not in by_layer.values()]
    if unknown:
        raise ValueError(
            f"{unknown[0]!r} is not an MLP module of this model; candidate keys are HF module "
            f"names such as {modules[0]!r}"
        )
    cand_layers = sorted(layer_of(m) for m in candidates.names() if candidates[m].numel() > 0)
    if not cand_layers:
        raise ValueError("the candidate selection is empty")
    chosen = _check_layers(model, layers if layers is not None else cand_layers)
    outside = sorted(set(cand_layers) - set(chosen))
    if outside:
        raise ValueError(f"candidate units in layers {outside} are outside layers={chosen}")
    units = {
        lay: (
            candidates[by_layer[lay]].numpy() if by_layer[lay] in candidates else np.zeros(0, int)
        )
        for lay in chosen
    }
    return chosen, {lay: by_layer[lay] for lay in chosen}, units  # type: ignore[return-value]


def _relevance_variants(pool_of: np.ndarray, names: list[str]) -> dict[str, tuple]:
    """measure -> (row mask or None, labels) for the label variants of neuron_relevance."""
    idx = {n: i for i, n in enumerate(names)}
    f, p = idx["fairness"], idx["privacy"]
    out: dict[str, tuple] = {
        "mi_label": (None, pool_of),
        "mi_fairness": (None, (pool_of == f).astype(np.int64)),
        "mi_privacy": (None, (pool_of == p).astype(np.int64)),
    }
    if "general" in idx:
        g = idx["general"]
        for ms, b in (("mi_fairness_vs_general", f), ("mi_privacy_vs_general", p)):
            rows = (pool_of == b) | (pool_of == g)
            out[ms] = (rows, (pool_of[rows] == b).astype(np.int64))
    return out


def _unit_scorer(
    x: NDArray[np.float64], k: int, seed: int, estimator: Any
) -> Callable[[NDArray[np.int64]], NDArray[np.float64]]:
    """``labels -> per-column MI`` on the activations ``x`` (n, units).

    For the mixed KSG estimator the jitter is drawn once here, so label permutations are
    scored on exactly the same numbers as the real labels.
    """
    if estimator is None or estimator == "ksg":
        prepared, const = _prepare_continuous(x, seed, jitter=True)

        def ksg(labels: NDArray[np.int64]) -> NDArray[np.float64]:
            out = _ross_mi_chunked(prepared, labels, k)
            out[const] = 0.0
            return out

        return ksg

    def custom(labels: NDArray[np.int64]) -> NDArray[np.float64]:
        out = np.asarray(estimator(x, labels, seed), dtype=np.float64).reshape(-1)
        if out.shape != (x.shape[1],):
            raise ValueError(f"the estimator returned shape {out.shape}, not ({x.shape[1]},)")
        return out

    return custom


def neuron_relevance(
    model: Any,
    pools: Mapping[str, Sequence[Any]],
    layers: int | Sequence[int] | None = None,
    estimator: Literal["ksg"] | RelevanceEstimator | None = None,
    *,
    candidates: Selection | None = None,
    k: int = 3,
    n_perm: int = 0,
    seed: int = 0,
    positions: Positions = "response",
    batch_size: int = 8,
    format: str = "chat",
    max_len: int | None = 512,
    progress: bool = True,
) -> NeuronRelevance:
    """Mutual information between each candidate MLP unit's activation and the behaviour label.

    The activation of unit j on example x is ``blocks.L.mlp.hook_post[..., j]`` averaged over
    the response tokens of x (``positions``), where x is encoded with the response it carries;
    pass examples with their *safe* responses (``load_behaviour(..., safe=True)``, the default)
    so that the label, not safe-vs-unsafe wording, is what differs between pools.

    Args:
        model: a TransformerBridge.
        pools: ``{"fairness": [...], "privacy": [...], "general": [...]}``; fairness and privacy
            are required, other pools are extra classes of ``mi_label`` (``general`` also
            enables the ``*_vs_general`` measures).
        layers: layers whose units are candidates (default: all, or those of ``candidates``).
        estimator: ``None`` / ``"ksg"`` for :func:`mixed_ksg_mi`, or a callable
            ``(X (n, units) float64, labels (n,) int64, seed) -> (units,) MI``.
        candidates: a neuron Selection (``{HF MLP module: unit ids}``) to score only those
            units; the others hold NaN.
        k: neighbours of the mixed KSG estimator.
        n_perm: label permutations for per-unit p-values (0: none); the same jittered
            activations are reused for every permutation.
        seed: seed of the tie-breaking noise and the permutations.
        positions: ``"response"``, ``"prompt"`` or ``"last_prompt"`` (see
            :func:`collect_activations`).
        batch_size, format, max_len, progress: see :func:`collect_activations`.

    Returns:
        A :class:`NeuronRelevance`.
    """
    t0 = time.perf_counter()
    names = _check_pools(pools)
    chosen, module_of_layer, units_of_layer = _resolve_candidates(model, layers, candidates)
    if estimator not in (None, "ksg") and not callable(estimator):
        raise ValueError(f"estimator must be None, 'ksg' or a callable; got {estimator!r}")
    k = _check_k(k)
    if int(n_perm) < 0:
        raise ValueError(f"n_perm must be >= 0; got {n_perm}")
    use_ksg = estimator is None or estimator == "ksg"
    hooks = {lay: _MLP_HOOK.format(layer=lay) for lay in chosen}
    examples = [ex for n in names for ex in pools[n]]
    pool_of = np.concatenate(
        [np.full(len(pools[n]), i, dtype=np.int64) for i, n in enumerate(names)]
    )
    fingerprint = model_fingerprint(model)
    acts = collect_activations(
        model,
        examples,
        list(hooks.values()),
        positions=positions,
        batch_size=batch_size,
        format=format,
        max_len=max_len,
        progress=progress,
    )
    variants = _relevance_variants(pool_of, names)
    scores: dict[str, dict[str, torch.Tensor]] = {ms: {} for ms in variants}
    pvalues: dict[str, dict[str, torch.Tensor]] = {ms: {} for ms in variants} if n_perm else {}
    shapes: dict[str, tuple[int, ...]] = {}
    for lay in chosen:
        module = module_of_layer[lay]
        a = acts[hooks[lay]].double().numpy()
        d_mlp = a.shape[1]
        shapes[module] = (d_mlp,)
        units = units_of_layer[lay]
        if units is not None and units.size and int(units.max()) >= d_mlp:
            raise ValueError(f"{module}: unit {int(units.max())} >= d_mlp={d_mlp}")
        cols = np.arange(d_mlp) if units is None else np.sort(units)
        for vi, (ms, (rows, labels)) in enumerate(variants.items()):
            full = np.full(d_mlp, np.nan)
            x = a[:, cols] if rows is None else a[rows][:, cols]
            s = _derived_seed(seed, lay, vi)
            if cols.size:
                score = _unit_scorer(x, k, s, estimator)
                mi = score(labels)
                full[cols] = mi
                if n_perm:
                    rng = np.random.default_rng(_derived_seed(seed, lay, vi, 1))
                    exceed = np.zeros(cols.size)
                    for _ in range(int(n_perm)):
                        exceed += score(labels[rng.permutation(labels.size)]) >= mi
                    pv = np.full(d_mlp, np.nan)
                    pv[cols] = (1 + exceed) / (int(n_perm) + 1)
                    pvalues[ms][module] = torch.from_numpy(pv)
            scores[ms][module] = torch.from_numpy(full)
        log.debug("neuron_relevance: layer %d done (%d units)", lay, cols.size)
    from spin_interp.data.schema import Example, dataset_fingerprint

    meta = {
        "model_fingerprint": fingerprint,
        "method": "neuron_relevance",
        "estimator": "mixed_ksg" if use_ksg else getattr(estimator, "__name__", "custom"),
        "k": k,
        "n_perm": int(n_perm),
        "seed": int(seed),
        "positions": positions,
        "hook": _MLP_HOOK,
        "layers": chosen,
        "pool_names": names,
        "pool_sizes": {n: len(pools[n]) for n in names},
        "data_fingerprints": {
            n: dataset_fingerprint(pools[n])
            for n in names
            if all(isinstance(e, Example) for e in pools[n])
        },
        "format": format,
        "max_len": max_len,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    log.info(
        "neuron_relevance: %d layers, %d examples in %.1f s",
        len(chosen),
        len(examples),
        meta["seconds"],
    )
    modules = [module_of_layer[lay] for lay in chosen]
    return NeuronRelevance(modules, shapes, scores, pvalues, meta)


# --------------------------------------------------------------------------------------------------
# Representation coupling: directions, projections, I(f; p)
# --------------------------------------------------------------------------------------------------

EstimatorSpec = Literal["ksg", "gaussian"] | Any


def _as_acts(a: ArrayLike | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
    t = t.detach().cpu().double()
    if t.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D (n_examples, d_model) matrix; got shape {tuple(t.shape)}"
        )
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty (no examples)")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def awareness_direction(
    safe_acts: Float[torch.Tensor, "n_safe d_model"] | ArrayLike,
    unsafe_acts: Float[torch.Tensor, "n_unsafe d_model"] | ArrayLike,
) -> tuple[Float[torch.Tensor, " d_model"], float]:
    """Unit vector along ``mean(safe_acts) - mean(unsafe_acts)`` and the norm of that difference.

    Positive projections point toward the safe (aware) side. Raises ``ValueError`` when the two
    means coincide (no direction to speak of), or on empty or mismatched inputs.
    """
    s = _as_acts(safe_acts, "safe_acts")
    u = _as_acts(unsafe_acts, "unsafe_acts")
    if s.shape[1] != u.shape[1]:
        raise ValueError(
            f"safe_acts and unsafe_acts have different widths ({s.shape[1]} vs {u.shape[1]})"
        )
    diff = s.mean(0) - u.mean(0)
    norm = float(diff.norm())
    scale = float(torch.cat([s, u]).abs().max())
    if norm == 0.0 or norm <= 1e-12 * max(scale, 1e-300):
        raise ValueError(
            "the safe and unsafe mean activations are identical: no awareness direction (were "
            "the safe and unsafe responses the same, or the positions prompt-only?)"
        )
    return diff / norm, norm


def _make_estimator(estimator: EstimatorSpec, seed: int) -> Any:
    from sklearn.base import clone

    from spin_interp.mi import GaussianEstimator, KSGEstimator, MIEstimator

    if isinstance(estimator, str):
        if estimator == "ksg":
            return KSGEstimator(k=3, random_state=seed)
        if estimator == "gaussian":
            return GaussianEstimator(random_state=seed)
        raise ValueError(f"unknown estimator {estimator!r}; use 'ksg', 'gaussian' or an instance")
    if isinstance(estimator, MIEstimator):
        return clone(estimator)
    raise TypeError(
        f"estimator must be 'ksg', 'gaussian' or a spin_interp.mi estimator; got {estimator!r}"
    )


def _estimator_name(est: Any) -> str:
    return type(est).__name__


def _half_scheme(est: Any) -> bool:
    from spin_interp.mi import InfoNCEEstimator, KSGEstimator

    return isinstance(est, (KSGEstimator, InfoNCEEstimator))


def _fit_mi(est: Any, f: np.ndarray, p: np.ndarray) -> float:
    from sklearn.base import clone

    from spin_interp.mi import ConstantInputWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return float(clone(est).fit(f, p).mi_)


@dataclass
class CouplingResult:
    """I(f; p) at one layer, with the directions and projections behind it.

    Attributes:
        layer: the layer (None when computed from bare activations).
        mi: estimate of I(f; p) in nats (not clipped; can be slightly negative under
            independence).
        ci: bootstrap interval ``(low, high)`` of level ``1 - alpha`` (NaNs when ``n_boot=0``).
        pvalue: shuffle-test p-value (NaN when ``n_perm=0``).
        cosine: cosine between the fairness and the privacy direction.
        pearson_r: Pearson correlation of f and p over the pool.
        f, p: projections of the pool on the two directions, shape (n_pool,).
        direction_f, direction_p: the unit directions, shape (d_model,).
        estimator: class name of the MI estimator.
        meta: sample sizes, norms of the raw mean differences, where the directions came from,
            alpha, n_boot, n_perm, seed, model fingerprint when known.
        boot_samples, null: the bootstrap and permutation distributions.
        mi_by_group: I(f; p) within each pool group (e.g. behaviour) of at least 8 examples.
        mi_within: the size-weighted mean of ``mi_by_group``, an estimate of I(f; p | group):
            the coupling left once the group (which data set a prompt came from) is known. NaN
            without groups.
    """

    layer: int | None
    mi: float
    ci: tuple[float, float]
    pvalue: float
    cosine: float
    pearson_r: float
    f: torch.Tensor
    p: torch.Tensor
    direction_f: torch.Tensor
    direction_p: torch.Tensor
    estimator: str
    meta: dict[str, Any] = field(default_factory=dict)
    boot_samples: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    null: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    mi_by_group: dict[str, float] = field(default_factory=dict)
    mi_within: float = float("nan")

    @property
    def n_pool(self) -> int:
        return int(self.f.numel())

    def row(self) -> dict[str, Any]:
        """A flat summary (one table row)."""
        return {
            "layer": self.layer,
            "mi": self.mi,
            "ci_low": self.ci[0],
            "ci_high": self.ci[1],
            "pvalue": self.pvalue,
            "cosine": self.cosine,
            "pearson_r": self.pearson_r,
            "mi_within": self.mi_within,
            "n_pool": self.n_pool,
            "estimator": self.estimator,
        }

    def _tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        return {
            f"{prefix}f": self.f,
            f"{prefix}p": self.p,
            f"{prefix}direction_f": self.direction_f,
            f"{prefix}direction_p": self.direction_p,
            f"{prefix}boot_samples": self.boot_samples,
            f"{prefix}null": self.null,
        }

    def _doc(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "mi": self.mi,
            "ci": list(self.ci),
            "pvalue": self.pvalue,
            "cosine": self.cosine,
            "pearson_r": self.pearson_r,
            "estimator": self.estimator,
            "mi_by_group": self.mi_by_group,
            "mi_within": self.mi_within,
            "meta": self.meta,
        }

    @classmethod
    def _from(
        cls, doc: dict[str, Any], tensors: dict[str, torch.Tensor], prefix: str = ""
    ) -> CouplingResult:
        return cls(
            layer=doc["layer"],
            mi=float(doc["mi"]),
            ci=(float(doc["ci"][0]), float(doc["ci"][1])),
            pvalue=float(doc["pvalue"]),
            cosine=float(doc["cosine"]),
            pearson_r=float(doc["pearson_r"]),
            f=tensors[f"{prefix}f"],
            p=tensors[f"{prefix}p"],
            direction_f=tensors[f"{prefix}direction_f"],
            direction_p=tensors[f"{prefix}direction_p"],
            estimator=str(doc["estimator"]),
            meta=dict(doc["meta"]),
            boot_samples=tensors[f"{prefix}boot_samples"],
            null=tensors[f"{prefix}null"],
            mi_by_group={k: float(v) for k, v in doc.get("mi_by_group", {}).items()},
            mi_within=float(doc.get("mi_within", float("nan"))),
        )

    def save(self, path: str | Path) -> Path:
        """One ``.safetensors`` file (projections, directions, resamples; the rest as JSON)."""
        return save_artifact(path, "coupling_result", self._tensors(), self._doc())

    @classmethod
    def load(cls, path: str | Path) -> CouplingResult:
        tensors, doc = load_artifact(path, "coupling_result")
        return cls._from(doc, tensors)

    def __repr__(self) -> str:
        return (
            f"CouplingResult(layer={self.layer}, I(f;p)={self.mi:.4f} nats, "
            f"ci=({self.ci[0]:.4f}, {self.ci[1]:.4f}), p={self.pvalue:.3g}, "
            f"cos={self.cosine:.3f}, r={self.pearson_r:.3f}, n={self.n_pool})"
        )


def _pearson(f: np.ndarray, p: np.ndarray) -> float:
    if f.std() == 0 or p.std() == 0:
        return float("nan")
    return float(np.corrcoef(f, p)[0, 1])


def coupling_from_directions(
    direction_f: Float[torch.Tensor, " d_model"] | ArrayLike,
    direction_p: Float[torch.Tensor, " d_model"] | ArrayLike,
    pool_acts: Float[torch.Tensor, "n_pool d_model"] | ArrayLike,
    *,
    estimator: EstimatorSpec = "ksg",
    n_boot: int = 200,
    n_perm: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    layer: int | None = None,
    groups: Sequence[Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> CouplingResult:
    """I(f; p) of the pool's projections on two given directions (normalised here).

    ``f = pool_acts @ d_f``, ``p = pool_acts @ d_p``; the MI estimate comes with a bootstrap
    interval (:meth:`spin_interp.mi.MIEstimator.bootstrap`: half-sampling for KSG) and a
    shuffle-test p-value (:meth:`spin_interp.mi.MIEstimator.shuffle_test`). With ``groups``
    (one label per pool row, e.g. each example's behaviour) the MI is also estimated within
    each group (``mi_by_group``, ``mi_within``).
    """
    pool = _as_acts(pool_acts, "pool_acts")
    dirs = []
    for name, d in (("direction_f", direction_f), ("direction_p", direction_p)):
        t = torch.as_tensor(np.asarray(d) if not isinstance(d, torch.Tensor) else d).double()
        t = t.detach().cpu().reshape(-1)
        if t.numel() != pool.shape[1]:
            raise ValueError(
                f"{name} has {t.numel()} entries but pool_acts has width {pool.shape[1]}"
            )
        norm = float(t.norm())
        if not math.isfinite(norm) or norm == 0:
            raise ValueError(f"{name} is zero or not finite")
        dirs.append(t / norm)
    d_f, d_p = dirs
    if pool.shape[0] < 4:
        raise ValueError(f"the pool needs at least 4 examples; got {pool.shape[0]}")
    f = (pool @ d_f).numpy()
    p = (pool @ d_p).numpy()
    est = _make_estimator(estimator, seed)
    by_group, within = _within_groups(est, f, p, groups)
    with warnings.catch_warnings():
        from spin_interp.mi import ConstantInputWarning

        warnings.simplefilter("ignore", ConstantInputWarning)
        est.fit(f, p)
        mi = float(est.mi_)
        ci: tuple[float, float] = (float("nan"), float("nan"))
        boot = np.zeros(0)
        if n_boot:
            b = est.bootstrap(int(n_boot), alpha)
            ci, boot = b.ci, b.samples
        pvalue, null = float("nan"), np.zeros(0)
        if n_perm:
            s = est.shuffle_test(int(n_perm))
            pvalue, null = s.pvalue, s.null
    info = dict(meta or {})
    info.update(alpha=float(alpha), n_boot=int(n_boot), n_perm=int(n_perm), seed=int(seed))
    return CouplingResult(
        layer=layer,
        mi=mi,
        ci=(float(ci[0]), float(ci[1])),
        pvalue=float(pvalue),
        cosine=float(d_f @ d_p),
        pearson_r=_pearson(f, p),
        f=torch.from_numpy(f),
        p=torch.from_numpy(p),
        direction_f=d_f,
        direction_p=d_p,
        estimator=_estimator_name(est),
        meta=info,
        boot_samples=torch.from_numpy(np.asarray(boot, dtype=np.float64)),
        null=torch.from_numpy(np.asarray(null, dtype=np.float64)),
        mi_by_group=by_group,
        mi_within=within,
    )


_MIN_GROUP = 8


def _within_groups(
    est: Any, f: np.ndarray, p: np.ndarray, groups: Sequence[Any] | None
) -> tuple[dict[str, float], float]:
    """I(f; p) per group (groups of >= 8 rows) and their size-weighted mean."""
    if groups is None:
        return {}, float("nan")
    g = np.asarray([str(x) for x in groups])
    if g.shape != f.shape:
        raise ValueError(f"groups has {g.size} labels for {f.size} pool rows")
    by_group: dict[str, float] = {}
    weights: list[int] = []
    for name in dict.fromkeys(g.tolist()):
        rows = g == name
        if rows.sum() >= _MIN_GROUP:
            by_group[name] = _fit_mi(est, f[rows], p[rows])
            weights.append(int(rows.sum()))
    if not by_group:
        return {}, float("nan")
    within = float(np.average(list(by_group.values()), weights=weights))
    return by_group, within


def coupling_from_activations(
    acts_f_safe: Float[torch.Tensor, "n1 d_model"] | ArrayLike,
    acts_f_unsafe: Float[torch.Tensor, "n2 d_model"] | ArrayLike,
    acts_p_safe: Float[torch.Tensor, "n3 d_model"] | ArrayLike,
    acts_p_unsafe: Float[torch.Tensor, "n4 d_model"] | ArrayLike,
    pool_acts: Float[torch.Tensor, "n_pool d_model"] | ArrayLike,
    *,
    estimator: EstimatorSpec = "ksg",
    n_boot: int = 200,
    n_perm: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    layer: int | None = None,
    groups: Sequence[Any] | None = None,
) -> CouplingResult:
    """The coupling computation on bare activation matrices (no model involved).

    ``d_f`` = unit(mean(acts_f_safe) - mean(acts_f_unsafe)), ``d_p`` likewise for privacy, then
    :func:`coupling_from_directions` on ``pool_acts``. All matrices must share their width.
    """
    d_f, norm_f = awareness_direction(acts_f_safe, acts_f_unsafe)
    d_p, norm_p = awareness_direction(acts_p_safe, acts_p_unsafe)
    if d_f.numel() != d_p.numel():
        raise ValueError(
            f"fairness and privacy activations have different widths ({d_f.numel()} vs "
            f"{d_p.numel()})"
        )
    sizes = {
        "n_f_safe": len(acts_f_safe),
        "n_f_unsafe": len(acts_f_unsafe),
        "n_p_safe": len(acts_p_safe),
        "n_p_unsafe": len(acts_p_unsafe),
    }
    meta = {"directions": "computed", "norm_f": norm_f, "norm_p": norm_p, **sizes}
    return coupling_from_directions(
        d_f,
        d_p,
        pool_acts,
        estimator=estimator,
        n_boot=n_boot,
        n_perm=n_perm,
        alpha=alpha,
        seed=seed,
        layer=layer,
        groups=groups,
        meta=meta,
    )


# --------------------------------------------------------------------------------------------------
# Paired difference (before vs after an edit)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedDifference:
    """``I_after - I_before`` on the same examples, with a paired interval and a swap test.

    Attributes:
        delta: the difference of the two full-sample estimates.
        ci: interval of level ``1 - alpha`` from resampling the examples (the same indices for
            both conditions); NaNs when ``n_boot = 0``.
        pvalue: swap test of "the edit changes nothing": each example's before/after pair is
            exchanged at random, ``(1 + #{|null| >= |delta|}) / (n_perm + 1)``; NaN when
            ``n_perm = 0``.
        scheme: ``"half"`` (half-samples without replacement, re-centred; used for KSG) or
            ``"pairs"`` (ordinary bootstrap).
        samples, null: the resampled and the swapped differences.
    """

    delta: float
    ci: tuple[float, float]
    pvalue: float
    scheme: str
    samples: np.ndarray
    null: np.ndarray


def paired_coupling_difference(
    f_before: ArrayLike,
    p_before: ArrayLike,
    f_after: ArrayLike,
    p_after: ArrayLike,
    *,
    estimator: EstimatorSpec = "ksg",
    n_boot: int = 200,
    n_perm: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
) -> PairedDifference:
    """Paired comparison of I(f; p) before and after a change, on the same n examples.

    Every estimate uses a fresh copy of the same estimator with the same seed, so identical
    inputs give an exactly zero difference. Resampling draws one set of example indices per
    replicate and applies it to both conditions (that keeps the pairing): KSG and InfoNCE use
    half-samples without replacement (duplicates would bias them), the others the ordinary
    bootstrap; the half-sample interval is re-centred on ``delta`` as in
    :meth:`spin_interp.mi.MIEstimator.bootstrap`.
    """
    arrs = [
        np.asarray(
            torch.as_tensor(a).double().cpu().numpy() if isinstance(a, torch.Tensor) else a,
            dtype=np.float64,
        ).reshape(-1)
        for a in (f_before, p_before, f_after, p_after)
    ]
    n = arrs[0].size
    if any(a.size != n for a in arrs):
        raise ValueError(
            f"the four projections must have the same length; got {[a.size for a in arrs]}"
        )
    if n < 8:
        raise ValueError(f"a paired comparison needs at least 8 examples; got {n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha}")
    fb, pb, fa, pa = arrs
    est = _make_estimator(estimator, seed)
    delta = _fit_mi(est, fa, pa) - _fit_mi(est, fb, pb)
    half = _half_scheme(est)
    rng = np.random.default_rng([int(seed), 3])
    samples = np.zeros(int(n_boot))
    ci = (float("nan"), float("nan"))
    if n_boot:
        for b in range(int(n_boot)):
            idx = rng.choice(n, size=n // 2, replace=False) if half else rng.integers(0, n, n)
            samples[b] = _fit_mi(est, fa[idx], pa[idx]) - _fit_mi(est, fb[idx], pb[idx])
        lo, hi = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
        if half:
            shift = delta - float(np.median(samples))
            lo, hi = lo + shift, hi + shift
        ci = (float(lo), float(hi))
    null = np.zeros(int(n_perm))
    pvalue = float("nan")
    if n_perm:
        for b in range(int(n_perm)):
            swap = rng.random(n) < 0.5
            f1, p1 = np.where(swap, fb, fa), np.where(swap, pb, pa)
            f0, p0 = np.where(swap, fa, fb), np.where(swap, pa, pb)
            null[b] = _fit_mi(est, f1, p1) - _fit_mi(est, f0, p0)
        pvalue = float((1 + np.count_nonzero(np.abs(null) >= abs(delta))) / (int(n_perm) + 1))
    return PairedDifference(float(delta), ci, pvalue, "half" if half else "pairs", samples, null)


# --------------------------------------------------------------------------------------------------
# Model-level coupling
# --------------------------------------------------------------------------------------------------


@dataclass
class CouplingProfile:
    """:class:`CouplingResult` for several layers measured in one pass over the data."""

    results: list[CouplingResult]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[int | None]:
        return [r.layer for r in self.results]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self):
        return iter(self.results)

    def __getitem__(self, i: int) -> CouplingResult:
        return self.results[i]

    def at(self, layer: int) -> CouplingResult:
        """The result of one layer."""
        for r in self.results:
            if r.layer == layer:
                return r
        raise KeyError(f"layer {layer} is not in this profile (layers {self.layers})")

    def directions(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """``{layer: (d_f, d_p)}``, to measure another pool or model state with them."""
        return {
            r.layer: (r.direction_f, r.direction_p) for r in self.results if r.layer is not None
        }

    def rows(self) -> list[dict[str, Any]]:
        return [r.row() for r in self.results]

    def to_markdown(self, digits: int = 4) -> str:
        """A markdown table: layer, I(f;p), interval, p-value, cosine, Pearson r, n."""
        lines = [
            "| layer | I(f;p) nats | CI | shuffle p | I within groups | cos(d_f, d_p) | Pearson r "
            "| n |",
            "|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        for r in self.results:
            lines.append(
                f"| {r.layer} | {r.mi:.{digits}f} | [{r.ci[0]:.{digits}f}, {r.ci[1]:.{digits}f}] "
                f"| {r.pvalue:.3g} | {r.mi_within:.{digits}f} | {r.cosine:.3f} | {r.pearson_r:.3f} "
                f"| {r.n_pool} |"
            )
        return "\n".join(lines)

    def save(self, path: str | Path) -> Path:
        tensors: dict[str, torch.Tensor] = {}
        docs = []
        for i, r in enumerate(self.results):
            tensors.update(r._tensors(f"{i}/"))
            docs.append(r._doc())
        return save_artifact(
            path, "coupling_profile", tensors, {"results": docs, "meta": self.meta}
        )

    @classmethod
    def load(cls, path: str | Path) -> CouplingProfile:
        tensors, doc = load_artifact(path, "coupling_profile")
        results = [CouplingResult._from(d, tensors, f"{i}/") for i, d in enumerate(doc["results"])]
        return cls(results, dict(doc["meta"]))

    def __repr__(self) -> str:
        inner = ", ".join(f"L{r.layer}: {r.mi:.3f}" for r in self.results)
        return f"CouplingProfile({inner})"


@dataclass
class CouplingComparison:
    """I(f; p) per layer before and after an edit, on the same pool and with the same directions.

    Attributes:
        before, after: the two profiles.
        differences: one :class:`PairedDifference` per layer (``after - before``).
        meta: fingerprints (before / during the edit), edit summary, settings.
    """

    before: CouplingProfile
    after: CouplingProfile
    differences: list[PairedDifference]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[int | None]:
        return self.before.layers

    @property
    def delta(self) -> list[float]:
        return [d.delta for d in self.differences]

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for b, a, d in zip(self.before, self.after, self.differences, strict=True):
            out.append(
                {
                    "layer": b.layer,
                    "mi_before": b.mi,
                    "mi_after": a.mi,
                    "delta": d.delta,
                    "ci_low": d.ci[0],
                    "ci_high": d.ci[1],
                    "pvalue": d.pvalue,
                    "pearson_before": b.pearson_r,
                    "pearson_after": a.pearson_r,
                    "within_before": b.mi_within,
                    "within_after": a.mi_within,
                    "n_pool": b.n_pool,
                }
            )
        return out

    def to_markdown(self, digits: int = 4) -> str:
        lines = [
            "| layer | I before | I after | Δ (after − before) | paired CI | swap p "
            "| within before | within after | r before | r after |",
            "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        for r in self.rows():
            lines.append(
                f"| {r['layer']} | {r['mi_before']:.{digits}f} | {r['mi_after']:.{digits}f} | "
                f"{r['delta']:+.{digits}f} | "
                f"[{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}] "
                f"| {r['pvalue']:.3g} | {r['within_before']:.{digits}f} | "
                f"{r['within_after']:.{digits}f} | {r['pearson_before']:.3f} | "
                f"{r['pearson_after']:.3f} |"
            )
        return "\n".join(lines)

    def save(self, path: str | Path) -> Path:
        tensors: dict[str, torch.Tensor] = {}
        docs: dict[str, Any] = {"before": [], "after": [], "differences": [], "meta": self.meta}
        for i, (b, a, d) in enumerate(zip(self.before, self.after, self.differences, strict=True)):
            tensors.update(b._tensors(f"before/{i}/"))
            tensors.update(a._tensors(f"after/{i}/"))
            tensors[f"diff/{i}/samples"] = torch.from_numpy(np.asarray(d.samples, dtype=np.float64))
            tensors[f"diff/{i}/null"] = torch.from_numpy(np.asarray(d.null, dtype=np.float64))
            docs["before"].append(b._doc())
            docs["after"].append(a._doc())
            docs["differences"].append(
                {"delta": d.delta, "ci": list(d.ci), "pvalue": d.pvalue, "scheme": d.scheme}
            )
        docs["before_meta"] = self.before.meta
        docs["after_meta"] = self.after.meta
        return save_artifact(path, "coupling_comparison", tensors, docs)

    @classmethod
    def load(cls, path: str | Path) -> CouplingComparison:
        tensors, doc = load_artifact(path, "coupling_comparison")
        before = [
            CouplingResult._from(d, tensors, f"before/{i}/") for i, d in enumerate(doc["before"])
        ]
        after = [
            CouplingResult._from(d, tensors, f"after/{i}/") for i, d in enumerate(doc["after"])
        ]
        diffs = [
            PairedDifference(
                float(d["delta"]),
                (float(d["ci"][0]), float(d["ci"][1])),
                float(d["pvalue"]),
                str(d["scheme"]),
                tensors[f"diff/{i}/samples"].numpy(),
                tensors[f"diff/{i}/null"].numpy(),
            )
            for i, d in enumerate(doc["differences"])
        ]
        return cls(
            CouplingProfile(before, dict(doc["before_meta"])),
            CouplingProfile(after, dict(doc["after_meta"])),
            diffs,
            dict(doc["meta"]),
        )

    def __repr__(self) -> str:
        inner = ", ".join(
            f"L{b.layer}: {b.mi:.3f}->{a.mi:.3f}"
            for b, a in zip(self.before, self.after, strict=True)
        )
        return f"CouplingComparison({inner})"


def _split_safe(examples: Sequence[Any], name: str) -> tuple[list[Any], list[Any]]:
    if examples is None or len(examples) == 0:
        raise ValueError(f"{name} is empty: pass examples with safe=True and safe=False responses")
    safe = [e for e in examples if getattr(e, "safe", None) is True]
    unsafe = [e for e in examples if getattr(e, "safe", None) is False]
    if len(safe) + len(unsafe) != len(examples):
        raise TypeError(f"{name} must hold si.data.Example objects (with a .safe flag)")
    if not safe or not unsafe:
        raise ValueError(
            f"{name} needs examples with safe=True AND safe=False responses (got {len(safe)} safe, "
            f"{len(unsafe)} unsafe); load both, e.g. load_behaviour(..., safe=False)"
        )
    return safe, unsafe


def _default_direction_data(behaviour: str, split: str, n: int, seed: int) -> list[Any]:
    from spin_interp.data import load_behaviour

    return load_behaviour(behaviour, split=split, n=n, seed=seed, safe=True) + load_behaviour(
        behaviour, split=split, n=n, seed=seed, safe=False
    )


def _default_pool(split: str, n: int, seed: int) -> list[Any]:
    from spin_interp.data import load_behaviour

    return [
        ex
        for b in ("fairness", "privacy", "general")
        for ex in load_behaviour(b, split=split, n=n, seed=seed, safe=True)
    ]


def _fingerprint_or_none(examples: Sequence[Any]) -> str | None:
    from spin_interp.data.schema import Example, dataset_fingerprint

    if all(isinstance(e, Example) for e in examples):
        return dataset_fingerprint(examples)
    return None


@dataclass
class _CouplingData:
    groups: dict[str, list[Any]] | None  # f_safe, f_unsafe, p_safe, p_unsafe
    pool: list[Any]
    meta: dict[str, Any]


def _resolve_data(
    need_directions: bool,
    fairness: Sequence[Any] | None,
    privacy: Sequence[Any] | None,
    pool: Sequence[Any] | None,
    n_direction: int,
    n_pool: int,
    direction_split: str,
    pool_split: str,
    seed: int,
) -> _CouplingData:
    meta: dict[str, Any] = {}
    groups = None
    if need_directions:
        if fairness is None:
            fairness = _default_direction_data("fairness", direction_split, n_direction, seed)
            meta["fairness_source"] = f"load_behaviour(split={direction_split!r}, n={n_direction})"
        if privacy is None:
            privacy = _default_direction_data("privacy", direction_split, n_direction, seed)
            meta["privacy_source"] = f"load_behaviour(split={direction_split!r}, n={n_direction})"
        fs, fu = _split_safe(fairness, "fairness")
        ps, pu = _split_safe(privacy, "privacy")
        groups = {"f_safe": fs, "f_unsafe": fu, "p_safe": ps, "p_unsafe": pu}
        meta["direction_fingerprints"] = {
            "fairness": _fingerprint_or_none(fairness),
            "privacy": _fingerprint_or_none(privacy),
        }
    if pool is None:
        pool = _default_pool(pool_split, n_pool, seed)
        meta["pool_source"] = (
            f"load_behaviour(fairness/privacy/general, split={pool_split!r}, n={n_pool}, safe=True)"
        )
    pool = list(pool)
    if len(pool) == 0:
        raise ValueError(
            "the pool is empty: pass examples to project (or pool=None for the default)"
        )
    meta["pool_fingerprint"] = _fingerprint_or_none(pool)
    meta["n_pool"] = len(pool)
    return _CouplingData(groups, pool, meta)


def _gather(
    model: Any,
    layers: list[int],
    groups: dict[str, list[Any]] | None,
    pool: list[Any],
    pool_positions: Positions,
    batch_size: int,
    format: str,
    max_len: int | None,
    progress: bool,
) -> tuple[dict[int, dict[str, torch.Tensor]] | None, dict[int, torch.Tensor]]:
    """One collect_activations call for the direction groups (response positions) and the pool."""
    hooks = {lay: _RESID_HOOK.format(layer=lay) for lay in layers}
    examples: list[Any] = []
    positions: list[str] = []
    spans: dict[str, tuple[int, int]] = {}
    for name, exs in (groups or {}).items():
        spans[name] = (len(examples), len(examples) + len(exs))
        examples.extend(exs)
        positions.extend(["response"] * len(exs))
    spans["pool"] = (len(examples), len(examples) + len(pool))
    examples.extend(pool)
    positions.extend([pool_positions] * len(pool))
    acts = collect_activations(
        model,
        examples,
        list(hooks.values()),
        positions=positions,  # type: ignore[arg-type]
        batch_size=batch_size,
        format=format,
        max_len=max_len,
        progress=progress,
    )
    dir_acts = None
    if groups is not None:
        dir_acts = {lay: {g: acts[hooks[lay]][slice(*spans[g])] for g in groups} for lay in layers}
    pool_acts = {lay: acts[hooks[lay]][slice(*spans["pool"])] for lay in layers}
    return dir_acts, pool_acts


def _given_directions(
    directions: Mapping[int, tuple[Any, Any]] | CouplingProfile, layers: list[int]
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    dirs = directions.directions() if isinstance(directions, CouplingProfile) else directions
    missing = [lay for lay in layers if lay not in dirs]
    if missing:
        raise ValueError(f"no directions given for layers {missing}")
    return {
        lay: (torch.as_tensor(dirs[lay][0]).double(), torch.as_tensor(dirs[lay][1]).double())
        for lay in layers
    }


def _measure_layers(
    layers: list[int],
    dir_acts: dict[int, dict[str, torch.Tensor]] | None,
    given: dict[int, tuple[torch.Tensor, torch.Tensor]] | None,
    pool_acts: dict[int, torch.Tensor],
    groups: list[Any] | None,
    extra: dict[str, Any],
    **stats: Any,
) -> list[CouplingResult]:
    """One :func:`coupling_from_directions` per layer; ``stats`` = estimator, n_boot, n_perm,
    alpha, seed."""
    out = []
    for lay in layers:
        if given is not None:
            d_f, d_p = given[lay]
            meta = {"directions": "given", **extra}
        else:
            assert dir_acts is not None
            a = dir_acts[lay]
            try:
                d_f, norm_f = awareness_direction(a["f_safe"], a["f_unsafe"])
                d_p, norm_p = awareness_direction(a["p_safe"], a["p_unsafe"])
            except ValueError as exc:
                raise ValueError(f"layer {lay}: {exc}") from exc
            meta = {"directions": "computed", "norm_f": norm_f, "norm_p": norm_p, **extra}
        out.append(
            coupling_from_directions(
                d_f,
                d_p,
                pool_acts[lay],
                layer=lay,
                groups=groups,
                meta=meta,
                **stats,
            )
        )
    return out


def _pool_groups(pool: Sequence[Any]) -> list[str] | None:
    """Each pool example's behaviour, when every example has one."""
    groups = [getattr(e, "behaviour", None) for e in pool]
    return None if any(g is None for g in groups) else groups  # type: ignore[return-value]


def coupling_profile(
    model: Any,
    layers: int | Sequence[int],
    *,
    fairness: Sequence[Any] | None = None,
    privacy: Sequence[Any] | None = None,
    pool: Sequence[Any] | None = None,
    directions: Mapping[int, tuple[Any, Any]] | CouplingProfile | None = None,
    estimator: EstimatorSpec = "ksg",
    n_boot: int = 200,
    n_perm: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    n_direction: int = 32,
    n_pool: int = 32,
    direction_split: str = "val",
    pool_split: str = "eval",
    pool_positions: Positions = "response",
    batch_size: int = 8,
    format: str = "chat",
    max_len: int | None = 512,
    progress: bool = True,
) -> CouplingProfile:
    """I(f; p) at several layers from one forward pass per example.

    Args:
        model: a TransformerBridge.
        layers: layer indices (``blocks.L.hook_resid_post`` is read for each).
        fairness: fairness examples with BOTH safe and unsafe responses (split by ``.safe``)
            that define ``d_f``; default ``n_direction`` of each from ``direction_split``.
        privacy: the same for ``d_p``.
        pool: examples to project (with the responses they carry); default ``n_pool`` safe
            fairness, privacy and general examples each from ``pool_split``.
        directions: ``{layer: (d_f, d_p)}`` or a previous :class:`CouplingProfile` to reuse its
            directions (then ``fairness``/``privacy`` are not read).
        estimator: ``"ksg"`` (default), ``"gaussian"`` or a :mod:`spin_interp.mi` estimator.
        n_boot, n_perm, alpha, seed: bootstrap replicates, shuffle permutations, interval level,
            seed (the same seed at every layer).
        n_direction, n_pool, direction_split, pool_split: sizes and splits of the default data
            (``"val"`` for directions and ``"eval"`` for the pool keeps fitting and measuring
            apart, and both apart from the ``"score"`` split SPIN selects on).
        pool_positions: positions averaged for the pool (``"response"``, ``"prompt"`` or
            ``"last_prompt"``); directions always use the response tokens.
        batch_size, format, max_len, progress: see :func:`collect_activations`.

    Returns:
        A :class:`CouplingProfile` (one :class:`CouplingResult` per layer, in layer order).
    """
    t0 = time.perf_counter()
    chosen = _check_layers(model, layers)
    given = _given_directions(directions, chosen) if directions is not None else None
    data = _resolve_data(
        given is None,
        fairness,
        privacy,
        pool,
        n_direction,
        n_pool,
        direction_split,
        pool_split,
        seed,
    )
    fingerprint = model_fingerprint(model)
    dir_acts, pool_acts = _gather(
        model, chosen, data.groups, data.pool, pool_positions, batch_size, format, max_len, progress
    )
    t_fwd = time.perf_counter() - t0
    sizes = {f"n_{g}": len(v) for g, v in (data.groups or {}).items()}
    extra = {"model_fingerprint": fingerprint, "pool_positions": pool_positions, **sizes}
    stats = dict(estimator=estimator, n_boot=n_boot, n_perm=n_perm, alpha=alpha, seed=seed)
    results = _measure_layers(
        chosen, dir_acts, given, pool_acts, _pool_groups(data.pool), extra, **stats
    )
    meta = {
        **data.meta,
        "model_fingerprint": fingerprint,
        "hook": _RESID_HOOK,
        "layers": chosen,
        "directions": "given" if given is not None else "computed",
        "pool_positions": pool_positions,
        "seconds_forward": round(t_fwd, 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    log.info(
        "coupling_profile: %d layers, %d pool examples, %.1f s (%.1f s forward)",
        len(chosen),
        len(data.pool),
        meta["seconds"],
        t_fwd,
    )
    return CouplingProfile(results, meta)


def coupling_mi(model: Any, layer: int, **kwargs: Any) -> CouplingResult:
    """I(f; p) at one layer: :func:`coupling_profile` with ``layers=[layer]`` (same arguments)."""
    if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool):
        raise TypeError(
            f"layer must be one integer (use coupling_profile for several); got {layer!r}"
        )
    return coupling_profile(model, [int(layer)], **kwargs)[0]


def compare_coupling(
    model: Any,
    edit: Any,
    layers: int | Sequence[int],
    *,
    fairness: Sequence[Any] | None = None,
    privacy: Sequence[Any] | None = None,
    pool: Sequence[Any] | None = None,
    directions: Mapping[int, tuple[Any, Any]] | CouplingProfile | None = None,
    recompute_directions: bool = False,
    estimator: EstimatorSpec = "ksg",
    n_boot: int = 200,
    n_perm: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    n_direction: int = 32,
    n_pool: int = 32,
    direction_split: str = "val",
    pool_split: str = "eval",
    pool_positions: Positions = "response",
    batch_size: int = 8,
    format: str = "chat",
    max_len: int | None = 512,
    progress: bool = True,
) -> CouplingComparison:
    """Does the edit lower I(F; P)? I(f; p) per layer before and with ``edit`` applied.

    The pool is the same in both conditions. The directions are computed (or taken from
    ``directions``) on the model BEFORE the edit and reused after it, so the comparison asks
    how the edit changes the joint distribution of the pool along fixed axes; with
    ``recompute_directions=True`` they are recomputed on the edited model from the same
    direction data (then a change can also come from the axes moving). The edit is applied with
    ``edit.applied()`` and reverted afterwards (also on error); the model's fingerprint is
    checked to be unchanged at the end.

    Returns:
        A :class:`CouplingComparison` with, per layer, the two results and a
        :class:`PairedDifference` (``after - before``, paired interval and swap-test p-value).
        Other arguments as in :func:`coupling_profile`.
    """
    t0 = time.perf_counter()
    chosen = _check_layers(model, layers)
    if not hasattr(edit, "applied") or not hasattr(edit, "is_applied"):
        raise TypeError(f"edit must be a spin_interp.ablate.WeightEdit; got {type(edit).__name__}")
    if edit.is_applied:
        raise RuntimeError(
            "the edit is already applied: revert it first, compare_coupling applies it"
        )
    if getattr(edit, "model", model) is not model:
        raise ValueError("the edit belongs to another model object")
    given = _given_directions(directions, chosen) if directions is not None else None
    data = _resolve_data(
        given is None or recompute_directions,
        fairness,
        privacy,
        pool,
        n_direction,
        n_pool,
        direction_split,
        pool_split,
        seed,
    )
    fp_before = model_fingerprint(model)
    dir_b, pool_b = _gather(
        model, chosen, data.groups if given is None else None, data.pool, pool_positions,
        batch_size, format, max_len, progress,
    )  # fmt: skip
    with edit.applied():
        fp_edited = model_fingerprint(model)
        dir_a, pool_a = _gather(
            model, chosen, data.groups if recompute_directions else None, data.pool,
            pool_positions, batch_size, format, max_len, progress,
        )  # fmt: skip
    fp_after = model_fingerprint(model)
    if fp_after != fp_before:
        raise RuntimeError(
            f"the model changed after reverting the edit ({fp_before} -> {fp_after}); this is a bug"
        )
    if fp_edited == fp_before and getattr(edit, "n_entries", lambda: 0)():
        log.warning(
            "applying the edit did not change any weight (it writes the values already there)"
        )
    base = {
        "pool_positions": pool_positions,
        **{f"n_{g}": len(v) for g, v in (data.groups or {}).items()},
    }
    stats = dict(estimator=estimator, n_boot=n_boot, n_perm=n_perm, alpha=alpha, seed=seed)
    groups = _pool_groups(data.pool)
    before = _measure_layers(
        chosen, dir_b, given, pool_b, groups, {**base, "model_fingerprint": fp_before}, **stats
    )
    fixed = {r.layer: (r.direction_f, r.direction_p) for r in before}
    after = _measure_layers(
        chosen,
        dir_a if recompute_directions else None,
        None if recompute_directions else fixed,
        pool_a,
        groups,
        {**base, "model_fingerprint": fp_edited},
        **stats,
    )
    diffs = [
        paired_coupling_difference(b.f, b.p, a.f, a.p, **stats)
        for b, a in zip(before, after, strict=True)
    ]
    summary = edit.summary() if hasattr(edit, "summary") else {}
    meta = {
        **data.meta,
        "model_fingerprint": fp_before,
        "edited_fingerprint": fp_edited,
        "edit": _jsonable(summary),
        "layers": chosen,
        "recompute_directions": bool(recompute_directions),
        "hook": _RESID_HOOK,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    common = {k: v for k, v in meta.items() if k not in ("edited_fingerprint", "edit")}
    return CouplingComparison(
        CouplingProfile(before, {**common, "state": "before"}),
        CouplingProfile(after, {**common, "model_fingerprint": fp_edited, "state": "after"}),
        diffs,
        meta,
    )


def _jsonable(x: Any) -> Any:
    import json

    try:
        json.dumps(x)
        return x
    except TypeError:
        return json.loads(json.dumps(x, default=str))
