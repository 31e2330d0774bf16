"""How a plan's units train and sample on a device: the book's own code, which the GPU script extends.

Plumbing module (hand-written). The runner asks a Backend to train a model (in chunks that stop
before a deadline), to save and load it, and to draw one batch of a sample set;
gpu_backend.FastBackend (run by scripts/gpu_run.py) subclasses it with the GPU's speed-ups and
writes the same files.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .estimate import format_seconds
from .state import checkpointed_steps

__all__ = ["TrainOutcome", "Backend"]


@dataclass
class TrainOutcome:
    """Where a call to Backend.train left a run: finished or not, at which step, and why it stopped."""
    state: object            # the TrainState (None when the unit was deferred before it started)
    finished: bool
    step: int
    steps_this_call: int = 0
    seconds: float = 0.0
    deferred: str = ""       # why training stopped early ("" when it finished or was never limited)


class Backend:
    """The book's own code: `ddpm_lite.training.train` and the chapter 6 samplers, on any device.

    `ddpm_lite.experiments.gpu_backend.FastBackend` subclasses it with the GPU's speed-ups. Every
    method is deterministic given the plan's seeds (on one CPU thread, bit for bit).
    """
    name = "ddpm_lite"
    weights_dtype = "float32"

    def __init__(self, device="auto", progress: bool = True, data=None, log=print):
        from ..device import pick_device
        self.device = pick_device(device)
        self.progress = progress
        self._data = data
        self.log = log

    def training_data(self, dataset: str = "mnist"):
        """The training images of `dataset` (those passed in at construction stand for MNIST's), loaded once."""
        if not isinstance(self._data, dict):
            self._data = {"mnist": self._data} if self._data is not None else {}
        if dataset not in self._data:
            from ..data import load_mnist_float
            self._data[dataset] = load_mnist_float("train", dataset=dataset)
        return self._data[dataset]

    def train(self, cfg, run_dir: Path, deadline: float | None = None, must_finish: bool = False,
              stop_at: int | None = None) -> TrainOutcome:
        """Train (or resume) to cfg.iterations, or to step `stop_at` before it (a snapshot's step; the
        outcome is `finished` when that step is reached); with a deadline, in chunks that stop before it.

        With must_finish, a run that the first chunk shows cannot end by the deadline stops there
        (checkpointed) and reports why, so that cheaper units can use the time first."""
        from ..training import train
        step0 = step = checkpointed_steps(run_dir)
        target = cfg.iterations if stop_at is None else min(stop_at, cfg.iterations)
        t0 = time.monotonic()
        if deadline is None:
            state = train(cfg, run_dir, device=self.device, data=self.training_data(cfg.dataset), progress=self.progress,
                          stop_after=None if stop_at is None else max(0, target - step))
            return TrainOutcome(state, state.step >= target, state.step, state.step - step0, time.monotonic() - t0)
        per_step, measured_s, state = None, 0.0, None
        while step < target:
            left = deadline - time.monotonic() - 2.0          # keep time to write the checkpoint
            need = None if per_step is None else (target - step) * per_step
            # decide only on a measurement of some seconds: a short first chunk includes the set-up
            if must_finish and need is not None and need > left and measured_s >= 5:
                return TrainOutcome(state, False, step, step - step0, time.monotonic() - t0,
                                    f"needs ~{format_seconds(need)}, {format_seconds(max(0, left))} left")
            if per_step is None:
                chunk = min(target - step, 20)
            else:
                chunk = min(target - step, int(left / per_step), max(1, int(60 / per_step)))
            if chunk < 1:
                return TrainOutcome(state, False, step, step - step0, time.monotonic() - t0, "out of time")
            c0 = time.monotonic()
            state = train(cfg, run_dir, device=self.device, data=self.training_data(cfg.dataset), progress=self.progress,
                          stop_after=chunk)
            done, step = state.step - step, state.step
            if done > 0:
                measured_s = time.monotonic() - c0
                per_step = measured_s / done
        if state is None:                                  # already trained: load the final state
            state = train(cfg, run_dir, device=self.device, data=self.training_data(cfg.dataset), progress=False, stop_after=0)
        return TrainOutcome(state, True, step, step - step0, time.monotonic() - t0)

    def details(self, kind: str) -> dict:
        """Extra facts for the results file of the last unit of this kind (speed-ups used, timings)."""
        return {}

    def save_model(self, path: Path, cfg, state) -> Path:
        from ..checkpoint import save_model_file
        return save_model_file(path, cfg, state.ema.model.state_dict(), state.step)

    def load_model(self, path):
        from ..checkpoint import load_model
        return load_model(path, self.device)

    def schedule(self, cfg):
        from ..forward import make_schedule
        return make_schedule(cfg.schedule, cfg.T)

    def probe_sample_rate(self, model, sched, y, w: float) -> float | None:
        """Seconds per image per network pass, timed on a few steps before a long batch (None: not measured)."""
        return None

    def sample_batch(self, model, sched, y, w: float, sampler: str, steps: int, seed: int, b: int,
                     progress: bool = False):
        """Batch b of a sample set: `ddpm_lite.sampling.sample_batch`, float32 on the CPU."""
        from ..sampling import sample_batch
        return sample_batch(model, sched, y, w, sampler, steps, seed, b, progress=progress)
