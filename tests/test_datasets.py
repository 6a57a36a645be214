"""Datasets are listed as Ultralytics lists them (Ultralytics' COCO layout: `./` lines resolved
against the list's folder, absolute lines, folders, lists of folders); the selection/report halves resolve
from anywhere; coco_val2193 works like coco128."""

from pathlib import Path

import pytest

from lipslib.datasets import check_data, split_images
from lipslib.errors import LipsError
from lipslib.pipeline.loop import prepare_data, split_halves


@pytest.fixture(scope="module")
def coco_val2193(assets) -> Path:
    return assets / "datasets" / "coco_val2193" / "coco_val2193.yaml"


def test_coco_layout_splits_resolve_like_ultralytics(coco_val2193):
    info = check_data(coco_val2193, splits=("train", "val", "test"))
    counts = {s: len(split_images(info, s)) for s in ("train", "val", "test")}
    assert counts == {"train": 793, "val": 400, "test": 1000}  # shared/README
    root = Path(coco_val2193).parent  # each ./ line is relative to its list's folder
    lines = (root / "select.txt").read_text().split()
    assert split_images(info, "val") == sorted(root / line[2:] for line in lines)
    assert all(p.is_file() for p in split_images(info, "test"))


def test_every_list_form(coco128, tmp_path):
    """Folders, lists of folders, `./` lines (relative to the list), absolute lines, as Ultralytics reads them."""
    root = Path(coco128).parent
    images = sorted((root / "images" / "val2017").iterdir())
    (tmp_path / "images").symlink_to(root / "images")
    (tmp_path / "labels").symlink_to(root / "labels")
    (tmp_path / "rel.txt").write_text("".join(f"./images/val2017/{p.name}\n" for p in images[:5]))
    (tmp_path / "abs.txt").write_text("".join(f"{p}\n" for p in images[5:9]))
    (tmp_path / "d.yaml").write_text(
        "train: [images/train2017, images/val2017]\nval: rel.txt\ntest: abs.txt\nnames:\n  0: person\n"
    )
    info = check_data(tmp_path / "d.yaml", splits=("train", "val", "test"))
    # folders are resolved by Ultralytics' dataset check (through the symlink), list lines are not
    both = sorted(p for d in ("train2017", "val2017") for p in (root / "images" / d).iterdir())
    assert split_images(info, "train") == both and len(both) == 256
    assert split_images(info, "val") == [tmp_path / "images" / "val2017" / p.name for p in images[:5]]
    assert split_images(info, "test") == images[5:9]


def test_halves_resolve_from_anywhere(coco_val2193, tmp_path, monkeypatch):
    halves = split_halves(coco_val2193, tmp_path / "data")
    assert halves.name == "coco_val2193_halves.yaml"
    monkeypatch.chdir(tmp_path.parent)  # lists of ./ lines copied verbatim would no longer resolve here
    info = check_data(halves, splits=("train", "val", "test"))
    select, report = split_images(info, "val"), split_images(info, "test")
    assert len(select) == len(report) == 200 and not set(select) & set(report)
    assert all(p.is_absolute() and p.is_file() for p in select + report)


def test_report_on_the_datasets_own_test_split(coco_val2193, coco128, tmp_path):
    data, select, report = prepare_data(coco_val2193, "test", tmp_path)
    assert (select, report) == ("val", "test") and Path(data) == Path(coco_val2193)
    with pytest.raises(LipsError, match="no 'test' split"):
        prepare_data(coco128, "test", tmp_path)


def test_missing_folder_names_what_is_missing(tmp_path):
    (tmp_path / "bad.yaml").write_text("train: images/nope\nval: images/nope\nnames:\n  0: person\n")
    with pytest.raises(LipsError) as e:
        check_data(tmp_path / "bad.yaml")
    message = str(e.value)
    assert "\n" not in message and str(tmp_path / "images" / "nope") in message and "download directory" not in message


def test_missing_list_file(coco128, tmp_path):
    root = Path(coco128).parent
    (tmp_path / "images").symlink_to(root / "images")
    (tmp_path / "d.yaml").write_text("train: images/val2017\nval: images/val2017\ntest: missing.txt\nnames:\n  0: a\n")
    with pytest.raises(LipsError, match="split 'test'.*missing.txt"):
        check_data(tmp_path / "d.yaml", splits=("test",))
