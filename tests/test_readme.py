"""The README's Python quickstart runs as written: the block under "Python quickstart" is executed in a fresh
process, in an empty folder, with the offline assets (coco128, the authors' iter-01)."""

import importlib.util
import os
import subprocess
import sys

import pytest
from conftest import ROOT


def _quickstart() -> str:
    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "tools" / "docs_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    return tables.readme_quickstart()


def test_quickstart_block_uses_the_declared_api():
    import lipslib

    code = _quickstart()
    compile(code, "README quickstart", "exec")
    used = {name for name in lipslib.__all__ if f"L.{name}(" in code}
    assert {"load_model", "at_gflops", "prune", "recover", "save_checkpoint", "finetune", "evaluate"} <= used
    assert len(code.strip().splitlines()) <= 12


@pytest.mark.slow  # prunes, reconstructs, fine-tunes 1 epoch and validates at 160 px (about a minute on 2 cores)
def test_readme_quickstart_runs(assets, tmp_path):
    env = {**os.environ, "LIPS_ASSETS": str(assets), "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", _quickstart()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    printed = run.stdout.strip().splitlines()[-1]
    assert "'map50_95'" in printed and "'gflops'" in printed
    assert (tmp_path / "pruned.pt").is_file()
    assert (tmp_path / "runs" / "quickstart" / "weights" / "last_pruned_full.pt").is_file()
