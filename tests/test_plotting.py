"""Sample grids (ddpm_lite.plotting): rows per label, and row names for data sets with named classes."""
import matplotlib
import numpy as np

matplotlib.use("Agg")

from ddpm_lite.data import CLASS_NAMES  # noqa: E402
from ddpm_lite.plotting import grid_image, show_grid  # noqa: E402


def test_grid_has_one_row_per_label():
    images = np.full((6, 28, 28), 200, dtype=np.uint8)
    g = grid_image(images, np.array([0, 0, 1, 1, 2, 2]))
    assert g.shape == (3 * 30 + 2, 2 * 30 + 2)


def test_row_names_label_each_row_present_in_label_order():
    import matplotlib.pyplot as plt
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    fig, ax = plt.subplots()
    show_grid(images, np.array([6, 0, 6, 0]), ax=ax, row_names=CLASS_NAMES["fashion"])
    texts = [(t.get_text(), t.get_position()[1]) for t in ax.texts]
    assert [t for t, _ in texts] == ["T-shirt/top", "Shirt"]            # labels 0 and 6, top to bottom
    assert texts[0][1] < texts[1][1]                                  # image rows grow downwards
    plt.close(fig)
    fig, ax = plt.subplots()
    show_grid(images, np.array([6, 0, 6, 0]), ax=ax)
    assert ax.texts == [] or len(ax.texts) == 0
    plt.close(fig)
