"""JupyterLab in a real browser, the way a reader opens the notebooks: a headless Chromium driven by Playwright
opens a copy of notebooks/02_schedule.ipynb in `jupyter lab` from the file browser, enters the smoke profile in its
`parameters` cell, runs it with Run → Run All Cells, and waits for the kernel to go idle. Every code cell must have
run, a figure must have rendered (an image/png output shown as an `img`), no cell may have raised, and the saved
copy must agree. A screenshot of the figure goes to reports/lab/.

The committed notebook is never opened (it carries no outputs and is a DVC dependency): the server serves a copy in
tmp_path and starts its kernels in the checkout's notebooks/, where `make lab` starts them, so the notebook finds
the checkout (params.yaml) as it does for a user. Locally the test skips without Chromium, Playwright or JupyterLab;
in CI (CI=true) it fails instead, since a CI that skipped it would go green without testing.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest
from conftest import IN_CI, ROOT

from lipslib.pipeline.notebooks import parameters_cell

NOTEBOOK = "02_schedule"  # the cheapest stage that draws figures on its own: ~25 s on smoke, no earlier stage needed
CHROMIUM = "/usr/bin/chromium"  # Debian's (`make lab-deps`): `playwright install` downloads one, and CI is offline
# Headless as root, and nothing that phones home: this machine's closed network refuses those connections
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "lipslab"
SCREENSHOT = ROOT / "reports" / "lab" / f"{NOTEBOOK}.png"
START_S, RUN_S = 120, 300  # server start, Run All (on 2 CPU cores, with the browser beside it)
STDERR = '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]'  # tracebacks are shown with it too

# Run All is done when no cell waits ([*]) and every code cell has a number, or, after an error, when the cells
# behind the failed one were dropped from the queue (blank prompts) and no cell waits any more.
RAN = """stderr => {
  const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]
    .map(p => p.textContent.trim());
  if (!prompts.length || prompts.some(p => p.includes('*'))) return false;
  const failed = [...document.querySelectorAll('.jp-NotebookPanel ' + stderr)]
    .some(e => e.textContent.includes('Traceback'));
  return failed || prompts.every(p => /\\[\\d+\\]/.test(p));
}"""


def missing(reason: str):
    if IN_CI:
        pytest.fail(f"CI=true: {reason}; the browser test must run in CI", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def sync_playwright():
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"no {CHROMIUM}: `make lab-deps` installs Debian's chromium")
    try:
        import jupyterlab  # noqa: F401  (the lab extra)
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        missing(f"{e.name} is not installed: `make install` (the dev and lab extras)")
    return sync_playwright


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(assets, tmp_path):
    """`jupyter lab` on a copy of the notebook, isolated from the user's Jupyter set-up; yields (url, folder).
    Torn down with its kernels: the test leaves no process behind."""
    served = tmp_path / "notebooks"
    served.mkdir()
    shutil.copy(ROOT / "notebooks" / f"{NOTEBOOK}.ipynb", served)
    config = tmp_path / "jupyter"
    # no news prompt over the notebook (and no request for it), whatever the user's settings say
    notification = config / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = os.environ | {
        "JUPYTER_CONFIG_DIR": str(config),  # fresh user settings and workspace: no layout restored from a past run
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
    port = free_port()
    cmd = [
        sys.executable,  # the venv's: its jupyterlab, and its ipykernel as the notebook's python3 kernel
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",  # fail on a taken port rather than serve on another one
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={served}",
        # kernels start where `make lab` starts them, so the notebook finds the checkout from its cwd
        f"--MappingKernelManager.root_dir={ROOT / 'notebooks'}",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = tmp_path / "lab.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, f"jupyter lab exited {proc.returncode}:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"jupyter lab not up in {START_S} s:\n{log.read_text()[-3000:]}"
                time.sleep(0.5)
        yield url, served
    finally:
        proc.terminate()  # SIGTERM: the server shuts its kernels down before it exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:  # anything left in its process group (a kernel it did not stop) is killed, and the test fails
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        else:
            pytest.fail(f"jupyter lab left processes behind:\n{log.read_text()[-3000:]}")


@pytest.mark.slow  # runs a notebook (~25 s of compute) in JupyterLab in a browser
def test_notebook_runs_in_jupyterlab_in_a_browser(sync_playwright, lab, tmp_path):
    url, served = lab
    committed = (ROOT / "notebooks" / f"{NOTEBOOK}.ipynb").read_bytes()
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    # the smoke profile, as a user would pick it: every name the cell holds set to what `smoke` resolves to, with
    # the outputs in tmp_path, not in the checkout's runs/ and reports/
    source = parameters_cell(NOTEBOOK, "smoke")
    source = source.replace('runs_dir = "runs"', f'runs_dir = "{runs}"')
    source = source.replace('reports_dir = "reports"', f'reports_dir = "{reports}"')
    assert f'runs_dir = "{runs}"' in source and f'reports_dir = "{reports}"' in source, source
    cells = nbformat.read(served / f"{NOTEBOOK}.ipynb", as_version=4).cells
    index = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))

    with sync_playwright() as p:
        # Playwright gives every launch a fresh, temporary user-data dir
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{url}/lab?token={TOKEN}")
            # open it as a reader does: a double click in the file browser
            page.locator(".jp-DirListing-item", has_text=f"{NOTEBOOK}.ipynb").dblclick()
            panel = page.locator(".jp-NotebookPanel")
            panel.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for()  # the kernel is up

            # the parameters cell: select its text in the editor and type the smoke profile over it
            cell = panel.locator(".jp-Notebook .jp-Cell").nth(index)
            assert 'profile = "demo"' in cell.locator(".cm-content").text_content()
            cell.locator(".cm-content").click()
            page.keyboard.press("ControlOrMeta+a")
            page.keyboard.insert_text(source)  # as a paste: no auto-indent or bracket closing from typed keys
            page.keyboard.press("Escape")  # back to command mode

            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            page.wait_for_function(RAN, arg=STDERR, timeout=RUN_S * 1000, polling=500)
            panel.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for()

            errors = [t for t in panel.locator(STDERR).all_text_contents() if "Traceback" in t or "Error" in t]
            assert not errors, "a cell raised:\n" + "\n".join(errors)[-3000:]
            prompts = panel.locator(".jp-CodeCell .jp-InputPrompt").all_text_contents()
            assert all(any(ch.isdigit() for ch in p) for p in prompts), f"cells that did not run: {prompts}"
            images = panel.locator(".jp-OutputArea-output img")
            assert images.count() >= 1, "no figure rendered"
            figure = images.first
            figure.scroll_into_view_if_needed()
            assert figure.evaluate("img => img.complete && img.naturalWidth > 100"), "the figure did not load"

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=SCREENSHOT)

            page.get_by_role("menuitem", name="File", exact=True).click()
            page.locator(".lm-Menu-itemLabel", has_text="Save Notebook").first.click()
            page.locator(".lm-TabBar-tab.jp-mod-dirty").wait_for(state="detached")  # the tab's unsaved-changes mark
        finally:
            browser.close()

    # the copy JupyterLab saved: the edited cell, run with every output, and no error output
    saved = nbformat.read(served / f"{NOTEBOOK}.ipynb", as_version=4)
    assert saved.cells[index].source == source
    code = [c for c in saved.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), [c.execution_count for c in code]
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert (reports / "figures" / "initial_schedule.png").stat().st_size > 5_000  # the run wrote into tmp_path
    assert (ROOT / "notebooks" / f"{NOTEBOOK}.ipynb").read_bytes() == committed, "the committed notebook changed"
