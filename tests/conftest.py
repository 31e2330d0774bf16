"""Shared test helpers."""
import contextlib

import pytest
import torch


@contextlib.contextmanager
def one_torch_thread():
    """Run torch on one thread, then restore the thread count.

    Tiny models run fastest on one thread, and a multi-threaded CPU convolution may sum partial
    gradients in a different order on a busy machine, which changes the last bits of a result."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread():
    with one_torch_thread():
        yield
