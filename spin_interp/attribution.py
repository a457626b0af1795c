"""First-order importance scores of weights (SNIP, Wanda) and of neurons, from one pass per example.

SNIP (the SPIN paper's score): ``S(W)_ij = |W_ij| * sum_n |dl_n/dW_ij|`` where ``l_n`` is the mean
next-token cross-entropy over the response tokens of example ``n``. Each example gets its own
forward and backward pass covering every targeted matrix at once; the absolute gradient is added
to an fp32 accumulator by a hook as soon as the gradient is ready, and the gradient is dropped
(so memory holds one gradient at a time, not one per matrix).

Memory model (details and measurements in ``docs/scale.md``): the model's own weights, one fp32
accumulator per TARGETED matrix (untargeted parameters have ``requires_grad=False``, so autograd
never computes their gradients), one in-flight gradient, and the activations of one example. With
``layer_chunk=k`` the accumulators exist for ``k`` layers at a time (one pass over the data per
block of layers). With ``dense=False`` the top-k is taken on the accumulator's device and only the
kept values and indices reach the host. ``distributed=True`` shards the examples over the ranks of
a ``torchrun`` job and sums the accumulators across ranks before the top-k; ``checkpoint_dir``
makes long runs resumable.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int

from spin_interp._io import load_artifact, save_artifact
from spin_interp.distributed import DistContext
from spin_interp.distributed import require as dist_require
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
    """Adds |grad| of each target (and of the bridge's views of it) into fp32 accumulators.

    Every parameter of the model gets ``requires_grad=False`` except the targets (and the bridge's
    views that share their storage), so autograd never computes a gradient of an untargeted
    parameter and never records the graph below the lowest targeted layer. Each accumulator lives
    on its parameter's device (models spread over several devices by ``device_map`` work). A hook
    adds the gradient into the accumulator as soon as autograd has produced it and drops it, so at
    most one matrix's gradient is alive at a time. ``close()`` restores the flags.
    """

    def __init__(
        self, model: Any, names: list[str], acc: dict[str, torch.Tensor] | None = None
    ) -> None:
        self.model = model
        self.params = hf_parameters(model)
        self.acc = acc if acc is not None else _zeros_like_targets(self.params, names)
        self.handles: list[Any] = []
        self.saved_flags: list[tuple[torch.Tensor, bool]] = []
        all_params = list(model.parameters())
        for p in all_params:
            self.saved_flags.append((p, p.requires_grad))
            p.requires_grad_(False)
        try:
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
        except BaseException:
            self.close()
            raise

    def step(self, enc: Encoded, device: torch.device) -> None:
        """One forward and one backward pass of one example."""
        ids = enc.input_ids[None].to(device)
        labels = enc.labels[None].to(device)
        loss = _response_loss(_forward_logits(self.model, ids), labels)
        loss.backward()

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        for p, flag in self.saved_flags:
            p.grad = None
            p.requires_grad_(flag)


class _InputNormAccumulator:
    """Wanda: adds the squared inputs of each targeted matrix (response tokens only) per column."""

    def __init__(
        self, model: Any, names: list[str], acc: dict[str, torch.Tensor] | None = None
    ) -> None:
        self.model = model
        params = hf_parameters(model)
        hf = hf_model_of(model)
        self.owners: dict[str, list[Any]] = {}  # target -> modules whose weight shares it
        if acc is None:
            acc = {}
            for n in names:
                width = params[n].shape[_input_axis(model, n)]
                acc[n] = torch.zeros(width, dtype=torch.float32, device=params[n].device)
        self.acc = acc
        for n in names:
            self.owners[n] = [
                m
                for m in hf.modules()
                if isinstance(getattr(m, "weight", None), torch.Tensor)
                and _same_storage(m.weight, params[n])
            ]
        self.mask: torch.Tensor | None = None
        self.seen: set[str] = set()
        self.handles = [
            m.register_forward_hook(self._make_hook(n)) for n in names for m in self.owners[n]
        ]

    def _make_hook(self, name: str):
        def hook(module, inputs, output):
            if name in self.seen:
                return
            x = inputs[0]
            acc = self.acc[name]
            if x.shape[-1] != acc.numel():
                raise RuntimeError(f"input width of {name} does not match its weight")
            mask = self.mask.to(x.device).reshape(-1)  # type: ignore[union-attr]
            xs = x.reshape(-1, x.shape[-1])[mask].float()
            acc.add_((xs * xs).sum(0).to(acc.device))
            self.seen.add(name)

        return hook

    @torch.no_grad()
    def step(self, enc: Encoded, device: torch.device) -> None:
        """One forward pass of one example."""
        self.mask = (enc.labels != -100)[None].to(device)
        self.seen = set()
        _forward_logits(self.model, enc.input_ids[None].to(device))
        missing = set(self.acc) - self.seen
        if missing:
            raise RuntimeError(
                f"wanda saw no input for {sorted(missing)[:3]}: this architecture's bridge "
                "does not call those modules; score them with method='snip'"
            )

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _zeros_like_targets(
    params: dict[str, torch.Tensor], names: list[str]
) -> dict[str, torch.Tensor]:
    """fp32 zeros shaped like each target, on that target's device (whatever the model dtype)."""
    return {
        n: torch.zeros(params[n].shape, dtype=torch.float32, device=params[n].device) for n in names
    }


def _input_axis(model: Any, name: str) -> int:
    """Axis of a weight that indexes the matrix's input features."""
    return 1 if weight_layout(model, name) == "out_in" else 0


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


def n_layers(model: Any) -> int:
    """Number of decoder layers of ``model`` (from its config, else from its weight names)."""
    config = hf_model_of(model).config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    n = getattr(config, "num_hidden_layers", None)
    if isinstance(n, int) and n > 0:
        return n
    layers = [layer for layer in map(layer_of, hf_parameters(model)) if layer is not None]
    if not layers:
        raise ValueError("cannot tell how many decoder layers this model has")
    return max(layers) + 1


def plan_chunks(model: Any, names: Sequence[str], layer_chunk: int | None) -> list[list[str]]:
    """Group the targeted matrices into scoring passes.

    ``layer_chunk=None``: one pass for all of them. ``layer_chunk=k``: one pass per block of ``k``
    consecutive decoder layers (layers ``0..k-1``, ``k..2k-1``, ...) that holds a target, in
    layer order; targets outside the decoder layers (none for ``"mlp"``/``"attn"``/``"all"``)
    form one last pass.
    """
    if layer_chunk is None:
        return [list(names)]
    total = n_layers(model)
    if isinstance(layer_chunk, bool) or not isinstance(layer_chunk, int):
        raise TypeError(f"layer_chunk must be an int or None, got {layer_chunk!r}")
    if not 1 <= layer_chunk <= total:
        raise ValueError(
            f"layer_chunk must be between 1 and the model's number of layers ({total}), got "
            f"{layer_chunk}; use layer_chunk=None for one pass over all layers"
        )
    blocks: dict[int, list[str]] = {}
    outside: list[str] = []
    for n in names:
        layer = layer_of(n)
        if layer is None:
            outside.append(n)
        else:
            blocks.setdefault(layer // layer_chunk, []).append(n)
    plan = [blocks[b] for b in sorted(blocks)]
    if outside:
        plan.append(outside)
    return plan


def _finish_chunk(
    model: Any,
    method: str,
    names: list[str],
    acc: dict[str, torch.Tensor],
    dense: bool,
    keep_fraction: float,
) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Turn a pass's (already all-reduced) accumulators into scores, one matrix at a time.

    Sparse mode: the score is formed in place in the accumulator on its device, ``top_sorted``
    runs there, and only the top-k values and indices are copied to the host; each accumulator is
    released before the next matrix is scored. Dense mode copies the full scores to the host.
    """
    params = hf_parameters(model)
    out: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
    for n in names:
        a = acc.pop(n)
        if method == "snip":
            score = a.mul_(params[n].detach().abs().float())
        else:
            norm = a.sqrt()
            norm = norm[:, None] if _input_axis(model, n) == 0 else norm[None, :]
            score = params[n].detach().abs().float() * norm
        del a
        if not torch.isfinite(score).all():
            raise FloatingPointError(f"non-finite scores in {n}: check the model and the data")
        if dense:
            out[n] = (score.cpu(), None)
        else:
            k = math.ceil(keep_fraction * score.numel())
            v, i = top_sorted(score.reshape(-1), k)
            out[n] = (v.cpu(), i.cpu())
        del score
    return out


def _return_free_memory() -> None:
    """Give the C heap's free pages back to the OS between passes (glibc only; else a no-op).

    A pass frees its accumulators and autograd buffers, but glibc keeps freed medium-sized blocks
    in its arenas; without this the resident set creeps up pass after pass although the live memory
    does not (measured in ``benchmarks/bench_memory.py``).
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


# -- checkpoints --------------------------------------------------------------------------------

CHECKPOINT_KIND = "score_checkpoint"
_CKPT_PREFIX = "score-checkpoint.rank"
_CKPT_SUFFIX = ".safetensors"


@dataclass
class _Progress:
    """Where a scoring run stands: pass ``chunk`` has seen ``position`` examples of the shard."""

    chunk: int = 0
    position: int = 0
    acc: dict[str, torch.Tensor] | None = None
    done: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy().data)
    return h.hexdigest()


def checkpoint_path(folder: str | Path, rank: int = 0) -> Path:
    """The checkpoint file that rank ``rank`` of a scoring run writes in ``folder``."""
    return Path(folder) / f"{_CKPT_PREFIX}{rank}{_CKPT_SUFFIX}"


def _checkpoint_ranks(folder: Path) -> dict[int, Path]:
    out = {}
    if folder.is_dir():
        for p in folder.glob(f"{_CKPT_PREFIX}*{_CKPT_SUFFIX}"):
            tail = p.name[len(_CKPT_PREFIX) : -len(_CKPT_SUFFIX)]
            if tail.isdigit():
                out[int(tail)] = p
    return out


class _Checkpointer:
    """Writes and reads one rank's scoring state (atomic: temporary file, then rename).

    The file holds the fp32 accumulators of the pass in progress (``acc/<name>``), the finished
    passes' results (``done_values/<name>``, ``done_indices/<name>``), and JSON metadata: the run's
    identity (model and data fingerprints, method, targets, pass plan, options), world size, rank,
    the pass and the number of examples of this rank's shard already added, and a digest of every
    tensor byte so that a damaged file is refused rather than half-loaded.
    """

    def __init__(
        self,
        folder: str | Path,
        every: int,
        ctx: DistContext,
        identity: dict[str, Any],
        chunks: list[list[str]],
        shapes: dict[str, tuple[int, ...]],
        shard_size: int,
    ) -> None:
        self.folder = Path(folder)
        self.every = every
        self.ctx = ctx
        self.identity = identity
        self.chunks = chunks
        self.shapes = shapes
        self.shard_size = shard_size
        self.path = checkpoint_path(self.folder, ctx.rank)

    def save(
        self,
        chunk: int,
        position: int,
        acc: dict[str, torch.Tensor],
        done: dict[str, tuple[torch.Tensor, torch.Tensor | None]],
    ) -> None:
        tensors = {f"acc/{n}": t.detach().cpu().contiguous() for n, t in acc.items()}
        for n, (v, i) in done.items():
            tensors[f"done_values/{n}"] = v.contiguous()
            if i is not None:
                tensors[f"done_indices/{n}"] = i.contiguous()
        meta = dict(self.identity)
        meta.update(
            world_size=self.ctx.world_size,
            rank=self.ctx.rank,
            chunk=chunk,
            position=position,
            shard_size=self.shard_size,
            digest=_tensor_digest(tensors),
        )
        save_artifact(self.path, CHECKPOINT_KIND, tensors, meta)
        log.debug("checkpoint: pass %d, %d examples -> %s", chunk, position, self.path)

    def discard_stale(self) -> None:
        """Start over: remove this rank's checkpoint (rank 0 also removes those of extra ranks)."""
        stale = [self.path] if self.path.exists() else []
        if self.ctx.is_main:
            stale += [
                p for r, p in _checkpoint_ranks(self.folder).items() if r >= self.ctx.world_size
            ]
        for p in stale:
            log.warning("resume=False: removing the existing checkpoint %s", p)
            p.unlink(missing_ok=True)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def load(self) -> _Progress | None:
        """This rank's saved state, fully validated; ``None`` when there is no checkpoint."""
        extra = sorted(r for r in _checkpoint_ranks(self.folder) if r >= self.ctx.world_size)
        if extra:
            raise ValueError(
                f"{self.folder} holds checkpoints of ranks {extra}, written by a run with more "
                f"processes than this one ({self.ctx.world_size}): resume with the same number of "
                "processes, or delete the folder to start over"
            )
        if not self.path.exists():
            return None
        where = f"checkpoint {self.path}"
        try:
            tensors, meta = load_artifact(self.path, CHECKPOINT_KIND)
        except (ValueError, OSError) as exc:
            raise ValueError(
                f"{where} is corrupt or unreadable ({exc}); refusing to resume from it: delete it "
                "to start over"
            ) from exc
        if meta.get("world_size") != self.ctx.world_size or meta.get("rank") != self.ctx.rank:
            raise ValueError(
                f"{where} was written by rank {meta.get('rank')} of a run with world size "
                f"{meta.get('world_size')}, but this is rank {self.ctx.rank} of "
                f"{self.ctx.world_size}: resume with the same number of processes (the examples "
                "are sharded by world size), or delete the checkpoint to start over"
            )
        for key, want in self.identity.items():
            if meta.get(key) != want:
                raise ValueError(
                    f"{where} belongs to a different scoring run ({key}: checkpoint has "
                    f"{_short(meta.get(key))}, this run has {_short(want)}); refusing to resume. "
                    "Use another checkpoint_dir, or resume=False to start over"
                )
        if meta.get("digest") != _tensor_digest(tensors):
            raise ValueError(f"{where} is corrupt (its tensors do not match their digest)")
        return self._state_from(tensors, meta, where)

    def _state_from(self, tensors: dict[str, torch.Tensor], meta: dict, where: str) -> _Progress:
        chunk, position = meta.get("chunk"), meta.get("position")
        if not (
            isinstance(chunk, int)
            and isinstance(position, int)
            and 0 <= chunk < len(self.chunks)
            and 0 <= position <= self.shard_size
            and meta.get("shard_size") == self.shard_size
        ):
            raise ValueError(f"{where} records an impossible position ({chunk}, {position})")
        dense = self.identity["dense"]
        finished = [n for c in self.chunks[:chunk] for n in c]
        expected = {f"acc/{n}" for n in self.chunks[chunk]}
        expected |= {f"done_values/{n}" for n in finished}
        if not dense:
            expected |= {f"done_indices/{n}" for n in finished}
        if set(tensors) != expected:
            odd = sorted(set(tensors) ^ expected)[:3]
            raise ValueError(f"{where} does not hold the expected tensors (e.g. {odd})")
        acc = {}
        for n in self.chunks[chunk]:
            t = tensors[f"acc/{n}"]
            if t.dtype != torch.float32:
                raise ValueError(f"{where}: accumulator of {n} is {t.dtype}, not float32")
            acc[n] = t
        done: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for n in finished:
            v = tensors[f"done_values/{n}"]
            i = None if dense else tensors[f"done_indices/{n}"]
            if (dense and tuple(v.shape) != self.shapes[n]) or (
                i is not None and i.shape != v.shape
            ):
                raise ValueError(f"{where}: the saved scores of {n} have the wrong shape")
            done[n] = (v, i)
        return _Progress(chunk=chunk, position=position, acc=acc, done=done)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _restore(ckpt: _Checkpointer, ctx: DistContext, params: dict[str, torch.Tensor]) -> _Progress:
    """Load every rank's checkpoint, agree on a consistent state across ranks, move to devices."""
    state: _Progress | None = None
    error = ""
    try:
        state = ckpt.load()
    except ValueError as exc:
        error = str(exc)
    ctx.check(not error, error)  # every rank raises if any rank's checkpoint is refused
    state = state or _Progress()
    if ctx.distributed:
        state = _reconcile(state, ctx, ckpt)
    if state.acc is not None:
        state.acc = {n: t.to(params[n].device) for n, t in state.acc.items()}
        log.info(
            "resuming from %s: pass %d of %d, %d of %d examples done",
            ckpt.path,
            state.chunk + 1,
            len(ckpt.chunks),
            state.position,
            ckpt.shard_size,
        )
    return state


def _reconcile(state: _Progress, ctx: DistContext, ckpt: _Checkpointer) -> _Progress:
    """Bring ranks whose checkpoint lags one pass behind up to date.

    A rank writes its checkpoint at the end of its shard BEFORE the all-reduce of that pass, so a
    rank can only lag when it crashed after the reduce and before its next checkpoint: its own
    pass is then complete, and a rank that is ahead holds the (identical) reduced results.
    """
    positions = ctx.all_gather_object((state.chunk, state.position, ckpt.shard_size))
    low = min(c for c, _, _ in positions)
    high = max(c for c, _, _ in positions)
    consistent = high == low or (
        high == low + 1 and all(p == size for c, p, size in positions if c == low)
    )
    ctx.check(
        consistent,
        f"the ranks' checkpoints are out of step ({positions}); delete {ckpt.folder} to start over",
    )
    if high == low:
        return state
    source = next(r for r, (c, _, _) in enumerate(positions) if c == high)
    lagging = ckpt.chunks[low]
    payload = {n: state.done[n] for n in lagging} if ctx.rank == source else None
    payload = ctx.broadcast_object(payload, src=source)
    if state.chunk == low:
        log.info("rank %d takes the results of pass %d from rank %d", ctx.rank, low + 1, source)
        state.done.update(payload)  # type: ignore[arg-type]
        return _Progress(chunk=high, position=0, acc=None, done=state.done)
    return state


# -- the scorer ---------------------------------------------------------------------------------


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
    *,
    layer_chunk: int | None = None,
    distributed: bool = False,
    save_to: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 64,
    resume: bool = False,
    on_example: Callable[[int, int], None] | None = None,
) -> WeightScores:
    """Score every entry of the targeted weight matrices on ``examples``.

    The model runs in its own dtype (load it with ``load_model(..., dtype=torch.bfloat16)`` to
    score in bf16); gradients are added into fp32 accumulators whatever that dtype, and only the
    targeted matrices get accumulators and gradients (see ``docs/scale.md``).

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
        progress: show a progress bar (rank 0 only).
        layer_chunk: score ``k`` decoder layers per pass over the data instead of all at once:
            accumulators (and gradients) exist for one block of layers at a time, and each pass
            back-propagates only down to its block's lowest layer. Costs one pass over the data per
            block; the scores are bit-identical to the one-pass mode. ``1 <= k <= n_layers``.
        distributed: data-parallel scoring inside a ``torchrun`` job (see
            :mod:`spin_interp.distributed`): examples are sharded round-robin over the ranks, the
            accumulators are summed across ranks before the top-k, and every rank returns the same
            scores. Needs an initialised process group.
        save_to: also save the scores there (atomic; only rank 0 writes in a distributed run).
        checkpoint_dir: write this rank's accumulators there every ``checkpoint_every`` examples
            and at the end of each pass (atomic; removed when scoring succeeds).
        checkpoint_every: examples (of this rank's shard) between checkpoints.
        resume: continue from the checkpoint in ``checkpoint_dir`` if there is one (refused when it
            was written for another model, data set, option set or world size, or is damaged);
            the result is bit-identical to an uninterrupted run. With ``resume=False`` an existing
            checkpoint is removed and scoring starts over.
        on_example: called as ``on_example(done, total)`` after each example's pass, where
            ``done`` counts this rank's example passes (restored ones included) out of ``total``
            (= shard size x number of passes).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if not dense and not (0 < keep_fraction <= 1):
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    if checkpoint_dir is None and resume:
        raise ValueError("resume=True needs the checkpoint_dir of the interrupted run")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int):
        raise TypeError(f"checkpoint_every must be an int, got {checkpoint_every!r}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
    ctx = dist_require() if distributed else DistContext.local()
    names = resolve_targets(model, targets)
    chunks = plan_chunks(model, names, layer_chunk)
    encoded, skipped = _prepare(model, examples, format, max_len)
    fingerprint = model_fingerprint(model)
    params = hf_parameters(model)
    shapes = {n: tuple(params[n].shape) for n in names}
    identity = {
        "model_fingerprint": fingerprint,
        "data_fingerprint": data_fingerprint(encoded),
        "n_examples": len(encoded),
        "method": method,
        "targets": names,
        "chunks": chunks,
        "dense": dense,
        "keep_fraction": None if dense else keep_fraction,
        "format": format,
        "max_len": max_len,
    }
    if ctx.distributed:
        ctx.check_same(identity, "the model, the data or the scoring options")
    shard = encoded[ctx.rank :: ctx.world_size]
    ckpt = None
    if checkpoint_dir is not None:
        ckpt = _Checkpointer(
            checkpoint_dir, checkpoint_every, ctx, identity, chunks, shapes, len(shard)
        )
    if ckpt is not None and resume:
        state = _restore(ckpt, ctx, params)
    else:
        if ckpt is not None:
            ckpt.discard_stale()
        state = _Progress()
    device = _device_of(model)
    total = len(chunks) * len(shard)
    done_steps = state.chunk * len(shard) + state.position
    bar = _bar(total, done_steps, method, progress and ctx.is_main)
    was_training = model.training
    model.eval()
    try:
        for ci in range(state.chunk, len(chunks)):
            restored = state.acc if ci == state.chunk else None
            start = state.position if ci == state.chunk else 0
            saved_at = start if restored is not None else -1
            kind = _GradAccumulator if method == "snip" else _InputNormAccumulator
            runner = kind(model, chunks[ci], restored)
            try:
                for pos in range(start, len(shard)):
                    runner.step(shard[pos], device)
                    if ckpt is not None and (pos + 1) % checkpoint_every == 0:
                        ckpt.save(ci, pos + 1, runner.acc, state.done)
                        saved_at = pos + 1
                    done_steps += 1
                    bar.update(1)
                    if on_example is not None:
                        on_example(done_steps, total)
            finally:
                runner.close()
            acc = runner.acc
            del runner, restored
            state.acc = None
            if ckpt is not None and saved_at != len(shard):
                ckpt.save(ci, len(shard), acc, state.done)
            for n in chunks[ci]:  # sum over ranks BEFORE any top-k
                ctx.all_reduce_sum_(acc[n])
            state.done.update(_finish_chunk(model, method, chunks[ci], acc, dense, keep_fraction))
            del acc
            if len(chunks) > 1:
                _return_free_memory()
    finally:
        bar.close()
        model.train(was_training)
    values = {n: state.done[n][0] for n in names}
    indices = None if dense else {n: state.done[n][1] for n in names}
    meta = {
        "method": method,
        "targets": targets if isinstance(targets, str) else list(targets),
        "model_fingerprint": fingerprint,
        "data_fingerprint": identity["data_fingerprint"],
        "n_examples": len(encoded),
        "n_skipped": skipped,
        "n_tokens": int(sum(e.n_targets for e in encoded)),
        "format": format,
        "max_len": max_len,
        "keep_fraction": None if dense else keep_fraction,
        "layer_chunk": layer_chunk,
        "world_size": ctx.world_size,
    }
    scores = WeightScores(shapes, values, indices, meta)  # type: ignore[arg-type]
    if save_to is not None:
        error = ""
        if ctx.is_main:
            try:
                scores.save(save_to)
            except OSError as exc:
                error = f"could not save the scores to {save_to}: {exc}"
        ctx.check(not error, error, exc=OSError)
    if ckpt is not None:
        ctx.barrier()
        ckpt.remove()
    return scores


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, initial: int, desc: str, show: bool):
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False)


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
