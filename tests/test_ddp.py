"""Multi-GPU fine-tuning, everything short of the process group (which needs GPUs): Ultralytics writes its
own DDP state file and worker script for a pruned fine-tune; in a fresh process that script rebuilds the
trainer and finds the pruned model, and run unchanged it trains it (on the CPU) and saves it pruned. A
failed DDP worker is one line; the parent, which holds no metrics under DDP, reports the saved weights'."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lipslib.datasets import check_data
from lipslib.errors import LipsError
from lipslib.pruning import engine
from lipslib.pruning.layers import default_targets
from lipslib.train.trainer import PrunedTrainer, finetune, train_args
from lipslib.train.validator import evaluate

PROBE = """
    trainer.setup_model()
    import json
    from lipslib.pruning.engine import conv_shapes
    print("PROBE " + json.dumps({"trainer": f"{type(trainer).__module__}.{type(trainer).__qualname__}",
                                 "shapes": conv_shapes(trainer.model),
                                 "params": sum(p.numel() for p in trainer.model.parameters())}))
"""


@pytest.fixture(scope="module")
def pruned(assets, tmp_path_factory):
    base = engine.load_model(assets / "weights" / "lips_iter01_best.pt")
    model = engine.prune(base, {name: 0.1 for name in default_targets(base)}, log=False).model
    return engine.save_checkpoint(model, tmp_path_factory.mktemp("pruned") / "pruned.pt")


def run(script: Path):
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=os.environ.copy(), timeout=600
    )


@pytest.mark.slow  # trains
def test_ultralytics_ddp_files_rebuild_the_pruned_trainer(pruned, coco128, tmp_path):
    import cloudpickle
    from ultralytics.utils.dist import ddp_cleanup, generate_ddp_file

    assert tuple(int(x) for x in cloudpickle.__version__.split(".")[:2]) >= (3, 1)  # else Ultralytics pip-installs it
    model = engine.load_model(pruned)
    info = check_data(coco128, splits=("train", "val"))
    args = train_args(
        model,
        pruned,
        info,
        tmp_path / "run",
        "auto",
        None,  # the default config's recipes
        dict(epochs=1, imgsz=96, batch=8, device="cpu", fraction=0.05, workers=0),
    )
    trainer = PrunedTrainer(overrides=args)
    script = Path(generate_ddp_file(trainer))  # Ultralytics' own: the .py and its cloudpickled .pt state
    try:
        text = script.read_text()
        assert "trainer.train()" in text and script.with_suffix(".pt").is_file()
        probe = tmp_path / "probe.py"
        probe.write_text(text.replace("    trainer.train()\n", PROBE))
        proc = run(probe)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rec = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("PROBE "))[6:])
        assert rec["trainer"] == "lipslib.train.trainer.PrunedTrainer"  # imported in the worker, not rebuilt by value
        assert rec["shapes"] == engine.conv_shapes(model)
        assert rec["params"] == sum(p.numel() for p in model.parameters())

        proc = run(script)  # the worker script as Ultralytics wrote it
        assert proc.returncode == 0, proc.stderr[-3000:]
        saved = engine.load_model(tmp_path / "run" / "weights" / "last.pt")
        assert engine.conv_shapes(saved) == engine.conv_shapes(model)
    finally:
        ddp_cleanup(trainer, str(script))


def test_a_failed_ddp_worker_is_one_line(pruned, coco128, tmp_path, monkeypatch):
    def worker_fails(self):
        raise subprocess.CalledProcessError(1, [sys.executable, "-m", "torch.distributed.run"])

    monkeypatch.setattr(PrunedTrainer, "train", worker_fails)
    with pytest.raises(LipsError, match="a DDP worker exited with code 1") as e:
        finetune(pruned, coco128, tmp_path / "run", epochs=1, imgsz=96, device="cpu")
    assert "\n" not in str(e.value)


@pytest.mark.slow  # validates
def test_ddp_parent_reports_the_saved_weights(pruned, coco128, tmp_path, monkeypatch):
    """The parent holds no metrics under DDP: what it returns must be the weights the workers saved."""
    import torch

    model = engine.load_model(pruned)
    with torch.no_grad():  # "trained" weights: the head's class biases moved, so the mAP differs
        for seq in model.model[-1].cv3:
            seq[-1].bias -= 1.0
    trained = engine.save_checkpoint(model, tmp_path / "trained.pt")

    def workers_trained(self):  # what DDP leaves the parent: rank 0's weights on disk, no metrics in memory
        shutil.copyfile(trained, self.wdir / "last.pt")
        self.ddp = True

    monkeypatch.setattr(PrunedTrainer, "train", workers_trained)
    rec = finetune(pruned, coco128, tmp_path / "run", epochs=1, imgsz=96, device="cpu")
    ev = dict(imgsz=96, device="cpu")
    assert rec["ddp"] and rec["amp"] is None
    assert rec["map50_95"] == pytest.approx(evaluate(trained, coco128, **ev)["map50_95"], abs=1e-9)
    assert rec["map50_95"] != pytest.approx(evaluate(pruned, coco128, **ev)["map50_95"], abs=1e-6)
