"""Tests of ddpm_lite.unet (chapter 3): shapes, gradients, conditioning, input checks, configs."""
import pytest
import torch

from ddpm_lite.config import get_config
from ddpm_lite.guidance import NULL_LABEL
from ddpm_lite.unet import (Conditioning, ImprovedUNet, PaperBlock, PaperUNet, ResBlock, SelfAttention,
                            build_model, count_parameters, sinusoidal_embedding)

# Small widths keep every test fast on a CPU; the architecture is the same at any width.
CH, TD = (8, 16, 24), 16
VARIANTS = ["paper", "improved", "improved_attention"]


def make(variant: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if variant == "paper":
        return PaperUNet(CH, TD)
    return ImprovedUNet(CH, TD, attention=variant == "improved_attention")


def batch(B: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 1, 28, 28, generator=g)
    t = torch.tensor([0, 10, 500, 999])[:B]
    y = torch.tensor([0, 5, 9, NULL_LABEL])[:B]
    return x, t, y


def trained_one_step(model: torch.nn.Module) -> torch.nn.Module:
    """Take one Adam step on a noise-prediction loss.

    The improved U-Net zero-initialises conv2 of every ResBlock and the attention's proj, so a
    fresh model is a fixed function of x alone: t and y reach the output only through those
    zero layers (see test_fresh_improved_model_ignores_conditioning). After one step they are
    nonzero and the conditioning matters, as it does in training. The paper U-Net does not need
    this, but we treat both alike.
    """
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, t, y = batch()
    loss = (model(x, t, y) - torch.randn_like(x)).square().mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    return model


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shape_equals_input_shape(variant):
    model = make(variant)
    x, t, y = batch()
    out = model(x, t, y)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_other_sizes_divisible_by_4_work(variant):
    x = torch.randn(2, 1, 32, 20)
    out = make(variant)(x, torch.tensor([3, 4]), torch.tensor([1, 2]))
    assert out.shape == x.shape


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_parameter_receives_a_gradient(variant):
    model = make(variant)
    # With the zero-initialised conv2/proj layers of the improved U-Net, every layer *behind*
    # them gets an exactly zero gradient on the first pass (exercise 3 of chapter 3). Perturb all
    # weights slightly so that a missing connection, not the initialisation, is what we detect.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, t, y = batch()
    model(x, t, y).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, f"{name} got an all-zero gradient"


def test_fresh_improved_model_ignores_conditioning():
    # Documents the zero initialisation: every ResBlock starts as skip(x) and attention as x.
    model = make("improved_attention")
    x, t, y = batch()
    with torch.no_grad():
        a = model(x, t, y)
        b = model(x, t.flip(0), torch.tensor([1, 2, 3, 4]))
    assert torch.equal(a, b)


@pytest.mark.parametrize("variant", VARIANTS)
def test_label_and_step_change_the_output(variant):
    model = trained_one_step(make(variant))   # see trained_one_step for why
    x, t, y = batch()
    with torch.no_grad():
        base = model(x, t, y)
        other_label = model(x, t, torch.tensor([1, 6, 2, 3]))
        other_step = model(x, torch.tensor([900, 400, 20, 1]), y)
    for changed in (other_label, other_step):
        per_image = (changed - base).flatten(1).abs().amax(1)
        assert (per_image > 1e-5).all(), per_image


@pytest.mark.parametrize("variant", VARIANTS)
def test_images_in_a_batch_do_not_interact(variant):
    model = trained_one_step(make(variant))
    x, t, y = batch()
    y2 = y.clone()
    y2[0] = 7
    with torch.no_grad():
        a, b = model(x, t, y), model(x, t, y2)
    assert not torch.allclose(a[0], b[0], atol=1e-6)
    torch.testing.assert_close(a[1:], b[1:], rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_null_label_is_accepted(variant):
    model = trained_one_step(make(variant))
    x, t, _ = batch()
    with torch.no_grad():
        uncond = model(x, t, torch.full((4,), NULL_LABEL))
        cond = model(x, t, torch.full((4,), 3))
    assert uncond.shape == x.shape and torch.isfinite(uncond).all()
    assert not torch.allclose(uncond, cond)   # "no label" has its own embedding row


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("labels", [[-1, 0, 1, 2], [0, 1, 2, 11], [0.0, 1.0, 2.0, 3.0], [True, False, True, False]])
def test_invalid_labels_raise(variant, labels):
    x, t, _ = batch()
    with pytest.raises(ValueError, match="labels"):
        make(variant)(x, t, torch.tensor(labels))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", [(4, 1, 30, 30), (4, 3, 28, 28), (4, 28, 28), (4, 1, 28, 26), (4, 1, 1, 28, 28)])
def test_wrong_image_shapes_raise(variant, shape):
    _, t, y = batch()
    with pytest.raises(ValueError, match=r"shape \[B, 1, H, W\]"):
        make(variant)(torch.randn(shape), t, y)


@pytest.mark.parametrize("variant", VARIANTS)
def test_integer_images_raise(variant):
    _, t, y = batch()
    with pytest.raises(ValueError, match="floating point"):
        make(variant)(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), t, y)


@pytest.mark.parametrize("variant", VARIANTS)
def test_mismatched_t_and_y_raise(variant):
    model = make(variant)
    x, t, y = batch()
    with pytest.raises(ValueError, match="t must hold one entry per image"):
        model(x, t[:3], y)
    with pytest.raises(ValueError, match="y must hold one entry per image"):
        model(x, t, torch.cat([y, y[:1]]))
    with pytest.raises(ValueError, match="t must hold one entry per image"):
        model(x, t[:, None], y)
    with pytest.raises(ValueError, match="t must hold step indices"):
        model(x, torch.ones(4, dtype=torch.bool), y)
    with pytest.raises(TypeError, match="t must be a torch.Tensor"):
        model(x, [0, 1, 2, 3], y)


def _widths(model):
    "Channels at 28x28, 14x14 and 7x7, read from the layers."
    if isinstance(model, PaperUNet):
        return (model.down1.conv1.out_channels, model.down2.conv1.out_channels, model.mid.conv1.out_channels)
    return (model.enc1.conv1.out_channels, model.enc2.conv1.out_channels, model.enc3.conv1.out_channels)


@pytest.mark.parametrize("preset", ["paper", "quick", "best"])
def test_build_model_honours_presets(preset):
    cfg = get_config(preset)
    model = build_model(cfg)
    assert isinstance(model, PaperUNet if cfg.model == "paper" else ImprovedUNet)
    assert _widths(model) == tuple(cfg.channels)
    assert model.cond.dim == cfg.time_dim
    if cfg.model == "improved":
        assert isinstance(model.attn, SelfAttention) == cfg.attention


def test_build_model_honours_overrides():
    base = build_model(get_config("quick"))
    wide = build_model(get_config("quick", channels=(16, 32, 128), time_dim=32, attention=True))
    assert _widths(wide) == (16, 32, 128) and wide.cond.dim == 32 and isinstance(wide.attn, SelfAttention)
    assert count_parameters(wide) > count_parameters(base)
    paper = build_model(get_config("paper", channels=(8, 16, 32), time_dim=8))
    assert isinstance(paper, PaperUNet) and _widths(paper) == (8, 16, 32) and paper.cond.dim == 8


def test_build_model_rejects_unknown_model():
    class Fake:
        model, channels, time_dim, attention = "transformer", (8, 16, 24), 16, False
    with pytest.raises(ValueError, match="unknown model"):
        build_model(Fake())


def test_state_dict_layout_is_stable():
    # Checkpoints store state dicts by name: renaming or reshaping a layer breaks them.
    sd = build_model(get_config("quick")).state_dict()
    assert len(sd) == 87
    expected = {"cond.time_mlp.0.weight": (64, 64), "cond.label_emb.weight": (NULL_LABEL + 1, 64),
                "stem.weight": (16, 1, 3, 3), "enc2.skip.weight": (32, 16, 1, 1), "dec2.conv1.weight": (32, 96, 3, 3),
                "mid.emb.weight": (64, 64), "out.0.weight": (16,), "out.2.weight": (1, 16, 3, 3)}
    for name, shape in expected.items():
        assert tuple(sd[name].shape) == shape, name
    sd = build_model(get_config("paper")).state_dict()
    assert len(sd) == 41 and tuple(sd["dec2.conv1.weight"].shape) == (128, 256, 3, 3)
    assert tuple(sd["up2.weight"].shape) == (256, 128, 2, 2)


def test_count_parameters():
    assert count_parameters(torch.nn.Linear(3, 2)) == 8
    # PaperBlock(1, 64, 128): conv1 640 + conv2 36,928 + projection 8,256
    assert count_parameters(PaperBlock(1, 64, 128)) == 640 + 36_928 + 8_256
    model = make("improved")
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


def test_resblock_and_attention_keep_shapes():
    x, emb = torch.randn(2, 16, 7, 7), torch.randn(2, 12)
    assert ResBlock(16, 24, 12)(x, emb).shape == (2, 24, 7, 7)
    assert SelfAttention(16)(x).shape == x.shape


def test_conditioning_shape_and_null_row():
    cond = Conditioning(16)
    e = cond(torch.tensor([0, 999]), torch.tensor([NULL_LABEL, 3]))
    assert e.shape == (2, 16)
    assert cond.label_emb.num_embeddings == NULL_LABEL + 1


def test_sinusoidal_embedding_shape_and_distinct_rows():
    t = torch.arange(1000)
    pe = sinusoidal_embedding(t, 64)
    assert pe.shape == (1000, 64) and pe.dtype == torch.float32
    assert pe.abs().max() <= 1.0
    # each (sin, cos) pair has unit length, so every row has length sqrt(d/2)
    torch.testing.assert_close(pe.norm(dim=1), torch.full((1000,), 32 ** 0.5))
    # t = 0: all sines 0, all cosines 1
    torch.testing.assert_close(pe[0], torch.cat([torch.zeros(32), torch.ones(32)]))
    dist = torch.cdist(pe, pe)
    off_diagonal = dist[~torch.eye(1000, dtype=torch.bool)]
    assert off_diagonal.min() > 1e-2, "two distinct steps share an embedding"


def test_the_assignment_checks_pass_on_the_embedding():
    # the same checks grade the chapter 3 assignment (ddpm_lite.checks)
    from ddpm_lite import checks
    checks.sinusoidal_embedding_is_the_formula(sinusoidal_embedding)
    checks.sinusoidal_embedding_separates_steps(sinusoidal_embedding)


def test_sinusoidal_embedding_rejects_bad_input():
    with pytest.raises(ValueError, match="even"):
        sinusoidal_embedding(torch.arange(3), 7)
    with pytest.raises(ValueError, match="1-D"):
        sinusoidal_embedding(torch.arange(6).reshape(2, 3), 8)
