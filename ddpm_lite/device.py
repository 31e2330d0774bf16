"""Choosing the device: CUDA, then Apple's MPS, then the CPU, or the one the user names.

Plumbing module (hand-written).
"""
from __future__ import annotations

import torch

from .errors import DDPMLiteError

__all__ = ["pick_device"]


def pick_device(device: "str | torch.device | None" = "auto") -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; a named device is checked to exist."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DDPMLiteError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count()
        if n == 0:
            raise DDPMLiteError(f"device {device!r} asked for, but this machine has no CUDA GPU; "
                                "use device=auto or device=cpu.")
        if dev.index is not None and dev.index >= n:
            raise DDPMLiteError(f"device {device!r} asked for, but only {n} CUDA GPU(s) exist (cuda:0..cuda:{n - 1}).")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DDPMLiteError(f"device {device!r} asked for, but MPS is not available here; use device=auto or cpu.")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise DDPMLiteError(f"device type {dev.type!r} is not supported; use 'auto', 'cpu', 'cuda' or 'mps'.")
    return dev
