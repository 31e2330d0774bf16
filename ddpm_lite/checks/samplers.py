"""Property checks of chapter 6: the samplers, on Gaussian toy data whose exact noise predictor is known.

Plumbing module (hand-written); see ddpm_lite.checks.
"""
from __future__ import annotations

import torch
from torch import nn

from ..forward import make_schedule
from .base import _fail, _call, _tensor, _close, _moments_close

__all__ = ["GaussianOptimalEps", "exact_moments", "ddim_timesteps_spacing", "ddim_timesteps_one_step",
           "ancestral_sample_reproduces_gaussian_data", "ancestral_sample_matches_the_chapter",
           "ddim_sample_reproduces_gaussian_data", "ddim_sample_eta1_is_ancestral", "MU0", "S0", "TOY_SHAPE"]

# chapter 6: sampling

MU0, S0 = 0.2, 0.2        # toy data x_0 ~ N(MU0, S0^2), well inside [-1, 1] so clipping x_0 never bites
TOY_SHAPE = (1, 1, 1)     # one number per "image"


class GaussianOptimalEps(nn.Module):
    """The exact E[eps | x_t] for data N(mu0, s0^2), as a model(x, t, y) that ignores the label."""

    def __init__(self, sched, mu0=MU0, s0=S0):
        super().__init__()
        self.abar, self.mu0, self.s0 = sched.alpha_bars, mu0, s0
        self.dummy = nn.Parameter(torch.zeros(()))     # so that next(model.parameters()) finds the device
        self.calls = 0

    def forward(self, x, t, y):
        self.calls += 1
        a = self.abar[t].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        # eps*(x_t, t) = sqrt(1 - abar_t) (x_t - sqrt(abar_t) mu0) / (abar_t s0^2 + 1 - abar_t)
        return (1 - a).sqrt() * (x - a.sqrt() * self.mu0) / (a * self.s0**2 + 1 - a)


def exact_moments(sched, seq, eta=0.0, ancestral=False, mu0=MU0, s0=S0):
    """Mean and variance of a sampler's output for x_T ~ N(0, 1) with the exact noise predictor of N(mu0, s0^2).

    With that predictor every step is an affine map of x plus Gaussian noise, so the moments follow
    exactly (float64); seq lists the 0-based steps visited, from T-1 down."""
    abar, beta = sched.alpha_bars.tolist(), sched.betas.tolist()
    m, v = 0.0, 1.0
    for k, i in enumerate(seq):
        a = abar[i]
        a_prev = abar[seq[k + 1]] if k + 1 < len(seq) else 1.0
        vt = a * s0**2 + 1 - a
        ke, de = (1 - a) ** 0.5 / vt, -((1 - a) * a) ** 0.5 * mu0 / vt       # eps*(x) = ke x + de
        if ancestral:                          # x' = (x - beta / sqrt(1 - abar) eps) / sqrt(alpha) + sigma z
            b = beta[i]
            slope, off = (1 - b / (1 - a) ** 0.5 * ke) / (1 - b) ** 0.5, -b / (1 - a) ** 0.5 * de / (1 - b) ** 0.5
            sig2 = (1 - a_prev) / (1 - a) * b                                   # beta-tilde (0 at the last step)
        else:                                  # x' = sqrt(abar') x0_hat + sqrt(1 - abar' - sigma^2) eps + sigma z
            sig2 = eta**2 * (1 - a_prev) / (1 - a) * (1 - a / a_prev)
            c0, d0 = (1 - (1 - a) ** 0.5 * ke) / a**0.5, -(1 - a) ** 0.5 * de / a**0.5
            r = max(1 - a_prev - sig2, 0.0) ** 0.5
            slope, off = a_prev**0.5 * c0 + r * ke, a_prev**0.5 * d0 + r * de
        m, v = slope * m + off, slope**2 * v + sig2
    return m, v


def _toy_run(name, sampler, sched, n, seed, on, **kw):
    model = GaussianOptimalEps(sched)
    out = _call(name, sampler, model, sched, torch.zeros(n, dtype=torch.long), generator=torch.Generator().manual_seed(seed),
                shape=TOY_SHAPE, on=on, **kw)
    return _tensor(name, out, on, shape=(n, *TOY_SHAPE), what="the images")


def ddim_timesteps_spacing(ddim_timesteps) -> None:
    """`steps` long indices, strictly decreasing from T-1 to 0; all of them when steps = T."""
    name = "ddim_timesteps"
    for T in (2, 7, 100, 1000):
        for steps in sorted(s for s in {2, 3, T // 2, T} if 2 <= s <= T):
            on = f"T = {T}, steps = {steps}"
            seq = _tensor(name, _call(name, ddim_timesteps, T, steps, on=on), on, shape=(steps,), dtype=torch.long)
            if seq[0].item() != T - 1 or seq[-1].item() != 0 or not bool((seq[1:] < seq[:-1]).all()):
                _fail(name, f"{steps} indices, strictly decreasing, from {T - 1} to 0", on, f"{seq.tolist()[:12]}")
        on = f"T = {T}, steps = T"
        seq = _tensor(name, _call(name, ddim_timesteps, T, T, on=on), on, shape=(T,))
        if seq.tolist() != list(range(T - 1, -1, -1)):
            _fail(name, "every index from T - 1 down to 0", on, f"{seq.tolist()[:12]}")


def ddim_timesteps_one_step(ddim_timesteps) -> None:
    """One step jumps from T-1 straight to the end: [T-1]."""
    name = "ddim_timesteps"
    for T in (1, 1000):
        on = f"T = {T}, steps = 1"
        seq = _tensor(name, _call(name, ddim_timesteps, T, 1, on=on), on, shape=(1,))
        if seq.tolist() != [T - 1]:
            _fail(name, f"[{T - 1}]", on, f"{seq.tolist()}")


def ancestral_sample_reproduces_gaussian_data(ancestral_sample, T: int = 100) -> None:
    """With the exact noise predictor of Gaussian data, Algorithm 2's samples have the data's mean and variance."""
    name, n = "ancestral_sample", 8000
    sched = make_schedule("linear", T)
    on = (f"{n} one-pixel images, linear schedule with T = {T}, w = 0, and the exact noise predictor for data "
          f"x_0 ~ N({MU0}, {S0}^2)")
    x = _toy_run(name, ancestral_sample, sched, n, 0, on, w=0.0)
    mean, var = exact_moments(sched, list(range(T - 1, -1, -1)), ancestral=True)
    _moments_close(name, x, mean, var, "the moments of the exact reverse chain (about the data's)", on,
                   hint="x_{t-1} = mu_theta + sigma_t z with sigma_t^2 = beta-tilde_t, and no noise at the last step.")


def ancestral_sample_matches_the_chapter(ancestral_sample) -> None:
    """Same seed, same images as the chapter's sampler: T noise draws in all, none at the last step, guidance used."""
    from ..sampling import ancestral_sample as reference
    name, T, n = "ancestral_sample", 30, 16
    sched = make_schedule("cosine", T)
    for w in (0.0, 1.5):
        on = f"{n} one-pixel images, cosine schedule with T = {T}, w = {w}, the Gaussian toy model, seed 5"
        got = _toy_run(name, ancestral_sample, sched, n, 5, on, w=w)
        want = reference(GaussianOptimalEps(sched), sched, torch.zeros(n, dtype=torch.long), w=w,
                         generator=torch.Generator().manual_seed(5), shape=TOY_SHAPE)
        _close(name, got, want, "the chapter's samples from the same seed", on, atol=1e-5,
               hint="draw the noise with _noise(x.shape, generator, device) once per step, except the last one.")


def ddim_sample_reproduces_gaussian_data(ddim_sample) -> None:
    """DDIM with eta = 0 follows the exact moments of its chain on Gaussian data, and is deterministic given x_T."""
    name, n = "ddim_sample", 8000
    sched = make_schedule("linear", 1000)
    for steps, clip in ((50, True), (20, False)):
        on = (f"{n} one-pixel images, linear schedule with T = 1000, {steps} steps, eta = 0, clip_x0 = {clip}, "
              f"the exact noise predictor for data x_0 ~ N({MU0}, {S0}^2)")
        x = _toy_run(name, ddim_sample, sched, n, 0, on, w=0.0, steps=steps, eta=0.0, clip_x0=clip)
        mean, var = exact_moments(sched, torch.linspace(999, 0, steps).round().long().tolist())
        _moments_close(name, x, mean, var, "the moments of the exact DDIM chain", on,
                       hint="x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z, "
                            "with abar_s = 1 after the last jump.")
    on = "64 one-pixel images, T = 100, 10 steps, eta = 0, the same seed twice"
    a = _toy_run(name, ddim_sample, make_schedule("linear", 100), 64, 7, on, steps=10, eta=0.0)
    b = _toy_run(name, ddim_sample, make_schedule("linear", 100), 64, 7, on, steps=10, eta=0.0)
    if not torch.equal(a, b):
        _fail(name, "the same images from the same x_T when eta = 0", on, "different images",
              "with eta = 0 no noise is drawn after x_T.")


def ddim_sample_eta1_is_ancestral(ddim_sample) -> None:
    """With steps = T and eta = 1 DDIM is ancestral sampling: same seed, same samples as Algorithm 2."""
    from ..sampling import ancestral_sample
    name, n = "ddim_sample", 256
    sched = make_schedule("linear", 50)
    on = f"{n} one-pixel images, T = 50, steps = 50, eta = 1, clip_x0 = False, seed 1, the Gaussian toy model"
    d = _toy_run(name, ddim_sample, sched, n, 1, on, steps=50, eta=1.0, clip_x0=False)
    a = ancestral_sample(GaussianOptimalEps(sched), sched, torch.zeros(n, dtype=torch.long),
                         generator=torch.Generator().manual_seed(1), shape=TOY_SHAPE)
    _close(name, d, a, "the samples of ancestral sampling from the same seed", on, atol=1e-4,
           hint="sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s); add sigma z except after the last jump.")
