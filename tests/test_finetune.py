"""Fine-tuning keeps the pruned model (the rebuilt-net failure gives mAP 0.00) and evaluation matches
plain Ultralytics. Those that train or validate real models on CPU (tens of seconds each) are `slow`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lipslib.errors import LipsError
from lipslib.pruning import engine
from lipslib.pruning.layers import default_targets
from lipslib.train.trainer import finetune, recipe_for
from lipslib.train.validator import evaluate


@pytest.fixture(scope="module")
def pruned_iter01(assets, tmp_path_factory):
    """The authors' iter-01 model pruned 10 % further on every target (4.24 → 3.81 GFLOPs)."""
    base = engine.load_model(assets / "weights" / "lips_iter01_best.pt")
    ratios = {name: 0.1 for name in default_targets(base)}
    model = engine.prune(base, ratios, log=False).model
    return engine.save_checkpoint(model, tmp_path_factory.mktemp("pruned") / "pruned.pt")


@pytest.mark.slow  # trains
def test_one_epoch_keeps_the_architecture_and_recovers(pruned_iter01, coco128, tmp_path, foreign_threads):
    from ultralytics import YOLO

    before = engine.load_model(pruned_iter01)
    run = tmp_path / "iter_01" / "ft" / "finetune"
    rec = finetune(pruned_iter01, coco128, run, epochs=1, imgsz=320, batch=16, device="cpu", workers=0)
    assert torch.get_num_threads() == foreign_threads  # the process's own count again after the fine-tune
    final = run / "weights" / "last_pruned_full.pt"
    assert rec["weights"] == str(final) and (run / "args.yaml").is_file() and (run / "results.csv").is_file()
    received = yaml.safe_load((run / "args.yaml").read_text())  # what Ultralytics trained with
    expected = {**PAPER_TABLE, **GENTLE, "epochs": 1, "imgsz": 320, "batch": 16}  # auto: the BN-free recipe
    assert {k: received[k] for k in expected} == expected
    reloaded = YOLO(str(final)).model  # plain Ultralytics, no lipslib code
    assert engine.conv_shapes(reloaded) == engine.conv_shapes(before)
    assert sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in before.parameters())
    result = evaluate(final, coco128, imgsz=320, batch=32)
    assert result["images"] == 128 and result["split"] == "val"
    assert result["map50_95"] > 0.05, result


# The paper's published fine-tuning table (the authors' README), typed here rather than read from lipslib.
PAPER_TABLE = dict(
    optimizer="SGD",
    lr0=0.01,
    lrf=0.01,
    momentum=0.937,
    weight_decay=0.0005,
    warmup_epochs=3.0,
    warmup_bias_lr=0.1,
    batch=64,
    imgsz=640,
    epochs=20,
)
GENTLE = dict(lr0=0.002, warmup_epochs=0.0, warmup_bias_lr=0.0)  # README: the bn-free recipe


def test_bn_free_models_get_the_gentle_recipe(pruned_iter01, yolo11n):
    assert recipe_for(yolo11n, "auto") == PAPER_TABLE  # yolo11n has BatchNorm
    assert recipe_for(yolo11n, "paper") == PAPER_TABLE
    assert recipe_for(engine.load_model(pruned_iter01), "auto") == {**PAPER_TABLE, **GENTLE}  # BN-free
    assert recipe_for(yolo11n, "bn-free") == {**PAPER_TABLE, **GENTLE}


def _ultralytics_runs() -> set:
    """Run folders in Ultralytics' default places (its tests/tmp/runs while pytest runs, else runs_dir)."""
    from ultralytics.utils import ROOT, SETTINGS

    return {p for base in (ROOT.parent / "tests/tmp/runs", Path(SETTINGS["runs_dir"])) for p in base.glob("*/*")}


@pytest.mark.slow  # validates
def test_val_cli_matches_plain_ultralytics(assets, coco128, tmp_path):
    """iter-24 at 640 on the 128 val2017 images: plain Ultralytics measured 0.399 (shared/README)."""
    before = _ultralytics_runs()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lipslib",
            "val",
            "--weights",
            "lips_iter24_best.pt",
            "--data",
            coco128,
            "--imgsz",
            "640",
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    # nothing left behind: a validator without save_dir makes an empty runs/detect/train-N on every call
    assert list(tmp_path.iterdir()) == [] and _ultralytics_runs() == before
    rec = json.loads(proc.stdout)
    assert rec["map50_95"] == pytest.approx(0.399, abs=0.005)
    assert rec["gflops"] == pytest.approx(4.538, abs=0.001)


def test_bad_finetune_inputs(pruned_iter01, coco128, yolo11n, tmp_path, assets):
    with pytest.raises(LipsError, match="dataset yaml 'missing.yaml' not found"):
        finetune(pruned_iter01, "missing.yaml", tmp_path / "a", epochs=1)
    with pytest.raises(LipsError, match="epochs must be a positive integer"):
        finetune(pruned_iter01, coco128, tmp_path / "b", epochs=0)
    unpruned = engine.save_checkpoint(yolo11n, tmp_path / "unpruned.pt")
    with pytest.raises(LipsError, match="is not pruned"):
        finetune(unpruned, coco128, tmp_path / "c", epochs=1)
    from ultralytics.nn.tasks import ClassificationModel

    cls = tmp_path / "cls.pt"
    import torch

    torch.save({"model": ClassificationModel("yolo11n-cls.yaml", verbose=False).half(), "train_args": {}}, cls)
    with pytest.raises(LipsError, match="not a Detect head"):
        finetune(cls, coco128, tmp_path / "d", epochs=1)
    with pytest.raises(LipsError, match="fine-tune arguments"):
        finetune(pruned_iter01, coco128, tmp_path / "e", epochs=1, lr00=0.1)


def test_dataset_without_labels(pruned_iter01, assets, tmp_path):
    images = tmp_path / "nolabels" / "images" / "val2017"
    images.mkdir(parents=True)
    for src in sorted((assets / "datasets" / "coco128" / "images" / "val2017").iterdir())[:4]:
        (images / src.name).write_bytes(src.read_bytes())
    data = tmp_path / "nolabels" / "nolabels.yaml"
    data.write_text("train: images/val2017\nval: images/val2017\nnames:\n  0: person\n")
    with pytest.raises(LipsError, match="no labels"):
        finetune(pruned_iter01, data, tmp_path / "f", epochs=1)
    with pytest.raises(LipsError, match="no labels"):
        evaluate(pruned_iter01, data, imgsz=256)


@pytest.mark.slow  # validates
def test_image_matches_rebuild_ultralytics_map_and_feed_a_paired_bootstrap(assets, coco128):
    from harness import map50_95, paired_bootstrap

    from lipslib.train.validator import image_matches

    kw = dict(imgsz=160, batch=32)
    better = image_matches("lips_iter24_best.pt", coco128, **kw)
    worse = image_matches("lips_iter01_best.pt", coco128, **kw)
    assert len(better) == len(worse) == 128
    assert map50_95(better) == pytest.approx(evaluate("lips_iter24_best.pt", coco128, **kw)["map50_95"], abs=1e-9)
    same = paired_bootstrap(better, better, resamples=50)
    assert same["ratio_ci95"] == [1.0, 1.0] and same["p_a_beats_b"] == 0.0
    duel = paired_bootstrap(better, worse, resamples=200)
    assert duel["ratio_ci95"][0] > 1.0 and duel["p_a_beats_b"] > 0.95, duel
    with pytest.raises(LipsError, match="same images"):
        paired_bootstrap(better, worse[:10])


@pytest.mark.parametrize("imgsz", [-5, 0, 320.0])
def test_bad_image_size_is_refused(assets, coco128, imgsz):
    with pytest.raises(LipsError, match="image size"):
        evaluate("lips_iter01_best.pt", coco128, imgsz=imgsz)
