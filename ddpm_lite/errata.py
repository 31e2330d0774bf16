"""Defects of a typical implementation of the paper, each behind a switch whose default is correct."""
import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ddpm_lite.data import to_uint8
from ddpm_lite.guidance import NULL_LABEL
from ddpm_lite.metrics import preprocess

# the MNIST pixel mean and standard deviation (of u / 255) that the paper's classifier was trained with
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def to_uint8_clamp01(x: torch.Tensor) -> torch.Tensor:
    """The paper's code's image export: round(255 clamp(x, 0, 1)), as if x lived in [0, 1].

    Our images live in [-1, 1], so every pixel at or below mid-grey becomes 0 and the rest is stretched.
    Defined in chapter 10 (errata).
    """
    # u = round(255 clamp(x, 0, 1))   (defect; the protocol is u = round(255 (clamp(x, -1, 1) + 1) / 2))
    return torch.round(x.clamp(0, 1) * 255).to(torch.uint8)


def export_images(x: torch.Tensor, clamp01: bool = False) -> torch.Tensor:
    """float images in [-1, 1] -> uint8 for evaluation; clamp01=True reproduces the defect.

    Defined in chapter 10 (errata).
    """
    return to_uint8_clamp01(x) if clamp01 else to_uint8(x)


def classifier_input(images_u8, stats_mismatch: bool = False) -> torch.Tensor:
    """What the IS classifier sees; stats_mismatch=True reproduces the paper's code's normalisation slip.

    That code trains its classifier on z = (u/255 - mean) / std but feeds it generated images in
    [-1, 1]. Our classifier reads x = 2u/255 - 1, so the image its twin would have been shown is the
    x' whose z-value equals x: x' = 2 (std x + mean) - 1, a dimmer, low-contrast digit.
    Defined in chapter 10 (errata).
    """
    x = preprocess(images_u8)
    if not stats_mismatch:
        return x
    # x' = 2 (sigma x + mu) - 1: the [-1, 1] image read as if it were already z-normalised
    return 2 * (MNIST_STD * x + MNIST_MEAN) - 1


@torch.no_grad()
def class_probabilities_with(model: nn.Module, images_u8, stats_mismatch: bool = False,
                             batch_size: int = 1000) -> np.ndarray:
    """p(y|x) [N, 10] like chapter 7's `class_probabilities`, with the normalisation switch.

    Defined in chapter 10 (errata).
    """
    model.eval()
    dev = next(model.parameters()).device
    x = torch.as_tensor(images_u8)
    out = [F.softmax(model(classifier_input(x[i:i + batch_size], stats_mismatch).to(dev)).double(), dim=1).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def omit_null_label(model: nn.Module) -> nn.Module:
    """A copy of a trained model whose unconditional pass gets no label embedding at all.

    The paper's code trains the unconditional case with an all-zeros one-hot label, so the label
    layer still adds its bias b; at sampling it leaves the label out, adding nothing. In our
    parametrisation the trained null row E[NULL_LABEL] plays the part of b, so zeroing it in a
    copy reproduces exactly what that code samples with.
    Defined in chapter 10 (errata).
    """
    twin = copy.deepcopy(model)
    with torch.no_grad():
        # e(t, null) = MLP(PE(t)) + 0 instead of MLP(PE(t)) + E[null]
        twin.cond.label_emb.weight[NULL_LABEL].zero_()
    return twin


def sampling_model(model: nn.Module, cfg) -> nn.Module:
    """The model as sampling uses it: itself, or its null-label-omitted twin when cfg asks for the defect.

    Defined in chapter 10 (errata).
    """
    return omit_null_label(model) if cfg.null_at_sampling == "omitted" else model


@torch.no_grad()
def classifier_features(model: nn.Module, images_u8, batch_size: int = 1000) -> np.ndarray:
    """The classifier's penultimate activations [N, hidden]: a digit-aware space to measure spread in.

    Defined in chapter 10 (errata).
    """
    model.eval()
    dev = next(model.parameters()).device
    penultimate = model.head[:-2]        # everything but the last dropout and the logits layer
    x = torch.as_tensor(images_u8)
    return torch.cat([penultimate(model.features(preprocess(x[i:i + batch_size]).to(dev))).cpu()
                      for i in range(0, len(x), batch_size)]).double().numpy()


def within_class_spread(features: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of tr Cov(features | class): the average squared distance to the class mean.

    Larger means more varied images of the same digit. Defined in chapter 10 (errata).
    """
    feats = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    labels = np.asarray(labels)
    # spread_c = (1/n_c) sum_i ||f_i - mean_c||^2 = tr Cov_c
    return float(np.mean([((feats[labels == c] - feats[labels == c].mean(0)) ** 2).sum(1).mean()
                          for c in np.unique(labels)]))
