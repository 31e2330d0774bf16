"""Sample grids as PNG files and matplotlib figures.

Plumbing module (hand-written).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["grid_image", "save_grid", "show_grid"]


def grid_image(images_u8: np.ndarray, labels: np.ndarray | None = None, pad: int = 2) -> np.ndarray:
    """Tile uint8 images [N, 28, 28] into one array: one row per label when labels are given."""
    images_u8 = np.asarray(images_u8)
    if images_u8.ndim == 4:
        images_u8 = images_u8[:, 0]
    if labels is not None:
        rows = [images_u8[np.asarray(labels) == c] for c in np.unique(labels)]
    else:
        k = int(np.ceil(np.sqrt(len(images_u8))))
        rows = [images_u8[i:i + k] for i in range(0, len(images_u8), k)]
    ncol = max(len(r) for r in rows)
    h, w = images_u8.shape[1:]
    out = np.zeros((len(rows) * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            out[pad + i * (h + pad): pad + i * (h + pad) + h, pad + j * (w + pad): pad + j * (w + pad) + w] = img
    return out


def _write_png(g: np.ndarray, path, scale: int) -> Path:
    """Write a uint8 image as a PNG (nearest-neighbour upscaled by `scale`) atomically; return its path."""
    import io

    from PIL import Image

    from .io import atomic_write_bytes
    img = Image.fromarray(g).resize((g.shape[1] * scale, g.shape[0] * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(Path(path), buf.getvalue())


def save_grid(images_u8, labels, path, scale: int = 2) -> Path:
    """Write the grid as a PNG (nearest-neighbour upscaled) atomically and return its path."""
    return _write_png(grid_image(images_u8, labels), path, scale)


def save_side_by_side(grids: list, path, gap: int = 8, scale: int = 2) -> Path:
    """Write several (images_u8, labels) grids next to each other as one PNG, `gap` pixels apart."""
    panels = [grid_image(images, labels) for images, labels in grids]
    h = max(p.shape[0] for p in panels)
    row = []
    for i, p in enumerate(panels):
        row.append(np.pad(p, ((0, h - p.shape[0]), (0, 0)), constant_values=255))
        if i < len(panels) - 1:
            row.append(np.full((h, gap), 255, dtype=p.dtype))
    return _write_png(np.concatenate(row, axis=1), path, scale)


def show_grid(images_u8, labels=None, ax=None, title=None, row_names=None):
    """Draw the grid on a matplotlib axis (for the notebooks); `row_names` (one per label, in label
    order, e.g. `data.CLASS_NAMES["fashion"]`) label its rows on the left."""
    import matplotlib.pyplot as plt
    ax = ax or plt.gca()
    g = grid_image(images_u8, labels)
    ax.imshow(g, cmap="gray", vmin=0, vmax=255)
    ax.set_axis_off()
    if row_names is not None and labels is not None:
        present = np.unique(labels)
        h = (g.shape[0] - 2) / len(present)                   # one row of the grid per label present
        for i, c in enumerate(present):
            ax.text(-4, 2 + (i + 0.5) * h, row_names[int(c)], ha="right", va="center", fontsize=8)
    if title:
        ax.set_title(title)
    return ax
