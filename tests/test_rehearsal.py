"""The paper profile at CPU scale (`make rehearsal`, profile `rehearsal`), end to end from the repo: a
yolo11n-shaped base with BatchNorm, the paper's recipe with warm-up, cost on the fused copy, coco_val2193 in
Ultralytics' COCO layout, all five notebooks, within 10 minutes on 2 cores."""

import json
import os
import subprocess
import time

import pandas as pd
import pytest
import yaml
from conftest import ROOT

from lipslib.pruning.engine import conv_shapes, cost, has_batchnorm, load_model

pytestmark = pytest.mark.slow


def test_rehearsal_end_to_end(assets, paper, tmp_path, yolo11n):
    out = tmp_path / "rehearsal"
    t0 = time.time()
    proc = subprocess.run(
        ["make", "-s", "rehearsal", f"REHEARSAL={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=900,
    )
    seconds = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"rehearsal: {seconds:.0f} s")
    assert seconds <= 600

    base = load_model(out / "yolo11n_iter01.pt")
    assert has_batchnorm(base) and conv_shapes(base) == conv_shapes(yolo11n)
    sens = json.loads((out / "sensitivity" / "params.json").read_text())
    assert sens["data"].endswith("coco_val2193.yaml") and sens["images"] == 400 and sens["device"] == "cpu"
    importance = json.loads((out / "sensitivity" / "layer_importance.json").read_text())
    assert len(importance) == 29 and max(importance.values()) == 1.0

    history = pd.read_csv(out / "optimize" / "history.csv")
    assert history.iteration.tolist() == [1, 2]
    # iteration 1 is the paper's start, uniform 0.3: the authors logged 2 × 2.120383 GMACs for it
    logged = pd.read_csv(paper / "iter_01" / "prune_directed_log.csv").GMACs_after.iloc[-1] * 2
    assert history.gflops.iloc[0] == pytest.approx(logged, abs=1e-5)
    ft = out / "optimize" / "iter_01" / "ft" / "finetune"
    args = yaml.safe_load((ft / "args.yaml").read_text())
    assert (args["lr0"], args["warmup_epochs"], args["warmup_bias_lr"]) == (0.01, 3.0, 0.1)  # the paper's table
    tuned = load_model(ft / "weights" / "last_pruned_full.pt")
    assert has_batchnorm(tuned)  # trained with BN; cost counted on the fused copy:
    assert cost(tuned).gflops == pytest.approx(history.gflops.iloc[0], abs=1e-6)  # history.csv: 6 decimals

    best = json.loads((out / "optimize" / "best.json").read_text())
    assert best["data"].endswith("coco_val2193_halves.yaml") and best["split_report"] == "test"
    reports = out / "reports"
    for name in ("layer_importance.png", "layer_iteration.png", "benchmark.png", "video_frame.png"):
        assert (reports / "figures" / name).stat().st_size > 5_000, name
    assert (out / "schedule" / "replay" / "replay.png").stat().st_size > 5_000  # needs the authors' logs
    assert json.loads((reports / "tables" / "video_summary.json").read_text())["frames_processed"] == 6
    assert len(list((reports / "notebooks").glob("0*.ipynb"))) == 5
