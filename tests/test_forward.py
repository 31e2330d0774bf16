"""The forward process of chapter 1: schedules, eq 2 vs eq 4, clear errors."""
import math

import pytest
import torch

from ddpm_lite import checks
from ddpm_lite.forward import (cosine_alpha_bar, cosine_betas, linear_betas, make_schedule, q_sample,
                               q_step)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", [1, 2, 10, 1000, 4000])
def test_alpha_bar_strictly_decreasing_in_unit_interval(name, T):
    abar = make_schedule(name, T).alpha_bars
    assert len(abar) == T
    assert torch.all(abar > 0) and torch.all(abar < 1)
    assert torch.all(abar[1:] < abar[:-1])


def test_linear_endpoints():
    b = linear_betas(1000)
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)
    assert torch.allclose(b.diff(), b.diff()[0].expand(999))


@pytest.mark.parametrize("T", [50, 1000, 4000])
def test_cosine_alpha_bar_matches_its_formula(T):
    s = 0.008
    abar = make_schedule("cosine", T).alpha_bars
    t = torch.arange(1, T + 1, dtype=torch.float64)
    f = lambda u: torch.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2
    expected = f(t) / f(torch.tensor(0.0, dtype=torch.float64))
    unclipped = cosine_betas(T) < 0.999
    last = int(unclipped.nonzero().max()) + 1 if not unclipped.all() else T
    assert torch.allclose(abar[:last], expected[:last], rtol=1e-10, atol=1e-14)
    assert torch.allclose(cosine_alpha_bar(t, T), expected)
    assert cosine_betas(T).max() <= 0.999


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_iterating_eq2_reaches_eq4(name):
    """Many chains of eq 2 have the mean and variance that eq 3 gives at several t."""
    g = torch.Generator().manual_seed(0)
    sched = make_schedule(name, 200)
    n = 40_000
    x0 = torch.tensor(0.6, dtype=torch.float64)
    x = x0.expand(n, 1).clone()
    for t in range(sched.T):
        eps = torch.randn(n, 1, generator=g, dtype=torch.float64)
        x = q_step(sched, x, torch.full((n,), t), eps)
        if t in (0, 20, 99, 199):
            abar = sched.alpha_bars[t]
            tol = 5 / math.sqrt(n)
            assert x.mean().item() == pytest.approx((abar.sqrt() * x0).item(), abs=tol)
            assert x.var().item() == pytest.approx((1 - abar).item(), abs=5 * tol * max(1 - abar.item(), 0.01) + 1e-6)
            direct = q_sample(sched, x0.expand(n, 1), torch.full((n,), t),
                              torch.randn(n, 1, generator=g, dtype=torch.float64))
            assert direct.mean().item() == pytest.approx(x.mean().item(), abs=2 * tol)


def test_q_sample_is_eq4_exactly():
    # the same checks grade the chapter 1 assignment (ddpm_lite.checks)
    checks.q_sample_is_eq4(q_sample)
    checks.q_sample_draws_its_own_noise(q_sample)


def test_q_step_is_eq2_exactly_and_iterates_to_eq4():
    checks.q_step_is_eq2(q_step)
    checks.q_step_iterates_to_eq4(q_step)


@pytest.mark.parametrize("bad_T", [0, -3, 2.5, True, "1000"])
def test_bad_T_is_a_clear_value_error(bad_T):
    with pytest.raises(ValueError, match="T must be a positive integer"):
        make_schedule("linear", bad_T)


def test_unknown_schedule_is_a_clear_value_error():
    with pytest.raises(ValueError, match="unknown schedule 'sigmoid'.*linear, cosine"):
        make_schedule("sigmoid", 10)


@pytest.mark.parametrize("t", [[-1], [1000], [3.0]])
def test_timestep_out_of_range_is_a_clear_value_error(t):
    sched = make_schedule("linear", 1000)
    with pytest.raises(ValueError, match="timesteps"):
        q_sample(sched, torch.zeros(1, 1, 28, 28), torch.tensor(t))
