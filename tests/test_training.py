"""Training (Algorithm 1): learning on a fixed batch, exact repeatability and resuming, divergence, EMA, sharding."""
import math

import pytest
import torch

from ddpm_lite import checks, training
from ddpm_lite.checkpoint import latest_checkpoint, step_checkpoints
from ddpm_lite.config import get_config
from ddpm_lite.errors import CheckpointError, TrainingDiverged
from ddpm_lite.forward import make_schedule
from ddpm_lite.guidance import NULL_LABEL
from ddpm_lite.training import (EMA, Batch, diffusion_loss, draw_batch, make_optimizer, new_state, restore,
                                state_dict, step_generator, train, train_step)
from ddpm_lite.unet import build_model


def tiny_cfg(**overrides):
    # chapter 5's algorithm: the quick preset without chapter 12's changes (v target, lr schedule)
    base = dict(channels=(8, 8, 8), time_dim=16, batch_size=8, iterations=8, checkpoint_every=3,
                prediction="eps", lr_schedule="constant", warmup=0)
    return get_config("quick", **{**base, **overrides})


pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.py


@pytest.fixture(scope="module")
def data():
    "64 random 'images' in [-1, 1] with labels: enough for the loop, no data set needed."
    g = torch.Generator().manual_seed(0)
    return torch.rand((64, 1, 28, 28), generator=g) * 2 - 1, torch.randint(10, (64,), generator=g)


def run(cfg, data, run_dir=None, **kw):
    return train(cfg, run_dir, device="cpu", data=data, progress=False, **kw)


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def same_state(s1, s2) -> bool:
    opt1, opt2 = s1.opt.state_dict()["state"], s2.opt.state_dict()["state"]
    return (s1.step == s2.step and s1.losses == s2.losses
            and same_tensors(s1.model.state_dict(), s2.model.state_dict())
            and same_tensors(s1.ema.model.state_dict(), s2.ema.model.state_dict())
            and opt1.keys() == opt2.keys() and all(same_tensors(opt1[k], opt2[k]) for k in opt1))


def test_steps_lower_the_loss_on_a_fixed_batch(data):
    cfg = tiny_cfg(lr=3e-3)
    images, labels = data
    g = torch.Generator().manual_seed(1)
    batch = Batch(images[:8], labels[:8], torch.randint(cfg.T, (8,), generator=g), torch.randn((8, 1, 28, 28), generator=g))
    torch.manual_seed(0)
    model = build_model(cfg)
    opt, sched = make_optimizer(cfg, model), make_schedule(cfg.schedule, cfg.T)
    losses = [train_step(model, opt, sched, batch, cfg).item() for _ in range(20)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0], losses


def test_l1_and_l2_losses_are_what_they_say(data):
    cfg = tiny_cfg(p_uncond=0.0)
    batch = draw_batch(cfg, 0, *data)
    zero = lambda x, t, y: torch.zeros_like(x)           # predicts no noise: the loss is a moment of eps
    sched = make_schedule(cfg.schedule, cfg.T)
    assert torch.allclose(diffusion_loss(zero, sched, batch, "l1"), batch.eps.abs().mean())
    assert torch.allclose(diffusion_loss(zero, sched, batch, "l2"), batch.eps.pow(2).mean())
    # the same checks grade the chapter 5 assignment (ddpm_lite.checks)
    checks.diffusion_loss_is_algorithm_1(diffusion_loss)
    checks.diffusion_loss_has_gradients(diffusion_loss)


def test_same_seed_is_bit_identical_and_another_seed_differs(data):
    a, b = run(tiny_cfg(), data), run(tiny_cfg(), data)
    c = run(tiny_cfg(seed=1), data)
    assert len(a.losses) == 8 and same_state(a, b)
    assert a.losses != c.losses
    assert not torch.equal(next(a.model.parameters()), next(c.model.parameters()))


def test_resumed_run_continues_bit_identically(data, tmp_path):
    cfg = tiny_cfg()
    uninterrupted = run(cfg, data)
    first = run(cfg, data, tmp_path, stop_after=5)               # checkpoints at steps 3 and 5
    assert first.step == 5
    assert [p.name for p in step_checkpoints(tmp_path)] == ["step_00000003.pt", "step_00000005.pt"]
    resumed = run(cfg, data, tmp_path)
    assert same_state(uninterrupted, resumed)
    assert len(step_checkpoints(tmp_path)) == 2                  # keep=2: older ones are deleted


def test_resuming_from_an_older_checkpoint_is_also_exact(data, tmp_path):
    cfg = tiny_cfg()
    uninterrupted = run(cfg, data)
    run(cfg, data, tmp_path, stop_after=5)
    step_checkpoints(tmp_path)[-1].unlink()                      # lose step 5: continue from step 3
    assert latest_checkpoint(tmp_path)[1]["step"] == 3
    assert same_state(uninterrupted, run(cfg, data, tmp_path))


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    cfg = tiny_cfg(iterations=20, checkpoint_every=4)
    calls = []
    real_loss = training.diffusion_loss

    def nan_after_six(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) > 6 else loss

    monkeypatch.setattr(training, "diffusion_loss", nan_after_six)
    with pytest.raises(TrainingDiverged, match="nan"):
        run(cfg, data, tmp_path)
    path, ckpt = latest_checkpoint(tmp_path)
    assert path.name == "step_00000004.pt" and ckpt["step"] == 4
    assert torch.isfinite(ckpt["losses"]).all() and len(ckpt["losses"]) == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert all(torch.isfinite(v).all() for v in ckpt["ema"].values())


def test_restore_refuses_a_checkpoint_of_another_config(data, tmp_path):
    cfg = tiny_cfg(iterations=3)
    run(cfg, data, tmp_path)
    path = step_checkpoints(tmp_path)[-1]
    with pytest.raises(CheckpointError, match="step_00000003.pt.*lr"):
        run(cfg.replace(lr=1e-3), data, tmp_path)
    ckpt = latest_checkpoint(tmp_path)[1]
    other = cfg.replace(ema_decay=0.9)
    with pytest.raises(CheckpointError, match=str(path)):
        restore(new_state(other, "cpu"), ckpt, other, path)
    state = restore(new_state(cfg, "cpu"), ckpt, cfg, path)      # the same config loads
    assert state.step == 3 and same_tensors(state_dict(state, cfg)["model"], ckpt["model"])


def test_a_run_can_be_extended_or_shortened_on_resume(data, tmp_path):
    """iterations and checkpoint_every may change on resume; the result equals one run of the new length."""
    cfg = tiny_cfg(iterations=4)
    run(cfg, data, tmp_path / "a")
    longer = cfg.replace(iterations=8, checkpoint_every=2)
    extended = run(longer, data, tmp_path / "a")
    assert same_state(extended, run(longer, data, tmp_path / "b"))
    with pytest.raises(CheckpointError, match="past iterations = 2"):
        run(cfg.replace(iterations=2), data, tmp_path / "a")


def test_a_sampling_default_never_blocks_a_resume(data, tmp_path):
    """w, the sampler and its steps say how the model is sampled, not how it is trained: a resume accepts any."""
    cfg = tiny_cfg(iterations=4)
    run(cfg, data, tmp_path / "a")
    other = cfg.replace(iterations=6, w=0.5, sampler="dpm++", sample_steps=7, null_at_sampling="omitted")
    resumed = run(other, data, tmp_path / "a")
    assert same_state(resumed, run(cfg.replace(iterations=6), data, tmp_path / "b"))
    with pytest.raises(CheckpointError, match="lr"):                   # a training field still does
        run(cfg.replace(iterations=8, lr=cfg.lr / 2), data, tmp_path / "a")


def test_ema_with_decay_zero_is_the_raw_model(data):
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = build_model(cfg)
    ema = EMA(model, 0.0)
    opt, sched = make_optimizer(cfg, model), make_schedule(cfg.schedule, cfg.T)
    for step in (0, 1, 500):
        train_step(model, opt, sched, draw_batch(cfg, step, *data), cfg)
        ema.update(model, step)
        assert same_tensors(ema.model.state_dict(), model.state_dict())


def test_ema_update_and_warm_up():
    ema = EMA(torch.nn.Linear(3, 2), 0.999)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10**6) == 0.999
    assert all(ema.decay_at(n) <= ema.decay_at(n + 1) for n in range(20_000))
    target = torch.nn.Linear(3, 2)
    before = [p.clone() for p in ema.model.parameters()]
    ema.update(target, 10**6)                                    # decay 0.999 after the warm-up
    for old, new, p in zip(before, ema.model.parameters(), target.parameters()):
        assert torch.allclose(new, 0.999 * old + 0.001 * p)


@pytest.mark.parametrize("batch_size", [8, 7])
def test_shards_of_two_ranks_make_up_the_single_rank_batch(data, batch_size):
    cfg = tiny_cfg(batch_size=batch_size, p_uncond=0.5)
    whole = draw_batch(cfg, 3, *data)
    halves = [draw_batch(cfg, 3, *data, rank=r, world_size=2) for r in range(2)]
    assert [len(h.t) for h in halves] == [batch_size // 2, batch_size - batch_size // 2]
    for name in ("x0", "y", "t", "eps"):
        assert torch.equal(torch.cat([getattr(h, name) for h in halves]), getattr(whole, name)), name


def test_a_batch_depends_on_seed_and_step_only(data):
    cfg = tiny_cfg(batch_size=64, p_uncond=0.5)
    b0 = draw_batch(cfg, 5, *data)
    torch.manual_seed(123)                                       # the global RNG plays no part
    again = draw_batch(cfg, 5, *data)
    assert all(torch.equal(getattr(b0, k), getattr(again, k)) for k in ("x0", "y", "t", "eps"))
    assert not torch.equal(b0.t, draw_batch(cfg, 6, *data).t)
    assert not torch.equal(b0.t, draw_batch(cfg.replace(seed=1), 5, *data).t)
    assert 0 <= int(b0.t.min()) and int(b0.t.max()) < cfg.T
    assert (b0.y == NULL_LABEL).any() and (b0.y != NULL_LABEL).any()


def test_seed_zero_keeps_the_plain_step_stream():
    "Runs with seed 0 (the pretrained model's) draw stream `step` at step `step`, as they always have."
    for step in (0, 1, 12_345):
        assert torch.equal(torch.randn(4, generator=step_generator(0, step)),
                           torch.randn(4, generator=torch.Generator().manual_seed(step)))
    streams = {step_generator(seed, step).initial_seed() for seed in range(20) for step in range(2000)}
    assert len(streams) == 20 * 2000                             # no two (seed, step) pairs share a stream
