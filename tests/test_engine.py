import json
import time

import numpy as np
import pandas as pd
import pytest
import torch

from lipslib.errors import LipsError
from lipslib.pruning import engine
from lipslib.pruning.layers import default_targets, prunable_convs, validate_layers
from lipslib.pruning.spec import read_spec


def test_default_targets_are_the_papers_29(yolo11n, paper):
    expected = sorted(json.loads((paper / "layer_importance.json").read_text()))
    assert default_targets(yolo11n) == expected


def test_targets_are_discovered_for_other_scales():
    yolo11s = engine.load_model("yolo11s.yaml")
    names = default_targets(yolo11s)
    assert len(names) == 29 and "model.23.cv3.0.1.1.conv" in names
    assert set(names) <= set(prunable_convs(yolo11s))
    shapes = engine.conv_shapes(yolo11s)
    assert shapes["model.3.conv"][0] != engine.conv_shapes(engine.load_model("yolo11n.yaml"))["model.3.conv"][0]


def test_head_prediction_convs_are_never_prunable(yolo11n):
    names = prunable_convs(yolo11n)
    assert "model.23.cv2.0.2" not in names and "model.23.cv3.2.2" not in names
    assert not any("dfl" in n for n in names)
    with pytest.raises(LipsError, match="unknown layer 'model.23.cv2.0.2'"):
        validate_layers(yolo11n, ["model.23.cv2.0.2"])


@pytest.mark.parametrize("n, r, expected", [(16, 0.3, 4), (256, 0.2105, 53), (80, 0.85, 68), (3, 0.99, 2)])
def test_channels_removed_is_floor(n, r, expected):
    assert engine.n_remove(n, r) == expected


def test_round_to_keeps_multiples():
    assert engine.n_remove(256, 0.2105, round_to=8) == 256 - 200  # 203 kept → 200
    assert engine.n_remove(16, 0.9, round_to=8) == 8  # at least one multiple stays
    assert engine.n_remove(12, 0.03, round_to=8) == 0  # 12 kept is nearer 12 (the base width) than 8
    assert engine.n_remove(12, 0.2, round_to=8) == 4  # 10: a tie, the smaller
    assert engine.n_remove(45, 0.07, round_to=8) == 5  # 42 → 40
    assert [engine.n_remove(23, r / 100, round_to=8) for r in range(0, 100, 5)] == sorted(
        engine.n_remove(23, r / 100, round_to=8) for r in range(0, 100, 5)
    )  # more ratio never keeps more


@pytest.mark.parametrize("iteration", ["01", "24"])
def test_paper_specs_reproduce_the_released_checkpoints(yolo11n, assets, paper, iteration):
    ratios = read_spec(paper / f"iter_{iteration}" / "prune_spec.txt")
    t0 = time.perf_counter()
    result = engine.prune(yolo11n, ratios, log=False)
    seconds = time.perf_counter() - t0
    released = engine.load_model(assets / "weights" / f"lips_iter{iteration}_best.pt")
    assert engine.conv_shapes(result.model) == engine.conv_shapes(released)
    log = pd.read_csv(paper / f"iter_{iteration}" / "prune_directed_log.csv")
    paper_gflops = 2 * log["GMACs_after"].iloc[-1]
    assert engine.cost(result.model).gflops == pytest.approx(paper_gflops, rel=0.005)
    print(f"iter_{iteration}: graph + pruning 29 layers took {seconds:.2f} s")


def test_prune_log_matches_the_authors_log(yolo11n, paper):
    ratios = read_spec(paper / "iter_24" / "prune_spec.txt")
    ours = pd.DataFrame(engine.prune(yolo11n, ratios).log)
    theirs = pd.read_csv(paper / "iter_24" / "prune_directed_log.csv")
    assert list(ours.columns) == list(theirs.columns)
    assert ours["layer_name"].tolist() == theirs["layer_name"].tolist()
    assert ours["out_after"].tolist() == theirs["out_after"].tolist()
    np.testing.assert_allclose(ours["GMACs_after"], theirs["GMACs_after"], rtol=0.005)


def test_pruning_is_deterministic_and_leaves_the_input_alone(yolo11n):
    before = engine.conv_shapes(yolo11n)
    ratios = {"model.3.conv": 0.5, "model.23.cv3.0.0.1.conv": 0.3}
    a = engine.prune(yolo11n, ratios, log=False).model.state_dict()
    b = engine.prune(yolo11n, ratios, log=False).model.state_dict()
    assert engine.conv_shapes(yolo11n) == before
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_criterion_changes_which_channels_go(yolo11n):
    ratios = {"model.3.conv": 0.5}
    l1 = engine.prune(yolo11n, ratios, log=False).model.model[3].conv.weight
    rnd = engine.prune(yolo11n, ratios, criterion="random", log=False).model.model[3].conv.weight
    assert l1.shape == rnd.shape and not torch.equal(l1, rnd)
    with pytest.raises(LipsError, match="unknown pruning criterion"):
        engine.prune(yolo11n, ratios, criterion="taylor")


def test_bad_ratios_are_refused(yolo11n):
    with pytest.raises(LipsError, match="unknown layer"):
        engine.prune(yolo11n, {"model.99.conv": 0.3})
    with pytest.raises(LipsError, match=r"\[0, 1\)"):
        engine.prune(yolo11n, {"model.3.conv": 1.0})


def test_cost_in_the_papers_convention(yolo11n):
    assert engine.cost(yolo11n).gflops == pytest.approx(6.52, abs=0.01)
    assert engine.cost(yolo11n, imgsz=320).gflops < engine.cost(yolo11n).gflops / 3.5


def test_cost_counter_scaled_count_is_exact(yolo11n):
    """The fast counter (counted at 64 px, scaled) gives exactly the direct count at 640, and counts
    directly when it cannot scale exactly."""
    count = engine.cost_counter(yolo11n, 640)
    for ratios in ({"model.0.conv": 0.85}, {"model.23.cv3.1.0.1.conv": 0.5, "model.9.cv2.conv": 0.3}):
        pruned = engine.prune(yolo11n, ratios, log=False).model
        assert count(pruned) == engine.cost(pruned, 640)
    assert engine.cost_counter(yolo11n, 608)(yolo11n) == engine.cost(yolo11n, 608)  # 608 = 9.5 × 64


def test_saved_checkpoint_loads_predicts_and_exports(yolo11n, paper, assets, tmp_path):
    """Plain Ultralytics loads the pruned file; its ONNX export runs in onnxruntime and matches torch."""
    import onnxruntime as ort
    from ultralytics import YOLO

    pruned = engine.prune(yolo11n, read_spec(paper / "iter_24" / "prune_spec.txt"), log=False).model
    path = engine.save_checkpoint(pruned, tmp_path / "pruned.pt")
    yolo = YOLO(str(path))
    assert engine.conv_shapes(yolo.model) == engine.conv_shapes(pruned)
    image = sorted((assets / "datasets" / "coco128" / "images" / "val2017").iterdir())[0]
    assert yolo.predict(str(image), imgsz=320, verbose=False)[0].boxes is not None

    onnx_file = YOLO(str(path)).export(format="onnx", imgsz=320, verbose=False)
    net = YOLO(str(path)).model.float().eval().fuse(verbose=False)
    x = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(x)[0].numpy()
    session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == expected.shape
    # outputs are box coordinates in pixels (0…320) and class scores; measured max diff 2.3e-5
    assert np.abs(got - expected).max() < 1e-3
