"""The benchmark's compute cases: the matrix multiply, training steps, optimizer kernels and sampling.

Plumbing module (hand-written). Each bench_* function times one section of scripts/bench.py's
results and returns it as a JSON-ready dict:
- bench_matmul: fp32 matrix-multiply FLOP/s (torch.mm of two n x n matrices), the yardstick.
- bench_training: one `ddpm_lite.training.train_step` on a `draw_batch` batch for a preset (the
  paper's U-Net at batch 32): images/s and the FLOP/s it reaches (FLOPs of forward + backward
  counted with FlopCounterMode) as a fraction of the matrix-multiply FLOP/s, the matmul being
  timed in the same rounds as the step; and the step with channels_last.
- bench_optimizer: Adam/AdamW as a for-loop (PyTorch's default on the CPU) against foreach and
  fused kernels.
- bench_sampling: one reverse step of Algorithm 2, images/s: guidance the way the paper's code
  does it (two separate forward passes, the unconditional one even at w = 0) against our batched
  guidance (`ddpm_lite.guidance.guided_eps`, one call on 2B images) at w > 0 and against skipping
  the unconditional pass at w = 0; channels_last; inference_mode against autograd on.
- bench_whole_sample: the whole-sample cost of DDIM at 50 and 20 steps against 1000 ancestral
  steps, as the per-step time of each sampler (timed through `ancestral_sample` / `ddim_sample` on
  a short run) times its number of steps; the forward passes are counted by running the real
  samplers at full length on a stand-in model that costs nothing.
The fast paths and the plain ways they are compared with are in ddpm_lite.fastpaths.
"""
from __future__ import annotations

import copy
import statistics

import torch

from ..config import get_config
from ..fastpaths import (CL, CountingStub, channels_last_batch, channels_last_copy, count_flops,
                         default_optimizer_kind, optimizer_variant, reverse_step, two_pass_eps)
from ..forward import make_schedule
from ..guidance import guided_eps
from ..reverse import posterior_variance
from ..sampling import ancestral_sample, ddim_sample
from ..training import draw_batch, make_optimizer, train_step
from ..unet import build_model, count_parameters
from .timing import FLOP_COUNT_BATCH, BenchSizes, _max_diff, _round, group, matmul_fn, measure, timings


def bench_matmul(sizes: BenchSizes) -> dict:
    mm, flops = matmul_fn(sizes.matmul_n)
    r = timings(measure({"mm": mm}, sizes.repeats + 2, sizes.warmup, None, sizes.max_repeats + 2, sizes.budget_s)["mm"])
    return {"n": sizes.matmul_n, "flop": flops, **r, "gflop_per_s": _round(flops / r["median_s"] / 1e9)}


def bench_training(sizes: BenchSizes, preset: str, batch_size: int | None, images, labels) -> dict:
    """One train_step of a preset: contiguous (the package's path), channels_last and the matmul yardstick, back to back.

    The fraction of matmul FLOP/s is taken round by round (step and matmul timed in the same round)."""
    cfg = get_config(preset) if batch_size is None else get_config(preset, batch_size=batch_size)
    sched = make_schedule(cfg.schedule, cfg.T)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).train()
    small = cfg.replace(batch_size=FLOP_COUNT_BATCH)
    probe = copy.deepcopy(model)
    flops = count_flops(lambda: train_step(probe, make_optimizer(small, probe), sched,
                                           draw_batch(small, 0, images, labels), small))
    flops = flops * cfg.batch_size // FLOP_COUNT_BATCH
    model_cl = channels_last_copy(model)
    opt, opt_cl = make_optimizer(cfg, model), make_optimizer(cfg, model_cl)
    batch = draw_batch(cfg, 0, images, labels)
    batch_cl = channels_last_batch(batch)
    mm, mm_flops = matmul_fn(sizes.matmul_n)
    r = group(sizes, {"contiguous": lambda: train_step(model, opt, sched, batch, cfg),
                     "channels_last": lambda: train_step(model_cl, opt_cl, sched, batch_cl, cfg),
                     "matmul": mm}, "contiguous")
    t = r["contiguous"]["median_s"]
    # (FLOP/s of the step) / (FLOP/s of the matmul), both from the same round
    fraction = statistics.median((flops / ts) / (mm_flops / tm)
                                 for ts, tm in zip(r["contiguous"]["times_s"], r["matmul"]["times_s"]))
    return {"preset": preset, "model": cfg.model, "channels": list(cfg.channels), "attention": cfg.attention,
            "parameters": count_parameters(model), "batch_size": cfg.batch_size, "optimizer": cfg.optimizer,
            "gflop_per_step": _round(flops / 1e9), "gflop_per_image": _round(flops / cfg.batch_size / 1e9),
            "flop_count": f"FlopCounterMode over forward + backward at batch {FLOP_COUNT_BATCH}, scaled to the batch",
            "step": timings(r["contiguous"]), "images_per_s": _round(cfg.batch_size / t),
            "achieved_gflop_per_s": _round(flops / t / 1e9),
            "matmul_gflop_per_s": _round(mm_flops / r["matmul"]["median_s"] / 1e9),
            "matmul_times_s": r["matmul"]["times_s"], "fraction_of_matmul": _round(fraction, 3),
            "channels_last_step": timings(r["channels_last"]),
            "channels_last_images_per_s": _round(cfg.batch_size / r["channels_last"]["median_s"]),
            "channels_last_speedup": r["channels_last"]["speedup"]}


def bench_optimizer(sizes: BenchSizes, preset: str) -> dict:
    """The optimizer step alone (gradients filled in), as a for-loop, foreach and fused kernel."""
    cfg = get_config(preset)
    torch.manual_seed(0)
    model = build_model(cfg)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    opts = {kind: optimizer_variant(cfg, model, kind) for kind in ("for_loop", "foreach", "fused")}
    steps = sizes.optimizer_steps

    def run(opt):
        return lambda: [opt.step() for _ in range(steps)]
    r = group(sizes, {k: run(o) for k, o in opts.items()}, "for_loop")
    out = {"preset": preset, "optimizer": type(opts["for_loop"]).__name__, "parameters": count_parameters(model),
           "default_on_cpu": default_optimizer_kind(model)}
    for k in opts:
        out[k] = {"step_ms": _round(r[k]["median_s"] / steps * 1e3), "times_s": r[k]["times_s"],
                  **({"speedup": r[k]["speedup"]} if k != "for_loop" else {})}
    return out


def bench_sampling(sizes: BenchSizes, preset: str, batch: int) -> dict:
    """One reverse step: the paper's two passes vs batched guidance (w > 0) vs skipping at w = 0, and more."""
    cfg = get_config(preset)
    w = cfg.w if cfg.w > 0 else 1.0
    sched = make_schedule(cfg.schedule, cfg.T)
    var = posterior_variance(sched)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    model_cl = channels_last_copy(model)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((batch, 1, 28, 28), generator=g)
    x_cl = x.contiguous(memory_format=CL)
    y = torch.randint(10, (batch,), generator=g)
    t = torch.full((batch,), cfg.T // 2, dtype=torch.long)

    def step(eps_fn, m=model, xx=x, ww=w, grad=False):
        def fn():
            torch.manual_seed(2)   # the same z in every variant, so the outputs can be compared
            if grad:
                return reverse_step(eps_fn, m, sched, var, xx, t, y, ww).detach()
            with torch.inference_mode():
                return reverse_step(eps_fn, m, sched, var, xx, t, y, ww)
        return fn

    variants = {"two_pass": step(two_pass_eps), "batched": step(guided_eps),
                "two_pass_w0": step(two_pass_eps, ww=0.0), "skip_w0": step(guided_eps, ww=0.0),
                "batched_channels_last": step(guided_eps, m=model_cl, xx=x_cl),
                "batched_autograd_on": step(guided_eps, grad=True)}
    # each comparison is its own tight pair (baseline, compared): less time between the two sides
    # of a ratio than in one big group, so less room for another process's load to move it
    pairs = {"guidance_w": ("two_pass", "batched", "batched_over_two_pass"),
             "guidance_w0": ("two_pass_w0", "skip_w0", "skip_w0_over_two_pass_w0"),
             "channels_last": ("batched", "batched_channels_last", "channels_last_over_batched"),
             "inference_mode": ("batched_autograd_on", "batched", "inference_mode_over_autograd_on")}
    per_step, speedup, outputs = {}, {}, {}
    for pair, (base, fast, key) in pairs.items():
        r = measure({base: variants[base], fast: variants[fast]}, sizes.pair_repeats, sizes.warmup, base,
                    sizes.max_repeats, sizes.budget_s)
        per_step[pair] = {k: {**timings(v), "images_per_s": _round(batch / v["median_s"])} for k, v in r.items()}
        speedup[key] = r[fast]["speedup"]
        outputs.update({k: v["output"] for k, v in r.items()})
    with torch.inference_mode():
        fwd_flops = count_flops(lambda: model(x[:FLOP_COUNT_BATCH], t[:FLOP_COUNT_BATCH], y[:FLOP_COUNT_BATCH]))
    fwd_flops //= FLOP_COUNT_BATCH
    out = {"preset": preset, "model": cfg.model, "parameters": count_parameters(model), "batch": batch, "w": w,
           "forward_gflop_per_image": _round(fwd_flops / 1e9),
           "step": "one reverse step of Algorithm 2 (guided noise prediction, mean, added noise) at t = T/2",
           "per_step": per_step, "speedup": speedup,
           "max_abs_diff": {"batched_vs_two_pass": _max_diff(outputs["batched"], outputs["two_pass"]),
                            "skip_w0_vs_two_pass_w0": _max_diff(outputs["skip_w0"], outputs["two_pass_w0"]),
                            "channels_last_vs_contiguous": _max_diff(outputs["batched_channels_last"],
                                                                     outputs["batched"])}}
    out["whole_sample"] = bench_whole_sample(sizes, cfg, model, w)
    return out


def bench_whole_sample(sizes: BenchSizes, cfg, model, w: float) -> dict:
    """DDIM at 50 and 20 steps against 1000 ancestral steps: forward passes counted, time = per-step time x steps."""
    sched = make_schedule(cfg.schedule, cfg.T)
    batch, probe = sizes.whole_sample_batch, sizes.sampler_probe_steps
    y = torch.arange(batch) % 10
    counts = {}
    for name, run in {"ancestral_1000": lambda m: ancestral_sample(m, sched, y[:1], w),
                      "ddim_50": lambda m: ddim_sample(m, sched, y[:1], w, steps=50),
                      "ddim_20": lambda m: ddim_sample(m, sched, y[:1], w, steps=20)}.items():
        stub = CountingStub()
        run(stub)
        counts[name] = {"forward_calls": stub.calls, "images_through_network_per_image": stub.images}
    # per-step time through the package's samplers on a short run: an ancestral step's work does
    # not depend on T, so a `probe`-step schedule times the same step as the 1000-step one
    short = make_schedule(cfg.schedule, probe)
    # the two steps cost nearly the same, so the ratio needs more rounds than most to settle
    r = measure({"ancestral": lambda: ancestral_sample(model, short, y, w),
                 "ddim": lambda: ddim_sample(model, sched, y, w, steps=probe)},
                sizes.probe_repeats, sizes.warmup, None, sizes.max_repeats, sizes.budget_s)
    step_s = {"ancestral": r["ancestral"]["median_s"] / probe, "ddim": r["ddim"]["median_s"] / probe}
    out = {"method": f"estimated: seconds per image = (time of a {probe}-step run / {probe}) x steps / batch; "
                     "forward calls counted on full-length runs of the package's samplers",
           "batch": batch, "w": w, "per_step_s": {k: _round(v) for k, v in step_s.items()},
           "probe_runs": {k: timings(v) for k, v in r.items()},
           "ddim_step_cost_vs_ancestral_step": _round(step_s["ddim"] / step_s["ancestral"], 3)}
    anc_s = step_s["ancestral"] * cfg.T / batch
    for name, steps in (("ancestral_1000", cfg.T), ("ddim_50", 50), ("ddim_20", 20)):
        s = step_s["ancestral" if name.startswith("ancestral") else "ddim"] * steps / batch
        entry = {**counts[name], "steps": steps, "seconds_per_image": _round(s)}
        if name != "ancestral_1000":
            entry["fewer_forward_calls"] = _round(counts["ancestral_1000"]["forward_calls"] / counts[name]["forward_calls"], 3)
            entry["time_speedup"] = _round(anc_s / s, 3)
        out[name] = entry
    return out
