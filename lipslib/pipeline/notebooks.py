"""The research front end: the five stage notebooks, run through papermill with parameters from params.yaml.

A notebook declares its knobs in one `parameters` cell, named as params.yaml's keys flattened with `_`
(`schedule_target_gflops`), plus `profile`, `runs_dir` and `reports_dir`. `run_notebook` fills them from a
profile (and overrides), executes with the repo root as working directory, and writes the executed copy
under `reports_dir/notebooks/` (and, given `docs_dir`, a copy for readers: `render`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lipslib.cfg import flatten, load_params
from lipslib.errors import LipsError

NOTEBOOKS = ("01_sensitivity", "02_schedule", "03_optimize", "04_benchmark", "05_video_benchmark")
EXTRA_PARAMETERS = ("profile", "runs_dir", "reports_dir")
STAGE_PARAMS_DIR = "params"  # one resolved YAML per notebook, the params file of its DVC stage (git-tracked)
# The figures each notebook writes that the docs and README show: name in the figures folder → where the
# notebook writes it (under its runs and reports folders). `lips notebook --figures DIR` copies them there, and
# dvc.yaml declares the copies as the stage's outputs, so dvc.lock records the figure the docs show.
DOCS_FIGURES = {
    "01_sensitivity": {"layer_importance.png": "{reports}/figures/layer_importance.png"},
    "02_schedule": {
        "initial_schedule.png": "{reports}/figures/initial_schedule.png",
        "replay.png": "{runs}/schedule/replay/replay.png",
    },
    "03_optimize": {
        "layer_iteration.png": "{reports}/figures/layer_iteration.png",
        "history.png": "{reports}/figures/history.png",
    },
    "04_benchmark": {
        "benchmark.png": "{reports}/figures/benchmark.png",
        "latency.png": "{reports}/figures/latency.png",
    },
    "05_video_benchmark": {
        "video_frame.png": "{reports}/figures/video_frame.png",
        "video_timing.png": "{reports}/figures/video_timing.png",
    },
}


def repo_root() -> Path:
    """The checkout holding params.yaml and notebooks/: found upward from the working directory, else
    beside the (editable-installed) package."""
    for d in (Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[2]):
        if (d / "params.yaml").is_file() and (d / "notebooks").is_dir():
            return d
    raise LipsError("cannot find the lipslib checkout (params.yaml + notebooks/); run from inside it")


def setup(runs_dir: str, reports_dir: str) -> tuple[Path, Path, Path]:
    """Called by each notebook: work from the repo root (relative paths in params.yaml mean the same thing
    from any cwd) and make the output folders. Returns (root, runs, reports)."""
    os.environ.setdefault("YOLO_VERBOSE", "False")  # read when ultralytics is first imported: no per-batch lines
    import logging

    logging.getLogger("ultralytics").setLevel(logging.WARNING)  # in case it was imported already
    root = repo_root()
    os.chdir(root)
    runs, reports = Path(runs_dir), Path(reports_dir)
    for d in (runs, reports / "figures", reports / "tables", reports / "notebooks"):
        d.mkdir(parents=True, exist_ok=True)
    return root, runs, reports


def params(profile: str, namespace: dict) -> dict:
    """The nested parameters the library takes: the profile in params.yaml, overridden by the notebook's own
    parameters, i.e. every name in `namespace` (the notebook's `globals()`) that is a flattened params.yaml
    key, so the parameters cell is the only place a notebook names them."""
    path = repo_root() / "params.yaml"
    known = set(flatten(load_params(path, profile))) - {"profile"}  # the profile is chosen, not overridden
    return load_params(path, profile, {k: v for k, v in namespace.items() if k in known})


def parameters_cell(name: str, profile: str = "demo") -> str:
    """The source of notebook `name`'s `parameters` cell with every params.yaml name set to what `profile`
    resolves to (the cell's order and its extra names kept), so a notebook opened in JupyterLab runs what
    `dvc repro` runs. Values are Python literals."""
    import ast

    import nbformat

    flat = flatten(load_params(repo_root() / "params.yaml", profile))
    cell = _parameters_cell(nbformat.read(repo_root() / "notebooks" / f"{name}.ipynb", as_version=4))
    lines = []
    for stmt in ast.parse(cell.source).body:
        key = stmt.targets[0].id
        if key == "profile":
            lines.append(f'profile = "{profile}"')
        else:
            lines.append(f"{key} = {flat[key]!r}" if key in flat else ast.get_source_segment(cell.source, stmt))
    return "\n".join(lines)


def write_parameters_cells(profile: str = "demo") -> list[str]:
    """Rewrite the committed notebooks' `parameters` cells from `profile` (`parameters_cell`); returns the
    names of the notebooks that changed."""
    import nbformat

    changed = []
    for name in NOTEBOOKS:
        path = repo_root() / "notebooks" / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        cell, source = _parameters_cell(nb), parameters_cell(name, profile)
        if cell.source != source:
            cell.source = source
            nbformat.write(nb, path)
            changed.append(name)
    return changed


def _parameters_cell(nb):
    return next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))


def declared_parameters(name: str) -> list[str]:
    import papermill as pm

    return list(pm.inspect_notebook(str(repo_root() / "notebooks" / f"{name}.ipynb")))


def run_notebook(
    name: str,
    profile: str | None = None,
    overrides: dict | None = None,
    runs_dir: str = "runs",
    reports_dir: str = "reports",
    progress: bool = True,
    docs_dir: str | None = None,
    figures_dir: str | None = None,
) -> Path:
    """Execute a stage notebook through papermill with the values of a profile of params.yaml.

    Args:
        name: the notebook (`NOTEBOOKS`).
        profile: the profile (default: params.yaml's `profile:`).
        overrides: dotted config keys over the profile (`{'schedule.target_gflops': 3.8}`); each must be a
            parameter the notebook declares.
        runs_dir: where the notebook writes its runs.
        reports_dir: where it writes its figures, tables and the executed copy (`notebooks/NAME.ipynb`).
        progress: papermill's progress bar.
        docs_dir: also write a copy for readers there (`render`).
        figures_dir: also copy the figures the docs show (`DOCS_FIGURES`) there.

    Returns:
        The executed notebook.

    Raises:
        LipsError: an unknown notebook, a bad value (refused before the notebook starts, `check_params`), an
            override the notebook does not take, or a cell that failed (its error and the executed copy's path).
    """
    import papermill as pm

    if name not in NOTEBOOKS:
        raise LipsError(f"unknown notebook '{name}'; choose one of {', '.join(NOTEBOOKS)}")
    from lipslib.cfg.settings import check_params

    root = repo_root()
    resolved = load_params(root / "params.yaml", profile, overrides)
    check_params(resolved)  # a bad value stops here, in one line, not in the notebook's cells
    flat = {**flatten(resolved), "runs_dir": runs_dir, "reports_dir": reports_dir}
    wanted = declared_parameters(name)
    asked = {k.replace(".", "_") for k in (overrides or {})}
    ignored = sorted(asked - set(wanted))
    if ignored:  # never drop an override silently
        raise LipsError(f"notebook {name} does not take {', '.join(ignored)}; its parameters: {', '.join(wanted)}")
    out = root / reports_dir / "notebooks" / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(
            str(root / "notebooks" / f"{name}.ipynb"),
            str(out),
            cwd=str(root),
            parameters={k: flat[k] for k in wanted if k in flat},
            progress_bar=progress,
            kernel_name="python3",
        )
    except pm.PapermillExecutionError as e:
        raise LipsError(f"notebook {name} failed in cell {e.exec_count}: {e.ename}: {e.evalue} (see {out})") from None
    if docs_dir:
        render(out, root / docs_dir)
    if figures_dir:
        for shown, written in DOCS_FIGURES[name].items():
            source = root / written.format(runs=runs_dir, reports=reports_dir)
            if not source.is_file():
                raise LipsError(f"notebook {name} did not write {source}, a figure the docs show")
            (root / figures_dir).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, root / figures_dir / shown)
    return out


def render(executed: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """A copy of an executed notebook for readers (GitHub, GitLab and nbviewer show it with its outputs,
    nothing to run): nbconvert's ClearMetadataPreprocessor, on every cell, drops papermill's per-cell timings
    and the run's paths, so a rerun that computes the same results leaves the same file. Returns its path."""
    import nbformat
    from nbconvert.exporters import NotebookExporter
    from nbconvert.preprocessors import ClearMetadataPreprocessor

    class ClearAllCellsMetadata(ClearMetadataPreprocessor):  # nbconvert's clears code cells only
        def preprocess_cell(self, cell, resources, index):
            cell.metadata = dict(self.nested_filter(cell.metadata.items(), self.preserve_cell_metadata_mask))
            return cell, resources

    executed = Path(executed)
    keep = ClearAllCellsMetadata(
        preserve_cell_metadata_mask={"tags"}, preserve_nb_metadata_mask={"kernelspec", "language_info"}
    )
    exporter = NotebookExporter(preprocessors=[keep])
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    out = Path(out_dir) / executed.name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body)
    return out


def write_stage_params(
    out: str | os.PathLike = STAGE_PARAMS_DIR, profile: str | None = None, overrides: dict | None = None
) -> list[Path]:
    """One YAML per notebook holding the resolved values of exactly the parameters it declares. Each DVC
    stage declares its file as its `params:`, so a change reruns only the stages whose notebooks read the key,
    and `dvc params diff` / `dvc exp show` list the values each notebook ran with."""
    import yaml

    from lipslib.cfg.settings import check_params

    root = repo_root()
    resolved = load_params(root / "params.yaml", profile, overrides)
    check_params(resolved)  # the pipeline's first stage refuses a bad value before any notebook runs
    flat = flatten(resolved)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in NOTEBOOKS:
        values = {k: flat[k] for k in declared_parameters(name) if k in flat}
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(values, sort_keys=True))
        written.append(path)
    return written
