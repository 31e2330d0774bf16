"""Chapter 7's metrics (ddpm_lite.metrics) and the evaluation entry point (ddpm_lite.evaluation)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm_lite import checks, evaluation, metrics
from ddpm_lite.data import load_mnist, to_float
from ddpm_lite.errors import DataError

ROOT = Path(__file__).resolve().parent.parent
HAVE_CLASSIFIER = metrics.classifier_path().is_file()
needs_classifier = pytest.mark.skipif(
    not HAVE_CLASSIFIER, reason="classifier weights absent: run `python scripts/train_classifier.py`")


# --- Inception Score (eq 7) ----------------------------------------------------------------------
def test_is_of_uniform_predictions_is_one():
    mean, std = metrics.inception_score(np.full((1000, 10), 0.1))
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_is_of_one_hot_predictions_spread_evenly_is_ten():
    onehot = np.eye(10)[np.tile(np.arange(10), 100)]            # every split of 100 holds 10 of each class
    mean, std = metrics.inception_score(onehot, shuffle_seed=None)
    assert mean == pytest.approx(10.0, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)
    assert metrics.inception_score(onehot, splits=1)[0] == pytest.approx(10.0, rel=1e-12)


def test_is_shuffles_class_ordered_samples_before_splitting():
    onehot = np.eye(10)[np.repeat(np.arange(10), 1000)]         # as sample files store them: class by class
    assert metrics.inception_score(onehot, shuffle_seed=None)[0] == pytest.approx(1.0)   # the trap
    assert metrics.inception_score(onehot)[0] > 9.9                                     # shuffled: ~10


def test_the_assignment_checks_pass_on_the_inception_score():
    # the same checks grade the chapter 7 assignment (ddpm_lite.checks)
    checks.inception_score_extremes(metrics.inception_score)
    checks.inception_score_shuffles_and_bounds(metrics.inception_score)


def test_is_lies_between_one_and_the_number_of_classes():
    p = np.random.default_rng(0).dirichlet(np.full(10, 0.3), size=500)
    mean, _ = metrics.inception_score(p)
    assert 1.0 < mean < 10.0


def test_conditional_accuracy_counts_hits_per_class():
    labels = np.array([0, 0, 1, 1, 2])
    probs = np.eye(10)[[0, 1, 1, 1, 0]]
    acc = metrics.conditional_accuracy(probs, labels)
    assert acc["overall"] == pytest.approx(3 / 5)
    assert acc["per_class"][:3] == [0.5, 1.0, 0.0] and acc["per_class"][3] is None
    assert acc["count_per_class"][:4] == [2, 2, 1, 0]


# --- the classifier and its one preprocessing function -------------------------------------------
def test_preprocess_is_the_diffusion_models_mapping():
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8))
    assert torch.equal(metrics.preprocess(x), to_float(x))
    assert metrics.preprocess(x).min() >= -1 and metrics.preprocess(x).max() <= 1
    with pytest.raises(DataError, match="uint8"):
        metrics.preprocess(x.float())


def test_training_and_evaluation_use_the_same_preprocessing(monkeypatch):
    calls = []
    real = metrics.preprocess

    def spy(images):
        calls.append(("called", tuple(images.shape)))
        return real(images)
    monkeypatch.setattr(metrics, "preprocess", spy)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8))
    labels = torch.arange(8) % 10
    model, log = metrics.train_classifier(images, labels, epochs=1, batch_size=4, max_steps=1, progress=False)
    n_train = len(calls)
    metrics.class_probabilities(model, images)
    assert n_train >= 1 and len(calls) > n_train               # both paths went through the one function
    # and the training script trains with that very function (not a copy)
    spec = importlib.util.spec_from_file_location("train_classifier_script", ROOT / "scripts" / "train_classifier.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.train_classifier is metrics.train_classifier
    assert script.load_classifier is metrics.load_classifier


def test_training_is_seeded():
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (16, 28, 28), dtype=np.uint8))
    labels = torch.arange(16) % 10
    runs = [metrics.train_classifier(images, labels, epochs=1, batch_size=8, progress=False, seed=3)[0]
            for _ in range(2)]
    for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()):
        assert torch.equal(a, b)


def test_missing_classifier_weights_give_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="train_classifier.py"):
        metrics.load_classifier("cpu", tmp_path / "absent.pt")


def test_saved_classifier_round_trips_within_fp16(tmp_path):
    torch.manual_seed(0)
    model = metrics.MNISTClassifier().eval()
    path = metrics.save_classifier(model, tmp_path / "c.pt")
    loaded = metrics.load_classifier("cpu", path)
    x = metrics.preprocess(torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=2e-2, rtol=2e-2)


@needs_classifier
def test_shipped_classifier_is_small_and_safe_to_load():
    path = metrics.classifier_path()
    assert path.stat().st_size <= 2_000_000
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(state) == set(metrics.MNISTClassifier().state_dict())


@needs_classifier
def test_conditional_accuracy_on_test_set_equals_classifier_accuracy():
    images, labels = load_mnist("test")
    images, labels = images[:1000], labels[:1000]
    model = metrics.load_classifier("cpu")
    acc = metrics.classifier_accuracy(model, images, labels)
    cond = metrics.conditional_accuracy(metrics.class_probabilities(model, images), labels.numpy())
    assert cond["overall"] == acc
    assert acc >= 0.98                                           # a working classifier, not a constant


# --- evaluate_path: bad inputs fail before the slow part ------------------------------------------
def _good(n=20):
    rng = np.random.default_rng(0)
    return {"images": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), "labels": np.arange(n) % 10}


def _write(tmp_path, name="s.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _text(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def no_heavy_work(monkeypatch):
    def heavy(*args, **kwargs):
        raise AssertionError("the slow part was reached")
    monkeypatch.setattr(evaluation, "score", heavy)
    from ddpm_lite import inception
    monkeypatch.setattr(inception, "fid_network", heavy)


BAD_INPUTS = {
    "missing file": (lambda d: d / "nope.npz", "no such file"),
    "folder without npz": (lambda d: (d / "run").mkdir() or d / "run", "no .npz"),
    "not an npz": (lambda d: _text(d / "x.npz", "hello"), "not an .npz"),
    "single array (.npy)": (lambda d: np.save(d / "x.npy", np.zeros(3)) or d / "x.npy", "single NumPy array"),
    "no images key": (lambda d: _write(d, labels=np.arange(20) % 10), "'images'"),
    "no labels": (lambda d: _write(d, images=_good()["images"]), "no labels"),
    "wrong shape": (lambda d: _write(d, images=np.zeros((20, 32, 32), np.uint8), labels=np.arange(20) % 10),
                    "shape"),
    "RGB shape": (lambda d: _write(d, images=np.zeros((20, 3, 28, 28), np.uint8), labels=np.arange(20) % 10),
                  "shape"),
    "float images": (lambda d: _write(d, images=np.zeros((20, 28, 28), np.float32), labels=np.arange(20) % 10),
                     "dtype float32"),
    "values out of range": (lambda d: _write(d, images=np.full((20, 28, 28), 300, np.int16),
                                             labels=np.arange(20) % 10), "0..255"),
    "labels out of range": (lambda d: _write(d, images=_good()["images"], labels=np.arange(20)), "outside 0..9"),
    "negative label": (lambda d: _write(d, images=_good()["images"], labels=-(np.arange(20) % 10)), "outside 0..9"),
    "float labels": (lambda d: _write(d, images=_good()["images"], labels=np.zeros(20)), "integers"),
    "2-D labels": (lambda d: _write(d, images=_good()["images"], labels=np.zeros((20, 1), int)), "one label per"),
    "label count": (lambda d: _write(d, images=_good()["images"], labels=np.arange(19) % 10), "19 labels for 20"),
    "one image": (lambda d: _write(d, **_good(1)), "at least 2"),
    "object array": (lambda d: np.savez(d / "o.npz", images=np.array([None] * 2, dtype=object),
                                        labels=np.zeros(2, int)) or d / "o.npz", "Python objects"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise_dataerror_before_heavy_work(case, tmp_path, no_heavy_work):
    make, message = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(DataError, match=message):
        evaluation.evaluate_path(path, device="cpu", progress=False)


def test_good_input_reaches_the_heavy_part(tmp_path, no_heavy_work):
    path = _write(tmp_path, **_good())                           # so the test above can fail
    with pytest.raises(AssertionError, match="slow part"):
        evaluation.evaluate_path(path, device="cpu", progress=False)


def test_evaluate_path_writes_json_beside_the_newest_sample(tmp_path, monkeypatch):
    fake = {"fid": {"value": 12.5, "reference": "x"}, "inception_score": {"mean": 9.0, "std": 0.1, "splits": 10},
            "conditional_accuracy": {"overall": 0.9, "per_class": [0.9] * 10, "count_per_class": [2] * 10},
            "device": "cpu"}
    seen = {}

    def fake_metrics(images, labels, device, progress, fid=True, dataset="mnist"):
        seen["shape"], seen["labels"], seen["dataset"] = images.shape, labels, dataset
        return dict(fake)
    monkeypatch.setattr(evaluation, "score", fake_metrics)
    run = tmp_path / "run" / "samples"
    run.mkdir(parents=True)
    old = _write(run, "old.npz", **_good())
    new = _write(run, "new.npz", images=_good()["images"][:, None], labels=_good()["labels"])
    import os
    os.utime(old, (1, 1))
    result = evaluation.evaluate_path(tmp_path / "run", device="cpu", progress=False)
    assert seen["shape"] == (20, 28, 28) and seen["dataset"] == "mnist"   # [N, 1, 28, 28] accepted and squeezed; no .json: MNIST
    written = run / "new.eval.json"
    assert result["written_to"] == str(written)
    on_disk = json.loads(written.read_text())
    assert on_disk["input"]["path"] == str(new) and len(on_disk["input"]["sha256"]) == 64
    assert on_disk["n"] == 20 and on_disk["fid"]["value"] == 12.5
    assert "commit" in on_disk["provenance"] and "hardware" in on_disk["provenance"]
    assert "FID" in evaluation.format_summary(result)


def test_adding_a_reference_size_gives_what_the_full_computation_gives(monkeypatch, tmp_path):
    """`reference --add-n` computes a new n's real-data rows the way `reference_rows` does, without the rest
    (fake features and a fake classifier stand in for Inception and the shipped weights)."""
    import torch
    from ddpm_lite import data, evaluation, inception, metrics
    g = torch.Generator().manual_seed(0)
    split = {s: (torch.randint(0, 256, (300, 28, 28), generator=g, dtype=torch.uint8),
                 torch.randint(0, 10, (300,), generator=g)) for s in ("test", "valid")}
    def feats(x, *a, **k):                                          # four "features": means of image quarters
        return np.asarray(x, np.float64).reshape(len(x), 4, -1).mean(-1) + np.arange(4)
    net = type("Net", (), {"weights_sha256": "f" * 64})()
    monkeypatch.setattr(data, "load_mnist", lambda s, *a, **k: split[s])
    monkeypatch.setattr(inception, "fid_network", lambda *a, **k: net)
    monkeypatch.setattr(inception, "cached_features", feats)
    monkeypatch.setattr(inception, "pool3_features", feats)
    monkeypatch.setattr(metrics, "load_classifier", lambda *a, **k: None)
    probs = np.random.default_rng(0).dirichlet(np.ones(10), 300)
    monkeypatch.setattr(metrics, "class_probabilities", lambda m, x, *a, **k: probs[:len(x)])
    monkeypatch.setattr(metrics, "classifier_accuracy", lambda *a, **k: 0.5)
    monkeypatch.setattr(metrics, "classifier_path", lambda: tmp_path / "c.pt")
    (tmp_path / "c.pt").write_bytes(b"x")
    full = evaluation.reference_rows(tmp_path / "full.json", "cpu", False, fid_sizes=(300,), sample_sizes=(300, 200, 50))
    evaluation.reference_rows(tmp_path / "part.json", "cpu", False, fid_sizes=(300,), sample_sizes=(300, 200))
    added = evaluation.add_reference_sizes([50], tmp_path / "part.json", "cpu", progress=False)
    assert added["fid_n_vs_test"] == full["fid_n_vs_test"]
    assert added["inception_score_test_by_n"] == full["inception_score_test_by_n"]
    assert added["added_sizes"][0]["sizes"] == [50] and "commit" in added["added_sizes"][0]["provenance"]
    net.weights_sha256 = "0" * 64                                    # other FID weights: refuse, do not mix
    with pytest.raises(DataError, match="FID weights differ"):
        evaluation.add_reference_sizes([40], tmp_path / "part.json", "cpu", progress=False)
