"""One dataclass holds every setting of a run; named presets fill it in.

Plumbing module (hand-written); chapter 5 explains each field. Validation happens before any
work starts, and every error names the field and the allowed values.

    cfg = get_config("quick", iterations=500)          # from Python
    ddpm-lite train --preset quick iterations=500      # from the command line
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields

from .errors import ConfigError

__all__ = ["Config", "PRESETS", "SAMPLING_FIELDS", "get_config", "parse_overrides", "with_defaults"]


# Sampling defaults: how a model is sampled unless a command says otherwise (the w it was tuned at,
# its sampler). They do not change training; every sample and evaluation file records what was used.
SAMPLING_FIELDS = ("w", "null_at_sampling", "sampler", "sample_steps")


@dataclass(frozen=True)
class Config:
    # --- data (chapter 1)
    dataset: str = "mnist"               # "mnist", or "fashion" for Fashion-MNIST (same shape, 10 classes)
    # --- model (chapter 3)
    model: str = "improved"              # "paper": the paper's U-Net; "improved": residual GroupNorm/SiLU blocks
    channels: tuple = (16, 32, 64)       # channels at 28x28, 14x14 and 7x7
    attention: bool = False              # self-attention at 7x7 (improved model only)
    time_dim: int = 64                   # width of the time and label embeddings
    # --- diffusion (chapters 1-2)
    schedule: str = "linear"             # "linear" (1e-4 .. 0.02) or "cosine" (Nichol & Dhariwal)
    T: int = 1000                        # number of diffusion steps
    # --- guidance (chapter 4)
    p_uncond: float = 0.1                # probability of dropping a sample's label in training
    label_drop: str = "per_sample"       # "per_batch" drops whole batches at once (a defect, chapter 10)
    null_at_sampling: str = "learned"    # "omitted": zero label embedding when sampling unconditionally
                                         #   (a defect of the paper's code, chapter 10)
    w: float = 2.0                       # guidance weight at sampling time (eq 6)
    # --- training (chapter 5)
    loss: str = "l2"                     # "l1" (the paper's) or "l2" (Ho et al.)
    prediction: str = "eps"              # what the network predicts: "eps" (the noise) or "v" (chapter 12)
    loss_weight: str = "none"            # "none" or "min_snr": min(SNR, snr_gamma) weighting (chapter 12)
    snr_gamma: float = 5.0               # the cap gamma of min-SNR weighting
    batch_size: int = 64
    iterations: int = 1500
    lr: float = 2e-3
    lr_schedule: str = "constant"        # "constant" or "cosine" (decays to 0 at `iterations`, chapter 12)
    warmup: int = 0                      # steps of linear learning-rate warm-up (chapter 12)
    optimizer: str = "adamw"             # "adam" or "adamw"
    weight_decay: float = 0.0
    ema_decay: float = 0.995             # 0 means the EMA model is the raw model
    grad_clip: float = 1.0               # max gradient norm; 0 turns clipping off
    seed: int = 0
    checkpoint_every: int = 250          # steps between checkpoints
    # --- sampling (chapter 6)
    sampler: str = "ddim"                # "ancestral" (Algorithm 2), "ddim" or "dpm++" (DPM-Solver++(2M))
    sample_steps: int = 50               # DDIM steps (ancestral always takes T)

    def __post_init__(self):
        validate(self)

    def replace(self, **changes) -> "Config":
        return get_config(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d


_CHOICES = {"dataset": ("mnist", "fashion"), "model": ("paper", "improved"), "schedule": ("linear", "cosine"), "loss": ("l1", "l2"),
            "optimizer": ("adam", "adamw"),
            "prediction": ("eps", "v"), "loss_weight": ("none", "min_snr"), "lr_schedule": ("constant", "cosine"),
            "sampler": ("ancestral", "ddim", "dpm++"),
            "label_drop": ("per_sample", "per_batch"), "null_at_sampling": ("learned", "omitted")}


def _check(ok: bool, name: str, value, rule: str):
    if not ok:
        raise ConfigError(f"config field {name!r} = {value!r} is invalid: {rule}.")


def validate(cfg: Config) -> None:
    for name, choices in _CHOICES.items():
        v = getattr(cfg, name)
        _check(v in choices, name, v, f"choose one of {', '.join(choices)}")
    for name in ("T", "batch_size", "iterations", "time_dim", "checkpoint_every", "sample_steps", "seed", "warmup"):
        v = getattr(cfg, name)
        _check(isinstance(v, int) and not isinstance(v, bool), name, v, "must be an integer")
    for name in ("p_uncond", "w", "lr", "weight_decay", "ema_decay", "grad_clip", "snr_gamma"):
        v = getattr(cfg, name)
        _check(isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"),
               name, v, "must be a finite number")
    _check(isinstance(cfg.attention, bool), "attention", cfg.attention, "must be true or false")
    _check(cfg.T >= 1, "T", cfg.T, "needs at least 1 diffusion step")
    _check(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "must be at least 1")
    _check(cfg.iterations >= 0, "iterations", cfg.iterations, "must be 0 or more")
    _check(cfg.checkpoint_every >= 1, "checkpoint_every", cfg.checkpoint_every, "must be at least 1")
    _check(cfg.seed >= 0, "seed", cfg.seed, "must be 0 or more")
    _check(0.0 <= cfg.p_uncond <= 1.0, "p_uncond", cfg.p_uncond, "is a probability, in [0, 1]")
    _check(cfg.w >= 0, "w", cfg.w, "guidance weight must be 0 or more (0 = plain conditional sampling)")
    _check(cfg.lr > 0, "lr", cfg.lr, "learning rate must be positive")
    _check(cfg.warmup >= 0, "warmup", cfg.warmup, "must be 0 (no warm-up) or more steps")
    _check(cfg.snr_gamma > 0, "snr_gamma", cfg.snr_gamma, "the min-SNR cap must be positive (5 is usual)")
    _check(cfg.weight_decay >= 0, "weight_decay", cfg.weight_decay, "must be 0 or more")
    _check(0.0 <= cfg.ema_decay < 1.0, "ema_decay", cfg.ema_decay, "must be in [0, 1)")
    _check(cfg.grad_clip >= 0, "grad_clip", cfg.grad_clip, "must be 0 (off) or positive")
    _check(cfg.time_dim >= 2 and cfg.time_dim % 2 == 0, "time_dim", cfg.time_dim, "must be an even number >= 2")
    _check(isinstance(cfg.channels, tuple) and len(cfg.channels) == 3
           and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in cfg.channels),
           "channels", cfg.channels, "give three positive integers, e.g. 16,32,64")
    if cfg.model == "improved":
        _check(all(c % 8 == 0 for c in cfg.channels), "channels", cfg.channels,
               "the improved model uses GroupNorm with 8 groups: each must be a multiple of 8")
    else:
        _check(not cfg.attention, "attention", cfg.attention, "the paper's U-Net has no attention; use model=improved")
    _check(1 <= cfg.sample_steps <= cfg.T, "sample_steps", cfg.sample_steps,
           f"DDIM needs between 1 and T = {cfg.T} steps")


PRESETS: dict[str, dict] = {
    # Section 3 of the paper: its U-Net (64/128/256 channels, ReLU, max-pool), linear schedule,
    # T = 1000, L1 loss, batch 32, 100K iterations, w = 0.2, ancestral sampling. The learning
    # rate and label-drop probability are not given in the paper; we use common values.
    "paper": dict(model="paper", channels=(64, 128, 256), attention=False, time_dim=128,
                  schedule="linear", T=1000, p_uncond=0.1, w=0.2, loss="l1", batch_size=32,
                  iterations=100_000, lr=2e-4, optimizer="adam", ema_decay=0.0, grad_clip=0.0,
                  checkpoint_every=5000, sampler="ancestral", sample_steps=1000),
    # Chapter 12's recipe, sized for two CPU cores: at most 15 minutes of training. The changes that
    # its screening (plans/recipes.json) found better than chapter 5's recipe: the v target, and a
    # 100-step warm-up with cosine decay. (Chapter 5's recipe: prediction="eps",
    # lr_schedule="constant", warmup=0, iterations=1500.)
    "quick": dict(model="improved", channels=(16, 32, 64), attention=False, time_dim=64,
                  schedule="linear", T=1000, p_uncond=0.1, w=2.0, loss="l2", prediction="v", batch_size=64,
                  iterations=3000, lr=2e-3, lr_schedule="cosine", warmup=100, optimizer="adamw",
                  ema_decay=0.995, grad_clip=1.0, checkpoint_every=250, sampler="ddim", sample_steps=50),
    # Chapter 12's recipe at longer length: at most 2 hours of training on two CPU cores. The same
    # network and changes as `quick` (the screening found width, attention and batch 128 worse at
    # equal minutes), trained six times as many steps with a longer EMA window.
    "best": dict(model="improved", channels=(16, 32, 64), attention=False, time_dim=64,
                 schedule="linear", T=1000, p_uncond=0.1, w=2.0, loss="l2", prediction="v", batch_size=64,
                 iterations=18_000, lr=2e-3, lr_schedule="cosine", warmup=100, optimizer="adamw",
                 ema_decay=0.999, grad_clip=1.0, checkpoint_every=1000, sampler="ddim", sample_steps=50),
}


def with_defaults(stored: dict) -> dict:
    """A config dict written by an older version, with the fields added since at their defaults."""
    return {**Config().to_dict(), **stored}


def _coerce(name: str, value, default):
    """Turn a command-line string into the type of the field's default."""
    if not isinstance(value, str):
        return tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value
    s = value.strip()
    try:
        if isinstance(default, bool):
            if s.lower() in ("1", "true", "yes", "on"):
                return True
            if s.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            f = float(s)
            if not math.isfinite(f) or f != int(f):
                raise ValueError
            return int(f)
        if isinstance(default, float):
            if not math.isfinite(f := float(s)):
                raise ValueError
            return f
        if isinstance(default, tuple):
            return tuple(int(c) for c in s.strip("()[]").split(",") if c.strip())
    except ValueError:
        kind = {bool: "true or false", int: "an integer", float: "a finite number",
                tuple: "comma-separated integers"}[type(default)]
        raise ConfigError(f"config field {name!r} = {value!r} is invalid: must be {kind}.") from None
    return s


def get_config(preset: "str | Config" = "quick", **overrides) -> Config:
    """A validated Config: a preset name (or a Config) with fields overridden by keyword."""
    if isinstance(preset, Config):
        base = preset.to_dict()
    elif preset in PRESETS:
        base = dict(PRESETS[preset])
    else:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    defaults = {f.name: f.default for f in fields(Config)}
    for name, value in overrides.items():
        if name not in defaults:
            import difflib
            near = difflib.get_close_matches(name, defaults, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"unknown config field {name!r}.{hint} Known fields: {', '.join(defaults)}.")
        base[name] = _coerce(name, value, defaults[name])
    base["channels"] = tuple(base.get("channels", defaults["channels"]))
    return Config(**base)


def parse_overrides(items: list[str]) -> dict[str, str]:
    """['lr=1e-3', 'T=500'] -> {'lr': '1e-3', 'T': '500'}; values are coerced by get_config."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"cannot read override {item!r}: write it as field=value, e.g. iterations=500.")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out
