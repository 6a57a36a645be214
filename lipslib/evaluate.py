"""mAP through the Ultralytics validator, cost through the engine: one metrics record per model."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch.nn as nn

from lipslib.assets import resolve_data
from lipslib.engine import cost, load_model
from lipslib.errors import LipsError
from lipslib.runtime import cpu_threads, use_threads


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__


def split_images(info: dict, split: str) -> list[Path]:
    """The image files of a split of a checked dataset (folder(s) or .txt lists), sorted."""
    from ultralytics.data.utils import IMG_FORMATS

    images: list[Path] = []
    for src in info[split] if isinstance(info[split], list) else [info[split]]:
        src = Path(src)
        if src.is_dir():
            images += [p for p in sorted(src.rglob("*")) if p.suffix[1:].lower() in IMG_FORMATS]
        elif src.suffix == ".txt" and src.is_file():
            images += [Path(line.strip()) for line in src.read_text().splitlines() if line.strip()]
    return images


def check_data(data: str | os.PathLike, splits=("val",)) -> dict:
    """Resolve a dataset yaml and make sure each named split has images with labels."""
    from ultralytics.data.utils import check_det_dataset, img2label_paths

    path = resolve_data(data)
    try:
        info = check_det_dataset(str(path), autodownload=False)
    except Exception as e:
        raise LipsError(f"dataset {path}: {_first_line(e)}; check its train/val paths") from None
    for split in splits:
        if not info.get(split):
            raise LipsError(f"dataset {path} has no '{split}' split; add '{split}: images/...' to the yaml")
        images = split_images(info, split)
        if not images:
            raise LipsError(f"dataset {path}: split '{split}' has no images at {info[split]}")
        labels = [Path(p) for p in img2label_paths([str(i) for i in images])]
        if not any(p.is_file() and p.stat().st_size for p in labels):
            raise LipsError(
                f"dataset {path}: split '{split}' has {len(images)} images but no labels "
                f"(looked for e.g. {labels[0]}); YOLO labels go in labels/ beside images/"
            )
    info["yaml_file"] = str(path)
    return info


def make_validator(info: dict, *, imgsz: int, batch: int, device: str, split: str, threads: int | None):
    """Ultralytics' DetectionValidator for a checked dataset, quiet, on `threads` CPU threads."""
    from ultralytics.models.yolo.detect import DetectionValidator

    if not isinstance(imgsz, int) or imgsz < 32:  # Ultralytics validates a negative size and reports ~0 mAP
        raise LipsError(f"image size {imgsz!r} must be an integer ≥ 32 (a multiple of 32, e.g. 320 or 640)")
    args = dict(data=info["yaml_file"], imgsz=imgsz, batch=batch, split=split, device=str(device),
                plots=False, verbose=False, save_json=False)  # fmt: skip
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
    device: str = "cpu",
    split: str = "val",
    cost_imgsz: int = 640,
    threads: int | None = None,
    out: str | os.PathLike | None = None,
) -> dict:
    """Evaluate a detector: mAP50-95 / mAP50 on `split` at `imgsz`, GFLOPs/params at `cost_imgsz`.
    With `out`, the record is also written there as JSON."""
    info = check_data(data, splits=(split,))
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
        raise LipsError(f"validation of {name} on {info['yaml_file']} ({split}) failed: {_first_line(e)}") from None


def image_matches(model, data, *, imgsz: int = 640, batch: int = 16, device: str = "cpu", split: str = "val",
                  threads: int | None = None) -> list[dict]:  # fmt: skip
    """Ultralytics' per-image matching of one validation, as a list over images of {'tp' (n_pred × 10 IoU
    thresholds), 'conf', 'pred_cls', 'target_cls'}: what an mAP over any subset of images is made of."""
    info = check_data(data, splits=(split,))
    validator = make_validator(info, imgsz=imgsz, batch=batch, device=device, split=split, threads=threads)
    validator.metrics.clear_stats = lambda: None  # Ultralytics clears them once it has the mAP; keep them
    run_validator(validator, load_model(model), model, info, split, threads)
    stats = validator.metrics.stats
    keys = ("tp", "conf", "pred_cls", "target_cls")
    return [dict(zip(keys, values)) for values in zip(*(stats[k] for k in keys))]


def map50_95(images: list[dict]) -> float:
    """mAP50-95 over these images, by Ultralytics' ap_per_class (classes present in their labels)."""
    from ultralytics.utils.metrics import ap_per_class

    cat = {k: np.concatenate([im[k] for im in images], 0) for k in ("tp", "conf", "pred_cls", "target_cls")}
    ap = ap_per_class(cat["tp"], cat["conf"], cat["pred_cls"], cat["target_cls"])[5]
    return float(ap.mean()) if len(ap) else 0.0


def paired_bootstrap(a: list[dict], b: list[dict], resamples: int = 1000, seed: int = 0) -> dict:
    """How sure is "model a beats model b" on these images? Both models' mAP50-95 over the same resamples
    of the images (with replacement): the ratio a/b's 2.5/50/97.5 percentiles and the share of
    resamples where a > b."""
    if len(a) != len(b) or not a:
        raise LipsError(f"paired bootstrap needs the same images for both models (got {len(a)} and {len(b)})")
    rng = np.random.default_rng(seed)
    ratios, wins = [], 0
    for _ in range(resamples):
        idx = rng.integers(0, len(a), len(a))
        ma, mb = map50_95([a[i] for i in idx]), map50_95([b[i] for i in idx])
        ratios.append(ma / max(mb, 1e-9))
        wins += ma > mb
    lo, mid, hi = np.percentile(ratios, [2.5, 50, 97.5])
    return {"ratio_ci95": [float(lo), float(hi)], "ratio_median": float(mid), "p_a_beats_b": wins / resamples,
            "resamples": resamples, "images": len(a)}  # fmt: skip


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write JSON atomically (sorted keys, so equal content gives equal bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path
