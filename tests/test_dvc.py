"""The pipeline as DVC runs it: each notebook stage declares its own resolved parameters as `params:`, so
DVC itself reruns only the stages whose notebooks read a changed key, a second `dvc repro` does nothing,
and `dvc params diff` lists the change. Checked with DVC on a copy of the pipeline whose notebook stages
only echo (what they compute is tested elsewhere; here, what DVC decides to run)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from lipslib.pipeline.notebooks import NOTEBOOKS, STAGE_PARAMS_DIR

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def notebook_stage(name):
    return next(s for s in STAGES.values() if s["cmd"].split()[:3] == ["lips", "notebook", name])


def out_paths(stage, key="outs"):
    return {next(iter(o)) if isinstance(o, dict) else o for o in stage.get(key, [])}


def test_each_notebook_stage_tracks_its_own_parameters():
    assert out_paths(STAGES["config"]) == {f"{STAGE_PARAMS_DIR}/{n}.yaml" for n in NOTEBOOKS}
    # any key of the profiles or the defaults may change some notebook's values
    assert STAGES["config"]["params"] == [{"params.yaml": None}, {"lipslib/cfg/default.yaml": None}]
    for name in NOTEBOOKS:
        stage = notebook_stage(name)
        assert stage["params"] == [{f"{STAGE_PARAMS_DIR}/{name}.yaml": None}], name
        assert f"notebooks/{name}.ipynb" in stage["deps"]
        assert f"docs/notebooks/{name}.ipynb" in out_paths(stage) and "--docs docs/notebooks" in stage["cmd"]


def test_optimize_stage_exposes_the_dvclive_run():
    stage = notebook_stage("03_optimize")
    assert out_paths(stage, "metrics") == {"reports/dvclive/metrics.json"}
    assert stage["plots"] == [{"reports/dvclive/plots/metrics": {"cache": False, "x": "step"}}]


@pytest.fixture
def pipeline(tmp_path):
    """A git + DVC repository with this params.yaml, notebooks and dvc.yaml, notebook stages echoing."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "params.yaml", repo)
    shutil.copytree(ROOT / "notebooks", repo / "notebooks")
    config_files = STAGES["config"]["deps"] + [next(iter(p)) for p in STAGES["config"]["params"]]
    for dep in config_files:  # the config stage runs as it is, so its code deps and params files must exist
        if (ROOT / dep).is_file():
            (repo / dep).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / dep, repo / dep)
    stages = {}
    for name, stage in STAGES.items():
        if name != "config":
            stage = {
                "cmd": f"echo {name}",
                "params": stage["params"],
                "deps": [d for d in stage["deps"] if d.startswith("notebooks/")],
            }
        stages[name] = stage
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }

    def run(*cmd):
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    return run


def ran(output: str) -> list[str]:
    return sorted(re.findall(r"Running stage '(\w+)'", output))


def test_dvc_reruns_only_the_stages_that_read_a_changed_key(pipeline):
    assert ran(pipeline("dvc", "repro")) == sorted(STAGES)
    pipeline("git", "add", "-A")
    pipeline("git", "commit", "-qm", "baseline")
    assert ran(pipeline("dvc", "repro")) == []  # a second repro does nothing
    old = yaml.safe_load((ROOT / "params.yaml").read_text())["profiles"]["demo"]["schedule"]["target_gflops"]
    new = round(old - 0.1, 3)
    out = pipeline("dvc", "exp", "run", "-S", f"profiles.demo.schedule.target_gflops={new}")
    assert ran(out) == ["config", "optimize", "schedule"]  # Stage I (and 04, 05: not their keys) kept
    diff = {
        path: {key: (v["old"], v["new"]) for key, v in keys.items()}
        for path, keys in json.loads(pipeline("dvc", "params", "diff", "--json")).items()
    }
    assert diff == {
        "params.yaml": {"profiles.demo.schedule.target_gflops": (old, new)},  # what was set
        "params/02_schedule.yaml": {"schedule_target_gflops": (old, new)},  # what 02 and 03 ran with
        "params/03_optimize.yaml": {"schedule_target_gflops": (old, new)},
    }
