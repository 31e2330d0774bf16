"""Checkpoints: written atomically, read without executing code, checked before use.

Plumbing module (hand-written). A checkpoint is a plain dict of tensors, numbers and strings
saved with `torch.save` and read with `torch.load(weights_only=True)`, which refuses any
pickle that would build arbitrary objects (and so never runs code hidden in a file).
"""
from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from .errors import CheckpointError
from .io import atomic_torch_save, remove_stale_temp_files

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "step_checkpoints", "latest_checkpoint",
           "checkpoint_path", "checkpoint_step", "save_model_file", "config_from_checkpoint", "resolve_model_file",
           "load_model"]

FORMAT = "ddpm_lite.checkpoint/1"


def checkpoint_path(run_dir, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}.pt"


def checkpoint_step(path) -> int:
    """The step a periodic checkpoint was saved at, read from its name (the inverse of checkpoint_path)."""
    return int(Path(path).stem.split("_")[1])


def save_checkpoint(path, **content) -> Path:
    """Save `content` (config dict, state dicts, step, losses, ...) atomically under the format tag."""
    return atomic_torch_save({"format": FORMAT, **content}, path)


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a ddpm_lite checkpoint safely; every failure is a CheckpointError that names the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}. Check the path, or train a model first "
                              "(`ddpm-lite train --preset quick`).")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was not written completely. "
                              "Delete it; training resumes from the previous checkpoint.")
    if not zipfile.is_zipfile(path):        # torch.save always writes a zip archive
        raise CheckpointError(f"checkpoint {path} is damaged or not a PyTorch file (not a zip archive: "
                              "truncated, overwritten or another format). Delete it or pass another file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"refused to load {path}: it contains Python objects other than tensors and "
                              f"plain values, which could run code when loaded ({str(e).splitlines()[0][:120]}). "
                              "Only load checkpoints written by ddpm_lite from people you trust.") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} is damaged or not a PyTorch file "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'no detail'}). "
                              "Delete it or pass another file.") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a PyTorch file but not a ddpm_lite checkpoint (no '{FORMAT}' tag). "
                              "Pass a file written by `ddpm-lite train`.")
    return ckpt


def step_checkpoints(run_dir) -> list[Path]:
    """The run's periodic checkpoints, oldest first."""
    return sorted((Path(run_dir) / "checkpoints").glob("step_*.pt"))


def latest_checkpoint(run_dir) -> tuple[Path, dict] | None:
    """The newest checkpoint of a run that loads, falling back past damaged ones (with a warning).

    Called when a run resumes, so it also clears temporary files left by a killed writer.
    """
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        remove_stale_temp_files(folder)
    for path in reversed(step_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            warnings.warn(f"skipping damaged checkpoint: {e}")
    return None


def save_model_file(path, cfg, ema_state: dict, step: int, **extra) -> Path:
    """A slim file for sampling: the EMA weights and the config, no optimizer state."""
    return save_checkpoint(path, kind="model", config=cfg.to_dict(), ema=ema_state, step=step, **extra)


def config_from_checkpoint(ckpt: dict, path):
    """Rebuild the Config stored in a checkpoint (fields added since it was written take their defaults)."""
    from .config import Config, ConfigError, get_config
    stored = dict(ckpt.get("config") or {})
    known = {f for f in Config.__dataclass_fields__}
    unknown = sorted(set(stored) - known)
    if unknown or not stored:
        raise CheckpointError(f"{path} holds a config this version of ddpm_lite does not know "
                              f"(fields {unknown or 'missing'}). Upgrade ddpm_lite or use another file.")
    try:
        return get_config(Config(), **stored)
    except ConfigError as e:
        raise CheckpointError(f"{path} holds an invalid config: {e}") from None


def resolve_model_file(source) -> Path:
    """A model file from a shipped model's name ('best' or its alias 'pretrained', 'quick', 'chapter5'), a run
    folder (its model.pt, else its newest checkpoint) or a path."""
    from .book import pretrained_path, shipped_name
    real = shipped_name(source)
    if real is not None:
        p = pretrained_path(real)
        if p is None:
            raise CheckpointError(f"this install of ddpm_lite ships no {source} model "
                                  f"(ddpm_lite/assets/{real}.pt); train one with `ddpm-lite train`.")
        return p
    source = Path(source)
    if source.is_dir():
        if (source / "model.pt").is_file():
            return source / "model.pt"
        found = step_checkpoints(source)
        if not found:
            raise CheckpointError(f"{source} holds no model.pt and no checkpoints/step_*.pt; "
                                  "is it a run folder written by `ddpm-lite train`?")
        return found[-1]
    return source


def load_model(source, device="cpu"):
    """(EMA model in eval mode, Config) from a shipped model's name, a run folder or a checkpoint file."""
    from .unet import build_model
    path = resolve_model_file(source)
    ckpt = load_checkpoint(path)
    cfg = config_from_checkpoint(ckpt, path)
    if "ema" not in ckpt:
        raise CheckpointError(f"{path} is a ddpm_lite file without model weights ('ema' is missing).")
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["ema"])
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)[:200]
        raise CheckpointError(f"{path}: its weights do not fit the architecture its config describes "
                              f"({cfg.model}, channels {cfg.channels}, attention={cfg.attention}): {first}. "
                              "The file was written by another model or altered.") from None
    from .device import fast_layout
    from .recipes import noise_predictor
    model = noise_predictor(fast_layout(model.to(device)), cfg)   # a v-network answers in eps (chapter 12)
    return model.eval().requires_grad_(False), cfg
