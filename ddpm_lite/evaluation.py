"""Evaluating a sample file: FID, Inception Score and conditional accuracy, written to JSON.

Plumbing module (hand-written). The metrics themselves are chapter 7's (`ddpm_lite.metrics`,
`ddpm_lite.inception`); this module checks the input, runs them and records the result.

    evaluate_path("runs/quick/samples/ddim50_w2_n10000_seed0.npz")   # -> dict, and <name>.eval.json
    reference_rows()                                                  # -> dict, and results/reference.json
    reference_rows(dataset="fashion")                                 # -> results/reference_fashion.json

Fashion-MNIST (`dataset="fashion"`) is scored the same way, against its own 10,000 test images
and with its own classifier (`ddpm_lite/assets/fashion_classifier.pt`); a sample file made by a
Fashion-MNIST model says so in the `.json` beside it, and is then scored as Fashion-MNIST.

A sample file is an `.npz` with `images` (uint8 [N, 28, 28] or [N, 1, 28, 28]) and `labels`
(integers 0..9, one per image), as `ddpm-lite sample` writes it. Everything about the file is
checked before the slow part (about 22 minutes of Inception per 10,000 images on a 2-core CPU).
"""
from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np

from .errors import DataError
from .io import provenance, sha256_file, write_json

__all__ = ["load_samples", "find_sample_file", "score", "evaluate_arrays", "evaluate_file", "evaluate_path",
           "format_summary", "reference_rows", "reference_file", "classifier_file", "dataset_of", "IS_SPLITS",
           "FID_REFERENCE", "FID_REFERENCES"]

IS_SPLITS = 10
#: what each data set's FIDs are measured against, and the file of its IS classifier (in ddpm_lite/assets)
FID_REFERENCES = {"mnist": "MNIST test set (10,000 images)", "fashion": "Fashion-MNIST test set (10,000 images)"}
FID_REFERENCE = FID_REFERENCES["mnist"]
_CLASSIFIER_FILES = {"mnist": "mnist_classifier.pt", "fashion": "fashion_classifier.pt"}
_NAMES = {"mnist": "MNIST", "fashion": "Fashion-MNIST"}
_HINT = ("A sample file holds `images` (uint8, 0..255, shape [N, 28, 28] or [N, 1, 28, 28]) and "
         "`labels` (integers 0..9, one per image); `ddpm-lite sample` writes such files.")


def find_sample_file(path) -> Path:
    """`path` itself when it is a file; for a folder, the newest `*.npz` anywhere under it."""
    path = Path(path)
    if path.is_dir():
        found = [p for p in path.rglob("*.npz") if p.is_file()]
        if not found:
            raise DataError(f"no .npz sample file under {path}. Draw samples first "
                            "(`ddpm-lite sample RUN_DIR --n 10000`) or pass a file.")
        return max(found, key=lambda p: p.stat().st_mtime)
    if not path.is_file():
        raise DataError(f"no such file or folder: {path}.")
    return path


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an .npz file, read without unpickling anything."""
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path} is not an .npz file ({type(e).__name__}: {str(e)[:100]}). " + _HINT) from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds a single NumPy array, not an .npz sample file. " + _HINT)
    try:
        with z:
            return {k: z[k] for k in z.files}
    except ValueError as e:  # an object array inside: loading it would unpickle
        raise DataError(f"{path} holds Python objects (pickled arrays), which are not loaded. " + _HINT) from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path} is a damaged .npz file ({type(e).__name__}: {str(e)[:100]}). " + _HINT) from None


def load_samples(path) -> tuple[np.ndarray, np.ndarray, Path]:
    """Read and check a sample file (or the newest one in a folder): (uint8 [N, 28, 28], int64 [N], file).

    Every problem is a DataError that names it; nothing slow runs before this passes.
    """
    path = find_sample_file(path)
    arrays = _read_npz(path)
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        what = "no labels (conditional accuracy needs the requested class of each image)" \
            if missing == ["labels"] else f"no {' and no '.join(repr(k) for k in missing)} array"
        raise DataError(f"{path} has {what}; it holds {sorted(arrays) or 'nothing'}. " + _HINT)
    images, labels = arrays["images"], arrays["labels"]

    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{path}: `images` has shape {images.shape}; expected [N, 28, 28] or "
                        "[N, 1, 28, 28] (MNIST-sized grey images).")
    if images.dtype != np.uint8:
        if images.dtype.kind not in "iu":
            raise DataError(f"{path}: `images` has dtype {images.dtype}; expected uint8 0..255. Convert "
                            "model outputs x in [-1, 1] with round((clamp(x, -1, 1) + 1) / 2 * 255).")
        if images.size and (images.min() < 0 or images.max() > 255):
            raise DataError(f"{path}: `images` values run from {images.min()} to {images.max()}; "
                            "pixel values must lie in 0..255.")
        images = images.astype(np.uint8)

    if labels.ndim != 1:
        raise DataError(f"{path}: `labels` has shape {labels.shape}; expected one label per image, [N].")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{path}: `labels` has dtype {labels.dtype}; expected integers 0..9.")
    if len(labels) != len(images):
        raise DataError(f"{path}: {len(labels)} labels for {len(images)} images; "
                        "every image needs exactly one label.")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        bad = labels[(labels < 0) | (labels > 9)]
        raise DataError(f"{path}: {len(bad)} label(s) outside 0..9 (e.g. {bad[0]}); MNIST classes are 0..9.")
    if len(images) < 2:
        raise DataError(f"{path} holds {len(images)} image(s); FID and IS need at least 2 "
                        "(the book's protocol uses 10,000).")
    return np.ascontiguousarray(images), labels.astype(np.int64), path


def _check_dataset(dataset: str) -> None:
    from .data import DATASETS
    if dataset not in DATASETS:
        raise DataError(f"unknown data set {dataset!r}; choose one of {', '.join(DATASETS)}.")


def classifier_file(dataset: str = "mnist") -> Path:
    """The IS classifier of `dataset` shipped in the package's assets (chapter 7's network, trained on it)."""
    from .book import assets_dir
    _check_dataset(dataset)
    return assets_dir() / _CLASSIFIER_FILES[dataset]


def _load_classifier_for(dataset: str, dev):
    from .metrics import load_classifier
    path = classifier_file(dataset)
    if dataset != "mnist" and not path.is_file():
        raise DataError(f"the {_NAMES[dataset]} classifier's weights are missing ({path}). Train them with "
                        f"`python scripts/train_classifier.py --dataset {dataset}` in a clone of the repository.")
    return load_classifier(dev, path)


def _test_statistics(net, dataset: str, progress: bool):
    """(mu, sigma) of the dataset's 10,000 test images: the FID reference, cached after the first call."""
    from . import inception
    from .data import load_mnist
    images, _ = load_mnist("test", dataset=dataset)
    return inception.statistics_from_features(inception.cached_features(
        images, net, progress=progress, desc=f"Inception pool3 ({_NAMES[dataset]} test)"))


def dataset_of(info: dict | None) -> str:
    """The data set a sample file's model was trained on, from the `.json` beside it ('mnist' when unsaid)."""
    info = info or {}
    for key in ("config", "model_config"):
        if isinstance(info.get(key), dict) and info[key].get("dataset"):
            return info[key]["dataset"]
    return "mnist"


def score(images: np.ndarray, labels: np.ndarray, device="auto", progress: bool = True, fid: bool = True,
          net=None, classifier=None, probabilities=None, dataset: str = "mnist") -> dict:
    """The one scoring path: FID against the test set (unless fid=False), IS (eq 7) and conditional accuracy.

    Every caller (the CLI's `evaluate`, plan units, the errata and sampler sweeps) scores through
    here. `net` and `classifier` may be passed in to reuse loaded networks; `probabilities`
    (images -> [N, 10] class probabilities) replaces chapter 7's classifier call, which chapter 10
    uses to score through a mis-normalised input. `dataset` ('mnist' or 'fashion') chooses the test
    set FID is measured against and the classifier.
    """
    from . import inception
    from .device import pick_device
    from .metrics import class_probabilities, conditional_accuracy, inception_score
    _check_dataset(dataset)
    dev = pick_device(device)
    if classifier is None:
        classifier = _load_classifier_for(dataset, dev)   # fails fast (before Inception) if the weights are missing
    out = {"fid": None}
    if fid:
        net = net if net is not None else inception.fid_network(dev)
        ref = _test_statistics(net, dataset, progress)
        gen = inception.statistics_from_features(
            inception.pool3_features(images, net, progress=progress, desc="Inception pool3 (samples)"))
        out["fid"] = {"value": inception.frechet_distance(gen, ref), "reference": FID_REFERENCES[dataset],
                      "features": "pytorch-fid Inception-v3 pool3 (2048 dims)",
                      "weights_sha256": net.weights_sha256, "backend": getattr(net, "backend", "eager")}
    probs = probabilities(images) if probabilities is not None else class_probabilities(classifier, images)
    splits = min(IS_SPLITS, len(images))
    is_mean, is_std = inception_score(probs, splits)
    out["inception_score"] = {"mean": is_mean, "std": is_std, "splits": splits, "shuffle_seed": 0,
                              "classifier": f"ddpm_lite/assets/{_CLASSIFIER_FILES[dataset]}",
                              "classifier_sha256": sha256_file(classifier_file(dataset))}
    out["conditional_accuracy"] = conditional_accuracy(probs, labels)
    out["device"] = str(dev)
    if dataset != "mnist":                         # MNIST files keep the keys they always had
        out["dataset"] = dataset
    return out


def evaluate_arrays(images: np.ndarray, labels: np.ndarray, device="auto", progress: bool = True,
                    fid: bool = True, dataset: str = "mnist") -> dict:
    """`score` of checked arrays, with n and the seconds it took."""
    t0 = time.time()
    out = score(images, labels, device, progress, fid=fid, dataset=dataset)
    out["n"] = int(len(images))
    out["seconds"] = round(time.time() - t0, 1)
    return out


def _sample_info(npz: Path) -> dict | None:
    """The `.json` that `ddpm-lite sample` writes beside its `.npz` (model, w, seed, ...), when it matches."""
    side = npz.with_suffix(".json")
    try:
        info = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("samples_sha256") not in (None, sha256_file(npz)):
        return None
    return {k: v for k, v in info.items() if k != "provenance"}


def evaluate_file(path, device="auto", progress: bool = True, fid: bool = True, dataset: str | None = None) -> dict:
    """Evaluate a sample `.npz` (or the newest one under a run folder); returns the results dict.

    FID vs the test set (pool3, 2048 dims; skipped with fid=False), IS with 10 splits (mean,
    std), conditional accuracy (overall and per class), n, the input's sha256 and provenance. Every
    input problem raises DataError before any slow work starts. The data set is the one the
    sample file's `.json` records (MNIST when there is none), unless `dataset` is given.
    """
    images, labels, npz = load_samples(path)
    from .device import pick_device
    dev = pick_device(device)                  # a bad device name fails here, also before the slow part
    info = _sample_info(npz)
    recorded = dataset_of(info)
    if dataset is not None and info is not None and dataset != recorded:
        raise DataError(f"{npz} was drawn from a model trained on {recorded!r} (says {npz.with_suffix('.json')}), "
                        f"not {dataset!r}; drop --dataset, or score it against {recorded!r}.")
    dataset = dataset or recorded
    _check_dataset(dataset)
    what = "FID, Inception Score, conditional accuracy" if fid else \
        "Inception Score, conditional accuracy; FID not asked for"
    result = {"what": f"evaluation of a sample file ({what})",
              "input": {"path": str(npz), "sha256": sha256_file(npz), "n": int(len(images)),
                        "count_per_class": np.bincount(labels, minlength=10).tolist()}}
    result.update(evaluate_arrays(images, labels, dev, progress, fid=fid, dataset=dataset))
    if info is not None:
        result["samples"] = info
    result["provenance"] = provenance(str(dev))
    return result


def evaluate_path(path, out_json=None, device="auto", progress: bool = True, dataset: str | None = None) -> dict:
    """`evaluate_file`, written to `<name>.eval.json` beside the sample file (or to out_json)."""
    result = evaluate_file(path, device, progress, dataset=dataset)
    npz = Path(result["input"]["path"])
    out = Path(out_json) if out_json is not None else npz.with_name(npz.stem + ".eval.json")
    write_json(out, result)
    result["written_to"] = str(out)
    return result


def format_summary(result: dict) -> str:
    """A few lines for the terminal: n, FID, IS, conditional accuracy (overall and per class)."""
    acc = result["conditional_accuracy"]
    per = "  ".join(f"{c}:{a:.3f}" if a is not None else f"{c}:-" for c, a in enumerate(acc["per_class"]))
    lines = [f"file:      {result['input']['path']}" if "input" in result else None,
             f"n:         {result['n']}",
             f"FID:       {result['fid']['value']:.2f}   (vs {result['fid']['reference']}; "
             "compare only with FIDs at the same n)",
             f"IS:        {result['inception_score']['mean']:.3f} +/- {result['inception_score']['std']:.3f}"
             f"   ({result['inception_score']['splits']} splits, {_NAMES[result.get('dataset', 'mnist')]} classifier)",
             f"cond. acc: {acc['overall']:.4f}",
             f"per class: {per}",
             f"written:   {result['written_to']}" if "written_to" in result else None]
    return "\n".join(line for line in lines if line)


def reference_rows(out_json=None, device="auto", progress: bool = True,
                   fid_sizes=(10_000, 5_000, 2_000, 1_000),
                   sample_sizes=(10_000, 5_000, 2_000, 1_000, 500, 250), dataset: str = "mnist") -> dict:
    """The real-data rows that no generator should beat, written to `results/reference.json`
    (`results/reference_fashion.json` for dataset='fashion').

    - FID of the 'valid' split (last 10,000 training images) against the 10,000 test
      images, and the same with the first n images of each for smaller n (FID depends on n);
    - IS (10 splits) and classifier accuracy of the test set, with per-class accuracy.
    The test and valid features are cached, so a second call takes seconds.
    """
    import torch
    from . import inception
    from .book import results_dir
    from .data import load_mnist
    from .device import pick_device
    from .metrics import class_probabilities, classifier_accuracy, conditional_accuracy, inception_score
    _check_dataset(dataset)
    name = _NAMES[dataset]
    t0 = time.time()
    dev = pick_device(device)
    test_x, test_y = load_mnist("test", dataset=dataset)
    valid_x, _ = load_mnist("valid", dataset=dataset)
    classifier = _load_classifier_for(dataset, dev)
    net = inception.fid_network(dev)
    f_test = inception.cached_features(test_x, net, progress=progress, desc=f"Inception pool3 ({name} test)")
    f_valid = inception.cached_features(valid_x, net, progress=progress, desc=f"Inception pool3 ({name} valid)")
    fid_by_n = []
    for n in fid_sizes:
        n = min(n, len(f_test), len(f_valid))
        fid_by_n.append({"n": n, "fid": inception.frechet_distance(
            inception.statistics_from_features(f_valid[:n]), inception.statistics_from_features(f_test[:n]))})
    # A set of n generated images is scored against all 10,000 test images, so its real-data row is
    # n real images (the first n of the valid split) against the same 10,000, not n against n.
    stats_test = inception.statistics_from_features(f_test)
    probs = class_probabilities(classifier, test_x)
    is_mean, is_std = inception_score(probs, IS_SPLITS)
    rows = [_rows_at(n, f_valid[:n], stats_test, probs) for n in sample_sizes]
    fid_n_vs_test, is_by_n = [r[0] for r in rows], [r[1] for r in rows]
    result = {
        "what": f"reference rows: real {name} images scored with the book's evaluation protocol",
        "fid_valid_vs_test": {"value": fid_by_n[0]["fid"], "n": fid_by_n[0]["n"],
                              "images": f"{name} valid split (training images 50,000-59,999)",
                              "reference": FID_REFERENCES[dataset],
                              "features": "pytorch-fid Inception-v3 pool3 (2048 dims)",
                              "weights_sha256": net.weights_sha256},
        "fid_by_n": fid_by_n,
        "fid_by_n_note": "first n images of the valid split against the first n test images",
        "fid_n_vs_test": fid_n_vs_test,
        "fid_n_vs_test_note": "first n images of the valid split against all 10,000 test images: the real-data "
                              "row for a set of n generated images, which is scored against the same 10,000",
        "inception_score_test_by_n": is_by_n,
        "inception_score_test_by_n_note": f"the first n test images, {IS_SPLITS} splits",
        "inception_score_test": {"mean": is_mean, "std": is_std, "splits": IS_SPLITS, "shuffle_seed": 0,
                                 "n": int(len(test_x))},
        "classifier_accuracy_test": classifier_accuracy(classifier, test_x, test_y),
        "conditional_accuracy_test": conditional_accuracy(probs, test_y.numpy()),
        "classifier": {"file": f"ddpm_lite/assets/{_CLASSIFIER_FILES[dataset]}",
                       "sha256": sha256_file(classifier_file(dataset))},
        "data": {"test_sha256": inception.images_digest(test_x), "valid_sha256": inception.images_digest(valid_x)},
        "seconds": round(time.time() - t0, 1),
        "provenance": provenance(str(dev), torch_threads=torch.get_num_threads()),
    }
    if dataset != "mnist":
        result["dataset"] = dataset
    write_json(out_json if out_json is not None else results_dir() / reference_file(dataset), result)
    return result


def reference_file(dataset: str = "mnist") -> str:
    """The name, under results/, of a data set's real-data rows: reference.json (MNIST), reference_fashion.json."""
    return "reference.json" if dataset == "mnist" else f"reference_{dataset}.json"


def _rows_at(n: int, f_valid_n, stats_test, probs) -> tuple[dict, dict]:
    """The real-data rows for sets of n images: FID of the first n valid images (features `f_valid_n`)
    against all the test images, and the IS of the first n test images (10 splits: it depends on n too)."""
    from . import inception
    from .metrics import inception_score
    fid = {"n": min(n, len(f_valid_n)), "fid": inception.frechet_distance(
        inception.statistics_from_features(f_valid_n), stats_test)}
    m, sd = inception_score(probs[:n], IS_SPLITS)
    return fid, {"n": min(n, len(probs)), "mean": m, "std": sd}


def add_reference_sizes(sizes, out_json=None, device="auto", progress: bool = True, dataset: str = "mnist") -> dict:
    """Add real-data rows for more sample sizes to `results/reference.json` without recomputing the rest:
    the first n validation images against all 10,000 test images (FID) and the first n test images (IS),
    exactly as `reference_rows` computes them. Costs the Inception features of the n images only.
    """
    import torch
    from . import inception
    from .book import results_dir
    from .data import load_mnist
    from .device import pick_device
    from .metrics import class_probabilities
    _check_dataset(dataset)
    out_json = Path(out_json) if out_json is not None else results_dir() / reference_file(dataset)
    if not out_json.is_file():
        raise DataError(f"no reference file at {out_json}; compute it first with "
                        f"`python -m ddpm_lite.evaluation reference --dataset {dataset}`.")
    ref = json.loads(out_json.read_text())
    dev = pick_device(device)
    test_x, _ = load_mnist("test", dataset=dataset)
    valid_x, _ = load_mnist("valid", dataset=dataset)
    net = inception.fid_network(dev)
    if net.weights_sha256 != ref["fid_valid_vs_test"]["weights_sha256"]:
        raise DataError("the FID weights differ from those results/reference.json was computed with; "
                        "recompute the whole file with `python -m ddpm_lite.evaluation reference`.")
    stats_test = inception.statistics_from_features(
        inception.cached_features(test_x, net, progress=progress, desc=f"Inception pool3 ({_NAMES[dataset]} test)"))
    probs = class_probabilities(_load_classifier_for(dataset, dev), test_x)
    have = {r["n"] for r in ref["fid_n_vs_test"]}
    for n in sorted({int(n) for n in sizes} - have):
        f = inception.pool3_features(valid_x[:n], net, progress=progress, desc=f"Inception pool3 (valid[:{n}])")
        fid_row, is_row = _rows_at(n, f, stats_test, probs)
        ref["fid_n_vs_test"].append(fid_row)
        ref["inception_score_test_by_n"].append(is_row)
    ref["fid_n_vs_test"].sort(key=lambda r: -r["n"])
    ref["inception_score_test_by_n"].sort(key=lambda r: -r["n"])
    ref.setdefault("added_sizes", []).append({"sizes": sorted(int(n) for n in sizes),
                                              "provenance": provenance(str(dev), torch_threads=torch.get_num_threads())})
    write_json(out_json, ref)
    return ref


def _main(argv=None) -> int:
    """`python -m ddpm_lite.evaluation reference` or `python -m ddpm_lite.evaluation PATH [--out FILE]`."""
    import argparse
    import sys
    from .errors import DDPMLiteError
    p = argparse.ArgumentParser(prog="python -m ddpm_lite.evaluation",
                                description="Evaluate a sample file, or compute the reference rows.")
    p.add_argument("path", help="a sample .npz, a run folder, or the word 'reference'")
    p.add_argument("--out", default=None, help="JSON file to write")
    p.add_argument("--device", default="auto")
    p.add_argument("--dataset", default=None, choices=["mnist", "fashion"],
                   help="with 'reference': the data set (default mnist); with a sample file: override what "
                        "its .json records")
    p.add_argument("--add-n", type=int, nargs="+", default=None, metavar="N",
                   help="with 'reference': add the real-data rows for these sample sizes to the existing file")
    args = p.parse_args(argv)
    try:
        if args.path == "reference" and args.add_n:
            r = add_reference_sizes(args.add_n, args.out, args.device, dataset=args.dataset or "mnist")
            print("real FID at n vs the test set:", {x["n"]: round(x["fid"], 3) for x in r["fid_n_vs_test"]})
        elif args.path == "reference":
            r = reference_rows(args.out, args.device, dataset=args.dataset or "mnist")
            print(f"FID(valid vs test, n={r['fid_valid_vs_test']['n']}) = {r['fid_valid_vs_test']['value']:.3f}; "
                  f"IS(test) = {r['inception_score_test']['mean']:.3f} +/- {r['inception_score_test']['std']:.3f}; "
                  f"classifier accuracy = {r['classifier_accuracy_test']:.4f}")
        else:
            print(format_summary(evaluate_path(args.path, args.out, args.device, dataset=args.dataset)))
    except DDPMLiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
