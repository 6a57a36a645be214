"""Recovery options: bias repair leaves an unpruned model unchanged and brings a pruned one's outputs toward
the base's on held-out images; every option fine-tunes a pruned model, keeping its architecture, into a
checkpoint that plain Ultralytics loads."""

import pytest
import torch

from lipslib import engine
from lipslib.evaluate import calibration_images
from lipslib.layers import default_targets
from lipslib.repair import repair_biases


@pytest.fixture(scope="module")
def iter01(assets):
    return engine.load_model(assets / "weights" / "lips_iter01_best.pt")


@pytest.fixture(scope="module")
def images(coco128):
    return {"calibrate": calibration_images(coco128, "train", 32, 320), "held": calibration_images(coco128, "val", 8, 320)}


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)[0]


def test_repair_of_an_unpruned_copy_changes_nothing(iter01, images):
    res = engine.prune(iter01, {name: 0.0 for name in default_targets(iter01)}, log=False, track=True)
    assert repair_biases(res, iter01, images["calibrate"]) == {}
    assert torch.equal(_outputs(res.model, images["held"]), _outputs(iter01, images["held"]))


@pytest.mark.parametrize("ratio", [0.2, 0.4])
def test_repair_moves_a_pruned_copy_toward_the_base(iter01, images, ratio):
    res = engine.prune(iter01, {name: ratio for name in default_targets(iter01)}, log=False, track=True)
    want = _outputs(iter01, images["held"])[:, 4:]  # class scores, on images the repair never saw
    before = (_outputs(res.model, images["held"])[:, 4:] - want).abs().mean()
    shifts = repair_biases(res, iter01, images["calibrate"])
    after = (_outputs(res.model, images["held"])[:, 4:] - want).abs().mean()
    assert shifts and after < 0.95 * before, (float(before), float(after))  # measured: 0.87× at 0.2


@pytest.mark.slow
@pytest.mark.parametrize("distill", ["none", "outputs", "features"])
def test_each_option_fine_tunes_into_a_plain_checkpoint(iter01, images, coco128, tmp_path, distill):
    from ultralytics import YOLO

    from lipslib.finetune import finetune

    res = engine.prune(iter01, {name: 0.2 for name in default_targets(iter01)}, log=False, track=True)
    repair_biases(res, iter01, images["calibrate"])
    pruned = engine.save_checkpoint(res.model, tmp_path / "pruned.pt")
    rec = finetune(pruned, coco128, tmp_path / "ft", epochs=1, imgsz=96, batch=16, fraction=0.1, device="cpu",
                   distill=distill, teacher="lips_iter01_best.pt")  # fmt: skip
    loaded = YOLO(rec["weights"]).model  # plain Ultralytics
    assert engine.conv_shapes(loaded) == engine.conv_shapes(res.model)
    assert type(loaded).__name__ == "DetectionModel" and not hasattr(loaded, "teacher_model")
    header = (tmp_path / "ft" / "results.csv").read_text().splitlines()[0]
    assert ("train/kd_loss" in header) == (distill == "outputs") and ("dis_loss" in header) == (distill == "features")
