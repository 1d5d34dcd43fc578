"""DistributedDataParallel set-up for `torchrun` (NCCL on GPUs, gloo on CPUs).

Run a training script with ``torchrun --nproc_per_node K script.py ...`` and
`init_distributed` joins the process group from the environment variables
torchrun sets (`launch_env` checks them: a stale ``RANK`` or a ``WORLD_SIZE`` without
torchrun is one line, never guessed); the same script without torchrun runs as one process.
`shard_indices` is a DistributedSampler equivalent over any list of items
(recordings or windows): every rank gets a disjoint, equally long share of one
seeded permutation per epoch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def check_device(device: str, flag: str = "--device") -> torch.device:
    """``device`` as a torch.device; one-line EEGKitError for an unknown name or absent CUDA."""
    from util.errors import EEGKitError

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise EEGKitError(f"{flag} {device!r}: not a device name (use cpu or cuda)") from None
    if parsed.type not in ("cpu", "cuda"):
        raise EEGKitError(f"{flag} {device!r}: only cpu and cuda are supported")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise EEGKitError(f"{flag} {device}: CUDA is not available on this machine (use --device cpu)")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise EEGKitError(f"{flag} {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    return parsed


RANK_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # torchrun sets all three (and MASTER_ADDR, MASTER_PORT)


def launch_env(environ=None) -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment variables; one line when they do not fit.

    The rule: none of ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set (or all empty) is one process,
    ``(0, 1, 0)``. Once any is set, all three must be whole numbers with ``0 <= RANK < WORLD_SIZE``
    and ``0 <= LOCAL_RANK < WORLD_SIZE``, and ``WORLD_SIZE > 1`` also needs ``MASTER_ADDR`` and
    ``MASTER_PORT``: exactly what torchrun sets. Anything else is refused, never guessed: a stale
    ``RANK=1`` left in a shell would make a lone process skip rank 0's writes, and ``WORLD_SIZE=2``
    without torchrun would wait for a partner that never comes.
    """
    from util.errors import EEGKitError

    environ = os.environ if environ is None else environ
    given = {name: environ.get(name, "").strip() for name in RANK_VARS}
    if not any(given.values()):
        return 0, 1, 0
    shown = " ".join(f"{name}={environ[name]!r}" for name in RANK_VARS if name in environ)
    hint = ("run the script under torchrun (torchrun --nproc_per_node K -m ...), or unset RANK, WORLD_SIZE and "
            "LOCAL_RANK for one process")
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise EEGKitError(f"environment {shown}: {', '.join(missing)} not set; {hint}")
    try:
        rank, world_size, local_rank = (int(given[name]) for name in RANK_VARS)
    except ValueError:
        raise EEGKitError(f"environment {shown}: not whole numbers; {hint}") from None
    if not (world_size >= 1 and 0 <= rank < world_size and 0 <= local_rank < world_size):
        raise EEGKitError(f"environment {shown}: needs 0 <= RANK < WORLD_SIZE and 0 <= LOCAL_RANK < WORLD_SIZE; "
                          f"{hint}")
    if world_size > 1:
        absent = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not environ.get(name, "").strip()]
        if absent:
            raise EEGKitError(f"environment {shown}: WORLD_SIZE > 1 without {' and '.join(absent)} (not started by "
                              f"torchrun); {hint}")
    return rank, world_size, local_rank


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the torchrun process group if there is one; pick the device.

    ``device`` forces 'cpu' or 'cuda'; by default CUDA is used when available. The environment is read
    by `launch_env` (an inconsistent one is refused before anything else happens).
    """
    rank, world_size, local_rank = launch_env()
    use_cuda = torch.cuda.is_available() if device is None else check_device(device).type == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device)


def wrap_ddp(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """Move ``model`` to the device and wrap it in DDP when running distributed."""
    model = model.to(info.device)
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [info.local_rank] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def shard_indices(n_items: int, info: DistInfo, epoch: int = 0, seed: int = 0, shuffle: bool = True,
                  drop_last: bool = False) -> np.ndarray:
    """This rank's share of ``range(n_items)`` for ``epoch``.

    Same permutation on every rank (seeded by seed + epoch); rank r takes
    positions r, r + world, ...  Without ``drop_last`` the list is padded by
    wrapping around so that all ranks do the same number of steps.
    """
    order = np.random.default_rng(seed + epoch).permutation(n_items) if shuffle else np.arange(n_items)
    world = info.world_size
    if drop_last:
        order = order[: n_items - n_items % world]
    elif n_items % world and n_items:
        order = np.concatenate([order, order[: world - n_items % world]])
    return order[info.rank :: world]


def all_reduce_mean(value: float | torch.Tensor, info: DistInfo) -> float:
    """Mean of a scalar over all ranks (returns the value itself on one process)."""
    tensor = torch.as_tensor(value, dtype=torch.float64, device=info.device).clone()
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor /= info.world_size
    return float(tensor.item())


def all_reduce_sum(value: float | torch.Tensor, info: DistInfo) -> float:
    tensor = torch.as_tensor(value, dtype=torch.float64, device=info.device).clone()
    if info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item())


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
