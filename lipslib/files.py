"""File helpers: check an output path is writable before long work, write strict JSON atomically, and keep the
paths in a record portable (relative to the checkout) so that it travels to other machines."""

from __future__ import annotations

import json
import math
import os
import re
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


def _under(root: Path) -> re.Pattern:
    """`root` where a path starts in a text (a whole string or a token of a command line), followed by `/` (group 1)
    or by the end of that path: not /work/main inside /work/main2 or /x/work/main."""
    return re.compile(rf"(?<![\w./-]){re.escape(str(root))}(/|(?![\w.-]))")


def portable(obj, base: str | os.PathLike | None = None):
    """`obj` with every absolute path in it (a string, or inside a string such as a command line, at any depth)
    made portable: a path inside `base` (default: the working directory, the checkout's root where lipslib's
    commands and notebooks run) relative to it, a path inside the LIPS_ASSETS folder as `$LIPS_ASSETS/...`.

    Args:
        obj: a JSON-able structure (dicts, lists, strings, numbers).
        base: the folder paths are made relative to.

    Returns:
        The same structure with its paths rewritten (a new object; `obj` is not changed).

    Examples:
        >>> portable({"weights": str(Path.cwd() / "runs" / "best.pt")})
        {'weights': 'runs/best.pt'}
    """
    roots = [(Path(base or Path.cwd()).resolve(), "")]
    assets = os.environ.get("LIPS_ASSETS")
    if assets and Path(assets).expanduser().is_dir():
        roots.append((Path(assets).expanduser().resolve(), "$LIPS_ASSETS/"))
    roots.sort(key=lambda r: -len(r[0].parts))  # the deeper folder first: a checkout inside the assets, or the reverse

    def walk(value):
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v) for v in value]
        if isinstance(value, str):
            for root, prefix in roots:
                value = _under(root).sub(lambda m, p=prefix: p if m[1] == "/" else (p.rstrip("/") or "."), value)
        return value

    return walk(obj)


def write_json(path: str | os.PathLike, obj, *, portable_paths: bool = False) -> Path:
    """Write strict JSON atomically: missing values (NaN, ±inf) as null, which every JSON reader accepts (Python's
    own `json` would write NaN, which jq and browsers refuse); sorted keys, so equal content gives equal bytes.
    `portable_paths`: paths made portable first (`portable`), for records that are kept and shared (reports/)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    obj = portable(obj) if portable_paths else obj
    tmp.write_text(json.dumps(strict_json(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path
