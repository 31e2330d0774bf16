"""Helpers that the book's notebooks share: small-settings switch, paths, the shipped models.

A chapter runs the same from a clone and from a pip-installed package (Colab): committed results
are read with `load_result` (fetched when there is no clone), files it writes go to `work_dir()`
or `output_dir()`, plans come from `plan_file`.

Plumbing module (hand-written).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SMALL", "REPOSITORY", "in_clone", "repo_root", "work_dir", "results_dir", "output_dir", "assets_dir",
           "pretrained_path", "shipped_name", "plan_file", "results_url", "result_bytes", "load_result", "load_result_arrays",
           "full_run_estimate"]

#: Where the book's repository lives (the same as `repository.url` in _config.yml; a test checks it).
REPOSITORY = "https://github.com/ddpm-lite/ddpm_lite"

#: Set DDPM_LITE_SMALL=1 (CI does) to run every notebook at small settings in seconds.
SMALL = os.environ.get("DDPM_LITE_SMALL", "") not in ("", "0")


def repo_root() -> Path:
    """The repository root when running from a clone (the folder holding `results/`).

    For an installed package this is the folder holding the package (site-packages): use it
    only after `in_clone()` says True."""
    return Path(__file__).resolve().parent.parent


def in_clone() -> bool:
    """True when this package is imported from a clone of the repository (not a pip install)."""
    root = repo_root()
    return (root / "pyproject.toml").is_file() and (root / "results").is_dir() and (root / "notebooks").is_dir()


def work_dir() -> Path:
    """The folder a chapter writes its files into (run folders, plan copies, results it recomputes).

    $DDPM_LITE_WORKDIR when set; else the clone's root when running from a clone; else the current
    directory (in Colab, /content). Never the installed package's folder."""
    env = os.environ.get("DDPM_LITE_WORKDIR", "")
    if env:
        return Path(env).expanduser()
    return repo_root() if in_clone() else Path.cwd()


def results_dir() -> Path:
    """The `results/` folder: the clone's committed one, or for an installed package `results/`
    under `work_dir()` (what a reader recomputes; committed results are fetched by `load_result`)."""
    return repo_root() / "results" if in_clone() else work_dir() / "results"


def output_dir() -> Path:
    """Where a chapter writes a results file it has just computed at full settings: `results_dir()`.

    In a clone a full re-run thereby refreshes the committed file; an installed package writes
    under `work_dir()`. The folder is created."""
    d = results_dir()
    d.mkdir(parents=True, exist_ok=True)
    return d


def assets_dir() -> Path:
    """Files shipped inside the package (the trained diffusion models, the classifiers)."""
    return Path(__file__).resolve().parent / "assets"


# The models shipped in ddpm_lite/assets/: "best" and "quick" (chapter 12's recipe trained for at most 2 hours
# and 15 minutes of a 2-core CPU) and "chapter5" (chapter 5's recipe, the model chapters 6, 7 and 10 sample).
# "pretrained" names the best of them.
SHIPPED_MODELS = ("best", "quick", "chapter5")
MODEL_ALIASES = {"pretrained": "best"}


def shipped_name(name) -> str | None:
    """The shipped model a name stands for (an alias resolved: 'pretrained' -> 'best'), or None."""
    name = MODEL_ALIASES.get(str(name), str(name))
    return name if name in SHIPPED_MODELS else None


def pretrained_path(name: str = "pretrained") -> Path | None:
    """A shipped diffusion model (one of SHIPPED_MODELS or an alias), or None when this install has none."""
    real = shipped_name(name)
    if real is None:
        raise ValueError(f"no shipped model is called {name!r}; choose one of "
                         f"{', '.join((*SHIPPED_MODELS, *MODEL_ALIASES))}.")
    p = assets_dir() / f"{real}.pt"
    return p if p.is_file() else None


def plan_file(name: str) -> Path:
    """The experiment plan `plans/NAME.json` as a path that `ddpm-lite experiments` can be given.

    In a clone: the repository's file. Installed: the copy shipped in the package (package data),
    written to `work_dir()/plans/NAME.json`, so that commands naming `plans/NAME.json` work from
    `work_dir()`. Also written there from a clone when $DDPM_LITE_WORKDIR is set."""
    from .errors import DDPMLiteError
    folder = repo_root() / "plans" if in_clone() else Path(__file__).resolve().parent / "plans"
    source = folder / f"{name}.json"
    if not source.is_file():
        known = sorted(p.stem for p in folder.glob("*.json"))
        raise DDPMLiteError(f"no plan named {name!r} in {folder} (known: {', '.join(known) or 'none'}); "
                            "reinstall ddpm_lite, or give the path of your own plan file.")
    if in_clone() and not os.environ.get("DDPM_LITE_WORKDIR"):
        return source
    target = work_dir() / "plans" / f"{name}.json"
    if not target.is_file() or target.read_bytes() != source.read_bytes():
        from .io import atomic_write_bytes
        atomic_write_bytes(target, source.read_bytes())
    return target


def results_url(name: str = "") -> str:
    """Where committed results are fetched from without a clone: $DDPM_LITE_RESULTS_URL (any URL
    urllib opens, `file://` included) or the repository's `results/` folder on its main branch."""
    base = os.environ.get("DDPM_LITE_RESULTS_URL", "") or (
        REPOSITORY.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/results/")
    return base.rstrip("/") + "/" + name


def _raw_url(name: str) -> str:
    return results_url(name)


# files fetched from the repository in this session: a chapter reads reference.json many times
_FETCHED: dict = {}


def result_bytes(name: str) -> bytes:
    """The bytes of a committed results file (`results/NAME`) that a chapter shows.

    Read from `results_dir()` when the file is there (in a clone: the committed file). A
    pip-installed package (Colab) has no committed results, so the file is then fetched from
    `results_url(NAME)` instead, once per session; offline, the error says so and what to do.
    Local files are read afresh each time (a script may rewrite them).
    """
    from .errors import DDPMLiteError
    local = results_dir() / name
    if local.is_file():
        return local.read_bytes()
    url = _raw_url(name)
    if url in _FETCHED:
        return _FETCHED[url]
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            _FETCHED[url] = r.read()
            return _FETCHED[url]
    except OSError as e:
        raise DDPMLiteError(f"results/{name} is not here and could not be fetched from {_raw_url(name)} "
                            f"({type(e).__name__}). Run the script that writes it (see README.md), or read "
                            "the chapter from a clone of the repository.") from None


def load_result(name: str) -> dict:
    """A committed JSON results file, `results/NAME` (see `result_bytes` for where it comes from)."""
    import json
    from .errors import DDPMLiteError
    try:
        return json.loads(result_bytes(name).decode())
    except ValueError as e:
        raise DDPMLiteError(f"results/{name} is not valid JSON ({e}); restore it with git or rerun the "
                            "script that writes it.") from None


def load_result_arrays(name: str) -> dict:
    """A committed .npz results file (images for figures) as {key: array}; never unpickles."""
    import io
    import numpy as np
    with np.load(io.BytesIO(result_bytes(name)), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def full_run_estimate(preset: str = "paper", device="auto", probe_steps: int = 20) -> dict:
    """What training `preset` for all its iterations would cost on `device`: estimates, labelled so.

    From `results/bench.json`: the preset's GFLOP per training step (counted) and the images per
    second measured on the CPU that wrote the file. On CUDA it also times `probe_steps` steps of
    `ddpm_lite.training.train` here (its GPU fast paths included) on random images and extrapolates;
    an estimate until a full run has measured it. Returns the numbers and a one-line `text`.
    Chapters 5 and 8 show it; only on CUDA does it run anything."""
    import time
    import torch
    from .config import get_config
    from .device import pick_device
    cfg, dev = get_config(preset), pick_device(device)
    bench = load_result("bench.json")
    row = bench.get("training", {}).get(preset)
    out = {"preset": preset, "iterations": cfg.iterations, "batch_size": cfg.batch_size, "device": str(dev),
           "kind": "estimate"}
    parts = []
    if row:
        out["gflop_per_step"] = row["gflop_per_step"]
        out["bench_cpu_hours"] = cfg.iterations * cfg.batch_size / row["images_per_s"] / 3600
        parts.append(f"{row['gflop_per_step']:.1f} GFLOP a step, {row['gflop_per_step'] * cfg.iterations / 1e6:.1f} "
                     f"PFLOP for {cfg.iterations:,} steps (results/bench.json); at the {row['images_per_s']:.0f} img/s "
                     f"measured on {bench['provenance']['hardware']}: about {out['bench_cpu_hours']:.0f} h")
    if dev.type == "cuda":
        from .training import train
        g = torch.Generator().manual_seed(0)
        data = (torch.rand((512, 1, 28, 28), generator=g) * 2 - 1, torch.randint(10, (512,), generator=g))
        times = []
        for n in (5, 5 + probe_steps):            # the difference leaves out start-up and graph capture
            t0 = time.perf_counter()
            train(cfg.replace(iterations=n), device=dev, data=data, progress=False)
            torch.cuda.synchronize(dev)
            times.append(time.perf_counter() - t0)
        per_step = max(times[1] - times[0], 1e-6) / probe_steps
        out.update(gpu=torch.cuda.get_device_name(dev), gpu_ms_per_step=per_step * 1e3,
                   gpu_hours=per_step * cfg.iterations / 3600)
        parts.append(f"on this {out['gpu']}, {probe_steps} timed steps at {per_step * 1e3:.1f} ms each give about "
                     f"{out['gpu_hours'] * 60:.0f} min for the whole run")
    out["text"] = f"Estimated cost of the `{preset}` preset's full training run: " + "; ".join(parts) + "."
    return out
