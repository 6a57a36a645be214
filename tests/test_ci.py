"""CI without the offline assets fails in one line instead of skipping half the suite and going green."""

import os
import shutil
import subprocess
import sys

from conftest import ROOT


def without_assets(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("LIPS_ASSETS", "CI")}
    return env | {"LIPS_ASSETS": str(tmp_path / "no-assets")} | extra


def test_ci_entry_point_without_assets_is_one_line(tmp_path):
    checkout = tmp_path / "clone"  # a clone with no ../shared/assets beside it
    (checkout / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", checkout / ".ci" / "run")
    env = {k: v for k, v in os.environ.items() if k != "LIPS_ASSETS"} | {"CI": "true"}
    proc = subprocess.run(["bash", str(checkout / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "assets not found" in proc.stderr, proc.stderr


def test_the_suite_in_ci_without_assets_fails_in_one_line(tmp_path):
    test = str(ROOT / "tests" / "test_spec.py")  # one test of it needs the authors' logs
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test]
    ci = subprocess.run(
        pytest, env=without_assets(tmp_path, CI="true"), capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert ci.returncode == 1, ci.stdout[-2000:]
    lines = [line for line in ci.stdout.splitlines() if "CI=true: real assets not found" in line]
    assert len(lines) == 1 and "passed" not in ci.stdout, ci.stdout[-2000:]
    local = subprocess.run(pytest, env=without_assets(tmp_path), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout[-2000:]
