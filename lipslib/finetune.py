"""Fine-tuning that keeps the pruned architecture.

`YOLO("pruned.pt").train()` rebuilds the unpruned net from the checkpoint's yaml and copies only the
matching weights (measured: 1.80 M → 2.62 M params, mAP 0.00). `PrunedTrainer` is Ultralytics'
DetectionTrainer with one change: its model *is* the pruned module from the checkpoint. Everything else
(data, augmentation, EMA, AMP, checkpoints, results.csv, args.yaml) is Ultralytics' own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lipslib.assets import resolve_weights
from lipslib.engine import conv_shapes, has_batchnorm, load_model
from lipslib.errors import LipsError
from lipslib.evaluate import _first_line, check_data
from lipslib.runtime import cpu_threads, use_threads

# The seed's table (paper profile). The authors' own args.yaml for all 25 iterations differ:
# lr0 0.005, weight_decay 0.0004, cos_lr, warmup_bias_lr 0.05 (see shared/assets/lips_paper/iter_XX).
PAPER_RECIPE = dict(
    optimizer="SGD", lr0=0.01, lrf=0.01, momentum=0.937, weight_decay=5e-4,
    warmup_epochs=3.0, warmup_bias_lr=0.1, batch=64, imgsz=640, epochs=20,
)  # fmt: skip
# A BN-free model (conv+BN fused before pruning, as the authors did) has no normalisation to absorb
# Ultralytics' warm-up, which starts bias lr at 0.1: measured here it took a pruned iter-01 from 0.069
# to 0.006 mAP in 4 epochs on 128 images. A small lr without (bias) warm-up recovers instead (→ 0.110).
BN_FREE_RECIPE = dict(lr0=0.002, warmup_epochs=0.0, warmup_bias_lr=0.0)
RECIPES = ("auto", "paper", "bn-free")


def _trainer_class():
    from ultralytics.models.yolo.detect import DetectionTrainer

    class PrunedTrainer(DetectionTrainer):
        """DetectionTrainer whose model is the pruned module stored in `args.model`, never a rebuild."""

        def get_model(self, cfg=None, weights=None, verbose=True):
            if weights is None:  # setup_model passes the checkpoint's module as `weights`
                raise LipsError(f"{self.args.model}: fine-tuning needs a pruned .pt checkpoint")
            model = weights.float()
            for p in model.parameters():
                p.requires_grad_(True)
            return self.set_model_names_for_load(model)

    return PrunedTrainer


def recipe_for(model, recipe: str = "auto") -> dict:
    """The Ultralytics train arguments of a recipe; `auto` picks bn-free for models without BatchNorm."""
    if recipe not in RECIPES:
        raise LipsError(f"unknown recipe '{recipe}'; choose one of {', '.join(RECIPES)}")
    bn_free = recipe == "bn-free" or (recipe == "auto" and not has_batchnorm(model))
    return {**PAPER_RECIPE, **(BN_FREE_RECIPE if bn_free else {})}


def check_pruned(model, weights) -> None:
    """Refuse an unpruned checkpoint: fine-tuning one here is just `yolo train`, and usually a mistake."""
    from ultralytics.nn.tasks import DetectionModel

    yaml = getattr(model, "yaml", None)
    if not isinstance(yaml, dict):
        return
    reference = DetectionModel(dict(yaml), nc=model.model[-1].nc, verbose=False)
    if conv_shapes(reference) == conv_shapes(model):
        raise LipsError(
            f"{weights} is not pruned (its conv shapes equal those of {yaml.get('yaml_file', 'its yaml')}); "
            "prune it first with `lips prune`, or use Ultralytics' `yolo train` for unpruned models"
        )


def finetune(
    weights: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    recipe: str = "auto",
    threads: int | None = None,
    **train_args,
) -> dict:
    """Fine-tune a pruned checkpoint with Ultralytics. `out` is the run folder: it receives args.yaml,
    results.csv and weights/{last,best,last_pruned_full}.pt, the last being the final model."""
    path = resolve_weights(weights)
    model = load_model(path)
    check_pruned(model, path)
    epochs = train_args.get("epochs", PAPER_RECIPE["epochs"])
    if not isinstance(epochs, int) or epochs <= 0:
        raise LipsError(f"epochs must be a positive integer, got {epochs!r}")
    info = check_data(data, splits=("train", "val"))
    out = Path(out).resolve()
    args = {
        **recipe_for(model, recipe),
        "plots": False,  # label plots need a font download, which fails offline
        **train_args,
        "model": str(path),
        "data": info["yaml_file"],
        "save_dir": str(out),
        "exist_ok": True,
        "pretrained": True,
        "resume": False,
    }
    from ultralytics.cfg import get_cfg

    try:
        get_cfg(overrides=args)  # Ultralytics rejects unknown keys with a suggestion
    except (SyntaxError, TypeError, ValueError) as e:
        raise LipsError(f"fine-tune arguments: {' '.join(str(e).split())}") from None
    trainer = _trainer_class()(overrides=args)
    use_threads(trainer, threads, "on_pretrain_routine_end")
    try:
        with cpu_threads(threads):
            trainer.train()
    except LipsError:
        raise
    except (FileNotFoundError, RuntimeError) as e:
        raise LipsError(f"fine-tuning {path} on {info['yaml_file']} failed: {_first_line(e)}") from None
    final = out / "weights" / "last_pruned_full.pt"
    shutil.copyfile(out / "weights" / "last.pt", final)
    tuned = load_model(final)
    if conv_shapes(tuned) != conv_shapes(model):  # the whole point of this module; never pass silently
        raise LipsError(f"fine-tuning changed the architecture of {path}; this is a lipslib bug")
    metrics = {k: float(v) for k, v in (trainer.metrics or {}).items()}
    return {
        "weights": str(final),
        "run_dir": str(out),
        "epochs": epochs,
        "map50_95": metrics.get("metrics/mAP50-95(B)"),
        "map50": metrics.get("metrics/mAP50(B)"),
        "params": sum(p.numel() for p in tuned.parameters()),
    }
