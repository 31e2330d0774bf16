import torch
from torch import Tensor

NULL_LABEL = 10   # the "no label" class: index 10 of an 11-row label embedding
NUM_CLASSES = 10

def check_labels(y, allow_null: bool = True) -> Tensor:
    "y as a long tensor, after checking each label is a digit 0-9 (or NULL_LABEL when allowed)."
    y = torch.as_tensor(y)
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got dtype {y.dtype}.")
    hi = NULL_LABEL if allow_null else NUM_CLASSES - 1
    if y.numel() and (int(y.min()) < 0 or int(y.max()) > hi):
        extra = f" or {NULL_LABEL} for 'no label'" if allow_null else ""
        raise ValueError(f"labels must be digits 0-9{extra}; got values from {int(y.min())} to {int(y.max())}.")
    return y.long()

def drop_labels(y: Tensor, p_uncond: float, generator: torch.Generator | None = None) -> Tensor:
    "Replace each label by NULL_LABEL independently with probability p_uncond (per sample, not per batch)."
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond must be a probability in [0, 1], got {p_uncond}.")
    drop = torch.rand(y.shape, generator=generator, device=y.device if generator is None else generator.device).to(y.device) < p_uncond
    return torch.where(drop, torch.full_like(y, NULL_LABEL), y)

def check_guidance_weight(w) -> float:
    w = float(w)
    if not w >= 0 or w == float("inf"):
        raise ValueError(f"guidance weight w must be a finite number >= 0 (0 = conditional only), got {w}.")
    return w

def guided_eps(model, x: Tensor, t: Tensor, y: Tensor, w: float) -> Tensor:
    "eps-tilde = (1 + w) eps(x, t, c) - w eps(x, t, null)   (eq 6), both passes as one batch."
    w = check_guidance_weight(w)
    y = check_labels(y)
    if w == 0:  # eq 6 reduces to the conditional prediction: skip the unconditional pass
        return model(x, t, y)
    eps = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, NULL_LABEL)]))
    eps_c, eps_u = eps.chunk(2)
    # eps-tilde = (1 + w) eps_c - w eps_u   (eq 6)
    return (1 + w) * eps_c - w * eps_u
