"""Chapter 12's recipe options: min-SNR weights, the v target, warm-up and cosine decay, and that
each is an option of the one training loop (resumable, saved and loaded like any run)."""
import math

import pytest
import torch

from ddpm_lite.checkpoint import load_checkpoint, load_model, save_checkpoint, save_model_file, step_checkpoints
from ddpm_lite.config import ConfigError, get_config
from ddpm_lite.forward import make_schedule, q_sample
from ddpm_lite.recipes import EpsFromV, learning_rate, loss_weights, noise_predictor, v_target
from ddpm_lite.sampling import ddim_sample
from ddpm_lite.training import diffusion_loss, draw_batch, train

pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.py

SCHED = make_schedule("linear", 1000)


def tiny_cfg(**overrides):
    # chapter 5's recipe, to which each test adds one of chapter 12's options
    base = dict(channels=(8, 8, 8), time_dim=16, batch_size=8, iterations=8, checkpoint_every=3,
                prediction="eps", lr_schedule="constant", warmup=0)
    return get_config("quick", **{**base, **overrides})


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.rand((64, 1, 28, 28), generator=g) * 2 - 1, torch.randint(10, (64,), generator=g)


def run(cfg, data, run_dir=None, **kw):
    return train(cfg, run_dir, device="cpu", data=data, progress=False, **kw)


def noisy(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand((n, 1, 28, 28), generator=g) * 2 - 1
    eps = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 1, 100, 500, 900, 999])[:n]
    return x0, eps, t, q_sample(SCHED, x0, t, eps)


def test_v_converts_back_to_the_noise_and_the_image():
    x0, eps, t, xt = noisy()
    v = v_target(SCHED, x0, t, eps)
    a = SCHED.alpha_bars[t].sqrt().float().view(-1, 1, 1, 1)
    s = (1 - SCHED.alpha_bars[t]).sqrt().float().view(-1, 1, 1, 1)
    assert torch.allclose(a * xt - s * v, x0, atol=1e-5)          # x_0 = a_t x_t - s_t v_t
    oracle = EpsFromV(_Const(v), SCHED)
    assert torch.allclose(oracle(xt, t, torch.zeros(6, dtype=torch.long)), eps, atol=1e-5)


class _Const(torch.nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, t, y):
        return self.out


def test_a_perfect_v_network_has_zero_loss_and_a_wrong_target_does_not():
    cfg = tiny_cfg(p_uncond=0.0)
    g = torch.Generator().manual_seed(3)
    images, labels = torch.rand((16, 1, 28, 28), generator=g) * 2 - 1, torch.randint(10, (16,), generator=g)
    batch = draw_batch(cfg, 0, images, labels)
    v = v_target(SCHED, batch.x0, batch.t, batch.eps)
    model = _Const(v)
    assert diffusion_loss(model, SCHED, batch, "l2", prediction="v").item() < 1e-12
    assert diffusion_loss(model, SCHED, batch, "l2", prediction="v", weighting="min_snr").item() < 1e-12
    assert diffusion_loss(model, SCHED, batch, "l2", prediction="eps").item() > 0.1
    assert diffusion_loss(_Const(batch.eps), SCHED, batch, "l1", weighting="min_snr").item() < 1e-12


def test_min_snr_weights_cap_the_nearly_clean_steps_only():
    t = torch.arange(1000)
    snr = SCHED.snr.float()
    w = loss_weights(SCHED, t, "min_snr", 5.0)
    assert torch.equal(loss_weights(SCHED, t, "none"), torch.ones(1000))
    assert torch.allclose(w[snr <= 5], torch.ones(int((snr <= 5).sum())))        # noisy steps keep weight 1
    assert torch.allclose(w[snr > 5], 5 / snr[snr > 5])                           # clean ones are turned down
    assert 0 < int((snr > 5).sum()) < 1000 and bool((w[:10] < 0.01).all())
    wv = loss_weights(SCHED, t, "min_snr", 5.0, prediction="v")
    assert torch.allclose(wv, torch.clamp(snr, max=5) / (snr + 1))
    with pytest.raises(ValueError, match="min_snr"):
        loss_weights(SCHED, t, "p2")


def test_learning_rate_warms_up_and_decays_to_zero():
    const = get_config("quick", iterations=1000, lr_schedule="constant", warmup=0)
    assert all(learning_rate(const, n) == const.lr for n in (0, 500, 999))
    cos = get_config("quick", iterations=1000, lr_schedule="cosine", warmup=100, lr=1e-3)
    lrs = [learning_rate(cos, n) for n in range(1000)]
    assert math.isclose(lrs[0], 1e-5) and math.isclose(lrs[99], 1e-3 * 0.5 * (1 + math.cos(math.pi * 0.099)))
    assert all(b <= a for a, b in zip(lrs[100:], lrs[101:]))                       # decays after warm-up
    assert math.isclose(lrs[500], 0.5e-3) and lrs[-1] < 1e-8


def test_bad_recipe_fields_are_refused_with_the_choices():
    with pytest.raises(ConfigError, match="prediction.*eps, v"):
        get_config("quick", prediction="x0")
    with pytest.raises(ConfigError, match="warmup"):
        get_config("quick", warmup=-1)
    with pytest.raises(ConfigError, match="snr_gamma"):
        get_config("quick", snr_gamma=0)
    with pytest.raises(ConfigError, match="lr_schedule"):
        get_config("quick", lr_schedule="linear")


@pytest.mark.parametrize("recipe", [dict(lr_schedule="cosine", warmup=3), dict(prediction="v", loss_weight="min_snr")])
def test_a_recipe_run_resumes_bit_identically(data, tmp_path, recipe):
    cfg = tiny_cfg(**recipe)
    straight = run(cfg, data)
    run(cfg, data, tmp_path, stop_after=5)
    resumed = run(cfg, data, tmp_path)
    assert straight.losses == resumed.losses
    assert straight.losses != run(tiny_cfg(), data).losses                       # the option changed training
    assert straight.opt.param_groups[0]["lr"] == learning_rate(cfg, cfg.iterations - 1)


def test_a_checkpoint_from_before_the_recipe_fields_still_resumes(data, tmp_path):
    cfg = tiny_cfg()
    run(cfg, data, tmp_path, stop_after=3)
    path = step_checkpoints(tmp_path)[-1]
    assert cfg.prediction == "eps" and cfg.lr_schedule == "constant"     # the old defaults, as an old file holds
    ckpt = load_checkpoint(path)
    for k in ("prediction", "loss_weight", "snr_gamma", "lr_schedule", "warmup"):
        del ckpt["config"][k]
    save_checkpoint(path, **ckpt)
    assert run(cfg, data, tmp_path).step == cfg.iterations
    with pytest.raises(Exception, match="different config"):
        run(tiny_cfg(prediction="v"), data, tmp_path)


def test_a_v_model_is_loaded_as_a_noise_predictor_and_samples(data, tmp_path):
    cfg = tiny_cfg(prediction="v", iterations=3)
    state = run(cfg, data)
    save_model_file(tmp_path / "model.pt", cfg, state.ema.model.state_dict(), state.step)
    model, loaded = load_model(tmp_path / "model.pt")
    assert isinstance(model, EpsFromV) and loaded.prediction == "v"
    x = torch.randn(2, 1, 28, 28)
    t = torch.tensor([10, 900])
    y = torch.tensor([1, 2])
    with torch.no_grad():
        v = state.ema.model.eval()(x, t, y)
        a = SCHED.alpha_bars[t].sqrt().float().view(-1, 1, 1, 1)
        s = (1 - SCHED.alpha_bars[t]).sqrt().float().view(-1, 1, 1, 1)
        assert torch.allclose(model(x, t, y), a * v + s * x, atol=1e-5)
    out = ddim_sample(model, SCHED, y, w=1.0, steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 28, 28) and bool(torch.isfinite(out).all())
    assert noise_predictor(state.ema.model, tiny_cfg()) is state.ema.model     # eps models are left alone
