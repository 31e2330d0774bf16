"""The benchmark's evaluation cases: the IS classifier and the FID's Inception features.

Plumbing module (hand-written). bench_classifier times the IS classifier batched (1000 images a
call) against one image at a time, and with channels_last; bench_inception times Inception pool3
features along the eager path against its variants (contiguous, small batches, the package's
default backend, ONNX Runtime and torch.compile where available), compares every variant's
features with the eager ones, and checks the FID of real digits through both backends. Either
returns {"skipped": why} when its network is not available on this machine.
"""
from __future__ import annotations

import copy
import statistics
import time
import warnings
from pathlib import Path

import torch

from ..fastpaths import benchmark_images, channels_last_copy, count_flops
from .timing import BenchSizes, _max_diff, _round, group, measure, timings


def bench_classifier(sizes: BenchSizes) -> dict:
    try:
        from ..metrics import class_probabilities, load_classifier
        model = load_classifier("cpu")
    except Exception as e:
        return {"skipped": f"no IS classifier available ({type(e).__name__}: {str(e)[:160]})"}
    n_batched, n_single = sizes.classifier_batched, sizes.classifier_single
    images, _, source = benchmark_images(float_images=False)
    images = images[:n_batched]
    model_cl = channels_last_copy(model)
    r = group(sizes, {"one_at_a_time": lambda: class_probabilities(model, images[:n_single], batch_size=1),
                     "batched": lambda: class_probabilities(model, images, batch_size=n_batched),
                     "batched_channels_last": lambda: class_probabilities(model_cl, images, batch_size=n_batched)})
    n = {"one_at_a_time": n_single, "batched": n_batched, "batched_channels_last": n_batched}

    def paired(a, b):   # median over rounds of the throughput ratio b / a
        return _round(statistics.median((n[b] / tb) / (n[a] / ta) for ta, tb in zip(r[a]["times_s"], r[b]["times_s"])), 3)
    return {"images": source, "n_batched": n_batched, "n_one_at_a_time": n_single,
            **{k: {**timings(v), "images_per_s": _round(n[k] / v["median_s"])} for k, v in r.items()},
            "batched_speedup": paired("one_at_a_time", "batched"),
            "channels_last_speedup_over_batched": paired("batched", "batched_channels_last"),
            "max_abs_diff": {"batched_vs_one_at_a_time": _max_diff(r["batched"]["output"][:n_single],
                                                                   r["one_at_a_time"]["output"]),
                             "channels_last_vs_contiguous": _max_diff(r["batched_channels_last"]["output"],
                                                                      r["batched"]["output"])}}


def _onnxruntime_fn(net, x):
    """pool3 through ONNX Runtime (exported once to a temporary file), or None when it is not installed."""
    import importlib.util
    import tempfile
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return None
    import onnxruntime as ort
    from ..inception_openvino import _Pool3
    path = Path(tempfile.mkdtemp()) / "pool3.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Pool3(net).eval(), (net.to_rgb01(x[:2]).contiguous(),), str(path), input_names=["x"],
                          output_names=["f"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda: torch.from_numpy(session.run(None, {"x": net.to_rgb01(x).contiguous().numpy()})[0])


def bench_inception(sizes: BenchSizes) -> dict:
    """FID features: the eager path against its variants and the CPU runtimes, on the same images.

    The eager channels_last network (what `ddpm-lite evaluate` used before the OpenVINO backend) is
    the baseline; every variant's pool3 features are compared with it (max abs difference), and the
    FID of `inception_fid_n` validation images against the test set is computed from both the
    baseline's and the package's default backend's features.
    """
    try:
        from .. import inception
        net = inception.fid_network("cpu", backend="eager")
        default = inception.fid_network("cpu")
    except Exception as e:
        return {"skipped": f"no FID Inception network available ({type(e).__name__}: {str(e)[:160]})"}
    n = sizes.inception_n
    images, _, source = benchmark_images(float_images=False)
    x = images[:n]
    plain = copy.deepcopy(net.inception).to(memory_format=torch.contiguous_format)

    def eager():
        with torch.inference_mode():
            return net(x)                                   # the eager path: channels_last

    def contiguous():
        with torch.inference_mode():
            return plain(net.to_rgb01(x).contiguous())[0].flatten(1)

    def eager_small_batches():
        with torch.inference_mode():
            return torch.cat([net(x[i:i + 10]) for i in range(0, n, 10)])

    variants = {"eager_channels_last": eager, "eager_contiguous": contiguous, "eager_batches_of_10": eager_small_batches}
    if default.backend != "eager":
        variants[f"{default.backend}_backend"] = lambda: default(x)
    ort_fn = _onnxruntime_fn(net, x) if n > 1 else None
    if ort_fn is not None:
        variants["onnxruntime"] = ort_fn
    if sizes.inception_compile:
        compiled = torch.compile(net)
        def compiled_fn():
            with torch.inference_mode():
                return compiled(x)
        variants["torch_compile"] = compiled_fn
    t0 = time.perf_counter()
    # Inception is the slowest thing here: the minimum number of rounds, no extra ones
    r = measure(variants, max(1, sizes.repeats - 1), sizes.warmup, "eager_channels_last")
    with torch.inference_mode():
        flops = count_flops(lambda: net(x[:1]))
    out = {"images": source, "n": n, "threads": torch.get_num_threads(), "default_backend": default.backend,
           "gflop_per_image": _round(flops / 1e9), "flop_count": "FlopCounterMode over one forward pass (a multiply-add is 2)",
           **{k: {**timings(v), "images_per_s": _round(n / v["median_s"]),
                  "max_abs_diff_vs_eager": _max_diff(v["output"], r["eager_channels_last"]["output"])}
              for k, v in r.items()},
           "seconds": round(time.perf_counter() - t0, 1)}
    out["channels_last_speedup"] = _round(1 / r["eager_contiguous"]["speedup"], 3)
    fastest = max((k for k in r if k != "eager_channels_last"), key=lambda k: r[k]["speedup"])
    out["fastest"] = {"variant": fastest, "speedup_over_eager": r[fastest]["speedup"]}
    if sizes.inception_fid_n > 1:
        from ..data import load_mnist
        valid = load_mnist("valid")[0][:sizes.inception_fid_n]
        ref = inception.reference_statistics("test", net, progress=False)
        fids = {}
        for name, model in (("eager", net), (default.backend, default)):
            feats = inception.pool3_features(valid, model, progress=False)
            fids[name] = inception.frechet_distance(inception.statistics_from_features(feats), ref)
        out["fid_check"] = {"n": len(valid), "images": "MNIST valid split, first n, against the test set",
                            "fid": fids, "abs_diff": abs(fids["eager"] - fids[default.backend])}
    return out
