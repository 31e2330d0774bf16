"""Measure the evaluation defects of chapter 10 at full scale, and guidance weight against diversity.

    python scripts/errata_eval.py [--stages real,shipped,wsweep] [--n-wsweep 500]

Writes results/errata_eval.json (one section per stage, each with its own provenance) and keeps
bulky sample sets in runs/errata/ (ignored by git; their sha256 and seed are recorded). Every
stage is skipped when its section is already in the results file, and Inception features are
cached by content, so the script resumes where it stopped.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ddpm_lite import errata, inception
from ddpm_lite.book import repo_root, results_dir
from ddpm_lite.checkpoint import load_model, resolve_model_file
from ddpm_lite.data import load_mnist, to_float
from ddpm_lite.experiments import balanced_labels
from ddpm_lite.forward import make_schedule
from ddpm_lite.io import atomic_write_bytes, provenance, read_json, sha256_file, write_json
from ddpm_lite.evaluation import score
from ddpm_lite.metrics import load_classifier
from ddpm_lite.sampling import generate

OUT = results_dir() / "errata_eval.json"
RUNS = repo_root() / "runs" / "errata"
SAMPLING = dict(sampler="ddim", steps=50, seed=0, batch_size=100)
SHIPPED_STEPS = 20   # 20 DDIM steps keep generation to minutes on a 2-core CPU
SHIPPED_N = 2_000    # CPU-scale: Inception features of 2 x 10,000 samples cost about an hour and a half here


def fid_vs_test(images_u8, net) -> float:
    """FID of a real image set against the test set; its features are cached (generated sets go through `scores`)."""
    ref = inception.reference_statistics("test", net)
    gen = inception.statistics_from_features(inception.cached_features(np.ascontiguousarray(images_u8), net))
    return inception.frechet_distance(gen, ref)


def real_fid_same_n(n: int, net) -> dict:
    """The real-data row for a set of n generated images: the first n validation images against the test set."""
    valid, _ = load_mnist("valid")
    return {"value": fid_vs_test(valid[:n].numpy(), net),
            "images": f"first {n:,} MNIST validation images against the test set"}


def scores(images_u8, labels, classifier, net=None, stats_mismatch=False) -> dict:
    """IS (10 splits), conditional accuracy and, when net is given, FID against the test set: the book's
    one scoring path (`ddpm_lite.evaluation.score`), with the classifier's input normalised as chapter 10
    asks (`stats_mismatch`)."""
    s = score(np.ascontiguousarray(images_u8), np.asarray(labels), "cpu", progress=False, fid=net is not None,
              net=net, classifier=classifier,
              probabilities=lambda u: errata.class_probabilities_with(classifier, u, stats_mismatch))
    out = {"inception_score": {k: s["inception_score"][k] for k in ("mean", "std", "splits")},
           "conditional_accuracy": s["conditional_accuracy"]["overall"]}
    if net is not None:
        out["fid"] = s["fid"]["value"]
    return out


def stage_real(classifier, net) -> dict:
    """The two evaluation defects on real MNIST: FID of the validation split, IS and accuracy of the test split."""
    valid, _ = load_mnist("valid")
    test, test_labels = load_mnist("test")
    clamp = lambda u: errata.to_uint8_clamp01(to_float(u)).squeeze(1).numpy()
    return {
        "n": len(test),
        "images": "FID: MNIST valid split (10,000) against the test set; IS and accuracy: the test set",
        "protocol": {"fid": fid_vs_test(valid.numpy(), net), **scores(test.numpy(), test_labels, classifier)},
        "clamp01": {"fid": fid_vs_test(clamp(valid), net), **scores(clamp(test), test_labels, classifier)},
        "classifier_stats_mismatch": scores(test.numpy(), test_labels, classifier, stats_mismatch=True),
    }


def shipped_samples(n: int, w: float, steps: int = SAMPLING["steps"]):
    """n samples of the shipped model as (protocol uint8, clamp01 uint8, labels), cached in runs/errata/."""
    settings = {**SAMPLING, "steps": steps}
    path = RUNS / f"chapter5_{settings['sampler']}{steps}_w{w:g}_n{n}_seed{settings['seed']}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return z["images"], z["images_clamp01"], z["labels"], path
    model, cfg = load_model("chapter5")
    sched = make_schedule(cfg.schedule, cfg.T)
    y = balanced_labels(n)
    with torch.inference_mode():
        x = generate(model, sched, y, w, **settings)
    u = errata.export_images(x).squeeze(1).numpy()
    uc = errata.export_images(x, clamp01=True).squeeze(1).numpy()
    import io
    buf = io.BytesIO()
    np.savez_compressed(buf, images=u, images_clamp01=uc, labels=y.numpy())
    atomic_write_bytes(path, buf.getvalue())
    return u, uc, y.numpy(), path


def sample_record(path, n, w, steps: int = SAMPLING["steps"]) -> dict:
    return {"file": str(path.relative_to(repo_root())), "sha256": sha256_file(path), "n": n, "w": w,
            "model": "chapter5", "model_sha256": sha256_file(resolve_model_file("chapter5")),
            **SAMPLING, "steps": steps}


def stage_shipped(classifier, net) -> dict:
    """The two evaluation defects on SHIPPED_N samples of the shipped model (its own w, DDIM)."""
    _, cfg = load_model("chapter5")
    u, uc, labels, path = shipped_samples(SHIPPED_N, cfg.w, SHIPPED_STEPS)
    return {
        "scale": f"CPU-scale: {SHIPPED_N:,} samples, not the protocol's 10,000; compare FID with the "
                 "real-data FID at the same n",
        "real_fid_same_n": real_fid_same_n(SHIPPED_N, net),
        "samples": sample_record(path, SHIPPED_N, cfg.w, SHIPPED_STEPS),
        "protocol": scores(u, labels, classifier, net),
        "clamp01": scores(uc, labels, classifier, net),
        "classifier_stats_mismatch": scores(u, labels, classifier, stats_mismatch=True),
    }


def spread(images_u8, labels, classifier) -> dict:
    return {"pixels": errata.within_class_spread(to_float(torch.as_tensor(images_u8)).numpy(), labels),
            "classifier_features": errata.within_class_spread(
                errata.classifier_features(classifier, images_u8), labels)}


def stage_wsweep(classifier, net, n: int, ws=(0.0, 0.5, 1.0, 2.0, 4.0)) -> dict:
    """Guidance weight against quality and within-class diversity, shipped model, n images per w."""
    test, test_labels = load_mnist("test")
    keep = np.concatenate([np.flatnonzero(test_labels.numpy() == c)[: n // 10] for c in range(10)])
    rows = []
    for w in ws:
        u, _, labels, path = shipped_samples(n, w)
        rows.append({"w": w, "samples": sample_record(path, n, w), **scores(u, labels, classifier, net),
                     "spread": spread(u, labels, classifier)})
        print(f"w={w:g}: {rows[-1]['spread']}  IS {rows[-1]['inception_score']['mean']:.3f}  FID {rows[-1]['fid']:.2f}")
    real = {"images": f"MNIST test, first {n // 10} of each digit", "spread": spread(test[keep].numpy(),
            test_labels[keep].numpy(), classifier),
            "fid_same_n": real_fid_same_n(n, net)}
    return {"n": n, "rows": rows, "real": real,
            "spread_definition": "mean over digits of tr Cov(features | digit): pixels in [-1, 1], or the "
                                 "classifier's 128 penultimate activations"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", default="real,shipped,wsweep")
    ap.add_argument("--n-wsweep", type=int, default=500)
    args = ap.parse_args(argv)
    classifier, net = load_classifier(), inception.fid_network("cpu")
    results = read_json(OUT) if OUT.is_file() else {"what": "chapter 10: evaluation defects and w vs diversity"}
    for stage in args.stages.split(","):
        if stage in results:
            print(f"{stage}: already in {OUT.name}, skipped")
            continue
        t0 = time.time()
        if stage == "real":
            section = stage_real(classifier, net)
        elif stage == "shipped":
            section = stage_shipped(classifier, net)
        elif stage == "wsweep":
            section = stage_wsweep(classifier, net, args.n_wsweep)
        else:
            raise SystemExit(f"unknown stage {stage!r}; use real, shipped or wsweep")
        section["seconds"] = round(time.time() - t0, 1)
        section["provenance"] = provenance("cpu")
        results = read_json(OUT) if OUT.is_file() else results   # another stage may run in parallel
        results[stage] = section
        write_json(OUT, results)
        print(f"{stage}: done in {section['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
