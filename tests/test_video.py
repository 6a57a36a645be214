"""Stage V: the authors' comparison.py flags, the side-by-side mp4, the summary, damaged and bad input."""

import json
import os
import subprocess
import sys

import cv2
import pytest
from conftest import ROOT


@pytest.fixture(scope="module")
def cpu_args(tmp_path_factory):
    path = tmp_path_factory.mktemp("args") / "args.yaml"
    path.write_text("imgsz: 320\ndevice: cpu\nconf: null\niou: 0.7\nhalf: false\nmax_det: 300\nclasses: null\n")
    return path


def run(*args, entry=("-m", "lipslib", "compare-video")):
    return subprocess.run(
        [sys.executable, *entry, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ.copy(),
        timeout=900,
    )


def test_side_by_side_mp4_and_summary(assets, cpu_args, tmp_path):
    w = assets / "weights"
    out, summary = tmp_path / "out.mp4", tmp_path / "s.json"
    proc = run(
        "--video",
        assets / "videos" / "crosswalk.mp4",
        "--model_orig",
        w / "lips_iter01_best.pt",
        "--model_pruned",
        w / "lips_iter24_best.pt",
        "--args_yaml",
        cpu_args,
        "--frame_step",
        5,
        "--save",
        out,
        "--summary",
        summary,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads(summary.read_text())
    cap = cv2.VideoCapture(str(out))
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (1280, 360)
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == rec["frames_processed"] == 138  # 686 frames, every 5th
    for key in ("orig", "pruned"):
        for field in (
            "latency_ms_mean",
            "latency_ms_median",
            "latency_ms_p95",
            "fps",
            "gflops",
            "detections_per_frame",
        ):
            assert rec[key][field] > 0, (key, field)
    assert rec["orig"]["gflops"] == pytest.approx(4.24, abs=0.01) and 0 < rec["agreement"] <= 1


def test_the_frames_run_on_ultralytics_threads_and_the_process_keeps_its_own(assets, cpu_args, foreign_threads):
    import torch
    from ultralytics.utils import NUM_THREADS

    from lipslib.pipeline.video import compare_video

    w = assets / "weights"
    rec = compare_video(
        assets / "videos" / "crosswalk.mp4",
        w / "lips_iter01_best.pt",
        w / "lips_iter24_best.pt",
        args_yaml=cpu_args,
        frame_step=50,
        max_frames=2,
        warmup=0,
        progress=False,
    )
    assert rec["cpu_threads"] == NUM_THREADS and torch.get_num_threads() == foreign_threads


def test_authors_entry_point_and_truncated_video(assets, cpu_args, tmp_path):
    w = assets / "weights"
    proc = run(
        "--video",
        assets / "videos" / "plaza_truncated.avi",
        "--model_orig",
        w / "lips_iter01_best.pt",
        "--model_pruned",
        w / "lips_iter24_best.pt",
        "--args_yaml",
        cpu_args,
        "--frame_step",
        20,
        "--summary",
        tmp_path / "t.json",
        entry=("comparison.py",),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads((tmp_path / "t.json").read_text())
    assert rec["frames_in_header"] == 682 and rec["frames_decoded"] == 341
    assert "341 decoded" in proc.stdout


@pytest.mark.parametrize("case", ["missing", "not_a_video", "bad_yaml", "classifier"])
def test_bad_input_is_one_line(assets, cpu_args, tmp_path, case):
    import torch
    from ultralytics.nn.tasks import ClassificationModel

    w = assets / "weights"
    video, args, pruned = assets / "videos" / "crosswalk.mp4", cpu_args, w / "lips_iter24_best.pt"
    if case == "missing":
        video = tmp_path / "nope.mp4"
    elif case == "not_a_video":
        video = tmp_path / "text.mp4"
        video.write_text("not a video")
    elif case == "bad_yaml":
        args = tmp_path / "bad.yaml"
        args.write_text("imgsz: [320\n")
    else:
        pruned = tmp_path / "cls.pt"
        torch.save({"model": ClassificationModel("yolo11n-cls.yaml", verbose=False).half(), "train_args": {}}, pruned)
    proc = run(
        "--video",
        video,
        "--model_orig",
        w / "lips_iter01_best.pt",
        "--model_pruned",
        pruned,
        "--args_yaml",
        args,
        "--max_frames",
        2,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("lips compare-video: error: ")
