import json

import pytest

from lipslib.errors import LipsError
from lipslib.pruning.spec import parse_spec, read_spec, write_spec


def test_reads_paper_format_and_skips_header(paper):
    ratios = read_spec(paper / "iter_24" / "prune_spec.txt")
    assert len(ratios) == 29
    assert ratios["model.0.conv"] == pytest.approx(0.2348)


def test_yaml_json_and_uniform(tmp_path):
    (tmp_path / "r.yaml").write_text("model.3.conv: 0.25\nmodel.5.conv: 0\n")
    (tmp_path / "r.json").write_text(json.dumps({"model.3.conv": 0.25}))
    assert read_spec(tmp_path / "r.yaml") == {"model.3.conv": 0.25, "model.5.conv": 0.0}
    assert read_spec(tmp_path / "r.json") == {"model.3.conv": 0.25}
    assert read_spec("0.3", default_layers=["a", "b"]) == {"a": 0.3, "b": 0.3}


def test_write_then_read_roundtrip(tmp_path):
    ratios = {"model.3.conv": 0.123456, "model.0.conv": 0.3}
    path = write_spec(tmp_path / "prune_spec.txt", ratios)
    assert path.read_text().splitlines()[1] == "model.0.conv: 0.3"  # header, then sorted lines
    assert read_spec(path) == ratios


@pytest.mark.parametrize(
    "text, message",
    [
        ("header\nmodel.3.conv 0.3\n", "expected 'layer: ratio'"),
        ("header\nmodel.3.conv: 1.0\n", "outside [0, 1)"),
        ("header\nmodel.3.conv: -0.2\n", "outside [0, 1)"),
        ("header\nmodel.3.conv: abc\n", "expected 'layer: ratio'"),
        ("only a header\n", "no 'layer: ratio' lines"),
    ],
)
def test_malformed_specs_say_where(text, message):
    with pytest.raises(LipsError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        parse_spec(text, "spec.txt")


def test_bad_files(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(LipsError, match="expected a mapping"):
        read_spec(tmp_path / "list.yaml")
    with pytest.raises(LipsError, match="not found"):
        read_spec(tmp_path / "missing.yaml")
