"""Data-parallel scoring with ``torch.distributed`` (launched by ``torchrun``).

Every rank holds a full copy of the model and scores a deterministic shard of the examples
(round-robin by index: rank ``r`` of ``w`` takes examples ``r, r + w, r + 2w, ...``). Each rank adds
``|dl_n/dW|`` over its shard into its own fp32 accumulators; the accumulators are summed across
ranks with ``all_reduce`` (in slices, to bound the communication buffers) BEFORE the top-k, so every
rank ends with the same :class:`~spin_interp.attribution.WeightScores`. Only rank 0 writes files.

Launch::

    torchrun --nproc_per_node=2 my_scoring_script.py          # a script that calls the API
    torchrun --nproc_per_node=2 -m spin_interp.cli score fairness -o s.safetensors --distributed

Inside the script::

    import spin_interp as si
    from spin_interp import distributed as dist

    ctx = dist.init_process_group()                  # gloo on CPU, nccl when CUDA is available
    model = si.load_model("smollm2-135m-instruct", device=dist.local_device())
    scores = si.score_weights(model, examples, distributed=True, save_to="s.safetensors")

``score_weights(distributed=True)`` refuses to run without an initialised process group, and the
ranks check that they hold the same model, the same data and the same options before scoring.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

log = logging.getLogger(__name__)

T = TypeVar("T")

#: all_reduce works on slices of at most this many elements (64 MiB of fp32): the collective
#: backends allocate buffers proportional to the tensor they reduce.
REDUCE_SLICE_NUMEL = 1 << 24

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launch_hint() -> str:
    """How to launch a distributed scoring run (used in error messages)."""
    return (
        "launch one process per device with torchrun, e.g. "
        "`torchrun --nproc_per_node=2 -m spin_interp.cli score fairness -o scores.safetensors "
        "--distributed` or `torchrun --nproc_per_node=2 your_script.py`, and call "
        "spin_interp.distributed.init_process_group() in the script before scoring"
    )


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables (RANK, WORLD_SIZE, ...) are set."""
    return all(v in os.environ for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def is_initialized() -> bool:
    """True when a default ``torch.distributed`` process group exists."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def local_device() -> torch.device:
    """The device this rank should put its model on: ``cuda:LOCAL_RANK`` when CUDA is available."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


@dataclass(frozen=True)
class DistContext:
    """Rank, world size and backend of the current run, with the few collectives scoring needs.

    ``DistContext.local()`` is the single-process context: its collectives are no-ops, so the
    scoring code is the same with and without ``torch.distributed``.
    """

    rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @classmethod
    def local(cls) -> DistContext:
        return cls()

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives (no-ops when not distributed) ----------------------------------------------
    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def all_gather_object(self, obj: T) -> list[T]:
        """Every rank's ``obj`` (picklable), in rank order."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: T, src: int) -> T:
        """``obj`` as held by rank ``src`` (a picklable object; sent in memory, never written)."""
        if not self.distributed:
            return obj
        box = [obj if self.rank == src else None]
        torch.distributed.broadcast_object_list(box, src=src)
        return box[0]  # type: ignore[return-value]

    def check(self, ok: bool, message: str = "", exc: type[Exception] = ValueError) -> None:
        """Raise ``exc`` on EVERY rank when the check failed on any rank (so no rank hangs)."""
        results = self.all_gather_object((bool(ok), "" if ok else message))
        failed = [(r, msg) for r, (good, msg) in enumerate(results) if not good]
        if not failed:
            return
        if not self.distributed:
            raise exc(failed[0][1])
        raise exc("; ".join(f"rank {r}: {msg}" for r, msg in failed))

    def check_same(self, value: Any, what: str) -> None:
        """Raise on every rank unless all ranks hold an equal ``value`` (e.g. fingerprints)."""
        values = self.all_gather_object(value)
        bad = [r for r, v in enumerate(values) if v != values[0]]
        if bad:
            raise ValueError(
                f"the ranks disagree on {what}: rank 0 has {values[0]!r}, rank {bad[0]} has "
                f"{values[bad[0]]!r}. Every rank must load the same model and the same examples "
                "with the same options"
            )

    def all_reduce_sum_(
        self, tensor: torch.Tensor, slice_numel: int = REDUCE_SLICE_NUMEL
    ) -> torch.Tensor:
        """Sum ``tensor`` over ranks in place, ``slice_numel`` elements at a time."""
        if not self.distributed or self.world_size == 1:
            return tensor
        if self.backend == "nccl" and tensor.device.type != "cuda":
            raise RuntimeError(
                "the nccl backend reduces CUDA tensors only, but the scores live on "
                f"{tensor.device}: put each rank's model on spin_interp.distributed.local_device() "
                "or use the gloo backend on CPU"
            )
        if not tensor.is_contiguous():
            raise ValueError("all_reduce_sum_ needs a contiguous tensor")
        flat = tensor.view(-1)
        for start in range(0, flat.numel(), slice_numel):
            torch.distributed.all_reduce(flat[start : start + slice_numel])
        return tensor


def require(what: str = "score_weights(distributed=True)") -> DistContext:
    """The current :class:`DistContext`; a clear error when no process group is initialised."""
    if not torch.distributed.is_available():
        raise RuntimeError(f"{what} needs torch.distributed, which this torch build lacks")
    if not torch.distributed.is_initialized():
        if launched_by_torchrun():
            raise RuntimeError(
                f"{what}: this process was started by torchrun but no process group is "
                "initialised; call spin_interp.distributed.init_process_group() before scoring"
            )
        raise RuntimeError(
            f"{what} needs an initialised torch.distributed process group: {launch_hint()}. "
            "For a single process, leave distributed=False"
        )
    return DistContext(
        rank=torch.distributed.get_rank(),
        world_size=torch.distributed.get_world_size(),
        backend=str(torch.distributed.get_backend()),
    )


def default_backend() -> str:
    """``nccl`` when CUDA is available, else ``gloo``."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_process_group(backend: str | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Initialise the default process group from torchrun's environment (idempotent).

    Args:
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (one GPU per rank); default: nccl when CUDA is
            available, else gloo.
        timeout_s: how long a collective may wait for the other ranks.
    """
    if is_initialized():
        return require()
    missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(
            f"init_process_group() found no torchrun environment (missing {', '.join(missing)}): "
            f"{launch_hint()}"
        )
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(local_device())
    torch.distributed.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    ctx = require()
    log.info("process group ready: rank %d of %d (%s)", ctx.rank, ctx.world_size, ctx.backend)
    return ctx


def destroy_process_group() -> None:
    """Tear the default process group down (no-op when none exists)."""
    if is_initialized():
        torch.distributed.destroy_process_group()


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Indices of ``n`` items that ``rank`` handles: round-robin ``rank, rank + w, ...``."""
    if world_size < 1 or not (0 <= rank < world_size):
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    return list(range(rank, n, world_size))


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The items of ``rank`` under :func:`shard_indices` (deterministic, order-preserving)."""
    return [items[i] for i in shard_indices(len(items), rank, world_size)]
