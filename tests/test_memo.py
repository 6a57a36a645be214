"""lipslib.pruning.memo: a changed copy of a network reuses the base's activations where nothing changed, and
gives exactly what it computes on its own, also when something modifies a shared tensor in place."""

import copy

import torch
import torch.nn as nn

from lipslib.pruning.engine import load_model, prune
from lipslib.pruning.memo import Recorder, changed_modules, reuse


class Doubler(nn.Module):
    """Modifies its child's output in place: a reused (cached) output must not be doubled twice."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.a(x)
        y.mul_(2)
        return self.b(y)


def _net():
    torch.manual_seed(0)
    stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.SiLU(inplace=True))  # like Ultralytics' Conv
    return nn.Sequential(stem, Doubler(), nn.Conv2d(4, 2, 1)).eval()


def test_reuse_matches_plain_compute_and_skips_unchanged_modules():
    base = _net()
    other = copy.deepcopy(base)
    with torch.no_grad():
        other[2].weight.add_(1.0)  # only the last conv differs
    plain = copy.deepcopy(other)
    rec = Recorder(base)
    reuse(other, base, rec)
    for _ in range(2):  # a fresh batch each time: the recorder holds the latest base pass only
        x = torch.rand(2, 3, 8, 8)
        rec.clear()
        with torch.no_grad():
            base(x)
            assert torch.equal(other(x), plain(x))
    assert (rec.hits, rec.misses) == (4, 0)  # stem and Doubler came from the base's pass, twice
    assert changed_modules(base, other) == {"", "2"}


def test_in_place_change_of_a_recorded_tensor_is_never_reused():
    base = _net()
    other = copy.deepcopy(base)
    with torch.no_grad():
        other[1].b.weight.add_(0.5)  # Doubler runs; its child `a` is unchanged and gets the base's input
    rec = Recorder(base)
    reuse(other, base, rec)
    x = torch.rand(2, 3, 8, 8)
    plain = copy.deepcopy(base)
    with torch.no_grad():
        plain[1].b.weight.add_(0.5)
        base(x)
        # `a`'s recorded output was doubled in place by the base's Doubler: reusing it would double it twice
        assert torch.equal(other(x), plain(x))
        assert torch.equal(other(x), plain(x))  # and again: the first run's in-place op left no stale entry
    assert rec.hits == 2  # the stem, each time; `a` was refused (version counter moved) and recomputed


def test_changed_modules_of_a_pruned_yolo():
    base = load_model("yolo11n.yaml")
    pruned = prune(base, {"model.17.conv": 0.5}, log=False).model
    changed = changed_modules(base, pruned)
    assert {"", "model", "model.17", "model.17.conv"} <= changed
    assert not any(n.startswith(("model.16", "model.3.", "model.23.cv2.0")) for n in changed)
    assert any(n.startswith("model.18") or n.startswith("model.19") for n in changed)  # the consumer


def test_memo_holds_one_batch_and_the_batch_is_lowered_to_the_bound(yolo11n):
    """What a Recorder holds grows with the batch exactly as bytes_per_image says; memo_batch caps the batch."""
    from lipslib.pruning.engine import fused
    from lipslib.pruning.memo import bytes_per_image
    from lipslib.sensitivity import largest_side, memo_batch

    net = fused(copy.deepcopy(yolo11n))  # what the fast path runs
    per_image = bytes_per_image(net, 128)
    recorder = Recorder(net)
    with torch.no_grad():
        net(torch.zeros(3, 3, 128, 128).contiguous(memory_format=torch.channels_last))
    assert recorder.nbytes() == 3 * per_image
    assert 1e6 < per_image < 2e7  # at 128 px, every activation of a fused yolo11n in fp32: ~7.5 MB
    # rect validation batches reach 160 px at imgsz 128 (Ultralytics pads half a stride): bound on those
    assert largest_side(128) == 160 and largest_side(640) == 672
    widest = bytes_per_image(net, 160)
    assert memo_batch(yolo11n, 128, 32, int(3.5 * widest), torch.device("cpu")) == (3, widest)
    assert memo_batch(yolo11n, 128, 2, 1 << 40, torch.device("cpu")) == (2, widest)


def test_no_worker_processes_on_a_gpu():
    """Workers are forked: CUDA cannot be used in a child forked after it started, so on a GPU it is one."""
    import pytest

    from lipslib.errors import LipsError
    from lipslib.sensitivity import _n_workers

    gpu, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert _n_workers(None, None, gpu, 29, True) == 1 and _n_workers(1, None, gpu, 29, True) == 1
    with pytest.raises(LipsError, match="needs the CPU"):
        _n_workers(2, None, gpu, 29, True)
    assert _n_workers(2, None, cpu, 29, True) == 2
