import pytest

from lipslib.assets import resolve as resolver
from lipslib.errors import LipsError


def test_resolves_from_asset_folder(assets, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing local: the asset folder must answer
    assert assets_path(resolver.resolve_weights("lips_iter24_best.pt")) == "weights/lips_iter24_best.pt"
    assert assets_path(resolver.resolve_data("coco128.yaml")) == "datasets/coco128/coco128.yaml"
    assert assets_path(resolver.resolve_data("coco128")) == "datasets/coco128/coco128.yaml"
    assert assets_path(resolver.resolve_video("crosswalk.mp4")) == "videos/crosswalk.mp4"


def assets_path(p):
    parts = str(p).split("/")
    return "/".join(parts[-3:]) if "datasets" in parts else "/".join(parts[-2:])


def test_missing_asset_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("LIPS_ASSETS", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LipsError) as e:
        resolver.resolve_weights("missing_model.pt")
    msg = str(e.value)
    assert "\n" not in msg and "missing_model.pt" in msg and str(tmp_path / "weights") in msg and "LIPS_ASSETS" in msg


def test_unset_or_bad_asset_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("LIPS_ASSETS", raising=False)
    assert resolver.asset_root() is None
    monkeypatch.setenv("LIPS_ASSETS", str(tmp_path / "nope"))
    with pytest.raises(LipsError, match="is not a folder"):
        resolver.asset_root()
