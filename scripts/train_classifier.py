"""Train the small MNIST classifier that the Inception Score and the conditional accuracy use.

    python scripts/train_classifier.py                     # 3 epochs on the 60,000 training images, seed 0
    python scripts/train_classifier.py --dataset fashion   # the same network for Fashion-MNIST (5 epochs)

Writes the weights (fp16 state dict, under 1 MB) to ddpm_lite/assets/mnist_classifier.pt
(fashion_classifier.pt) and the training log, the final test accuracy and the provenance to
results/classifier.json (classifier_fashion.json).
The model, its input mapping (`preprocess`) and the training loop are those of
`ddpm_lite.metrics` (chapter 7), so training and evaluation see the same inputs.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from ddpm_lite.book import results_dir  # noqa: E402
from ddpm_lite.data import load_mnist  # noqa: E402
from ddpm_lite.evaluation import classifier_file  # noqa: E402
from ddpm_lite.io import provenance, sha256_file, write_json  # noqa: E402
from ddpm_lite.metrics import (MNISTClassifier, classifier_accuracy,  # noqa: E402
                               load_classifier, save_classifier, train_classifier)

NAMES = {"mnist": "MNIST", "fashion": "Fashion-MNIST"}
DEFAULT_EPOCHS = {"mnist": 3, "fashion": 5}   # Fashion-MNIST needs more passes to pass 90% test accuracy


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=list(NAMES), default="mnist")
    p.add_argument("--epochs", type=int, default=None, help="default: 3 for MNIST, 5 for Fashion-MNIST")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (1 is fastest on a busy 2-core machine; default: torch's choice)")
    p.add_argument("--out", type=Path, default=None, help="weights file (default: the package's asset)")
    p.add_argument("--log", type=Path, default=None,
                   help="results file (default: results/classifier.json, or classifier_fashion.json)")
    args = p.parse_args(argv)
    name = NAMES[args.dataset]
    args.epochs = args.epochs or DEFAULT_EPOCHS[args.dataset]
    shipped_path = classifier_file(args.dataset)
    args.out = args.out or shipped_path
    args.log = args.log or results_dir() / ("classifier.json" if args.dataset == "mnist" else
                                            f"classifier_{args.dataset}.json")

    if args.threads:
        torch.set_num_threads(args.threads)
    train_x, train_y = load_mnist("train", dataset=args.dataset)
    test_x, test_y = load_mnist("test", dataset=args.dataset)
    t0 = time.time()
    model, log = train_classifier(train_x, train_y, epochs=args.epochs, batch_size=args.batch_size,
                                  lr=args.lr, seed=args.seed, device=args.device, eval_set=(test_x, test_y))
    seconds = time.time() - t0
    for entry in log:
        print(entry)
    out = save_classifier(model, args.out)
    # score the file that ships (fp16 weights read back), not the fp32 model in memory
    shipped = load_classifier("cpu", out)
    acc = classifier_accuracy(shipped, test_x, test_y)
    n_params = sum(p.numel() for p in MNISTClassifier().parameters())
    write_json(args.log, {
        "what": f"{name} classifier for the Inception Score and the conditional accuracy (chapter 7)",
        "config": {"dataset": args.dataset, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                   "seed": args.seed,
                   "optimizer": "Adam, cosine decay to 0", "train_set": f"{name} train (60,000)",
                   "preprocess": "ddpm_lite.metrics.preprocess (uint8 -> [-1, 1], as ddpm_lite.data.to_float)"},
        "parameters": n_params,
        "log": log,
        "test_accuracy": acc,
        "test_set": f"{name} test (10,000)",
        "train_seconds": round(seconds, 1),
        "weights_file": str(out.relative_to(out.parents[1])) if out == shipped_path else str(out),
        "weights_bytes": out.stat().st_size,
        "weights_sha256": sha256_file(out),
        "provenance": provenance(args.device),
    })
    print(f"test accuracy {acc:.4f}; weights {out} ({out.stat().st_size:,} bytes); log {args.log}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
