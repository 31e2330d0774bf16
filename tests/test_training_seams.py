"""The training loop's seams for the GPU fast paths give the plain loop's results.

`ddpm_lite.training.train` takes a forward wrapper (autocast), a step function (loss scaling, a
CUDA graph of the step) and a deadline. On the CPU each seam is compared with the plain loop on
the same seed and data: the same losses and EMA weights, exactly where the arithmetic is the
same, within bfloat16's rounding under autocast. The CUDA-only paths are tested on a GPU only.
"""
import time

import pytest
import torch

from ddpm_lite.config import get_config
from ddpm_lite.forward import check_timesteps, trusted_inputs
from ddpm_lite.guidance import check_labels
from ddpm_lite.training import Autocast, CudaGraphStep, FastPaths, ScaledStep, new_state, train, train_step

# chapter 5's recipe (a CUDA graph replays a fixed learning rate: chapter 12's schedule runs eagerly)
CFG = get_config("quick", channels=(8, 8, 8), time_dim=16, batch_size=16, iterations=12, checkpoint_every=5,
                 prediction="eps", lr_schedule="constant", warmup=0)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-only fast path: needs a CUDA GPU")


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.rand((256, 1, 28, 28), generator=g) * 2 - 1, torch.randint(10, (256,), generator=g)


@pytest.fixture(scope="module")
def plain(data, one_thread):
    return train(CFG, device="cpu", data=data, progress=False)


def vec(model) -> torch.Tensor:
    return torch.cat([v.float().flatten() for v in model.state_dict().values() if v.is_floating_point()])


def ema_max_diff(a, b) -> float:
    return max((x.float() - y.float()).abs().max().item()
               for x, y in zip(a.ema.model.state_dict().values(), b.ema.model.state_dict().values()))


def test_the_cpu_defaults_are_the_plain_loop(plain, data, one_thread):
    assert FastPaths.for_device("cpu") == FastPaths()
    again = train(CFG, device="cpu", data=data, progress=False, fast=True)
    assert again.losses == plain.losses and ema_max_diff(again, plain) == 0.0


def test_a_step_function_seam_is_called_every_step_and_changes_nothing(plain, data, one_thread):
    calls = []

    def counting_step(net, opt, sched, batch, cfg):
        calls.append(len(batch.t))
        return train_step(net, opt, sched, batch, cfg)

    run = train(CFG, device="cpu", data=data, progress=False, step_fn=counting_step)
    assert calls == [CFG.batch_size] * CFG.iterations
    assert run.losses == plain.losses and ema_max_diff(run, plain) == 0.0


def test_bf16_autocast_forward_gives_the_plain_losses_within_rounding(plain, data, one_thread):
    wrapped = []

    def forward(model):
        wrapped.append(Autocast(model, "cpu", torch.bfloat16))
        return wrapped[-1]

    run = train(CFG, device="cpu", data=data, progress=False, forward=forward)
    assert len(wrapped) == 1
    assert run.losses != plain.losses, "autocast changed nothing: the forward seam was not used"
    rel = max(abs(a - b) / b for a, b in zip(run.losses, plain.losses))
    assert rel < 0.05, f"bf16 losses differ from fp32 by up to {rel:.3f} (relative)"
    # EMA weights: the change from the initial weights agrees in direction and, within bf16's noise, in size
    init = vec(new_state(CFG, "cpu").ema.model)
    d_fast, d_plain = vec(run.ema.model) - init, vec(plain.ema.model) - init
    assert torch.nn.functional.cosine_similarity(d_fast, d_plain, 0) > 0.95
    assert (d_fast - d_plain).norm() / d_plain.norm() < 0.3


def test_fp16_loss_scaling_gives_the_plain_losses_and_ema(plain, data, one_thread):
    step = ScaledStep("cpu")
    run = train(CFG, device="cpu", data=data, progress=False, step_fn=step)
    assert step.scaler.get_scale() > 1.0, "no loss scaling happened"
    # scaling by a power of two and back is exact in fp32 unless a gradient overflows
    assert run.losses == pytest.approx(plain.losses, rel=1e-5, abs=1e-7)
    assert ema_max_diff(run, plain) < 1e-5


def test_a_deadline_stops_with_a_checkpoint_and_the_run_resumes_exactly(plain, data, tmp_path, one_thread):
    first = train(CFG, tmp_path, device="cpu", data=data, progress=False, deadline=time.monotonic() + 0.01)
    assert first.step < CFG.iterations and first.stop_reason == "out of time"
    assert (tmp_path / "checkpoints").is_dir() and any((tmp_path / "checkpoints").iterdir())
    rest = train(CFG, tmp_path, device="cpu", data=data, progress=False)
    assert rest.step == CFG.iterations and rest.stop_reason == ""
    assert rest.losses == plain.losses and ema_max_diff(rest, plain) == 0.0


def test_must_finish_stops_a_run_that_cannot_end_by_the_deadline(data, tmp_path, one_thread):
    long = CFG.replace(iterations=100_000, checkpoint_every=100_000)
    t0 = time.monotonic()
    state = train(long, tmp_path, device="cpu", data=data, progress=False, deadline=t0 + 30, must_finish=True)
    assert time.monotonic() - t0 < 15, "it should stop after a few seconds of measured steps"
    assert 0 < state.step < long.iterations and state.stop_reason.startswith("needs ~"), state.stop_reason
    assert state.seconds_per_step is not None and state.seconds_per_step > 0


def test_trusted_inputs_skip_only_the_value_checks():
    with pytest.raises(ValueError, match="timesteps must lie in"):
        check_timesteps(torch.tensor([1000]), 1000)
    with pytest.raises(ValueError, match="digits 0-9"):
        check_labels(torch.tensor([11]))
    with trusted_inputs():
        assert check_timesteps(torch.tensor([1000]), 1000).tolist() == [1000]      # not read back
        assert check_labels(torch.tensor([11])).tolist() == [11]
        with pytest.raises(ValueError, match="integers"):                           # type checks stay
            check_timesteps(torch.tensor([1.5]), 1000)
    with pytest.raises(ValueError):
        check_labels(torch.tensor([11]))


def test_a_checkpoint_of_a_capturable_optimizer_resumes_on_the_cpu(data, tmp_path, one_thread):
    """CUDA graphs keep Adam's step counters on the GPU (capturable); checkpoints store them portably."""
    from ddpm_lite.checkpoint import latest_checkpoint
    train(CFG.replace(iterations=5), tmp_path, device="cpu", data=data, progress=False)
    groups = latest_checkpoint(tmp_path)[1]["optimizer"]["param_groups"]
    assert all(not g.get("capturable", False) for g in groups)


@cuda
def test_cuda_defaults_turn_the_fast_paths_on():
    paths = FastPaths.for_device("cuda")
    assert paths.autocast == ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    assert paths.tf32 and paths.trusted_inputs and paths.cuda_graph == torch.cuda.is_bf16_supported()
    assert not FastPaths.for_device("cuda", world_size=2).cuda_graph


@cuda
def test_cuda_fast_paths_follow_the_eager_loop(data):
    cfg = get_config("paper", channels=(16, 32, 64), iterations=40, checkpoint_every=1000)
    eager = train(cfg, device="cuda", data=data, progress=False, fast=False)
    step = FastPaths.for_device("cuda").step_fn()
    fast = train(cfg, device="cuda", data=data, progress=False, step_fn=step)
    if isinstance(step, CudaGraphStep):
        assert step.graph is not None, step.note
    rel = max(abs(a - b) / b for a, b in zip(fast.losses, eager.losses))
    assert rel < 0.1, f"fast-path losses differ from eager by up to {rel:.3f} (relative)"
