"""Real latency vs GFLOPs: PyTorch CPU and ONNX Runtime CPU medians (batch 1, fused fp32, real frame,
threads pinned) for yolo11n (yaml: random weights time the same), the authors' iter-01 and iter-24, our
best (if given), and the authors' iter-24 spec applied to yolo11n with and without channel rounding to 8.
Writes reports/bench/latency.json. Not a test: ratios to yolo11n measured in the same run.

    python benchmarks/bench_latency.py [--best runs/demo/optimize/best.pt] [--threads 1 2] [--runs 15]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import torch

from lipslib.assets import paper_dir
from lipslib.benchmark import latency_table
from lipslib.engine import load_model, prune, save_checkpoint
from lipslib.evaluate import check_data, split_images, write_json
from lipslib.spec import read_spec


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--best", default=None)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--out", default="reports/bench/latency.json")
    a = p.parse_args()

    image = split_images(check_data("coco128.yaml"), "val")[0]
    spec = read_spec(paper_dir() / "iter_24" / "prune_spec.txt")
    base = load_model("yolo11n.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        models = {"yolo11n": "yolo11n.yaml", "lips_iter01": "lips_iter01_best.pt", "lips_iter24": "lips_iter24_best.pt"}
        if a.best:
            models["ours_best"] = a.best
        for label, round_to in (("iter24_spec", None), ("iter24_spec_round8", 8)):
            models[label] = str(save_checkpoint(prune(base, spec, round_to=round_to, log=False).model,
                                                Path(tmp) / f"{label}.pt"))  # fmt: skip
        tables = {t: latency_table(models, image, "yolo11n", imgsz=a.imgsz, runs=a.runs, threads=t) for t in a.threads}
    result = {
        "what": "batch-1 forward latency (no NMS) on a real letterboxed COCO frame, fused fp32, median of runs "
                "after 3 warm-up runs; ratios are to yolo11n in the same run",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": torch.get_num_threads()},
        "imgsz": a.imgsz, "runs": a.runs,
        "goal": "latency ratio <= 1.1 x GFLOPs ratio",
        "by_threads": {str(t): df.drop(columns=["weights"]).to_dict("records") for t, df in tables.items()},
    }  # fmt: skip
    for t, df in tables.items():
        df["meets_goal_torch"] = df.torch_cpu_ratio <= 1.1 * df.gflops_ratio
        print(f"threads={t}\n" + df[["model", "gflops", "gflops_ratio", "torch_cpu_ms", "torch_cpu_ratio",
                                     "onnxruntime_cpu_ms", "onnxruntime_cpu_ratio"]].to_string(index=False))  # fmt: skip
    write_json(a.out, result)


if __name__ == "__main__":
    main()
