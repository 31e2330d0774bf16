"""The FID network run by OpenVINO on the CPU: the same pool3 features as the eager network, faster.

Plumbing module (hand-written). Chapter 7 explains what the features are; `ddpm_lite.inception`
builds the eager network, which stays the reference and the fallback.

`fid_network(device, backend=...)` in `ddpm_lite.inception` returns this wrapper when the backend is
'openvino', or when it is 'auto' (the default), the device is the CPU and the `openvino` package is
installed (`pip install openvino`). The eager network is converted once to OpenVINO's format and
cached next to the converted weights; each time the wrapper is built, its features for a few MNIST
test images are compared with the eager network's, and any difference above `MAX_ABS_DIFF` makes it
fall back to the eager network with a warning. `make bench` measures the speed-up.
"""
from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import torch
from torch import nn

__all__ = ["MAX_ABS_DIFF", "available", "OpenVINOFeatureExtractor", "build"]

MAX_ABS_DIFF = 1e-4          # pool3 features must agree with the eager network's this closely


def available() -> bool:
    """Whether the `openvino` package is installed."""
    return importlib.util.find_spec("openvino") is not None


class _Pool3(nn.Module):
    """RGB in [0, 1] [N, 3, 28, 28] -> pool3 [N, 2048]: the part of the eager extractor that is converted."""

    def __init__(self, eager):
        super().__init__()
        self.inception = eager.inception

    def forward(self, x):
        return self.inception(x)[0].flatten(1)


class OpenVINOFeatureExtractor(nn.Module):
    """uint8 images -> pool3 features, computed by OpenVINO; same interface as `FIDFeatureExtractor`.

    It keeps the eager extractor (for its input conversion, its device and its weights' sha256).
    """

    backend = "openvino"

    def __init__(self, eager, compiled):
        super().__init__()
        self.eager = eager
        self.weights_sha256 = eager.weights_sha256
        self._request = compiled.create_infer_request()

    def forward(self, images_u8: torch.Tensor) -> torch.Tensor:
        x = self.eager.to_rgb01(images_u8.cpu()).contiguous().numpy()
        out = self._request.infer({0: x})[0]
        return torch.from_numpy(np.array(out, dtype=np.float32, copy=True)).flatten(1)


def _ir_path(weights_sha256: str):
    from .data import cache_dir
    return cache_dir() / "fid_openvino" / f"pool3_{weights_sha256[:20]}.xml"


def _converted(eager):
    """The OpenVINO model of the eager network, from the cache or converted now (a minute) and cached."""
    import openvino as ov
    path = _ir_path(eager.weights_sha256)
    if path.is_file() and path.with_suffix(".bin").is_file():
        try:
            return ov.Core().read_model(str(path))
        except Exception as e:  # a damaged cache: convert again
            warnings.warn(f"cached OpenVINO model {path} could not be read ({type(e).__name__}); converting again.")
    example = torch.zeros(2, 3, 28, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ov.convert_model(_Pool3(eager).eval(), example_input=example,
                                 input=[ov.PartialShape([-1, 3, 28, 28])])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.xml")
    ov.save_model(model, str(tmp), compress_to_fp16=False)      # fp32 weights: exact features
    tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))
    tmp.replace(path)
    return model


def build(eager, threads: int | None = None):
    """The OpenVINO extractor for an eager `FIDFeatureExtractor`, checked against it; the eager one on failure."""
    import openvino as ov
    from .data import load_mnist
    threads = threads or torch.get_num_threads()
    try:
        compiled = ov.Core().compile_model(_converted(eager), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(threads)})
    except Exception as e:  # any failure of the optional runtime: the reference path
        warnings.warn(f"OpenVINO could not compile the FID network ({type(e).__name__}: {str(e)[:120]}); "
                      "using the eager network.")
        return eager
    fast = OpenVINOFeatureExtractor(eager, compiled)
    probe = load_mnist("test")[0][:8]
    with torch.inference_mode():
        diff = float((fast(probe) - eager(probe)).abs().max())
    if not diff <= MAX_ABS_DIFF:
        warnings.warn(f"OpenVINO's FID features differ from the eager network's by {diff:.2e} "
                      f"(> {MAX_ABS_DIFF:g}); using the eager network.")
        return eager
    fast.check_max_abs_diff = diff
    return fast
