"""Speed benchmark: training, sampling and evaluation, each figure beside its baseline as a ratio.

    python scripts/bench.py                  # default sizes: about 4 minutes on a busy 2-core CPU
    python scripts/bench.py --quick          # tiny sizes, one repeat: a smoke test (under a minute)
    python scripts/bench.py --note "..."     # e.g. record that another process shared the CPU

Writes results/bench.json (or --out) with the provenance block and prints a table.

How it times. A shared machine is noisy, so every comparison is a group of variants measured
back to back: each variant runs once to warm up, then the variants take turns for several
rounds (A, B, then B, A, ...: the order is shuffled from round to round). A variant's time is the median over rounds; a ratio is the median over
rounds of (baseline time / variant time) within the same round, so a burst of load from another
process affects both sides of a ratio alike. Inference is timed under torch.inference_mode.

What it measures.
- machine: fp32 matrix-multiply FLOP/s (torch.mm of two 2048 x 2048 matrices), the yardstick.
- training: one `ddpm_lite.training.train_step` on a `draw_batch` batch, for the 'paper',
  'quick' and 'best' presets at their batch sizes (the paper's U-Net at batch 32): images/s and
  the FLOP/s it reaches (FLOPs of forward + backward counted with FlopCounterMode) as a fraction
  of the matrix-multiply FLOP/s, the matmul being timed in the same rounds as the step.
- sampling: one reverse step of Algorithm 2, images/s, for the paper U-Net and the quick model:
  guidance the way the paper's code does it (two separate forward passes, the unconditional one
  even at w = 0) against our batched guidance (`ddpm_lite.guidance.guided_eps`, one call on 2B
  images) at w > 0 and against skipping the unconditional pass at w = 0. The whole-sample cost of
  DDIM at 50 and 20 steps against 1000 ancestral steps is the per-step time of each sampler
  (timed through `ancestral_sample` / `ddim_sample` on a short run) times its number of steps;
  the number of forward passes is counted by running the real samplers at full length on a
  stand-in model that costs nothing.
- evaluation: the IS classifier batched (1000 images a call) against one image at a time, and
  Inception pool3 features with and without channels_last, when the package provides them.
- fast paths: channels_last memory format for each U-Net (training step and forward pass), and
  Adam/AdamW as a for-loop (PyTorch's default on the CPU) against foreach and fused kernels.

The fast paths and the plain ways they are compared with are in ddpm_lite.fastpaths, where
tests/test_fastpaths.py checks that each pair computes the same numbers.
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from ddpm_lite.book import results_dir  # noqa: E402
from ddpm_lite.config import get_config  # noqa: E402
from ddpm_lite.fastpaths import (CL, CountingStub, benchmark_images, channels_last_batch,  # noqa: E402
                                 channels_last_copy, count_flops, default_optimizer_kind, optimizer_variant,
                                 reverse_step, two_pass_eps)
from ddpm_lite.forward import make_schedule  # noqa: E402
from ddpm_lite.guidance import guided_eps  # noqa: E402
from ddpm_lite.io import provenance, write_json  # noqa: E402
from ddpm_lite.reverse import posterior_variance  # noqa: E402
from ddpm_lite.sampling import ancestral_sample, ddim_sample  # noqa: E402
from ddpm_lite.training import draw_batch, make_optimizer, train_step  # noqa: E402
from ddpm_lite.unet import build_model, count_parameters  # noqa: E402

FLOP_COUNT_BATCH = 2   # FLOPs are counted at this batch and scaled: every counted op is per image

@dataclass(frozen=True)
class BenchSizes:
    """How big and how often: the default run and the --quick smoke test."""
    matmul_n: int = 2048
    train_batch: tuple = (("paper", 32), ("quick", None), ("best", None))   # None: the preset's batch size
    sample_batch: tuple = (("paper", 16), ("quick", 32))
    whole_sample_batch: int = 8
    sampler_probe_steps: int = 5
    classifier_batched: int = 1000
    classifier_single: int = 200
    inception_n: int = 50         # one batch of the evaluation's size
    inception_fid_n: int = 200    # images whose FID is computed with both backends
    inception_compile: bool = True
    optimizer_steps: int = 5
    warmup: int = 1
    repeats: int = 3          # rounds of every comparison, at least
    pair_repeats: int = 5     # rounds of each sampling comparison (two variants each), at least
    probe_repeats: int = 5    # rounds of the DDIM-vs-ancestral step comparison, at least
    max_repeats: int = 9      # more rounds while a comparison has taken less than budget_s
    budget_s: float = 6.0


SIZES = {
    "default": BenchSizes(),
    "quick": BenchSizes(matmul_n=512, train_batch=(("paper", 2), ("quick", 2), ("best", 2)),
                        sample_batch=(("paper", 2), ("quick", 2)), whole_sample_batch=1, sampler_probe_steps=1,
                        classifier_batched=50, classifier_single=5, inception_n=2, inception_fid_n=0,
                        inception_compile=False, optimizer_steps=1,
                        warmup=0, repeats=1, pair_repeats=1, probe_repeats=1, max_repeats=1, budget_s=0.0),
}

# The targets the book states; printed as observations, never asserted.
TARGETS = {
    "paper_step_fraction_of_matmul": 0.65,
    "skip_w0_speedup_over_two_pass": 1.9,
    "ddim50_fewer_than_ancestral1000": 15.0,
    "batched_classifier_speedup": 50.0,
    "fid_features_speedup_over_eager": 2.0,
    "fid_features_max_abs_diff": 1e-4,
}


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
def _round(v, digits: int = 4):
    """Round to `digits` significant figures (keeps the JSON readable)."""
    if v is None or v == 0 or not isinstance(v, float):
        return v
    return float(f"{v:.{digits}g}")


def measure(variants: dict, repeats: int, warmup: int = 1, baseline: str | None = None,
            max_repeats: int | None = None, budget_s: float = 0.0) -> dict:
    """Time several zero-argument callables back to back, interleaved round by round.

    Runs `repeats` rounds, then more (up to `max_repeats`) while the rounds so far took less than
    `budget_s` seconds: cheap measurements get more rounds. Returns {name: {"median_s", "times_s",
    "output"}} ("output": the variant's last return value) and, when `baseline` is given, each
    other variant's "speedup": the median over rounds of baseline time / variant time in the same round.
    """
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in variants}
    outputs = {}
    order = list(variants)
    shuffle = random.Random(0).shuffle
    t0_all, rounds = time.perf_counter(), 0
    while rounds < repeats or (rounds < (max_repeats or repeats) and time.perf_counter() - t0_all < budget_s):
        for name in order:
            t0 = time.perf_counter()
            outputs[name] = variants[name]()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
        shuffle(order)   # no variant always goes first (or last) in a round
    out = {name: {"median_s": _round(statistics.median(ts)), "times_s": [_round(t) for t in ts],
                  "output": outputs[name]} for name, ts in times.items()}
    if baseline is not None:
        for name, ts in times.items():
            if name != baseline:
                out[name]["speedup"] = _round(statistics.median(b / v for b, v in zip(times[baseline], ts)), 3)
    return out


def timings(r: dict) -> dict:
    """A measure() entry without its output (what goes into the JSON)."""
    return {k: v for k, v in r.items() if k != "output"}


def loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------
def group(sizes: BenchSizes, variants: dict, baseline: str | None = None) -> dict:
    return measure(variants, sizes.repeats, sizes.warmup, baseline, sizes.max_repeats, sizes.budget_s)


def matmul_fn(n: int):
    """The yardstick: a zero-argument fp32 n x n x n matrix multiply, and its FLOP count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return (lambda: torch.mm(a, b)), 2 * n ** 3


def fma_peak(threads: int | None = None, cpuinfo: str | None = None) -> dict:
    """The CPU's theoretical fp32 peak: cores x clock x FLOP per cycle, from /proc/cpuinfo.

    FLOP per cycle per core = 2 (a fused multiply-add) x fp32 lanes of the widest FMA vector the flags
    name (16 for AVX-512, 8 for AVX2 with FMA, 4 for SSE) x 2 FMA units (usual for x86 server cores;
    an assumption, said in the result). The clock is the one /proc/cpuinfo reports; a core that boosts
    above it can exceed this "peak", so a share above 100% means the clock was higher, not that FLOPs
    came for free. None where the information is missing (not Linux, no clock)."""
    import re
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {"gflop_per_s": None, "why": "no /proc/cpuinfo"}
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.M)]
    flags = set(next(iter(re.findall(r"^flags\s*:\s*(.*)$", cpuinfo, re.M)), "").split())
    if not mhz:
        return {"gflop_per_s": None, "why": "/proc/cpuinfo reports no clock"}
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else 4
    cores = threads or torch.get_num_threads()
    per_cycle = 2 * lanes * 2
    return {"cores": cores, "mhz": round(max(mhz), 1), "fp32_lanes": lanes, "fma_units_assumed": 2,
            "flop_per_cycle_per_core": per_cycle,
            "gflop_per_s": _round(cores * max(mhz) * 1e6 * per_cycle / 1e9),
            "how": "cores (torch threads) x reported clock x 2 FLOP per FMA x fp32 lanes x 2 FMA units (assumed)"}


def add_fma_peak(res: dict) -> None:
    """Put the theoretical peak in `machine` and each training row's share of it."""
    peak = res["machine"]["fma_peak"] = fma_peak(res.get("settings", {}).get("threads"))
    for tr in res["training"].values():
        tr["fraction_of_fma_peak"] = (_round(tr["achieved_gflop_per_s"] / peak["gflop_per_s"], 3)
                                      if peak["gflop_per_s"] else None)


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


def _max_diff(a, b) -> float:
    return _round(float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max()), 3)


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


def bench_classifier(sizes: BenchSizes) -> dict:
    try:
        from ddpm_lite.metrics import class_probabilities, load_classifier
        model = load_classifier("cpu")
    except Exception as e:
        return {"skipped": f"no IS classifier available ({type(e).__name__}: {str(e)[:160]})"}
    n_batched, n_single = sizes.classifier_batched, sizes.classifier_single
    images, _, source = benchmark_images(float_images=False)
    images = images[:n_batched]
    model_cl = channels_last_copy(model)
    r = group(sizes, {"one_at_a_time": lambda: class_probabilities(model, images[:n_single], batch_size=1),
                     "batched": lambda: class_probabilities(model, images, batch_size=n_batched),
                     "batched_channels_last": lambda: class_probabilities(model_cl, images, batch_size=n_batched)})
    n = {"one_at_a_time": n_single, "batched": n_batched, "batched_channels_last": n_batched}

    def paired(a, b):   # median over rounds of the throughput ratio b / a
        return _round(statistics.median((n[b] / tb) / (n[a] / ta) for ta, tb in zip(r[a]["times_s"], r[b]["times_s"])), 3)
    return {"images": source, "n_batched": n_batched, "n_one_at_a_time": n_single,
            **{k: {**timings(v), "images_per_s": _round(n[k] / v["median_s"])} for k, v in r.items()},
            "batched_speedup": paired("one_at_a_time", "batched"),
            "channels_last_speedup_over_batched": paired("batched", "batched_channels_last"),
            "max_abs_diff": {"batched_vs_one_at_a_time": _max_diff(r["batched"]["output"][:n_single],
                                                                   r["one_at_a_time"]["output"]),
                             "channels_last_vs_contiguous": _max_diff(r["batched_channels_last"]["output"],
                                                                      r["batched"]["output"])}}


def _onnxruntime_fn(net, x):
    """pool3 through ONNX Runtime (exported once to a temporary file), or None when it is not installed."""
    import importlib.util
    import tempfile
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return None
    import onnxruntime as ort
    from ddpm_lite.inception_openvino import _Pool3
    path = Path(tempfile.mkdtemp()) / "pool3.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Pool3(net).eval(), (net.to_rgb01(x[:2]).contiguous(),), str(path), input_names=["x"],
                          output_names=["f"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda: torch.from_numpy(session.run(None, {"x": net.to_rgb01(x).contiguous().numpy()})[0])


def bench_inception(sizes: BenchSizes) -> dict:
    """FID features: the eager path against its variants and the CPU runtimes, on the same images.

    The eager channels_last network (what `ddpm-lite evaluate` used before the OpenVINO backend) is
    the baseline; every variant's pool3 features are compared with it (max abs difference), and the
    FID of `inception_fid_n` validation images against the test set is computed from both the
    baseline's and the package's default backend's features.
    """
    try:
        from ddpm_lite import inception
        net = inception.fid_network("cpu", backend="eager")
        default = inception.fid_network("cpu")
    except Exception as e:
        return {"skipped": f"no FID Inception network available ({type(e).__name__}: {str(e)[:160]})"}
    n = sizes.inception_n
    images, _, source = benchmark_images(float_images=False)
    x = images[:n]
    plain = copy.deepcopy(net.inception).to(memory_format=torch.contiguous_format)

    def eager():
        with torch.inference_mode():
            return net(x)                                   # the eager path: channels_last

    def contiguous():
        with torch.inference_mode():
            return plain(net.to_rgb01(x).contiguous())[0].flatten(1)

    def eager_small_batches():
        with torch.inference_mode():
            return torch.cat([net(x[i:i + 10]) for i in range(0, n, 10)])

    variants = {"eager_channels_last": eager, "eager_contiguous": contiguous, "eager_batches_of_10": eager_small_batches}
    if default.backend != "eager":
        variants[f"{default.backend}_backend"] = lambda: default(x)
    ort_fn = _onnxruntime_fn(net, x) if n > 1 else None
    if ort_fn is not None:
        variants["onnxruntime"] = ort_fn
    if sizes.inception_compile:
        compiled = torch.compile(net)
        def compiled_fn():
            with torch.inference_mode():
                return compiled(x)
        variants["torch_compile"] = compiled_fn
    t0 = time.perf_counter()
    # Inception is the slowest thing here: the minimum number of rounds, no extra ones
    r = measure(variants, max(1, sizes.repeats - 1), sizes.warmup, "eager_channels_last")
    with torch.inference_mode():
        flops = count_flops(lambda: net(x[:1]))
    out = {"images": source, "n": n, "threads": torch.get_num_threads(), "default_backend": default.backend,
           "gflop_per_image": _round(flops / 1e9), "flop_count": "FlopCounterMode over one forward pass (a multiply-add is 2)",
           **{k: {**timings(v), "images_per_s": _round(n / v["median_s"]),
                  "max_abs_diff_vs_eager": _max_diff(v["output"], r["eager_channels_last"]["output"])}
              for k, v in r.items()},
           "seconds": round(time.perf_counter() - t0, 1)}
    out["channels_last_speedup"] = _round(1 / r["eager_contiguous"]["speedup"], 3)
    fastest = max((k for k in r if k != "eager_channels_last"), key=lambda k: r[k]["speedup"])
    out["fastest"] = {"variant": fastest, "speedup_over_eager": r[fastest]["speedup"]}
    if sizes.inception_fid_n > 1:
        from ddpm_lite.data import load_mnist
        valid = load_mnist("valid")[0][:sizes.inception_fid_n]
        ref = inception.reference_statistics("test", net, progress=False)
        fids = {}
        for name, model in (("eager", net), (default.backend, default)):
            feats = inception.pool3_features(valid, model, progress=False)
            fids[name] = inception.frechet_distance(inception.statistics_from_features(feats), ref)
        out["fid_check"] = {"n": len(valid), "images": "MNIST valid split, first n, against the test set",
                            "fid": fids, "abs_diff": abs(fids["eager"] - fids[default.backend])}
    return out


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def _fmt(v, unit=""):
    if v is None:
        return "-"
    if abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.3g}"
    return f"{s} {unit}".strip()


def table_rows(res: dict) -> list[tuple[str, str, str, str]]:
    """(measurement, baseline, compared, ratio) rows for the printed table."""
    rows = []
    mm = res["machine"]["matmul"]
    n = mm["n"]
    rows.append((f"fp32 matmul {n}x{n}x{n} (the yardstick)", "", _fmt(mm["gflop_per_s"], "GFLOP/s"), ""))
    for name, tr in res["training"].items():
        rows.append((f"train step {name}, batch {tr['batch_size']}: FLOP/s vs matmul",
                     _fmt(tr["matmul_gflop_per_s"], "GFLOP/s"),
                     f"{_fmt(tr['achieved_gflop_per_s'], 'GFLOP/s')} ({_fmt(tr['images_per_s'], 'img/s')})",
                     f"{tr['fraction_of_matmul']:.0%}"))
        peak = res["machine"].get("fma_peak", {}).get("gflop_per_s")
        if peak and tr.get("fraction_of_fma_peak") is not None:
            rows.append((f"train step {name}: FLOP/s vs the FMA peak", _fmt(peak, "GFLOP/s"),
                         _fmt(tr["achieved_gflop_per_s"], "GFLOP/s"), f"{tr['fraction_of_fma_peak']:.0%}"))
        rows.append((f"train step {name}: contiguous -> channels_last", _fmt(tr["images_per_s"], "img/s"),
                     _fmt(tr["channels_last_images_per_s"], "img/s"), f"{tr['channels_last_speedup']:.2f}x"))
    for name, sp in res["sampling"].items():
        ps, sx = sp["per_step"], sp["speedup"]
        ips = lambda pair, k: _fmt(ps[pair][k]["images_per_s"], "img/s")   # noqa: E731
        rows.append((f"reverse step {name}, B={sp['batch']}, w={sp['w']}: two passes -> batched",
                     ips("guidance_w", "two_pass"), ips("guidance_w", "batched"), f"{sx['batched_over_two_pass']:.2f}x"))
        rows.append((f"reverse step {name}, w=0: two passes -> skip uncond. pass", ips("guidance_w0", "two_pass_w0"),
                     ips("guidance_w0", "skip_w0"), f"{sx['skip_w0_over_two_pass_w0']:.2f}x"))
        rows.append((f"reverse step {name}: batched -> + channels_last", ips("channels_last", "batched"),
                     ips("channels_last", "batched_channels_last"), f"{sx['channels_last_over_batched']:.2f}x"))
        rows.append((f"reverse step {name}: autograd on -> inference_mode", ips("inference_mode", "batched_autograd_on"),
                     ips("inference_mode", "batched"), f"{sx['inference_mode_over_autograd_on']:.2f}x"))
        ws = sp["whole_sample"]
        anc = ws["ancestral_1000"]
        for k in ("ddim_50", "ddim_20"):
            rows.append((f"whole sample {name}: 1000 ancestral -> {k.replace('_', '-')} (estimated)",
                         f"{_fmt(anc['seconds_per_image'], 's/img')}, {anc['forward_calls']} calls",
                         f"{_fmt(ws[k]['seconds_per_image'], 's/img')}, {ws[k]['forward_calls']} calls",
                         f"{ws[k]['time_speedup']:.1f}x"))
    c = res["evaluation"]["classifier"]
    if "skipped" in c:
        rows.append(("IS classifier", "skipped", "", ""))
    else:
        rows.append((f"IS classifier: 1 image a call -> {c['n_batched']} a call",
                     _fmt(c["one_at_a_time"]["images_per_s"], "img/s"),
                     _fmt(c["batched"]["images_per_s"], "img/s"), f"{c['batched_speedup']:.0f}x"))
        rows.append(("IS classifier batched: contiguous -> channels_last", _fmt(c["batched"]["images_per_s"], "img/s"),
                     _fmt(c["batched_channels_last"]["images_per_s"], "img/s"),
                     f"{c['channels_last_speedup_over_batched']:.2f}x"))
    inc = res["evaluation"]["inception"]
    if "skipped" in inc:
        rows.append(("Inception pool3", "skipped", "", ""))
    else:
        base = inc["eager_channels_last"]
        for k, v in inc.items():
            if isinstance(v, dict) and "speedup" in v:
                rows.append((f"FID features, n={inc['n']}: eager -> {k} (max diff {v['max_abs_diff_vs_eager']:.1e})",
                             _fmt(base["images_per_s"], "img/s"), _fmt(v["images_per_s"], "img/s"),
                             f"{v['speedup']:.2f}x"))
        if "fid_check" in inc:
            fc = inc["fid_check"]
            rows.append((f"FID of {fc['n']} real digits: eager vs {inc['default_backend']} features", "", "",
                         f"|diff| {fc['abs_diff']:.1e}"))
    for name, o in res["fast_paths"]["optimizer"].items():
        for k in ("foreach", "fused"):
            rows.append((f"{o['optimizer']} step, {name} model: for-loop -> {k}", _fmt(o["for_loop"]["step_ms"], "ms"),
                         _fmt(o[k]["step_ms"], "ms"), f"{o[k]['speedup']:.2f}x"))
    return rows


def observations(res: dict) -> list[dict]:
    """The book's speed targets, each with what this run observed (never asserted)."""
    obs = []
    paper = res["training"]["paper"]
    goal = TARGETS["paper_step_fraction_of_matmul"]
    obs.append({"target": f"paper U-Net training step reaches >= {goal:.0%} of the matmul FLOP/s",
                "observed": paper["fraction_of_matmul"], "met": paper["fraction_of_matmul"] >= goal})
    for name, sp in res["sampling"].items():
        s, goal = sp["speedup"]["skip_w0_over_two_pass_w0"], TARGETS["skip_w0_speedup_over_two_pass"]
        obs.append({"target": f"{name}: at w = 0, skipping the unconditional pass is >= {goal}x the two-pass way",
                    "observed": s, "met": s >= goal})
        d, goal = sp["whole_sample"]["ddim_50"], TARGETS["ddim50_fewer_than_ancestral1000"]
        obs.append({"target": f"{name}: DDIM-50 needs >= {goal:.0f}x fewer forward passes and less time "
                              "than 1000 ancestral steps",
                    "observed": {"fewer_forward_calls": d["fewer_forward_calls"], "time_speedup": d["time_speedup"]},
                    "met": min(d["fewer_forward_calls"], d["time_speedup"]) >= goal})
    c = res["evaluation"]["classifier"]
    if "skipped" not in c:
        goal = TARGETS["batched_classifier_speedup"]
        obs.append({"target": f"the IS classifier batched is >= {goal:.0f}x faster than one image at a time",
                    "observed": c["batched_speedup"], "met": c["batched_speedup"] >= goal})
    inc = res["evaluation"]["inception"]
    if "skipped" not in inc and inc["default_backend"] != "eager":
        v = inc[f"{inc['default_backend']}_backend"]
        goal, tol = TARGETS["fid_features_speedup_over_eager"], TARGETS["fid_features_max_abs_diff"]
        obs.append({"target": f"FID features through the default backend ({inc['default_backend']}) are >= {goal:g}x "
                              f"the eager path, within {tol:g} (max abs)",
                    "observed": {"speedup": v["speedup"], "max_abs_diff": v["max_abs_diff_vs_eager"],
                                 "fastest_variant": inc["fastest"]},
                    "met": v["speedup"] >= goal and v["max_abs_diff_vs_eager"] <= tol})
    return obs


def print_report(res: dict) -> None:
    rows = table_rows(res)
    head = ("measurement", "baseline", "compared", "ratio")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    print(line)
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print(line)
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print(line)
    print("ratio: median over rounds of baseline time / compared time, measured back to back (above 1: the\n"
          "compared way is faster); train-step FLOP/s rows: achieved FLOP/s as a fraction of the matmul's.")
    print("Targets (observations, not checks):")
    for o in res["targets"]:
        print(f"  - {o['target']}: observed {o['observed']} ({'at or above' if o['met'] else 'below'} the target)")
    for note in res["notes"]:
        print(f"note: {note}")


# ---------------------------------------------------------------------------------------------
def _earlier_run(out: Path) -> dict | None:
    """The full run that an `--only` option adds to, or None (with the error printed) when there is none."""
    import json
    if not out.is_file():
        print(f"error: --only needs an earlier full run in {out}; run `make bench` first.", file=sys.stderr)
        return None
    return json.loads(out.read_text())


def remeasure_inception(sizes: BenchSizes, out: Path, notes: list) -> int:
    """`--only inception`: the FID-features section measured again, written into an existing results file."""
    res = _earlier_run(out)
    if res is None:
        return 2
    load_start = loadavg()
    inc = bench_inception(sizes)
    inc["provenance"] = provenance("cpu", script="scripts/bench.py --only inception", loadavg_1min_start=load_start,
                                   notes=list(notes))
    res["evaluation"]["inception"] = inc
    res["targets"] = observations(res)
    res["notes"] = [n for n in res.get("notes", []) if not n.startswith("evaluation.inception:")] + [
        "evaluation.inception: re-measured by `scripts/bench.py --only inception` (its own provenance block); "
        "every other section comes from the full run in the top-level provenance"]
    write_json(out, res)
    print_report(res)
    return 0


def add_peak_to(out: Path) -> int:
    """`--only peak`: the theoretical FMA peak of this CPU added to an existing results file."""
    res = _earlier_run(out)
    if res is None:
        return 2
    add_fma_peak(res)
    res["machine"]["fma_peak"]["provenance"] = provenance("cpu", script="scripts/bench.py --only peak")
    res["notes"] = [n for n in res.get("notes", []) if not n.startswith("machine.fma_peak:")] + [
        "machine.fma_peak: added by `scripts/bench.py --only peak` from /proc/cpuinfo (its own provenance block)"]
    write_json(out, res)
    print_report(res)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and one round: a smoke test, not a measurement")
    p.add_argument("--out", type=Path, default=results_dir() / "bench.json", help="JSON file to write")
    p.add_argument("--note", action="append", default=[],
                   help="a note to keep in the JSON (repeatable), e.g. 'measured while another process was training'")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--only", choices=["inception", "peak"],
                   help="re-measure one section and keep the rest of --out as it is (its provenance says when); "
                        "'peak' adds the CPU's theoretical FMA peak, read from /proc/cpuinfo, measuring nothing")
    args = p.parse_args(argv)
    sizes = SIZES["quick" if args.quick else "default"]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.only == "peak":
        return add_peak_to(args.out)
    if args.only:
        return remeasure_inception(sizes, args.out, args.note)
    t_start, cpu_start, load_start = time.time(), time.process_time(), loadavg()
    torch.manual_seed(0)

    def log(msg):
        print(f"[{time.time() - t_start:6.1f} s] {msg}", flush=True)

    images, labels, source = benchmark_images(float_images=True)
    res = {"settings": {"plan": "quick" if args.quick else "default", **asdict(sizes),
                        "threads": torch.get_num_threads(), "training_images": source}}
    log("matrix multiply")
    res["machine"] = {"matmul": bench_matmul(sizes)}
    res["training"] = {}
    for preset, batch in sizes.train_batch:
        log(f"training step: {preset}")
        res["training"][preset] = bench_training(sizes, preset, batch, images, labels)
    res["sampling"] = {}
    for preset, batch in sizes.sample_batch:
        log(f"sampling: {preset}")
        res["sampling"][preset] = bench_sampling(sizes, preset, batch)
    log("evaluation: IS classifier")
    res["evaluation"] = {"classifier": bench_classifier(sizes)}
    log("evaluation: Inception pool3")
    res["evaluation"]["inception"] = bench_inception(sizes)
    log("optimizer kernels")
    res["fast_paths"] = {"optimizer": {}}
    for preset, _ in sizes.train_batch:
        o = bench_optimizer(sizes, preset)
        o["for_loop_share_of_train_step"] = _round(o["for_loop"]["step_ms"] / 1e3
                                                   / res["training"][preset]["step"]["median_s"], 3)
        res["fast_paths"]["optimizer"][preset] = o
    res["fast_paths"]["see_also"] = ("channels_last: training.*.channels_last_speedup, "
                                     "sampling.*.speedup.channels_last_over_batched, evaluation.*")
    add_fma_peak(res)
    res["targets"] = observations(res)
    notes = list(args.note)
    cores = os.cpu_count() or 1
    if load_start is not None and load_start > 0.75 * cores:
        notes.append(f"the 1-minute load average was {load_start:.1f} on {cores} cores when the run started: "
                     "other processes shared the CPU, so absolute rates are low and noisy; each ratio compares "
                     "variants measured back to back in the same rounds")
    notes += [f"{k}: {v['skipped']}" for k, v in res["evaluation"].items() if "skipped" in v]
    if args.quick:
        notes.append("--quick: tiny sizes and one round; a smoke test, not a measurement")
    res["notes"] = notes
    res["run"] = {"seconds": round(time.time() - t_start, 1), "cpu_seconds": round(time.process_time() - cpu_start, 1),
                  "loadavg_1min_start": load_start,
                  "loadavg_1min_end": loadavg()}
    res = {"provenance": provenance("cpu", script="scripts/bench.py"), **res}
    write_json(args.out, res)
    print_report(res)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
