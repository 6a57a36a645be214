import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _assets() -> Path | None:
    value = os.environ.get("LIPS_ASSETS") or (ROOT.parent / "shared" / "assets")
    path = Path(value)
    return path.resolve() if path.is_dir() else None


@pytest.fixture(scope="session")
def assets() -> Path:
    path = _assets()
    if path is None:
        pytest.skip("real assets not found: set LIPS_ASSETS to the shared assets folder")
    os.environ["LIPS_ASSETS"] = str(path)
    return path


@pytest.fixture(scope="session")
def coco128(assets) -> Path:
    return assets / "datasets" / "coco128" / "coco128.yaml"


@pytest.fixture(scope="session")
def paper(assets) -> Path:
    return assets / "lips_paper"


@pytest.fixture(scope="session")
def yolo11n():
    from lipslib.engine import load_model

    return load_model("yolo11n.yaml")
