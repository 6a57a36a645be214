"""The loop as DVC sees it: one DVCLive step per iteration, the chosen iteration under `best`; and no
DVCLive run of Ultralytics' own inside the loop's fine-tunes."""

import importlib
import json

import pandas as pd
import pytest

from lipslib.pipeline.tracking import log_loop

HISTORY = pd.DataFrame(
    {
        "iteration": [1, 2, 3],
        "cost": [4.10, 3.93, 3.87],
        "gflops": [4.10, 3.93, 3.87],
        "params": [1_760_000, 1_700_000, 1_690_000],
        "map50_95": [0.20, 0.23, 0.22],
        "map50": [0.30, 0.33, 0.32],
        "gate": ["cost", "cost", "accuracy"],
        "step": [0.010, 0.010, 0.015],
        "report_map50_95": [0.18, 0.21, 0.19],
        "report_map50": [0.28, 0.31, 0.29],
    }
)
BEST = {
    "iteration": 3,
    "gflops": 3.87,
    "params": 1_690_000,
    "map50_95": 0.19,
    "map50": 0.29,
    "selection_map50_95": 0.22,
    "cost": 3.87,
    "target_cost": 3.9,
    "cost_unit": "GFLOPs",
    "within_target": True,
    "weights": "w.pt",
}


def test_one_step_per_iteration_and_the_best_in_the_summary(tmp_path):
    out = log_loop(HISTORY, BEST, tmp_path / "dvclive")
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["best"] == {
        "iteration": 3,
        "gflops": 3.87,
        "params": 1_690_000,
        "map50_95": 0.19,
        "map50": 0.29,
        "selection_map50_95": 0.22,
        "cost": 3.87,
        "target_cost": 3.9,
        "within_target": 1,
    }
    assert summary["step"] == 3 and summary["map50_95"] == 0.22  # DVCLive: the last step's values
    tsv = pd.read_csv(out / "plots" / "metrics" / "report_map50_95.tsv", sep="\t")
    assert tsv.to_dict("list") == {"step": [1, 2, 3], "report_map50_95": [0.18, 0.21, 0.19]}
    assert pd.read_csv(out / "plots" / "metrics" / "rule_step.tsv", sep="\t").rule_step.tolist() == [0.01, 0.01, 0.015]
    assert not (tmp_path / "dvc.yaml").exists() and not list(out.glob("*.yaml"))  # dvc.yaml declares these files
    log_loop(HISTORY.iloc[:2], {**BEST, "iteration": 2}, out)  # a rerun replaces, never appends
    assert pd.read_csv(out / "plots" / "metrics" / "gflops.tsv", sep="\t").step.tolist() == [1, 2]


@pytest.fixture
def ultralytics_dvclive(monkeypatch):
    """Ultralytics' DVCLive callback as it is outside pytest (it switches itself off under pytest) with
    `yolo settings dvc=True` (the default), without touching the user's settings file."""
    import ultralytics.utils as uutils

    dvc = importlib.import_module("ultralytics.utils.callbacks.dvc")
    monkeypatch.setattr(uutils, "TESTS_RUNNING", False)
    monkeypatch.setattr(uutils, "SETTINGS", {**uutils.SETTINGS, "dvc": True})
    importlib.reload(dvc)
    assert dvc.callbacks, "dvclive is installed, so Ultralytics' callback is active"
    yield dvc
    monkeypatch.undo()
    importlib.reload(dvc)


def test_ultralytics_dvclive_callback_is_kept_out_of_fine_tunes(
    ultralytics_dvclive, assets, coco128, tmp_path, monkeypatch
):
    from ultralytics.models.yolo.detect import DetectionTrainer

    from lipslib.datasets import check_data
    from lipslib.pruning import engine
    from lipslib.pruning.layers import default_targets
    from lipslib.train.trainer import PrunedTrainer, train_args

    base = engine.load_model(assets / "weights" / "lips_iter01_best.pt")
    pruned = engine.save_checkpoint(
        engine.prune(base, {n: 0.1 for n in default_targets(base)}, log=False).model, tmp_path / "pruned.pt"
    )
    args = train_args(
        engine.load_model(pruned),
        pruned,
        check_data(coco128, splits=("train", "val")),
        tmp_path / "ft",
        "auto",
        None,
        {"epochs": 1, "device": "cpu"},
    )

    def dvc_callbacks(trainer):
        return [f for fns in trainer.callbacks.values() for f in fns if f.__module__ == ultralytics_dvclive.__name__]

    for where in ("plain", "lipslib"):
        (tmp_path / where).mkdir()
    monkeypatch.chdir(tmp_path / "plain")
    assert dvc_callbacks(DetectionTrainer(overrides=args))  # plain Ultralytics: on, and it has started a run
    assert (tmp_path / "plain" / "dvclive").is_dir()
    monkeypatch.chdir(tmp_path / "lipslib")
    assert not dvc_callbacks(PrunedTrainer(overrides=args))  # lipslib's fine-tune: off, before it could start
    assert not (tmp_path / "lipslib" / "dvclive").exists()
