"""Baselines at equal cost: the C2f rewrite is the same function, torch-pruning's global pruner works on
the rewritten YOLO11, and every method lands on the GFLOPs target."""

import copy

import pytest
import torch

from lipslib.errors import LipsError
from lipslib.pruning.baselines import at_gflops, split_c2f
from lipslib.pruning.engine import cost, load_model


@pytest.fixture(scope="module")
def iter01(assets):
    return load_model(assets / "weights" / "lips_iter01_best.pt")


def test_split_c2f_is_the_same_function(yolo11n):
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        expected = copy.deepcopy(yolo11n).eval()(x)[0]
        got = split_c2f(copy.deepcopy(yolo11n)).eval()(x)[0]
    assert torch.allclose(got, expected, atol=1e-5)  # with BatchNorm: the halves' BN slices too


@pytest.mark.parametrize("method", ["uniform", "shaped", "global"])
def test_each_method_lands_on_the_target(iter01, paper, method):
    import json

    importance = json.loads((paper / "layer_importance.json").read_text())
    # 7 bisection steps (library default 14): measured +0.13 % uniform, +0.03 % shaped, −0.61 % global
    res = at_gflops(method, iter01, 3.9, importance=importance, steps=7)
    assert res["gflops"] == pytest.approx(3.9, rel=0.01)
    assert cost(res["model"]).gflops == res["gflops"]
    with torch.no_grad():
        res["model"].eval()(torch.rand(1, 3, 64, 64))  # still runs
    if method == "global":
        assert res["ratios"] is None and 0 < res["scalar"] < 0.9
    else:
        assert set(res["ratios"]) == set(importance)


def test_bad_requests(iter01):
    with pytest.raises(LipsError, match="must be in"):
        at_gflops("uniform", iter01, 5.0)
    with pytest.raises(LipsError, match="unknown baseline"):
        at_gflops("magnitude", iter01, 3.9)
    with pytest.raises(LipsError, match="needs an importance"):
        at_gflops("shaped", iter01, 3.9)


def test_pooled_seeds_widen_the_interval_by_the_spread_between_training_runs():
    import numpy as np
    from harness import pool_seeds

    images = np.random.default_rng(1).normal(0.05, 0.002, 2000)  # one run's image-bootstrap mAPs
    assert np.array_equal(pool_seeds([images]), images)  # one seed: nothing to pool
    runs = [images - 0.01, images, images + 0.01]  # three training seeds, 0.01 apart
    pooled = pool_seeds(runs)
    assert pooled.mean() == pytest.approx(0.05, abs=1e-3)
    # the same image resample in every draw (sd 0.002) plus the mean of 3 seeds drawn with replacement from
    # {−0.01, 0, +0.01} (sd 0.01·√(2/3)/√3)
    assert np.std(pooled) == pytest.approx(np.hypot(0.002, 0.01 * (2 / 3) ** 0.5 / 3**0.5), rel=0.1)
    assert np.std(pool_seeds([images, images, images])) == pytest.approx(np.std(images))  # equal runs add nothing
