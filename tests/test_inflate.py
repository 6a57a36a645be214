"""The authors' BN-free iter-01 inside yolo11n.yaml: yolo11n's shapes and cost, BatchNorm, the same outputs;
calibrated BN statistics keep train mode close to eval mode; a checkpoint of another yaml is refused."""

import copy

import pytest
import torch

from lipslib.datasets import calibration_images
from lipslib.errors import LipsError
from lipslib.pruning.engine import conv_shapes, cost, has_batchnorm, load_model, output_tensors
from lipslib.pruning.inflate import inflate


@pytest.fixture(scope="module")
def iter01(assets):
    return load_model(assets / "weights" / "lips_iter01_best.pt")


def _with_batch_statistics(model):
    """Eval-format outputs, with every BN normalising by the batch's own statistics (as in training)."""
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.train()
            m.momentum = 0.0  # leave the running statistics as they are
    return model


def test_same_function_in_yolo11n_shapes(iter01, yolo11n, assets):
    full = inflate(iter01)
    assert has_batchnorm(full) and not has_batchnorm(iter01)
    assert conv_shapes(full) == conv_shapes(yolo11n)
    assert cost(full).gflops == pytest.approx(cost(yolo11n).gflops, rel=1e-9)
    x = calibration_images(assets / "datasets" / "coco128" / "coco128.yaml", "val", 4, 320)
    with torch.no_grad():
        want, got = iter01.eval()(x)[0], full.eval()(x)[0]
    # boxes are in pixels (up to 320), scores in [0, 1]: float32 summation order alone moves a box by ~1e-3 px
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-3), (want - got).abs().max()


def test_calibrated_statistics_keep_training_mode_close(iter01, assets):
    data = assets / "datasets" / "coco128" / "coco128.yaml"
    calibrated = inflate(iter01, images=calibration_images(data, "train", 32, 320))
    plain = inflate(iter01)
    x = calibration_images(data, "val", 8, 320)
    with torch.no_grad():
        ref = iter01.eval()(x)[0][:, 4:]
        dev = {
            name: float((_with_batch_statistics(m)(x)[0][:, 4:] - ref).abs().mean() / ref.abs().mean())
            for name, m in (("calibrated", calibrated), ("identity", plain))
        }
    assert dev["calibrated"] < 0.2 * dev["identity"], dev


def test_uniform_030_prunes_exactly_the_dead_channels(iter01, paper):
    """iter-01 is yolo11n with 30 % removed on every target; L1 on the inflated model removes the zeros."""
    from lipslib.pruning.engine import prune
    from lipslib.pruning.spec import read_spec

    pruned = prune(inflate(iter01), read_spec(paper / "iter_01" / "prune_spec.txt"), log=False).model
    assert conv_shapes(pruned) == conv_shapes(iter01)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        assert (pruned.eval()(x)[0] - iter01.eval()(x)[0]).abs().max() < 1e-3


def test_a_checkpoint_of_another_architecture_is_refused(iter01):
    with pytest.raises(LipsError, match="is not yolo11s.yaml pruned on the LIPS target layers"):
        inflate(iter01, "yolo11s.yaml")


def test_channels_given_back_can_learn(iter01, paper):
    """A removed channel outputs 0 but is no saddle point: its BN scale gets a gradient in training."""
    full = inflate(iter01)
    bn = full.get_submodule("model.0.bn")
    dead = bn.weight.detach() == 0
    assert int(dead.sum()) == 16 - conv_shapes(iter01)["model.0.conv"][0]  # yolo11n's model.0 has 16
    full.train()
    loss = sum(t.square().mean() for t in output_tensors(full(torch.rand(2, 3, 64, 64))))
    loss.backward()
    assert (bn.weight.grad[dead].abs() > 0).all()
