"""Latency as a cost: rounded widths, the per-block table against whole-model timing, a latency target
for the loop, bad values refused before any training."""

import json

import pytest
import torch.nn as nn
from conftest import ROOT

from lipslib.cfg import load_params
from lipslib.errors import LipsError
from lipslib.pruning.engine import conv_shapes, cost, load_model
from lipslib.pruning.latency import block_table, table_error
from lipslib.pruning.layers import default_targets

PARAMS = ROOT / "params.yaml"


@pytest.fixture(scope="module")
def iter01(assets):
    return load_model(assets / "weights" / "lips_iter01_best.pt")


@pytest.mark.parametrize("method", ["uniform", "shaped"])
def test_rounded_widths_meet_the_target(iter01, paper, method):
    from lipslib.pruning.baselines import at_gflops

    importance = json.loads((paper / "layer_importance.json").read_text())
    # 3.5: one uniform ratio moves same-width layers in lockstep, so a rounded uniform family has gaps
    # (on iter-01: 3.737 → 3.625 GFLOPs around 3.7, 3.496 → 3.18 around 3.4); 3.5 lies on a step of both
    res = at_gflops(method, iter01, 3.5, importance=importance, round_to=8)
    before, after = conv_shapes(iter01), conv_shapes(res["model"])
    for name in default_targets(iter01):
        kept = after[name][0]
        assert kept % 8 == 0 or kept == before[name][0], (name, before[name][0], kept)  # or left at its base width
    assert res["gflops"] == pytest.approx(3.5, rel=0.01)


def test_table_sum_agrees_with_whole_model_timing(tmp_path, yolo11n):
    """PyTorch on one thread at 320: measured here within 6 % (yolo11n) and 1 % (iter-24) on a quiet machine;
    the bound leaves room for a busy one, and a burst of load during one measurement gets two more tries (a
    table that is wrong, not noisy, misses all three)."""
    errors = []
    for _ in range(3):
        err = table_error({"yolo11n": yolo11n}, "torch", imgsz=320, threads=1, runs=15)
        errors.append(err["yolo11n"]["error"])
        if abs(errors[-1]) < 0.25:
            break
    assert abs(errors[-1]) < 0.25, errors
    first = block_table(yolo11n, "torch", imgsz=320, runs=3, cache=tmp_path / "c.json")
    again = block_table(yolo11n, "torch", imgsz=320, runs=3, cache=tmp_path / "c.json")
    assert len(again) == len(yolo11n.model) and not any(r["cached"] for r in first)
    assert all(r["cached"] and r["ms"] > 0 for r in again) and [r["ms"] for r in again] == [r["ms"] for r in first]


def test_block_times_are_reused_by_structure(iter01, tmp_path):
    """A copy that differs in one layer re-times only the blocks that layer changes."""
    from lipslib.pruning.engine import prune

    cache = tmp_path / "c.json"
    block_table(iter01, "torch", imgsz=128, runs=3, cache=cache)
    pruned = prune(iter01, {"model.17.conv": 0.5}, log=False).model
    rows = block_table(pruned, "torch", imgsz=128, runs=3, cache=cache)
    fresh = [r["block"] for r in rows if not r["cached"]]
    assert 17 in fresh and 0 not in fresh and len(fresh) < len(rows) // 2, fresh


def test_op_breakdown_splits_the_forward_and_sees_a_pruned_copys_convs_shrink(yolo11n):
    from lipslib.pruning.engine import prune
    from lipslib.pruning.latency import OP_KINDS, op_breakdown

    full = op_breakdown(yolo11n, imgsz=128, runs=3)
    assert set(full) == {*OP_KINDS, "other", "total"} and all(v >= 0 for v in full.values())
    assert full["total"] == pytest.approx(sum(v for k, v in full.items() if k != "total"))
    assert max(OP_KINDS, key=full.get) == "conv" and full["activation"] > 0 and full["memory"] > 0
    half = prune(yolo11n, {n: 0.5 for n in default_targets(yolo11n)}, log=False).model  # ~1/3 of the FLOPs
    assert op_breakdown(half, imgsz=128, runs=3)["conv"] < 0.9 * full["conv"]


def test_ops_only_with_pytorch(assets):
    from test_cli import assert_one_line_error, lips

    assert_one_line_error(lips("latency", "--weights", "yolo11n.yaml", "--runtime", "onnxruntime", "--ops"), "--ops")


@pytest.mark.parametrize(
    "override, message",
    [
        ({"schedule.round_to": 0}, "round_to must be an integer ≥ 1"),
        ({"schedule.target_ms": 0}, "target_ms must be > 0"),
        ({"schedule.target_ms": 1e6}, "not below the base model's"),
        ({"schedule.target_ms": 5.0, "latency.runtime": "tensorrt"}, "unknown runtime"),
    ],
)
def test_bad_values_are_refused_before_any_training(assets, override, message, tmp_path):
    from lipslib.pipeline.loop import optimize

    with pytest.raises(LipsError, match=message):
        optimize(load_params(PARAMS, "smoke", override), tmp_path / "never", progress=False)
    assert not (tmp_path / "never" / "iter_01").exists()


@pytest.mark.slow
def test_a_loop_with_a_latency_target(assets, tmp_path, iter01):
    """target_ms makes measured milliseconds the loop's cost (two iterations on the smoke profile)."""
    from lipslib.pipeline.loop import optimize
    from lipslib.pruning.costs import LatencyCost

    # the loop refuses a target at or above its own timing of the base: the quickest of three timings here, so
    # that a load spike during one of them (CI once timed 15.3 ms here and 8.0 ms in the loop) sets no target
    base_ms = min(LatencyCost(iter01, "torch", imgsz=160, threads=1, runs=5).reference["base_ms"] for _ in range(3))
    params = load_params(
        PARAMS,
        "smoke",
        {
            "schedule.target_ms": round(0.8 * base_ms, 3),
            "optimize.iterations": 2,
            "schedule.round_to": 8,
            "latency.imgsz": 160,
            "latency.runs": 5,
        },
    )
    res = optimize(params, tmp_path / "run", progress=False)
    best, state = res["best"], json.loads((tmp_path / "run" / "state.json").read_text())
    assert best["cost_unit"] == "ms" and state["cost"]["kind"] == "latency" and best["cost"] > 0
    assert res["history"].cost.notna().all() and (res["history"].cost < 2 * base_ms).all()
    tuned = load_model(best["stable_path"])
    widths = {n: m.out_channels for n, m in tuned.named_modules() if isinstance(m, nn.Conv2d)}
    before = {n: m.out_channels for n, m in iter01.named_modules() if isinstance(m, nn.Conv2d)}
    assert all(widths[n] % 8 == 0 or widths[n] == before[n] for n in default_targets(iter01))  # or uncut
    assert cost(tuned).gflops < cost(iter01).gflops


def test_a_rounded_cost_step_saves_what_it_would_unrounded(iter01, paper):
    """On iter-01 at an importance-shaped 0.2, the rule's cost step saves 0.023 GFLOPs unrounded and nothing
    with widths rounded to 8; the loop's guard lengthens it until the rounded copy saves as much."""
    from lipslib.pipeline.loop import cost_step
    from lipslib.pruning.costs import GflopsCost
    from lipslib.pruning.engine import prune
    from lipslib.schedule import RuleParams, Targets, initial_schedule, update

    imp = json.loads((paper / "layer_importance.json").read_text())
    imp = {k: imp.get(k, 0.0) for k in default_targets(iter01)}

    def gflops(r, round_to=8):
        return cost(prune(iter01, r, round_to=round_to, log=False).model, 320).gflops * 4

    r0 = initial_schedule(imp, "importance", 0.2, 0.2)
    now = gflops(r0)
    step, st = update(r0, imp, {"cost": now, "map50_95": 0.1}, Targets(0.97 * now, 0.2))
    unrounded = gflops(r0, None) - gflops(step, None)
    assert st["gate"] == "cost" and unrounded > 0 and now - gflops(step) < unrounded  # rounding ate the step
    guarded, factor = cost_step(iter01, r0, step, GflopsCost(), "l1", 8, RuleParams(), Targets(0.97 * now, 0.2))
    assert factor > 1 and now - gflops(guarded) >= unrounded - 1e-9


def test_an_auto_cost_step_lands_where_first_order_falls_short(iter01, paper):
    """First order overestimates a step's saving (a conv's FLOPs are the product of two widths that both
    shrink): on iter-01 from 3.90 GFLOPs the auto step for 3.0 lands at 3.21. The loop lengthens it."""
    from lipslib.pipeline.loop import cost_step
    from lipslib.pruning.costs import GflopsCost
    from lipslib.pruning.engine import prune
    from lipslib.schedule import RuleParams, Targets, initial_schedule, update

    imp = json.loads((paper / "layer_importance.json").read_text())
    imp = {k: imp.get(k, 0.0) for k in default_targets(iter01)}
    rule, target = RuleParams(kappa_cost=None, step_cost=0.01), Targets(3.0, 0.2, cost_tol=0.01)

    def gflops(r):
        return cost(prune(iter01, r, log=False).model, 320).gflops * 4

    r0 = initial_schedule(imp, "importance", 0.1, 0.2)
    step, _ = update(
        r0, imp, {"cost": gflops(r0), "map50_95": 0.1}, target, None, rule, GflopsCost().layer_costs(iter01)
    )
    assert gflops(step) > 3.0 * 1.01  # first order fell short
    landed, factor = cost_step(iter01, r0, step, GflopsCost(), "l1", None, rule, target)
    assert factor > 1 and 0.95 * 3.0 < gflops(landed) <= 3.0 * 1.01


def test_most_saved_takes_the_layers_that_save_most_per_unit_spent():
    from lipslib.pruning.costs import most_saved

    ms = {"a": 4.0, "b": 1.0, "c": -0.5}  # c: measured slower when pruned
    gf = {"a": 1.0, "b": 1.0, "c": 0.5}
    assert most_saved(ms, gf, 0.5) == pytest.approx(2.0)  # half of a: 4 ms per GFLOP
    assert most_saved(ms, gf, 1.4, r_max=0.9) == pytest.approx(0.9 * 4 + 0.5 * 1)  # a capped, then b
    assert most_saved(ms, gf, 10.0) == pytest.approx(0.9 * 5)  # c never helps
