"""Property checks of the book's key functions, shared by the test suite and the course assignments.

Each check takes the function under test (the package's own, or a student's version written in an
assignment notebook), runs it on small inputs, and raises `CheckFailed` (an `AssertionError`) with a
message that says what was expected, on which input, and what came back. The unit tests in `tests/`
run these same checks on the package, so a property is written once.

`EXERCISES` lists, per chapter, the functions an assignment leaves for the student, the points each
earns, the checks a student runs in the notebook (`public`) and the extra ones run only when grading
(`hidden`). `otter_notebook(chapter)` sets up otter-grader's `grader.check(...)` for an assignment
notebook, anywhere it runs (Colab, a laptop, the grader).

Plumbing module (hand-written).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .forward import make_schedule
from .guidance import NULL_LABEL, NUM_CLASSES

__all__ = ["CheckFailed", "Exercise", "EXERCISES", "chapters", "exercises", "exercise", "GaussianOptimalEps",
           "exact_moments", "test_case_source", "public_test_file", "write_public_tests", "otter_notebook"]

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


# ---------------------------------------------------------------- chapter 1: the forward process

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


# ---------------------------------------------------------------- chapter 2: the reverse process

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
    from .forward import q_sample
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
    from .forward import q_sample
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


# ---------------------------------------------------------------- chapter 3: the U-Net

def sinusoidal_embedding_is_the_formula(sinusoidal_embedding) -> None:
    """PE(t) = [sin(w_k t) for k < d/2, cos(w_k t) for k < d/2], w_k = max_period^(-k / (d/2)), float32 [B, d]."""
    name, d = "sinusoidal_embedding", 8
    t = torch.tensor([0, 1, 10, 999])
    on = f"t = {t.tolist()}, dim = {d}"
    out = _tensor(name, _call(name, sinusoidal_embedding, t, d, on=on), on, shape=(4, d), dtype=torch.float32)
    k = torch.arange(d // 2, dtype=F64)
    angles = t.double()[:, None] * 10_000.0 ** (-k / (d // 2))[None, :]
    _close(name, out, torch.cat([angles.sin(), angles.cos()], dim=1),
           "the sines of all d/2 frequencies, then their cosines, with w_k = 10000^(-k / (d/2))", on, atol=1e-5,
           hint="t = 0 gives d/2 zeros followed by d/2 ones.")


def sinusoidal_embedding_separates_steps(sinusoidal_embedding) -> None:
    """Every step 0..999 gets its own embedding, of length sqrt(d/2), and max_period is honoured."""
    name, d = "sinusoidal_embedding", 64
    t = torch.arange(1000)
    on = f"t = 0..999, dim = {d}"
    pe = _tensor(name, _call(name, sinusoidal_embedding, t, d, on=on), on, shape=(1000, d))
    _close(name, pe.norm(dim=1), torch.full((1000,), (d / 2) ** 0.5), "rows of length sqrt(d/2) (sin^2 + cos^2 = 1)",
           on, atol=1e-4)
    dist = torch.cdist(pe.float(), pe.float())
    if dist[~torch.eye(1000, dtype=torch.bool)].min() <= 1e-2:
        _fail(name, "a different embedding for every step", on, "two steps with (almost) the same embedding")
    on = "t = [3], dim = 4, max_period = 100"
    out = _tensor(name, _call(name, sinusoidal_embedding, torch.tensor([3]), 4, 100.0, on=on), on, shape=(1, 4))
    w = torch.tensor([1.0, 100.0 ** -0.5], dtype=F64)
    _close(name, out, torch.cat([(3 * w).sin(), (3 * w).cos()])[None], "frequencies w_k = max_period^(-k / (d/2))",
           on, atol=1e-5)


# ---------------------------------------------------------------- chapter 4: classifier-free guidance

def drop_labels_drops_with_probability_p(drop_labels) -> None:
    """Each label becomes NULL_LABEL independently with probability p: never at 0, always at 1, per sample."""
    name = "drop_labels"
    y = torch.arange(20_000) % 10
    for p in (0.0, 1.0, 0.3):
        on = f"20,000 labels 0-9, p_uncond = {p}"
        out = _tensor(name, _call(name, drop_labels, y, p, generator=torch.Generator().manual_seed(123), on=on), on,
                      shape=y.shape, what="labels")
        rate = (out == NULL_LABEL).double().mean().item()
        if abs(rate - p) > 0.02:
            _fail(name, f"a fraction {p} of the labels replaced by NULL_LABEL = {NULL_LABEL}", on, f"a fraction {rate:.3f}",
                  "draw one uniform number per label and drop where it is below p_uncond.")
        kept = out != NULL_LABEL
        if not torch.equal(out[kept], y[kept]):
            _fail(name, "every label that is not dropped left unchanged", on, "some kept labels changed")
    batches = torch.arange(8).repeat(200).view(200, 8)
    on = "200 batches of 8 labels (a [200, 8] tensor), p_uncond = 0.5"
    out = _tensor(name, _call(name, drop_labels, batches, 0.5, generator=torch.Generator().manual_seed(7), on=on), on,
                  shape=batches.shape, what="labels")
    per_row = (out == NULL_LABEL).sum(1)
    mixed = ((per_row > 0) & (per_row < 8)).sum().item()
    if mixed < 150:
        _fail(name, "one coin per label, so most rows mix dropped and kept labels", on,
              f"only {mixed} of 200 rows mixed", "do not drop a whole batch at once (that is the slip of chapter 10).")


def drop_labels_is_reproducible(drop_labels) -> None:
    """The same generator seed gives the same drops; the input is left unchanged; the result is long."""
    name = "drop_labels"
    y = torch.arange(100) % 10
    before = y.clone()
    on = "100 labels, p_uncond = 0.3, two generators seeded with 5"
    a = _tensor(name, _call(name, drop_labels, y, 0.3, generator=torch.Generator().manual_seed(5), on=on), on,
                shape=y.shape, dtype=torch.long)
    b = _tensor(name, _call(name, drop_labels, y, 0.3, generator=torch.Generator().manual_seed(5), on=on), on,
                shape=y.shape)
    if not torch.equal(a, b):
        _fail(name, "the same drops from the same seed", on, "different drops", "draw the coins with `generator`.")
    if not torch.equal(y, before):
        _fail(name, "the input labels left unchanged (a new tensor returned)", on, "the input was modified in place")


def linear_toy_model(x, t, y):
    """A cheap noise predictor whose output depends on x, t and y, so that each pass is distinguishable."""
    return 0.5 * x + 0.001 * t.view(-1, 1, 1, 1).to(x.dtype) + 0.1 * y.view(-1, 1, 1, 1).to(x.dtype)


def guided_eps_is_eq6(guided_eps) -> None:
    """At w = 0 guided_eps is the conditional prediction; otherwise (1 + w) eps(x, t, c) - w eps(x, t, null)."""
    name = "guided_eps"
    y = torch.tensor([0, 3, 9, NULL_LABEL, 5])
    x = torch.linspace(-1, 1, 20, dtype=F64).view(5, 1, 2, 2)
    t = torch.arange(5) * 7
    eps_c = linear_toy_model(x, t, y)
    eps_u = linear_toy_model(x, t, torch.full_like(y, NULL_LABEL))
    for w in (0.0, 0.5, 3.0):
        on = f"5 images [5, 1, 2, 2], labels {y.tolist()}, w = {w}, a toy model eps(x, t, y) = 0.5 x + 0.001 t + 0.1 y"
        out = _tensor(name, _call(name, guided_eps, linear_toy_model, x, t, y, w, on=on), on, shape=x.shape)
        want = eps_c if w == 0 else (1 + w) * eps_c - w * eps_u
        _close(name, out, want, "the conditional prediction eps(x, t, c)" if w == 0 else
               "(1 + w) eps(x, t, c) - w eps(x, t, null) (eq 6)", on, atol=1e-9,
               hint=f"the unconditional pass uses the label NULL_LABEL = {NULL_LABEL} for every image.")


def guided_eps_label_blind_model(guided_eps) -> None:
    """A model that ignores the label gives the same prediction at every w (eq 6 with eps_c = eps_u)."""
    name = "guided_eps"
    x = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    t, y = torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 3, 4])
    blind = lambda x, t, y: 0.3 * x - 0.002 * t.view(-1, 1, 1, 1).to(x.dtype)
    for w in (0.0, 2.0, 10.0):
        on = f"4 float32 images, a model that ignores the label, w = {w}"
        out = _tensor(name, _call(name, guided_eps, blind, x, t, y, w, on=on), on, shape=x.shape)
        _close(name, out, blind(x, t, y), "the model's prediction, whatever w", on, atol=1e-5)


# ---------------------------------------------------------------- chapter 5: training

class _Recorder(nn.Module):
    """A noise predictor eps(x, t, y) = a * x + 0.01 t + 0.1 y with one weight a, recording its inputs."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.3))
        self.calls = []

    def forward(self, x, t, y):
        self.calls.append((x.detach().clone(), t.clone(), y.clone()))
        return self.a * x + 0.01 * t.view(-1, 1, 1, 1).to(x.dtype) + 0.1 * y.view(-1, 1, 1, 1).to(x.dtype)


def _toy_batch(B=6, seed=0):
    from .training import Batch
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(B, 1, 4, 4, generator=g) * 2 - 1, torch.tensor([0, 1, 2, NULL_LABEL, 8, 9])[:B],
                 torch.randint(0, 1000, (B,), generator=g), torch.randn(B, 1, 4, 4, generator=g))


def diffusion_loss_is_algorithm_1(diffusion_loss) -> None:
    """The model sees x_t = q_sample(x_0, t, eps) with the batch's t and labels; the loss is L1 or mean squared error."""
    from .forward import q_sample
    name = "diffusion_loss"
    sched = make_schedule("linear", 1000)
    batch = _toy_batch()
    xt = q_sample(sched, batch.x0, batch.t, batch.eps)
    for kind in ("l2", "l1"):
        model = _Recorder()
        on = f"a batch of 6 images [6, 1, 4, 4] with their t, labels and eps, loss = {kind!r}, a one-weight toy model"
        out = _tensor(name, _call(name, diffusion_loss, model, sched, batch, kind, on=on), on, shape=(),
                      what="a scalar loss (a 0-d tensor)")
        if len(model.calls) != 1:
            _fail(name, "one call of the model", on, f"{len(model.calls)} calls")
        x_seen, t_seen, y_seen = model.calls[0]
        _close(name, x_seen, xt, "the model called on x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (eq 4)", on,
               atol=1e-6, hint="noise the batch with q_sample(sched, batch.x0, batch.t, batch.eps).")
        if not (torch.equal(t_seen, batch.t) and torch.equal(y_seen, batch.y)):
            _fail(name, "the model called with the batch's steps t and labels y", on, f"t = {t_seen.tolist()}, y = {y_seen.tolist()}")
        diff = model(xt, batch.t, batch.y).detach() - batch.eps
        want = diff.abs().mean() if kind == "l1" else diff.pow(2).mean()
        _close(name, out.detach(), want, ("the mean absolute error" if kind == "l1" else "the mean squared error")
               + " between the predicted and the true noise, over pixels and batch", on, atol=1e-6)


def diffusion_loss_has_gradients(diffusion_loss) -> None:
    """The loss is differentiable in the model's weights (training needs its gradient), and 'l2' is the default."""
    name = "diffusion_loss"
    sched = make_schedule("cosine", 1000)
    batch, model = _toy_batch(seed=1), _Recorder()
    on = "a batch of 6 images, cosine schedule, the default loss"
    out = _tensor(name, _call(name, diffusion_loss, model, sched, batch, on=on), on, shape=())
    if not out.requires_grad:
        _fail(name, "a loss that carries the model's gradient", on, "a tensor without gradient",
              "do not call .item(), .detach() or torch.no_grad() inside the loss.")
    out.backward()
    if model.a.grad is None or model.a.grad.item() == 0:
        _fail(name, "a non-zero gradient for the model's weight", on, f"{model.a.grad}")
    model2 = _Recorder()
    diff = model2(model.calls[0][0], batch.t, batch.y).detach() - batch.eps
    _close(name, out.detach(), diff.pow(2).mean(), "the mean squared error (loss = 'l2' by default)", on, atol=1e-6)


# ---------------------------------------------------------------- chapter 6: sampling

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
    from .sampling import ancestral_sample as reference
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
    from .sampling import ancestral_sample
    name, n = "ddim_sample", 256
    sched = make_schedule("linear", 50)
    on = f"{n} one-pixel images, T = 50, steps = 50, eta = 1, clip_x0 = False, seed 1, the Gaussian toy model"
    d = _toy_run(name, ddim_sample, sched, n, 1, on, steps=50, eta=1.0, clip_x0=False)
    a = ancestral_sample(GaussianOptimalEps(sched), sched, torch.zeros(n, dtype=torch.long),
                         generator=torch.Generator().manual_seed(1), shape=TOY_SHAPE)
    _close(name, d, a, "the samples of ancestral sampling from the same seed", on, atol=1e-4,
           hint="sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s); add sigma z except after the last jump.")


# ---------------------------------------------------------------- chapter 7: evaluation

def _score(name, inception_score, probs, on, **kw):
    out = _call(name, inception_score, probs, on=on, **kw)
    if not (isinstance(out, tuple) and len(out) == 2):
        _fail(name, "a pair (mean, std) of floats", on, "None" if out is None else f"{out!r}"[:80])
    try:
        return float(out[0]), float(out[1])
    except (TypeError, ValueError):
        _fail(name, "a pair (mean, std) of floats", on, f"{out!r}"[:80])


def inception_score_extremes(inception_score) -> None:
    """IS = 1 when every prediction is uniform; IS = 10 for confident predictions spread evenly over 10 classes."""
    name = "inception_score"
    on = "1000 uniform predictions p(y|x) = 0.1 for each of 10 classes"
    mean, std = _score(name, inception_score, np.full((1000, 10), 0.1), on)
    if abs(mean - 1) > 1e-9 or abs(std) > 1e-9:
        _fail(name, "(1.0, 0.0): a uniform prediction carries no information", on, f"({mean:.6g}, {std:.6g})")
    onehot = np.eye(10)[np.tile(np.arange(10), 100)]
    on = "1000 one-hot predictions, 100 of each class, in the order 0, 1, ..., 9, 0, 1, ..., splits = 10"
    mean, std = _score(name, inception_score, onehot, on, shuffle_seed=None)
    if abs(mean - 10) > 1e-9 or abs(std) > 1e-9:
        _fail(name, "(10.0, 0.0): exp(E_x KL(p(y|x) || p(y))) = exp(log 10) in every split (eq 7)", on,
              f"({mean:.6g}, {std:.6g})", "0 log 0 counts as 0 (scipy.special.rel_entr does this).")


def inception_score_shuffles_and_bounds(inception_score) -> None:
    """Class-ordered predictions are shuffled before splitting, and the score lies between 1 and the class count."""
    name = "inception_score"
    onehot = np.eye(10)[np.repeat(np.arange(10), 1000)]
    on = "10,000 one-hot predictions stored class by class (as sample files are), default shuffle_seed"
    mean, _ = _score(name, inception_score, onehot, on)
    if mean < 9.9:
        _fail(name, "about 10: the rows shuffled with the seed before splitting", on, f"{mean:.4g}")
    p = np.random.default_rng(0).dirichlet(np.full(10, 0.3), size=500)
    on = "500 random predictions over 10 classes"
    mean, _ = _score(name, inception_score, p, on)
    if not 1.0 < mean < 10.0:
        _fail(name, "a score between 1 and 10", on, f"{mean:.4g}")


# ---------------------------------------------------------------- the assignments

@dataclass(frozen=True)
class Exercise:
    """A function an assignment leaves for the student: its chapter (notebook name), points and checks."""
    chapter: str
    function: str
    points: int
    public: tuple     # checks the student runs in the notebook
    hidden: tuple     # further checks run only when grading


EXERCISES = (
    Exercise("01_forward_process", "q_sample", 2, (q_sample_is_eq4,), (q_sample_draws_its_own_noise,)),
    Exercise("01_forward_process", "q_step", 2, (q_step_iterates_to_eq4,), (q_step_is_eq2,)),
    Exercise("02_reverse_process", "posterior_variance", 2, (posterior_variance_is_closed_form,),
             (posterior_variance_bounds,)),
    Exercise("02_reverse_process", "posterior_coefficients", 2, (posterior_coefficients_give_the_mean,),
             (posterior_coefficients_at_the_first_step,)),
    Exercise("02_reverse_process", "predict_x0", 1, (predict_x0_inverts_q_sample,), (predict_x0_keeps_float32,)),
    Exercise("02_reverse_process", "mu_from_eps", 2, (mu_from_eps_is_posterior_mean,), (mu_from_eps_broadcasts_one_step,)),
    Exercise("03_unet", "sinusoidal_embedding", 2, (sinusoidal_embedding_is_the_formula,),
             (sinusoidal_embedding_separates_steps,)),
    Exercise("04_guidance", "drop_labels", 2, (drop_labels_drops_with_probability_p,), (drop_labels_is_reproducible,)),
    Exercise("04_guidance", "guided_eps", 3, (guided_eps_is_eq6,), (guided_eps_label_blind_model,)),
    Exercise("05_training", "diffusion_loss", 3, (diffusion_loss_is_algorithm_1,), (diffusion_loss_has_gradients,)),
    Exercise("06_sampling", "ancestral_sample", 3, (ancestral_sample_reproduces_gaussian_data,),
             (ancestral_sample_matches_the_chapter,)),
    Exercise("06_sampling", "ddim_timesteps", 1, (ddim_timesteps_spacing,), (ddim_timesteps_one_step,)),
    Exercise("06_sampling", "ddim_sample", 3, (ddim_sample_reproduces_gaussian_data,), (ddim_sample_eta1_is_ancestral,)),
    Exercise("07_evaluation", "inception_score", 2, (inception_score_extremes,), (inception_score_shuffles_and_bounds,)),
)


def chapters() -> list[str]:
    """The chapters (notebook names without .ipynb) that have an assignment, in reading order."""
    return sorted({e.chapter for e in EXERCISES})


def exercises(chapter: str) -> list[Exercise]:
    """The exercises of one chapter, in the order of the chapter's text."""
    found = [e for e in EXERCISES if e.chapter == chapter]
    if not found:
        raise ValueError(f"no assignment for chapter {chapter!r}; the chapters with one are: {', '.join(chapters())}.")
    return found


def exercise(function: str) -> Exercise:
    """The exercise that asks for `function`."""
    for e in EXERCISES:
        if e.function == function:
            return e
    raise ValueError(f"no exercise asks for {function!r}; see ddpm_lite.checks.EXERCISES.")


def test_case_source(check: Callable, function: str) -> str:
    """The body of one otter-grader test case: it calls `check` on the notebook's `function`."""
    return (f"def test_{check.__name__}({function}):\n"
            f"    from ddpm_lite import checks\n"
            f"    checks.{check.__name__}({function})")


def public_test_file(ex: Exercise) -> str:
    """The student-side otter-grader test file of one exercise (its public checks only)."""
    cases = "".join(f"@test_case(points=None, hidden=False)\n{test_case_source(c, ex.function)}\n\n" for c in ex.public)
    return (f"from otter.test_files import test_case\n\nOK_FORMAT = False\n\nname = \"{ex.function}\"\n"
            f"points = {ex.points}\nall_or_nothing = True\n\n{cases}")


def write_public_tests(chapter: str, tests_dir="tests") -> Path:
    """Write the public test files of `chapter` into tests_dir, keeping any that exist already."""
    tests_dir = Path(tests_dir)
    tests_dir.mkdir(parents=True, exist_ok=True)
    for ex in exercises(chapter):
        path = tests_dir / f"{ex.function}.py"
        if not path.exists():
            path.write_text(public_test_file(ex))
    return tests_dir


def otter_notebook(chapter: str, tests_dir="tests"):
    """An `otter.Notebook` for the assignment of `chapter`; `grader.check("q_sample")` then runs q_sample's checks.

    Works wherever the notebook runs: the test files come with the assignment's folder, and when they
    are missing (a notebook opened alone, as in Colab) they are written from this module."""
    try:
        import otter
    except ImportError:
        raise ImportError("the assignment checks need otter-grader: run `pip install otter-grader==7.0.0` "
                          "(or `pip install \"ddpm_lite[assignments]\"`) and run this cell again.") from None
    if not otter.Notebook._grading_mode:   # when grading, otter brings the full tests (hidden ones too)
        write_public_tests(chapter, tests_dir)
    return otter.Notebook(tests_dir=str(tests_dir))
