"""The `lips` command as a user runs it: bad input → one line on stderr, exit 2, no traceback."""

import argparse
import json
import os
import subprocess
import sys

import pytest
import yaml


def lips(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "lipslib", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=os.environ.copy(),
        timeout=600,
    )


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lips ") and ": error: " in last
    for needle in needles:
        assert needle in last


def test_info_json_keys(assets):
    proc = lips("info", "lips_iter24_best.pt", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)  # stdout holds the JSON alone
    assert info["gflops"] == pytest.approx(4.54, abs=0.005) and info["params"] == 1928761
    assert info["convs"]["model.0.conv"] == [13, 3]


def test_prune_paper_spec_then_info(paper, tmp_path):
    out = tmp_path / "p.pt"
    proc = lips(
        "prune",
        "--weights",
        "yolo11n.yaml",
        "--ratios",
        paper / "iter_01" / "prune_spec.txt",
        "--out",
        out,
        "--log",
        tmp_path / "log.csv",
    )
    assert proc.returncode == 0, proc.stderr
    assert "4.241 GFLOPs" in proc.stdout and out.is_file() and (tmp_path / "log.csv").is_file()
    info = json.loads(lips("info", out, "--json").stdout)
    assert info["gflops"] == pytest.approx(4.2408, abs=1e-3)


def test_missing_weights(assets, tmp_path):
    assert_one_line_error(lips("info", "nope.pt", cwd=tmp_path), "nope.pt", "LIPS_ASSETS")


def test_corrupt_checkpoint(assets, tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes((assets / "weights" / "lips_iter01_best.pt").read_bytes()[:4096])
    assert_one_line_error(lips("info", bad), "could not read checkpoint")


@pytest.mark.parametrize(
    "content, needle",
    [
        ("model.99.conv: 0.3\n", "unknown layer 'model.99.conv'"),
        ("model.3.conv: 1.0\n", "outside [0, 1)"),
        ("model.3.conv: -0.1\n", "outside [0, 1)"),
        ("[1, 2]\n", "expected a mapping"),
        ("model.3.conv: [0.1\n", "not valid YAML"),
    ],
)
def test_bad_ratio_specs(tmp_path, content, needle):
    spec = tmp_path / "spec.yaml"
    spec.write_text(content)
    assert_one_line_error(
        lips("prune", "--weights", "yolo11n.yaml", "--ratios", spec, "--out", tmp_path / "o.pt"), needle
    )
    assert not (tmp_path / "o.pt").exists()


def test_malformed_paper_spec(tmp_path):
    spec = tmp_path / "prune_spec.txt"
    spec.write_text("Especificações de poda aplicadas (layer_name: ratio):\nmodel.3.conv = 0.3\n")
    assert_one_line_error(
        lips("prune", "--weights", "yolo11n.yaml", "--ratios", spec, "--out", tmp_path / "o.pt"), "prune_spec.txt:2"
    )


def test_sensitivity_bad_ratio_is_one_line(assets, tmp_path):
    proc = lips(
        "sensitivity", "--weights", "lips_iter24_best.pt", "--data", "coco128.yaml", "--ratio", "1.2", "--out", tmp_path
    )
    assert_one_line_error(proc, "outside (0, 1)")


def test_unwritable_output_is_one_line_before_any_work(assets):
    proc = lips("prune", "--weights", "lips_iter01_best.pt", "--ratios", "0.1", "--out", "/proc/nope/x.pt")
    assert_one_line_error(proc, "cannot write /proc/nope/x.pt")
    assert_one_line_error(
        lips("val", "--weights", "lips_iter24_best.pt", "--data", "coco128.yaml", "--out", "/proc/nope/r.json"),
        "cannot write /proc/nope/r.json",
    )


def test_dataset_whose_folders_are_missing_names_them(tmp_path):
    (tmp_path / "bad.yaml").write_text("train: images/nope\nval: images/nope\nnames:\n  0: person\n")
    proc = lips("val", "--weights", "yolo11n.yaml", "--data", tmp_path / "bad.yaml")
    assert_one_line_error(proc, f"missing path '{tmp_path / 'images' / 'nope'}'")


def test_unknown_criterion_is_refused_before_anything_is_read(tmp_path):
    # the data does not exist either: a check made after reading it would complain about the data instead
    proc = lips(
        "sensitivity",
        "--weights",
        "yolo11n.yaml",
        "--data",
        tmp_path / "none.yaml",
        "--criterion",
        "taylor",
        "--out",
        tmp_path / "s",
    )
    assert_one_line_error(proc, "argument --criterion: invalid choice: 'taylor'")


def test_finetune_arguments_given_twice(assets, tmp_path):
    proc = lips(
        "finetune",
        "--weights",
        "lips_iter01_best.pt",
        "--data",
        "coco128.yaml",
        "--epochs",
        "1",
        "--set",
        "finetune.epochs=2",
        "imgsz=96",
        "--out",
        tmp_path / "ft",
    )
    assert_one_line_error(proc, "finetune.epochs given both")
    assert not (tmp_path / "ft").exists()


@pytest.mark.slow
def test_finetune_takes_set_values_on_the_coco_layout(assets, tmp_path):
    """--set config keys reach Ultralytics (no duplicate-keyword crash), on coco_val2193's ./ split lists."""
    pruned = tmp_path / "p.pt"
    assert lips("prune", "--weights", "lips_iter01_best.pt", "--ratios", "0.1", "--out", pruned).returncode == 0
    proc = lips(
        "finetune",
        "--weights",
        pruned,
        "--data",
        "coco_val2193.yaml",
        "--set",
        "finetune.epochs=1",
        "imgsz=96",
        "finetune.fraction=0.03",
        "device=cpu",
        "--json",
        "--out",
        tmp_path / "ft",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    args = yaml.safe_load((tmp_path / "ft" / "args.yaml").read_text())
    assert (args["epochs"], args["imgsz"], args["fraction"]) == (1, 96, 0.03)
    assert json.loads(proc.stdout)["map50_95"] is not None


def test_dataset_with_other_classes_is_refused(assets, tmp_path):
    root = assets / "datasets" / "coco128"
    (tmp_path / "one.yaml").write_text(
        f"train: {root}/images/train2017\nval: {root}/images/val2017\nnames:\n  0: person\n"
    )
    proc = lips(
        "finetune",
        "--weights",
        "lips_iter01_best.pt",
        "--data",
        tmp_path / "one.yaml",
        "--epochs",
        "1",
        "--out",
        tmp_path / "ft",
    )
    assert_one_line_error(proc, "predicts 80 classes", "has 1")


@pytest.mark.slow
def test_val_on_the_coco_layout_agrees_with_plain_ultralytics(assets):
    from ultralytics import YOLO

    data = assets / "datasets" / "coco_val2193" / "coco_val2193.yaml"
    weights = assets / "weights" / "lips_iter24_best.pt"
    proc = lips("val", "--weights", weights, "--data", data, "--imgsz", "320", "--split", "val", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    plain = YOLO(str(weights)).val(data=str(data), imgsz=320, split="val", batch=16, plots=False, verbose=False)
    rec = json.loads(proc.stdout)
    assert rec["images"] == 400 and abs(rec["map50_95"] - plain.box.map) < 1e-3, (rec["map50_95"], plain.box.map)


def test_a_device_that_is_not_there_is_one_line(assets, tmp_path):
    proc = lips(
        "compare-video",
        "--video",
        "crosswalk.mp4",
        "--model_orig",
        "lips_iter01_best.pt",
        "--model_pruned",
        "lips_iter24_best.pt",
        "--device",
        "7",
        "--max_frames",
        "2",
        "--save",
        tmp_path / "v.mp4",
    )
    assert_one_line_error(proc, "compare-video", "7")
    assert not (tmp_path / "v.mp4").exists()


@pytest.mark.parametrize(
    "args, needle", [(("--images", "0"), "at least one image"), (("--imgsz", "50"), "multiple of 32")]
)
def test_inflate_bad_calibration(assets, tmp_path, args, needle):
    proc = lips(
        "inflate", "--weights", "lips_iter01_best.pt", "--data", "coco128.yaml", *args, "--out", tmp_path / "x" / "y.pt"
    )
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "x").exists()  # nothing created


@pytest.mark.slow
def test_a_training_error_is_one_line_and_leaves_no_traceback(assets, tmp_path):
    """Ultralytics refuses a last batch of one image with a ValueError from inside training."""
    pruned = tmp_path / "p.pt"
    assert lips("prune", "--weights", "lips_iter01_best.pt", "--ratios", "0.1", "--out", pruned).returncode == 0
    proc = lips(
        "finetune",
        "--weights",
        pruned,
        "--data",
        "coco128.yaml",
        "--epochs",
        "1",
        "--imgsz",
        "32",
        "--batch",
        "4",
        "--set",
        "finetune.fraction=0.1",
        "device=cpu",
        "--out",
        tmp_path / "ft",
    )
    assert_one_line_error(proc, "fine-tuning", "failed", "final batch=1")
    assert not (tmp_path / "ft").exists()  # the run folder it made is gone


@pytest.mark.parametrize(
    "script,args",
    [
        ("bench_baselines.py", ["--work"]),
        ("bench_latency.py", ["--work"]),
        ("bench_sensitivity.py", []),
        ("bench_allocation.py", ["--work"]),
    ],
)
def test_benchmark_scripts_say_what_is_missing_in_one_line(script, args, tmp_path):
    from conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k != "LIPS_ASSETS"}
    proc = subprocess.run(
        [
            sys.executable,
            f"benchmarks/{script}",
            *args,
            *([str(tmp_path / "w")] if args else []),
            "--out",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{script}: error: ") and "LIPS_ASSETS" in last


@pytest.mark.parametrize(
    "script,flag,value,message",
    [
        ("bench_baselines.py", "--seeds", "0,1,1", "give distinct non-negative integers, e.g. --seeds 0,1,2"),
        (
            "bench_allocation.py",
            "--spreads",
            "0.2,0.2",
            "give distinct numbers, comma-separated, e.g. --spreads 0.2,0.4",
        ),
        ("bench_baselines.py", "--budgets", "3.7,x", "give distinct numbers, comma-separated, e.g. --budgets 3.7,3.4"),
    ],
)
def test_benchmark_scripts_refuse_bad_lists_before_any_work(script, flag, value, message, tmp_path):
    from conftest import ROOT

    proc = subprocess.run(
        [
            sys.executable,
            f"benchmarks/{script}",
            flag,
            value,
            "--work",
            str(tmp_path / "w"),
            "--out",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == f"{script}: error: {flag} {value!r}: {message}"
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (
            ["optimize", "--profile", "smoke", "--set", "schedule.target_gflops=abc"],
            "schedule.target_gflops must be a number",
        ),
        (
            ["prune", "--weights", "yolo11n.yaml", "--ratios", "0.1", "--round-to", "0"],
            "round_to must be an integer ≥ 1",
        ),
        (["val", "--weights", "yolo11n.yaml", "--data", "coco128.yaml", "--imgsz", "33"], "must be a multiple of 32"),
    ],
)
def test_bad_values_stop_before_any_compute(assets, tmp_path, args, needle):
    from conftest import ROOT

    assert_one_line_error(lips(*args, "--out", tmp_path / "out", cwd=ROOT), needle)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------ one grammar for every command (the parser alone: nothing runs)
def subcommands() -> dict:
    from lipslib.cli import build_parser

    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def parse(*argv) -> dict:
    from lipslib.cli import build_parser

    return vars(build_parser().parse_args([str(a) for a in argv]))


def parse_error(capsys, *argv) -> str:
    """argparse's refusal of argv: exit 2, and its last stderr line (the one that says why)."""
    with pytest.raises(SystemExit) as e:
        parse(*argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_every_long_option_with_an_underscore_has_a_hyphenated_twin():
    for name, sub in subcommands().items():
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and "_" in option:
                    hyphenated = option.replace("_", "-")
                    assert hyphenated in action.option_strings, f"lips {name} {option}: no {hyphenated}"
                    assert action.option_strings[0] == hyphenated, f"lips {name}: {hyphenated} first (help, errors)"


def test_the_seeds_compare_video_spellings_parse_as_the_hyphenated_ones():
    common = ("compare-video", "--video", "v.mp4")
    seed = parse(
        *common,
        *("--model_orig", "a.pt", "--model_pruned", "b.pt", "--args_yaml", "args.yaml"),
        *("--gflops_orig", "6.5", "--gflops_pruned", "3.7", "--frame_step", "5", "--max_frames", "9"),
    )
    hyphens = parse(
        *common,
        *("--model-orig", "a.pt", "--model-pruned", "b.pt", "--args-yaml", "args.yaml"),
        *("--gflops-orig", "6.5", "--gflops-pruned", "3.7", "--frame-step", "5", "--max-frames", "9"),
    )
    assert seed == hyphens
    assert (seed["model_orig"], seed["frame_step"], seed["max_frames"], seed["gflops_pruned"]) == ("a.pt", 5, 9, 3.7)


def test_comparison_py_keeps_the_authors_flags():
    from conftest import ROOT

    run = [sys.executable, "comparison.py"]
    helped = subprocess.run([*run, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert helped.returncode == 0 and "--model_orig" in helped.stdout and "--frame_step" in helped.stdout
    proc = subprocess.run(
        [*run, "--video", "v.mp4", "--model_orig", "a.pt", "--frame_step", "5"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert_one_line_error(proc, "--model-pruned/--model_pruned")  # refused by the parser, before any work


def test_weights_is_the_flag_everywhere():
    for name, sub in subcommands().items():
        for action in sub._actions:
            if action.dest == "weights" and action.option_strings:
                assert action.option_strings[0] == "--weights", f"lips {name}: {action.option_strings}"
    assert {n for n, sub in subcommands().items() if any(a.dest == "weights" for a in sub._actions)} == {
        "info",
        "prune",
        "inflate",
        "latency",
        "finetune",
        "val",
        "sensitivity",
        "benchmark",
        "export",
        "align",
    }


def test_info_takes_weights_as_a_flag_or_positionally(capsys):
    from lipslib.cli import main

    assert parse("info", "a.pt") == parse("info", "--weights", "a.pt")
    assert parse("info", "--json", "a.pt") == parse("info", "--weights", "a.pt", "--json")
    assert parse("info", "--weights", "a.pt", "--imgsz", "320")["weights"] == "a.pt"
    assert "not allowed with" in parse_error(capsys, "info", "a.pt", "--weights", "b.pt")
    assert main(["info"]) == 2  # neither: one line, before anything is imported or read
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lips info: error: which checkpoint? give --weights")


def test_benchmark_model_is_the_deprecated_spelling_of_weights(capsys):
    new = parse("benchmark", "--weights", "a=x.pt", "--weights", "y.pt", "--data", "d.yaml")
    assert capsys.readouterr().err == ""
    old = parse("benchmark", "--model", "a=x.pt", "--model", "y.pt", "--data", "d.yaml")
    assert capsys.readouterr().err.count("--model is deprecated") == 1  # once, however often it is given
    assert old == new and new["weights"] == [("a", "x.pt"), ("y", "y.pt")]


@pytest.mark.parametrize(
    "given, pair",
    [
        ("x.pt", ("x", "x.pt")),
        ("base=yolo11n.yaml", ("base", "yolo11n.yaml")),
        ("runs/lr=0.01/weights/best.pt", ("best", "runs/lr=0.01/weights/best.pt")),  # a = inside a path
        ("b=runs/lr=0.01/best.pt", ("b", "runs/lr=0.01/best.pt")),
    ],
)
def test_latency_and_benchmark_label_models_alike(given, pair):
    assert parse("latency", "--weights", given)["weights"] == [pair]
    assert parse("benchmark", "--weights", given, "--data", "d.yaml")["weights"] == [pair]


@pytest.mark.parametrize("bad", ["=x.pt", "a=", ""])
def test_an_unreadable_label_is_argparses_one_line(capsys, bad):
    assert "argument --weights: expected [LABEL=]WEIGHTS" in parse_error(capsys, "latency", "--weights", bad)


def test_two_models_under_one_label_are_refused_before_any_import(capsys):
    from lipslib.cli import main

    assert main(["latency", "--weights", "runs/a/best.pt", "--weights", "runs/b/best.pt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "two models labelled 'best'" in err[0]


@pytest.mark.parametrize(
    "argv, flag, constant",
    [
        (["sensitivity", "--weights", "w", "--data", "d", "--out", "o", "--mode"], "--mode", "SENSITIVITY_MODES"),
        (
            ["sensitivity", "--weights", "w", "--data", "d", "--out", "o", "--criterion"],
            "--criterion",
            "CRITERION_NAMES",
        ),
        (["prune", "--weights", "w", "--ratios", "0.1", "--out", "o", "--criterion"], "--criterion", "CRITERION_NAMES"),
        (["finetune", "--weights", "w", "--data", "d", "--out", "o", "--recipe"], "--recipe", "RECIPES"),
        (["finetune", "--weights", "w", "--data", "d", "--out", "o", "--distill"], "--distill", "DISTILL_MODES"),
        (["latency", "--weights", "w", "--runtime"], "--runtime", "RUNTIMES"),
        (["sweep", "--targets", "3.7", "--executor"], "--executor", "EXECUTORS"),
    ],
)
def test_a_choice_outside_the_constant_is_argparses_one_line(capsys, argv, flag, constant):
    import lipslib.cfg

    allowed = getattr(lipslib.cfg, constant)
    assert parse(*argv, allowed[-1])[flag.lstrip("-")] == allowed[-1]
    last = parse_error(capsys, *argv, "bogus")
    assert last.startswith(f"lips {argv[0]}: error: argument {flag}: invalid choice: 'bogus'")
    assert all(repr(choice) in last for choice in allowed)


def test_notebook_names_are_the_stages(capsys):
    from lipslib.pipeline.notebooks import NOTEBOOKS

    assert parse("notebook", NOTEBOOKS[0])["name"] == NOTEBOOKS[0]
    assert "invalid choice: '06_nope'" in parse_error(capsys, "notebook", "06_nope")


# (argv up to the flag's command, dest, config key)
FROM_CONFIG = [
    (["sensitivity", "--weights", "w", "--data", "d", "--out", "o"], "batch", "sensitivity.batch"),
    (["sensitivity", "--weights", "w", "--data", "d", "--out", "o"], "ratio", "sensitivity.ratio"),
    (["sensitivity", "--weights", "w", "--data", "d", "--out", "o"], "mode", "sensitivity.mode"),
    (["sensitivity", "--weights", "w", "--data", "d", "--out", "o"], "criterion", "optimize.criterion"),
    (["sensitivity", "--weights", "w", "--data", "d", "--out", "o"], "images", "recover.images"),
    (["sensitivity", "--weights", "w", "--data", "d", "--out", "o"], "imgsz", "imgsz"),
    (["sensitivity", "--weights", "w", "--data", "d", "--out", "o"], "recover", "sensitivity.recover"),
    (["prune", "--weights", "w", "--ratios", "0.1", "--out", "o"], "ridge", "recover.ridge"),
    (["prune", "--weights", "w", "--ratios", "0.1", "--out", "o"], "images", "recover.images"),
    (["latency", "--weights", "w"], "runtime", "latency.runtime"),
    (["latency", "--weights", "w"], "runs", "latency.runs"),
    (["benchmark", "--weights", "w", "--data", "d"], "latency_imgsz", "latency.imgsz"),
    (["compare-video", "--video", "v", "--model-orig", "a", "--model-pruned", "b"], "frame_step", "video.frame_step"),
]


@pytest.mark.parametrize("argv, dest, key", FROM_CONFIG, ids=[f"{a[0]}-{d}" for a, d, _ in FROM_CONFIG])
def test_defaults_are_the_configs_and_say_so(argv, dest, key):
    from lipslib.cfg import default

    assert parse(*argv)[dest] == default(key)
    sub = subcommands()[argv[0]]
    action = next(a for a in sub._actions if a.dest == dest)
    assert f"{key} = {default(key)}" in action.help


def test_finetune_set_takes_config_keys_and_refuses_what_it_does_not_read():
    import lipslib.cli as cli

    a = argparse.Namespace(
        command="finetune",
        set=["finetune.seed=3", "recover.distill=outputs"],
        epochs=2,
        imgsz=None,
        batch=None,
        device=None,
        recipe=None,
        distill=None,
        distill_weight=None,
    )
    cfg = cli._config(a)
    assert (cfg["finetune"]["seed"], cfg["finetune"]["epochs"], cfg["recover"]["distill"]) == (3, 2, "outputs")
    proc = lips("finetune", "--weights", "w.pt", "--data", "d.yaml", "--out", "o", "--set", "schedule.target_gflops=3")
    assert_one_line_error(proc, "does not read it", "finetune.*")
    proc = lips(
        "finetune", "--weights", "w.pt", "--data", "d.yaml", "--out", "o", "--epochs", "2", "--set", "finetune.epochs=3"
    )
    assert_one_line_error(proc, "given both as --epochs and in --set")


def documented_command_lines() -> list[tuple[str, list[str]]]:
    """Every `lips …` line in a code block of the README and docs/*.md (continuation lines joined), as argv."""
    import re
    import shlex

    from conftest import ROOT

    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        blocks = re.findall(r"^```[a-z]*\n(.*?)^```", path.read_text(), re.MULTILINE | re.DOTALL)
        for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
            if line.strip().startswith("lips "):
                found.append((f"{path.name}: {line.strip()}", shlex.split(line, comments=True)[1:]))
    return found


def test_the_command_lines_in_the_docs_parse(capsys):
    lines = documented_command_lines()
    assert any(where.startswith("README.md: lips info --weights") for where, _ in lines)
    for where, argv in lines:
        if argv != ["--help"]:
            try:
                parse(*argv)
            except SystemExit:
                pytest.fail(f"{where}\n  {capsys.readouterr().err.strip().splitlines()[-1]}")


def test_latency_with_no_runs_is_one_line_before_any_timing(assets):
    proc = lips("latency", "--weights", "lips_iter01_best.pt", "--runs", "0")
    assert_one_line_error(proc, "latency.runs (--runs) must be an integer ≥ 1")


def test_a_bad_notebook_value_stops_before_the_notebook_runs(tmp_path):
    proc = lips("notebook", "01_sensitivity", "--profile", "smoke", "--set", "imgsz=-5", "--reports-dir", tmp_path)
    assert_one_line_error(proc, "imgsz must be a multiple of 32", "got -5")
    assert not (tmp_path / "notebooks" / "01_sensitivity.ipynb").exists()  # papermill never started
    proc = lips("stage-params", "--profile", "smoke", "--set", "sensitivity.ratio=1.5", "--out", tmp_path / "p")
    assert_one_line_error(proc, "sensitivity.ratio must be a number in (0, 1), got 1.5")


def test_a_reader_that_stops_early_is_no_error(assets):
    """`lips info … | head -1`: the closed pipe ends the command quietly, exit 0. `true` reads nothing and exits
    before lips has started, so every write meets the closed pipe."""

    def piped(reader):
        command = f"{sys.executable} -m lipslib info --weights lips_iter01_best.pt | {reader}; exit ${{PIPESTATUS[0]}}"
        return subprocess.run(
            command, shell=True, executable="/bin/bash", capture_output=True, text=True, env=os.environ.copy()
        )

    proc = piped("true")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    proc = piped("head -1")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("lips_iter01_best.pt: 4.241 GFLOPs") and len(proc.stdout.splitlines()) == 1
