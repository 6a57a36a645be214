"""Every JSON file lipslib writes is strict JSON: a missing value is null, never NaN or Infinity, which strict
readers (jq, browsers, JSON.parse) refuse. All of lipslib's JSON goes through `files.write_json`."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from lipslib.files import strict_json, write_json


def _strict_load(path: Path):
    def refuse(token):
        raise ValueError(f"{path}: non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_write_json_writes_null_for_missing_values(tmp_path):
    record = {
        "a": float("nan"),
        "b": [1.0, float("inf"), -float("inf")],
        "c": {"d": np.float64("nan")},
        "e": np.float32(0.5),
        "f": np.int64(3),
        "g": (1, 2),
        "h": None,
        "i": "NaN",
    }
    path = write_json(tmp_path / "r.json", record)
    assert _strict_load(path) == {
        "a": None,
        "b": [1.0, None, None],
        "c": {"d": None},
        "e": 0.5,
        "f": 3,
        "g": [1, 2],
        "h": None,
        "i": "NaN",
    }
    assert "NaN" not in path.read_text().replace('"NaN"', "")


def test_strict_json_keeps_finite_values_as_they_are():
    record = {"x": 0.1, "y": [1, 2.5, True], "z": {"w": "text"}}
    assert strict_json(record) == record
    assert strict_json(float("nan")) is None and math.isnan(float("nan"))


def test_no_lipslib_module_writes_json_around_write_json():
    """json.dump(s) to a file anywhere else in lipslib would bypass the strict writer (printing to stdout and the
    latency cache, which holds only measured numbers, are the known exceptions)."""
    allowed = {"cli.py", "latency.py", "files.py"}
    offenders = [
        p.name
        for p in (ROOT / "lipslib").glob("*.py")
        if p.name not in allowed and re.search(r"json\.dump\(|\.write_text\(json\.dumps", p.read_text())
    ]
    assert not offenders, offenders


@pytest.mark.parametrize("path", sorted((ROOT / "reports").rglob("*.json")), ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_reports_are_strict_json(path):
    _strict_load(path)
