"""CPU threading. Ultralytics' select_device() sets torch to min(8, cpu_count − 1) threads when it picks the
CPU (1 on a 2-core machine) and validates with 0 dataloader workers, leaving a core idle; lipslib sets the
count explicitly where it computes on the CPU (a GPU run has nothing to gain, and DDP workers must not each
claim every core), and undoes Ultralytics' setting where Ultralytics is only asked for something."""

from __future__ import annotations

import contextlib
import os

import torch


def thread_count(n: int | None) -> int:
    """n threads, or all cores for None."""
    return max(1, int(n or os.cpu_count() or 1))


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Run with n torch threads (None: all cores), restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(thread_count(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def keep_threads():
    """A context that gives torch its current thread count back on exit, whatever Ultralytics set inside it."""
    return cpu_threads(torch.get_num_threads())


def select_device(device, verbose: bool = False):
    """Ultralytics' select_device (its checks, errors and choice) without its side effect on the process's
    thread count, which would outlast the call."""
    from ultralytics.utils.torch_utils import select_device as ultralytics_select

    with keep_threads():
        return ultralytics_select(device, verbose=verbose)


class PinThreads:
    """An Ultralytics callback: n torch threads when the trainer/validator it fires for runs on the CPU.
    A plain class, so it pickles by reference if Ultralytics ships callbacks to other processes."""

    def __init__(self, n: int | None):
        self.n = n

    def __call__(self, component) -> None:
        if getattr(getattr(component, "device", None), "type", "cpu") == "cpu":
            torch.set_num_threads(thread_count(self.n))


def use_threads(component, n: int | None, event: str) -> None:
    """Re-apply n threads on an Ultralytics trainer/validator event that fires after its select_device().
    Not added where the component already runs on an accelerator (a trainer's callbacks travel to every
    DDP worker)."""
    if getattr(getattr(component, "device", None), "type", "cpu") != "cpu":
        return
    component.add_callback(event, PinThreads(n))


@contextlib.contextmanager
def fp32_kernels():
    """Full-fp32 cuDNN and matmul kernels (no TF32) for the duration, so that two evaluations of the same
    network differ by summation order alone; restored afterwards."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
