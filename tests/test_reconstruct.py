"""Least-squares reconstruction: it leaves an unpruned copy unchanged, brings a pruned copy's refit convs (and its
outputs) closer to the base's on images it never saw than bias repair does, works with BatchNorm and against a warm
copy's donor, keeps its Grams within the stated bound, and saves a checkpoint plain Ultralytics loads."""

import copy

import pytest
import torch
import torch.nn as nn
from conftest import ROOT

from lipslib.errors import LipsError
from lipslib.pruning import engine
from lipslib.pruning.layers import default_targets
from lipslib.recovery import Recovery, recover
from lipslib.recovery.lsq import gram_bytes, gram_size, grams, plans, reconstruct
from lipslib.recovery.repair import repair_biases


def _uniform(model, ratio):
    return engine.prune(model, {name: ratio for name in default_targets(model)}, log=False, track=True)


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)[0]


def _head_gap(model, base, x) -> float:
    """Relative error of the Detect head's raw maps (box distributions and class logits, every level) to the base's."""
    with torch.no_grad():
        raw = [m.eval()(x)[1] for m in (model, base)]  # {'boxes', 'scores', 'feats'}: the head's own two
        got, want = (torch.cat([r["boxes"].flatten(1), r["scores"].flatten(1)], 1) for r in raw)
    return float((got - want).norm() / want.norm())


def _conv_inputs(model, names, x) -> dict:
    """Each named conv's input and output on x, in one forward of `model` (copied: the authors' SiLU is in place)."""
    seen, modules = {}, dict(model.named_modules())
    hooks = [
        modules[n].register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, (a[0].clone(), o.clone())))
        for n in names
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return seen


def test_reconstruction_of_an_unpruned_copy_changes_nothing(iter01, images):
    res = engine.prune(iter01, {name: 0.0 for name in default_targets(iter01)}, log=False, track=True)
    assert reconstruct(res, iter01, images["calibrate"]) == {}  # no conv lost an input: nothing to refit
    assert torch.equal(_outputs(res.model, images["held"]), _outputs(iter01, images["held"]))  # bound measured: 0


def test_an_exact_refit_of_an_uncut_conv_gives_back_its_weights(iter01, images):
    """The solver: with λ = 0 and every input kept, least squares returns the reference's own weights."""
    from lipslib.recovery.lsq import Plan, _fit

    name = "model.2.cv2.conv"
    conv = iter01.get_submodule(name)
    g = grams(iter01, images["calibrate"], [name])[name]
    assert g.shape == (2, gram_size(conv), gram_size(conv)) and g.dtype == torch.float64  # one Gram per fold
    rows, cols = torch.arange(conv.out_channels), torch.arange(conv.in_channels)
    theta = _fit(g.sum(0), Plan(conv, rows, rows, cols, cols), 0.0)
    weight, bias = theta[:-1].T.reshape(conv.weight.shape), theta[-1]
    x, want = _conv_inputs(iter01, [name], images["held"])[name]
    got = nn.functional.conv2d(x, weight.float(), bias.float(), conv.stride, conv.padding)
    assert float(((got - want) ** 2).mean() / (want**2).mean()) < 1e-6


@pytest.mark.parametrize("ratio", [0.2, 0.4])
def test_refit_convs_are_closer_to_the_base_than_bias_repair_on_held_images(iter01, images, ratio):
    repaired, refit = _uniform(iter01, ratio), _uniform(iter01, ratio)
    repair_biases(repaired, iter01, images["calibrate"])
    report = reconstruct(refit, iter01, images["calibrate"])
    assert report and all(0 <= r["residual"] < 1 for r in report.values())
    # each refit conv on the base's own input (its kept channels), on images the fit never saw
    todo = plans(refit, iter01)
    base_io = _conv_inputs(iter01, todo, images["held"])
    errors = {}
    for name, plan in todo.items():
        x, want = base_io[name]
        want = want[:, plan.ref_rows]
        for kind, res in (("repair", repaired), ("refit", refit)):
            conv = res.model.get_submodule(name)
            got = nn.functional.conv2d(
                x[:, plan.ref_cols],
                conv.weight[plan.rows][:, plan.cols],
                conv.bias[plan.rows],
                conv.stride,
                conv.padding,
                conv.dilation,
            )
            errors.setdefault(kind, []).append(float(((got - want) ** 2).mean() / (want**2).mean()))
    # at 160 px on 16 images a deep conv has fewer pixels than inputs: the held-out check keeps bias repair there
    fell_back = {n for n, r in report.items() if r["fit"] == "repair"}
    worse = [n for n, a, b in zip(todo, errors["refit"], errors["repair"]) if a > 1.01 * b and n not in fell_back]
    assert not worse, worse
    assert len(fell_back) < len(todo) / 2, fell_back
    # and the whole model: class scores closer to the base's
    gap = {k: _head_gap(r.model, iter01, images["held"]) for k, r in (("repair", repaired), ("refit", refit))}
    assert gap["refit"] < 0.9 * gap["repair"], gap  # measured at 320 px, 32 images: 0.84× (0.2)


def test_grams_stay_within_the_bound_and_split_into_passes(iter01, images):
    res = _uniform(iter01, 0.3)
    todo = plans(res, iter01)
    need = gram_bytes(p.ref for p in todo.values())
    assert need == sum(g.numel() * g.element_size() for g in grams(iter01, images["calibrate"][:2], todo).values())
    calls = []
    hook = iter01.model[0].register_forward_hook(lambda *a: calls.append(1))  # one call per forward of the model
    try:
        one = grams(iter01, images["calibrate"][:2], todo, batch=2)
        assert len(calls) == 1
        biggest = max(gram_bytes([p.ref]) for p in todo.values())
        split = grams(iter01, images["calibrate"][:2], todo, batch=2, max_bytes=biggest)
        assert len(calls) > 2  # several passes, each holding at most `biggest` bytes of Grams
    finally:
        hook.remove()
    assert all(torch.equal(one[n], split[n]) for n in one)
    with pytest.raises(LipsError, match="max_gib"):
        grams(iter01, images["calibrate"][:2], todo, max_bytes=biggest - 1)


def test_batchnorm_models_are_refit_before_their_bn(images, assets):
    """The paper's base has BatchNorm: the conv is fitted on its pre-BN output, the bias folded into the BN mean."""
    from lipslib.pruning.inflate import inflate

    base = inflate(assets / "weights" / "lips_iter01_best.pt", "yolo11n.yaml", images["calibrate"])
    assert engine.has_batchnorm(base)
    # the inflated model carries iter-01's 30 % cut as dead channels: 0.5 also cuts live ones
    plain, repaired, refit = _uniform(base, 0.5), _uniform(base, 0.5), _uniform(base, 0.5)
    repair_biases(repaired, base, images["calibrate"])
    means = {n: m.running_mean.clone() for n, m in refit.model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert reconstruct(refit, base, images["calibrate"])
    modules = dict(refit.model.named_modules())
    before_bn = [
        n
        for n in plans(_uniform(base, 0.5), base)
        if n.endswith(".conv") and isinstance(getattr(modules[n.rpartition(".")[0]], "bn", None), nn.BatchNorm2d)
    ]
    assert before_bn and all(modules[n].bias is None for n in before_bn)  # still conv → BN, no bias added
    moved = [
        n
        for n, m in refit.model.named_modules()
        if isinstance(m, nn.BatchNorm2d) and not torch.equal(m.running_mean, means[n])
    ]
    assert moved
    gap = {
        k: _head_gap(r.model, base, images["held"])
        for k, r in (("none", plain), ("repair", repaired), ("refit", refit))
    }
    assert gap["refit"] < 0.8 * gap["repair"] and gap["repair"] < gap["none"], gap


def test_a_warm_copy_is_refit_toward_its_donor(iter01, images):
    """The loop cuts a fine-tuned copy deeper: the refit matches the donor's outputs, not the base's."""
    from lipslib.recovery.warmstart import inherit

    names = default_targets(iter01)
    donor = _uniform(iter01, 0.2)
    reconstruct(donor, iter01, images["calibrate"])  # the donor differs from the base
    copies = []
    for _ in range(2):
        res = engine.prune(
            iter01, {name: (0.35 if i % 3 else 0.1) for i, name in enumerate(names)}, log=False, track=True
        )
        inherit(res.model, res.origin, donor.model, donor.origin)
        copies.append(res)
    recover(
        copies[1], iter01, images["calibrate"], Recovery(reconstruct=True), donor=donor.model, donor_origin=donor.origin
    )
    want = _outputs(donor.model, images["held"])[:, 4:]
    before, after = ((_outputs(c.model, images["held"])[:, 4:] - want).abs().mean() for c in copies)
    assert after < 0.5 * before, (float(before), float(after))
    # output channels the donor lacks (base weights, 0.1 < 0.2) are left as they came
    donors, fitted, plain = (dict(m.named_modules()) for m in (donor.model, copies[1].model, copies[0].model))
    back = [
        n
        for n in plans(copies[1], iter01, donor.model, donor.origin)
        if fitted[n].out_channels > donors[n].out_channels
    ]
    assert back
    for n in back:
        keep = plans(copies[1], iter01, donor.model, donor.origin)[n].rows
        others = torch.ones(fitted[n].out_channels, dtype=torch.bool)
        others[keep] = False
        assert torch.equal(fitted[n].weight[others], plain[n].weight[others])


def test_the_reconstructed_checkpoint_loads_and_predicts_in_plain_ultralytics(iter01, images, tmp_path, coco128):
    from ultralytics import YOLO

    res = _uniform(iter01, 0.3)
    reconstruct(res, iter01, images["calibrate"])
    path = engine.save_checkpoint(res.model, tmp_path / "p.pt")
    model = YOLO(str(path))
    image = sorted((coco128.parent / "images" / "val2017").glob("*.jpg"))[0]
    boxes = model.predict(str(image), imgsz=160, verbose=False, device="cpu")[0].boxes
    want = _outputs(res.model.half().float(), images["held"])  # saved in fp16, like every lipslib checkpoint
    assert torch.allclose(_outputs(model.model.float(), images["held"]), want, atol=1e-3)
    assert boxes is not None


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"reconstruct": "yes"}, "recover.reconstruct must be true or false"),
        ({"ridge": -0.1}, "recover.ridge must be a number ≥ 0"),
        ({"ridge": "abc"}, "recover.ridge must be a number"),
        ({"images": 0}, "recover.images must be an integer ≥ 1"),
        ({"max_gib": 0}, "recover.max_gib must be a number > 0"),
        ({"distill": "logits"}, "recover.distill must be one of"),
    ],
)
def test_bad_recovery_settings_are_refused(settings, message):
    with pytest.raises(LipsError, match=message):
        Recovery(**settings)


def test_bad_recovery_settings_stop_the_cli_in_one_line_before_any_compute(tmp_path):
    import subprocess
    import sys

    for args in (
        ["optimize", "--profile", "smoke", "--out", str(tmp_path / "o"), "--set", "recover.ridge=-1"],
        ["prune", "--weights", "yolo11n.yaml", "--ratios", "0.1", "--reconstruct", "--out", str(tmp_path / "p.pt")],
    ):
        run = subprocess.run(
            [sys.executable, "-m", "lipslib", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
        )
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "p.pt").exists()


def test_with_few_calibration_pixels_convs_keep_bias_repair_where_it_predicts_better(iter01, images):
    """4 images at 160 px leave a deep conv fewer pixels than unknowns: the held-out check then keeps bias repair for
    many convs, always the candidate that predicted the other fold best; with 32 images at 320, fewer."""
    res = _uniform(iter01, 0.3)
    few = reconstruct(res, iter01, images["calibrate"][:4, :, :160, :160].contiguous())
    many = reconstruct(_uniform(iter01, 0.3), iter01, images["calibrate"])
    assert all(r["held_out"][r["fit"]] == min(r["held_out"].values()) for r in [*few.values(), *many.values()])
    fell_back = {k: sum(r["fit"] == "repair" for r in rep.values()) for k, rep in (("few", few), ("many", many))}
    assert fell_back["few"] >= len(few) / 3 and fell_back["many"] < fell_back["few"], fell_back


def test_channels_chosen_for_the_refit_keep_more_of_the_base_than_l1(iter01, images):
    """The lsq criterion keeps the channels the others cannot predict: after the same refit, the copy's class
    scores are closer to the base's on held images than with L1's choice, at the same ratios."""
    from lipslib.recovery.lsq import LeastSquaresCriterion, channel_criterion

    found = {}
    lsq = channel_criterion("lsq", iter01, images["calibrate"], found)
    assert isinstance(lsq, LeastSquaresCriterion) and channel_criterion("l1", iter01, None, {}) == "l1"
    ratios = {name: 0.3 for name in default_targets(iter01)}
    copies = {
        c: engine.prune(iter01, ratios, criterion=crit, log=False, track=True)
        for c, crit in (("l1", "l1"), ("lsq", lsq))
    }
    assert engine.conv_shapes(copies["l1"].model) != engine.conv_shapes(iter01)
    gap = {}
    for c, res in copies.items():
        reconstruct(res, iter01, images["calibrate"], gram_cache=found)
        gap[c] = _head_gap(res.model, iter01, images["held"])
    assert gap["lsq"] < 0.9 * gap["l1"], gap
    with pytest.raises(LipsError, match="calibration images"):
        engine.prune(iter01, ratios, criterion="lsq")


def test_greedy_channel_choice_keeps_one_of_two_copies(iter01, coco128):
    """Two exact copies of one channel each predict the other: `lsq`, scoring each with the other present, finds
    both free to remove; the greedy choice removes one, rescores, and keeps the other."""
    from lipslib.datasets import calibration_images
    from lipslib.pruning.engine import prune
    from lipslib.recovery.lsq import _places, channel_criterion

    base = copy.deepcopy(iter01)
    layer = "model.1.conv"
    conv = base.get_submodule(layer)
    with torch.no_grad():
        conv.weight[1] = conv.weight[0]
        conv.bias[1] = conv.bias[0]
    images = calibration_images(coco128, "train", 16, 160)
    found: dict = {}
    ratio = {layer: 2.5 / conv.out_channels}  # two channels go
    kept = {}
    for name in ("lsq", "lsq_greedy"):
        criterion = channel_criterion(name, base, images, found)
        res = prune(base, ratio, criterion=criterion, log=False, track=True)
        rows, _ = _places(res.origin[f"{layer}.weight"], conv.weight.shape)
        kept[name] = {int(r) for r in rows}
        assert len(kept[name]) == conv.out_channels - 2
    assert len({0, 1} & kept["lsq_greedy"]) == 1, kept["lsq_greedy"]
    assert not {0, 1} & kept["lsq"]  # the failure the greedy choice is for


def test_a_refit_of_an_unpruned_model_changes_nothing(iter01, coco128):
    from lipslib.datasets import calibration_images
    from lipslib.recovery.lsq import refit_sequential

    images = calibration_images(coco128, "train", 4, 160)
    for refit in (lambda r: reconstruct(r, iter01, images), lambda r: refit_sequential(r, iter01, images)):
        res = engine.prune(iter01, {"model.1.conv": 0.0}, log=False, track=True)
        assert refit(res) == {}  # no conv lost an input: nothing to fit
        assert all(torch.equal(a, b) for a, b in zip(res.model.state_dict().values(), iter01.state_dict().values()))


def test_search_and_greedy_refuse_bad_values_in_one_line(iter01):
    from lipslib.pipeline.search import allocation_search, candidates

    with pytest.raises(LipsError, match="test reports and chooses nothing"):
        allocation_search(iter01, {"model.1.conv": 1.0}, 3.4, "coco_val2193.yaml", select="test")
    with pytest.raises(LipsError, match="must be ≥ 0"):
        candidates({"a": 1.0}, draws=-1)
    with pytest.raises(LipsError, match="criterion lsq_greedy needs calibration images"):
        engine.prune(iter01, {"model.1.conv": 0.2}, criterion="lsq_greedy")


def test_the_allocation_search_scores_on_the_selection_split_only(iter01, monkeypatch):
    import lipslib.pruning.baselines as baselines
    import lipslib.train.validator as validator
    from lipslib.pipeline.search import allocation_search

    splits = []
    monkeypatch.setattr(baselines, "at_gflops", lambda *a, **k: {"model": iter01, "ratios": {}, "gflops": 4.0})
    monkeypatch.setattr(validator, "evaluate", lambda *a, split, **k: splits.append(split) or {"map50_95": 0.1})
    importance = dict.fromkeys(default_targets(iter01), 0.5)
    found = allocation_search(iter01, importance, 3.4, "coco_val2193.yaml", draws=2, progress=False)
    assert len(found["tried"]) == 7 and set(splits) == {"val"} and found["split"] == "val"
