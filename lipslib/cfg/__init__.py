"""params.yaml: `defaults` (every knob) deep-merged with one profile's overrides; unknown keys refused."""

from __future__ import annotations

import copy
import difflib
from pathlib import Path

import yaml

from lipslib.errors import LipsError

# The values the choice keys of params.yaml take (and `lips sweep --executor`), defined here, where nothing heavy
# is imported, so that the CLI offers them as argparse choices without importing torch. The modules that act on
# them import them from here (sensitivity.MODES and distill.MODES are two of them under their former names).
CRITERION_NAMES = ("l1", "l2", "random", "lsq")  # optimize.criterion: engine.CRITERIA's three, and lsq (reconstruct)
SENSITIVITY_MODES = ("fast", "exact")  # sensitivity.mode
RECIPES = ("auto", "paper", "bn-free")  # finetune.recipe
DISTILL_MODES = ("none", "outputs", "features")  # recover.distill; features: Ultralytics' own distill_model / dis
RUNTIMES = ("torch", "onnxruntime", "cuda")  # latency.runtime; cuda: PyTorch on the first GPU, synchronised
EXECUTORS = ("dvc", "local", "slurm")  # lips sweep --executor


def _merge(base: dict, over: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if key not in base:
            close = difflib.get_close_matches(str(key), list(base), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise LipsError(f"unknown key '{where}{key}'{hint}; valid keys here: {', '.join(base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise LipsError(f"'{where}{key}' must be a mapping, got {value!r}")
            out[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def flatten(params: dict, prefix: str = "", sep: str = "_") -> dict:
    """{'schedule': {'target_gflops': 4.5}} → {'schedule_target_gflops': 4.5}: the notebooks' parameter names."""
    out = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}{sep}", sep))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _dotted(doc: dict) -> dict[str, str]:
    """Flat parameter name → dotted key, from the structure of `defaults` (both walks visit keys alike)."""
    return dict(zip(flatten(doc["defaults"]), flatten(doc["defaults"], sep=".")))


def load_params(path: str | Path = "params.yaml", profile: str | None = None, overrides: dict | None = None) -> dict:
    """The effective parameters of a profile of params.yaml: `defaults` deep-merged with the profile's overrides.

    Args:
        path: the params file.
        profile: `paper`, `rehearsal`, `demo`, `smoke`, … (default: the file's `profile:` key, else `paper`).
        overrides: more values, as dotted keys `{'schedule.target_gflops': 3.8}` or flat notebook names
            `{'schedule_target_gflops': 3.8}`.

    Returns:
        The nested parameters (every key of `defaults`), with `profile` set to the profile's name.

    Raises:
        LipsError: a missing or malformed file, an unknown profile, or an unknown key (with a suggestion).

    Examples:
        >>> params = load_params("params.yaml", "demo", {"schedule.target_gflops": 3.8})  # doctest: +SKIP
        >>> params["schedule"]["target_gflops"]                                          # doctest: +SKIP
        3.8
    """
    path = Path(path)
    if not path.is_file():
        raise LipsError(f"params file '{path}' not found; run from the repo root or pass --params")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise LipsError(f"{path}: not valid YAML ({' '.join(str(e).split())[:120]})") from None
    if "defaults" not in doc or not isinstance(doc.get("profiles", {}), dict):
        raise LipsError(f"{path}: expected 'defaults:' and 'profiles:' sections")
    name = profile or doc.get("profile") or "paper"
    profiles = doc.get("profiles") or {}
    if name not in profiles:
        raise LipsError(f"unknown profile '{name}' in {path}; choose one of {', '.join(profiles)}")
    params = _merge(doc["defaults"], profiles[name], "")
    flat_names = _dotted(doc)
    nested: dict = {}
    for key, value in (overrides or {}).items():
        key = flat_names.get(key, key)
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    params = _merge(params, nested, "")
    params["profile"] = name
    return params
