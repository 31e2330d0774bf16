import math
from dataclasses import dataclass

import torch

def linear_betas(T: int, beta_1: float = 1e-4, beta_T: float = 0.02) -> torch.Tensor:
    "Ho et al.'s linear schedule: beta_t evenly spaced from beta_1 to beta_T (float64, length T)."
    _check_T(T)
    if T == 1:
        return torch.tensor([beta_1], dtype=torch.float64)
    return torch.linspace(beta_1, beta_T, T, dtype=torch.float64)

def cosine_alpha_bar(t: torch.Tensor, T: int, s: float = 0.008) -> torch.Tensor:
    "Nichol & Dhariwal's f(t)/f(0) with f(t) = cos^2((t/T + s)/(1 + s) * pi/2), for t in [0, T]."
    f = lambda u: torch.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2
    return f(t.double()) / f(torch.zeros((), dtype=torch.float64))

def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    "betas that make alpha-bar follow the cosine curve: beta_t = 1 - abar(t)/abar(t-1), clipped at 0.999."
    _check_T(T)
    t = torch.arange(T + 1, dtype=torch.float64)
    abar = cosine_alpha_bar(t, T, s)
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)

def _check_T(T):
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T must be a positive integer number of diffusion steps, got {T!r}.")

SCHEDULES = {"linear": linear_betas, "cosine": cosine_betas}

@dataclass(frozen=True)
class Schedule:
    "beta_t, alpha_t and alpha-bar_t for t = 1..T, stored at indices 0..T-1 (float64)."
    betas: torch.Tensor
    name: str = "custom"

    @property
    def T(self) -> int: return len(self.betas)
    @property
    def alphas(self) -> torch.Tensor: return 1 - self.betas            # alpha_t = 1 - beta_t
    @property
    def alpha_bars(self) -> torch.Tensor: return torch.cumprod(self.alphas, 0)  # abar_t = prod_{s<=t} alpha_s
    @property
    def snr(self) -> torch.Tensor: return self.alpha_bars / (1 - self.alpha_bars)

def make_schedule(name: str = "linear", T: int = 1000) -> Schedule:
    "The noise schedule `name` ('linear' or 'cosine') with T steps."
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}.")
    return Schedule(SCHEDULES[name](T), name)

def check_timesteps(t: torch.Tensor, T: int) -> torch.Tensor:
    "t as a long tensor, after checking every entry is a valid 0-based step index in [0, T-1]."
    t = torch.as_tensor(t)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"timesteps must be integers, got dtype {t.dtype}.")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= T):
        raise ValueError(f"timesteps must lie in [0, {T - 1}] (0-based: index t is the paper's step t+1), "
                         f"got values from {int(t.min())} to {int(t.max())}.")
    return t.long()

def extract(v: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    "v[t] reshaped to broadcast over x's batch: [B] -> [B, 1, 1, 1], in x's dtype and device."
    return v.to(x.device)[t.to(x.device)].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))

def q_sample(sched: Schedule, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    "Draw x_t ~ q(x_t | x_0) in one step (eq 4). t holds 0-based step indices, one per image."
    t = check_timesteps(t, sched.T)
    if eps is None:
        eps = torch.randn_like(x0)
    abar = extract(sched.alpha_bars, t, x0)
    # x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps   (eq 4)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps

def q_step(sched: Schedule, x_prev: torch.Tensor, t: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    "One step of the forward chain, x_{t-1} -> x_t (eq 2)."
    t = check_timesteps(t, sched.T)
    if eps is None:
        eps = torch.randn_like(x_prev)
    beta = extract(sched.betas, t, x_prev)
    # x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps   (eq 2)
    return (1 - beta).sqrt() * x_prev + beta.sqrt() * eps
