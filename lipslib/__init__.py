"""lipslib — Layer-Importance Pruning Schedules (LIPS) for Ultralytics YOLO11 detectors.

The public API is the names in `__all__`, importable from `lipslib` directly:

    import lipslib as L
    base = L.load_model("lips_iter01_best.pt")
    res = L.prune(base, L.at_gflops("uniform", base, 3.9)["ratios"])

Library layers (dependencies point downward only):
  assets → layers → engine → evaluate / finetune → (sensitivity, schedule, optimize, reporting) → cli,
  with the helpers below evaluate: files (writable paths, strict JSON), datasets (splits, calibration images),
  stats (bootstrap intervals on per-image matches); errors sits under all of them.

`import lipslib` is cheap: the names are resolved on first use (PEP 562), so the CLI and the pure parts
(`schedule`, `spec`, `config`) do not pay for importing torch and Ultralytics. `lipslib.evaluate`,
`lipslib.finetune`, `lipslib.optimize`, `lipslib.recover` and `lipslib.reconstruct` are the functions
of those names; their modules are imported as modules (`from lipslib.evaluate import image_matches`).
"""

from __future__ import annotations

import importlib
import sys
import types

from lipslib.errors import LipsError

__version__ = "0.1.0"

# public name → the module that defines it
_EXPORTS: dict[str, str] = {
    # pruning engine
    "load_model": "lipslib.engine",
    "prune": "lipslib.engine",
    "PruneResult": "lipslib.engine",
    "cost": "lipslib.engine",
    "save_checkpoint": "lipslib.engine",
    # one-shot baselines at a GFLOPs budget
    "at_gflops": "lipslib.baselines",
    # recovery right after the cut
    "recover": "lipslib.recover",
    "Recovery": "lipslib.recover",
    "reconstruct": "lipslib.reconstruct",
    # fine-tuning and evaluation
    "finetune": "lipslib.finetune",
    "evaluate": "lipslib.evaluate",
    # calibration data for recovery
    "calibration_images": "lipslib.datasets",
    # Stage I, the schedule rule and the loop
    "run_sensitivity": "lipslib.sensitivity",
    "initial_schedule": "lipslib.schedule",
    "update": "lipslib.schedule",
    "Targets": "lipslib.schedule",
    "RuleParams": "lipslib.schedule",
    "optimize": "lipslib.optimize",
    "loop_settings": "lipslib.settings",
    "LoopSettings": "lipslib.settings",
    # files, settings, reporting
    "read_spec": "lipslib.spec",
    "write_spec": "lipslib.spec",
    "load_params": "lipslib.config",
    "compare_video": "lipslib.video",
}

__all__ = [
    "LipsError",
    "LoopSettings",
    "PruneResult",
    "Recovery",
    "RuleParams",
    "Targets",
    "at_gflops",
    "calibration_images",
    "compare_video",
    "cost",
    "evaluate",
    "finetune",
    "initial_schedule",
    "load_model",
    "load_params",
    "loop_settings",
    "optimize",
    "prune",
    "read_spec",
    "reconstruct",
    "recover",
    "run_sensitivity",
    "save_checkpoint",
    "update",
    "write_spec",
]  # a literal list, as static tools read it: the names of _EXPORTS, plus LipsError


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lipslib' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """`lipslib` itself. Five public functions share their module's name (`evaluate`, `finetune`, `optimize`,
    `recover`, `reconstruct`); importing such a module (`from lipslib.evaluate import …`, or any module that
    does) would bind the module over the function. Here the attribute stays the function; the modules are
    still imported as usual (`import lipslib.evaluate`, `from lipslib.evaluate import image_matches`)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
