"""Records that travel and figures that match them: nothing under reports/ names a path of the machine it ran on;
every figure the README and the docs show is the one its pipeline stage recorded in dvc.lock (or, for a
benchmark's figure, the one beside its record); code, docs and notebooks speak of the method, not of the
project's history (no issue numbers)."""

from __future__ import annotations

import hashlib
import re
import subprocess

import pytest
import yaml
from conftest import ROOT

from lipslib.files import portable
from lipslib.pipeline.notebooks import DOCS_FIGURES

TEXT = (".json", ".md", ".csv", ".tsv", ".yaml", ".txt")
# an absolute POSIX path (/home/x, /work/main/…) or a Windows one (C:\…), not a URL's path (after ://)
ABSOLUTE = re.compile(r"(?<![\w:/.$-])/(?:[\w.-]+/)+[\w.-]+|\b[A-Za-z]:\\\\?[\w.-]")
# figures a benchmark script writes beside its record and copies for the README/docs (harness.draw_beside)
BENCH_COPIES = {
    "docs/figures/baselines_pareto.png": "reports/bench/baselines.png",
    "docs/figures/allocation.png": "reports/bench/allocation.png",
}


def tracked(*paths: str) -> list:
    out = subprocess.run(["git", "ls-files", *paths], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.splitlines() if (ROOT / line).is_file()]


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_no_record_under_reports_holds_an_absolute_path():
    records = [p for p in tracked("reports") if p.suffix in TEXT]
    assert len(records) > 20
    found = {
        str(p.relative_to(ROOT)): hits
        for p in records
        if (hits := sorted(set(ABSOLUTE.findall(p.read_text(errors="replace")))))
    }
    assert not found, f"absolute paths in records (write them with write_json(..., portable_paths=True)): {found}"


def test_the_pattern_finds_what_the_records_held_before(tmp_path):
    """The check above can fail: it finds the paths records used to hold, and portable() rewrites them."""
    held = '{"weights": "/work/main/runs/bench/3.4/uniform/ft/weights/last_pruned_full.pt", "url": "https://x.org/a/b"}'
    assert ABSOLUTE.findall(held) == ["/work/main/runs/bench/3.4/uniform/ft/weights/last_pruned_full.pt"]
    assert portable({"w": str(tmp_path / "runs" / "best.pt"), "u": "https://x.org/a/b"}, tmp_path) == {
        "w": "runs/best.pt",
        "u": "https://x.org/a/b",
    }


def shown_figures() -> set:
    """Images the README and the docs pages show, as repo paths."""
    shown = set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for ref in re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)|<img [^>]*src=\"([^\"]+\.png)\"", page.read_text()):
            ref = next(r for r in ref if r)
            shown.add((page.parent / ref).resolve().relative_to(ROOT).as_posix())
    return shown


def test_every_figure_the_docs_show_is_the_one_its_stage_recorded():
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    recorded = {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", []) if "md5" in o}
    shown = shown_figures()
    assert {"docs/figures/layer_iteration.png", "docs/figures/benchmark.png"} <= shown  # the home page, Evidence
    from_stages = 0
    for figure in sorted(shown):
        if figure in recorded:
            assert md5(ROOT / figure) == recorded[figure], f"{figure} differs from dvc.lock: rerun `dvc repro`"
            from_stages += 1
        else:
            assert figure in BENCH_COPIES, f"{figure} is shown but no stage or benchmark records it"
            assert md5(ROOT / figure) == md5(ROOT / BENCH_COPIES[figure]), f"{figure} differs from its record's"
    assert from_stages >= 4


def test_the_docs_figures_of_each_stage_are_its_declared_outputs():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, figures in DOCS_FIGURES.items():
        stage = next(s for s in stages.values() if s["cmd"].split()[:3] == ["lips", "notebook", name])
        outs = {next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]}
        assert {f"docs/figures/{f}" for f in figures} <= outs, name
        assert "--figures docs/figures" in stage["cmd"]


HISTORY = re.compile(r"(?<![\w&])#\d{1,3}\b(?![0-9a-fA-F])|\bissues? \d+\b|\bthe seed(?:'s)?\b(?![-\w])")


@pytest.mark.parametrize(
    "folder",
    ["lipslib", "benchmarks", "tools", "tests", "docs", "notebooks", "Makefile", ".ci", "README.md", "params.yaml"],
)
def test_code_docs_and_notebooks_speak_of_the_method_not_its_history(folder):
    files = [
        p
        for p in tracked(folder)
        if (p.suffix in (".py", ".md", ".ipynb", ".yaml") or p.name in ("Makefile", "run"))
        and "docs/notebooks" not in p.as_posix()
    ]
    files = [p for p in files if p != ROOT / "tests" / "test_records.py"]
    hits = {
        str(p.relative_to(ROOT)): m for p in files if (m := sorted(set(HISTORY.findall(p.read_text(errors="replace")))))
    }
    assert not hits, hits
