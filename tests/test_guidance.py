"""Tests of ddpm_lite.guidance: the null label, label dropout and the guided noise prediction (eq 6)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpm_lite import checks
from ddpm_lite.checks import linear_toy_model
from ddpm_lite.config import Config
from ddpm_lite.forward import make_schedule
from ddpm_lite.guidance import (NULL_LABEL, NUM_CLASSES, check_guidance_weight, check_labels, drop_labels,
                                guided_eps)
from ddpm_lite.reverse import mu_from_eps
from ddpm_lite.training import draw_batch
from ddpm_lite.unet import Conditioning, ImprovedUNet, PaperUNet


class CallCounter(torch.nn.Module):
    "Records (x, t, y) of every forward call and passes it on."
    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x, t, y):
        self.calls.append((x.clone(), t.clone(), y.clone()))
        return self.model(x, t, y)


def random_weights(model, seed=0, std=0.2):
    "Random, non-zero weights everywhere (the default init zeroes some layers of ImprovedUNet)."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


@pytest.fixture(scope="module", params=["improved", "paper"])
def unet(request):
    if request.param == "improved":
        return random_weights(ImprovedUNet(channels=(8, 16, 32), time_dim=16))
    return random_weights(PaperUNet(channels=(4, 8, 8), time_dim=16), std=0.1)


def inputs(B=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 1, 28, 28, generator=g)
    t = torch.randint(0, 1000, (B,), generator=g)
    y = torch.randint(0, NUM_CLASSES, (B,), generator=g)
    return x, t, y


# --- the null label: one constant, used by training and by sampling ---------------------------

def test_null_label_is_its_own_embedding_row():
    assert NULL_LABEL == NUM_CLASSES == 10
    emb = Conditioning(8).label_emb
    assert emb.num_embeddings == NULL_LABEL + 1   # digits 0-9 plus the null row


def test_training_null_label_equals_sampling_null_label():
    labels = torch.arange(40) % 10
    images = torch.zeros(40, 1, 28, 28)
    cfg = Config(batch_size=32, p_uncond=1.0)
    trained_with = draw_batch(cfg, step=0, images=images, labels=labels).y
    dropped = drop_labels(labels, 1.0, generator=torch.Generator().manual_seed(0))

    model = CallCounter(lambda x, t, y: x * (1 + y[:, None, None, None].float()))
    x, t, y = inputs(B=4)
    guided_eps(model, x, t, y, w=1.5)
    (_, _, y_call), = model.calls
    sampled_with = y_call[len(y):]          # labels of the unconditional half

    assert torch.equal(y_call[:len(y)], y)
    assert set(sampled_with.tolist()) == {NULL_LABEL}
    assert set(trained_with.tolist()) == {NULL_LABEL}
    assert set(dropped.tolist()) == {NULL_LABEL}


def test_draw_batch_keeps_labels_at_p_zero():
    labels = torch.arange(40) % 10
    images = torch.zeros(40, 1, 28, 28)
    y = draw_batch(Config(batch_size=32, p_uncond=0.0), step=3, images=images, labels=labels).y
    assert (y < NUM_CLASSES).all()


# --- drop_labels ----------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_rate_is_about_p(p):
    y = torch.arange(20_000) % 10
    out = drop_labels(y, p, generator=torch.Generator().manual_seed(123))
    rate = (out == NULL_LABEL).double().mean().item()
    assert abs(rate - p) < 0.02                      # ~6 standard deviations at n = 20,000
    kept = out != NULL_LABEL
    assert torch.equal(out[kept], y[kept])           # kept labels are unchanged


def test_drop_is_per_sample_not_per_batch():
    y = torch.arange(8).repeat(200).view(200, 8)     # 200 batches of 8 labels
    out = drop_labels(y, 0.5, generator=torch.Generator().manual_seed(7))
    dropped_per_batch = (out == NULL_LABEL).sum(1)
    mixed = ((dropped_per_batch > 0) & (dropped_per_batch < 8)).sum().item()
    assert mixed > 150                               # per-batch dropping would give 0 mixed batches
    assert out.shape == y.shape


@pytest.mark.parametrize("seed", range(5))
def test_drop_never_at_zero_always_at_one(seed):
    y = torch.arange(1000) % 10
    g = torch.Generator().manual_seed(seed)
    assert torch.equal(drop_labels(y, 0.0, generator=g), y)
    assert (drop_labels(y, 1.0, generator=g) == NULL_LABEL).all()
    assert (drop_labels(y, 1) == NULL_LABEL).all()   # no generator: drawn on y's device


def test_drop_labels_is_reproducible_and_leaves_input_alone():
    y = torch.arange(100) % 10
    before = y.clone()
    a = drop_labels(y, 0.3, generator=torch.Generator().manual_seed(5))
    b = drop_labels(y, 0.3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.equal(y, before)
    assert a.dtype == torch.long and a.device == y.device


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), float("inf"), "often"])
def test_drop_labels_rejects_bad_probability(p):
    with pytest.raises(ValueError, match="p_uncond must be a probability in \\[0, 1\\]"):
        drop_labels(torch.tensor([1, 2]), p)


# --- guided_eps: batched, and the forward calls it makes --------------------------------------

@pytest.mark.parametrize("w", [0.2, 1.0, 7.5])
def test_batched_guidance_equals_two_separate_passes(unet, w):
    x, t, y = inputs()
    with torch.no_grad():
        eps_c = unet(x, t, y)
        eps_u = unet(x, t, torch.full_like(y, NULL_LABEL))
        expected = (1 + w) * eps_c - w * eps_u           # eq 6 from two calls
        got = guided_eps(unet, x, t, y, w)
    assert (eps_c - eps_u).abs().max() > 1e-3           # the halves differ: the test can fail
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_w_zero_is_conditional_and_makes_one_call_of_B(unet):
    x, t, y = inputs(B=5)
    model = CallCounter(unet)
    with torch.no_grad():
        got = guided_eps(model, x, t, y, 0.0)
        expected = unet(x, t, y)
    assert len(model.calls) == 1
    xc, tc, yc = model.calls[0]
    assert len(xc) == 5 and torch.equal(yc, y)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_w_positive_makes_one_call_of_2B(unet):
    x, t, y = inputs(B=5)
    model = CallCounter(unet)
    with torch.no_grad():
        guided_eps(model, x, t, y, 0.5)
    assert len(model.calls) == 1
    xc, tc, yc = model.calls[0]
    assert len(xc) == 10
    assert torch.equal(xc[:5], x) and torch.equal(xc[5:], x)
    assert torch.equal(tc[:5], t) and torch.equal(tc[5:], t)
    assert torch.equal(yc[:5], y) and (yc[5:] == NULL_LABEL).all()


def test_the_assignment_checks_pass_on_guidance():
    # the same checks grade the chapter 4 assignment (ddpm_lite.checks)
    checks.guided_eps_is_eq6(guided_eps)
    checks.guided_eps_label_blind_model(guided_eps)
    checks.drop_labels_drops_with_probability_p(drop_labels)
    checks.drop_labels_is_reproducible(drop_labels)


@settings(max_examples=40, deadline=None)
@given(w=st.floats(min_value=0, max_value=50, allow_nan=False, allow_infinity=False),
       labels=st.lists(st.integers(min_value=0, max_value=NULL_LABEL), min_size=1, max_size=6))
def test_guided_eps_property(w, labels):
    y = torch.tensor(labels)
    B = len(y)
    x = torch.linspace(-1, 1, B * 4, dtype=torch.float64).view(B, 1, 2, 2)
    t = torch.arange(B) * 7
    model = CallCounter(linear_toy_model)
    got = guided_eps(model, x, t, y, w)
    eps_c = linear_toy_model(x, t, y)
    eps_u = linear_toy_model(x, t, torch.full_like(y, NULL_LABEL))
    torch.testing.assert_close(got, (1 + w) * eps_c - w * eps_u)
    assert [len(c[0]) for c in model.calls] == ([B] if w == 0 else [2 * B])


# --- mixing means (Algorithm 2, lines 3-5) equals mixing eps (eq 6) ---------------------------

@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("w", [0.0, 0.2, 3.0, 20.0])
def test_mixing_means_equals_mixing_eps(schedule, w):
    sched = make_schedule(schedule, 1000)
    g = torch.Generator().manual_seed(0)
    xt = torch.randn(16, 1, 28, 28, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1000, (16,), generator=g)
    eps_c = torch.randn(xt.shape, generator=g, dtype=torch.float64)
    eps_u = torch.randn(xt.shape, generator=g, dtype=torch.float64)
    mix_means = (1 + w) * mu_from_eps(sched, xt, t, eps_c) - w * mu_from_eps(sched, xt, t, eps_u)
    mix_eps = mu_from_eps(sched, xt, t, (1 + w) * eps_c - w * eps_u)
    torch.testing.assert_close(mix_means, mix_eps, atol=1e-10, rtol=1e-10)


def test_mixing_means_with_weights_not_summing_to_one_differs():
    "The identity relies on the weights (1 + w, -w) adding to one: a check that the test above can fail."
    sched = make_schedule("linear", 1000)
    g = torch.Generator().manual_seed(0)
    xt = torch.randn(4, 1, 28, 28, generator=g, dtype=torch.float64)
    t = torch.randint(0, 1000, (4,), generator=g)
    eps_c, eps_u = torch.randn(2, *xt.shape, generator=g, dtype=torch.float64)
    a, b = 1.5, -0.2
    gap = a * mu_from_eps(sched, xt, t, eps_c) + b * mu_from_eps(sched, xt, t, eps_u) \
        - mu_from_eps(sched, xt, t, a * eps_c + b * eps_u)
    assert gap.abs().max() > 0.1


# --- errors that name the problem --------------------------------------------------------------

@pytest.mark.parametrize("labels, pattern", [
    ([1, 11], "digits 0-9.*11"),
    ([-1, 3], "digits 0-9.*-1"),
    (torch.tensor([1.0, 2.0]), "integers.*float32"),
    (torch.tensor([True, False]), "integers.*bool"),
    ("three", "integers"),
])
def test_check_labels_rejects_invalid(labels, pattern):
    with pytest.raises(ValueError, match=pattern):
        check_labels(labels)


def test_null_label_refused_where_not_allowed():
    assert check_labels([0, 9, NULL_LABEL]).tolist() == [0, 9, NULL_LABEL]
    with pytest.raises(ValueError, match="null label"):
        check_labels([3, NULL_LABEL], allow_null=False)
    with pytest.raises(ValueError, match="digits 0-9"):
        check_labels([3, 12], allow_null=False)


@pytest.mark.parametrize("w, pattern", [
    (-0.5, "w must be >= 0"),
    (float("nan"), "w is NaN"),
    (float("inf"), "w must be finite"),
    (float("-inf"), "w must be finite"),
    ("strong", "w must be a single number"),
    (True, "w must be a number"),
])
def test_check_guidance_weight_rejects_invalid(w, pattern):
    with pytest.raises(ValueError, match=pattern):
        check_guidance_weight(w)


def test_check_guidance_weight_accepts_numbers():
    assert check_guidance_weight(0) == 0.0
    assert check_guidance_weight(torch.tensor(2.5)) == 2.5


@pytest.mark.parametrize("w", [-1.0, float("nan")])
def test_guided_eps_checks_w_before_calling_the_model(w):
    model = CallCounter(linear_toy_model)
    x, t, y = inputs(B=3)
    with pytest.raises(ValueError, match="guidance weight w"):
        guided_eps(model, x, t, y, w)
    assert model.calls == []


def test_guided_eps_rejects_bad_labels_and_shapes():
    model = CallCounter(linear_toy_model)
    x, t, y = inputs(B=3)
    with pytest.raises(ValueError, match="digits 0-9"):
        guided_eps(model, x, t, torch.tensor([1, 2, 13]), 1.0)
    with pytest.raises(ValueError, match="t and y need shape \\[3\\]"):
        guided_eps(model, x, t, y[:2], 1.0)
    assert model.calls == []
