"""The runner's train and sample steps with the GPU's speed-ups: FastBackend, run by scripts/gpu_run.py.

Plumbing module (hand-written). FastBackend is a Backend (ddpm_lite.experiments.backend) that
writes the same files and differs only in speed: training through `ddpm_lite.training.train` with
the fast paths it uses on CUDA (`training.FastPaths`: bf16 autocast, channels_last, TF32, skipped
host syncs, the step captured as a CUDA graph), the EMA weights saved as float16 by default, and
sampling with the network in bf16 autocast and channels_last while the sampler's Gaussian noise is
drawn ahead, in a background thread, from the same seeded CPU generator (NoisePrefetch: the same
numbers as `ddpm_lite.sampling.cpu_noise` drawing on demand). With fast_paths off it is the plain
Backend's code path; on a CPU it runs too (the tests use it there), without the CUDA-only parts.

    backend = FastBackend(device, data, fast_paths=True, cuda_graphs=True, weights_dtype="float16")
    Runner(plan, layout, backend, only=["train", "sample"], budget_s=540).run()

Nothing here imports pytorch-fid or scipy: the GPU machine has only torch, torchvision, numpy,
tqdm and matplotlib.
"""
from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from pathlib import Path

import torch
from torch import nn

from .. import training
from ..checkpoint import save_model_file
from ..forward import Schedule, make_schedule
from .backend import Backend, TrainOutcome
from .state import checkpointed_steps


def _log(*args):
    print(*args, flush=True)


# ---------------------------------------------------------------------------------------------
# Fast paths
# ---------------------------------------------------------------------------------------------
class Autocast(training.Autocast):
    """The package's autocast wrapper in bf16; returns float32 so that the sampler stays fp32."""

    def __init__(self, inner: nn.Module, device_type: str):
        super().__init__(inner, device_type, torch.bfloat16)


def _channels_last(module: nn.Module) -> nn.Module:
    return module.to(memory_format=torch.channels_last)


class NoisePrefetch:
    """A noise source for `ddpm_lite.sampling` (its `noise=` parameter): the batch's noise drawn ahead
    in a background thread from a CPU generator seeded as the sampler's own, in the order the sampler
    asks for it, so the numbers are those of `cpu_noise` drawing on demand."""

    def __init__(self, seed: int, shape, count: int, device, pin: bool, depth: int = 4):
        self.g = torch.Generator().manual_seed(seed)
        self.shape, self.count, self.device, self.pin = tuple(shape), count, device, pin
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.served, self.stop = 0, threading.Event()
        self.thread = threading.Thread(target=self._work, daemon=True)

    def _work(self):
        try:
            for _ in range(self.count):
                buf = torch.empty(self.shape, pin_memory=self.pin)
                torch.randn(self.shape, generator=self.g, out=buf)
                while not self.stop.is_set():
                    try:
                        self.q.put(buf, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
        except BaseException as e:      # handed to the sampler's thread
            self.q.put(e)

    def __call__(self, shape, generator, device):
        # the sampler's generator is seeded as self.g and never used: self.g draws the same stream
        if tuple(shape) != self.shape:
            raise RuntimeError(f"noise asked for with shape {tuple(shape)}, prefetched {self.shape}")
        if self.served >= self.count:   # more than foreseen: draw on demand (the thread is done with g)
            self.thread.join()
            return torch.randn(shape, generator=self.g).to(device)
        item = self.q.get()
        if isinstance(item, BaseException):
            raise item
        self.served += 1
        return item.to(device, non_blocking=self.pin)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self.q.get_nowait()
        self.thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# The backend: the runner's train / sample steps with the speed-ups
# ---------------------------------------------------------------------------------------------
class FastBackend(Backend):
    name = "scripts/gpu_run.py"

    def __init__(self, device, data, fast_paths: bool, cuda_graphs: bool, weights_dtype: str,
                 stop_after_steps: int | None = None, progress: bool = False, log=_log):
        super().__init__(device, progress=progress, data=data, log=log)
        self.fast = fast_paths
        self.cuda = self.device.type == "cuda"
        self.cuda_graphs = cuda_graphs and self.cuda and fast_paths
        self.weights_dtype = weights_dtype
        self.stop_after_steps = stop_after_steps
        self._dev_data = None
        self._details = {}
        self.timings: dict[str, dict] = {}

    def details(self, kind: str) -> dict:
        return {f"{kind}_details": self._details.get(kind, {})}

    def _data_on_device(self):
        if self._dev_data is None:
            images, labels = self.training_data()
            self._dev_data = images.to(self.device), labels.to(self.device)
        return self._dev_data

    def schedule(self, cfg):
        s = make_schedule(cfg.schedule, cfg.T)
        return Schedule(s.betas.to(self.device), s.name) if self.fast and self.cuda else s

    def train(self, cfg, run_dir: Path, deadline=None, must_finish=False, stop_at=None) -> TrainOutcome:
        """The package's training loop in one call, with its fast paths, stopping in time for the deadline
        or at step `stop_at` (checkpointed with the full fp32 state: a later call resumes it exactly)."""
        t_call = time.monotonic()
        step0 = checkpointed_steps(run_dir)
        target = cfg.iterations if stop_at is None else min(stop_at, cfg.iterations)
        stop_after = self.stop_after_steps
        if stop_at is not None:
            stop_after = max(0, target - step0) if stop_after is None else min(stop_after, max(0, target - step0))
        if not self.fast:
            paths = training.FastPaths()
        elif self.cuda:
            paths = training.FastPaths.for_device(self.device)
            paths = dataclasses.replace(paths, cuda_graph=paths.cuda_graph and self.cuda_graphs)
        else:                      # --fast-paths on without CUDA: bf16 autocast runs on the CPU too
            paths = training.FastPaths(autocast="bfloat16", trusted_inputs=True)
        step_fn = paths.step_fn()
        state = training.train(cfg, run_dir, device=self.device, data=self._data_on_device(), progress=self.progress,
                               keep=1, stop_after=stop_after, fast=paths, step_fn=step_fn,
                               deadline=deadline, must_finish=must_finish)
        seconds = time.monotonic() - t_call
        finished = state.step >= target
        stop_reason = "" if finished else state.stop_reason or \
            f"stopped after {self.stop_after_steps} steps (--stop-after-steps)"
        per_step = state.seconds_per_step
        graphed = isinstance(step_fn, training.CudaGraphStep) and step_fn.graph is not None
        self._details["train"] = {
            "fast_paths": self.fast, "autocast": paths.autocast, "channels_last": True, "tf32": paths.tf32,
            "host_syncs_skipped": paths.trusted_inputs, "cuda_graph": graphed,
            "notes": [step_fn.note] if getattr(step_fn, "note", "") else [],
            "ms_per_step_recent": round(per_step * 1e3, 3) if per_step else None}
        self.log(f"  {state.step - step0} steps in {seconds:.1f} s"
            + (f" ({per_step * 1e3:.2f} ms/step recently)" if per_step else "")
            + ("" if finished else f"; stopped at step {state.step}: {stop_reason}"))
        return TrainOutcome(state, finished, state.step, state.step - step0, seconds, stop_reason)

    def save_model(self, path: Path, cfg, state) -> Path:
        """The EMA weights, stored as `weights_dtype` (float16 halves the file; the samples below are
        drawn from this very file, and the network runs in bf16 anyway)."""
        dtype = getattr(torch, self.weights_dtype)
        sd = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
              for k, v in state.ema.model.state_dict().items()}
        return save_model_file(path, cfg, sd, state.step, weights_dtype=self.weights_dtype)

    def load_model(self, path):
        model, cfg = super().load_model(path)
        if self.fast:
            model = Autocast(_channels_last(model), self.device.type).eval().requires_grad_(False)
        return model, cfg

    def probe_sample_rate(self, model, sched, y, w):
        """Time a few guided network passes at the batch's size: seconds per image per pass."""
        from ddpm_lite.guidance import guided_eps
        x = torch.randn((len(y), 1, 28, 28)).to(self.device)
        t = torch.full((len(y),), sched.T // 2, dtype=torch.long, device=self.device)
        yy = y.to(self.device)
        with torch.inference_mode():
            guided_eps(model, x, t, yy, w)                  # warm-up (cudnn picks its kernels)
            if self.cuda:
                torch.cuda.synchronize()
            t0 = time.monotonic()
            for _ in range(3):
                guided_eps(model, x, t, yy, w)
            if self.cuda:
                torch.cuda.synchronize()
        return (time.monotonic() - t0) / 3 / (len(y) * (2 if w > 0 else 1)) * 1.15   # + the sampler's own work

    def sample_batch(self, model, sched, y, w, sampler, steps, seed, b, progress=False):
        from ddpm_lite.sampling import batch_seed, cpu_noise, sample_batch
        t0 = time.monotonic()
        count = sched.T if sampler == "ancestral" else 1           # x_T, then one draw per step but the last
        prefetch = NoisePrefetch(batch_seed(seed, b), (len(y), 1, 28, 28), count, self.device, pin=self.cuda) \
            if self.fast else contextlib.nullcontext(cpu_noise)
        with prefetch as noise:
            x = sample_batch(model, sched, y, w, sampler, steps, seed, b, noise=noise, progress=progress)
        seconds = time.monotonic() - t0
        self._details["sample"] = {"fast_paths": self.fast, "bf16_autocast": self.fast,
                                   "noise_prefetch": self.fast, "last_batch_seconds": round(seconds, 2)}
        self.log(f"  batch {b}: {len(y)} images in {seconds:.1f} s")
        return x
