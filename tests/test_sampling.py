"""Tests of ddpm_lite.sampling (chapter 6): reproducibility, the two samplers' correctness on a
Gaussian toy problem whose optimal noise predictor is known exactly, and input checking."""
import pytest
import torch

from ddpm_lite import checks
# toy data x_0 ~ N(MU0, S0^2), its exact noise predictor and the samplers' exact moments (shared with the assignments)
from ddpm_lite.checks import MU0, S0, TOY_SHAPE, GaussianOptimalEps, exact_moments
from ddpm_lite.config import get_config
from ddpm_lite.forward import make_schedule
from ddpm_lite.reverse import mu_from_eps
from ddpm_lite.sampling import (CLIP_X0_DEFAULT, ancestral_sample, balanced_labels, batch_seed, ddim_sample,
                                ddim_timesteps, dpm_solver_pp_sample, generate, sample_batch)
from ddpm_lite.unet import build_model


def toy_labels(n):
    return torch.zeros(n, dtype=torch.long)


pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.py


@pytest.fixture(scope="module")
def tiny_unet():
    torch.manual_seed(0)
    cfg = get_config("quick", channels=(8, 8, 8), time_dim=8)
    return build_model(cfg).eval()


# --- reproducibility ---------------------------------------------------------------------------

@pytest.mark.parametrize("sampler,steps", [("ddim", 4), ("ancestral", 1)])
def test_generate_same_seed_same_images(tiny_unet, sampler, steps):
    sched = make_schedule("linear", 8)
    labels = torch.tensor([0, 1, 2, 3, 9])
    a = generate(tiny_unet, sched, labels, w=1.5, sampler=sampler, steps=steps, seed=3, batch_size=2, progress=False)
    b = generate(tiny_unet, sched, labels, w=1.5, sampler=sampler, steps=steps, seed=3, batch_size=2, progress=False)
    c = generate(tiny_unet, sched, labels, w=1.5, sampler=sampler, steps=steps, seed=4, batch_size=2, progress=False)
    assert a.shape == (5, 1, 28, 28) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)          # the seed does matter


def test_ddim_eta0_is_deterministic_given_x_T():
    sched = make_schedule("linear", 100)
    model = GaussianOptimalEps(sched)
    g = torch.Generator().manual_seed(7)
    x = ddim_sample(model, sched, toy_labels(64), steps=10, eta=0.0, generator=g, shape=TOY_SHAPE)
    # the generator was used exactly once, for x_T: no other randomness entered
    g_ref = torch.Generator().manual_seed(7)
    torch.randn((64, *TOY_SHAPE), generator=g_ref)
    assert torch.equal(g.get_state(), g_ref.get_state())
    x2 = ddim_sample(model, sched, toy_labels(64), steps=10, eta=0.0,
                     generator=torch.Generator().manual_seed(7), shape=TOY_SHAPE)
    assert torch.equal(x, x2)


def test_ddim_eta1_all_steps_is_ancestral_sampling():
    """With steps = T and eta = 1 the DDIM update is the ancestral step (same mean, sigma^2 = beta-tilde)
    and it draws its noise in the same order, so the two samplers agree path by path."""
    sched = make_schedule("linear", 50)
    model = GaussianOptimalEps(sched)
    y = toy_labels(256)
    a = ancestral_sample(model, sched, y, generator=torch.Generator().manual_seed(1), shape=TOY_SHAPE)
    d = ddim_sample(model, sched, y, steps=sched.T, eta=1.0, generator=torch.Generator().manual_seed(1),
                    shape=TOY_SHAPE, clip_x0=False)
    assert torch.allclose(a, d, atol=1e-4), (a - d).abs().max()
    # eta = 0 from the same x_T is a different (deterministic) path
    d0 = ddim_sample(model, sched, y, steps=sched.T, eta=0.0, generator=torch.Generator().manual_seed(1),
                     shape=TOY_SHAPE, clip_x0=False)
    assert not torch.allclose(a, d0, atol=1e-2)


# --- correctness on the Gaussian toy -----------------------------------------------------------
#
# With the exact noise predictor every step of either sampler is an affine map of x plus Gaussian
# noise, so the mean and variance of the output can be computed exactly (float64, `exact_moments`) and the
# samplers' empirical moments must match them to within sampling error. Separately, those exact
# moments must be close to the data's (mu0, s0^2): how close is the samplers' discretisation error,
# which is small for ancestral sampling with T steps but sizeable for DDIM with few evenly spaced steps.

def _check_moments(x, mean, var):
    n = x.numel()
    m_hat, v_hat = x.double().mean().item(), x.double().var().item()
    assert abs(m_hat - mean) < 5 * (var / n) ** 0.5, (m_hat, mean)           # 5 standard errors
    assert abs(v_hat - var) < 5 * var * (2 / (n - 1)) ** 0.5, (v_hat, var)


@pytest.mark.parametrize("T", [100, 200])
def test_ancestral_reproduces_gaussian_data(T):
    n = 8000
    sched = make_schedule("linear", T)
    x = ancestral_sample(GaussianOptimalEps(sched), sched, toy_labels(n), w=0.0,
                         generator=torch.Generator().manual_seed(0), shape=TOY_SHAPE)
    assert x.shape == (n, *TOY_SHAPE)
    mean, var = exact_moments(sched, list(range(T - 1, -1, -1)), ancestral=True)
    _check_moments(x, mean, var)
    assert abs(mean - MU0) < 0.05 * S0 and abs(var / S0**2 - 1) < 0.1      # the data, up to discretisation


@pytest.mark.parametrize("steps,eta,clip", [(50, 0.0, True), (20, 0.0, False), (50, 1.0, False)])
def test_ddim_reproduces_gaussian_data(steps, eta, clip):
    n = 8000
    sched = make_schedule("linear", 1000)
    x = ddim_sample(GaussianOptimalEps(sched), sched, toy_labels(n), w=0.0, steps=steps, eta=eta,
                    generator=torch.Generator().manual_seed(0), shape=TOY_SHAPE, clip_x0=clip)
    mean, var = exact_moments(sched, ddim_timesteps(1000, steps).tolist(), eta)
    _check_moments(x, mean, var)
    assert abs(mean - MU0) < 0.01 * S0                  # the mean is right even with few steps...
    assert 0.3 < var / S0**2 < 1                        # ...the spread is too small: few big steps shrink it


def test_ddim_variance_error_shrinks_with_more_steps():
    sched = make_schedule("linear", 1000)
    exact = [exact_moments(sched, ddim_timesteps(1000, s).tolist()) for s in (10, 20, 50, 100, 1000)]
    ratios = [v / S0**2 for _, v in exact]
    assert all(a < b for a, b in zip(ratios, ratios[1:])), ratios
    n = 8000
    x = ddim_sample(GaussianOptimalEps(sched), sched, toy_labels(n), steps=1000,
                    generator=torch.Generator().manual_seed(0), shape=TOY_SHAPE)
    _check_moments(x, *exact[-1])
    assert abs(ratios[-1] - 1) < 0.03                   # all 1000 steps: the data's variance


def test_guidance_with_a_label_blind_model_changes_nothing():
    # eq 6 with eps_c == eps_u is eps for every w: a label-blind model must give the same samples
    sched = make_schedule("linear", 50)
    model = GaussianOptimalEps(sched)
    y = toy_labels(32)
    a = ddim_sample(model, sched, y, w=0.0, steps=10, generator=torch.Generator().manual_seed(2), shape=TOY_SHAPE)
    b = ddim_sample(model, sched, y, w=3.0, steps=10, generator=torch.Generator().manual_seed(2), shape=TOY_SHAPE)
    assert torch.allclose(a, b, atol=1e-5)


def test_last_ancestral_step_adds_no_noise():
    T, n = 30, 16
    sched = make_schedule("linear", T)
    model = GaussianOptimalEps(sched)
    g = torch.Generator().manual_seed(5)
    x, traj = ancestral_sample(model, sched, toy_labels(n), generator=g, shape=TOY_SHAPE, record_every=1)
    assert [t for t, _ in traj] == list(range(T - 1, -1, -1))
    assert model.calls == T                                   # one network call per step (w = 0)
    # T noise draws in all: x_T and one for each of the steps t = T..2; none for the last step
    g_ref = torch.Generator().manual_seed(5)
    for _ in range(T):
        torch.randn((n, *TOY_SHAPE), generator=g_ref)
    assert torch.equal(g.get_state(), g_ref.get_state())
    # the output is exactly the mean of the last step, computed from the state before it
    x1 = traj[-2][1]
    t0 = torch.zeros(n, dtype=torch.long)
    assert torch.allclose(x, mu_from_eps(sched, x1, t0, model(x1, t0, None)), atol=1e-6)
    assert torch.equal(traj[-1][1], x)


def test_ddim_trajectory_ends_with_the_output():
    sched = make_schedule("linear", 100)
    x, traj = ddim_sample(GaussianOptimalEps(sched), sched, toy_labels(8), steps=10, record_every=3,
                          generator=torch.Generator().manual_seed(0), shape=TOY_SHAPE)
    assert traj[-1][0] == -1 and torch.equal(traj[-1][1], x)
    assert len(traj) == 4                                      # after steps k = 0, 3, 6 and the last, k = 9
    seq = ddim_timesteps(100, 10).tolist()
    assert [t for t, _ in traj[:-1]] == [seq[k + 1] for k in (0, 3, 6)]


# --- ddim_timesteps ----------------------------------------------------------------------------

@pytest.mark.parametrize("T", [2, 3, 7, 10, 100, 1000])
def test_ddim_timesteps_strictly_decreasing_from_T_minus_1_to_0(T):
    for steps in sorted(s for s in {2, 3, T // 2, T - 1, T} if 2 <= s <= T):
        seq = ddim_timesteps(T, steps)
        assert seq.dtype == torch.long and len(seq) == steps
        assert seq[0].item() == T - 1 and seq[-1].item() == 0
        assert bool((seq[1:] < seq[:-1]).all()), seq
    assert ddim_timesteps(T, T).tolist() == list(range(T - 1, -1, -1))


def test_ddim_timesteps_one_step_jumps_from_T_minus_1():
    assert ddim_timesteps(1000, 1).tolist() == [999]
    assert ddim_timesteps(1, 1).tolist() == [0]


def test_the_assignment_checks_pass_on_the_samplers():
    # the same checks grade the chapter 6 assignment (ddpm_lite.checks)
    checks.ddim_timesteps_spacing(ddim_timesteps)
    checks.ddim_timesteps_one_step(ddim_timesteps)
    checks.ancestral_sample_reproduces_gaussian_data(ancestral_sample)
    checks.ancestral_sample_matches_the_chapter(ancestral_sample)
    checks.ddim_sample_reproduces_gaussian_data(ddim_sample)
    checks.ddim_sample_eta1_is_ancestral(ddim_sample)


# --- input checking ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy():
    sched = make_schedule("linear", 20)
    return GaussianOptimalEps(sched), sched


def test_bad_sampler_name(toy):
    model, sched = toy
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        generate(model, sched, [1, 2], w=1.0, sampler="euler", progress=False)


@pytest.mark.parametrize("steps", [0, -3, 21])
def test_bad_step_count(toy, steps):
    model, sched = toy
    with pytest.raises(ValueError, match="between 1 and T = 20 steps"):
        generate(model, sched, [1, 2], w=1.0, sampler="ddim", steps=steps, progress=False)
    with pytest.raises(ValueError, match="between 1 and T = 20 steps"):
        ddim_timesteps(20, steps)


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_negative_guidance_weight(toy, sampler):
    model, sched = toy
    with pytest.raises(ValueError, match="w must be >= 0"):
        generate(model, sched, [1, 2], w=-0.5, sampler=sampler, steps=5, progress=False)


@pytest.mark.parametrize("labels", [[3, 11], [-1], [10]])
def test_labels_out_of_range(toy, labels):
    model, sched = toy
    with pytest.raises(ValueError, match="label"):
        generate(model, sched, labels, w=1.0, steps=5, progress=False)


def test_null_label_allowed_in_the_samplers(toy):
    model, sched = toy
    x = ddim_sample(model, sched, [10, 10], steps=5, generator=torch.Generator().manual_seed(0), shape=TOY_SHAPE)
    assert x.shape == (2, *TOY_SHAPE)
    with pytest.raises(ValueError, match="label"):
        ancestral_sample(model, sched, [12], shape=TOY_SHAPE)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_bad_batch_size(toy, batch_size):
    model, sched = toy
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        generate(model, sched, [1, 2], w=1.0, steps=5, batch_size=batch_size, progress=False)


def test_negative_eta(toy):
    model, sched = toy
    with pytest.raises(ValueError, match="eta must be >= 0"):
        ddim_sample(model, sched, [1], steps=5, eta=-0.1, shape=TOY_SHAPE)


# --- DPM-Solver++(2M), clipping, and the one sampling path --------------------------------------

def test_dpm_solver_order_1_is_ddim(tiny_unet):
    sched = make_schedule("linear", 50)
    y = torch.tensor([0, 3, 7, 9])
    a = dpm_solver_pp_sample(tiny_unet, sched, y, 1.5, steps=7, order=1, spacing="time", generator=torch.Generator().manual_seed(2))
    b = ddim_sample(tiny_unet, sched, y, 1.5, steps=7, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(a, b, atol=1e-5)
    c = dpm_solver_pp_sample(tiny_unet, sched, y, 1.5, steps=7, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(c, b, atol=1e-3)          # the second-order update does change the images


@pytest.mark.parametrize("steps", [10, 20])
def test_dpm_solver_spread_is_closer_to_the_data_than_ddim(steps):
    """With the exact predictor, the ODE maps N(0, 1) onto the data; the 2M update tracks it better than DDIM."""
    n = 20_000
    sched = make_schedule("linear", 1000)
    model = GaussianOptimalEps(sched)
    g = lambda: torch.Generator().manual_seed(0)
    dpm = dpm_solver_pp_sample(model, sched, toy_labels(n), steps=steps, generator=g(), shape=TOY_SHAPE, clip_x0=False)   # lambda grid
    ddim = ddim_sample(model, sched, toy_labels(n), steps=steps, generator=g(), shape=TOY_SHAPE, clip_x0=False)
    err_dpm = abs(dpm.double().std().item() / S0 - 1)
    err_ddim = abs(ddim.double().std().item() / S0 - 1)
    assert err_dpm < err_ddim / 3, (err_dpm, err_ddim)
    assert abs(dpm.double().mean().item() - MU0) < 5 * S0 / n ** 0.5          # 5 standard errors


def test_dpm_solver_bad_order(toy):
    model, sched = toy
    with pytest.raises(ValueError, match="order"):
        dpm_solver_pp_sample(model, sched, toy_labels(2), steps=3, order=3, shape=TOY_SHAPE)


def test_clip_x0_is_one_switch_on_every_sampler(tiny_unet):
    """Clipping changes the images of every sampler (a random tiny U-Net predicts x_0 far outside [-1, 1])."""
    sched = make_schedule("linear", 20)
    y = torch.tensor([1, 2])
    for sampler, steps in [("ancestral", 20), ("ddim", 5), ("dpm++", 5)]:
        on = sample_batch(tiny_unet, sched, y, 2.0, sampler, steps, seed=1, b=0, clip_x0=True)
        off = sample_batch(tiny_unet, sched, y, 2.0, sampler, steps, seed=1, b=0, clip_x0=False)
        default = sample_batch(tiny_unet, sched, y, 2.0, sampler, steps, seed=1, b=0)
        assert not torch.allclose(on, off), sampler
        assert torch.equal(default, on if CLIP_X0_DEFAULT[sampler] else off), sampler


def test_generate_is_sample_batch_batch_by_batch(tiny_unet):
    sched = make_schedule("linear", 10)
    y = balanced_labels(7)
    x = generate(tiny_unet, sched, y, 1.0, "dpm++", 4, seed=5, batch_size=3, progress=False)
    parts = [sample_batch(tiny_unet, sched, y[3 * b:3 * b + 3], 1.0, "dpm++", 4, seed=5, b=b) for b in range(3)]
    assert torch.equal(x, torch.cat(parts))
    assert batch_seed(5, 2) == 5 * 100_003 + 2


def test_a_noise_source_is_a_parameter(tiny_unet):
    """A different noise source changes the images; one that returns the same numbers does not."""
    sched = make_schedule("linear", 10)
    y = torch.tensor([4, 5])
    calls = []
    def same(shape, generator, device):
        calls.append(tuple(shape))
        return torch.randn(shape, generator=generator).to(device)
    def other(shape, generator, device):
        return torch.randn(shape, generator=generator).to(device) * 0.5
    ref = sample_batch(tiny_unet, sched, y, 1.0, "ancestral", 10, seed=0, b=0)
    assert torch.equal(sample_batch(tiny_unet, sched, y, 1.0, "ancestral", 10, seed=0, b=0, noise=same), ref)
    assert len(calls) == 10                              # x_T and one draw per step but the last
    assert not torch.equal(sample_batch(tiny_unet, sched, y, 1.0, "ancestral", 10, seed=0, b=0, noise=other), ref)


def test_balanced_labels_cycle_through_the_digits():
    assert balanced_labels(12).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert balanced_labels(5, [1, 7]).tolist() == [1, 7, 1, 7, 1]
    assert torch.bincount(balanced_labels(10_000)).tolist() == [1000] * 10


@pytest.mark.parametrize("schedule,T", [("linear", 1000), ("linear", 4000), ("cosine", 1000), ("cosine", 4000)])
def test_logsnr_timesteps_stay_in_range_and_strictly_decreasing(schedule, T):
    """DPM-Solver++'s grid: T - 1 down to 0, strictly decreasing, for every schedule. The cosine schedule's
    lambda_t falls steeply near t = T, where evenly spaced targets pile onto the last indices; they must not be
    pushed past T - 1."""
    from ddpm_lite.forward import make_schedule
    from ddpm_lite.sampling import logsnr_timesteps
    sched = make_schedule(schedule, T)
    for steps in (2, 5, 10, 15, 20, 25, 50, 100, T):
        idx = logsnr_timesteps(sched, steps)
        assert len(idx) == steps and idx[0] == T - 1 and idx[-1] == 0, (steps, idx[:3])
        assert bool((idx[:-1] > idx[1:]).all()), steps
