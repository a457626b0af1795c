"""First-order importance scores of weights (SNIP, Wanda) and of neurons, from one pass per example.

SNIP (the SPIN paper's score): ``S(W)_ij = |W_ij| * sum_n |dl_n/dW_ij|`` where ``l_n`` is the mean
next-token cross-entropy over the response tokens of example ``n``. Each example gets its own
forward and backward pass covering every targeted matrix at once; the absolute gradient is added
to an fp32 accumulator by a hook as soon as the gradient is ready, and the gradient is dropped
(so memory holds one gradient at a time, not one per matrix).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int

from spin_interp._io import load_artifact, save_artifact
from spin_interp.models import (
    Encoded,
    data_fingerprint,
    encode_examples,
    hf_model_of,
    hf_parameters,
    model_fingerprint,
    weight_layout,
)

log = logging.getLogger(__name__)

METHODS = ("snip", "wanda")
_MLP_RE = re.compile(
    r"\.mlp\.(gate_proj|up_proj|down_proj|c_fc|c_proj|fc1|fc2|fc_in|fc_out|w1|w2|w3)\.weight$"
)
_ATTN_RE = re.compile(
    r"\.(self_attn|attn|attention)\.(q_proj|k_proj|v_proj|o_proj|c_attn|c_proj|out_proj)\.weight$"
)
_LAYER_RE = re.compile(r"\.(?:layers|h|blocks)\.(\d+)\.")


def layer_of(name: str) -> int | None:
    """Decoder layer index in an HF weight name (``model.layers.3.mlp...`` -> 3)."""
    m = _LAYER_RE.search("." + name)
    return int(m.group(1)) if m else None


def module_of(name: str) -> str:
    """Short module label of a weight name (``...mlp.down_proj.weight`` -> ``mlp.down_proj``)."""
    parts = name.split(".")
    return ".".join(parts[-3:-1]) if len(parts) >= 3 else name


def resolve_targets(model: Any, targets: str | Sequence[str]) -> list[str]:
    """HF names of the weight matrices selected by ``targets`` ("mlp", "attn", "all" or names)."""
    params = hf_parameters(model)
    if isinstance(targets, str):
        if targets == "mlp":
            names = [n for n in params if _MLP_RE.search(n)]
        elif targets == "attn":
            names = [n for n in params if _ATTN_RE.search(n)]
        elif targets == "all":
            names = [n for n in params if _MLP_RE.search(n) or _ATTN_RE.search(n)]
        else:
            raise ValueError(
                f"unknown targets {targets!r}: use 'mlp', 'attn', 'all' or a list of HF weight "
                f"names such as {next(iter(sorted(params)), '?')!r}"
            )
    else:
        names = list(targets)
        unknown = [n for n in names if n not in params]
        if unknown:
            example = [n for n in params if _MLP_RE.search(n)][:2]
            raise ValueError(
                f"these targets are not weights of the model: {unknown[:5]}; names look like "
                f"{example}"
            )
        bad = [n for n in names if params[n].ndim != 2]
        if bad:
            raise ValueError(f"targets must be 2-D weight matrices, got {bad[:5]}")
    if not names:
        raise ValueError(f"targets={targets!r} matches no weight matrix of this model")
    return sorted(names, key=_natural_key)


def _natural_key(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def top_sorted(flat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest entries of a 1-D tensor, descending, ties broken by lower index first."""
    n = flat.numel()
    k = min(k, n)
    if k <= 0:
        return flat.new_empty(0), torch.empty(0, dtype=torch.long, device=flat.device)
    if k == n:
        order = torch.sort(flat, descending=True, stable=True).indices
        return flat[order], order
    thresh = torch.topk(flat, k, sorted=False).values.min()
    cand = torch.nonzero(flat >= thresh).squeeze(1)  # ascending indices
    order = torch.sort(flat[cand], descending=True, stable=True).indices[:k]
    idx = cand[order]
    return flat[idx], idx


@dataclass
class WeightScores:
    """Importance scores per weight matrix, keyed by HF state-dict name.

    Sparse form (default): the top ``ceil(keep_fraction * numel)`` entries of each matrix, as values
    (descending) and flat indices into the matrix in HF layout. Dense form: the full tensors.
    """

    shapes: dict[str, tuple[int, ...]]
    values: dict[str, torch.Tensor]
    indices: dict[str, torch.Tensor] | None
    meta: dict[str, Any] = field(default_factory=dict)

    # -- access -------------------------------------------------------------------------------
    @property
    def dense(self) -> bool:
        return self.indices is None

    @property
    def fingerprint(self) -> str | None:
        return self.meta.get("model_fingerprint")

    def names(self) -> list[str]:
        return list(self.shapes)

    def numel(self, name: str) -> int:
        return math.prod(self.shapes[name])

    def n_kept(self, name: str) -> int:
        return self.numel(name) if self.dense else int(self.values[name].numel())

    def __contains__(self, name: str) -> bool:
        return name in self.shapes

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, name: str) -> torch.Tensor:
        self._check_name(name)
        if not self.dense:
            raise KeyError(
                "these scores are sparse (top-k only): use scores.topk(name), or score with "
                "dense=True to index the full tensor"
            )
        return self.values[name]

    def _check_name(self, name: str) -> None:
        if name not in self.shapes:
            raise KeyError(f"{name!r} was not scored; scored names look like {self.names()[:3]}")

    def topk(self, name: str, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, flat indices) of the top-k entries of ``name``, descending, ties by index."""
        self._check_name(name)
        if self.dense:
            flat = self.values[name].reshape(-1)
            return top_sorted(flat, flat.numel() if k is None else k)
        vals, idx = self.values[name], self.indices[name]  # type: ignore[index]
        if k is not None:
            if k > vals.numel():
                raise ValueError(
                    f"{name}: {k} entries requested but only {vals.numel()} were kept; rescore "
                    "with a larger keep_fraction"
                )
            vals, idx = vals[:k], idx[:k]
        return vals, idx

    def top(self, k: int = 10) -> list[dict[str, Any]]:
        """The ``k`` highest-scoring entries over all matrices (name, row, col, index, score)."""
        rows = []
        for name in self.names():
            vals, idx = self.topk(name, min(k, self.n_kept(name)))
            cols = self.shapes[name][-1]
            for v, i in zip(vals.tolist(), idx.tolist(), strict=True):
                rows.append(
                    {"name": name, "index": i, "row": i // cols, "col": i % cols, "score": v}
                )
        rows.sort(key=lambda r: (-r["score"], r["name"], r["index"]))
        return rows[:k]

    def layer_summary(self) -> list[dict[str, Any]]:
        """Per decoder layer: matrices scored, entries kept, sum and max of the kept scores."""
        out: dict[int | None, dict[str, Any]] = {}
        for name in self.names():
            layer = layer_of(name)
            vals = self.values[name]
            row = out.setdefault(
                layer, {"layer": layer, "matrices": 0, "kept": 0, "sum": 0.0, "max": 0.0}
            )
            row["matrices"] += 1
            row["kept"] += int(vals.numel())
            row["sum"] += float(vals.double().sum())
            row["max"] = max(row["max"], float(vals.max()) if vals.numel() else 0.0)
        return [out[k] for k in sorted(out, key=lambda x: -1 if x is None else x)]

    def nbytes(self) -> int:
        total = sum(v.numel() * v.element_size() for v in self.values.values())
        if self.indices is not None:
            total += sum(v.numel() * v.element_size() for v in self.indices.values())
        return total

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        tensors = {f"values/{n}": v for n, v in self.values.items()}
        if self.indices is not None:
            tensors.update({f"indices/{n}": v for n, v in self.indices.items()})
        meta = dict(self.meta)
        meta["shapes"] = {n: list(s) for n, s in self.shapes.items()}
        meta["dense"] = self.dense
        return save_artifact(path, "weight_scores", tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> WeightScores:
        tensors, meta = load_artifact(path, "weight_scores")
        shapes = {n: tuple(s) for n, s in meta.pop("shapes").items()}
        dense = meta.pop("dense")
        values, indices = {}, {}
        for n, shape in shapes.items():
            key = f"values/{n}"
            if key not in tensors:
                raise ValueError(f"{path}: missing tensor {key}")
            values[n] = tensors[key]
            if dense:
                if tuple(values[n].shape) != shape:
                    raise ValueError(f"{path}: {n} has shape {tuple(values[n].shape)}, not {shape}")
            else:
                indices[n] = tensors[f"indices/{n}"]
                if indices[n].shape != values[n].shape or (
                    indices[n].numel() and int(indices[n].max()) >= math.prod(shape)
                ):
                    raise ValueError(f"{path}: indices of {n} do not fit shape {shape}")
        return cls(shapes, values, None if dense else indices, meta)

    def __repr__(self) -> str:
        kept = sum(self.n_kept(n) for n in self.names())
        return (
            f"WeightScores(method={self.meta.get('method')!r}, matrices={len(self)}, "
            f"kept={kept}, dense={self.dense}, model={self.fingerprint})"
        )


# --------------------------------------------------------------------------------------------------
# scoring


def _response_loss(
    logits: Float[torch.Tensor, "batch pos d_vocab"], labels: Int[torch.Tensor, "batch pos"]
) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not -100."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        labels[:, 1:].reshape(-1),
        ignore_index=-100,
    )


def _forward_logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    out = model(ids)
    return out.logits if hasattr(out, "logits") else out


class _GradAccumulator:
    """Adds |grad| of each target (and of the bridge's views of it) into fp32 accumulators."""

    def __init__(self, model: Any, names: list[str], device: torch.device) -> None:
        self.params = hf_parameters(model)
        self.acc = {
            n: torch.zeros(self.params[n].shape, dtype=torch.float32, device=device) for n in names
        }
        self.handles: list[Any] = []
        self.saved_flags: list[tuple[torch.Tensor, bool]] = []
        all_params = list(model.parameters())
        for p in all_params:
            self.saved_flags.append((p, p.requires_grad))
            p.requires_grad_(False)
        for n in names:
            target = self.params[n]
            if not target.is_contiguous():
                raise ValueError(f"{n} is not contiguous; cannot map gradients onto it")
            sources = [p for p in all_params if _same_storage(p, target)]
            for p in sources:
                offset = p.storage_offset() - target.storage_offset()
                view = self.acc[n].as_strided(p.shape, p.stride(), offset)
                p.requires_grad_(True)
                self.handles.append(p.register_post_accumulate_grad_hook(_make_hook(view)))

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        for p, flag in self.saved_flags:
            p.grad = None
            p.requires_grad_(flag)


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.device != b.device or a.numel() == 0:
        return False
    if a is b:
        return True
    try:
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    except RuntimeError:  # pragma: no cover - meta tensors
        return False


def _make_hook(view: torch.Tensor):
    def hook(p: torch.Tensor) -> None:
        view.add_(p.grad.detach().abs())
        p.grad = None

    return hook


def _progress(it: Iterable, total: int, desc: str, progress: bool):
    if not progress:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, leave=False)


def _prepare(model, examples, format, max_len):
    encoded, skipped = encode_examples(model, examples, format=format, max_len=max_len)
    if not encoded:
        if skipped:
            raise ValueError(
                f"all {skipped} examples were truncated away (no response token left to score); "
                "raise max_len or shorten the prompts"
            )
        raise ValueError("no examples to score: the dataset is empty")
    if skipped:
        log.warning(
            "%d examples had no response token left after truncation and were skipped", skipped
        )
    return encoded, skipped


def _device_of(model: Any) -> torch.device:
    return next(hf_model_of(model).parameters()).device


def score_weights(
    model: Any,
    examples: Iterable[Any],
    method: str = "snip",
    targets: str | Sequence[str] = "mlp",
    keep_fraction: float = 1e-3,
    dense: bool = False,
    format: str = "chat",
    max_len: int | None = 512,
    progress: bool = True,
) -> WeightScores:
    """Score every entry of the targeted weight matrices on ``examples``.

    Args:
        model: a bridge from :func:`spin_interp.load_model` (or a plain HF causal LM).
        examples: ``si.data.Example`` objects, or ``(input_ids, labels)`` pairs with -100 on
            positions that are not scored (used as given).
        method: ``"snip"`` (``|W| * sum_n |dl_n/dW|``, one forward+backward per example) or
            ``"wanda"`` (``|W_ij| * ||X_j||_2`` over the response tokens' inputs to that matrix).
        targets: ``"mlp"``, ``"attn"``, ``"all"`` or a list of HF weight names.
        keep_fraction: per matrix keep the top ``ceil(keep_fraction * numel)`` entries.
        dense: keep full tensors instead of the top entries.
        format: ``"chat"`` or ``"plain"`` (see :func:`spin_interp.models.encode_example`).
        max_len: truncation length (the response is kept).
        progress: show a progress bar.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if not dense and not (0 < keep_fraction <= 1):
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    names = resolve_targets(model, targets)
    encoded, skipped = _prepare(model, examples, format, max_len)
    fingerprint = model_fingerprint(model)
    device = _device_of(model)
    was_training = model.training
    model.eval()
    try:
        if method == "snip":
            acc = _snip(model, names, encoded, device, progress)
        else:
            acc = _wanda(model, names, encoded, device, progress)
    finally:
        model.train(was_training)
    params = hf_parameters(model)
    shapes = {n: tuple(params[n].shape) for n in names}
    values: dict[str, torch.Tensor] = {}
    indices: dict[str, torch.Tensor] | None = None if dense else {}
    for n in names:
        if method == "snip":
            score = acc[n].mul_(params[n].detach().abs().float())
        else:
            score = acc[n]
        if not torch.isfinite(score).all():
            raise FloatingPointError(f"non-finite scores in {n}: check the model and the data")
        if dense:
            values[n] = score.cpu()
        else:
            k = math.ceil(keep_fraction * score.numel())
            v, i = top_sorted(score.reshape(-1), k)
            values[n], indices[n] = v.cpu(), i.cpu()  # type: ignore[index]
        acc[n] = None  # type: ignore[assignment]
    meta = {
        "method": method,
        "targets": targets if isinstance(targets, str) else list(targets),
        "model_fingerprint": fingerprint,
        "data_fingerprint": data_fingerprint(encoded),
        "n_examples": len(encoded),
        "n_skipped": skipped,
        "n_tokens": int(sum(e.n_targets for e in encoded)),
        "format": format,
        "max_len": max_len,
        "keep_fraction": None if dense else keep_fraction,
    }
    return WeightScores(shapes, values, indices, meta)


def _snip(model, names, encoded: list[Encoded], device, progress) -> dict[str, torch.Tensor]:
    accumulator = _GradAccumulator(model, names, device)
    try:
        for enc in _progress(encoded, len(encoded), "snip", progress):
            ids = enc.input_ids[None].to(device)
            labels = enc.labels[None].to(device)
            loss = _response_loss(_forward_logits(model, ids), labels)
            loss.backward()
        return accumulator.acc
    finally:
        accumulator.close()


@torch.no_grad()
def _wanda(model, names, encoded: list[Encoded], device, progress) -> dict[str, torch.Tensor]:
    params = hf_parameters(model)
    hf = hf_model_of(model)
    owners = {}  # target name -> (input axis of the weight, modules whose weight shares it)
    for n in names:
        mods = [
            m
            for m in hf.modules()
            if isinstance(getattr(m, "weight", None), torch.Tensor)
            and _same_storage(m.weight, params[n])
        ]
        in_dim = 1 if weight_layout(model, n) == "out_in" else 0
        owners[n] = (in_dim, mods)
    sumsq = {
        n: torch.zeros(params[n].shape[owners[n][0]], dtype=torch.float32, device=device)
        for n in names
    }
    state: dict[str, Any] = {"mask": None, "seen": set()}
    handles = []

    def make_hook(name: str):
        def hook(module, inputs, output):
            if name in state["seen"]:
                return
            x = inputs[0]
            mask = state["mask"]
            if x.shape[-1] != sumsq[name].numel():
                raise RuntimeError(f"input width of {name} does not match its weight")
            xs = x.reshape(-1, x.shape[-1])[mask.reshape(-1)].float()
            sumsq[name].add_((xs * xs).sum(0))
            state["seen"].add(name)

        return hook

    try:
        for n in names:
            for m in owners[n][1]:
                handles.append(m.register_forward_hook(make_hook(n)))
        for enc in _progress(encoded, len(encoded), "wanda", progress):
            state["mask"] = (enc.labels != -100)[None].to(device)
            state["seen"] = set()
            _forward_logits(model, enc.input_ids[None].to(device))
            missing = set(names) - state["seen"]
            if missing:
                raise RuntimeError(
                    f"wanda saw no input for {sorted(missing)[:3]}: this architecture's bridge "
                    "does not call those modules; score them with method='snip'"
                )
    finally:
        for h in handles:
            h.remove()
    out = {}
    for n in names:
        in_dim = owners[n][0]
        norm = sumsq[n].sqrt()
        norm = norm[:, None] if in_dim == 0 else norm[None, :]
        out[n] = params[n].detach().abs().float() * norm
    return out


# --------------------------------------------------------------------------------------------------
# neurons


def _keeper(store: dict[str, torch.Tensor], name: str):
    """A forward hook that stores its activation under the name it was registered with."""

    def keep(tensor: torch.Tensor, hook: Any) -> torch.Tensor:
        store[name] = tensor
        return tensor

    return keep


_NEURON_HOOKS = {"mlp": "blocks.{layer}.mlp.hook_post", "attn": "blocks.{layer}.attn.hook_z"}


def neuron_modules(model: Any, kind: str) -> list[str]:
    """HF module names of every layer's MLP (``kind="mlp"``) or attention block, in layer order."""
    pattern = _MLP_RE if kind == "mlp" else _ATTN_RE
    found: dict[int, str] = {}
    for name in hf_parameters(model):
        m = pattern.search(name)
        layer = layer_of(name)
        if m and layer is not None:
            found.setdefault(layer, name[: m.start()] + "." + m.group(0).split(".")[1])
    return [found[k] for k in sorted(found)]


def score_neurons(
    model: Any,
    examples: Iterable[Any],
    targets: str = "mlp",
    format: str = "chat",
    max_len: int | None = 512,
    progress: bool = True,
) -> WeightScores:
    """Attribution of MLP units or attention heads: ``sum |activation * dl/dactivation|``.

    Read from bridge hooks (``blocks.L.mlp.hook_post[..., j]`` for MLP unit j; for head h, the dot
    product of ``blocks.L.attn.hook_z[..., h, :]`` with its gradient), summed over the response
    token positions of every example, one forward+backward per example. The result is a dense
    :class:`WeightScores` keyed by HF module name (``model.layers.3.mlp``) with one entry per unit,
    so :func:`spin_interp.select.select_coupled` and :func:`spin_interp.ablate.zero_neurons` take it
    as they are.
    """
    if targets not in _NEURON_HOOKS:
        raise ValueError(f"neuron targets must be 'mlp' or 'attn', got {targets!r}")
    if not hasattr(model, "hook_dict"):
        raise TypeError("score_neurons needs a TransformerBridge (spin_interp.load_model)")
    modules = neuron_modules(model, targets)
    hooks = [_NEURON_HOOKS[targets].format(layer=i) for i in range(len(modules))]
    missing = [h for h in hooks if h not in model.hook_dict]
    if missing:
        raise ValueError(f"this bridge has no hook {missing[0]}")
    encoded, skipped = _prepare(model, examples, format, max_len)
    fingerprint = model_fingerprint(model)
    device = _device_of(model)
    acc: dict[str, torch.Tensor] = {}
    saved = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    model.eval()
    try:
        for p, _ in saved:  # activations must require grad; autograd.grad skips the weights
            p.requires_grad_(True)
        for enc in _progress(encoded, len(encoded), "neurons", progress):
            acts: dict[str, torch.Tensor] = {}
            ids = enc.input_ids[None].to(device)
            labels = enc.labels[None].to(device)
            with model.hooks(fwd_hooks=[(h, _keeper(acts, h)) for h in hooks]):
                loss = _response_loss(_forward_logits(model, ids), labels)
            grads = torch.autograd.grad(loss, [acts[h] for h in hooks])
            mask = (labels != -100)[0]
            for module, h, g in zip(modules, hooks, grads, strict=True):
                prod = (acts[h].detach() * g)[0][mask].float()  # [resp_pos, units(, d_head)]
                if targets == "attn":
                    prod = prod.sum(-1)
                contrib = prod.abs().sum(0)
                acc[module] = acc[module] + contrib if module in acc else contrib
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
            p.grad = None
        model.train(was_training)
    meta = {
        "method": "neuron_attribution",
        "granularity": "neuron",
        "targets": targets,
        "model_fingerprint": fingerprint,
        "data_fingerprint": data_fingerprint(encoded),
        "n_examples": len(encoded),
        "n_skipped": skipped,
        "n_tokens": int(sum(e.n_targets for e in encoded)),
        "format": format,
        "max_len": max_len,
        "keep_fraction": None,
    }
    shapes = {m: tuple(acc[m].shape) for m in modules}
    return WeightScores(shapes, {m: acc[m].cpu() for m in modules}, None, meta)
