"""One default config (lipslib/cfg/default.yaml): every function, dataclass and CLI default that stands for a config
key has the config's value; params.yaml holds only profiles; --set keys mean the same in every command."""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest
import yaml
from conftest import ROOT

from lipslib.cfg import DEFAULT_FILE, default, defaults, load_params
from lipslib.errors import LipsError

# (module:callable, parameter, config key): a literal default a user meets in the API
FUNCTION_DEFAULTS = [
    ("lipslib.sensitivity:run_sensitivity", "ratio", "sensitivity.ratio"),
    ("lipslib.sensitivity:run_sensitivity", "batch", "sensitivity.batch"),
    ("lipslib.sensitivity:run_sensitivity", "split", "sensitivity.split"),
    ("lipslib.sensitivity:run_sensitivity", "mode", "sensitivity.mode"),
    ("lipslib.sensitivity:run_sensitivity", "layers", "sensitivity.layers"),
    ("lipslib.sensitivity:run_sensitivity", "workers", "sensitivity.workers"),
    ("lipslib.sensitivity:run_sensitivity", "memo_gib", "sensitivity.memo_gib"),
    ("lipslib.sensitivity:run_sensitivity", "imgsz", "imgsz"),
    ("lipslib.sensitivity:run_sensitivity", "criterion", "optimize.criterion"),
    ("lipslib.sensitivity:run_sensitivity", "threads", "threads"),
    ("lipslib.train.trainer:finetune", "recipe", "finetune.recipe"),
    ("lipslib.train.trainer:finetune", "distill", "recover.distill"),
    ("lipslib.train.trainer:finetune", "distill_weight", "recover.distill_weight"),
    ("lipslib.train.trainer:finetune", "threads", "threads"),
    ("lipslib.train.validator:evaluate", "imgsz", "imgsz"),
    ("lipslib.train.validator:evaluate", "threads", "threads"),
    ("lipslib.datasets:calibration_images", "n", "recover.images"),
    ("lipslib.pruning.engine:prune", "criterion", "optimize.criterion"),
    ("lipslib.pruning.engine:prune", "round_to", "schedule.round_to"),
    ("lipslib.pruning.baselines:at_gflops", "spread", "schedule.spread"),
    ("lipslib.pruning.baselines:at_gflops", "r_max", "schedule.r_max"),
    ("lipslib.pruning.baselines:at_gflops", "criterion", "optimize.criterion"),
    ("lipslib.pruning.baselines:at_gflops", "round_to", "schedule.round_to"),
    ("lipslib.schedule:initial_schedule", "kind", "schedule.initial"),
    ("lipslib.schedule:initial_schedule", "ratio", "schedule.initial_ratio"),
    ("lipslib.schedule:initial_schedule", "spread", "schedule.spread"),
    ("lipslib.schedule:initial_schedule", "r_min", "schedule.r_min"),
    ("lipslib.schedule:initial_schedule", "r_max", "schedule.r_max"),
    ("lipslib.recovery.lsq:reconstruct", "ridge", "recover.ridge"),
    ("lipslib.pipeline.video:compare_video", "frame_step", "video.frame_step"),
    ("lipslib.pipeline.video:compare_video", "max_frames", "video.max_frames"),
    ("lipslib.pruning.latency:time_models", "runtime", "latency.runtime"),
    ("lipslib.pruning.latency:time_models", "imgsz", "latency.imgsz"),
    ("lipslib.pruning.latency:time_models", "threads", "latency.threads"),
    ("lipslib.pruning.latency:time_models", "runs", "latency.runs"),
    ("lipslib.pipeline.benchmark:run_benchmark", "imgsz", "imgsz"),
    ("lipslib.pipeline.benchmark:run_benchmark", "latency_imgsz", "latency.imgsz"),
    ("lipslib.pipeline.benchmark:run_benchmark", "runs", "latency.runs"),
    ("lipslib.pipeline.benchmark:run_benchmark", "threads", "latency.threads"),
]

# (module:dataclass, {field: config key}): settings objects built without arguments
DATACLASS_DEFAULTS = [
    ("lipslib.recovery:Recovery", {f: f"recover.{f}" for f in default("recover")}),
    ("lipslib.cfg.settings:LatencySettings", {f: f"latency.{f}" for f in default("latency")}),
    (
        "lipslib.cfg.settings:StartSettings",
        {
            "initial": "schedule.initial",
            "ratio": "schedule.initial_ratio",
            "start": "schedule.start",
            "spread": "schedule.spread",
        },
    ),
    (
        "lipslib.schedule:RuleParams",
        {
            k: f"schedule.{k}"
            for k in ("kappa_cost", "step_cost", "kappa_acc", "step_acc", "damping", "margin", "neutral_acc")
        },
    ),
    ("lipslib.schedule:Targets", {"cost_tol": "schedule.cost_tol"}),
]


def _load(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(
    "ref, param, key", FUNCTION_DEFAULTS, ids=[f"{r.split(':')[1]}-{p}" for r, p, _ in FUNCTION_DEFAULTS]
)
def test_a_function_default_is_the_configs(ref, param, key):
    signature = inspect.signature(_load(ref))
    assert param in signature.parameters, f"{ref} has no parameter {param}: update this table"
    assert signature.parameters[param].default == default(key), f"{ref}({param}=…) differs from {key}"


@pytest.mark.parametrize("ref, fields", DATACLASS_DEFAULTS, ids=[r.split(":")[1] for r, _ in DATACLASS_DEFAULTS])
def test_a_settings_default_is_the_configs(ref, fields):
    cls = _load(ref)
    declared = {f.name: f.default for f in dataclasses.fields(cls)}
    for name, key in fields.items():
        assert name in declared, f"{ref} has no field {name}: update this table"
        assert declared[name] == default(key), f"{ref}.{name} = {declared[name]!r} differs from {key}"


def test_run_sensitivity_recovers_as_the_config_says():
    from lipslib.recovery import Recovery
    from lipslib.sensitivity import run_sensitivity

    recovery = inspect.signature(run_sensitivity).parameters["recovery"].default
    assert default("sensitivity.recover") is True and recovery == Recovery.from_params(default("recover"))


def test_the_recipes_are_the_configs(yolo11n):
    from lipslib.train.trainer import recipe_for

    sized = {"epochs": default("finetune.epochs"), "batch": default("finetune.batch"), "imgsz": default("imgsz")}
    assert recipe_for(yolo11n, "auto") == {**default("recipes.paper"), **sized}  # yolo11n has BatchNorm
    assert recipe_for(yolo11n, "bn-free") == {**default("recipes.bn_free"), **sized}
    changed = {**default("recipes"), "paper": {**default("recipes.paper"), "lr0": 0.02}}  # a profile's own tables
    assert recipe_for(yolo11n, "paper", changed)["lr0"] == 0.02


def test_every_cli_flag_that_names_a_config_key_defaults_to_its_value():
    from lipslib.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))
    checked = 0
    for name, command in sub.choices.items():
        for action in command._actions:
            help_text = action.help or ""
            if "default: " not in help_text or " = " not in help_text.split("default: ", 1)[1]:
                continue
            key = help_text.split("default: ", 1)[1].split(" = ", 1)[0]
            assert action.default == default(key), f"lips {name} {action.option_strings[0]}: {key}"
            checked += 1
    assert checked >= 15, checked  # the flags that say where their default comes from


def test_params_yaml_holds_profiles_only_and_each_one_loads():
    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(doc) == {"profile", "profiles"}
    for profile in doc["profiles"]:
        params = load_params(ROOT / "params.yaml", profile)
        assert set(params) == set(defaults()) | {"profile"}
    assert load_params(None)["schedule"] == default("schedule")  # no params file: the defaults themselves


def test_the_default_config_is_commented_and_ships_with_the_package():
    text = DEFAULT_FILE.read_text()
    keys = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    commented = [line for line in keys if "#" in line]
    assert len(commented) >= 0.6 * len(keys), "most keys of default.yaml say what they mean"
    assert "cfg/*.yaml" in (ROOT / "pyproject.toml").read_text()  # package data: the config installs with lipslib


def test_unknown_keys_are_refused_with_a_suggestion_and_finetune_takes_ultralytics_arguments(tmp_path):
    with pytest.raises(LipsError, match="did you mean 'target_gflops'"):
        load_params(ROOT / "params.yaml", "smoke", {"schedule.target_gflop": 3.0})
    with pytest.raises(LipsError, match="unknown config key 'sensitivity.bach' \\(did you mean 'sensitivity.batch'"):
        default("sensitivity.bach")
    assert load_params(ROOT / "params.yaml", "smoke", {"finetune.seed": 3})["finetune"]["seed"] == 3  # Ultralytics'
    with pytest.raises(LipsError, match="unknown key 'finetune.sede'"):
        load_params(ROOT / "params.yaml", "smoke", {"finetune.sede": 3})
    old = tmp_path / "params.yaml"
    old.write_text("defaults: {imgsz: 320}\nprofiles: {a: {}}\n")
    with pytest.raises(LipsError, match="'defaults:' section is no longer read"):
        load_params(old, "a")
