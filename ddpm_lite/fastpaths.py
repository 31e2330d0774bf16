"""The speed-ups that `make bench` measures, each beside the plain way it is compared with.

Plumbing module (hand-written). ddpm_lite.benchmark (run by scripts/bench.py) times these;
tests/test_fastpaths.py checks that every fast path gives the same numbers as its plain
counterpart, because a speed-up is only worth having if the results do not change.
"""
from __future__ import annotations

import copy
import inspect

import torch
from torch import nn

from .guidance import NULL_LABEL
from .reverse import mu_from_eps
from .training import Batch, make_optimizer

__all__ = ["CL", "two_pass_eps", "channels_last_copy", "channels_last_batch", "optimizer_variant",
           "default_optimizer_kind", "count_flops", "CountingStub", "reverse_step", "benchmark_images"]

CL = torch.channels_last


def two_pass_eps(model, x, t, y, w: float) -> torch.Tensor:
    """Guidance as the paper's code does it: two separate forward passes, the unconditional one even at w = 0.

    eps-tilde = (1 + w) eps(x_t, t, c) - w eps(x_t, t)   (eq 6). The package's way is
    `ddpm_lite.guidance.guided_eps`: one call on 2B images, and none of the second at w = 0.
    """
    eps_cond = model(x, t, y)
    eps_uncond = model(x, t, torch.full_like(y, NULL_LABEL))
    return (1 + w) * eps_cond - w * eps_uncond


def channels_last_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` whose 4-D weights use the channels_last memory format (same values)."""
    return copy.deepcopy(model).to(memory_format=CL)


def channels_last_batch(batch: Batch) -> Batch:
    """The same training batch with its images in the channels_last memory format."""
    return Batch(batch.x0.contiguous(memory_format=CL), batch.y, batch.t, batch.eps.contiguous(memory_format=CL))


def optimizer_variant(cfg, model: nn.Module, kind: str) -> torch.optim.Optimizer:
    """The preset's optimizer (`make_optimizer`'s class and settings) as a for-loop, foreach or fused kernel."""
    base = make_optimizer(cfg, model)
    flags = {"for_loop": dict(foreach=False, fused=False), "foreach": dict(foreach=True, fused=False),
             "fused": dict(foreach=False, fused=True)}[kind]
    accepted = inspect.signature(type(base).__init__).parameters
    settings = {k: v for k, v in base.defaults.items() if k in accepted}
    return type(base)(model.parameters(), **{**settings, **flags})


def default_optimizer_kind(model: nn.Module) -> str:
    """What torch.optim.Adam picks when neither foreach nor fused is given, for these parameters."""
    from torch.optim.optimizer import _default_to_fused_or_foreach
    fused, foreach = _default_to_fused_or_foreach(list(model.parameters()), differentiable=False, use_fused=False)
    return "fused" if fused else "foreach" if foreach else "for_loop"


def count_flops(fn) -> int:
    """FLOPs of calling `fn()` once, as torch.utils.flop_counter counts them (a multiply-add is 2)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


class CountingStub(nn.Module):
    """Predicts zero noise and counts its forward calls and images: runs the samplers at full length for free."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(()))
        self.calls = self.images = 0

    def forward(self, x, t, y):
        self.calls += 1
        self.images += len(x)
        return x * self.scale


def reverse_step(eps_fn, model, sched, var, x, t, y, w):
    """One step of Algorithm 2 with a given way of computing the guided noise prediction."""
    eps = eps_fn(model, x, t, y, w)
    mean = mu_from_eps(sched, x, t, eps)
    # x_{t-1} = mu + sigma_t z
    return mean + var[int(t[0])].sqrt().to(x.dtype) * torch.randn(x.shape)


def benchmark_images(float_images: bool):
    """(images, labels, source): MNIST's test set (float in [-1, 1] or uint8), or random stand-ins with
    the reason when MNIST is unavailable (timings do not depend on pixel values)."""
    try:
        from .data import load_mnist, load_mnist_float
        return (load_mnist_float if float_images else load_mnist)("test") + ("MNIST test set",)
    except Exception as e:
        g = torch.Generator().manual_seed(0)
        imgs = (torch.rand((1000, 1, 28, 28), generator=g) * 2 - 1 if float_images
                else torch.randint(0, 256, (1000, 28, 28), generator=g, dtype=torch.uint8))
        return imgs, torch.randint(10, (1000,), generator=g), f"random images ({type(e).__name__}: MNIST unavailable)"
