"""Data-parallel training on several processes (one per GPU), as started by `torchrun`.

Plumbing module (hand-written). Used by chapter 5's train() and by `ddpm-lite train`:

    torchrun --nproc_per_node=4 -m ddpm_lite train --preset paper

Every rank draws the same global batch of cfg.batch_size examples and trains on its own shard of
it (`draw_batch(..., rank, world_size)`); DistributedDataParallel averages the gradients, so every
rank takes the same optimizer step and holds the same weights. Rank 0 alone writes files. Without
torchrun (no WORLD_SIZE, or WORLD_SIZE=1) nothing here does anything: no process group is created
and the model is not wrapped.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .device import pick_device
from .errors import ConfigError

__all__ = ["DistContext", "init_from_env", "wrap_model", "all_reduce_mean", "any_true", "barrier",
           "newest_checkpoint", "shutdown"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run: rank `rank` of `world_size`, on `device`.

    `cpu_group` carries the small CPU-side messages (barriers, the stop flag) without a GPU sync.
    Used by chapter 5's train()."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    cpu_group: object = None

    @property
    def enabled(self) -> bool:
        "True when several processes train together."
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        "True on the process that writes files and shows the progress bar (rank 0)."
        return self.rank == 0


_current: DistContext | None = None      # the process group of this process, once created


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise ConfigError(f"environment variable {name}={os.environ[name]!r} must be an integer "
                          "(torchrun sets it; unset it to train on one process).") from None


def init_from_env(device="auto", batch_size: int | None = None) -> DistContext:
    """The context of this process, from the variables torchrun sets (WORLD_SIZE, RANK, LOCAL_RANK).

    One process: rank 0 of 1 on pick_device(device), and nothing else happens. Several: checks that
    `batch_size` splits evenly over them (before any work), puts rank r on cuda:LOCAL_RANK when the
    device is CUDA, and joins the process group (nccl on CUDA, gloo on the CPU). Calling it again
    returns the same context. Used by chapter 5's train() and by `ddpm-lite train`."""
    global _current
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(device=pick_device(device))
    if batch_size is not None and batch_size % world:
        raise ConfigError(f"batch_size {batch_size} is not divisible by the {world} processes: every process "
                          f"trains on an equal shard of the batch. Use a multiple of {world} (for example "
                          f"batch_size={max(world, batch_size // world * world)}) or another --nproc_per_node.")
    if _current is not None and torch.distributed.is_initialized():
        return _current
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    dev = _rank_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    import torch.distributed as dist
    if not dist.is_initialized():
        if dev.type == "cuda":
            dist.init_process_group("nccl", device_id=dev)
        else:
            dist.init_process_group("gloo")
        atexit.register(shutdown)
    cpu_group = dist.new_group(backend="gloo") if dev.type == "cuda" else None
    _current = DistContext(rank, world, local, dev, cpu_group)
    return _current


def _rank_device(device, local_rank: int) -> torch.device:
    "cuda:LOCAL_RANK for a CUDA run; the CPU otherwise (MPS has no multi-process backend)."
    dev = pick_device(device)
    if dev.type == "cuda":
        if dev.index is not None and str(device) != "auto":
            raise ConfigError(f"--device {device} names one GPU, but under torchrun process r uses cuda:r. "
                              "Pass --device cuda (or auto), and pick the GPUs with CUDA_VISIBLE_DEVICES.")
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise ConfigError(f"process LOCAL_RANK={local_rank} has no GPU: this machine has {n}. "
                              f"Start at most {n} processes per machine (--nproc_per_node={n}).")
        return torch.device("cuda", local_rank)
    if dev.type == "mps":
        raise ConfigError("several processes cannot share Apple's MPS device; train on one process, "
                          "or pass --device cpu.")
    return dev


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """The model that computes the loss: `model` itself on one process, DistributedDataParallel on several
    (its backward pass averages the gradients over the ranks). Used by chapter 5's train()."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_reduce_mean(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of `t` over the ranks (`t` itself on one process). Each rank's loss is the mean over
    an equal shard, so their mean is the loss of the global batch. Used by chapter 5's train()."""
    if not ctx.enabled:
        return t
    total = t.detach().clone()
    torch.distributed.all_reduce(total)       # a sum: gloo has no average
    return total / ctx.world_size


def any_true(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when `flag` is True on any of them, so that all ranks stop at the same step
    (Ctrl-C may reach them at different moments). Used by chapter 5's train()."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([int(flag)])
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX, group=ctx.cpu_group)
    return bool(t.item())


def barrier(ctx: DistContext) -> None:
    """Wait until every rank gets here (nothing on one process): the others wait while rank 0 writes.
    Used by chapter 5's train() and by `ddpm-lite train`."""
    if ctx.enabled:
        torch.distributed.barrier(group=ctx.cpu_group)


def newest_checkpoint(run_dir, ctx: DistContext):
    """`latest_checkpoint(run_dir)` for every rank: rank 0 picks the file (and clears leftover temporary
    files), the others load the file it picked, so that all resume from the same step.
    Used by chapter 5's train()."""
    from .checkpoint import latest_checkpoint, load_checkpoint
    if not ctx.enabled:
        return latest_checkpoint(run_dir)
    found = latest_checkpoint(run_dir) if ctx.is_main else None
    picked = [str(found[0]) if found is not None else None]
    torch.distributed.broadcast_object_list(picked, src=0, group=ctx.cpu_group)
    if ctx.is_main or picked[0] is None:
        return found
    return Path(picked[0]), load_checkpoint(picked[0])


def shutdown(ctx: DistContext | None = None) -> None:
    """Leave the process group, if this process joined one (safe to call more than once).
    Used by `ddpm-lite train`, and at exit."""
    global _current
    if ctx is not None and not ctx.enabled:       # a one-process run never joined a group
        return
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    _current = None
