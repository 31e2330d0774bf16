"""Checkpoints: atomic writes, safe loading, clear errors for damaged, foreign and malicious files."""
import os
import pickle
from pathlib import Path

import pytest
import torch

from ddpm_lite import io as ddpm_io
from ddpm_lite.checkpoint import (latest_checkpoint, load_checkpoint, load_model, save_checkpoint,
                                  save_model_file)
from ddpm_lite.config import get_config
from ddpm_lite.errors import CheckpointError, DDPMLiteError
from ddpm_lite.unet import build_model

TINY = dict(channels=(8, 8, 8), time_dim=16)


def _model_file(path, cfg):
    torch.manual_seed(0)
    return save_model_file(path, cfg, build_model(cfg).state_dict(), step=3)


def test_round_trip(tmp_path):
    cfg = get_config("quick", **TINY)
    _model_file(tmp_path / "m.pt", cfg)
    model, cfg2 = load_model(tmp_path / "m.pt")
    assert cfg2 == cfg and not model.training
    torch.manual_seed(0)
    ref = build_model(cfg)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


@pytest.mark.parametrize("damage", ["truncate", "empty", "random"])
def test_damaged_file_gives_clear_error_naming_it(tmp_path, damage):
    p = _model_file(tmp_path / "m.pt", get_config("quick", **TINY))
    raw = p.read_bytes()
    p.write_bytes({"truncate": raw[: len(raw) // 2], "empty": b"", "random": os.urandom(4096)}[damage])
    with pytest.raises(CheckpointError, match=str(p)):
        load_checkpoint(p)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")


class _Payload:
    """Unpickling this would create a marker file: a stand-in for arbitrary code execution."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_that_runs_code_is_refused_and_the_code_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    torch.save({"format": "ddpm_lite.checkpoint/1", "config": {}, "ema": _Payload(marker)}, p)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(p)
    assert not marker.exists()
    # the same file with an unsafe loader *would* run the payload: the test can tell the difference
    with open(p, "rb"):
        torch.load(p, weights_only=False)
    assert marker.exists()


def test_foreign_pytorch_file_is_refused(tmp_path):
    p = tmp_path / "resnet.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, p)
    with pytest.raises(CheckpointError, match="not a ddpm_lite checkpoint"):
        load_checkpoint(p)


def test_checkpoint_from_a_different_architecture_is_refused(tmp_path):
    quick = get_config("quick", **TINY)
    other = build_model(get_config("quick", channels=(16, 16, 16), time_dim=16))
    p = save_model_file(tmp_path / "m.pt", quick, other.state_dict(), step=1)
    with pytest.raises(CheckpointError, match="do not fit the architecture"):
        load_model(p)


def test_latest_checkpoint_falls_back_past_a_damaged_one(tmp_path):
    for step in (10, 20):
        save_checkpoint(tmp_path / "checkpoints" / f"step_{step:08d}.pt", step=step)
    (tmp_path / "checkpoints" / "step_00000020.pt").write_bytes(b"\0" * 100)
    with pytest.warns(UserWarning, match="skipping damaged checkpoint"):
        path, ckpt = latest_checkpoint(tmp_path)
    assert ckpt["step"] == 10 and path.name == "step_00000010.pt"


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    ddpm_io.write_json(target, {"v": 1})

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ddpm_io.os, "replace", disk_full)
    with pytest.raises(DDPMLiteError, match="No space left on device"):
        ddpm_io.write_json(target, {"v": 2})
    assert ddpm_io.read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_unwritable_output_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DDPMLiteError, match="cannot write to folder"):
        ddpm_io.write_json(blocker / "sub" / "x.json", {})


def test_resuming_clears_temporaries_left_by_a_killed_writer(tmp_path):
    ckpts = tmp_path / "checkpoints"
    save_checkpoint(ckpts / "step_00000010.pt", step=10)
    stale = [ckpts / ".step_00000020.pt.x2839hsh.tmp", tmp_path / ".model.pt.abc123.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    (tmp_path / "notes.tmp").write_text("not ours")        # only our own hidden temporaries go
    path, ckpt = latest_checkpoint(tmp_path)
    assert path.name == "step_00000010.pt" and ckpt["step"] == 10
    assert not any(p.exists() for p in stale) and (tmp_path / "notes.tmp").exists()
