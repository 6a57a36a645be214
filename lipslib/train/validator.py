"""mAP through the Ultralytics validator, cost through the engine: one metrics record per model."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch.nn as nn

from lipslib.datasets import check_data
from lipslib.errors import LipsError, first_line
from lipslib.files import check_writable, write_json
from lipslib.pruning.engine import Cost, cost, load_model
from lipslib.runtime import cpu_threads, use_threads


def device_arg(device) -> str | None:
    """A device as Ultralytics takes it: None (or '') lets Ultralytics choose (the first GPU when present),
    anything else ('cpu', 0, '0,1', 'cuda:0', …) is passed on as a string."""
    return None if device is None or str(device).strip() in ("", "None") else str(device)


def make_validator(info: dict, *, imgsz: int, batch: int, device, split: str, threads: int | None):
    """Ultralytics' DetectionValidator for a checked dataset, quiet, on `device` (None: Ultralytics chooses);
    on a CPU it uses `threads` threads."""
    from ultralytics.models.yolo.detect import DetectionValidator

    # Ultralytics validates a negative size and reports ~0 mAP, and an odd one (33) at a size nobody asked for
    if not isinstance(imgsz, int) or imgsz < 32 or imgsz % 32:
        raise LipsError(f"image size {imgsz!r} must be a multiple of 32 (the models' largest stride), e.g. 320 or 640")
    # rect: letterboxed per batch to the batch's aspect ratio, as `yolo val` / YOLO.val() and the trainer's own
    # validation do (a standalone validator defaults to square images, which scores differently)
    args = dict(
        data=info["yaml_file"],
        imgsz=imgsz,
        batch=batch,
        split=split,
        device=device_arg(device),
        rect=True,
        plots=False,
        verbose=False,
        save_json=False,
    )
    # Nothing is saved (no plots, no json), but without a save_dir Ultralytics makes an empty
    # runs/detect/train-N under its runs_dir on every call.
    save_dir = Path(tempfile.gettempdir()) / "lipslib-val"
    validator = DetectionValidator(save_dir=save_dir, args=args)
    use_threads(validator, threads, "on_val_start")
    return validator


def evaluate(
    model: str | os.PathLike | nn.Module,
    data: str | os.PathLike,
    *,
    imgsz: int = 640,
    batch: int = 16,
    device: str | None = None,
    split: str = "val",
    cost_imgsz: int = 640,
    threads: int | None = None,
    out: str | os.PathLike | None = None,
) -> dict:
    """Evaluate a detector: Ultralytics' validator for mAP, the engine for its cost.

    Validation uses rect batches, as `yolo val` and `YOLO.val()` do, so the mAP equals Ultralytics' own.

    Args:
        model: a checkpoint, a model yaml or a module (see `load_model`); or an exported model (`lipslib.deploy`:
            an `*_openvino_model/` folder, an `.onnx` file, or `lips export`'s output folder), validated by
            Ultralytics in its runtime (square letterbox at its static size and batch; its cost from the
            export's record).
        imgsz: validation image size.
        batch: validation batch size.
        device: `cpu`, `0`, `0,1`, … ; None lets Ultralytics choose (the first GPU when present).
        split: the dataset split to validate on.
        cost_imgsz: image size of the GFLOPs count (the paper's 640).
        threads: CPU threads for the validation (default: all cores).
        out: also write the record there as JSON (checked writable before the validation).

    Returns:
        The metrics record: `map50_95`, `map50`, `precision`, `recall`, `gflops`, `params`, `images`, `imgsz`,
        `split`, `data`, `weights`, `device`, `cost_imgsz`, `val_seconds`.

    Raises:
        LipsError: a missing model or dataset, a split without labels, or a failed validation.

    Examples:
        >>> evaluate("lips_iter24_best.pt", "coco128.yaml", imgsz=320)["map50_95"]  # doctest: +SKIP
    """
    from lipslib.deploy import export_record, exported_model

    if out:
        check_writable(out)
    info = check_data(data, splits=(split,))
    exported = None if isinstance(model, nn.Module) else exported_model(model)
    if exported is not None:  # Ultralytics' AutoBackend runs it; its cost is that of the checkpoint it came from
        net, rec = str(exported), export_record(exported)
        c = Cost(gflops=rec.get("gflops", float("nan")), params=rec.get("params"))
        cost_imgsz = rec.get("cost_imgsz", 640)  # the record's count (at 640, the paper's convention)
    else:
        net = load_model(model)
        c = cost(net, cost_imgsz)
    t0 = time.perf_counter()
    validator = make_validator(info, imgsz=imgsz, batch=batch, device=device, split=split, threads=threads)
    stats = run_validator(validator, net, model, info, split, threads)
    record = {
        "weights": str(model) if not isinstance(model, nn.Module) else "<in-memory>",
        "data": info["yaml_file"],
        "split": split,
        "images": int(validator.seen),
        "imgsz": imgsz,
        "map50_95": float(stats["metrics/mAP50-95(B)"]),
        "map50": float(stats["metrics/mAP50(B)"]),
        "precision": float(stats["metrics/precision(B)"]),
        "recall": float(stats["metrics/recall(B)"]),
        "gflops": c.gflops,
        "params": c.params,
        "cost_imgsz": cost_imgsz,
        "device": str(validator.device),
        "val_seconds": round(time.perf_counter() - t0, 2),
    }
    if out:
        write_json(out, record)
    return record


def run_validator(validator, net: nn.Module, name, info: dict, split: str, threads: int | None) -> dict:
    """`validator(model=net)` on `threads` CPU threads; a failure becomes one LipsError line."""
    try:
        with cpu_threads(threads):
            return validator(model=net)
    except LipsError:
        raise
    except Exception as e:
        raise LipsError(f"validation of {name} on {info['yaml_file']} ({split}) failed: {first_line(e)}") from None


def image_matches(
    model,
    data,
    *,
    imgsz: int = 640,
    batch: int = 16,
    device: str | None = None,
    split: str = "val",
    threads: int | None = None,
) -> list[dict]:
    """Ultralytics' per-image matching of one validation, as a list over images of {'tp' (n_pred × 10 IoU
    thresholds), 'conf', 'pred_cls', 'target_cls'}: what an mAP over any subset of images is made of."""
    info = check_data(data, splits=(split,))
    validator = make_validator(info, imgsz=imgsz, batch=batch, device=device, split=split, threads=threads)
    validator.metrics.clear_stats = lambda: None  # Ultralytics clears them once it has the mAP; keep them
    from lipslib.deploy import exported_model

    exported = None if isinstance(model, nn.Module) else exported_model(model)
    run_validator(validator, str(exported) if exported else load_model(model), model, info, split, threads)
    stats = validator.metrics.stats
    keys = ("tp", "conf", "pred_cls", "target_cls")
    return [dict(zip(keys, values)) for values in zip(*(stats[k] for k in keys))]
