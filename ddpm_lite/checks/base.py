"""The shared machinery of the property checks: CheckFailed and the helpers that call a function under test and compare its output.

Plumbing module (hand-written); see ddpm_lite.checks.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["CheckFailed", "F64"]

F64 = torch.float64


class CheckFailed(AssertionError):
    """A property of a function does not hold; the message names the function and says what to fix."""


def _fail(name: str, expected: str, on: str, got: str, hint: str = "") -> None:
    msg = f"{name} is not right yet.\n  expected: {expected}\n  on input: {on}\n  got:      {got}"
    raise CheckFailed(msg + (f"\n  hint:     {hint}" if hint else ""))


def _call(name: str, fn: Callable, *args, on: str = "", **kwargs):
    """fn(*args, **kwargs); an exception inside it becomes a failed check that names the function."""
    if not callable(fn):
        raise CheckFailed(f"{name} is not a function (got {type(fn).__name__}): run the cell that defines it first.")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise CheckFailed(f"{name} is not written yet: replace the `...` in its body with your code.") from None
    except Exception as e:   # the student's code raised: report it as a failed check, not a crash
        raise CheckFailed(f"{name} raised {type(e).__name__}: {e}\n  on input: {on}") from e


def _tensor(name: str, out, on: str, shape=None, dtype=None, what: str = "a tensor") -> torch.Tensor:
    """out after checking it is a tensor of the given shape and dtype."""
    if out is None or out is Ellipsis:
        _fail(name, what, on, "None", "the body is still `...` or is missing a `return`.")
    if not isinstance(out, torch.Tensor):
        _fail(name, what, on, f"a {type(out).__name__}")
    if shape is not None and tuple(out.shape) != tuple(shape):
        _fail(name, f"{what} of shape {list(shape)}", on, f"shape {list(out.shape)}",
              "check which dimensions broadcast: one value per image has shape [B, 1, 1, 1].")
    if dtype is not None and out.dtype != dtype:
        _fail(name, f"{what} of dtype {dtype}", on, f"dtype {out.dtype}",
              "compute in the dtype of the input (use `extract`, which converts the schedule's values).")
    return out


def _close(name: str, got: torch.Tensor, want: torch.Tensor, expected: str, on: str,
           atol: float = 1e-6, rtol: float = 1e-5, hint: str = "") -> None:
    got = _tensor(name, got, on, shape=want.shape)
    diff = (got.double() - want.double()).abs()
    bad = diff > atol + rtol * want.double().abs()
    if bool(bad.any()) or not bool(torch.isfinite(got).all()):
        where = int(bad.flatten().nonzero()[0]) if bool(bad.any()) else 0
        _fail(name, expected, on,
              f"values off by up to {diff.max().item():.3g} (first wrong entry: {got.flatten()[where].item():.6g} "
              f"where {want.flatten()[where].item():.6g} was expected)", hint)


def _moments_close(name: str, x: torch.Tensor, mean: float, var: float, expected: str, on: str,
                   extra: float = 0.0, hint: str = "") -> None:
    """The sample mean and variance of x within 5 standard errors (plus `extra` of var) of (mean, var)."""
    n = x.numel()
    m_hat, v_hat = x.double().mean().item(), x.double().var().item()
    ok = (abs(m_hat - mean) < 5 * (var / n) ** 0.5 + extra * var ** 0.5
          and abs(v_hat - var) < 5 * var * (2 / (n - 1)) ** 0.5 + extra * var)
    if not (ok and math.isfinite(m_hat) and math.isfinite(v_hat)):
        _fail(name, f"{expected}: mean {mean:.4f}, variance {var:.4f}", on,
              f"mean {m_hat:.4f}, variance {v_hat:.4f} over {n} samples", hint)
