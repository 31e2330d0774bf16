"""Chapter 10's switches: off, the code path is the correct one; on, the defect happens."""
import numpy as np
import pytest
import torch

from ddpm_lite import errata
from ddpm_lite.config import get_config
from ddpm_lite.data import to_uint8
from ddpm_lite.errors import ConfigError
from ddpm_lite.guidance import NULL_LABEL
from ddpm_lite.metrics import MNISTClassifier, preprocess
from ddpm_lite.training import draw_batch
from ddpm_lite.unet import build_model

TINY = dict(channels=(8, 8, 8), time_dim=16)


def test_export_switch_off_is_the_protocol_and_on_is_the_clamp():
    x = torch.linspace(-1.2, 1.2, 97)
    assert torch.equal(errata.export_images(x), to_uint8(x))
    zero = torch.tensor([0.0])
    assert errata.export_images(zero).item() == 128                 # mid-grey under the protocol
    assert errata.export_images(zero, clamp01=True).item() == 0      # black under the clamp
    clamped = errata.export_images(x, clamp01=True)
    assert (clamped[x <= 0] == 0).all() and clamped[-1] == 255
    assert clamped.dtype == torch.uint8


def test_classifier_input_switch():
    u = torch.tensor([[0, 128, 255]], dtype=torch.uint8).expand(28, 3).reshape(1, 28, 3)
    u = torch.cat([u] * 10, dim=2)[:, :, :28]
    assert torch.equal(errata.classifier_input(u), preprocess(u))
    x, shown = preprocess(u), errata.classifier_input(u, stats_mismatch=True)
    # the image that, read as z = (u'/255 - mean) / std, equals x: x' = 2 (std x + mean) - 1
    u_prime = (shown + 1) / 2 * 255
    z = (u_prime / 255 - errata.MNIST_MEAN) / errata.MNIST_STD
    assert torch.allclose(z, x, atol=1e-6)
    assert shown.min() < -1                                          # the background falls below black


def test_class_probabilities_with_matches_chapter_7_when_off():
    from ddpm_lite.metrics import class_probabilities
    torch.manual_seed(0)
    model = MNISTClassifier().eval()
    u = torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8)
    np.testing.assert_allclose(errata.class_probabilities_with(model, u), class_probabilities(model, u))
    assert not np.allclose(errata.class_probabilities_with(model, u, stats_mismatch=True),
                           class_probabilities(model, u))


def test_omit_null_label_changes_only_the_unconditional_pass():
    torch.manual_seed(0)
    model = build_model(get_config("quick", **TINY)).eval()
    with torch.no_grad():                     # zero-initialised output layers would hide every difference
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    twin = errata.omit_null_label(model)
    assert twin.cond.label_emb.weight[NULL_LABEL].abs().sum() == 0
    assert model.cond.label_emb.weight[NULL_LABEL].abs().sum() > 0  # the original is untouched
    x, t = torch.randn(11, 1, 28, 28), torch.full((11,), 500)
    y = torch.arange(11)                                             # 0..9 and the null label
    with torch.no_grad():
        a, b = model(x, t, y), twin(x, t, y)
    assert torch.equal(a[:10], b[:10]) and not torch.allclose(a[10], b[10])


def test_sampling_model_follows_the_config():
    model = build_model(get_config("quick", **TINY))
    assert errata.sampling_model(model, get_config("quick")) is model
    twin = errata.sampling_model(model, get_config("quick", null_at_sampling="omitted"))
    assert twin is not model and twin.cond.label_emb.weight[NULL_LABEL].abs().sum() == 0


@pytest.mark.parametrize("field", ["label_drop", "null_at_sampling"])
def test_unknown_switch_value_names_the_field(field):
    with pytest.raises(ConfigError, match=field):
        get_config("quick", **{field: "sometimes"})


def test_label_drop_per_batch_is_all_or_nothing_and_per_sample_mixes():
    images, labels = torch.zeros(100, 1, 28, 28), torch.arange(100) % 10
    fractions = {}
    for mode in ("per_sample", "per_batch"):
        cfg = get_config("quick", p_uncond=0.5, label_drop=mode, batch_size=32)
        fractions[mode] = np.array([(draw_batch(cfg, s, images, labels).y == NULL_LABEL).float().mean().item()
                                    for s in range(200)])
    assert set(np.unique(fractions["per_batch"])) == {0.0, 1.0}
    assert ((fractions["per_sample"] > 0) & (fractions["per_sample"] < 1)).mean() > 0.99
    for f in fractions.values():
        assert abs(f.mean() - 0.5) < 0.1                             # the same share overall


def test_label_drop_per_sample_is_the_default_and_unchanged():
    images, labels = torch.zeros(100, 1, 28, 28), torch.arange(100) % 10
    cfg = get_config("quick")
    explicit = get_config("quick", label_drop="per_sample")
    a, b = draw_batch(cfg, 3, images, labels), draw_batch(explicit, 3, images, labels)
    assert torch.equal(a.y, b.y) and torch.equal(a.t, b.t) and torch.equal(a.eps, b.eps)
    # per batch keeps the same images, steps and noise; only which labels are dropped differs
    c = draw_batch(cfg.replace(label_drop="per_batch"), 3, images, labels)
    assert torch.equal(a.t, c.t) and torch.equal(a.eps, c.eps)


def test_within_class_spread_is_the_mean_trace_of_the_class_covariance():
    feats = np.array([[0.0, 0.0], [2.0, 0.0], [5.0, 5.0], [5.0, 5.0]])
    labels = np.array([0, 0, 1, 1])
    # class 0: points at distance 1 from their mean -> 1; class 1: identical points -> 0
    assert errata.within_class_spread(feats, labels) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    wide, narrow = rng.normal(0, 2, (400, 3)), rng.normal(0, 1, (400, 3))
    lab = np.arange(400) % 4
    assert errata.within_class_spread(wide, lab) > errata.within_class_spread(narrow, lab)


def test_classifier_features_shape():
    torch.manual_seed(0)
    model = MNISTClassifier().eval()
    f = errata.classifier_features(model, torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8))
    assert f.shape == (5, 128) and (f >= 0).all()                    # after the hidden ReLU


def test_sample_command_switch_reproduces_the_omitted_null_label(tmp_path):
    from ddpm_lite.cli import main
    from ddpm_lite.io import read_json
    files = {}
    for null in ("learned", "omitted"):
        out = tmp_path / f"{null}.npz"
        assert main(["sample", "chapter5", "--n", "10", "--steps", "2", "--null-at-sampling", null,
                     "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
        files[null] = np.load(out)["images"]
        assert read_json(out.with_suffix(".json"))["config"]["null_at_sampling"] == null
    assert not np.array_equal(files["learned"], files["omitted"])     # guided (w = 2): the null pass matters
