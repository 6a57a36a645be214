"""The research front end: notebook contracts (offline, fast) and every notebook executed through
papermill on the smoke profile, from another working directory, plus a sweep and `make lab`."""

import ast
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest

from conftest import ROOT
from lipslib.config import flatten, load_params
from lipslib.notebook import EXTRA_PARAMETERS, NOTEBOOKS, run_notebook, write_stage_params

FLAT = set(flatten(load_params(ROOT / "params.yaml", "paper")))


def read(name):
    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_contract(name):
    nb = read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "committed notebooks carry no outputs"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one parameters cell"
    names = []
    for stmt in ast.parse(tagged[0].source).body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, ast.unparse(stmt)
        ast.literal_eval(stmt.value)  # literal values only
        names.append(stmt.targets[0].id)
    unknown = set(names) - FLAT - set(EXTRA_PARAMETERS)
    assert not unknown, f"parameters not in params.yaml: {unknown}"
    assert {"profile", "runs_dir", "reports_dir"} <= set(names)


def test_stage_params_isolate_stages(tmp_path):
    a = {p.name: p.read_text() for p in write_stage_params(tmp_path / "a", "demo")}
    b = {p.name: p.read_text() for p in write_stage_params(tmp_path / "b", "demo", {"schedule.target_gflops": 3.7})}
    changed = sorted(k for k in a if a[k] != b[k])
    assert changed == ["02_schedule.yaml", "03_optimize.yaml"]  # Stage I untouched by a target change


@pytest.mark.slow
def test_all_notebooks_on_smoke(assets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # notebooks resolve paths from the repo root, not the cwd
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    for name in NOTEBOOKS:
        out = run_notebook(name, "smoke", runs_dir=str(runs), reports_dir=str(reports), progress=False)
        executed = nbformat.read(out, as_version=4)
        assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
    for fig in ("layer_importance.png", "layer_iteration.png", "benchmark.png", "replay.png", "video_frame.png"):
        assert (reports / "figures" / fig).stat().st_size > 5_000, fig
    best = json.loads((reports / "metrics" / "best.json").read_text())
    assert best["split_report"] == "test"
    assert json.loads((reports / "tables" / "video_summary.json").read_text())["frames_processed"] == 6


@pytest.mark.slow
def test_sweep_two_targets(assets, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lipslib", "sweep", "--targets", "3.9,4.0", "--profile", "smoke",
                           "--notebooks", "03_optimize", "--out", str(tmp_path / "sweeps")],
                          capture_output=True, text=True, cwd=ROOT, env=os.environ.copy(), timeout=1200)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for target in ("3.9", "4"):
        assert (tmp_path / "sweeps" / target / "runs" / "optimize" / "best.json").is_file()
    assert (tmp_path / "sweeps" / "pareto.png").stat().st_size > 5_000
    assert (tmp_path / "sweeps" / "pareto.csv").read_text().count("\n") == 3


@pytest.mark.slow  # `make lab` may create .venv and pip-install
def test_make_lab_serves_on_localhost():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_PORT={port}", "LAB_ARGS=--ServerApp.token=lipstest"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        deadline, status = time.time() + 120, None
        while time.time() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token=lipstest", timeout=2) as r:
                    status = json.loads(r.read())
            except OSError:
                assert proc.poll() is None, "make lab exited"
                time.sleep(1)
        assert status is not None and "started" in status
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
