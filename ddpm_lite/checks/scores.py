"""Property checks of chapter 7: the Inception Score (eq 7).

Plumbing module (hand-written); see ddpm_lite.checks.
"""
from __future__ import annotations

import numpy as np

from .base import _fail, _call

__all__ = ["inception_score_extremes", "inception_score_shuffles_and_bounds"]

# chapter 7: evaluation

def _score(name, inception_score, probs, on, **kw):
    out = _call(name, inception_score, probs, on=on, **kw)
    if not (isinstance(out, tuple) and len(out) == 2):
        _fail(name, "a pair (mean, std) of floats", on, "None" if out is None else f"{out!r}"[:80])
    try:
        return float(out[0]), float(out[1])
    except (TypeError, ValueError):
        _fail(name, "a pair (mean, std) of floats", on, f"{out!r}"[:80])


def inception_score_extremes(inception_score) -> None:
    """IS = 1 when every prediction is uniform; IS = 10 for confident predictions spread evenly over 10 classes."""
    name = "inception_score"
    on = "1000 uniform predictions p(y|x) = 0.1 for each of 10 classes"
    mean, std = _score(name, inception_score, np.full((1000, 10), 0.1), on)
    if abs(mean - 1) > 1e-9 or abs(std) > 1e-9:
        _fail(name, "(1.0, 0.0): a uniform prediction carries no information", on, f"({mean:.6g}, {std:.6g})")
    onehot = np.eye(10)[np.tile(np.arange(10), 100)]
    on = "1000 one-hot predictions, 100 of each class, in the order 0, 1, ..., 9, 0, 1, ..., splits = 10"
    mean, std = _score(name, inception_score, onehot, on, shuffle_seed=None)
    if abs(mean - 10) > 1e-9 or abs(std) > 1e-9:
        _fail(name, "(10.0, 0.0): exp(E_x KL(p(y|x) || p(y))) = exp(log 10) in every split (eq 7)", on,
              f"({mean:.6g}, {std:.6g})", "0 log 0 counts as 0 (scipy.special.rel_entr does this).")


def inception_score_shuffles_and_bounds(inception_score) -> None:
    """Class-ordered predictions are shuffled before splitting, and the score lies between 1 and the class count."""
    name = "inception_score"
    onehot = np.eye(10)[np.repeat(np.arange(10), 1000)]
    on = "10,000 one-hot predictions stored class by class (as sample files are), default shuffle_seed"
    mean, _ = _score(name, inception_score, onehot, on)
    if mean < 9.9:
        _fail(name, "about 10: the rows shuffled with the seed before splitting", on, f"{mean:.4g}")
    p = np.random.default_rng(0).dirichlet(np.full(10, 0.3), size=500)
    on = "500 random predictions over 10 classes"
    mean, _ = _score(name, inception_score, p, on)
    if not 1.0 < mean < 10.0:
        _fail(name, "a score between 1 and 10", on, f"{mean:.4g}")
