"""File helpers: check an output path is writable before long work, write strict JSON atomically."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from lipslib.errors import LipsError


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
