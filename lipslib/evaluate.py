"""mAP through the Ultralytics validator, cost through the engine: one metrics record per model."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from lipslib.assets import resolve_data
from lipslib.engine import cost, load_model
from lipslib.errors import LipsError
from lipslib.runtime import cpu_threads, use_threads


def first_line(e: BaseException) -> str:
    """The first non-blank line of an exception's message (Ultralytics puts what is wrong first and hints
    after it), without its decorations; the exception's type when the message is empty."""
    for line in str(e).splitlines():
        line = line.replace("❌", "").strip()
        if line:
            return line
    return type(e).__name__


def device_arg(device) -> str | None:
    """A device as Ultralytics takes it: None (or '') lets Ultralytics choose (the first GPU when present),
    anything else ('cpu', 0, '0,1', 'cuda:0', …) is passed on as a string."""
    return None if device is None or str(device).strip() in ("", "None") else str(device)


def split_images(info: dict, split: str) -> list[Path]:
    """The image files of a split of a checked dataset, listed by Ultralytics' own rules (the same call its
    datasets make): folders, lists of folders, .txt lists whose `./` lines resolve against the list's
    folder, absolute lines. Sorted, as Ultralytics sorts them."""
    from types import SimpleNamespace

    from ultralytics.data.base import BaseDataset

    try:  # an instance method that reads only these two attributes
        files = BaseDataset.get_img_files(SimpleNamespace(prefix="", fraction=1.0), info[split])
    except FileNotFoundError as e:
        cause = first_line(e.__cause__) if e.__cause__ else first_line(e)
        raise LipsError(f"dataset {info.get('yaml_file', '')}: split '{split}' ({info[split]}): {cause}") from None
    return [Path(f) for f in files]


def check_data(data: str | os.PathLike, splits=("val",)) -> dict:
    """Resolve a dataset yaml and make sure each named split has images with labels."""
    from ultralytics.data.utils import check_det_dataset, img2label_paths

    path = resolve_data(data)
    try:
        info = check_det_dataset(str(path), autodownload=False)
    except Exception as e:
        raise LipsError(f"dataset {path}: {first_line(e)}; check its train/val paths") from None
    for split in splits:
        if not info.get(split):
            raise LipsError(f"dataset {path} has no '{split}' split; add '{split}: images/...' to the yaml")
        info["yaml_file"] = str(path)
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


def frame_tensor(image, imgsz: int) -> torch.Tensor:
    """A real image letterboxed as Ultralytics does, as a 1×3×S×S float tensor."""
    import cv2
    from ultralytics.data.augment import LetterBox

    img = cv2.imread(str(image))
    if img is None:
        raise LipsError(f"cannot read image {image}")
    img = LetterBox((imgsz, imgsz), auto=False)(image=img)
    return torch.from_numpy(np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))).float()[None] / 255


def calibration_images(data, split: str = "train", n: int = 64, imgsz: int = 640) -> torch.Tensor:
    """The first `n` images of a dataset split, letterboxed as Ultralytics does: calibration data for recovery.

    Args:
        data: a dataset yaml (a path, or a name under `$LIPS_ASSETS/datasets/`, e.g. `coco128.yaml`).
        split: the split to take them from; `train` keeps the images you evaluate on out of it.
        n: how many images (the first n of Ultralytics' sorted listing).
        imgsz: square size, a multiple of 32.

    Returns:
        A float tensor n × 3 × imgsz × imgsz with values in [0, 1] (RGB).

    Raises:
        LipsError: a missing dataset or split, n < 1, or an image size that is not a multiple of 32.

    Examples:
        >>> images = calibration_images("coco128.yaml", "train", 16, 320)  # doctest: +SKIP
        >>> images.shape                                                   # doctest: +SKIP
        torch.Size([16, 3, 320, 320])
    """
    if not isinstance(n, int) or n < 1:
        raise LipsError(f"calibration needs at least one image, got {n!r}")
    if not isinstance(imgsz, int) or imgsz < 32 or imgsz % 32:
        raise LipsError(f"calibration image size {imgsz!r} must be a multiple of 32 (the models' largest stride)")
    files = split_images(check_data(data, splits=(split,)), split)[:n]
    return torch.cat([frame_tensor(f, imgsz) for f in files])


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
        model: a checkpoint, a model yaml or a module (see `load_model`).
        data: a dataset yaml (a path, or a name under `$LIPS_ASSETS/datasets/`).
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
    if out:
        check_writable(out)
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


def bootstrap_maps(
    matches: dict[str, list[dict]], resamples: int = 1000, seed: int = 0, progress: bool = False
) -> dict[str, np.ndarray]:
    """Each model's mAP50-95 (`image_matches` per model, the same images) over the same `resamples`
    resamples of the images with replacement: paired, so any two rows give a ratio's distribution."""
    from tqdm.auto import tqdm

    sizes = {len(m) for m in matches.values()}
    if len(sizes) != 1 or not sizes.pop():
        counts = ", ".join(f"{k}: {len(m)}" for k, m in matches.items())
        raise LipsError(f"a paired bootstrap needs the same images for every model (got {counts})")
    n = len(next(iter(matches.values())))
    rng = np.random.default_rng(seed)
    out = {k: np.empty(resamples) for k in matches}
    for r in tqdm(range(resamples), desc="bootstrap", disable=not progress):
        idx = rng.integers(0, n, n)
        for k, m in matches.items():
            out[k][r] = map50_95([m[i] for i in idx])
    return out


def pool_seeds(runs: list[np.ndarray], seed: int = 0) -> np.ndarray:
    """One method fine-tuned with several training seeds, as one bootstrap distribution of its mean mAP.
    `runs`: per seed, `bootstrap_maps`' array for that run (all over the same image resamples). Each resample
    also draws the seeds with replacement, so intervals built from the result hold the spread between
    training runs as well as between images; a single seed is returned as it is."""
    stack = np.stack(runs)  # seeds × resamples
    if len(stack) == 1:
        return stack[0]
    pick = np.random.default_rng(seed).integers(0, len(stack), stack.shape)
    return np.take_along_axis(stack, pick, 0).mean(0)


def ratio_interval(a: np.ndarray, b: np.ndarray) -> dict:
    """How sure is "a beats b", from paired bootstrap mAPs: the ratio a/b's 2.5/50/97.5 percentiles and
    the share of resamples where a > b."""
    ratios = a / np.maximum(b, 1e-9)
    lo, mid, hi = np.percentile(ratios, [2.5, 50, 97.5])
    return {
        "ratio_ci95": [float(lo), float(hi)],
        "ratio_median": float(mid),
        "p_a_beats_b": float(np.mean(a > b)),
        "resamples": len(a),
    }


def paired_bootstrap(a: list[dict], b: list[dict], resamples: int = 1000, seed: int = 0) -> dict:
    """`ratio_interval` of models a and b (`image_matches` on the same images)."""
    maps = bootstrap_maps({"a": a, "b": b}, resamples, seed)
    return {**ratio_interval(maps["a"], maps["b"]), "images": len(a)}


def check_writable(path: str | os.PathLike) -> Path:
    """Make sure a file can later be written at `path` before any long work, creating nothing: a probe
    file is made and removed in the nearest folder that exists. A path that cannot be is one LipsError."""
    path = Path(path).absolute()
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    try:
        if not folder.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lipslib-probe-"):
            pass
    except OSError as e:
        raise LipsError(f"cannot write {path} ({e.strerror or type(e).__name__}); choose another output path") from None
    return path


def strict_json(obj):
    """`obj` with every float that JSON cannot hold (NaN, ±inf; Python's or NumPy's) as None, NumPy scalars as
    Python numbers and tuples as lists: what `json.dumps(..., allow_nan=False)` accepts."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write strict JSON atomically: missing values (NaN, ±inf) as null, which every JSON reader accepts (Python's
    own `json` would write NaN, which jq and browsers refuse); sorted keys, so equal content gives equal bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(strict_json(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path
