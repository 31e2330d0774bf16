"""Every fast path that scripts/bench.py measures (ddpm_lite.fastpaths) gives the same numbers as the plain path.

A speed-up is only worth having if the results do not change: batched guidance against two
separate passes, skipping the unconditional pass at w = 0, channels_last against contiguous
tensors, the batched classifier against one image at a time, and foreach / fused optimizer
kernels against the for-loop. The last test runs the benchmark itself at its smallest size.
"""
import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddpm_lite import fastpaths
from ddpm_lite.config import get_config
from ddpm_lite.forward import make_schedule
from ddpm_lite.guidance import NULL_LABEL, guided_eps
from ddpm_lite.training import diffusion_loss, draw_batch
from ddpm_lite.unet import build_model

ROOT = Path(__file__).resolve().parent.parent

# The paper's U-Net, and our U-Net without and with attention (at 7x7, with a wider time embedding).
VARIANTS = {"paper": dict(preset="paper"), "quick": dict(preset="quick"),
            "attention": dict(preset="quick", attention=True, channels=(32, 64, 128), time_dim=128)}
PRESETS = list(VARIANTS)


def variant_config(name: str, **overrides):
    spec = dict(VARIANTS[name])
    return get_config(spec.pop("preset"), **{**spec, **overrides})


def perturbed_model(preset: str):
    """A variant's U-Net with every weight nudged, so zero-initialised layers (and the labels) matter."""
    torch.manual_seed(0)
    model = build_model(variant_config(preset)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def inputs(B: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((B, 1, 28, 28), generator=g)
    t = torch.randint(1000, (B,), generator=g)
    y = torch.randint(10, (B,), generator=g)
    return x, t, y


# --- guidance ------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["paper", "quick"])
def test_batched_guidance_equals_two_separate_passes(preset):
    model = perturbed_model(preset)
    x, t, y = inputs()
    with torch.inference_mode():
        cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, NULL_LABEL))
        assert (cond - uncond).abs().max() > 1e-3, "labels have no effect: the comparison below would prove nothing"
        for w in (0.2, 2.0):
            torch.testing.assert_close(guided_eps(model, x, t, y, w), fastpaths.two_pass_eps(model, x, t, y, w),
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", ["paper", "quick"])
def test_skipping_at_w0_equals_the_conditional_pass_exactly(preset):
    model = perturbed_model(preset)
    x, t, y = inputs()
    with torch.inference_mode():
        cond = model(x, t, y)
        assert torch.equal(guided_eps(model, x, t, y, 0.0), cond)
        assert torch.equal(fastpaths.two_pass_eps(model, x, t, y, 0.0), cond)   # the baseline computes the same thing


def test_the_timed_ways_make_the_forward_calls_they_claim():
    stub = fastpaths.CountingStub()
    x, t, y = inputs(B=3)
    fastpaths.two_pass_eps(stub, x, t, y, 0.0)
    assert (stub.calls, stub.images) == (2, 6)        # the paper's way: two passes even at w = 0
    guided_eps(stub, x, t, y, 0.0)
    assert (stub.calls, stub.images) == (3, 9)        # skip: one pass of B images
    guided_eps(stub, x, t, y, 1.0)
    assert (stub.calls, stub.images) == (4, 15)       # batched: one pass of 2B images


# --- channels_last ---------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_channels_last_forward_equals_contiguous(preset):
    model = perturbed_model(preset)
    fast = fastpaths.channels_last_copy(model)
    assert fast.state_dict().keys() == model.state_dict().keys()
    assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in fast.parameters()), "the copy is not in channels_last format"
    x, t, y = inputs()
    with torch.inference_mode():
        plain = model(x, t, y)
        out = fast(x.contiguous(memory_format=torch.channels_last), t, y)
    assert plain.abs().max() > 0.1
    assert (out - plain).abs().max().item() <= 1e-5


@pytest.mark.parametrize("preset", ["paper", "quick"])
def test_channels_last_training_gives_the_same_loss_and_gradients(preset):
    cfg = get_config(preset, batch_size=4)
    model = perturbed_model(preset).train()
    fast = fastpaths.channels_last_copy(model)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand((16, 1, 28, 28), generator=g) * 2 - 1, torch.randint(10, (16,), generator=g)
    batch = draw_batch(cfg, 0, images, labels)
    sched = make_schedule(cfg.schedule, cfg.T)
    loss = diffusion_loss(model, sched, batch, cfg.loss)
    loss_cl = diffusion_loss(fast, sched, fastpaths.channels_last_batch(batch), cfg.loss)
    loss.backward()
    loss_cl.backward()
    assert abs(loss.item() - loss_cl.item()) <= 1e-5
    for (name, p), p_cl in zip(model.named_parameters(), fast.parameters()):
        torch.testing.assert_close(p_cl.grad, p.grad, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")


# --- optimizer kernels --------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["paper", "quick"])   # Adam and AdamW (with its preset's settings)
def test_foreach_and_fused_optimizer_steps_equal_the_for_loop(preset):
    cfg = get_config(preset, weight_decay=0.01)
    torch.manual_seed(0)
    start = build_model(cfg)
    models = {k: copy.deepcopy(start) for k in ("for_loop", "foreach", "fused")}
    opts = {k: fastpaths.optimizer_variant(cfg, m, k) for k, m in models.items()}
    base = opts["for_loop"].param_groups[0]
    for k, opt in opts.items():   # same hyperparameters, only the kernel differs
        group = opt.param_groups[0]
        assert {n: group[n] for n in ("lr", "betas", "eps", "weight_decay")} == \
               {n: base[n] for n in ("lr", "betas", "eps", "weight_decay")}
        assert (group["foreach"], group["fused"]) == {"for_loop": (False, False), "foreach": (True, False),
                                                      "fused": (False, True)}[k]
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=g) for p in start.parameters()]
        for k, m in models.items():
            for p, gr in zip(m.parameters(), grads):
                p.grad = gr.clone()
            opts[k].step()
    ref = list(models["for_loop"].parameters())
    moved = max((a - b).abs().max().item() for a, b in zip(ref, start.parameters()))
    assert moved > cfg.lr, "the optimizer did not move the weights"
    for k in ("foreach", "fused"):
        diff = max((a - b).abs().max().item() for a, b in zip(models[k].parameters(), ref))
        assert diff <= 1e-6, f"{k}: weights differ from the for-loop by {diff:.2e}"


def test_adam_uses_the_for_loop_by_default_on_the_cpu():
    """The premise of the optimizer comparison: without flags, PyTorch picks the slow for-loop on the CPU."""
    model = build_model(get_config("quick"))
    assert fastpaths.default_optimizer_kind(model) == "for_loop"


# --- FLOP counting ------------------------------------------------------------------------------------
def test_flops_scale_linearly_with_the_batch():
    """The bench counts FLOPs at batch 2 and scales them: that is exact only if every counted op is per image."""
    cfg = variant_config("attention")
    model = build_model(cfg)
    sched = make_schedule(cfg.schedule, cfg.T)
    images, labels = torch.zeros((8, 1, 28, 28)), torch.arange(8) % 10

    def flops(B):
        c = cfg.replace(batch_size=B)
        return fastpaths.count_flops(lambda: diffusion_loss(model, sched, draw_batch(c, 0, images, labels)).backward())
    assert flops(2) > 0 and flops(6) == 3 * flops(2)


# --- the IS classifier ------------------------------------------------------------------------------------
def test_batched_classifier_equals_one_image_at_a_time():
    metrics = pytest.importorskip("ddpm_lite.metrics")
    if not hasattr(metrics, "load_classifier"):
        pytest.skip("ddpm_lite.metrics has no classifier yet")
    try:
        model = metrics.load_classifier("cpu")
    except Exception as e:
        pytest.skip(f"no classifier weights: {e}")
    images, _, _ = fastpaths.benchmark_images(float_images=False)
    images = images[:40]
    batched = metrics.class_probabilities(model, images, batch_size=40)
    single = metrics.class_probabilities(model, images, batch_size=1)
    fast = metrics.class_probabilities(fastpaths.channels_last_copy(model), images, batch_size=40)
    assert batched.shape == (40, 10) and batched.std(axis=0).max() > 0.01   # images differ
    assert abs(batched - single).max() <= 1e-5
    assert abs(fast - batched).max() <= 1e-5


# --- the benchmark itself --------------------------------------------------------------------------------
def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


@pytest.mark.slow
def test_bench_quick_writes_every_section(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--out", str(out),
                           "--note", "test run"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(out.read_text())
    assert {"provenance", "settings", "machine", "training", "sampling", "evaluation", "fast_paths", "targets",
            "notes", "run"} <= res.keys()
    assert res["provenance"]["commit"] and res["settings"]["plan"] == "quick" and "test run" in res["notes"]
    assert set(res["training"]) == {"paper", "quick", "best"} and set(res["sampling"]) == {"paper", "quick"}
    assert "gflop_per_s" in res["machine"]["fma_peak"]
    assert all("fraction_of_fma_peak" in tr for tr in res["training"].values())
    for tr in res["training"].values():
        assert tr["images_per_s"] > 0 and 0 < tr["fraction_of_matmul"] and tr["channels_last_speedup"] > 0
    for sp in res["sampling"].values():
        assert set(sp["per_step"]) == {"guidance_w", "guidance_w0", "channels_last", "inference_mode"}
        assert set(sp["per_step"]["guidance_w0"]) == {"two_pass_w0", "skip_w0"}
        assert sp["whole_sample"]["ancestral_1000"]["forward_calls"] == 1000
        assert sp["whole_sample"]["ddim_50"]["forward_calls"] == 50
        assert sp["max_abs_diff"]["skip_w0_vs_two_pass_w0"] == 0
    for name in ("classifier", "inception"):
        section = res["evaluation"][name]
        assert "skipped" in section or max(v["images_per_s"] for v in section.values()
                                           if isinstance(v, dict) and "images_per_s" in v) > 0
    assert set(res["fast_paths"]["optimizer"]) == {"paper", "quick", "best"}
    assert len(res["targets"]) >= 5 and all(isinstance(t["met"], bool) for t in res["targets"])
    assert all(math.isfinite(v) for v in _numbers(res))
    assert "ratio" in done.stdout and "Targets" in done.stdout


# --- the fast paths inside train() and load_model() ---------------------------------------------
def _tiny_train(tmp_path, name, iterations, fast, monkeypatch, **kw):
    from ddpm_lite import device as dev_mod
    from ddpm_lite.training import train
    monkeypatch.setattr(dev_mod, "FAST_PATHS", fast)
    # chapter 5's recipe: a constant rate, so that changing `iterations` on resume leaves the steps as they were
    cfg = get_config("quick", channels=(16, 16, 16), time_dim=16, batch_size=8, iterations=iterations,
                     checkpoint_every=3, **{"prediction": "eps", "lr_schedule": "constant", "warmup": 0, **kw})
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn((64, 1, 28, 28), generator=g).clamp(-1, 1), torch.arange(64) % 10
    return train(cfg, tmp_path / name, device="cpu", data=(images, labels), progress=False)


def test_train_with_fast_paths_matches_the_plain_path(tmp_path, monkeypatch):
    plain = _tiny_train(tmp_path, "plain", 6, False, monkeypatch)
    fast = _tiny_train(tmp_path, "fast", 6, True, monkeypatch)
    conv = next(p for p in fast.model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert fast.opt.defaults.get("fused")
    assert not plain.opt.defaults.get("fused")
    assert fast.losses == pytest.approx(plain.losses, abs=1e-5)
    # channels_last convolutions sum in another order; Adam divides each step by sqrt(v), which turns
    # those 1e-7 rounding differences of tiny gradients into ~1e-5 in the weights. A real difference
    # between the paths would be of the order of the learning rate (2e-3) per step.
    for a, b in zip(fast.ema.model.parameters(), plain.ema.model.parameters()):
        assert torch.allclose(a, b, atol=5e-5)


def test_a_plain_checkpoint_resumes_on_the_fast_path(tmp_path, monkeypatch):
    _tiny_train(tmp_path, "run", 3, False, monkeypatch)                  # written without fast paths
    resumed = _tiny_train(tmp_path, "run", 6, True, monkeypatch)         # continued with them
    straight = _tiny_train(tmp_path, "straight", 6, False, monkeypatch)
    assert resumed.losses == pytest.approx(straight.losses, abs=1e-5)


def test_the_fma_peak_is_read_from_cpuinfo():
    from ddpm_lite.benchmark import timing
    info = "processor : 0\ncpu MHz\t\t: 2000.0\nflags\t\t: fpu sse avx avx2 fma\n"
    peak = timing.fma_peak(threads=2, cpuinfo=info)
    assert peak["flop_per_cycle_per_core"] == 32 and peak["gflop_per_s"] == 2 * 2000e6 * 32 / 1e9
    assert timing.fma_peak(threads=1, cpuinfo=info.replace("avx2 fma", "avx512f avx2 fma"))["fp32_lanes"] == 16
    assert timing.fma_peak(threads=1, cpuinfo="flags : sse\n")["gflop_per_s"] is None   # no clock: no peak
    res = {"machine": {}, "settings": {"threads": 2},
           "training": {"x": {"achieved_gflop_per_s": peak["gflop_per_s"] / 2}}}
    import unittest.mock as mock
    with mock.patch.object(timing, "fma_peak", lambda threads=None: peak):
        timing.add_fma_peak(res)
    assert res["training"]["x"]["fraction_of_fma_peak"] == 0.5
