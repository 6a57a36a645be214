import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lipslib.assets import catalog
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


# --- the catalog: what a user can get (lips assets) ---------------------------------------------------------------

REPO_URL = (
    "https://github.com/Myke-Valadao/"
    "LIPS-Layer-Importance-Pruning-Schedules-with-Cost-Aware-Step-Adaptation-for-Deep-Detection-Networks"
)


def lips(*args, cwd, env=None):
    """`lips` as a user runs it, with `env` replacing the inherited LIPS_ASSETS (None: unset)."""
    environ = {k: v for k, v in os.environ.items() if k != "LIPS_ASSETS"}
    environ.update({"LIPS_ASSETS": str(env)} if env else {})
    return subprocess.run(
        [sys.executable, "-m", "lipslib", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ,
        timeout=300,
    )


def one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_catalog_covers_every_shared_file(assets):
    """Each file of the shared paper logs has a repository path and the shared copy's sha256; so do the weights."""
    files = catalog.load_catalog()["assets"]["lips_paper"]["files"]
    shared = {
        p.relative_to(assets / "lips_paper").as_posix() for p in (assets / "lips_paper").rglob("*") if p.is_file()
    }
    assert set(files) == shared and len(shared) == 105
    report = catalog.check(assets)
    assert report["ok"], [(r["name"], r["detail"]) for r in report["assets"] if r["status"] != "ok"]


def test_lips_assets_without_asset_folder_says_what_to_fetch(tmp_path):
    proc = lips("assets", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    out = proc.stdout
    assert "LIPS_ASSETS is unset" in out and REPO_URL in out
    assert "http://images.cocodataset.org/zips/val2017.zip" in out
    assert "https://github.com/ultralytics/assets/releases/download/v0.0.0/coco2017labels.zip" in out
    for name in ("lips_iter01_best.pt", "lips_iter24_best.pt", "coco_val2193", "coco128", "lips_paper"):
        assert f"{name} " in out
    assert "$LIPS_ASSETS/datasets/coco_val2193/coco_val2193.yaml" in out and "not recorded" in out  # the videos
    report = json.loads(lips("assets", "list", "--json", cwd=tmp_path).stdout)
    assert report["root"] is None and not report["ok"] and {r["status"] for r in report["assets"]} == {"missing"}


def test_lips_assets_with_the_shared_assets(assets, tmp_path):
    proc = lips("assets", cwd=tmp_path, env=assets)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MISSING" not in proc.stdout and "DIFFERS" not in proc.stdout and "INCOMPLETE" not in proc.stdout
    assert "lips_iter24_best.pt   ok          found, sha256 ok" in proc.stdout
    assert "found, 105 files, sha256 ok" in proc.stdout and "tests:            ready" in proc.stdout
    report = json.loads(lips("assets", "--json", cwd=tmp_path, env=assets).stdout)
    assert report["ok"] and all(r["status"] == "ok" for r in report["assets"])


def test_lips_assets_says_what_differs(assets, tmp_path):
    """A copy of the shared assets with one paper log changed and one checkpoint gone: exit 1, both named."""
    root = tmp_path / "assets"
    shutil.copytree(assets / "lips_paper", root / "lips_paper")
    (root / "weights").mkdir()
    (root / "weights" / "lips_iter01_best.pt").symlink_to(assets / "weights" / "lips_iter01_best.pt")
    spec = root / "lips_paper" / "iter_03" / "prune_spec.txt"
    spec.chmod(0o644)
    spec.write_text(spec.read_text() + "\n")
    report = catalog.check(root)
    status = {r["name"]: (r["status"], r["detail"]) for r in report["assets"]}
    assert status["lips_iter01_best.pt"][0] == "ok" and status["lips_iter24_best.pt"][0] == "missing"
    assert status["lips_paper"][0] == "differs" and "iter_03/prune_spec.txt" in status["lips_paper"][1]
    assert not report["ok"] and "lips_iter24_best.pt" in report["uses"]["benchmarks"]
    assert report["uses"]["demo"] == ["coco_val2193", "crosswalk.mp4", "lips_paper"]


def _ultralytics_coco(assets, tmp_path, extra=5) -> tuple[Path, list[str]]:
    """A COCO 2017 folder in Ultralytics' layout (symlinks): the shared coco_val2193's images and labels plus
    `extra` val2017 images and labels it does not hold (from the shared coco128), as a full val2017 would."""
    coco = tmp_path / "coco"
    ref = assets / "datasets" / "coco_val2193"
    held = {p.name for p in (ref / "images" / "val2017").iterdir()}
    more = sorted(
        p.name for p in (assets / "datasets" / "coco128" / "images" / "val2017").iterdir() if p.name not in held
    )
    for top, suffix in (("images", ".jpg"), ("labels", ".txt")):
        (coco / top / "val2017").mkdir(parents=True)
        for p in (ref / top / "val2017").iterdir():
            (coco / top / "val2017" / p.name).symlink_to(p)
        for name in more[:extra]:
            stem = Path(name).stem + suffix
            (coco / top / "val2017" / stem).symlink_to(assets / "datasets" / "coco128" / top / "val2017" / stem)
    return coco, more[:extra]


def test_build_coco_val2193_reproduces_the_shared_copy(assets, tmp_path):
    from lipslib.datasets import check_data, split_images

    coco, extra = _ultralytics_coco(assets, tmp_path)
    rec = catalog.build("coco_val2193", coco, tmp_path / "datasets", progress=False)
    built, ref = tmp_path / "datasets" / "coco_val2193", assets / "datasets" / "coco_val2193"
    assert rec["yaml"] == str(built / "coco_val2193.yaml") and (rec["images"], rec["labels"]) == (2193, 2193)
    assert rec["labels_identical"] and rec["labels_sha256"] == catalog.manifest("coco_val2193")["labels_sha256"]
    for name in ("coco_val2193.yaml", "finetune.txt", "select.txt", "report.txt"):
        assert (built / name).read_bytes() == (ref / name).read_bytes(), name
    for top in ("images", "labels"):
        names = sorted(p.name for p in (built / top / "val2017").iterdir())
        assert names == sorted(p.name for p in (ref / top / "val2017").iterdir())  # none of the extra ones
        assert not (built / top / "val2017" / extra[0]).exists()
    for p in (ref / "labels" / "val2017").iterdir():
        copy = built / "labels" / "val2017" / p.name
        assert not copy.is_symlink() and copy.read_bytes() == p.read_bytes()
    some = next((ref / "images" / "val2017").iterdir())
    assert (built / "images" / "val2017" / some.name).read_bytes() == some.read_bytes()
    assert not [p for p in (tmp_path / "datasets").iterdir() if p.name != "coco_val2193"]  # no temporary left
    info = check_data(built / "coco_val2193.yaml", splits=("train", "val", "test"))  # Ultralytics' own rules
    assert {s: len(split_images(info, s)) for s in ("train", "val", "test")} == {"train": 793, "val": 400, "test": 1000}


def test_build_coco128_linked_through_the_cli(assets, tmp_path):
    """The shared coco128 is itself in Ultralytics' layout (train2017 and val2017): a COCO folder holding it."""
    from lipslib.datasets import check_data

    ref = assets / "datasets" / "coco128"
    proc = lips("assets", "build", "coco128", "--coco", ref, "--out", tmp_path / "d", "--link", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "built coco128: 256 images, 256 labels (linked)" in proc.stdout and "labels identical" in proc.stdout
    built = tmp_path / "d" / "coco128"
    assert (built / "coco128.yaml").read_text() == (ref / "coco128.yaml").read_text()
    for top in ("images", "labels"):
        for split in ("train2017", "val2017"):
            names = sorted(p.name for p in (built / top / split).iterdir())
            assert names == sorted(p.name for p in (ref / top / split).iterdir())
    assert (built / "labels" / "train2017" / "000000000009.txt").is_symlink()
    check_data(built / "coco128.yaml", splits=("train", "val"))
    # differing labels are said, not refused: the build reads them as they are
    labels = tmp_path / "coco" / "labels" / "val2017"
    shutil.copytree(ref / "images", tmp_path / "coco" / "images", symlinks=True)
    shutil.copytree(ref / "labels", tmp_path / "coco" / "labels")
    first = sorted(labels.iterdir())[0]
    first.chmod(0o644)
    first.write_text(first.read_text() + "0 0.5 0.5 0.1 0.1\n")
    proc = lips("assets", "build", "coco128", "--coco", tmp_path / "coco", "--out", tmp_path / "e", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "labels DIFFER from the reference copy's" in proc.stdout


def test_bad_build_input_is_one_line(tmp_path):
    one_line_error(
        lips("assets", "build", "coco2017", "--coco", tmp_path, cwd=tmp_path), "unknown dataset 'coco2017'", "coco128"
    )
    one_line_error(lips("assets", "build", "coco_val2193", "--coco", tmp_path / "nope", cwd=tmp_path), "not a folder")
    one_line_error(lips("assets", "build", "coco_val2193", "--coco", tmp_path, cwd=tmp_path), "no images/val2017/")
    coco = tmp_path / "coco"
    for top in ("images", "labels"):
        (coco / top / "val2017").mkdir(parents=True)
    (coco / "images" / "val2017" / "000000000139.jpg").write_bytes(b"")
    proc = lips("assets", "build", "coco_val2193", "--coco", coco, "--out", tmp_path / "out", cwd=tmp_path)
    one_line_error(proc, "lacks 2192 of coco_val2193's 2193 images", "images/val2017/000000000785.jpg", "2193 labels")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_build_refuses_an_existing_output(assets, tmp_path):
    (tmp_path / "d" / "coco128").mkdir(parents=True)
    (tmp_path / "d" / "coco128" / "mine.txt").write_text("keep me")
    ref = assets / "datasets" / "coco128"
    proc = lips("assets", "build", "coco128", "--coco", ref, "--out", tmp_path / "d", cwd=tmp_path)
    one_line_error(proc, "exists and is not empty")
    assert [p.name for p in (tmp_path / "d" / "coco128").iterdir()] == ["mine.txt"]


def test_fetch_checks_sha256_and_leaves_nothing_on_failure(assets, tmp_path, monkeypatch):
    """Offline, against file:// URLs: a good file lands; a corrupted or absent one is one error and no file."""
    mirror = tmp_path / "mirror"
    monkeypatch.setattr(catalog, "RAW", mirror.as_uri() + "/{path}")  # the repository, as a local folder
    best = mirror / "runs" / "iter_01" / "ft" / "finetune" / "weights" / "best.pt"
    best.parent.mkdir(parents=True)
    shutil.copyfile(assets / "weights" / "lips_iter01_best.pt", best)

    done = catalog.fetch(["lips_iter01_best.pt"], to=tmp_path / "a", progress=False)
    got = tmp_path / "a" / "weights" / "lips_iter01_best.pt"
    assert done == [{"name": "lips_iter01_best.pt", "where": str(got), "fetched": 1, "present": 0}]
    assert (
        catalog.sha256_of(got) == catalog.load_catalog()["assets"]["lips_iter01_best.pt"]["files"][got.name]["sha256"]
    )
    assert catalog.fetch(["lips_iter01_best.pt"], to=tmp_path / "a", progress=False)[0]["present"] == 1

    data = bytearray(best.read_bytes())
    data[1000] ^= 0xFF
    best.write_bytes(bytes(data))
    with pytest.raises(LipsError, match="sha256") as e:
        catalog.fetch(["lips_iter01_best.pt"], to=tmp_path / "b", progress=False)
    assert "\n" not in str(e.value) and best.as_uri() in str(e.value) and "by hand" in str(e.value)
    assert list((tmp_path / "b" / "weights").iterdir()) == []  # not even a partial file

    with pytest.raises(LipsError, match="downloading .* failed") as e:  # not in the mirror: as a network failure
        catalog.fetch(["lips_iter24_best.pt"], to=tmp_path / "b", progress=False)
    assert "\n" not in str(e.value) and "last.pt" in str(e.value) and "by hand" in str(e.value)
    assert list((tmp_path / "b" / "weights").iterdir()) == []

    (tmp_path / "c" / "weights").mkdir(parents=True)
    (tmp_path / "c" / "weights" / "lips_iter01_best.pt").write_bytes(b"mine")
    with pytest.raises(LipsError, match="is not the authors' file"):  # a different file there stays untouched
        catalog.fetch(["lips_iter01_best.pt"], to=tmp_path / "c", progress=False)
    assert (tmp_path / "c" / "weights" / "lips_iter01_best.pt").read_bytes() == b"mine"


def test_fetch_refuses_what_it_cannot_download(tmp_path):
    one_line_error(lips("assets", "fetch", "nope.pt", "--to", tmp_path, cwd=tmp_path), "unknown asset 'nope.pt'")
    one_line_error(lips("assets", "fetch", "coco_val2193", cwd=tmp_path), "lips assets build coco_val2193")
    one_line_error(lips("assets", "fetch", "crosswalk.mp4", cwd=tmp_path), "has no download")
    assert list(tmp_path.iterdir()) == []
