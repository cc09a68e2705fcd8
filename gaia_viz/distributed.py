"""One evaluation over several processes, GPUs and nodes: torch.distributed under torchrun.

``torchrun --nproc-per-node N [--nnodes M --node-rank R --rdzv-endpoint HOST:PORT] -m gaia_viz
evaluate ...`` starts N processes a node; torchrun gives each ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` (its index on its node) and the rendezvous address. :func:`start` reads
them and joins the process group: gloo on the CPU, NCCL on CUDA with one GPU a process,
``cuda:LOCAL_RANK``. Without torchrun (no ``WORLD_SIZE``, or 1) nothing is initialised
and :data:`SINGLE` describes the one process.

How :func:`gaia_viz.sweep.evaluate` uses it: rank 0 reads the run cache and decides which
chunks are missing (the *plan*, broadcast to every rank, so all ranks agree even while
chunks are being written); every rank scores its share of the plan and writes each
finished chunk to the run cache, which is atomic and checksummed (:mod:`gaia_viz.cache`);
rank 0 then reads the other ranks' chunks back from the cache, merges, computes the
metrics and writes the outputs. Hence, with several nodes, the run cache must be one
folder on a filesystem every node sees (NFS, Lustre, ...). A killed rank loses only the
chunk it was scoring; torchrun then stops the others, and the same command resumes.

The helpers below are no-ops for a single process, so the sweep calls them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence, TypeVar

import torch
from torch import Tensor

from gaia_viz.errors import GaiaVizError

T = TypeVar("T")

# Rank 0 fits the fitted methods while the others wait in a broadcast, and ranks finish
# their shares at different times: far longer than torch's default (10 min on NCCL) can
# be normal. A rank that dies makes torchrun stop the others, so this bounds only hangs.
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on
    its node, ``backend`` (``"gloo"``, ``"nccl"``, or None when no process group is up)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that merges and writes the outputs."""
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        """Where tensors must be to travel: the rank's GPU under NCCL, else the CPU."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


SINGLE = DistributedContext()


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise GaiaVizError(f"the environment variable {name}={text!r} is not a whole number; "
                           "start distributed runs with torchrun, which sets it") from None


def environment() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` as torchrun set them (``(0, 1, 0)`` without it)."""
    world = _env_int("WORLD_SIZE", 1)
    if world == 1:
        return 0, 1, 0
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local_rank < 0:
        raise GaiaVizError(f"inconsistent torchrun environment RANK={rank}, WORLD_SIZE={world}, "
                           f"LOCAL_RANK={local_rank}; start distributed runs with torchrun")
    return rank, world, local_rank


def start(device: str) -> tuple[DistributedContext, str]:
    """Join the torchrun job, if there is one: ``(context, this rank's device)``.

    ``device`` is the resolved device choice (``"cpu"``, ``"cuda"``, ...). Under torchrun
    with CUDA every rank takes ``cuda:LOCAL_RANK`` and NCCL; on the CPU, gloo. A
    GaiaVizError when the node has fewer GPUs than processes, or for ``cuda:N`` (every
    rank would use the same GPU)."""
    rank, world, local_rank = environment()
    if world == 1:
        return SINGLE, device
    import torch.distributed as dist

    if not dist.is_available():
        raise GaiaVizError("this PyTorch build has no torch.distributed; run without torchrun")
    if device.startswith("cuda"):
        if device != "cuda":
            raise GaiaVizError(f"under torchrun every rank uses its own GPU, cuda:LOCAL_RANK; pass --device "
                               f"cuda (or leave it out) instead of {device}")
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise GaiaVizError(f"rank {rank} has LOCAL_RANK {local_rank} but this node has {count} GPU(s); "
                               f"start at most {count} processes a node (--nproc-per-node)")
        torch.cuda.set_device(local_rank)
        device, backend = f"cuda:{local_rank}", "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    return DistributedContext(rank, world, local_rank, backend), device


def close(context: DistributedContext) -> None:
    """Leave the process group (nothing for a single process)."""
    if context.backend is None:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def share(items: Sequence[T], context: DistributedContext) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th item from its rank on
    (round robin, so consecutive chunks of a data set spread over all ranks)."""
    return list(items[context.rank::context.world_size])


def broadcast_object(value: T, context: DistributedContext) -> T:
    """Rank 0's ``value`` on every rank (pickled; for small objects like the plan)."""
    if not context.active:
        return value
    import torch.distributed as dist

    box = [value if context.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_tensors(tensors: dict[str, Tensor] | None, context: DistributedContext) -> dict[str, Tensor]:
    """Rank 0's named tensors on every rank, bit for bit, as CPU tensors (other ranks pass
    None). The shapes and dtypes travel first, then each tensor by ``dist.broadcast``."""
    if not context.active:
        return dict(tensors or {})
    import torch.distributed as dist

    layout = broadcast_object({k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}
                              if context.is_main else None, context)
    received = {}
    for key, (shape, dtype) in layout.items():
        if context.is_main:
            buffer = tensors[key].detach().contiguous().to(context.comm_device)
        else:
            buffer = torch.empty(shape, dtype=dtype, device=context.comm_device)
        dist.broadcast(buffer, src=0)
        received[key] = buffer.cpu()
    return received


def gather_to_main(value: Any, context: DistributedContext) -> list | None:
    """Every rank's ``value`` as a list on rank 0 (None elsewhere). Returns on rank 0 only
    once every rank has called it, so it is also the point where all shares are done."""
    if not context.active:
        return [value]
    import torch.distributed as dist

    gathered = [None] * context.world_size if context.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


__all__ = ["SINGLE", "TIMEOUT", "DistributedContext", "broadcast_object", "broadcast_tensors", "close",
           "environment", "gather_to_main", "share", "start"]
