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
    """Parse a spec. The first line of the authors' format is a free-text header and is skipped;
    every other non-blank line must be `layer: ratio`."""
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
    """A spec from a dict, a number (uniform over `default_layers`), or a file (.yaml/.yml/.json/.txt)."""
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
