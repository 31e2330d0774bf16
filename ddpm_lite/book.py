"""Helpers that the book's notebooks share: small-settings switch, paths, the shipped models.

Plumbing module (hand-written).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SMALL", "REPOSITORY", "repo_root", "results_dir", "assets_dir", "pretrained_path", "result_bytes", "load_result",
           "load_result_arrays"]

#: Where the book's repository lives (the same as `repository.url` in _config.yml; a test checks it).
REPOSITORY = "https://github.com/ddpm-lite/ddpm_lite"

#: Set DDPM_LITE_SMALL=1 (CI does) to run every notebook at small settings in seconds.
SMALL = os.environ.get("DDPM_LITE_SMALL", "") not in ("", "0")


def repo_root() -> Path:
    """The repository root when running from a clone (the folder holding `results/`)."""
    return Path(__file__).resolve().parent.parent


def results_dir() -> Path:
    return repo_root() / "results"


def assets_dir() -> Path:
    """Files shipped inside the package (pretrained diffusion model, IS classifier)."""
    return Path(__file__).resolve().parent / "assets"


def pretrained_path() -> Path | None:
    """The shipped pretrained diffusion model, or None when this install has none."""
    p = assets_dir() / "pretrained.pt"
    return p if p.is_file() else None


def _raw_url(name: str) -> str:
    return REPOSITORY.replace("https://github.com/", "https://raw.githubusercontent.com/") + f"/main/results/{name}"


# files fetched from the repository in this session: a chapter reads reference.json many times
_FETCHED: dict = {}


def result_bytes(name: str) -> bytes:
    """The bytes of a committed results file (`results/NAME`) that a chapter shows.

    Read from the clone when there is one. A pip-installed package (Colab) has no `results/`
    folder, so the file is then fetched from the repository instead, once per session; offline, the
    error says so and what to do. Local files are read afresh each time (a script may rewrite them).
    """
    from .errors import DDPMLiteError
    local = results_dir() / name
    if local.is_file():
        return local.read_bytes()
    if name in _FETCHED:
        return _FETCHED[name]
    import urllib.request
    try:
        with urllib.request.urlopen(_raw_url(name), timeout=30) as r:
            _FETCHED[name] = r.read()
            return _FETCHED[name]
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
