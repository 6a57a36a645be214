"""Every stage hands the configured device to Ultralytics. Ultralytics turns a device request into a
torch.device in one function, `select_device`; here it is replaced by a recorder that answers 'cpu' (the
only device this machine has), each stage runs configured for GPU '0', and every request must be '0'.
The one deliberate exception is Ultralytics' ONNX export for the ONNX Runtime CPU timing, which asks
for the CPU."""

import importlib
import inspect
from pathlib import Path

import pytest
from conftest import ROOT

from lipslib.cfg import load_params

pytestmark = pytest.mark.slow  # trains and validates
ASKERS = (
    "ultralytics.utils.torch_utils",
    "ultralytics.engine.trainer",
    "ultralytics.engine.validator",
    "ultralytics.engine.predictor",
)


@pytest.fixture
def requests(monkeypatch):
    from ultralytics.utils import torch_utils

    real, calls = torch_utils.select_device, []

    def record(device="", newline=False, verbose=True):
        caller = inspect.stack()[1]
        calls.append((Path(caller.filename).parent.name + "/" + Path(caller.filename).stem, str(device)))
        return real("cpu", newline, verbose=False)

    for name in ASKERS:
        monkeypatch.setattr(importlib.import_module(name), "select_device", record)
    return calls


def test_each_stage_asks_for_the_configured_device(assets, coco128, requests, tmp_path):
    from lipslib.pipeline.benchmark import run_benchmark
    from lipslib.pipeline.loop import optimize
    from lipslib.pipeline.video import compare_video
    from lipslib.sensitivity import run_sensitivity

    w24, w01 = (assets / "weights" / f"lips_iter{k}_best.pt" for k in ("24", "01"))
    asked = {}

    def stage(name, fn):
        before = len(requests)
        fn()
        asked[name] = requests[before:]

    stage(
        "sensitivity",
        lambda: run_sensitivity(w24, coco128, layers=["model.17.conv"], imgsz=96, device="0", progress=False),
    )
    params = load_params(ROOT / "params.yaml", "smoke", {"device": "0", "optimize.iterations": 1})
    stage("optimize", lambda: optimize(params, tmp_path / "opt", progress=False))  # finetune + evaluate
    stage(
        "benchmark",
        lambda: run_benchmark(
            {"a": str(w24), "b": str(w01)}, coco128, tmp_path / "bench", imgsz=96, latency_imgsz=64, runs=1, device="0"
        ),
    )
    stage(
        "video",
        lambda: compare_video(
            assets / "videos" / "crosswalk.mp4",
            w01,
            w24,
            frame_step=50,
            max_frames=2,
            warmup=0,
            progress=False,
            device="0",
        ),
    )
    for name, calls in asked.items():
        assert calls, f"{name} never asked Ultralytics for a device"
        assert {device for caller, device in calls if caller != "engine/exporter"} == {"0"}, (name, calls)
        assert {device for caller, device in calls if caller == "engine/exporter"} <= {"cpu"}, (name, calls)
    callers = {c for calls in asked.values() for c, _ in calls}
    assert {"engine/trainer", "engine/validator", "engine/predictor"} <= callers, callers
    for name in ("sensitivity", "benchmark", "video"):  # lipslib's own device decisions, through runtime.select_device
        assert "lipslib/runtime" in {c for c, _ in asked[name]}, (name, asked[name])


def test_choosing_a_device_leaves_the_thread_count_alone(foreign_threads):
    import torch

    from lipslib.runtime import select_device

    assert select_device("cpu").type == "cpu"
    assert torch.get_num_threads() == foreign_threads
