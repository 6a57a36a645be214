"""The research front end: notebook contracts (offline, fast), the rendered copies readers open, and every
notebook executed through papermill on the smoke profile, from another working directory, plus a sweep and
`make lab`."""

import ast
import json
import os
import re
import socket
import subprocess
import time
import urllib.request

import nbformat
import pytest
from conftest import ROOT

from lipslib.cfg import flatten, load_params
from lipslib.pipeline.notebooks import (
    EXTRA_PARAMETERS,
    NOTEBOOKS,
    STAGE_PARAMS_DIR,
    parameters_cell,
    render,
    run_notebook,
    write_stage_params,
)

FLAT = set(flatten(load_params(ROOT / "params.yaml", "paper")))


def read(name, folder="notebooks"):
    return nbformat.read(ROOT / folder / f"{name}.ipynb", as_version=4)


def outputs(nb, mime):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if mime in o.get("data", {})]


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


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_holds_the_demo_profile(name):
    """Opened in JupyterLab and run, a notebook runs what `dvc repro` runs (params.yaml's demo profile)."""
    cell = next(c for c in read(name).cells if "parameters" in c.metadata.get("tags", []))
    assert cell.source == parameters_cell(name, "demo"), "run `lips stage-params --cells`"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_reads_as_a_research_document(name):
    """The question, the method with its equations, figures drawn in the notebook, and a closing paragraph
    computed from the run; code that reads on a page."""
    nb = read(name)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert len(re.findall(r"\S+", markdown)) >= 250
    assert "**Question.**" in markdown and re.search(r"\$\$.+?\$\$", markdown, re.S), "question and an equation"
    assert "IPython.display import Image" not in code and "Image(" not in code, "figures are drawn, not pasted"
    assert re.search(r"display\(Markdown\(\s*f\"", nb.cells[-1].source), "the closing paragraph comes from the run"
    long = [line for line in code.splitlines() if len(line) > 120]
    assert not long, long


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_rendered_copy_for_readers(name):
    """docs/notebooks/: the executed demo notebook with its outputs, from the current source."""
    docs, source = read(name, "docs/notebooks"), read(name)
    ran = [c for c in docs.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    assert [c.source for c in ran] == [c.source for c in source.cells], "stale: rerun the pipeline (dvc repro)"
    assert not [o for c in docs.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert outputs(docs, "image/png") and outputs(docs, "text/markdown")
    assert "papermill" not in docs.metadata and all("papermill" not in c.metadata for c in docs.cells)


def test_stage_params_isolate_stages(tmp_path):
    a = {p.name: p.read_text() for p in write_stage_params(tmp_path / "a", "demo")}
    b = {p.name: p.read_text() for p in write_stage_params(tmp_path / "b", "demo", {"schedule.target_gflops": 3.6})}
    changed = sorted(k for k in a if a[k] != b[k])
    assert changed == ["02_schedule.yaml", "03_optimize.yaml"]  # Stage I untouched by a target change


def test_committed_stage_params_are_current(tmp_path):
    """params/<notebook>.yaml (DVC's params files) hold what params.yaml resolves to now."""
    fresh = {p.name: p.read_text() for p in write_stage_params(tmp_path)}
    assert {n: (ROOT / STAGE_PARAMS_DIR / n).read_text() for n in fresh} == fresh, "run `dvc repro config`"


def test_render_keeps_outputs_and_drops_run_metadata(tmp_path):
    nb = nbformat.v4.new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3"},
            "papermill": {"input_path": "/somewhere/01.ipynb"},
        }
    )
    cell = nbformat.v4.new_code_cell(
        "x = 1",
        metadata={
            "tags": ["parameters"],
            "papermill": {"duration": 1.5},
            "execution": {"iopub.status.busy": "2026-01-01"},
        },
    )
    cell.outputs = [nbformat.v4.new_output("display_data", {"text/markdown": "mAP **0.25**"})]
    nb.cells += [cell, nbformat.v4.new_markdown_cell("# 01", metadata={"papermill": {"duration": 0.001}})]
    nbformat.write(nb, tmp_path / "01.ipynb")
    out = nbformat.read(render(tmp_path / "01.ipynb", tmp_path / "docs"), as_version=4)
    assert out.metadata == {"kernelspec": {"name": "python3", "display_name": "Python 3"}}
    assert out.cells[0].metadata == {"tags": ["parameters"]} and out.cells[0].outputs == cell.outputs
    assert out.cells[1].metadata == {} and out.cells[1].source == "# 01"


@pytest.mark.slow
def test_all_notebooks_on_smoke(assets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # notebooks resolve paths from the repo root, not the cwd
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    for name in NOTEBOOKS:
        out = run_notebook(name, "smoke", runs_dir=str(runs), reports_dir=str(reports), progress=False)
        executed = nbformat.read(out, as_version=4)
        assert outputs(executed, "image/png"), f"{name}: no figure drawn inline"
        assert outputs(executed, "text/markdown"), f"{name}: no closing paragraph"
    for fig in (
        "layer_importance.png",
        "initial_schedule.png",
        "layer_iteration.png",
        "history.png",
        "benchmark.png",
        "latency.png",
        "video_timing.png",
        "video_frame.png",
    ):
        assert (reports / "figures" / fig).stat().st_size > 5_000, fig
    assert (runs / "schedule" / "replay" / "replay.png").stat().st_size > 5_000  # with the authors' logs
    best = json.loads((runs / "optimize" / "best.json").read_text())
    assert best["split_report"] == "test"
    live = json.loads((reports / "dvclive" / "metrics.json").read_text())
    assert live["best"]["iteration"] == best["iteration"] and live["best"]["map50_95"] == best["map50_95"]
    assert json.loads((reports / "tables" / "video_summary.json").read_text())["frames_processed"] == 6


@pytest.mark.slow  # validates (Stage I)
def test_reference_is_optional(assets, tmp_path, monkeypatch):
    """Without the authors' logs, notebooks 01 and 02 run and say what they skipped."""
    bare = tmp_path / "assets"
    bare.mkdir()
    for kind in ("weights", "datasets"):
        (bare / kind).symlink_to(assets / kind)
    monkeypatch.setenv("LIPS_ASSETS", str(bare))
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    over = {
        "01_sensitivity": {"sensitivity.layers": ["model.17.conv", "model.2.cv2.conv"]},
        "02_schedule": {"optimize.importance": str(runs / "sensitivity" / "layer_importance.json")},
    }  # smoke's is
    for name in NOTEBOOKS[:2]:  # the paper's vector; each notebook takes only the overrides it declares
        executed = nbformat.read(
            run_notebook(name, "smoke", over[name], runs_dir=str(runs), reports_dir=str(reports), progress=False),
            as_version=4,
        )
        printed = " ".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
        assert "lips_paper" in printed, name  # the one-line note naming what is missing
    assert not (runs / "sensitivity" / "reference.json").exists() and not (runs / "schedule" / "replay").exists()


@pytest.mark.slow  # `make lab` may create .venv and pip-install
def test_make_lab_serves_on_localhost():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["make", "-s", "lab", f"LAB_PORT={port}", "LAB_ARGS=--ServerApp.token=lipstest"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
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


def test_markdown_cells_hold_no_control_characters():
    """A `\\t` that became a TAB (`\\text` → TAB + `ext`) breaks the equation it sits in."""
    import re

    import nbformat

    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                bad = re.findall(r"[\x00-\x08\x0b-\x1f\x7f]", cell.source)
                assert not bad, f"{path.name}: control characters {bad!r} in: {cell.source[:80]!r}"
