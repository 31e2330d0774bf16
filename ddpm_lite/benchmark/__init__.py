"""The speed benchmark behind `make bench` (scripts/bench.py): training, sampling and evaluation.

Plumbing module (hand-written). scripts/bench.py is only its command line; the measurements live
here, one idea a module:
- timing      sizes and targets, interleaved rounds (measure), paired ratios, the matmul and FMA yardsticks
- cases       the matrix multiply, training steps, optimizer kernels, reverse steps and whole samples
- eval_cases  the IS classifier and the FID's Inception features
- report      the printed table and the book's targets as observations

Everything is importable from here, e.g. `from ddpm_lite.benchmark import measure, SIZES`.
"""
from .cases import bench_matmul, bench_optimizer, bench_sampling, bench_training, bench_whole_sample
from .eval_cases import bench_classifier, bench_inception
from .report import observations, print_report, table_rows
from .timing import (FLOP_COUNT_BATCH, SIZES, TARGETS, BenchSizes, add_fma_peak, fma_peak, group, loadavg,
                     matmul_fn, measure, timings)

__all__ = ["BenchSizes", "SIZES", "TARGETS", "FLOP_COUNT_BATCH", "measure", "timings", "loadavg", "group",
           "matmul_fn", "fma_peak", "add_fma_peak", "bench_matmul", "bench_training", "bench_optimizer",
           "bench_sampling", "bench_whole_sample", "bench_classifier", "bench_inception", "table_rows",
           "observations", "print_report"]
