"""Fine-tuning that keeps the pruned architecture.

`YOLO("pruned.pt").train()` rebuilds the unpruned net from the checkpoint's yaml and copies only the
matching weights: the pruned model is silently replaced by a full-width one. `PrunedTrainer` is Ultralytics'
DetectionTrainer with one change: its model *is* the pruned module from the checkpoint. Everything else
(data, augmentation, EMA, AMP, DDP, checkpoints, results.csv, args.yaml) is Ultralytics' own.

Multi-GPU (`device="0,1"`): Ultralytics writes the trainer's class, args, model and callbacks to a state
file (cloudpickle) and starts one worker per GPU that rebuilds the trainer from it. `PrunedTrainer` is a
module-level class, so the workers import it from lipslib; each worker loads the pruned checkpoint named
in `args.model` through `get_model`, as the single-process trainer does.

AMP (`amp`, Ultralytics' argument): Ultralytics checks fp16 on its own reference model, which it first
downloads (offline it skips the check and turns AMP on). `PrunedTrainer` checks the model it trains
instead: fp32 and fp16-autocast detections on a real image must agree as in Ultralytics' check. BN-free
models (the authors' checkpoints) get no special case (their activations stay far below fp16's range; the
docs' GPU runbook has the measurements); the check on the training device decides.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import torch
from ultralytics.models.yolo.detect import DetectionTrainer

from lipslib.assets.resolve import resolve_weights
from lipslib.cfg import DISTILL_MODES, RECIPES, default
from lipslib.datasets import check_data, frame_tensor
from lipslib.errors import LipsError, first_line
from lipslib.files import check_writable
from lipslib.pruning.engine import conv_shapes, has_batchnorm, load_model
from lipslib.runtime import keep_threads, use_threads
from lipslib.train.validator import device_arg, evaluate


def model_classes(model) -> int:
    return int(model.model[-1].nc)


ULTRALYTICS_DVC = "ultralytics.utils.callbacks.dvc"


class PrunedTrainer(DetectionTrainer):
    """DetectionTrainer whose model is the pruned module stored in `args.model`, never a rebuild.

    Without Ultralytics' DVCLive callback: with dvclive installed (the pipeline's logger) Ultralytics would
    open a DVCLive run at every fine-tune — in ./dvclive, rewriting dvc.yaml, and outside `dvc exp run` saving
    one DVC experiment per fine-tune. The LIPS loop is logged once instead (lipslib.pipeline.tracking); each fine-tune's
    epochs stay in its results.csv."""

    def __init__(self, *args, **kwargs):
        import ultralytics.utils.callbacks as integrations

        # The integrations are added, and their first event run, inside BaseTrainer.__init__: filter them there.
        add = integrations.add_integration_callbacks

        def add_without_dvc(trainer):
            add(trainer)
            for event, fns in trainer.callbacks.items():
                trainer.callbacks[event] = [f for f in fns if getattr(f, "__module__", None) != ULTRALYTICS_DVC]

        integrations.add_integration_callbacks = add_without_dvc
        try:
            super().__init__(*args, **kwargs)
        finally:
            integrations.add_integration_callbacks = add

    def get_model(self, cfg=None, weights=None, verbose=True):
        if weights is None:  # setup_model passes the checkpoint's module as `weights`
            raise LipsError(f"{self.args.model}: fine-tuning needs a pruned .pt checkpoint")
        if model_classes(weights) != int(self.data["nc"]):
            raise LipsError(class_mismatch(self.args.model, weights, self.data))
        model = weights.float()
        for p in model.parameters():
            p.requires_grad_(True)
        return self.set_model_names_for_load(model)

    def final_eval(self):
        """Ultralytics' end of training without its re-validation of best.pt: lipslib returns last.pt's
        weights and validates those itself, the same way with and without DDP (`finetune`)."""
        from ultralytics.utils import LOCAL_RANK, RANK
        from ultralytics.utils.torch_utils import strip_optimizer, torch_distributed_zero_first

        with torch_distributed_zero_first(LOCAL_RANK):
            if RANK in {-1, 0}:
                ckpt = strip_optimizer(self.last) if self.last.exists() else {}
                if self.best.exists():
                    strip_optimizer(self.best, updates={"train_results": ckpt.get("train_results")})

    def _setup_train(self):
        import ultralytics.engine.trainer as engine_trainer

        # Ultralytics' check_amp runs its own downloaded reference model; check the model being trained.
        original, engine_trainer.check_amp = engine_trainer.check_amp, amp_check
        try:
            super()._setup_train()
        finally:
            engine_trainer.check_amp = original


def amp_check(model, imgsz: int = 640) -> bool:
    """Ultralytics' AMP check run on `model` itself rather than on a downloaded reference model: its raw
    predictions on Ultralytics' bus image in fp32 and under fp16 autocast must agree (boxes within 1 % of
    the image, class scores within 0.05, all finite). Raw outputs, not detections after NMS, so a model
    that detects little is still compared everywhere. False on CPU/MPS, as Ultralytics."""
    from ultralytics.utils import ASSETS, LOGGER
    from ultralytics.utils.torch_utils import autocast

    device = next(model.parameters()).device
    if device.type in {"cpu", "mps"}:
        return False
    net = copy.deepcopy(model).eval()
    x = frame_tensor(ASSETS / "bus.jpg", imgsz).to(device)
    with torch.no_grad():
        a = net(x)[0].float()
        with autocast(enabled=True, device=device.type):
            b = net(x)[0].float()
    ok = (
        bool(torch.isfinite(b).all())
        and bool((a[:, :4] - b[:, :4]).abs().max() <= 0.01 * imgsz)
        and bool((a[:, 4:] - b[:, 4:]).abs().max() <= 0.05)
    )
    LOGGER.info(f"AMP: fp16 check on the pruned model {'passed' if ok else 'failed: training in fp32'}")
    return ok


def class_mismatch(name, model, data: dict) -> str:
    return (
        f"{name} predicts {model_classes(model)} classes but {data.get('yaml_file', 'the dataset')} has "
        f"{data['nc']}; lipslib fine-tunes a pruned detector on the classes it was trained for"
    )


def recipe_for(model, recipe: str = "auto", recipes: dict | None = None) -> dict:
    """The Ultralytics train arguments a fine-tune of `model` starts from: the recipe's table, with the default
    epochs, batch and image size.

    Args:
        model: the pruned model (`auto` looks for BatchNorm in it).
        recipe: paper | bn-free | auto (bn-free for a model without BatchNorm, else paper).
        recipes: the tables (the config's `recipes:`, a profile's when it overrides them); None: the defaults.

    Returns:
        Ultralytics train arguments.

    Raises:
        LipsError: an unknown recipe.
    """
    if recipe not in RECIPES:
        raise LipsError(f"unknown recipe '{recipe}'; choose one of {', '.join(RECIPES)}")
    if recipe == "auto":
        recipe = "paper" if has_batchnorm(model) else "bn-free"
    table = (recipes or default("recipes"))[recipe.replace("-", "_")]
    return {
        **table,
        "epochs": default("finetune.epochs"),
        "batch": default("finetune.batch"),
        "imgsz": default("imgsz"),
    }


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


def train_args(model, path, info: dict, out: Path, recipe: str, recipes: dict | None, train_args: dict) -> dict:
    """The Ultralytics arguments of a fine-tune: the recipe, then the caller's, then what lipslib fixes."""
    args = {
        **recipe_for(model, recipe, recipes),
        "plots": False,  # label plots need a font download, which fails offline
        **train_args,
        "model": str(path),
        "data": info["yaml_file"],
        "save_dir": str(out),
        "exist_ok": True,
        "pretrained": True,
        "resume": False,
    }
    args["device"] = device_arg(args.get("device"))
    from ultralytics.cfg import get_cfg

    try:
        get_cfg(overrides=args)  # Ultralytics rejects unknown keys with a suggestion, and bad values
    except (SyntaxError, TypeError, ValueError) as e:
        raise LipsError(f"fine-tune arguments: {' '.join(str(e).split())}") from None
    return args


def _train(trainer, path, info: dict, args: dict) -> None:
    """trainer.train(), with every way it fails as one LipsError line."""
    try:
        trainer.train()
    except LipsError:
        raise
    except subprocess.CalledProcessError as e:
        raise LipsError(
            f"multi-GPU fine-tuning of {path} failed: a DDP worker exited with code {e.returncode} "
            f"(its log is above); device={args['device']}"
        ) from None
    except (FileNotFoundError, RuntimeError, ValueError) as e:  # e.g. a last batch of one image
        raise LipsError(f"fine-tuning {path} on {info['yaml_file']} failed: {first_line(e)}") from None


def finetune(
    weights: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    recipe: str = "auto",
    recipes: dict | None = None,
    threads: int | None = None,
    distill: str = "none",
    teacher: str | os.PathLike | None = None,
    distill_weight: float = 1.0,
    **train_args_,
) -> dict:
    """Fine-tune a pruned checkpoint with Ultralytics, keeping its pruned architecture.

    Args:
        weights: the pruned `.pt` checkpoint (from `save_checkpoint` or `lips prune`); an unpruned one is
            refused (use `yolo train` for those).
        data: a dataset yaml with `train` and `val` splits, with the model's classes.
        out: the run folder: it receives args.yaml, results.csv and weights/{last,best,last_pruned_full}.pt,
            the last being the final model.
        recipe: `paper` (the paper's SGD table: lr0 0.01, 3 warm-up epochs), `bn-free` (lr0 0.002, no warm-up:
            for models without BatchNorm) or `auto` (bn-free for models without BatchNorm, else paper); the
            defaults add 20 epochs, batch 64 and 640 px (the config's `finetune:` and `imgsz`).
        recipes: the recipe tables (a profile's `recipes:`); None: the config's.
        threads: CPU threads for training and validation (default: all cores).
        distill: `none`; `outputs`: lipslib's output distillation from `teacher`; `features`: Ultralytics'
            own (distill_model=teacher, dis=distill_weight).
        teacher: the unpruned model the checkpoint was pruned from (needed by `distill`).
        distill_weight: weight of the distillation term.
        **train_args_: any Ultralytics train argument (`epochs`, `imgsz`, `batch`, `fraction`, `seed`, …),
            over the recipe; `device`: None lets Ultralytics choose, `0,1` runs DDP.

    Returns:
        `{'weights' (last_pruned_full.pt), 'run_dir', 'epochs', 'map50_95', 'map50', 'metrics' (evaluate's
        record of the returned weights on the val split), 'params', 'ddp', 'amp' (whether fp16 was used)}`.

    Raises:
        LipsError: bad arguments (refused before training, with Ultralytics' suggestion for unknown keys), a
            class mismatch with the dataset, or a failed run (its folder is removed if this call made it).

    Examples:
        >>> tuned = finetune("pruned.pt", "coco128.yaml", "runs/ft", epochs=3, imgsz=320)  # doctest: +SKIP
        >>> tuned["weights"], tuned["map50_95"]                                           # doctest: +SKIP
    """
    from lipslib.recovery.distill import OutputDistillation

    if distill not in DISTILL_MODES:
        raise LipsError(f"unknown distillation '{distill}'; choose one of {', '.join(DISTILL_MODES)}")
    path = resolve_weights(weights)
    model = load_model(path)
    check_pruned(model, path)
    if distill != "none":
        if teacher is None:
            raise LipsError(f"distill={distill} needs a teacher: the unpruned model the checkpoint was pruned from")
        teacher = resolve_weights(teacher) if not str(teacher).endswith((".yaml", ".yml")) else str(teacher)
        if model_classes(load_model(teacher)) != model_classes(model):
            raise LipsError(f"teacher {teacher} predicts other classes than {path}; distil from its own base")
        if distill == "features":  # Ultralytics' own arguments
            train_args_ = {**train_args_, "distill_model": str(teacher), "dis": float(distill_weight)}
    epochs = train_args_.get("epochs", default("finetune.epochs"))
    if not isinstance(epochs, int) or epochs <= 0:
        raise LipsError(f"epochs must be a positive integer, got {epochs!r}")
    info = check_data(data, splits=("train", "val"))
    if model_classes(model) != int(info["nc"]):
        raise LipsError(class_mismatch(path, model, info))
    out = Path(out).resolve()
    check_writable(out / "args.yaml")
    args = train_args(model, path, info, out, recipe, recipes, train_args_)
    gpus = [d for d in (args["device"] or "").split(",") if d.strip()]
    if len(gpus) > 1 and float(args["batch"]) < 1:
        raise LipsError(
            f"batch={args['batch']} (AutoBatch) does not work on several GPUs; give a batch that "
            f"is a multiple of {len(gpus)}"
        )
    created = not out.exists()
    # the trainer's constructor runs Ultralytics' select_device, which sets the CPU thread count for good; the
    # trainer runs on `threads` (use_threads) and the process gets its own count back afterwards
    with keep_threads():
        try:
            trainer = PrunedTrainer(overrides=args)
        except (ValueError, RuntimeError) as e:  # e.g. a device that is not there
            raise LipsError(f"fine-tuning {path}: {first_line(e)}") from None
        use_threads(trainer, threads, "on_pretrain_routine_end")
        if distill == "outputs":
            trainer.add_callback("on_pretrain_routine_end", OutputDistillation(teacher, distill_weight))
        try:
            _train(trainer, path, info, args)
        except LipsError:
            if created:  # a run folder this call made and could not finish: nothing half-written stays
                shutil.rmtree(out, ignore_errors=True)
            raise
    final = out / "weights" / "last_pruned_full.pt"
    shutil.copyfile(out / "weights" / "last.pt", final)
    tuned = load_model(final)
    if conv_shapes(tuned) != conv_shapes(model):  # the whole point of this module; never pass silently
        raise LipsError(f"fine-tuning changed the architecture of {path}; this is a lipslib bug")
    # the weights returned, validated as lipslib validates everything (first GPU under DDP)
    ev = evaluate(
        final, info["yaml_file"], imgsz=trainer.args.imgsz, device=gpus[0] if gpus else args["device"], threads=threads
    )
    return {
        "weights": str(final),
        "run_dir": str(out),
        "epochs": epochs,
        "map50_95": ev["map50_95"],
        "map50": ev["map50"],
        "metrics": ev,
        "params": sum(p.numel() for p in tuned.parameters()),
        "ddp": bool(trainer.ddp),
        "amp": None if trainer.ddp else bool(getattr(trainer, "amp", False)),  # the DDP workers decided
    }
