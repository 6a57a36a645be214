"""CPU threading. Ultralytics' select_device() sets torch to cpu_count − 1 threads (1 on a 2-core
machine) and validates with 0 dataloader workers, leaving a core idle; lipslib sets it explicitly."""

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


def use_threads(component, n: int | None, event: str) -> None:
    """Re-apply n threads on an Ultralytics trainer/validator event that fires after its select_device()."""
    component.add_callback(event, lambda *_: torch.set_num_threads(thread_count(n)))
