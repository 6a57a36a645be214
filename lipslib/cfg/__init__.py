"""The configuration: lipslib's defaults (`default.yaml`, beside this file) under one profile of a params file.

`DEFAULTS` is every knob with its default, read once from default.yaml; a project's params.yaml holds only
profiles that override it (`profiles: {demo: {...}}`) and the profile it uses (`profile: demo`). `load_params`
deep-merges the three levels — defaults, profile, `--set` overrides — and refuses unknown keys with a
suggestion. `finetune:` is the one open section: any Ultralytics train argument may be added there.
"""

from __future__ import annotations

import copy
import difflib
import functools
from pathlib import Path

import yaml

from lipslib.errors import LipsError

DEFAULT_FILE = Path(__file__).with_name("default.yaml")

# The values the choice keys of the config take (and `lips sweep --executor`), defined here, where nothing heavy
# is imported, so that the CLI offers them as argparse choices without importing torch. The modules that act on
# them import them from here.
# optimize.criterion: engine.CRITERIA's three, and lsq / lsq_greedy (recovery.lsq: chosen for the refit)
CRITERION_NAMES = ("l1", "l2", "random", "lsq", "lsq_greedy")
CALIBRATED_CRITERIA = ("lsq", "lsq_greedy")  # the criteria that need calibration images
SENSITIVITY_MODES = ("fast", "exact")  # sensitivity.mode
RECIPES = ("auto", "paper", "bn-free")  # finetune.recipe: auto, or a table of `recipes:`
DISTILL_MODES = ("none", "outputs", "features")  # recover.distill; features: Ultralytics' own distill_model / dis
RUNTIMES = ("torch", "onnxruntime", "openvino", "cuda")  # latency.runtime; cuda: PyTorch on the first GPU, synchronised
PRECISIONS = (
    "default",
    "f32",
    "int8",
)  # latency.precision: the runtime's own choice (OpenVINO: bf16 on AMX), fp32, INT8
DEPLOY_FORMATS = ("openvino", "onnx")  # lips export --format
EXECUTORS = ("dvc", "local", "slurm")  # lips sweep --executor
OPEN_SECTIONS = ("finetune",)  # sections that also take any Ultralytics train argument


def _read(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise LipsError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise LipsError(f"{path}: not valid YAML ({' '.join(str(e).split())[:120]})") from None
    return doc if isinstance(doc, dict) else {}


@functools.cache
def _defaults() -> dict:
    return _read(DEFAULT_FILE)


def defaults() -> dict:
    """A copy of every default (default.yaml), nested as in the file."""
    return copy.deepcopy(_defaults())


def default(key: str):
    """One default by its dotted key, e.g. `default("sensitivity.batch")` → 32.

    Raises:
        LipsError: no such key (with a suggestion).
    """
    node = _defaults()
    for i, part in enumerate(key.split(".")):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(key.split(".")[:i])
            known = list(node) if isinstance(node, dict) else []
            close = difflib.get_close_matches(part, known, n=1)
            hint = f" (did you mean '{'.'.join(filter(None, (where, close[0])))}'?)" if close else ""
            raise LipsError(f"unknown config key '{key}'{hint}")
        node = node[part]
    return copy.deepcopy(node)


@functools.cache
def _ultralytics_train_keys() -> frozenset:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return frozenset(DEFAULT_CFG_DICT)


def _merge(base: dict, over: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if key not in base:
            if where.rstrip(".") in OPEN_SECTIONS and key in _ultralytics_train_keys():
                out[key] = value  # an Ultralytics train argument: Ultralytics checks its value
                continue
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


def _dotted() -> dict[str, str]:
    """Flat parameter name → dotted key, from the structure of the defaults (both walks visit keys alike)."""
    return dict(zip(flatten(_defaults()), flatten(_defaults(), sep=".")))


def load_params(
    path: str | Path | None = "params.yaml", profile: str | None = None, overrides: dict | None = None
) -> dict:
    """The effective parameters: lipslib's defaults, a profile of the params file over them, `overrides` over that.

    Args:
        path: the params file (`profile:` and `profiles:`); None: the defaults alone (profile `paper`).
        profile: `paper`, `rehearsal`, `demo`, `smoke`, … (default: the file's `profile:` key, else `paper`).
        overrides: more values, as dotted keys `{'schedule.target_gflops': 3.8}` or flat notebook names
            `{'schedule_target_gflops': 3.8}`.

    Returns:
        The nested parameters (every key of the defaults), with `profile` set to the profile's name.

    Raises:
        LipsError: a missing or malformed file, an unknown profile, or an unknown key (with a suggestion).

    Examples:
        >>> params = load_params("params.yaml", "demo", {"schedule.target_gflops": 3.8})  # doctest: +SKIP
        >>> params = load_params(None, overrides={"schedule.target_gflops": 3.8})  # the defaults alone
        >>> params["schedule"]["target_gflops"], params["imgsz"], params["profile"]
        (3.8, 640, 'paper')
    """
    if path is None:
        doc = {"profiles": {"paper": {}}}
    else:
        path = Path(path)
        if not path.is_file():
            raise LipsError(f"params file '{path}' not found; run from the repo root or pass --params")
        doc = _read(path)
        if "defaults" in doc:
            raise LipsError(
                f"{path}: a 'defaults:' section is no longer read; the defaults are lipslib's ({DEFAULT_FILE.name} "
                "in lipslib/cfg/): put your changes in a profile under 'profiles:'"
            )
        if not isinstance(doc.get("profiles"), dict):
            raise LipsError(f"{path}: expected a 'profiles:' section (profile name → overrides of the defaults)")
    name = profile or doc.get("profile") or "paper"
    profiles = doc["profiles"]
    if name not in profiles:
        raise LipsError(f"unknown profile '{name}' in {path}; choose one of {', '.join(profiles)}")
    params = _merge(_defaults(), profiles[name] or {}, "")
    flat_names = _dotted()
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
