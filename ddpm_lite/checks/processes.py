"""Property checks of chapters 1 and 2: the forward process (eqs 2 and 4) and the reverse process (the posterior).

Plumbing module (hand-written); see ddpm_lite.checks.
"""
from __future__ import annotations

import math

import torch

from ..forward import make_schedule
from .base import F64, _fail, _call, _tensor, _close, _moments_close

__all__ = ["q_step_iterates_to_eq4", "q_step_is_eq2", "q_sample_is_eq4", "q_sample_draws_its_own_noise",
           "posterior_variance_is_closed_form", "posterior_variance_bounds",
           "posterior_coefficients_give_the_mean", "posterior_coefficients_at_the_first_step",
           "predict_x0_inverts_q_sample", "predict_x0_keeps_float32", "mu_from_eps_is_posterior_mean",
           "mu_from_eps_broadcasts_one_step"]

# chapter 1: the forward process

def q_step_iterates_to_eq4(q_step) -> None:
    """Eq 2 applied t times has the mean and variance of eq 4: sqrt(abar_t) x_0 and 1 - abar_t."""
    name, T, n, x0 = "q_step", 100, 20_000, 0.6
    sched = make_schedule("linear", T)
    g = torch.Generator().manual_seed(0)
    x = torch.full((n, 1), x0, dtype=F64)
    for t in range(T):
        on = f"{n} chains started at x_0 = {x0}, linear schedule with T = {T}, step index t = {t}"
        x = _tensor(name, _call(name, q_step, sched, x, torch.full((n,), t), torch.randn(n, 1, generator=g, dtype=F64),
                                on=on), on, shape=(n, 1), dtype=F64, what="x_t")
        if t in (0, 19, 49, 99):
            abar = sched.alpha_bars[t].item()
            _moments_close(name, x, math.sqrt(abar) * x0, 1 - abar,
                           "after t + 1 steps of eq 2, the distribution of eq 4", on,
                           hint="one step is x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps (eq 2).")


def q_step_is_eq2(q_step) -> None:
    """q_step(sched, x, t, eps) is sqrt(1 - beta_t) x + sqrt(beta_t) eps exactly, per image, in float32."""
    name = "q_step"
    sched = make_schedule("cosine", 1000)
    g = torch.Generator().manual_seed(1)
    x, eps = torch.randn(4, 1, 28, 28, generator=g), torch.randn(4, 1, 28, 28, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    beta = sched.betas[t].float().view(-1, 1, 1, 1)
    on = "4 float32 images [4, 1, 28, 28], cosine schedule, t = [0, 10, 500, 999], given eps"
    out = _tensor(name, _call(name, q_step, sched, x, t, eps, on=on), on, shape=x.shape, dtype=torch.float32)
    _close(name, out, (1 - beta).sqrt() * x + beta.sqrt() * eps, "sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps (eq 2)", on)


def q_sample_is_eq4(q_sample) -> None:
    """q_sample(sched, x0, t, eps) is sqrt(abar_t) x0 + sqrt(1 - abar_t) eps exactly, one t per image."""
    name = "q_sample"
    sched = make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 1, 28, 28, generator=g), torch.randn(4, 1, 28, 28, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    abar = sched.alpha_bars[t].float().view(-1, 1, 1, 1)
    on = "4 float32 images [4, 1, 28, 28], linear schedule with T = 1000, t = [0, 10, 500, 999], given eps"
    out = _tensor(name, _call(name, q_sample, sched, x0, t, eps, on=on), on, shape=x0.shape, dtype=torch.float32,
                  what="x_t")
    _close(name, out, abar.sqrt() * x0 + (1 - abar).sqrt() * eps,
           "x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (eq 4), with abar_t picked per image", on,
           hint="abar_t is sched.alpha_bars; `extract(sched.alpha_bars, t, x0)` shapes it to [B, 1, 1, 1].")


def q_sample_draws_its_own_noise(q_sample) -> None:
    """Without eps, q_sample draws standard normal noise: x_t has eq 4's mean and variance (float64, cosine)."""
    name, n, x0, step = "q_sample", 20_000, 0.5, 299
    sched = make_schedule("cosine", 1000)
    torch.manual_seed(0)
    on = f"{n} copies of x_0 = {x0} (float64), cosine schedule, t = {step}, eps not given"
    out = _tensor(name, _call(name, q_sample, sched, torch.full((n, 1), x0, dtype=F64), torch.full((n,), step), on=on),
                  on, shape=(n, 1), dtype=F64)
    abar = sched.alpha_bars[step].item()
    _moments_close(name, out, math.sqrt(abar) * x0, 1 - abar, "the distribution of eq 4", on,
                   hint="when eps is None, draw it with torch.randn_like(x0).")


# chapter 2: the reverse process

def _joint_posterior(sched, x0, xt):
    """Mean and variance of x_{t-1} given (x_t, x_0), by conditioning the forward joint Gaussian (every step)."""
    abar_prev = torch.tensor([1.0] + sched.alpha_bars[:-1].tolist(), dtype=F64)
    alpha = sched.alphas
    m_prev, v_prev = abar_prev.sqrt() * x0, 1 - abar_prev
    m_t, v_t, cov = alpha.sqrt() * m_prev, alpha * v_prev + sched.betas, alpha.sqrt() * v_prev
    return m_prev + cov / v_t * (xt - m_t), v_prev - cov**2 / v_t


def posterior_variance_is_closed_form(posterior_variance) -> None:
    """beta-tilde_t equals the variance of x_{t-1} given (x_t, x_0), found by conditioning the forward joint."""
    name = "posterior_variance"
    for sched_name in ("linear", "cosine"):
        sched = make_schedule(sched_name, 1000)
        on = f"the {sched_name} schedule with T = 1000 (all steps)"
        out = _tensor(name, _call(name, posterior_variance, sched, on=on), on, shape=(1000,), dtype=F64)
        _, want = _joint_posterior(sched, torch.zeros(1000, dtype=F64), torch.zeros(1000, dtype=F64))
        _close(name, out, want, "beta-tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t, with abar_0 = 1", on,
               atol=1e-15, rtol=1e-10, hint="at index t, abar_{t-1} is alpha_bars[t - 1], and 1 at index 0.")


def posterior_variance_bounds(posterior_variance) -> None:
    """beta-tilde is exactly 0 at index 0 and in (0, beta_t] after it, for short schedules too."""
    name = "posterior_variance"
    for T in (1, 2, 10):
        sched = make_schedule("cosine", T)
        on = f"the cosine schedule with T = {T}"
        var = _tensor(name, _call(name, posterior_variance, sched, on=on), on, shape=(T,), dtype=F64)
        if var[0].item() != 0.0:
            _fail(name, "beta-tilde = 0 exactly at index 0 (the paper's step 1)", on, f"{var[0].item():.3g}")
        if not bool(((var[1:] > 0) & (var[1:] <= sched.betas[1:])).all()):
            _fail(name, "0 < beta-tilde_t <= beta_t after index 0", on, f"{var.tolist()}")


def posterior_coefficients_give_the_mean(posterior_coefficients) -> None:
    """c0[t] x_0 + ct[t] x_t is the mean of x_{t-1} given (x_t, x_0), by conditioning the forward joint."""
    name = "posterior_coefficients"
    for sched_name in ("linear", "cosine"):
        sched = make_schedule(sched_name, 1000)
        on = f"the {sched_name} schedule with T = 1000 (all steps)"
        out = _call(name, posterior_coefficients, sched, on=on)
        if not (isinstance(out, tuple) and len(out) == 2):
            _fail(name, "a pair (c0, ct) of tensors", on, f"{type(out).__name__}" if out is not None else "None")
        c0 = _tensor(name, out[0], on, shape=(1000,), what="c0")
        ct = _tensor(name, out[1], on, shape=(1000,), what="ct")
        x0, xt = torch.linspace(-1.5, 1.5, 1000, dtype=F64), torch.linspace(2.0, -2.0, 1000, dtype=F64)
        want, _ = _joint_posterior(sched, x0, xt)
        _close(name, c0 * x0 + ct * xt, want,
               "mu-tilde_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t",
               on + f", x_0 from -1.5 to 1.5 and x_t from 2 to -2 across the steps", atol=1e-12, rtol=1e-10)


def posterior_coefficients_at_the_first_step(posterior_coefficients) -> None:
    """At index 0 the posterior is a point mass on x_0: c0 = 1 and ct = 0."""
    name = "posterior_coefficients"
    sched = make_schedule("cosine", 50)
    on = "the cosine schedule with T = 50, index 0"
    out = _call(name, posterior_coefficients, sched, on=on)
    if not (isinstance(out, tuple) and len(out) == 2):
        _fail(name, "a pair (c0, ct) of tensors", on, "something else")
    c0, ct = (_tensor(name, v, on, shape=(50,)) for v in out)
    if abs(c0[0].item() - 1) > 1e-12 or abs(ct[0].item()) > 1e-12:
        _fail(name, "c0[0] = 1 and ct[0] = 0 (abar_0 = 1)", on, f"c0[0] = {c0[0].item():.6g}, ct[0] = {ct[0].item():.6g}")


def predict_x0_inverts_q_sample(predict_x0) -> None:
    """predict_x0 applied to x_t = q_sample(x_0, t, eps) with the same eps gives back x_0."""
    from ..forward import q_sample
    name = "predict_x0"
    g = torch.Generator().manual_seed(1)
    for sched_name in ("linear", "cosine"):
        sched = make_schedule(sched_name, 1000)
        t = torch.cat([torch.tensor([0, 999]), torch.randint(0, 1000, (62,), generator=g)])
        x0 = torch.rand(64, 1, 8, 8, generator=g, dtype=F64) * 2 - 1
        eps = torch.randn(64, 1, 8, 8, generator=g, dtype=F64)
        on = f"64 float64 images [64, 1, 8, 8] noised by eq 4 ({sched_name} schedule, t from 0 to 999) and their noise"
        out = _call(name, predict_x0, sched, q_sample(sched, x0, t, eps), t, eps, on=on)
        _close(name, _tensor(name, out, on, shape=x0.shape, dtype=F64), x0,
               "x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), which gives back the clean images", on,
               atol=1e-9, rtol=0)


def predict_x0_keeps_float32(predict_x0) -> None:
    """predict_x0 keeps float32 inputs float32, and one step index serves the whole batch."""
    name = "predict_x0"
    sched = make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(2)
    xt, eps = torch.randn(3, 1, 28, 28, generator=g), torch.randn(3, 1, 28, 28, generator=g)
    on = "3 float32 images [3, 1, 28, 28], a single step index t = 7 for the whole batch"
    out = _tensor(name, _call(name, predict_x0, sched, xt, torch.tensor(7), eps, on=on), on, shape=xt.shape,
                  dtype=torch.float32)
    a = sched.alpha_bars[7].float()
    _close(name, out, (xt - (1 - a).sqrt() * eps) / a.sqrt(), "(x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)", on,
           atol=1e-5)


def mu_from_eps_is_posterior_mean(mu_from_eps) -> None:
    """With the true noise, mu_theta(x_t, t) equals the posterior mean mu-tilde_t(x_t, x_0), at every step."""
    from ..forward import q_sample
    name = "mu_from_eps"
    g = torch.Generator().manual_seed(2)
    for sched_name in ("linear", "cosine"):
        sched = make_schedule(sched_name, 1000)
        t = torch.arange(1000)
        x0, eps = torch.randn(1000, generator=g, dtype=F64), torch.randn(1000, generator=g, dtype=F64)
        xt = q_sample(sched, x0, t, eps)
        on = f"x_t = q_sample(x_0, t, eps) at every step t of the {sched_name} schedule (T = 1000), with that eps"
        out = _tensor(name, _call(name, mu_from_eps, sched, xt, t, eps, on=on), on, shape=xt.shape, dtype=F64)
        want, _ = _joint_posterior(sched, x0, xt)
        _close(name, out, want, "mu = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps), "
               "which with the true eps is the posterior mean mu-tilde_t(x_t, x_0)", on, atol=1e-9, rtol=1e-9)


def mu_from_eps_broadcasts_one_step(mu_from_eps) -> None:
    """One step index serves a whole float32 batch, and the result stays float32."""
    name = "mu_from_eps"
    sched = make_schedule("linear", 100)
    g = torch.Generator().manual_seed(3)
    xt, eps = torch.randn(3, 1, 2, 2, generator=g), torch.randn(3, 1, 2, 2, generator=g)
    on = "3 float32 images [3, 1, 2, 2], linear schedule with T = 100, a single step index t = 7"
    out = _tensor(name, _call(name, mu_from_eps, sched, xt, torch.tensor(7), eps, on=on), on, shape=xt.shape,
                  dtype=torch.float32)
    a, b, ab = sched.alphas[7].float(), sched.betas[7].float(), sched.alpha_bars[7].float()
    _close(name, out, (xt - b / (1 - ab).sqrt() * eps) / a.sqrt(), "1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps)",
           on, atol=1e-5)
