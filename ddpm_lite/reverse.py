import torch
from ddpm_lite.forward import Schedule, check_timesteps, extract

def posterior_variance(sched: Schedule) -> torch.Tensor:
    "beta-tilde_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t, the variance of q(x_{t-1} | x_t, x_0); 0 at t = 1."
    abar = sched.alpha_bars
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    return (1 - abar_prev) / (1 - abar) * sched.betas

def posterior_coefficients(sched: Schedule) -> tuple[torch.Tensor, torch.Tensor]:
    "(c0, ct) with mu-tilde_t(x_t, x_0) = c0 * x_0 + ct * x_t."
    abar = sched.alpha_bars
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    c0 = abar_prev.sqrt() * sched.betas / (1 - abar)
    ct = sched.alphas.sqrt() * (1 - abar_prev) / (1 - abar)
    return c0, ct

def q_posterior(sched: Schedule, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
    "Mean and variance of the true posterior q(x_{t-1} | x_t, x_0)."
    t = check_timesteps(t, sched.T)
    c0, ct = posterior_coefficients(sched)
    # mu-tilde_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t
    mean = extract(c0, t, xt) * x0 + extract(ct, t, xt) * xt
    return mean, extract(posterior_variance(sched), t, xt)

def predict_x0(sched: Schedule, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    "Invert eq 4: x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."
    t = check_timesteps(t, sched.T)
    abar = extract(sched.alpha_bars, t, xt)
    return (xt - (1 - abar).sqrt() * eps) / abar.sqrt()

def mu_from_eps(sched: Schedule, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    "mu_theta(x_t, t) from a noise prediction (Algorithm 2, lines 3-4)."
    t = check_timesteps(t, sched.T)
    alpha = extract(sched.alphas, t, xt)
    beta = extract(sched.betas, t, xt)
    abar = extract(sched.alpha_bars, t, xt)
    # mu_theta = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_theta)
    return (xt - beta / (1 - abar).sqrt() * eps) / alpha.sqrt()

def p_mean_variance(sched: Schedule, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor):
    "Mean and (fixed) variance of p_theta(x_{t-1} | x_t) (eq 5) with Sigma = beta-tilde_t I."
    t = check_timesteps(t, sched.T)
    return mu_from_eps(sched, xt, t, eps), extract(posterior_variance(sched), t, xt)
