"""Stage IV: published and measured points kept apart, latency measured with ratios to the base."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from lipslib.errors import LipsError
from lipslib.pipeline.benchmark import published_points, run_benchmark


def test_published_points_are_the_authors_table():
    df = published_points().set_index("model")
    assert len(df) == 10 and (df.kind == "published").all()
    assert df.loc["LIPS pruned (paper)", "map50_95"] == 0.3323 and df.loc["YOLO11n", "gflops"] == 6.5


def test_unknown_base_is_refused_before_any_evaluation(tmp_path):
    # the weights do not exist: evaluating first would fail on them, not on the label
    with pytest.raises(LipsError, match="base 'b' is not among the models: a"):
        run_benchmark({"a": "missing.pt"}, "coco128.yaml", tmp_path, base="b")


@pytest.mark.slow  # validates
def test_benchmark_cli(assets, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lipslib",
            "benchmark",
            "--weights",
            "yolo11n.yaml",  # labelled yolo11n, its stem
            "--weights",
            "lips_iter24=lips_iter24_best.pt",
            "--model",  # the deprecated spelling of --weights
            "yolo11s=yolo11s.yaml",
            "--data",
            "coco128.yaml",
            "--imgsz",
            "160",
            "--latency-imgsz",
            "160",
            "--runs",
            "3",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(tmp_path / "tables" / "benchmark.csv")
    measured = table[table.kind == "measured"]
    assert measured.model.tolist() == ["lips_iter24"]  # a random-init yaml is timed, never scored
    assert "128 images" in measured.source.iloc[0] and (table.kind == "published").sum() == 10
    lat = pd.read_csv(tmp_path / "tables" / "latency.csv").set_index("model")
    assert lat.loc["lips_iter24", "gflops_ratio"] == pytest.approx(4.538 / 6.519, abs=1e-3)
    assert lat.loc["yolo11s", "gflops_ratio"] == pytest.approx(21.5 / 6.5, abs=0.01)  # Ultralytics: 21.5 and 6.5
    for backend in ("torch_cpu", "onnxruntime_cpu"):
        # the ratio is to the base's time, not to another model's nor inverted
        assert lat[f"{backend}_ratio"].to_numpy() == pytest.approx(
            (lat[f"{backend}_ms"] / lat.loc["yolo11n", f"{backend}_ms"]).to_numpy(), rel=1e-3
        )
        # real timing: 3.3× the arithmetic is slower also on 2 busy cores (measured: 2.2× torch, 2.6× ONNX Runtime)
        assert lat.loc["yolo11s", f"{backend}_ratio"] > 1.5, lat
    assert (tmp_path / "figures" / "benchmark.png").stat().st_size > 10_000
