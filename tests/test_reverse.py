"""Tests of ddpm_lite.reverse (chapter 2): the forward posterior, the noise parameterisation of the
reverse step, and the Gaussian toy problem with a known optimal noise predictor.

Every reference value is computed independently of the formulas under test: by conditioning the
joint Gaussian of (x_{t-1}, x_t), by Bayes' rule on a grid, or by simulation.
"""
import math

import pytest
import torch

from ddpm_lite import checks
from ddpm_lite.forward import make_schedule, q_sample, q_step
from ddpm_lite.reverse import (gaussian_marginal, gaussian_optimal_eps, mu_from_eps, p_mean_variance,
                               posterior_coefficients, posterior_variance, predict_x0, q_posterior)

torch.set_num_threads(1)  # tiny tensors; avoid fighting other jobs for the cores

F64 = dict(dtype=torch.float64)


@pytest.fixture(scope="module", params=["linear", "cosine"])
def sched(request):
    return make_schedule(request.param, 1000)


def _abar_prev(sched):
    # the paper's abar_{t-1} at array index t, written out independently: abar_0 = 1
    return torch.tensor([1.0] + sched.alpha_bars[:-1].tolist(), **F64)


# ---------------------------------------------------------------- posterior q(x_{t-1} | x_t, x_0)

def test_posterior_matches_joint_gaussian_conditioning(sched):
    """Condition the forward joint of (x_{t-1}, x_t) given x_0 on x_t, at every step."""
    T = sched.T
    t = torch.arange(T)
    abar_prev = _abar_prev(sched)
    alpha = sched.alphas
    x0 = torch.linspace(-1.5, 1.5, T, **F64)
    xt = torch.linspace(2.0, -2.0, T, **F64)
    # forward process given x_0: x_{t-1} ~ N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}), x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) z
    m_prev, v_prev = abar_prev.sqrt() * x0, 1 - abar_prev
    m_t = alpha.sqrt() * m_prev
    v_t = alpha * v_prev + sched.betas
    cov = alpha.sqrt() * v_prev
    want_mean = m_prev + cov / v_t * (xt - m_t)
    want_var = v_prev - cov**2 / v_t
    mean, var = q_posterior(sched, x0, xt, t)
    torch.testing.assert_close(mean, want_mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(var.flatten(), want_var, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(posterior_variance(sched), want_var, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("step", [1, 4, 49, 299, 799, 999])
@pytest.mark.parametrize("x0_value, xt_value", [(0.7, 0.3), (-1.0, 1.8), (0.0, -0.5)])
def test_posterior_matches_bayes_on_a_grid(sched, step, x0_value, xt_value):
    """p(x_{t-1} | x_t, x_0) proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0), normalised on a fine grid."""
    abar_prev = float(_abar_prev(sched)[step])
    beta = float(sched.betas[step])
    prior_mean, prior_var = math.sqrt(abar_prev) * x0_value, 1 - abar_prev
    # the likelihood alone puts x_{t-1} near x_t / sqrt(alpha_t) with spread sqrt(beta_t / alpha_t)
    like_mean, like_sd = xt_value / math.sqrt(1 - beta), math.sqrt(beta / (1 - beta))
    lo = min(prior_mean, like_mean) - 12 * max(min(like_sd, math.sqrt(prior_var)), 1e-3)
    hi = max(prior_mean, like_mean) + 12 * max(min(like_sd, math.sqrt(prior_var)), 1e-3)
    grid = torch.linspace(lo, hi, 400_001, **F64)
    log_w = (-0.5 * (xt_value - math.sqrt(1 - beta) * grid) ** 2 / beta
             - 0.5 * (grid - prior_mean) ** 2 / prior_var)
    w = torch.exp(log_w - log_w.max())
    w = w / w.sum()
    grid_mean = (w * grid).sum()
    grid_var = (w * (grid - grid_mean) ** 2).sum()
    mean, var = q_posterior(sched, torch.tensor([x0_value], **F64), torch.tensor([xt_value], **F64),
                            torch.tensor([step]))
    assert w[0] < 1e-12 and w[-1] < 1e-12, "grid too narrow"
    assert mean.item() == pytest.approx(grid_mean.item(), abs=1e-6 * math.sqrt(grid_var))
    assert var.item() == pytest.approx(grid_var.item(), rel=1e-5)


def test_posterior_against_forward_simulation():
    """Regress simulated x_{t-1} on x_t (fixed x_0): slope, intercept and scatter match mu-tilde and beta-tilde."""
    sched = make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    n, step, x0 = 200_000, 99, 0.8
    x_prev = q_sample(sched, torch.full((n,), x0, **F64), torch.tensor(step - 1),
                      torch.randn(n, generator=g, **F64))
    xt = q_step(sched, x_prev, torch.tensor(step), torch.randn(n, generator=g, **F64))
    d = xt - xt.mean()
    slope = (d * (x_prev - x_prev.mean())).sum() / (d**2).sum()
    intercept = x_prev.mean() - slope * xt.mean()
    resid_var = ((x_prev - intercept - slope * xt) ** 2).sum() / (n - 2)
    c0, ct = posterior_coefficients(sched)
    var = posterior_variance(sched)[step]
    assert slope.item() == pytest.approx(ct[step].item(), abs=5 * math.sqrt(var / (d**2).sum()))
    assert intercept.item() == pytest.approx((c0[step] * x0).item(), abs=5 * math.sqrt(var * (1 / n + xt.mean()**2 / (d**2).sum())))
    assert resid_var.item() == pytest.approx(var.item(), rel=5 * math.sqrt(2 / n))


@pytest.mark.parametrize("T", [1, 2, 10, 1000])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_posterior_variance_bounds(name, T):
    sched = make_schedule(name, T)
    var = posterior_variance(sched)
    assert var.shape == (T,) and var.dtype == torch.float64
    assert var[0].item() == 0.0                        # beta-tilde_1 = 0 exactly
    assert (var[1:] > 0).all()
    assert (var[1:] <= sched.betas[1:]).all()          # 0 < beta-tilde_t <= beta_t


def test_posterior_at_first_step_returns_x0(sched):
    x0, xt = torch.randn(5, 1, 4, 4, **F64), torch.randn(5, 1, 4, 4, **F64)
    mean, var = q_posterior(sched, x0, xt, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(mean, x0)
    assert (var == 0).all() and var.shape == (5, 1, 1, 1)


# ---------------------------------------------------------------- noise parameterisation

def test_predict_x0_inverts_q_sample():
    # the same checks grade the chapter 2 assignment (ddpm_lite.checks), both schedules
    checks.predict_x0_inverts_q_sample(predict_x0)
    checks.predict_x0_keeps_float32(predict_x0)


def test_posterior_checks_of_the_assignment():
    checks.posterior_variance_is_closed_form(posterior_variance)
    checks.posterior_variance_bounds(posterior_variance)
    checks.posterior_coefficients_give_the_mean(posterior_coefficients)
    checks.posterior_coefficients_at_the_first_step(posterior_coefficients)


def test_predict_x0_float32_keeps_dtype():
    sched = make_schedule("linear", 1000)
    t = torch.arange(0, 1000, 50)
    x0 = torch.rand(len(t), 1, 28, 28) * 2 - 1
    eps = torch.randn_like(x0)
    out = predict_x0(sched, q_sample(sched, x0, t, eps), t, eps)
    assert out.dtype == torch.float32 and out.shape == x0.shape
    torch.testing.assert_close(out, x0, rtol=0, atol=2e-3)


def test_mu_from_true_eps_is_posterior_mean(sched):
    t = torch.arange(sched.T)
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(sched.T, generator=g, **F64), torch.randn(sched.T, generator=g, **F64)
    xt = q_sample(sched, x0, t, eps)
    want, _ = q_posterior(sched, x0, xt, t)
    torch.testing.assert_close(mu_from_eps(sched, xt, t, eps), want, rtol=1e-9, atol=1e-9)
    # the assignment's checks: against the joint Gaussian directly, and one step for a float32 batch
    checks.mu_from_eps_is_posterior_mean(mu_from_eps)
    checks.mu_from_eps_broadcasts_one_step(mu_from_eps)


def test_p_mean_variance_uses_fixed_posterior_variance(sched):
    t = torch.tensor([0, 1, 500, sched.T - 1])
    xt, eps = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)
    mean, var = p_mean_variance(sched, xt, t, eps)
    assert mean.shape == xt.shape and mean.dtype == torch.float32
    assert var.shape == (4, 1, 1, 1)
    torch.testing.assert_close(mean, mu_from_eps(sched, xt, t, eps))
    torch.testing.assert_close(var.flatten(), posterior_variance(sched)[t].float())
    assert var[0].item() == 0.0


def test_single_step_index_broadcasts_over_batch():
    sched = make_schedule("linear", 100)
    xt, eps = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    one = mu_from_eps(sched, xt, torch.tensor(7), eps)
    each = mu_from_eps(sched, xt, torch.full((3,), 7), eps)
    torch.testing.assert_close(one, each)


# ---------------------------------------------------------------- Gaussian toy problem

MU0, S0 = 2.0, 0.5


def test_optimal_eps_is_conditional_mean_of_noise():
    """Regress eps on x_t by simulation: the slope and intercept are those of gaussian_optimal_eps."""
    sched = make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(3)
    n = 200_000
    for step in (0, 50, 300, 999):
        x0 = MU0 + S0 * torch.randn(n, generator=g, **F64)
        eps = torch.randn(n, generator=g, **F64)
        xt = q_sample(sched, x0, torch.tensor(step), eps)
        pred = gaussian_optimal_eps(sched, xt, torch.tensor(step), MU0, S0)
        resid = eps - pred
        # E[eps | x_t] is the projection: residual has mean 0 and is uncorrelated with x_t
        se = resid.std() / math.sqrt(n)
        assert abs(resid.mean().item()) < 5 * se
        corr = ((resid - resid.mean()) * (xt - xt.mean())).mean() / (resid.std() * xt.std())
        assert abs(corr.item()) < 5 / math.sqrt(n)
        # and no other function of x_t does better: the residual variance is Var[eps | x_t]
        abar = sched.alpha_bars[step]
        want = 1 - (1 - abar) / (abar * S0**2 + 1 - abar)
        assert resid.var().item() == pytest.approx(want.item(), rel=5 * math.sqrt(2 / n), abs=1e-12)


def test_gaussian_marginal_matches_q_sample():
    sched = make_schedule("cosine", 1000)
    g = torch.Generator().manual_seed(4)
    n = 200_000
    for step in (0, 400, 999):
        x0 = MU0 + S0 * torch.randn(n, generator=g, **F64)
        xt = q_sample(sched, x0, torch.tensor(step), torch.randn(n, generator=g, **F64))
        m, v = gaussian_marginal(sched, torch.tensor(step), MU0, S0)
        assert xt.mean().item() == pytest.approx(m.item(), abs=5 * math.sqrt(v.item() / n))
        assert xt.var().item() == pytest.approx(v.item(), rel=5 * math.sqrt(2 / n))


def _one_step_affine(sched, mu0, s0):
    """x_{t-1} = a_t x_t + b_t + sqrt(beta-tilde_t) z with the optimal eps: recover a_t, b_t for all t."""
    idx = torch.arange(sched.T)
    zeros, ones = torch.zeros(sched.T, **F64), torch.ones(sched.T, **F64)
    b = mu_from_eps(sched, zeros, idx, gaussian_optimal_eps(sched, zeros, idx, mu0, s0))
    a = mu_from_eps(sched, ones, idx, gaussian_optimal_eps(sched, ones, idx, mu0, s0)) - b
    return a, b, posterior_variance(sched)


@pytest.mark.parametrize("mu0, s0", [(MU0, S0), (0.0, 1.0), (-0.5, 0.3)])
def test_optimal_eps_step_gives_right_marginal_exactly(sched, mu0, s0):
    """One reverse step from q(x_t): the mean of q(x_{t-1}) exactly; the variance up to the known,
    tiny term c0^2 Var[x_0 | x_t] that the fixed variance beta-tilde_t leaves out."""
    a, b, var = _one_step_affine(sched, mu0, s0)
    abar, abar_prev = sched.alpha_bars, _abar_prev(sched)
    m_t, v_t = abar.sqrt() * mu0, abar * s0**2 + 1 - abar               # q(x_t)
    m_prev, v_prev = abar_prev.sqrt() * mu0, abar_prev * s0**2 + 1 - abar_prev   # q(x_{t-1})
    got_mean = a * m_t + b
    got_var = a**2 * v_t + var
    torch.testing.assert_close(got_mean, m_prev, rtol=1e-10, atol=1e-12)
    c0 = abar_prev.sqrt() * sched.betas / (1 - abar)
    gap = c0**2 * s0**2 * (1 - abar) / v_t
    torch.testing.assert_close(got_var, v_prev - gap, rtol=1e-10, atol=1e-14)
    # "within tolerance": the left-out term is a small fraction of the variance at every step t >= 2
    assert ((gap / v_prev)[1:] < 2e-3).all()


def test_optimal_eps_step_by_simulation():
    """Same claim by sampling: x_t ~ q(x_t), one step of p_theta with the optimal eps, compare with q(x_{t-1})."""
    sched = make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(5)
    n = 400_000
    for step in (1, 100, 600):
        m, v = gaussian_marginal(sched, torch.tensor(step), MU0, S0)
        xt = m + v.sqrt() * torch.randn(n, generator=g, **F64)
        mean, var = p_mean_variance(sched, xt, torch.tensor(step),
                                    gaussian_optimal_eps(sched, xt, torch.tensor(step), MU0, S0))
        x_prev = mean + var.sqrt() * torch.randn(n, generator=g, **F64)
        m_prev, v_prev = gaussian_marginal(sched, torch.tensor(step - 1), MU0, S0)
        assert x_prev.mean().item() == pytest.approx(m_prev.item(), abs=5 * math.sqrt(v_prev.item() / n))
        assert x_prev.var().item() == pytest.approx(v_prev.item(), rel=5 * math.sqrt(2 / n) + 2e-3)


def test_full_reverse_chain_with_optimal_eps_reaches_data(sched):
    """All T steps from x_T ~ N(0, 1), moments propagated exactly: the output is close to N(mu0, s0^2)."""
    a, b, var = _one_step_affine(sched, MU0, S0)
    m, v = torch.tensor(0.0, **F64), torch.tensor(1.0, **F64)
    for i in range(sched.T - 1, -1, -1):
        m, v = a[i] * m + b[i], a[i] ** 2 * v + var[i]
    assert m.item() == pytest.approx(MU0, abs=1e-3)
    assert v.sqrt().item() == pytest.approx(S0, rel=2e-2)


def test_optimal_eps_with_point_mass_data_recovers_noise():
    """s0 = 0: x_0 = mu0 is known, so E[eps | x_t] is the noise itself."""
    sched = make_schedule("linear", 1000)
    t = torch.arange(0, 1000, 10)
    eps = torch.randn(len(t), **F64)
    xt = q_sample(sched, torch.full((len(t),), MU0, **F64), t, eps)
    torch.testing.assert_close(gaussian_optimal_eps(sched, xt, t, MU0, 0.0), eps, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- bad inputs

def _calls(sched, t):
    x = torch.zeros(4, 1, 2, 2)
    return [
        lambda: q_posterior(sched, x, x, t),
        lambda: predict_x0(sched, x, t, x),
        lambda: mu_from_eps(sched, x, t, x),
        lambda: p_mean_variance(sched, x, t, x),
        lambda: gaussian_optimal_eps(sched, x, t, 0.0, 1.0),
    ]


@pytest.mark.parametrize("bad_t, message", [
    (torch.tensor([0, 1, 2, 10]), r"\[0, 9\]"),
    (torch.tensor([-1, 0, 1, 2]), r"\[0, 9\]"),
    (torch.tensor([0.0, 1.0, 2.0, 3.0]), "integers"),
    (torch.tensor([True, False, True, False]), "integers"),
    (torch.tensor([0, 1, 2]), "batch of 4"),
])
def test_bad_timesteps_raise_clear_value_error(bad_t, message):
    sched = make_schedule("linear", 10)
    for call in _calls(sched, bad_t):
        with pytest.raises(ValueError, match=message):
            call()


def test_gaussian_helpers_reject_bad_inputs():
    sched = make_schedule("linear", 10)
    with pytest.raises(ValueError, match="s0"):
        gaussian_optimal_eps(sched, torch.zeros(3), torch.tensor(1), 0.0, -1.0)
    with pytest.raises(ValueError, match="s0"):
        gaussian_marginal(sched, torch.tensor(1), 0.0, float("nan"))
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        gaussian_marginal(sched, torch.tensor(10), 0.0, 1.0)
