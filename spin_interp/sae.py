"""SAELens sparse autoencoders on a bridge: latent attribution, coupled latents, directional edits.

A sparse autoencoder (SAE) at a residual hook ``blocks.L.hook_resid_post`` rewrites the residual
vector ``x`` as ``decode(encode(x)) + error``. :func:`score_latents` splices the SAE into that hook
with the error term held constant, so the model computes exactly what it computed before while the
latent activations ``a`` sit on the gradient path; the score of latent ``i`` is
``sum_n sum_t |a_ti * dl_n/da_ti|`` over the response tokens ``t`` of every example ``n`` (one
forward and backward pass per example). The result is a dense :class:`WeightScores` keyed by the
hook name with shape ``(d_sae,)``, so SPIN's set algebra applies unchanged:
``coupled = (F & P) - G`` via :func:`coupled_latents` / :func:`spin_interp.select.select_coupled`.

The coupled latents' decoder directions can then be removed from the weights that write into the
residual stream with :func:`spin_interp.ablate.project_out` (:func:`project_out_latents` picks the
layers from the hook name): an ordinary reversible, exportable :class:`WeightEdit`.

SAELens is imported lazily, inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float

from spin_interp.ablate import WeightEdit, _residual_writers, project_out
from spin_interp.attribution import (
    WeightScores,
    _device_of,
    _forward_logits,
    _prepare,
    _progress,
    _response_loss,
)
from spin_interp.models import data_fingerprint, model_fingerprint
from spin_interp.select import Selection, select_coupled

if TYPE_CHECKING:
    from sae_lens import SAE

log = logging.getLogger(__name__)

__all__ = [
    "METHOD",
    "SAEUnavailableError",
    "coupled_latents",
    "collect_activations",
    "decoder_directions",
    "hook_layer",
    "load_pretrained_sae",
    "project_out_latents",
    "sae_fingerprint",
    "score_latents",
    "train_tiny_sae",
]

METHOD = "sae_latent_attribution"
_RESID_RE = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|mid|post)$")


class SAEUnavailableError(OSError):
    """A pretrained SAE could not be fetched (no network, hub unreachable, missing files)."""


# --------------------------------------------------------------------------------------------------
# checks


def _hook_name_of(sae: Any, hook_name: str | None) -> str:
    """The hook an SAE reads: ``hook_name`` if given, else the SAE's metadata."""
    meta_hook = _meta_get(sae, "hook_name")
    if hook_name is None:
        if not meta_hook:
            raise ValueError(
                "this SAE does not record its hook (cfg.metadata.hook_name is empty); pass "
                "hook_name='blocks.L.hook_resid_post' (the hook it was trained on)"
            )
        return str(meta_hook)
    if meta_hook and meta_hook != hook_name:
        raise ValueError(
            f"the SAE was trained on {meta_hook!r} but hook_name={hook_name!r} was given; an SAE "
            "only makes sense at the hook it was trained on"
        )
    return hook_name


def _meta_get(sae: Any, key: str) -> Any:
    meta = getattr(getattr(sae, "cfg", None), "metadata", None)
    if meta is None:
        return None
    return meta.get(key) if hasattr(meta, "get") else getattr(meta, key, None)


def _check_hook(model: Any, hook_name: str) -> None:
    hooks = getattr(model, "hook_dict", None)
    if hooks is None:
        raise TypeError("SAE functions need a TransformerBridge (spin_interp.load_model)")
    if hook_name not in hooks:
        close = difflib.get_close_matches(hook_name, list(hooks), n=3)
        hint = f"; did you mean {close}?" if close else ""
        n_layers = getattr(getattr(model, "cfg", None), "n_layers", None)
        raise ValueError(
            f"the model has no hook {hook_name!r}{hint} (residual hooks look like "
            f"'blocks.L.hook_resid_post' with L < {n_layers})"
        )


def _d_model(model: Any) -> int | None:
    d = getattr(getattr(model, "cfg", None), "d_model", None)
    return int(d) if d else None


def _check_sae(model: Any, sae: Any, hook_name: str) -> None:
    """Hook exists, widths agree, SAE sits on the model's device."""
    cfg = getattr(sae, "cfg", None)
    if cfg is None or not hasattr(cfg, "d_in") or not hasattr(cfg, "d_sae"):
        raise TypeError(f"expected a SAELens SAE, got {type(sae).__name__}")
    _check_hook(model, hook_name)
    d_model = _d_model(model)
    if "hook_resid" in hook_name and d_model is not None and cfg.d_in != d_model:
        raise ValueError(
            f"SAE d_in={cfg.d_in} does not match the residual width d_model={d_model} at "
            f"{hook_name!r}: this SAE was trained on another model or another hook"
        )
    device = _device_of(model)
    sae_device = next(iter(sae.parameters())).device
    if sae_device != device:
        raise ValueError(f"the SAE is on {sae_device} but the model is on {device}: sae.to(...)")


def sae_fingerprint(sae: Any) -> str:
    """Short hash of an SAE's architecture, shape, hook and weights."""
    h = hashlib.blake2b(digest_size=8)
    cfg = sae.cfg
    arch = cfg.architecture() if hasattr(cfg, "architecture") else type(sae).__name__
    head = {
        "architecture": arch,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "hook": _meta_get(sae, "hook_name"),
    }
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, t in sorted(sae.state_dict().items()):
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().data)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# scoring


def _splice(sae: Any, hook_name: str, store: dict[str, torch.Tensor]):
    """A hook that routes the activation through the SAE without changing its value.

    The output is ``decode(a) + error`` with ``error = x - decode(a)`` held constant, written as
    ``x + (decode(a) - stop_grad(decode(a)))``: bit-identical to ``x`` in the forward pass, and the
    gradient reaching ``a`` is the model's gradient at the hook pulled back through the decoder.
    """
    d_in = sae.cfg.d_in

    def hook(x: torch.Tensor, hook: Any) -> torch.Tensor:
        if x.shape[-1] != d_in and getattr(sae.cfg, "reshape_activations", "none") == "none":
            raise ValueError(
                f"the activation at {hook_name!r} has width {x.shape[-1]} but the SAE has "
                f"d_in={d_in}"
            )
        with torch.no_grad():
            acts = sae.encode(x.detach())
        acts.requires_grad_(True)
        recon = sae.decode(acts)
        if recon.shape != x.shape:
            raise ValueError(
                f"the SAE reconstructs shape {tuple(recon.shape)} at {hook_name!r}, which "
                f"carries {tuple(x.shape)}"
            )
        store[hook_name] = acts
        return x + (recon - recon.detach()).to(x.dtype)

    return hook


def score_latents(
    model: Any,
    sae: SAE | Sequence[SAE],
    examples: Iterable[Any],
    hook_name: str | None = None,
    format: str = "chat",
    max_len: int | None = 512,
    progress: bool = True,
) -> WeightScores:
    """Attribution of SAE latents to the response loss: ``sum |a * dl/da|``.

    For each example one forward pass runs with the SAE spliced into its hook (the forward is
    unchanged, see :func:`_splice`) and one backward pass takes the gradient of the mean
    response-token cross-entropy with respect to the latent activations ``a``. ``|a * dl/da|`` is
    summed over the positions holding response tokens (the positions
    :func:`spin_interp.attribution.score_neurons` uses) and over examples.

    Args:
        model: a bridge from :func:`spin_interp.load_model`.
        sae: a SAELens SAE, or several at different hooks (all spliced in at once; each latent's
            gradient is still the model's own, since every splice leaves the forward unchanged).
        examples: ``si.data.Example`` objects or ``(input_ids, labels)`` pairs.
        hook_name: the SAE's hook, when its metadata does not record one (single SAE only).
        format, max_len: how examples are tokenised (see :func:`spin_interp.models.encode_example`).
        progress: show a progress bar.

    Returns:
        dense :class:`WeightScores` keyed by hook name, shape ``(d_sae,)`` each, with
        ``meta["method"] == "sae_latent_attribution"`` and the SAE fingerprints in
        ``meta["saes"]``.
    """
    saes = [sae] if hasattr(sae, "cfg") else list(sae)  # type: ignore[arg-type]
    if not saes:
        raise ValueError("no SAE given")
    if hook_name is not None and len(saes) > 1:
        raise ValueError("hook_name= applies to a single SAE; set each SAE's metadata.hook_name")
    hooks = [_hook_name_of(s, hook_name) for s in saes]
    if len(set(hooks)) != len(hooks):
        raise ValueError(f"two SAEs read the same hook: {hooks}")
    for s, h in zip(saes, hooks, strict=True):
        _check_sae(model, s, h)
    encoded, skipped = _prepare(model, examples, format, max_len)
    fingerprint = model_fingerprint(model)
    device = _device_of(model)
    acc = {
        h: torch.zeros(s.cfg.d_sae, dtype=torch.float32, device=device)
        for s, h in zip(saes, hooks, strict=True)
    }
    saved = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    model.eval()
    try:
        for p, _ in saved:  # only the latents need gradients; the weights' would be wasted work
            p.requires_grad_(False)
        for enc in _progress(encoded, len(encoded), "latents", progress):
            acts: dict[str, torch.Tensor] = {}
            ids = enc.input_ids[None].to(device)
            labels = enc.labels[None].to(device)
            fwd = [(h, _splice(s, h, acts)) for s, h in zip(saes, hooks, strict=True)]
            with model.hooks(fwd_hooks=fwd):
                loss = _response_loss(_forward_logits(model, ids), labels)
            missing = [h for h in hooks if h not in acts]
            if missing:
                raise RuntimeError(f"the hook {missing[0]!r} did not run during the forward pass")
            grads = torch.autograd.grad(loss, [acts[h] for h in hooks], allow_unused=True)
            mask = (labels != -100)[0]
            for h, g in zip(hooks, grads, strict=True):
                if g is None:
                    continue
                prod = (acts[h].detach() * g)[0][mask].float()  # [resp_pos, d_sae]
                acc[h] += prod.abs().sum(0)
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
        model.train(was_training)
    for h, v in acc.items():
        if not torch.isfinite(v).all():
            raise FloatingPointError(f"non-finite latent scores at {h}: check the SAE and the data")
    meta = {
        "method": METHOD,
        "granularity": "latent",
        "targets": hooks,
        "saes": {
            h: {
                "fingerprint": sae_fingerprint(s),
                "architecture": s.cfg.architecture() if hasattr(s.cfg, "architecture") else None,
                "d_in": int(s.cfg.d_in),
                "d_sae": int(s.cfg.d_sae),
            }
            for s, h in zip(saes, hooks, strict=True)
        },
        "model_fingerprint": fingerprint,
        "data_fingerprint": data_fingerprint(encoded),
        "n_examples": len(encoded),
        "n_skipped": skipped,
        "n_tokens": int(sum(e.n_targets for e in encoded)),
        "format": format,
        "max_len": max_len,
        "keep_fraction": None,
    }
    shapes = {h: (int(acc[h].numel()),) for h in hooks}
    return WeightScores(shapes, {h: acc[h].cpu() for h in hooks}, None, meta)


# --------------------------------------------------------------------------------------------------
# selection and directions


def coupled_latents(
    sf: WeightScores,
    sp: WeightScores,
    sg: WeightScores,
    p: float,
    q: float,
    mode: str = "paper",
) -> Selection:
    """SPIN's coupled latents ``(top_q(F) & top_q(P)) - top_p(G)`` from :func:`score_latents`.

    Checks that the three scores are latent scores of the same SAE(s), then calls
    :func:`spin_interp.select.select_coupled` (``mode`` as there). The selection is keyed by hook
    name; its indices are latent ids.
    """
    scores = {"sf": sf, "sp": sp, "sg": sg}
    for label, s in scores.items():
        if s.meta.get("method") != METHOD:
            raise ValueError(
                f"{label} holds {s.meta.get('method')!r} scores, not SAE latent scores "
                "(score_latents)"
            )
    saes = {label: s.meta.get("saes", {}) for label, s in scores.items()}
    ref = {h: v.get("fingerprint") for h, v in saes["sf"].items()}
    for label in ("sp", "sg"):
        other = {h: v.get("fingerprint") for h, v in saes[label].items()}
        if other != ref:
            raise ValueError(
                f"sf and {label} were scored with different SAEs ({ref} vs {other}); score all "
                "three datasets with the same SAE"
            )
    sel = select_coupled(sf, sp, sg, p=p, q=q, mode=mode)
    sel.meta["saes"] = saes["sf"]
    return sel


def decoder_directions(
    sae: Any, latents: Selection | torch.Tensor | Sequence[int]
) -> Float[torch.Tensor, "n d_in"]:
    """The decoder rows ``W_dec[latents]`` ([n, d_in], a detached copy).

    ``latents`` is a list/tensor of latent ids, or a :class:`Selection` from
    :func:`coupled_latents` (its entry for the SAE's hook is used).
    """
    d_sae = int(sae.cfg.d_sae)
    if isinstance(latents, Selection):
        hook = _meta_get(sae, "hook_name")
        if hook in latents:
            idx = latents[hook]
        elif len(latents.names()) == 1:
            only = latents.names()[0]
            if hook and only != hook:
                raise ValueError(f"the selection is for {only!r}, the SAE reads {hook!r}")
            idx = latents[only]
        else:
            raise ValueError(
                f"the selection covers {latents.names()}; none is this SAE's hook {hook!r}"
            )
        if tuple(latents.shapes[hook if hook in latents else latents.names()[0]]) != (d_sae,):
            raise ValueError(f"the selection's shape does not match the SAE's d_sae={d_sae}")
    else:
        idx = torch.as_tensor(latents, dtype=torch.long).reshape(-1)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= d_sae):
        raise IndexError(f"latent ids must lie in [0, {d_sae}), got {idx.tolist()[:8]}")
    return sae.W_dec.detach()[idx.to(sae.W_dec.device)].clone()


def hook_layer(hook_name: str) -> tuple[int, str]:
    """``("blocks.5.hook_resid_post")`` -> ``(5, "post")``; ValueError for non-residual hooks."""
    m = _RESID_RE.match(hook_name)
    if not m:
        raise ValueError(
            f"{hook_name!r} is not a residual-stream hook (blocks.L.hook_resid_pre|mid|post)"
        )
    return int(m.group(1)), m.group(2)


def project_out_latents(
    model: Any,
    sae: Any,
    latents: Selection | torch.Tensor | Sequence[int],
    writers: str = "all",
    include_bias: bool = True,
) -> WeightEdit:
    """Remove the latents' decoder directions from every writer upstream of the SAE's hook.

    Writers are the attention output and MLP down projections that run before the hook:
    layers ``<= L`` for ``blocks.L.hook_resid_post``, ``< L`` for ``hook_resid_pre``, and for
    ``hook_resid_mid`` also layer ``L``'s attention. See :func:`spin_interp.ablate.project_out`.
    """
    hook = _hook_name_of(sae, None)
    _check_sae(model, sae, hook)
    layer, where = hook_layer(hook)
    dirs = decoder_directions(sae, latents)
    if dirs.shape[0] == 0:
        raise ValueError("no latents selected: nothing to project out")
    if where == "post":
        names = _residual_writers(model, layer, writers)
    else:
        names = _residual_writers(model, layer - 1, writers) if layer > 0 else []
        if where == "mid" and writers in ("all", "attn"):
            names += [n for n in _residual_writers(model, layer, "attn") if n not in names]
    if not names:
        raise ValueError(
            f"nothing writes into the residual stream before {hook!r} except the embeddings"
        )
    edit = project_out(model, dirs, layer=None, writers=names, include_bias=include_bias)
    edit.meta.update({"hook_name": hook, "sae_fingerprint": sae_fingerprint(sae)})
    if isinstance(latents, Selection):
        edit.meta["mode"] = latents.meta.get("mode")
    return edit


# --------------------------------------------------------------------------------------------------
# activations and training


@torch.no_grad()
def collect_activations(
    model: Any,
    hook_name: str,
    examples: Iterable[Any],
    positions: str = "all",
    format: str = "chat",
    max_len: int | None = 512,
    progress: bool = True,
) -> Float[torch.Tensor, "n_tokens d_in"]:
    """The activations at ``hook_name`` on every token of ``examples`` ([n_tokens, d], fp32, CPU).

    ``positions="response"`` keeps only the positions holding response tokens.
    """
    if positions not in ("all", "response"):
        raise ValueError(f"positions must be 'all' or 'response', got {positions!r}")
    _check_hook(model, hook_name)
    encoded, _ = _prepare(model, examples, format, max_len)
    device = _device_of(model)
    rows: list[torch.Tensor] = []
    store: dict[str, torch.Tensor] = {}

    def keep(x: torch.Tensor, hook: Any) -> torch.Tensor:
        store["x"] = x.detach()
        return x

    was_training = model.training
    model.eval()
    try:
        for enc in _progress(encoded, len(encoded), "activations", progress):
            with model.hooks(fwd_hooks=[(hook_name, keep)]):
                _forward_logits(model, enc.input_ids[None].to(device))
            x = store.pop("x")[0]
            if positions == "response":
                x = x[(enc.labels != -100).to(x.device)]
            rows.append(x.reshape(x.shape[0], -1).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(rows)


def _batches(
    acts: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless shuffled batches (each epoch a new permutation; short tail dropped)."""
    n = acts.shape[0]
    while True:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            yield acts[perm[i : i + batch_size]]


@contextlib.contextmanager
def _quiet_trainer(progress: bool) -> Iterator[None]:
    """Silence SAELens's training progress bar unless ``progress``."""
    if progress:
        yield
        return
    from sae_lens.training import sae_trainer

    original = getattr(sae_trainer, "tqdm", None)
    if original is None:
        yield
        return
    sae_trainer.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        sae_trainer.tqdm = original


def train_tiny_sae(
    model: Any,
    hook_name: str,
    examples: Iterable[Any] | None = None,
    *,
    activations: torch.Tensor | None = None,
    d_sae: int = 64,
    k: int = 8,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    lr_end: float | None = None,
    seed: int = 0,
    rescale_acts_by_decoder_norm: bool = True,
    format: str = "chat",
    max_len: int | None = 512,
    progress: bool = False,
) -> Any:
    """Train a small SAELens TopK SAE at ``hook_name`` in-process and return it for inference.

    Activations come from ``examples`` (every token position, via :func:`collect_activations`) or
    are given as ``activations`` ([n, d_in]); SAELens's ``SAETrainer`` runs ``steps`` Adam steps
    on shuffled in-memory batches (seconds on a CPU for tiny models). Meant for tests, tutorials
    and toy experiments, not for real interpretability work on large models.

    Returns a ``sae_lens.TopKSAE`` whose ``cfg.metadata`` records ``hook_name``, the model's
    spec and fingerprint, and the training statistics.
    """
    from sae_lens import SAETrainer, TopKSAE, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.sae import SAEMetadata

    _check_hook(model, hook_name)
    if (examples is None) == (activations is None):
        raise ValueError("pass either examples or activations= (exactly one)")
    if activations is None:
        acts = collect_activations(
            model, hook_name, examples, format=format, max_len=max_len, progress=progress
        )
    else:
        acts = torch.as_tensor(activations).detach().float().cpu()
        if acts.ndim != 2:
            raise ValueError(f"activations must be [n, d_in], got shape {tuple(acts.shape)}")
    d_in = int(acts.shape[1])
    d_model = _d_model(model)
    if "hook_resid" in hook_name and d_model is not None and d_in != d_model:
        raise ValueError(f"activations have width {d_in} but {hook_name!r} has d_model={d_model}")
    if not 0 < k <= d_sae:
        raise ValueError(f"need 0 < k <= d_sae, got k={k}, d_sae={d_sae}")
    if acts.shape[0] < batch_size:
        raise ValueError(
            f"only {acts.shape[0]} activation rows for batch_size={batch_size}: use more examples "
            "or a smaller batch"
        )
    metadata = SAEMetadata(
        hook_name=hook_name,
        model_name=getattr(model, "spin_spec", None),
        spin_model_fingerprint=model_fingerprint(model),
    )
    cfg = TopKTrainingSAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        k=k,
        rescale_acts_by_decoder_norm=rescale_acts_by_decoder_norm,
        metadata=metadata,
    )
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * batch_size,
        train_batch_size_samples=batch_size,
        lr=lr,
        lr_end=lr / 10 if lr_end is None else lr_end,
        device="cpu",
        logger=LoggingConfig(log_to_wandb=False),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        training_sae = TopKTrainingSAE(cfg)
    generator = torch.Generator().manual_seed(seed)
    trainer = SAETrainer(trainer_cfg, training_sae, _batches(acts, batch_size, generator))
    with _quiet_trainer(progress):
        trained = trainer.fit()
    sae = TopKSAE.from_dict(trained.cfg.get_inference_sae_cfg_dict())
    sae.load_state_dict(trained.state_dict())
    sae.eval()
    with torch.no_grad():
        sample = acts[: min(len(acts), 4096)]
        recon = sae(sample)
        fvu = float(((recon - sample) ** 2).sum() / ((sample - sample.mean(0)) ** 2).sum())
    sae.cfg.metadata.fraction_variance_unexplained = fvu
    log.info("trained a TopK SAE at %s (d_sae=%d, k=%d): FVU %.3f", hook_name, d_sae, k, fvu)
    return sae.to(_device_of(model))


# --------------------------------------------------------------------------------------------------
# pretrained SAEs


def load_pretrained_sae(
    release: str,
    sae_id: str,
    model: Any | None = None,
    device: str | torch.device | None = None,
    dtype: str = "float32",
) -> Any:
    """Load a SAELens pretrained SAE (needs the Hugging Face hub, or its files in the HF cache).

    ``release`` and ``sae_id`` are SAELens's names (e.g. ``"gpt2-small-res-jb"``,
    ``"blocks.8.hook_resid_pre"``); unknown names raise ``ValueError`` with close matches.
    When ``model`` is given the SAE is checked against it (hook exists, ``d_in`` matches) and moved
    to its device. A hub that cannot be reached raises :class:`SAEUnavailableError`.
    """
    from sae_lens import SAE
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory and "/" not in release:
        close = difflib.get_close_matches(release, list(directory), n=5)
        raise ValueError(
            f"{release!r} is not a SAELens pretrained release"
            + (f"; close names: {close}" if close else "")
        )
    if release in directory and sae_id not in directory[release].saes_map:
        ids = list(directory[release].saes_map)
        close = difflib.get_close_matches(sae_id, ids, n=5) or ids[:5]
        raise ValueError(f"{sae_id!r} is not an SAE of release {release!r}; e.g. {close}")
    if device is None:
        device = _device_of(model) if model is not None else "cpu"
    try:
        sae = SAE.from_pretrained(release, sae_id, device=str(device), dtype=dtype)
    except (OSError, ConnectionError, TimeoutError) as exc:
        raise SAEUnavailableError(
            f"could not fetch SAE {release}/{sae_id}: the Hugging Face hub is unreachable or the "
            f"files are not cached (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')}). Run "
            "once where the hub is reachable to cache it, or train one with train_tiny_sae. "
            f"Cause: {exc}"
        ) from exc
    except Exception as exc:  # hub client errors do not share one base class
        if type(exc).__module__.startswith(("huggingface_hub", "requests", "urllib3", "httpx")):
            raise SAEUnavailableError(
                f"could not fetch SAE {release}/{sae_id} from the Hugging Face hub: {exc}"
            ) from exc
        raise
    kwargs = _meta_get(sae, "model_from_pretrained_kwargs")
    if kwargs:
        log.warning(
            "SAE %s/%s was trained on a model loaded with %s; the bridge keeps raw HF weights, so "
            "check its reconstruction on the bridge's activations before trusting it",
            release,
            sae_id,
            kwargs,
        )
    if model is not None:
        _check_sae(model, sae, _hook_name_of(sae, None))
    return sae
