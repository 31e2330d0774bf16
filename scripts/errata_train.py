"""Measure the training-time defects of chapter 10: models trained with and without each, same budget.

    python scripts/errata_train.py [--iterations 1500] [--n 1000]

Trains the `quick` preset (CPU-scale: minutes on a 2-core CPU, not the paper's 100K iterations)
with each defect switched on, samples n images per model (DDIM 50, the preset's w), and scores
them (FID against the MNIST test set, IS, conditional accuracy). Runs live in runs/errata/ and
resume; each finished row is appended to results/errata_training.json.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ddpm_lite import errata, inception
from ddpm_lite.book import repo_root, results_dir
from ddpm_lite.checkpoint import load_model, resolve_model_file
from ddpm_lite.config import get_config
from ddpm_lite.experiments import balanced_labels
from ddpm_lite.forward import make_schedule
from ddpm_lite.io import provenance, read_json, sha256_file, write_json
from ddpm_lite.metrics import load_classifier
from ddpm_lite.sampling import generate
from ddpm_lite.training import train

import errata_eval  # same folder: shared scoring helpers

OUT = results_dir() / "errata_training.json"
RUNS = repo_root() / "runs" / "errata"

# (row name, training overrides, null label at sampling); the first row is the correct baseline
ROWS = [
    ("correct", dict(), "learned"),
    ("null label omitted at sampling", dict(), "omitted"),
    ("p_uncond = 0.5, per batch", dict(p_uncond=0.5, label_drop="per_batch"), "learned"),
    ("the published code: per batch, p = 0.5, null omitted", dict(p_uncond=0.5, label_drop="per_batch"), "omitted"),
    ("p_uncond = 0.5, per sample", dict(p_uncond=0.5), "learned"),
]


def run_name(overrides: dict) -> str:
    return "quick" + "".join(f"_{k}{v}" for k, v in sorted(overrides.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args(argv)
    results = read_json(OUT) if OUT.is_file() else {
        "what": "chapter 10: training-time defects, each trained with the same budget",
        "scale": f"CPU-scale: the quick preset (0.27M-parameter U-Net), {args.iterations} iterations at batch 64, "
                 f"{args.n} samples per row (DDIM 50 steps); not the paper's settings",
        "rows": []}
    done = {r["name"] for r in results["rows"]}
    classifier, net = load_classifier(), inception.fid_network("cpu")
    for name, overrides, null in ROWS:
        if name in done:
            print(f"{name}: done, skipped")
            continue
        t0 = time.time()
        # chapter 5's recipe, as the committed rows were trained (the quick preset moved on in chapter 12)
        cfg = get_config("quick", iterations=args.iterations, prediction="eps", lr_schedule="constant", warmup=0,
                         **overrides)
        run_dir = RUNS / run_name(overrides)
        train(cfg, run_dir, device="cpu", progress=False)
        model, cfg = load_model(run_dir)
        model = errata.sampling_model(model, cfg.replace(null_at_sampling=null))
        y = balanced_labels(args.n)
        with torch.inference_mode():
            x = generate(model, make_schedule(cfg.schedule, cfg.T), y, cfg.w, "ddim", 50, seed=0,
                         batch_size=100, progress=False)
        u = errata.export_images(x).squeeze(1).numpy()
        row = {"name": name, "overrides": overrides, "null_at_sampling": null, "config": cfg.to_dict(),
               "model_sha256": sha256_file(resolve_model_file(run_dir)), "w": cfg.w, "sampler": "ddim", "steps": 50,
               "sample_seed": 0, "n": args.n, **errata_eval.scores(u, y.numpy(), classifier, net),
               "seconds": round(time.time() - t0, 1), "provenance": provenance("cpu")}
        results["rows"].append(row)
        write_json(OUT, results)
        print(f"{name}: FID {row['fid']:.2f}  IS {row['inception_score']['mean']:.3f}  "
              f"acc {row['conditional_accuracy']:.3f}  ({row['seconds']:.0f} s)")
    results["real_fid_same_n"] = errata_eval.real_fid_same_n(args.n, net)
    write_json(OUT, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
