"""Property checks of chapters 3 to 5: the time embedding, label dropout and guidance (eq 6), the loss of Algorithm 1.

Plumbing module (hand-written); see ddpm_lite.checks.
"""
from __future__ import annotations

import torch
from torch import nn

from ..forward import make_schedule
from ..guidance import NULL_LABEL
from .base import F64, _fail, _call, _tensor, _close

__all__ = ["sinusoidal_embedding_is_the_formula", "sinusoidal_embedding_separates_steps",
           "drop_labels_drops_with_probability_p", "drop_labels_is_reproducible", "linear_toy_model",
           "guided_eps_is_eq6", "guided_eps_label_blind_model", "diffusion_loss_is_algorithm_1",
           "diffusion_loss_has_gradients"]

# chapter 3: the U-Net

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


# chapter 4: classifier-free guidance

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


# chapter 5: training

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
    from ..training import Batch
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(B, 1, 4, 4, generator=g) * 2 - 1, torch.tensor([0, 1, 2, NULL_LABEL, 8, 9])[:B],
                 torch.randint(0, 1000, (B,), generator=g), torch.randn(B, 1, 4, 4, generator=g))


def diffusion_loss_is_algorithm_1(diffusion_loss) -> None:
    """The model sees x_t = q_sample(x_0, t, eps) with the batch's t and labels; the loss is L1 or mean squared error."""
    from ..forward import q_sample
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
