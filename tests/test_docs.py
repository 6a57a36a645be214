"""What a user meets first: the README, the declared API and the docs site.

- README: short, for a user, its headline table regenerated from the benchmark records, links that resolve;
- API: `lipslib.__all__` resolves lazily, each name documented, `import lipslib` light;
- site: `mkdocs build --strict` passes offline, the API page lists every public name, every benchmark record
  is shown, the CLI page lists every command.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import PurePosixPath

import pytest
from conftest import ROOT

README = ROOT / "README.md"


def _tables():
    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "tools" / "docs_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tracked() -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = set(out.split())
    return files | {str(p) for f in files for p in PurePosixPath(f).parents}


# ---------------------------------------------------------------- README


def test_readme_is_short_and_speaks_to_a_user():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    for phrase in ("this session", "last session", "sessions ago", "withdrawn"):
        assert phrase not in text.lower(), phrase
    for needed in ("pip install -e .", "environment.yml", "make test", "make demo", "```python", "lips "):
        assert needed in text, needed


def test_readme_links_point_at_tracked_files():
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#\s]+)", text) + re.findall(r'src="([^"]+)"', text)
    tracked = _tracked()
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "no relative links found"
    for target in local:
        path = target.rstrip("/")
        assert not path.startswith(("runs", "./runs")), f"README links into untracked runs/: {target}"
        assert path in tracked, f"README links to {target}, which git does not track"


def test_readme_headline_table_is_generated_from_the_records():
    tables = _tables()
    text = README.read_text()
    assert tables.readme_text(text) == text, "stale: run `python tools/docs_tables.py --readme`"
    record = json.loads((ROOT / "reports" / "bench" / "baselines.json").read_text())
    rows = tables.headline_rows(record)
    assert 2 <= len(rows) <= tables.HEADLINE_ROWS  # the current result; every row is on the Evidence page
    assert all(not m.get("other_run") for _, _, m in rows)
    for _, _, m in rows:
        assert f"{m['map50_95']:.4f}" in text


def test_every_benchmark_record_renders(tmp_path):
    tables = _tables()
    for rel in tables.bench_records():
        section = tables.section(rel)
        assert "|" in section and "Measured on" in section, rel


def test_a_record_says_which_recovery_its_cuts_had():
    words = _tables().recovery_words
    assert words({"recover.repair": False, "recover.distill": "none"}) == "recovery off"
    plain = {"recover.repair": False, "recover.reconstruct": False, "recover.distill": "none"}
    assert words({**plain, "optimize.criterion": "l1"}) == "recovery off"
    lsq = {**plain, "recover.reconstruct": True, "optimize.criterion": "lsq"}
    assert words(lsq) == "channels chosen by `lsq`, every cut refit by least squares"
    repaired = {**plain, "recover.repair": True, "recover.distill": "outputs", "optimize.criterion": "l1"}
    assert words(repaired) == "channels chosen by `l1`, bias repair, distillation (outputs)"


# ---------------------------------------------------------------- the declared API


def test_import_lipslib_stays_light():
    code = "import sys, lipslib; print(sorted(m for m in ('torch', 'ultralytics') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_every_public_name_resolves_with_a_docstring():
    import lipslib

    assert sorted(lipslib.__all__) == sorted([*lipslib._EXPORTS, "LipsError"]), "__all__ and _EXPORTS differ"
    for name in lipslib.__all__:
        obj = getattr(lipslib, name)
        assert (obj.__doc__ or "").strip(), f"lipslib.{name} has no docstring"
        assert name in dir(lipslib)
    with pytest.raises(AttributeError):
        lipslib.no_such_name  # noqa: B018


def test_no_public_function_is_named_like_a_module_of_the_package():
    """Importing a module must never hide a public function of the same name (there is no workaround left)."""
    import pkgutil

    import lipslib
    import lipslib.recovery.lsq
    import lipslib.train.trainer
    import lipslib.train.validator  # noqa: F401  (binding submodules must leave the functions alone)

    modules = {m.name.rsplit(".", 1)[-1] for m in pkgutil.walk_packages(lipslib.__path__, "lipslib.")}
    assert not modules & set(lipslib.__all__), modules & set(lipslib.__all__)
    for name in ("evaluate", "finetune", "optimize", "recover", "reconstruct"):
        assert callable(getattr(lipslib, name)) and not isinstance(getattr(lipslib, name), type(lipslib)), name


def test_every_public_function_says_its_args_returns_raises_and_an_example():
    import inspect

    import lipslib

    for name in lipslib.__all__:
        obj = getattr(lipslib, name)
        doc = inspect.getdoc(obj) or ""
        if inspect.isfunction(obj):
            sections = ["Args:"] if inspect.signature(obj).parameters else []
            sections += ["Returns:", "Raises:", "Example"]
        elif hasattr(obj, "__dataclass_fields__"):  # settings and results: their fields, and what they refuse
            sections = ["Args:" if "Args:" in doc else "Attributes:"]
            sections += ["Raises:"] if "__post_init__" in vars(obj) else []
        else:
            sections = ["Example"]
        missing = [s for s in sections if s not in doc]
        assert not missing, f"lipslib.{name}: its docstring lacks {missing}"


# ---------------------------------------------------------------- the site


def test_cli_reference_lists_every_command():
    pytest.importorskip("mkdocs")
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    from lipslib.cli import build_parser

    text = hooks.cli_reference()
    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for name, sub in commands.items():
        assert f"\n## {name}\n" in text, name
        for action in sub._actions:
            for option in [] if action.dest == "help" else action.option_strings:
                assert f"`{option}`" in text, f"{name} {option}"


@pytest.mark.slow  # builds the whole site (about 15 s)
def test_site_builds_strict_offline_and_lists_the_api(tmp_path):
    pytest.importorskip("mkdocs")
    import lipslib

    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    api = (site / "api" / "index.html").read_text()
    for name in lipslib.__all__:
        module = lipslib._EXPORTS.get(name, "lipslib.errors")
        assert f'id="{module}.{name}"' in api, f"API page lacks {module}.{name}"
    # every benchmark record is cited by the page that shows it: evidence, latency or the pipeline's sweeps
    cited = "".join((site / page / "index.html").read_text() for page in ("evidence", "latency", "pipeline"))
    tables = _tables()
    for rel in tables.bench_records():
        assert f"reports/bench/{rel}" in cited, f"no docs page cites reports/bench/{rel}"
        png = (ROOT / "reports" / "bench" / rel).with_suffix(".png")
        if png.is_file():
            assert (site / "bench" / png.relative_to(ROOT / "reports" / "bench")).is_file()
    assert (site / "assets" / "mathjax" / "MathJax.js").is_file()  # equations render without a network
    for nb in ("01_sensitivity", "02_schedule", "03_optimize", "04_benchmark", "05_video_benchmark"):
        page = (site / "notebooks" / nb / "index.html").read_text()
        # papermill's injected parameters are shown, the notebook's own defaults cell (a duplicate) is not
        assert "celltag_injected-parameters" in page and "celltag_parameters" not in page, nb
    html = "".join(p.read_text() for p in site.rglob("*.html"))
    scripts = set(re.findall(r'<script[^>]+src="(https?://[^"]+)"', html))
    assert not scripts, f"pages load scripts from the network: {scripts}"
