"""Ratio specs `{layer: ratio}`: read from YAML/JSON, the authors' prune_spec.txt, or one number (uniform);
written back in the authors' format (a header line, then `layer: ratio` lines)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from lipslib.errors import LipsError

HEADER = "Prune spec applied (layer_name: ratio):"
_LINE = re.compile(r"^\s*([\w.]+)\s*:\s*([-+0-9.eE]+)\s*$")


def parse_spec(text: str, source: str = "spec") -> dict[str, float]:
    """Parse a spec in the authors' `prune_spec.txt` format.

    The first line is a free-text header and is skipped; every other non-blank line must be
    `layer: ratio` (lines starting with `#` are comments).

    Args:
        text: the file's text.
        source: what to call it in error messages.

    Returns:
        `{layer: ratio}`.

    Raises:
        LipsError: a malformed line, a ratio outside [0, 1), or no `layer: ratio` line at all.

    Examples:
        >>> parse_spec("Prune spec applied (layer_name: ratio):\\nmodel.0.conv: 0.1\\nmodel.1.conv: 0.25")
        {'model.0.conv': 0.1, 'model.1.conv': 0.25}
    """
    out: dict[str, float] = {}
    seen_line = False
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _LINE.match(line)
        if not m and not seen_line:
            seen_line = True
            continue  # the header line
        seen_line = True
        if not m:
            raise LipsError(f"{source}:{no}: expected 'layer: ratio', got {line.strip()!r}")
        out[m.group(1)] = _ratio(m.group(2), f"{source}:{no}")
    if not out:
        raise LipsError(f"{source}: no 'layer: ratio' lines found")
    return out


def read_spec(spec: str | Path | dict, default_layers=None) -> dict[str, float]:
    """A ratio spec `{layer: ratio}` from a dict, a number, or a file.

    Args:
        spec: a dict; a number (or its text) for a uniform ratio over `default_layers`; or a file:
            `.yaml`/`.yml`/`.json` holding a mapping `layer: ratio`, or any other text file in the authors'
            `prune_spec.txt` format (`parse_spec`).
        default_layers: the layers a uniform ratio applies to (e.g. `lipslib.pruning.layers.default_targets(model)`).

    Returns:
        `{layer: ratio}`, every ratio a float in [0, 1). Layer names are not checked against a model here
        (`prune` does that).

    Raises:
        LipsError: a missing or malformed file, a ratio that is not a number or is outside [0, 1), or a
            uniform ratio without `default_layers`.

    Examples:
        >>> read_spec({"model.0.conv": 0.1, "model.1.conv": "0.2"})
        {'model.0.conv': 0.1, 'model.1.conv': 0.2}
        >>> read_spec(0.3, default_layers=["model.0.conv", "model.1.conv"])
        {'model.0.conv': 0.3, 'model.1.conv': 0.3}
        >>> read_spec({"model.0.conv": 1.2})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lipslib.errors.LipsError: ratio of model.0.conv: ratio 1.2 is outside [0, 1); a ratio is the share ...

        A file written by `write_spec` (the authors' format) reads back the same:

        >>> import tempfile, pathlib
        >>> path = write_spec(pathlib.Path(tempfile.mkdtemp()) / "prune_spec.txt", {"model.0.conv": 0.125})
        >>> print(path.read_text(), end="")
        Prune spec applied (layer_name: ratio):
        model.0.conv: 0.125
        >>> read_spec(path)
        {'model.0.conv': 0.125}
    """
    if isinstance(spec, dict):
        return {str(k): _ratio(v, f"ratio of {k}") for k, v in spec.items()}
    try:
        r = float(spec)
    except (TypeError, ValueError):
        r = None
    if r is not None and not Path(str(spec)).exists():
        if default_layers is None:
            raise LipsError(f"a uniform ratio {spec} needs the model's target layers")
        return {name: _ratio(r, "uniform ratio") for name in default_layers}
    path = Path(spec)
    if not path.is_file():
        raise LipsError(f"ratio spec '{spec}' not found; give a .yaml/.json/.txt file or a number for a uniform ratio")
    text = path.read_text(errors="replace")
    if path.suffix.lower() in {".yaml", ".yml", ".json"}:
        import yaml

        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as e:
            raise LipsError(f"{path}: not valid {path.suffix[1:].upper()} ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict) or not data:
            raise LipsError(f"{path}: expected a mapping 'layer: ratio', got {type(data).__name__}")
        return {str(k): _ratio(v, f"{path}: ratio of {k}") for k, v in data.items()}
    return parse_spec(text, str(path))


def write_spec(path: str | Path, ratios: dict[str, float]) -> Path:
    """Write `{layer: ratio}` in the authors' `prune_spec.txt` format: a header line, then `layer: ratio` lines
    sorted by layer, ratios to 6 significant digits.

    Args:
        path: the file to write (folders are created).
        ratios: `{layer: ratio}`.

    Returns:
        The path written.

    Raises:
        OSError: the file cannot be written.

    Examples:
        >>> write_spec("runs/x/prune_spec.txt", {"model.0.conv": 0.25, "model.1.conv": 0.3})  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(f"{k}: {v:.6g}" for k, v in sorted(ratios.items()))
    path.write_text(f"{HEADER}\n{body}\n")
    return path


def _ratio(value, where: str) -> float:
    try:
        r = float(value)
    except (TypeError, ValueError):
        raise LipsError(f"{where}: ratio {value!r} is not a number") from None
    if not math.isfinite(r) or not 0.0 <= r < 1.0:
        raise LipsError(f"{where}: ratio {value} is outside [0, 1); a ratio is the share of channels removed")
    return r
