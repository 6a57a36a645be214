"""lipslib — Layer-Importance Pruning Schedules (LIPS) for Ultralytics YOLO11 detectors.

The public API is the names in `__all__`, importable from `lipslib` directly:

    import lipslib as L
    base = L.load_model("lips_iter01_best.pt")
    res = L.prune(base, L.at_gflops("uniform", base, 3.9)["ratios"])

The folders follow the method; dependencies point downward only:

    cfg/        the default config (default.yaml), params.yaml profiles over it, typed settings
    pruning/    the 29 target layers, the directed engine, ratio specs, costs (GFLOPs, measured ms), baselines
    recovery/   what a pruned copy gets after the cut: bias repair, least squares, distillation, warm start
    train/      Ultralytics' trainer (keeping the pruned architecture) and validator (one metrics record)
    sensitivity Stage I, on pruning + recovery + train
    schedule    the initial schedule and the gate rule: pure functions, no torch
    pipeline/   the LIPS loop and its resume, sweeps, the notebook runner, tracking, replay, benchmark, video, plots,
                the allocation search
    deploy      exports for OpenVINO and ONNX (INT8 too), run as the runtime runs them
    cli         `lips`, an argparse front over the same functions

with, under all of them, `errors` (the one exception type), `assets` (where files come from), `files`
(writable paths, strict JSON), `datasets` (splits, calibration images) and `runtime` (devices and threads).

`import lipslib` is cheap: the names are resolved on first use (PEP 562), so the CLI and the pure parts
(`schedule`, `pruning.spec`, `cfg`) do not pay for importing torch and Ultralytics. No public function shares
its module's name, so importing a module never hides a function of the package.
"""

from __future__ import annotations

import importlib

from lipslib.errors import LipsError

__version__ = "0.1.0"

# public name → the module that defines it
_EXPORTS: dict[str, str] = {
    # pruning engine
    "load_model": "lipslib.pruning.engine",
    "prune": "lipslib.pruning.engine",
    "PruneResult": "lipslib.pruning.engine",
    "cost": "lipslib.pruning.engine",
    "save_checkpoint": "lipslib.pruning.engine",
    # one-shot baselines at a GFLOPs budget
    "at_gflops": "lipslib.pruning.baselines",
    # recovery right after the cut
    "recover": "lipslib.recovery",
    "Recovery": "lipslib.recovery",
    "reconstruct": "lipslib.recovery.lsq",
    # fine-tuning and evaluation
    "finetune": "lipslib.train.trainer",
    "evaluate": "lipslib.train.validator",
    # calibration data for recovery
    "calibration_images": "lipslib.datasets",
    # Stage I, the schedule rule and the loop
    "run_sensitivity": "lipslib.sensitivity",
    "initial_schedule": "lipslib.schedule",
    "update": "lipslib.schedule",
    "Targets": "lipslib.schedule",
    "RuleParams": "lipslib.schedule",
    "optimize": "lipslib.pipeline.loop",
    "loop_settings": "lipslib.cfg.settings",
    "LoopSettings": "lipslib.cfg.settings",
    # files, settings, reporting
    "read_spec": "lipslib.pruning.spec",
    "write_spec": "lipslib.pruning.spec",
    "load_params": "lipslib.cfg",
    "compare_video": "lipslib.pipeline.video",
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
