"""Sweeps over GFLOPs targets at the scale users run them: workers with explicit devices and threads (fast),
the DVC queue with two workers on a copy of the pipeline in a git + DVC repository, submitit's local executor,
a failing target that leaves the others intact, and a killed worker whose rerun finishes (slow)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT
from test_dvc import STAGES

from lipslib.errors import LipsError
from lipslib.pipeline.sweep import hydra_value, parse_targets, parse_time, plan_workers, set_params, slurm_parameters

# smoke scale: one LIPS iteration, 96 px, a tenth of coco128's images for the fine-tune
TINY = ["optimize.iterations=1", "imgsz=96", "finetune.fraction=0.1", "recover.images=16", "sensitivity.batch=16"]
ENV = {
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
    "OMP_NUM_THREADS": "1",
}


def env():
    return os.environ | ENV | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def lips(cwd, *args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "lipslib", *args],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ------------------------------------------------------------------ workers, fast


def test_two_cpu_workers_on_two_cores_get_one_thread_each():
    workers = plan_workers("cpu,cpu", cores=2)
    assert [(w.device, w.threads) for w in workers] == [("cpu", 1), ("cpu", 1)]
    assert [w.threads for w in plan_workers("cpu,cpu,cpu,cpu", cores=16)] == [4] * 4


def test_two_gpu_workers_get_one_gpu_each():
    workers = plan_workers("0,1", cores=16)
    assert [(w.device, w.gpus, w.threads, w.local_device()) for w in workers] == [
        ("0", (0,), 8, "0"),
        ("1", (1,), 8, "0"),
    ]
    ddp = plan_workers("0+1,2+3", cores=16)  # two DDP workers of two GPUs
    assert [(w.device, w.local_device()) for w in ddp] == [("0,1", "0,1"), ("2,3", "0,1")]


@pytest.mark.parametrize(
    "devices, threads, cores, says",
    [
        ("cpu,cpu,cpu", None, 2, "3 workers on 2 cores"),
        ("cpu,cpu", 2, 2, "2 workers × 2 threads = 4 > 2 cores"),
        ("0,0", None, 8, "GPU 0 is given twice"),
        ("0+1,1", None, 8, "GPU 1 is given twice"),
        ("gpu0", None, 8, "'gpu0' is not cpu"),
    ],
)
def test_oversubscription_is_refused_in_one_line(devices, threads, cores, says):
    with pytest.raises(LipsError, match=says) as e:
        plan_workers(devices, threads, cores)
    assert "\n" not in str(e.value)


def test_cli_refuses_oversubscribed_workers_before_any_work(tmp_path):
    proc = lips(
        ROOT,
        "sweep",
        "--targets",
        "3.9,4.0",
        "--direct",
        "--devices",
        "cpu,cpu",
        "--threads",
        "100000",
        "--profile",
        "smoke",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode != 0 and "> " in proc.stderr and "cores" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_a_target_above_the_base_stops_the_sweep_before_any_work(assets, tmp_path):
    """`lips sweep --targets 9.9`: one line naming the target and the base's GFLOPs, exit 2, nothing created."""
    out = tmp_path / "sweep"
    proc = lips(ROOT, "sweep", "--targets", "3.9,9.9", "--direct", "--profile", "smoke", "--out", str(out))
    assert proc.returncode == 2 and "target 9.9 GFLOPs is not below the base model's 4.2" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()
    proc = lips(
        ROOT,
        "sweep",
        "--targets",
        "3.9",
        "--direct",
        "--profile",
        "smoke",
        "--out",
        str(out),
        "--set",
        "schedule.target_ms=40",
    )
    assert proc.returncode == 2 and "schedule.target_ms" in proc.stderr and not out.exists()


def test_targets_and_times_parse():
    assert parse_targets("3.4, 3.6,3.8") == [3.4, 3.6, 3.8]
    for bad in ("", "3.4,x", "3.4,3.40"):
        with pytest.raises(LipsError):
            parse_targets(bad)
    assert [parse_time(t) for t in ("90", "1:30", "02:00:00", "1-00", "1-02:30")] == [90, 2, 120, 1440, 1590]


def test_dvc_overrides_keep_a_ddp_device_one_value():
    """`dvc exp run -S` reads Hydra's grammar, where 0,1 unquoted is a sweep over two values."""
    args = set_params("paper", {"device": "0,1", "threads": 8, "schedule.target_gflops": 3.4, "x": None})
    assert args == [
        "-S",
        "profile='paper'",
        "-S",
        "++profiles.paper.device='0,1'",
        "-S",
        "++profiles.paper.threads=8",
        "-S",
        "++profiles.paper.schedule.target_gflops=3.4",
        "-S",
        "++profiles.paper.x=null",
    ]
    assert hydra_value(True) == "true" and hydra_value([1, "a"]) == "[1,'a']"


def test_slurm_job_asks_for_its_gpus_time_and_requeue_signal(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    params = slurm_parameters({"partition": "gpu", "gpus_per_job": 2, "cpus_per_job": 16, "time": 600}, "sweep-paper")
    sbatch = _make_sbatch_string(command="python -m submitit.core._submit x", folder=str(tmp_path), **params)
    for line in (
        "--partition=gpu",
        "--gpus-per-node=2",
        "--cpus-per-task=16",
        "--time=600",
        "--ntasks-per-node=1",
        "--signal=USR2@120",
        "--job-name=sweep-paper",
    ):
        assert f"#SBATCH {line}" in sbatch, line
    with pytest.raises(LipsError, match="--partition"):
        slurm_parameters({}, "x")


# ------------------------------------------------------------------ submitit's local executor, slow


@pytest.mark.slow
def test_local_executor_two_workers_and_a_failing_target(assets, tmp_path):
    """Two workers of one thread through submitit's LocalExecutor (the code path of the Slurm jobs); the target
    whose run folder cannot be written (a file stands where its runs/ go) fails, the other finishes and is the
    Pareto table."""
    out = tmp_path / "sweep"
    (out / "4").mkdir(parents=True)
    (out / "4" / "runs").write_text("not a folder")
    proc = lips(
        ROOT,
        "sweep",
        "--targets",
        "3.9,4.0",
        "--direct",
        "--devices",
        "cpu,cpu",
        "--threads",
        "1",
        "--profile",
        "smoke",
        "--notebooks",
        "03_optimize",
        "--out",
        str(out),
        "--set",
        *TINY,
    )
    assert proc.returncode != 0, proc.stdout
    assert "1 of 2 targets failed" in proc.stderr and "pareto.csv): 4: " in proc.stderr and "4/runs" in proc.stderr
    assert "worker 0: device cpu, 1 thread, worker 1: device cpu, 1 thread" in proc.stdout
    done = json.loads((out / "3.9" / "result.json").read_text())
    assert (done["device"], done["threads"], done["status"]) == ("cpu", 1, "done")
    assert "runs" in json.loads((out / "4" / "failed.json").read_text())["error"]
    table = pd.read_csv(out / "pareto.csv")
    assert table.target_gflops.tolist() == [3.9] and table.threads.tolist() == [1]
    assert table.gflops.iloc[0] <= 3.9 * 1.01
    record = json.loads((out / "sweep.json").read_text())["targets"]
    assert [r["status"] for r in record] == ["done", "failed"]
    # the notebook ran with the worker's device and thread count: papermill's injected parameters
    import nbformat

    nb = nbformat.read(out / "3.9" / "notebooks" / "03_optimize.ipynb", as_version=4)
    injected = next(c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'device = "cpu"' in injected and "threads = 1" in injected


@pytest.mark.slow
def test_killed_worker_rerun_finishes_and_does_not_redo_finished_targets(assets, tmp_path):
    """One worker runs 3.9 (two iterations) then 4.0; it is killed once 4.0 has finished its first iteration. The
    rerun leaves 3.9 alone (result.json) and resumes 4.0's loop at iteration 2 (its state.json)."""
    out = tmp_path / "sweep"
    args = [
        sys.executable,
        "-m",
        "lipslib",
        "sweep",
        "--targets",
        "3.9,4.0",
        "--direct",
        "--devices",
        "cpu",
        "--threads",
        "1",
        "--profile",
        "smoke",
        "--notebooks",
        "03_optimize",
        "--out",
        str(out),
        "--set",
        *TINY,
        "optimize.iterations=2",
    ]
    first = subprocess.Popen(
        args, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    state = out / "4" / "runs" / "optimize" / "state.json"
    deadline = time.time() + 600
    try:
        while time.time() < deadline and first.poll() is None:
            if state.is_file() and len(json.loads(state.read_text())["done"]) >= 1:
                break
            time.sleep(1)
        assert first.poll() is None, "the sweep ended before it could be killed"
        assert state.is_file(), "4.0 never finished an iteration"
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the sweep, its worker and the worker's notebook kernel
        first.wait()
    finished = out / "3.9" / "result.json"
    assert finished.is_file() and not (out / "4" / "result.json").exists()
    kept = {p: p.stat().st_mtime_ns for p in (finished, out / "4" / "runs" / "optimize" / "iter_01" / "metrics.json")}
    proc = lips(ROOT, *args[3:])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # 3.9 not redone, 4.0's iteration 1 kept
    done = json.loads(state.read_text())["done"]
    assert [d["iteration"] for d in done] == [1, 2]
    assert pd.read_csv(out / "pareto.csv").target_gflops.tolist() == [3.9, 4.0]


# ------------------------------------------------------------------ DVC's queue, slow


@pytest.fixture
def dvc_repo(tmp_path):
    """A git + DVC repository holding this pipeline's params.yaml, notebooks and stages config, sensitivity and
    optimize (their lipslib dependencies and params files dropped: lipslib runs from the installed package, and a
    lipslib/ folder in the repository would shadow it), and dvc.lock as committed here: a clean clone, whose DVC
    cache holds nothing."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("params.yaml", "dvc.lock"):
        shutil.copy(ROOT / name, repo)
    for name in ("notebooks", "params"):
        shutil.copytree(ROOT / name, repo / name)
    stages = {}
    for name in ("config", "sensitivity", "optimize"):
        stage = dict(STAGES[name])
        stage["deps"] = [d for d in stage["deps"] if d.startswith(("notebooks", "runs/"))]
        files = [(p if isinstance(p, str) else next(iter(p)), p) for p in stage.get("params", [])]
        stage["params"] = [p for f, p in files if not f.startswith("lipslib/")]
        stages[name] = stage
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    lock["stages"] = {k: v for k, v in lock["stages"].items() if k in stages}
    for v in lock["stages"].values():
        v["params"] = {f: p for f, p in v.get("params", {}).items() if not f.startswith("lipslib/")}
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))

    def run(*cmd):
        proc = subprocess.run(cmd, cwd=repo, env=env(), capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "pipeline")
    yield repo, run
    subprocess.run(
        ["dvc", "queue", "stop", "--kill"], cwd=repo, env=env(), capture_output=True, timeout=60, check=False
    )


def shown(run) -> dict:
    """{experiment name: (params/03_optimize.yaml values, best metrics)} from `dvc exp show --json`, for the
    experiments that ran the loop (the workspace's Stage I run is an experiment too, without them)."""
    out = {}
    for baseline in json.loads(run("dvc", "exp", "show", "--json")):
        for group in baseline.get("experiments") or []:
            for rev in group["revs"]:
                data = rev["data"]
                metrics = data["metrics"].get("reports/dvclive/metrics.json", {})
                if "data" in metrics:
                    out[rev["name"]] = (data["params"]["params/03_optimize.yaml"]["data"], metrics["data"]["best"])
    return out


@pytest.mark.slow
def test_dvc_queue_two_targets_two_workers(assets, dvc_repo):
    """`lips sweep --devices cpu,cpu` from a clean clone: Stage I once in the workspace, two experiments run by
    `dvc queue start -j 2`, each with its device and one thread, both in `dvc exp show` and in one Pareto table.
    A rerun redoes neither; a sweep with a target above the base is refused in one line before anything runs."""
    repo, run = dvc_repo
    sweep = [
        "sweep",
        "--devices",
        "cpu,cpu",
        "--threads",
        "1",
        "--profile",
        "smoke",
        "--notebooks",
        "03_optimize",
        "--set",
        *TINY,
    ]
    proc = lips(repo, *sweep[:1], "--targets", "3.9,4.0", *sweep[1:])
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    assert proc.stdout.count("Stage I once, in the workspace") == 1
    assert "queued sweep-smoke-3.9 (device cpu, 1 thread)" in proc.stdout
    assert "queued sweep-smoke-4 (device cpu, 1 thread)" in proc.stdout
    exps = shown(run)
    assert {n: (p["schedule_target_gflops"], p["device"], p["threads"]) for n, (p, _) in exps.items()} == {
        "sweep-smoke-3.9": (3.9, "cpu", 1),
        "sweep-smoke-4": (4.0, "cpu", 1),
    }
    for name, (_, best) in exps.items():
        assert best["gflops"] <= best["target_cost"] * 1.01 and best["iteration"] == 1, name
    for name in exps:  # neither experiment ran Stage I: it came from the workspace's dvc.lock and the cache
        log = run("dvc", "queue", "logs", name)
        assert "Running stage 'optimize'" in log and "stage 'sensitivity'" not in log, log[-1500:]
    table = pd.read_csv(repo / "reports" / "sweeps" / "pareto.csv")
    assert table.target_gflops.tolist() == [3.9, 4.0] and set(table.device) == {"cpu"} and set(table.threads) == {1}
    assert table.map50_95.tolist() == pytest.approx(
        [exps["sweep-smoke-3.9"][1]["map50_95"], exps["sweep-smoke-4"][1]["map50_95"]], abs=1e-6
    )
    assert (repo / "reports" / "sweeps" / "pareto.png").stat().st_size > 5_000

    proc = lips(repo, *sweep[:1], "--targets", "3.9,4.0", *sweep[1:])
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "sweep-smoke-3.9 finished earlier" in proc.stdout and "sweep-smoke-4 finished earlier" in proc.stdout
    assert "queued" not in proc.stdout
    assert pd.read_csv(repo / "reports" / "sweeps" / "pareto.csv").equals(table)
    proc = lips(repo, *sweep[:1], "--targets", "3.9,4.0,5.0", *sweep[1:])
    assert proc.returncode != 0 and "5 GFLOPs is not below the base" in proc.stderr, proc.stderr[-1500:]
    assert len(proc.stderr.strip().splitlines()) == 1 and "queued" not in proc.stdout
    assert set(shown(run)) == {"sweep-smoke-3.9", "sweep-smoke-4"}


def test_dvc_sweep_never_rewrites_uncommitted_settings(dvc_repo):
    """Stage I for another profile would rewrite params.yaml in the workspace: with uncommitted changes there the
    sweep refuses in one line, before queueing anything, and leaves the file as it was."""
    repo, run = dvc_repo
    params = repo / "params.yaml"
    params.write_text(params.read_text() + "\n# a change of the user's\n")
    before = params.read_text()
    proc = lips(
        repo,
        "sweep",
        "--targets",
        "3.9",
        "--devices",
        "cpu",
        "--threads",
        "1",
        "--profile",
        "smoke",
        "--notebooks",
        "03_optimize",
    )
    assert proc.returncode != 0 and "uncommitted changes" in proc.stderr and "--direct" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert params.read_text() == before and "Queued" not in run("dvc", "queue", "status")
