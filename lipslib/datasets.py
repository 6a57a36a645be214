"""Datasets: a yaml checked and its splits listed by Ultralytics' rules; images letterboxed for calibration."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from lipslib.assets.resolve import resolve_data
from lipslib.errors import LipsError, first_line


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
