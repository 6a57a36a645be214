"""Deployment: a checkpoint exported as users deploy it, and run as the runtime runs it.

Export goes through Ultralytics' own exporter (`Exporter`, what `YOLO.export` runs): OpenVINO IR, or ONNX; INT8
by NNCF post-training quantization for OpenVINO and by ONNX Runtime's static QDQ quantization for ONNX, both with
Ultralytics' choices (the head's box decoding and class sigmoid stay in float). lipslib changes one thing: the
calibration images. Ultralytics calibrates on the dataset's `val` split; here they are the first images of its
fine-tune split (`train`), so the images that choose and report a model never calibrate it.

Running: OpenVINO compiles for the CPU with a latency hint, one stream and `threads` threads. Its default
precision is not fp32 on every CPU: where the CPU has bf16 (AMX, AVX512-BF16), OpenVINO runs "FP32" IR in bf16
unless told `INFERENCE_PRECISION_HINT: f32`. `precision` says which is asked for (`default`, `f32`, `int8`), and
`ran_precision` reads back what the compiled model runs in, so a record says what was measured.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from lipslib.cfg import DEPLOY_FORMATS, PRECISIONS
from lipslib.errors import LipsError, first_line
from lipslib.files import check_writable, write_json

RECORD = "lips_export.json"  # beside an export: what it was made from (source, cost, precision, calibration)


def check_precision(runtime: str, precision: str) -> None:
    """Refuse a precision the runtime does not have: torch and cuda run fp32 only; ONNX Runtime fp32 or int8."""
    if precision not in PRECISIONS:
        raise LipsError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    allowed = {"openvino": PRECISIONS, "onnxruntime": ("default", "f32", "int8")}.get(runtime, ("default", "f32"))
    if precision not in allowed:
        raise LipsError(
            f"runtime {runtime} runs {' / '.join(allowed)}, not {precision}; int8 runs on openvino or onnxruntime"
        )


def check_installed(runtime: str, precision: str = "default") -> None:
    """One line naming the package to install when a runtime's library (or, for OpenVINO INT8, NNCF) is missing."""
    needs = {"openvino": ("openvino", "openvino nncf"), "onnxruntime": ("onnxruntime", "onnxruntime")}
    if runtime not in needs:
        return
    module, packages = needs[runtime]
    try:
        __import__(module)
    except ImportError:
        raise LipsError(f"runtime {runtime} needs the {module} package: pip install {packages}") from None
    if runtime == "openvino" and precision == "int8":
        check_installed_nncf()


def sample_frames(imgsz: int) -> torch.Tensor:
    """Ultralytics' two sample images (bus.jpg, zidane.jpg, shipped with it), letterboxed: inputs to time on and,
    for a timing-only INT8 model, to calibrate on when no dataset is given (never for a model that is scored)."""
    from ultralytics.utils import ASSETS

    from lipslib.datasets import frame_tensor

    return torch.cat([frame_tensor(ASSETS / name, imgsz) for name in ("bus.jpg", "zidane.jpg")])


def calibration_batches(data=None, split: str = "train", images: int = 300, imgsz: int = 640) -> list[dict]:
    """INT8 calibration inputs as Ultralytics' exporter takes them (`{'img': uint8 1×3×H×W}` per image): the first
    `images` images of `data`'s `split`, letterboxed to `imgsz`; without `data`, `sample_frames`.

    Raises:
        LipsError: split `test`: the images that report a model never calibrate it.
    """
    if split == "test":
        raise LipsError("INT8 calibration on the test split: those images report; calibrate on train (fine-tune)")
    from lipslib.datasets import calibration_images

    x = calibration_images(data, split, images, imgsz) if data is not None else sample_frames(imgsz)
    return [{"img": (t[None] * 255).round().to(torch.uint8)} for t in x]


def run_exporter(weights: Path, fmt: str, int8: bool, imgsz: int, batch: int, calibration: list | None) -> Path:
    """Ultralytics' Exporter on a checkpoint, its INT8 calibration images replaced by `calibration`."""
    from ultralytics import YOLO
    from ultralytics.engine.exporter import Exporter

    class CalibratedExporter(Exporter):
        def get_int8_calibration_dataloader(self, prefix=""):
            return calibration

    from lipslib.runtime import keep_threads

    yolo = YOLO(str(weights))
    args = {
        **yolo.overrides,
        "imgsz": imgsz,
        "batch": batch,
        "data": None,
        "device": "cpu",
        "verbose": False,
        "format": fmt,
        "quantize": 8 if int8 else None,
        "mode": "export",
    }
    with keep_threads(), warnings.catch_warnings():  # the exporter's select_device sets the thread count for good
        # OpenVINO's and ONNX's converters trace with torch.jit.trace, which torch now flags as deprecated on every
        # call: a notice per export that says nothing about the model (it filled notebook 04 with eight of them)
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=FutureWarning)
        return Path(CalibratedExporter(overrides=args, _callbacks=yolo.callbacks)(model=yolo.model))


def export(
    weights: str | os.PathLike,
    format: str = "openvino",
    *,
    int8: bool = False,
    data: str | os.PathLike | None = None,
    split: str = "train",
    images: int = 300,
    imgsz: int = 640,
    batch: int = 1,
    out: str | os.PathLike | None = None,
) -> Path:
    """Export a (pruned) checkpoint for deployment with Ultralytics' exporter.

    Args:
        weights: the checkpoint (a path or a name under `$LIPS_ASSETS/weights/`).
        format: openvino (an IR folder) or onnx (a file).
        int8: quantize to INT8 (NNCF for OpenVINO, ONNX Runtime static QDQ for ONNX), calibrated on `data`.
        data: the dataset whose `split` images calibrate INT8; None with int8: Ultralytics' two sample images,
            enough to time a model, not to score one.
        split: the calibration split: the fine-tune images (`train`); `test` is refused.
        images: how many of its images calibrate (the first ones, as `calibration_images` lists them).
        imgsz: the exported input size (static).
        batch: the exported batch size (static).
        out: a folder to hold the export (made; an existing non-empty one is refused); None: beside the weights,
            where Ultralytics puts it.

    Returns:
        The exported model: an `*_openvino_model/` folder or an `.onnx` file, loadable with `YOLO(path)` (and
        `lips val --weights`). A `lips_export.json` beside it records the source, its GFLOPs and parameters, the
        precision and the calibration images.

    Raises:
        LipsError: an unknown format, calibration on `test`, a non-empty output folder, a missing runtime package,
            or a failed export (Ultralytics' message).

    Examples:
        >>> export("pruned.pt", "openvino", int8=True, data="coco_val2193.yaml", imgsz=320, out="x")  # doctest: +SKIP
        PosixPath('x/pruned_int8_openvino_model')
    """
    from lipslib.assets.resolve import resolve_weights
    from lipslib.pruning.engine import cost, load_model, save_checkpoint

    if format not in DEPLOY_FORMATS:
        raise LipsError(f"unknown export format '{format}'; choose one of {', '.join(DEPLOY_FORMATS)}")
    check_installed("openvino" if format == "openvino" else "onnxruntime")
    if int8 and format == "openvino":
        check_installed_nncf()
    if not isinstance(imgsz, int) or imgsz < 32 or imgsz % 32:
        raise LipsError(f"export image size {imgsz!r} must be a multiple of 32, e.g. 320 or 640")
    if out is not None:
        out = Path(out)
        if out.exists() and any(out.iterdir()):
            raise LipsError(f"{out} exists and is not empty; choose another --out or remove it")
        check_writable(out / RECORD)
    path = resolve_weights(weights)
    calibration = calibration_batches(data, split, images, imgsz) if int8 else None
    model = load_model(path)
    c = cost(model)
    with tempfile.TemporaryDirectory() as tmp:
        source = path if out is None else save_checkpoint(model, Path(tmp) / path.name)
        try:
            exported = run_exporter(source, format, int8, imgsz, batch, calibration)
        except LipsError:
            raise
        except Exception as e:  # Ultralytics' exporter raises plain exceptions (AssertionError, RuntimeError, …)
            raise LipsError(f"export of {path} to {format} failed: {first_line(e)}") from None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            exported = Path(shutil.move(str(exported), out / exported.name))
    write_json(
        record_path(exported),
        {
            "source": str(weights),
            "format": format,
            "precision": "int8" if int8 else "fp32",
            "imgsz": imgsz,
            "batch": batch,
            "gflops": c.gflops,
            "params": c.params,
            "calibration": None
            if not int8
            else {
                "data": None if data is None else str(data),
                "split": split if data else "samples",
                "images": len(calibration),
            },
        },
        portable_paths=True,
    )
    return exported


def check_installed_nncf() -> None:
    try:
        import nncf  # noqa: F401
    except ImportError:
        raise LipsError("OpenVINO INT8 needs the nncf package: pip install nncf") from None


def exported_model(path: str | os.PathLike) -> Path | None:
    """The exported model a path names, or None for a checkpoint: an `*_openvino_model/` folder or an `.onnx` file
    itself, or a folder (`export`'s `out`) holding exactly one of them."""
    p = Path(path)
    if p.suffix == ".onnx" or (p.is_dir() and p.name.endswith("_openvino_model")):
        return p
    if p.is_dir():
        found = [c for c in p.iterdir() if c.suffix == ".onnx" or (c.is_dir() and c.name.endswith("_openvino_model"))]
        if len(found) == 1:
            return found[0]
        raise LipsError(
            f"{p} holds {len(found) or 'no'} exported models ({', '.join(c.name for c in found) or 'none'}); "
            "name one: an *_openvino_model folder or an .onnx file"
        )
    return None


def record_path(model: Path) -> Path:
    """Where `export` writes an export's record: inside an OpenVINO folder, beside an ONNX file (its own name)."""
    return model / RECORD if model.is_dir() else model.with_name(f"{model.stem}.{RECORD}")


def export_record(model: Path) -> dict:
    """`export`'s record of an exported model ({} for an export lipslib did not make)."""
    record = record_path(model)
    if not record.is_file() and not model.is_dir():  # an ONNX export made before records had its name
        record = model.parent / RECORD
    return json.loads(record.read_text()) if record.is_file() else {}


def compile_openvino(model, precision: str = "default", threads: int = 1):
    """An OpenVINO model (an IR path, or an `openvino.Model`) compiled for the CPU for latency: one stream,
    `threads` threads, and fp32 inference when `precision` is `f32` or `int8` (an INT8 model's float parts — the
    head's decoding, its sigmoid — then run in f32, as on the CPUs without bf16 that most users have, so INT8 is
    compared with forced f32 like for like). Returns (compiled model, the inference precision its float parts run
    in: bf16 / f16 / f32, as OpenVINO reports it)."""
    import openvino as ov

    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": int(threads)}
    if precision in ("f32", "int8"):
        config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = ov.Core().compile_model(model if not isinstance(model, (str, Path)) else str(model), "CPU", config)
    return compiled, compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # bf16, f16 or f32


def openvino_xml(model: Path) -> Path:
    xml = sorted(model.glob("*.xml"))
    if len(xml) != 1:
        raise LipsError(f"{model}: expected one OpenVINO .xml, found {len(xml)}")
    return xml[0]


def openvino_runner(model: Path, x: torch.Tensor, precision: str, threads: int):
    """(a zero-argument forward of an exported OpenVINO model on `x`, what it ran in)."""
    compiled, ran = compile_openvino(openvino_xml(model), precision, threads)
    request, feed = compiled.create_infer_request(), x.numpy()
    return (lambda: request.infer({0: feed})), ran


def onnx_runner(model: Path, x: torch.Tensor, threads: int):
    """A zero-argument forward of an ONNX model on `x` in ONNX Runtime, on `threads` CPU threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    name, feed = session.get_inputs()[0].name, np.ascontiguousarray(x.numpy())
    return lambda: session.run(None, {name: feed})
