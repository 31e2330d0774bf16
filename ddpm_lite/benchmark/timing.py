"""How the benchmark times: sizes, interleaved rounds, medians and paired ratios, and the yardsticks.

Plumbing module (hand-written). A shared machine is noisy, so every comparison is a group of
variants measured back to back (`measure`): each variant runs once to warm up, then the variants
take turns for several rounds (A, B, then B, A, ...: the order is shuffled from round to round).
A variant's time is the median over rounds; a ratio is the median over rounds of (baseline time /
variant time) within the same round, so a burst of load from another process affects both sides
of a ratio alike. The yardsticks: fp32 matrix-multiply FLOP/s (`matmul_fn`), and the CPU's
theoretical FMA peak read from /proc/cpuinfo (`fma_peak`). `BenchSizes` says how big and how
often (`SIZES`: the default run and the --quick smoke test of scripts/bench.py); `TARGETS` are
the speeds the book states, printed as observations, never asserted.
"""
from __future__ import annotations

import os
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

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
# Yardsticks
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


def _max_diff(a, b) -> float:
    return _round(float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max()), 3)
