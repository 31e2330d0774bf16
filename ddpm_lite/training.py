import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ddpm_lite.checkpoint import checkpoint_path, latest_checkpoint, save_checkpoint, step_checkpoints
from ddpm_lite.config import Config
from ddpm_lite.device import pick_device
from ddpm_lite.errors import CheckpointError, TrainingDiverged
from ddpm_lite.forward import make_schedule, q_sample
from ddpm_lite.guidance import NULL_LABEL
from ddpm_lite.io import provenance, write_json
from ddpm_lite.unet import build_model

def step_generator(seed: int, step: int) -> torch.Generator:
    "The random stream of one training step: a function of (seed, step) alone, so a resumed run repeats it exactly."
    return torch.Generator().manual_seed(seed * 2**32 + step)

@dataclass
class Batch:
    x0: torch.Tensor; y: torch.Tensor; t: torch.Tensor; eps: torch.Tensor

def draw_batch(cfg: Config, step: int, images: torch.Tensor, labels: torch.Tensor,
               rank: int = 0, world_size: int = 1) -> Batch:
    "Algorithm 1, lines 2-4 for one step: images and labels, t ~ U{1..T}, eps ~ N(0, I), labels dropped w.p. p_uncond."
    g = step_generator(cfg.seed, step)
    B = cfg.batch_size
    idx = torch.randint(len(images), (B,), generator=g)
    t = torch.randint(cfg.T, (B,), generator=g)                 # 0-based: index t is the paper's step t+1
    eps = torch.randn((B, *images.shape[1:]), generator=g)
    drop = torch.rand(B, generator=g) < cfg.p_uncond           # per sample, not per batch
    y = torch.where(drop, NULL_LABEL, labels[idx])
    part = slice(rank * B // world_size, (rank + 1) * B // world_size)   # this rank's shard of the global batch
    dev = images.device
    return Batch(images[idx[part].to(dev)], y[part].to(dev), t[part].to(dev), eps[part].to(dev))

def diffusion_loss(model: nn.Module, sched, batch: Batch, loss: str = "l2") -> torch.Tensor:
    "Algorithm 1, lines 5-6: noise the images (eq 4) and compare the predicted noise with the true one."
    xt = q_sample(sched, batch.x0, batch.t, batch.eps)
    eps_hat = model(xt, batch.t, batch.y)
    # L = E || eps - eps_theta(x_t, t, c) ||  (L1 in the paper, L2 in Ho et al.)
    return F.l1_loss(eps_hat, batch.eps) if loss == "l1" else F.mse_loss(eps_hat, batch.eps)

class EMA:
    """An exponential moving average of a model's weights: theta_ema <- d theta_ema + (1 - d) theta.

    The decay warms up as d_n = min(decay, (1 + n) / (10 + n)) after n updates, so that a short run's
    average is not dominated by the random initial weights (0.999^1000 is still 0.37)."""
    def __init__(self, model: nn.Module, decay: float):
        import copy
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, n: int) -> float:
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module, n: int):
        "The n-th update (n counts from 0; the training step works, which keeps resumed runs exact)."
        ema_p, p = list(self.model.parameters()), list(model.parameters())
        torch._foreach_lerp_(ema_p, p, 1.0 - self.decay_at(n))
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)

def make_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

def train_step(model, opt, sched, batch: Batch, cfg: Config) -> torch.Tensor:
    "Algorithm 1, lines 5-8: loss, gradient, optional clipping, optimizer step. Returns the detached loss."
    loss = diffusion_loss(model, sched, batch, cfg.loss)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss.detach()

@dataclass
class TrainState:
    "Everything a run needs to continue exactly where it stopped."
    model: nn.Module
    ema: EMA
    opt: torch.optim.Optimizer
    step: int = 0
    losses: list = field(default_factory=list)

def new_state(cfg: Config, device) -> TrainState:
    torch.manual_seed(cfg.seed)                                  # the initial weights depend on the seed alone
    model = build_model(cfg).to(device)
    return TrainState(model, EMA(model, cfg.ema_decay), make_optimizer(cfg, model))

def state_dict(state: TrainState, cfg: Config) -> dict:
    return {"config": cfg.to_dict(), "step": state.step, "model": state.model.state_dict(),
            "ema": state.ema.model.state_dict(), "optimizer": state.opt.state_dict(),
            "losses": torch.tensor(state.losses, dtype=torch.float64)}

def restore(state: TrainState, ckpt: dict, cfg: Config, path) -> TrainState:
    "Load a checkpoint into a fresh state, refusing one whose config differs from this run's."
    if ckpt["config"] != cfg.to_dict():
        diff = {k: (ckpt["config"].get(k), v) for k, v in cfg.to_dict().items() if ckpt["config"].get(k) != v}
        raise CheckpointError(f"{path} was written with a different config {diff} (checkpoint vs now). "
                              "Use a new run name, or the same settings to resume.")
    state.model.load_state_dict(ckpt["model"])
    state.ema.model.load_state_dict(ckpt["ema"])
    state.opt.load_state_dict(ckpt["optimizer"])
    state.step, state.losses = int(ckpt["step"]), ckpt["losses"].tolist()
    return state

class _StopFlag:
    "Turns Ctrl-C (SIGINT) into a request to stop at the next step boundary, where the state is consistent."
    def __init__(self):
        self.requested, self._old = False, None

    def __enter__(self):
        import signal, threading
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:                      # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        import signal
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

def train(cfg: Config, run_dir=None, device="auto", data=None, progress: bool = True,
          keep: int = 2, stop_after: int | None = None) -> TrainState:
    """Algorithm 1 as a resumable loop: train `cfg.iterations` steps, checkpointing into `run_dir`.

    If `run_dir` holds checkpoints, training continues from the newest one that loads. Ctrl-C
    saves a checkpoint at the end of the current step and raises KeyboardInterrupt.
    `data` is (float images [N, 1, 28, 28] in [-1, 1], labels [N]); MNIST's training set by default.
    `stop_after` ends the call after that many steps of this call (the run can be resumed later).
    """
    from tqdm.auto import tqdm
    from ddpm_lite.data import load_mnist_float
    device = pick_device(device)
    images, labels = data if data is not None else load_mnist_float("train")
    images, labels = images.to(device), labels.to(device)
    sched = make_schedule(cfg.schedule, cfg.T)
    state = new_state(cfg, device)
    if run_dir is not None:
        run_dir = Path(run_dir)
        write_json(run_dir / "config.json", cfg.to_dict())
        if (found := latest_checkpoint(run_dir)) is not None:
            restore(state, found[1], cfg, found[0])
    end = cfg.iterations if stop_after is None else min(cfg.iterations, state.step + stop_after)
    save = lambda: save_checkpoint(checkpoint_path(run_dir, state.step), **state_dict(state, cfg))
    bar = tqdm(total=cfg.iterations, initial=state.step, disable=not progress, desc="train", unit="it")
    state.model.train()
    pending = []
    with _StopFlag() as stop:
        while state.step < end:
            batch = draw_batch(cfg, state.step, images, labels)
            pending.append(train_step(state.model, state.opt, sched, batch, cfg))
            state.ema.update(state.model, state.step)
            state.step += 1
            bar.update(1)
            at_checkpoint = run_dir is not None and (state.step % cfg.checkpoint_every == 0
                                                     or state.step == end or stop.requested)
            if len(pending) == 10 or at_checkpoint or state.step == end:
                _record_losses(state, pending, bar)    # raises TrainingDiverged on NaN/inf
                pending = []
            if at_checkpoint:
                save()
                for old in step_checkpoints(run_dir)[:-keep]:
                    old.unlink(missing_ok=True)
            if stop.requested:
                bar.close()
                raise KeyboardInterrupt(f"stopped at step {state.step}"
                                        + (f"; checkpoint saved in {run_dir}" if run_dir else ""))
    bar.close()
    return state

def _record_losses(state: TrainState, pending: list, bar) -> None:
    "Move the last few losses to the history (one device sync per 10 steps), stopping on NaN or inf."
    values = torch.stack(pending).tolist()
    if not all(math.isfinite(v) for v in values):
        bar.close()
        raise TrainingDiverged(f"the loss became {values[-1]} by step {state.step}; stopping. The last good "
                               "checkpoint is kept. Lower the learning rate (lr) or clip gradients (grad_clip=1).")
    state.losses.extend(values)
    bar.set_postfix(loss=f"{sum(values) / len(values):.4f}")
