"""FID of the shipped model against the number of sampling steps, through `ddpm-lite sample` and `evaluate`.

    python scripts/steps_sweep.py [--n 500] [--w 2]

For each sampler setting (DDIM 10, 20, 50, 100 steps, then ancestral sampling with all T = 1000
steps) it draws n images with `ddpm-lite sample chapter5` into runs/steps/, scores them with
`ddpm-lite evaluate`, and appends the row to results/steps_sweep.json together with the real-data
FID at the same n (the first n MNIST validation images against the test set, the same comparison
the samples get). Finished rows are skipped, so the script resumes.
"""
from __future__ import annotations

import argparse
import time

from ddpm_lite import inception
from ddpm_lite.book import repo_root, results_dir
from ddpm_lite.cli import main as cli
from ddpm_lite.io import provenance, read_json, write_json

import errata_eval  # same folder: the real-data row at the same n

OUT = results_dir() / "steps_sweep.json"
SETTINGS = [("ddim", 10), ("ddim", 20), ("ddim", 50), ("ddim", 100), ("ancestral", 1000)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--w", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=100)
    args = ap.parse_args(argv)
    results = read_json(OUT) if OUT.is_file() else {
        "what": "FID, IS and conditional accuracy of the shipped model against the number of sampling steps",
        "scale": f"CPU-scale: n = {args.n} images per row instead of the protocol's 10,000 (1000-step "
                 "sampling of 10,000 images needs a GPU); compare each FID with the real-data FID at the same n",
        "n": args.n, "w": args.w, "seed": 0, "model": "chapter5", "rows": [],
        "real_fid_same_n": errata_eval.real_fid_same_n(args.n, inception.fid_network("cpu"))}
    done = {(r["sampler"], r["steps"]) for r in results["rows"]}
    for sampler, steps in SETTINGS:
        if (sampler, steps) in done:
            continue
        out = repo_root() / "runs" / "steps" / f"{sampler}{steps}_w{args.w:g}_n{args.n}_seed0.npz"
        t0 = time.time()
        if not out.is_file():
            cli(["sample", "chapter5", "--n", str(args.n), "--w", str(args.w), "--sampler", sampler,
                 "--steps", str(steps), "--seed", "0", "--batch-size", str(args.batch_size),
                 "--out", str(out), "--device", "cpu", "--no-progress"])
        sample_seconds = time.time() - t0
        cli(["evaluate", str(out), "--device", "cpu"])
        ev = read_json(out.with_suffix(".eval.json"))
        results["rows"].append({
            "sampler": sampler, "steps": steps, "sample_seconds": round(sample_seconds, 1),
            "fid": ev["fid"]["value"], "inception_score": ev["inception_score"],
            "conditional_accuracy": ev["conditional_accuracy"]["overall"],
            "samples": {"file": str(out.relative_to(repo_root())), "sha256": ev["input"]["sha256"],
                        "batch_size": args.batch_size},
            "provenance": provenance("cpu")})
        write_json(OUT, results)
        print(f"{sampler} {steps}: FID {results['rows'][-1]['fid']:.2f} ({sample_seconds:.0f} s to sample)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
