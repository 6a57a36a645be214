"""The `lips` command as a user runs it: bad input → one line on stderr, exit 2, no traceback."""

import json
import os
import subprocess
import sys

import pytest


def lips(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lipslib", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=os.environ.copy(), timeout=600)  # fmt: skip


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
    proc = lips("prune", "--weights", "yolo11n.yaml", "--ratios", paper / "iter_01" / "prune_spec.txt",
                "--out", out, "--log", tmp_path / "log.csv")  # fmt: skip
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
    assert_one_line_error(lips("prune", "--weights", "yolo11n.yaml", "--ratios", spec, "--out", tmp_path / "o.pt"),
                          needle)  # fmt: skip
    assert not (tmp_path / "o.pt").exists()


def test_malformed_paper_spec(tmp_path):
    spec = tmp_path / "prune_spec.txt"
    spec.write_text("Especificações de poda aplicadas (layer_name: ratio):\nmodel.3.conv = 0.3\n")
    assert_one_line_error(lips("prune", "--weights", "yolo11n.yaml", "--ratios", spec, "--out", tmp_path / "o.pt"),
                          "prune_spec.txt:2")  # fmt: skip


def test_sensitivity_bad_ratio_is_one_line(assets, tmp_path):
    proc = lips("sensitivity", "--weights", "lips_iter24_best.pt", "--data", "coco128.yaml", "--ratio", "1.2",
                "--out", tmp_path)  # fmt: skip
    assert_one_line_error(proc, "outside (0, 1)")
