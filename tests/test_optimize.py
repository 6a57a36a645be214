"""The LIPS loop on the smoke profile: artifacts, resume after a kill, refusal to mix parameters."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import ROOT

from lipslib.cfg import load_params
from lipslib.cfg.settings import LatencySettings, loop_settings
from lipslib.errors import LipsError
from lipslib.pipeline.loop import optimize

PARAMS = ROOT / "params.yaml"


def run_cli(out, *extra):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lipslib",
            "optimize",
            "--params",
            str(PARAMS),
            "--profile",
            "smoke",
            "--out",
            str(out),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def uninterrupted(assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    optimize(load_params(PARAMS, "smoke"), out, progress=False)
    return out


@pytest.mark.slow  # trains (the uninterrupted run)
def test_artifacts_of_a_run(uninterrupted):
    out = uninterrupted
    history = pd.read_csv(out / "history.csv")
    assert history.iteration.tolist() == [1, 2, 3]
    assert list(history.columns[:7]) == ["iteration", "gflops", "params", "map50_95", "map50", "gate", "step"]
    for k in (1, 2, 3):
        it = out / f"iter_{k:02d}"
        for rel in (
            "final/prune_spec.txt",
            "prune_directed_log.csv",
            "ft/finetune/weights/last_pruned_full.pt",
            "ft/finetune/args.yaml",
            "metrics.json",
        ):
            assert (it / rel).is_file(), it / rel
    inherited = [json.loads((out / f"iter_{k:02d}" / "metrics.json").read_text())["inherited"] for k in (1, 2, 3)]
    assert inherited[0] == 0.0 and min(inherited[1:]) > 0.9  # the smoke profile warm-starts
    best = json.loads((out / "best.json").read_text())
    assert (out / "best.pt").is_file() and (out / "layer_iteration.png").is_file()
    assert best["split_select"] == "val" and best["split_report"] == "test"
    target = load_params(PARAMS, "smoke")["schedule"]["target_gflops"]
    assert abs(best["gflops"] - target) / target < 0.02


@pytest.mark.slow  # trains
def test_kill_during_second_iteration_then_resume(uninterrupted, tmp_path):
    out = tmp_path / "runs"
    proc = run_cli(out)
    deadline = time.time() + 600
    while not (out / "iter_02" / "ft").exists():  # iteration 2 is fine-tuning
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads((out / "state.json").read_text())
    assert [d["iteration"] for d in state["done"]] == [1]
    first = (out / "iter_01" / "metrics.json").stat().st_mtime_ns

    proc = run_cli(out)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-2000:]
    assert (out / "iter_01" / "metrics.json").stat().st_mtime_ns == first  # not recomputed
    done = json.loads((out / "state.json").read_text())["done"]
    assert done[0]["seconds"] == state["done"][0]["seconds"] and all(d["seconds"] > 0 for d in done)  # wall times kept
    resumed, clean = pd.read_csv(out / "history.csv"), pd.read_csv(uninterrupted / "history.csv")
    pd.testing.assert_frame_equal(resumed, clean, check_exact=False, atol=1e-6)


@pytest.mark.slow  # needs the trained run
def test_other_parameters_are_refused(uninterrupted):
    params = load_params(PARAMS, "smoke", {"schedule.target_gflops": 3.9})
    with pytest.raises(LipsError, match="other parameters.*schedule"):
        optimize(params, uninterrupted, progress=False)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"schedule.target_gflops": 0}, "target_gflops must be > 0"),
        ({"schedule.r_min": 0.5, "schedule.r_max": 0.4}, "r_min"),
        ({"optimize.iterations": 0}, "iterations must be"),
        ({"schedule.target_gflops": 9.0}, "not below the base"),
    ],
)
def test_bad_params_before_any_compute(assets, override, message, tmp_path):
    params = load_params(PARAMS, "smoke", override)
    with pytest.raises(LipsError, match=message):
        optimize(params, tmp_path / "never", progress=False)
    assert not (tmp_path / "never" / "iter_01").exists()


def test_unknown_config_keys_get_a_suggestion():
    with pytest.raises(LipsError, match="did you mean 'target_gflops'"):
        load_params(PARAMS, "smoke", {"schedule.target_gflop": 3.0})
    with pytest.raises(LipsError, match="unknown profile"):
        load_params(PARAMS, "nope")


def test_loop_settings_parse_every_profile_into_typed_values():
    for profile in ("paper", "demo", "rehearsal", "smoke"):
        params = load_params(PARAMS, profile)
        cfg = loop_settings(params)
        s = params["schedule"]
        assert cfg.targets.cost == s["target_gflops"] and cfg.latency is None and cfg.cost_unit == "GFLOPs"
        assert cfg.rule.r_max == s["r_max"] and cfg.rule.neutral_acc == s["neutral_acc"]
        assert (cfg.start.ratio is None) == (s["initial_ratio"] == "auto")
        assert cfg.recovery.reconstruct == params["recover"]["reconstruct"]
        assert cfg.train == {k: v for k, v in params["finetune"].items() if k != "recipe"}
        assert cfg.distill_args()["teacher"] == str(params["base"])
    cfg = loop_settings(load_params(PARAMS, "smoke", {"schedule.target_ms": 20.0, "latency.runs": 3}))
    assert cfg.latency == LatencySettings("torch", 160, 1, 3) and cfg.cost_unit == "ms" and cfg.targets.cost == 20.0


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("schedule.target_gflops", "abc", "schedule.target_gflops must be a number, got 'abc'"),
        ("schedule.initial", "shaped", "schedule.initial must be one of uniform, importance"),
        ("schedule.start", 1.0, "schedule.start must be in [0, 1)"),
        ("optimize.best_cost_tol", "x", "optimize.best_cost_tol must be a number"),
        ("finetune.epochs", 0, "finetune.epochs must be an integer ≥ 1"),
    ],
)
def test_loop_settings_refuse_a_bad_value_naming_its_key(key, value, message):
    with pytest.raises(LipsError, match=re.escape(message)):
        loop_settings(load_params(PARAMS, "smoke", {key: value}))


def test_a_latency_target_checks_the_latency_settings():
    with pytest.raises(LipsError, match=re.escape("latency.runs (--runs) must be an integer ≥ 1")):
        loop_settings(load_params(PARAMS, "smoke", {"schedule.target_ms": 20.0, "latency.runs": 0}))
    with pytest.raises(LipsError, match="not below the base model's 4.240 GFLOPs"):
        loop_settings(load_params(PARAMS, "smoke", {"schedule.target_gflops": 5.0}), base_cost=4.24)
