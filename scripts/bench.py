"""Speed benchmark: training, sampling and evaluation, each figure beside its baseline as a ratio.

    python scripts/bench.py                  # default sizes: about 4 minutes on a busy 2-core CPU
    python scripts/bench.py --quick          # tiny sizes, one repeat: a smoke test (under a minute)
    python scripts/bench.py --note "..."     # e.g. record that another process shared the CPU

Writes results/bench.json (or --out) with the provenance block and prints a table.

This file is the command line only. How it times (interleaved rounds, medians, paired ratios)
and what it measures are in the package, ddpm_lite.benchmark: `timing` (the rounds and the
matmul and FMA-peak yardsticks), `cases` (training steps, optimizer kernels, reverse steps and
whole samples), `eval_cases` (the IS classifier and the Inception features) and `report` (the
table and the book's targets, observed, never asserted). Inference is timed under
torch.inference_mode.

The fast paths and the plain ways they are compared with are in ddpm_lite.fastpaths, where
tests/test_fastpaths.py checks that each pair computes the same numbers.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from ddpm_lite.benchmark import (SIZES, BenchSizes, add_fma_peak, bench_classifier, bench_inception,  # noqa: E402
                                 bench_matmul, bench_optimizer, bench_sampling, bench_training, loadavg,
                                 observations, print_report)
from ddpm_lite.benchmark.timing import _round  # noqa: E402
from ddpm_lite.book import results_dir  # noqa: E402
from ddpm_lite.fastpaths import benchmark_images  # noqa: E402
from ddpm_lite.io import provenance, write_json  # noqa: E402


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
