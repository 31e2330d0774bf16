import torch

from ddpm_lite.forward import Schedule
from ddpm_lite.guidance import check_guidance_weight, check_labels, guided_eps
from ddpm_lite.reverse import mu_from_eps, posterior_variance, predict_x0

def _noise(shape, generator, device):
    return torch.randn(shape, generator=generator).to(device)

def _progress(iterable, progress, desc):
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, disable=not progress, leave=False)

@torch.inference_mode()
def ancestral_sample(model, sched: Schedule, y, w: float = 0.0, generator=None, shape=(1, 28, 28),
                     record_every: int = 0, progress: bool = False):
    """Algorithm 2: x_T ~ N(0, I), then T guided reverse steps x_t -> x_{t-1}; no noise at the last step.

    Returns the images (and, with record_every > 0, a list of (t, x_t) snapshots along the way)."""
    device = next(model.parameters()).device
    y = check_labels(y, allow_null=True).to(device)
    w = check_guidance_weight(w)
    var = posterior_variance(sched)
    x = _noise((len(y), *shape), generator, device)            # x_T ~ N(0, I)
    trajectory = []
    for i in _progress(range(sched.T - 1, -1, -1), progress, "ancestral"):
        t = torch.full((len(y),), i, device=device, dtype=torch.long)
        eps = guided_eps(model, x, t, y, w)                   # eq 6
        mean = mu_from_eps(sched, x, t, eps)                  # mixing eps = mixing mu (chapter 4)
        if i > 0:
            # x_{t-1} = mu + sigma_t z,  sigma_t^2 = beta-tilde_t
            x = mean + var[i].sqrt().to(x.dtype) * _noise(x.shape, generator, device)
        else:
            x = mean                                          # the last step adds no noise
        if record_every and (i % record_every == 0):
            trajectory.append((i, x.cpu().clone()))
    return (x, trajectory) if record_every else x

def ddim_timesteps(T: int, steps: int) -> torch.Tensor:
    "`steps` step indices from T-1 down to 0, evenly spaced."
    if not 1 <= steps <= T:
        raise ValueError(f"DDIM needs between 1 and T = {T} steps, got {steps}.")
    return torch.linspace(T - 1, 0, steps).round().long()

@torch.inference_mode()
def ddim_sample(model, sched: Schedule, y, w: float = 0.0, steps: int = 50, eta: float = 0.0,
                generator=None, shape=(1, 28, 28), record_every: int = 0, progress: bool = False,
                clip_x0: bool = True):
    """DDIM (Song et al., 2021): jump along a subsequence of steps using the predicted x_0.

    eta = 0 is deterministic given x_T; eta = 1 with steps = T is ancestral sampling. With
    clip_x0 the predicted x_0 is clipped to the data range [-1, 1] (and eps recomputed from it),
    which removes the rare blown-up sample that a large guidance weight produces early on."""
    device = next(model.parameters()).device
    y = check_labels(y, allow_null=True).to(device)
    w = check_guidance_weight(w)
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}.")
    seq = ddim_timesteps(sched.T, steps).tolist()
    abar = sched.alpha_bars
    x = _noise((len(y), *shape), generator, device)
    trajectory = []
    for k, i in enumerate(_progress(seq, progress, "ddim")):
        t = torch.full((len(y),), i, device=device, dtype=torch.long)
        eps = guided_eps(model, x, t, y, w)
        x0 = predict_x0(sched, x, t, eps)
        if clip_x0:
            x0 = x0.clamp(-1, 1)
            a = abar[i].to(x.dtype)
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()        # the noise that this x_0 implies (eq 4)
        a_t = abar[i]
        a_prev = abar[seq[k + 1]] if k + 1 < len(seq) else abar.new_tensor(1.0)
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
        # x_{t'} = sqrt(abar_t') x0_hat + sqrt(1 - abar_t' - sigma^2) eps_hat + sigma z
        x = a_prev.sqrt().float() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt().float() * eps
        if eta > 0 and k + 1 < len(seq):
            x = x + sigma.float() * _noise(x.shape, generator, device)
        if record_every and (k % record_every == 0 or k + 1 == len(seq)):
            trajectory.append((seq[k + 1] if k + 1 < len(seq) else -1, x.cpu().clone()))
    return (x, trajectory) if record_every else x

def generate(model, sched: Schedule, labels, w: float, sampler: str = "ddim", steps: int = 50,
             seed: int = 0, batch_size: int = 500, progress: bool = True) -> torch.Tensor:
    "Images for `labels` in batches; batch b draws its noise from seed + b, so results do not depend on the device."
    labels = check_labels(labels, allow_null=False)
    if sampler not in ("ancestral", "ddim"):
        raise ValueError(f"unknown sampler {sampler!r}; use 'ancestral' or 'ddim'.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    out = []
    chunks = labels.split(batch_size)
    for b, y in enumerate(_progress(chunks, progress and len(chunks) > 1, "batches")):
        g = torch.Generator().manual_seed(seed * 100_003 + b)
        if sampler == "ancestral":
            x = ancestral_sample(model, sched, y, w, generator=g, progress=progress and len(chunks) == 1)
        else:
            x = ddim_sample(model, sched, y, w, steps, generator=g, progress=progress and len(chunks) == 1)
        out.append(x.float().cpu())
    return torch.cat(out)
