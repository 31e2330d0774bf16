"""Helpers that the book's notebooks share: small-settings switch, paths, the shipped models.

Plumbing module (hand-written).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SMALL", "repo_root", "results_dir", "assets_dir", "pretrained_path"]

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
