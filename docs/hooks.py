"""mkdocs hooks: what the docs site generates at build time instead of holding typed copies.

- `<!-- bench: REL -->` in a page becomes the section of `reports/bench/REL` (tables from the JSON record, its
  figure beside it), by `tools/docs_tables.py`; `<!-- generated: unlisted -->` shows every record no page names
  (so a new benchmark appears at once), and a record shown nowhere fails the strict build.
- `<!-- generated: NAME -->`: `headline` (the README's table), `quickstart` (the README's),
  `demo` and `video` (the committed pipeline run),
  `cli` (the reference, walked from `lipslib.cli.build_parser()`), `api` (one mkdocstrings entry per name of
  `lipslib.__all__`, grouped by the module that defines it).
- Files: every `reports/bench/**/*.png` is served under `bench/`, and MathJax (from the jupyter-server-mathjax
  package) under `assets/mathjax/`, so equations render without a network.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "reports" / "bench"
MARKER = re.compile(r"<!--\s*(bench|generated):\s*([\w./-]+)\s*-->")
log = logging.getLogger("mkdocs.hooks.lipslib")


def _tables():
    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "tools" / "docs_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = _tables()
_listed: set[str] = set()  # records a page names with <!-- bench: REL -->
_shown: set[str] = set()


# ---------------------------------------------------------------- files


def _mathjax_root() -> Path | None:
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "static"
    return root if (root / "MathJax.js").is_file() else None


def on_files(files, config):
    _listed.clear()
    for page in files.documentation_pages():
        text = Path(page.abs_src_path).read_text(encoding="utf-8")
        _listed.update(name for kind, name in MARKER.findall(text) if kind == "bench")
    for png in sorted(BENCH.rglob("*.png")):
        files.append(File.generated(config, f"bench/{png.relative_to(BENCH).as_posix()}", abs_src_path=str(png)))
    mathjax = _mathjax_root()
    if mathjax is None:
        log.warning("jupyter-server-mathjax is not installed (pip install -e '.[docs]'): equations will not render")
    else:
        for f in sorted(p for p in mathjax.rglob("*") if p.is_file()):
            files.append(
                File.generated(config, f"assets/mathjax/{f.relative_to(mathjax).as_posix()}", abs_src_path=str(f))
            )
    return files


# ---------------------------------------------------------------- generated markdown


def _cell(text: str) -> str:
    """Help text as a table cell: pipes and braces escaped (a trailing {…} would be read as attributes)."""
    return text.replace("%%", "%").replace("|", "\\|").replace("{", "\\{").replace("}", "\\}")


def _arguments(p: argparse.ArgumentParser) -> list[str]:
    """The rows of a parser's argument table (nested subcommands are listed as their own sections)."""
    rows = []
    for a in p._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        names = ", ".join(f"`{o}`" for o in a.option_strings) or f"`{a.metavar or a.dest}`"
        if a.option_strings and a.nargs != 0:
            names += f" `{a.metavar or a.dest.upper()}`"
        default = "" if a.default in (None, False, argparse.SUPPRESS) or a.required else f"`{a.default}`"
        text = _cell(a.help or "")
        if a.choices:
            text += f" (one of: {', '.join(f'`{c}`' for c in a.choices)})"
        if isinstance(a, argparse._AppendAction):
            text += " (repeatable)"
        optional = a.nargs in ("?", "*") if not a.option_strings else not a.required
        need = "" if optional else "required"
        rows.append(f"| {names} | {need} | {default} | {text} |")
    return ["| argument | | default | description |", "| :--- | :--- | :--- | :--- |", *rows] if rows else []


def _section(name: str, help_text: str, p: argparse.ArgumentParser, level: str = "##") -> list[str]:
    """A command's section: its purpose, usage, arguments, then each of its own subcommands (e.g. `assets build`)."""
    p.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=88)
    out = [
        "",
        f"{level} {name}",
        "",
        (help_text or "").rstrip(".") + ".",
        "",
        "```text",
        p.format_usage().strip().replace("usage: ", "", 1),
        "```",
        "",
        *_arguments(p),
    ]
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in a._choices_actions}
            for sub_name, sub in a.choices.items():
                out += _section(f"{name} {sub_name}", helps.get(sub_name), sub, level + "#")
    return out


def cli_reference() -> str:
    """Every `lips` command: its purpose, usage and arguments, from the parser itself."""
    from lipslib.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    out = [f"`{parser.prog}` — {parser.description}.", "", "| command | what it does |", "| :--- | :--- |"]
    out += [f"| [`{name}`](#{name}) | {_cell(helps.get(name) or '')} |" for name in sub.choices]
    for name, p in sub.choices.items():
        out += _section(name, helps.get(name), p)
    return "\n".join(out)


def api_reference() -> str:
    """One mkdocstrings entry per public name, grouped by module, in `_EXPORTS`' order."""
    import lipslib

    groups: dict[str, list[str]] = {}
    for name, module in lipslib._EXPORTS.items():
        groups.setdefault(module, []).append(name)
    groups.setdefault("lipslib.errors", []).append("LipsError")
    out = []
    for module, names in groups.items():
        out += [
            f"## `{module}`",
            "",
            f"::: {module}",
            "    options:",
            "      show_root_heading: false",
            "      show_root_toc_entry: false",
            "      members: false",
            "",
        ]
        out += [f"::: {module}.{name}\n" for name in names]
    return "\n".join(out)


def generated(name: str) -> str:
    if name == "headline":
        return tables.headline()
    if name == "demo":
        return tables.demo_section()
    if name == "video":
        return tables.video_section()
    if name == "unlisted":  # every record no page names: a new benchmark is shown before anyone writes about it
        rest = [rel for rel in tables.bench_records() if rel not in _listed]
        _shown.update(rest)
        return (
            "\n\n".join(f"### `{rel}`\n\n{tables.section(rel)}" for rel in rest)
            or "*None: every record is discussed above.*"
        )
    if name == "quickstart":
        return f"```python\n{tables.readme_quickstart()}```"
    if name == "cli":
        return cli_reference()
    if name == "api":
        return api_reference()
    raise ValueError(f"unknown generated block '{name}'")


def on_page_markdown(markdown, page, config, files):
    depth = page.file.src_uri.count("/")
    prefix = "../" * depth + "bench/"

    def replace(m: re.Match) -> str:
        kind, name = m.groups()
        if kind == "bench":
            _shown.add(name)
            text = tables.section(name, figure_prefix=prefix)
        else:
            text = generated(name)
        if name in ("cli", "api", "quickstart"):
            return text
        return f'<div class="bench" markdown>\n\n{text}\n\n</div>'  # generated tables: cells do not wrap

    return MARKER.sub(replace, markdown)


def on_post_build(config):
    unshown = sorted(set(tables.bench_records()) - _shown)
    if unshown:
        log.warning(
            f"benchmark records shown on no page (evidence.md lost its `<!-- generated: unlisted -->`?): "
            f"{', '.join(unshown)}"
        )
