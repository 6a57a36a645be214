"""Stage IV: where pruned models stand against the YOLO family, and what they cost in real time.

Published points (lipslib/data/yolo_family.csv, COCO val2017) and points measured here are kept apart:
every measured point carries the data it was measured on, and the figure draws the two differently.
Latency is measured, not inferred from GFLOPs: PyTorch on CPU (fused, fp32, batch 1, median of N after
warm-up, threads pinned) and ONNX Runtime on CPU from the Ultralytics ONNX export; CUDA when present.
"""

from __future__ import annotations

import statistics
import tempfile
from importlib import resources
from pathlib import Path

import pandas as pd

from lipslib.datasets import frame_tensor
from lipslib.errors import LipsError
from lipslib.pruning.engine import cost, load_model
from lipslib.runtime import cpu_threads, select_device
from lipslib.train.validator import evaluate


def published_points() -> pd.DataFrame:
    with resources.files("lipslib").joinpath("data/yolo_family.csv").open() as f:
        df = pd.read_csv(f)
    return df.assign(kind="published")


def measured_points(
    models: dict[str, str], data, imgsz: int = 640, split: str = "val", source: str | None = None, **kw
) -> pd.DataFrame:
    """Evaluate each {label: weights} on `data`; the `source` column says on what. Model yamls (random
    weights, used only for timing) are not scored."""
    rows = []
    for label, weights in models.items():
        if str(weights).endswith((".yaml", ".yml")):
            continue
        r = evaluate(weights, data, imgsz=imgsz, split=split, **kw)
        rows.append(
            {
                "model": label,
                "map50_95": r["map50_95"],
                "gflops": r["gflops"],
                "kind": "measured",
                "source": f"{source or Path(r['data']).stem + ' ' + split} ({r['images']} images) @ {imgsz}",
            }
        )
    return pd.DataFrame(rows)


def _check_base(models: dict[str, str], base: str) -> None:
    if base not in models:
        raise LipsError(f"base '{base}' is not among the models: {', '.join(models)}")


def latency_table(
    models: dict[str, str],
    image,
    base: str,
    imgsz: int = 640,
    runs: int = 15,
    warmup: int = 3,
    threads: int = 1,
    onnx: bool = True,
    device=None,
    openvino: bool | None = None,
    calibration: list | None = None,
) -> pd.DataFrame:
    """Batch-1 forward latency (ms, no NMS) of each {label: weights} on one real frame, median of `runs`
    (`lipslib.pruning.latency`: interleaved, denormals flushed): PyTorch and ONNX Runtime on the CPU, OpenVINO in
    its default precision (the one it ran in: `openvino_precision`) and in INT8 (calibrated on `calibration`,
    `deploy.calibration_batches`' batches; None: the sample frames), and PyTorch CUDA when `device` (None:
    Ultralytics' choice) is a GPU; ratios to `base` (a label) next to the GFLOPs ratio. `openvino`: None
    measures it where the package is installed."""
    from lipslib.pruning.latency import interleaved, whole_runner
    from lipslib.train.validator import device_arg

    _check_base(models, base)
    dev = select_device(device_arg(device), verbose=False)
    x = frame_tensor(image, imgsz)
    if openvino is None:
        import importlib.util

        openvino = importlib.util.find_spec("openvino") is not None
    backends = {
        "torch_cpu": ("torch", None, "default"),
        **({"onnxruntime_cpu": ("onnxruntime", None, "default")} if onnx else {}),
        **(
            {"openvino_cpu": ("openvino", None, "default"), "openvino_int8_cpu": ("openvino", None, "int8")}
            if openvino
            else {}
        ),
        **({"torch_cuda": ("torch", dev, "default")} if dev.type == "cuda" else {}),
    }
    with cpu_threads(threads), tempfile.TemporaryDirectory() as tmp:
        runners = {
            (k, b): whole_runner(w, rt, x, threads, Path(tmp), gpu, precision=p, calibration=calibration)
            for k, w in models.items()
            for b, (rt, gpu, p) in backends.items()
        }
        times = interleaved(runners, runs, warmup)
    rows = [
        {
            "model": k,
            "weights": str(w),
            "gflops": cost(load_model(w)).gflops,
            "threads": threads,
            "imgsz": imgsz,
            "runs": runs,
            **{f"{b}_ms": statistics.median(times[(k, b)]) for b in backends},
            **({"openvino_precision": runners[(k, "openvino_cpu")].precision} if openvino else {}),
        }
        for k, w in models.items()
    ]
    df = pd.DataFrame(rows)
    ref = df.set_index("model").loc[base]
    df["gflops_ratio"] = df.gflops / ref.gflops
    for col in [c for c in df.columns if c.endswith("_ms")]:
        df[col.replace("_ms", "_ratio")] = df[col] / ref[col]
    return df


def run_benchmark(
    models: dict[str, str],
    data,
    out,
    *,
    imgsz: int = 640,
    split: str = "val",
    source: str | None = None,
    base: str | None = None,
    image=None,
    latency_imgsz: int = 640,
    runs: int = 15,
    threads: int = 1,
    device=None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """benchmark.csv + benchmark.png (published and measured points) and latency.csv under `out`
    (tables/, figures/). mAP is measured on `device` (None: Ultralytics' choice), latency on the CPU and
    on that device when it is a GPU. Returns (points, latency)."""
    from lipslib.datasets import check_data, split_images
    from lipslib.pipeline.plots import benchmark_figure

    if base is not None:
        _check_base(models, base)  # before minutes of evaluation, not after
    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    points = pd.concat(
        [published_points(), measured_points(models, data, imgsz=imgsz, split=split, source=source, device=device)]
    )
    _portable(points).to_csv(out / "tables" / "benchmark.csv", index=False, float_format="%.4f")
    benchmark_figure(points, out / "figures" / "benchmark.png")
    image = image or split_images(check_data(data, splits=(split,)), split)[0]
    from lipslib.deploy import calibration_batches

    lat = latency_table(
        models,
        image,
        base or next(iter(models)),
        imgsz=latency_imgsz,
        runs=runs,
        threads=threads,
        device=device,
        # INT8 timing calibrated on the fine-tune images where the data has them (it is timed, not scored here)
        calibration=calibration_batches(data, "train", 64, latency_imgsz) if check_data(data).get("train") else None,
    )
    _portable(lat).to_csv(out / "tables" / "latency.csv", index=False, float_format="%.4f")
    return points, lat


def _portable(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with the paths in its text columns as `files.portable` writes them (records that travel)."""
    from lipslib.files import portable

    return table.assign(**{c: table[c].map(portable) for c in table.select_dtypes("object").columns})
