import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts' shared harness, as they import it
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _assets() -> Path | None:
    value = os.environ.get("LIPS_ASSETS") or (ROOT.parent / "shared" / "assets")
    path = Path(value)
    return path.resolve() if path.is_dir() else None


def _missing_assets() -> str:
    return (
        f"real assets not found (LIPS_ASSETS={os.environ.get('LIPS_ASSETS') or 'unset'}, "
        f"no {ROOT.parent / 'shared' / 'assets'}): set LIPS_ASSETS to the shared assets folder"
    )


def pytest_collection_finish(session):
    """In CI, tests that need the assets must run: without them the run fails here, in one line, rather than
    skipping them and going green. Locally they skip."""
    if IN_CI and _assets() is None and any("assets" in item.fixturenames for item in session.items):
        pytest.exit(f"CI=true: {_missing_assets()}", returncode=1)


@pytest.fixture(scope="session")
def assets() -> Path:
    path = _assets()
    if path is None:
        pytest.skip(_missing_assets())
    os.environ["LIPS_ASSETS"] = str(path)
    return path


@pytest.fixture(scope="session")
def coco128(assets) -> Path:
    return assets / "datasets" / "coco128" / "coco128.yaml"


@pytest.fixture(scope="session")
def paper(assets) -> Path:
    return assets / "lips_paper"


@pytest.fixture(scope="session")
def iter01(assets):
    """The authors' iter-01 (read-only: tests prune copies of it)."""
    from lipslib.pruning.engine import load_model

    return load_model(assets / "weights" / "lips_iter01_best.pt")


@pytest.fixture(scope="session")
def images(coco128):
    """Calibration images (coco128 train) and held-out ones (val) at 320 px, for the recovery tests."""
    from lipslib.datasets import calibration_images

    return {
        "calibrate": calibration_images(coco128, "train", 32, 320),
        "held": calibration_images(coco128, "val", 8, 320),
    }


@pytest.fixture(scope="session")
def yolo11n():
    from lipslib.pruning.engine import load_model

    return load_model("yolo11n.yaml")


@pytest.fixture
def foreign_threads() -> int:
    """torch set to a thread count Ultralytics' select_device never sets (it sets NUM_THREADS on the CPU), and the
    previous count restored afterwards: a test sees whether a call left Ultralytics' count behind."""
    import torch
    from ultralytics.utils import NUM_THREADS

    previous = torch.get_num_threads()
    torch.set_num_threads(NUM_THREADS + 1)
    yield NUM_THREADS + 1
    torch.set_num_threads(previous)
