"""Where files come from: a path that exists, then the LIPS_ASSETS folder, then Ultralytics' download.

`LIPS_ASSETS` names a folder laid out as ../shared/assets: weights/, datasets/<name>/<name>.yaml,
videos/, lips_paper/. This module is the only place that knows that layout.
"""

from __future__ import annotations

import os
from pathlib import Path

from lipslib.errors import LipsError

ENV = "LIPS_ASSETS"
KINDS = {"weights": "weights file", "datasets": "dataset yaml", "videos": "video", "lips_paper": "paper log"}


def asset_root() -> Path | None:
    """The LIPS_ASSETS folder, or None when the variable is unset. A set but missing folder is an error."""
    value = os.environ.get(ENV)
    if not value:
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        raise LipsError(f"{ENV}={value} is not a folder; point it at a folder with weights/, datasets/, videos/")
    return root.resolve()


def _where(root: Path | None) -> str:
    return f"{ENV}={root}" if root else f"{ENV} is unset"


def asset_path(kind: str, name: str, root: Path) -> Path:
    """Where an asset lies in the asset folder `root`: the layout of ../shared/assets.

    Args:
        kind: weights, datasets, videos or lips_paper (the keys of KINDS: the asset folder's subfolders).
        name: the file's name in that folder (a path below it for lips_paper); a dataset's name or yaml name.

    Returns:
        root/kind/name, or root/datasets/<stem>/<stem>.yaml for a dataset.

    Examples:
        >>> asset_path("datasets", "coco128", Path("/a")).as_posix()
        '/a/datasets/coco128/coco128.yaml'
        >>> asset_path("weights", "lips_iter01_best.pt", Path("/a")).as_posix()
        '/a/weights/lips_iter01_best.pt'
    """
    if kind not in KINDS:
        raise ValueError(f"unknown asset kind '{kind}'; one of {', '.join(KINDS)}")
    if kind == "datasets":  # datasets/<stem>/<stem>.yaml, the layout of shared/assets
        p = Path(name)
        return root / kind / p.stem / (p.stem + (p.suffix or ".yaml"))
    return root / kind / name


def _candidates(kind: str, name: str) -> list[Path]:
    root = asset_root()
    if root is None:
        return []
    p = Path(name)
    found = [root / kind / p.name]
    if kind == "datasets":
        found.insert(0, asset_path(kind, p.name, root))
    return found


def _local(kind: str, name: str | os.PathLike) -> tuple[Path | None, list[Path]]:
    """First existing path among `name` itself and the asset-folder candidates, plus what was looked at."""
    looked = [Path(name)] + _candidates(kind, str(name))
    for p in looked:
        if p.is_file():
            return p.resolve(), looked
    return None, looked


def _missing(kind: str, name, looked: list[Path], extra: str = "") -> LipsError:
    places = ", ".join(str(p) for p in looked)
    return LipsError(
        f"{KINDS[kind]} '{name}' not found (looked in: {places}; "
        f"{_where(asset_root())}){extra}; pass an existing path or put the file under ${ENV}/{kind}/"
    )


def resolve_weights(name: str | os.PathLike) -> Path:
    """A `.pt` file: local path, then $LIPS_ASSETS/weights/, then Ultralytics' release download."""
    path, looked = _local("weights", name)
    if path:
        return path
    if Path(name).name == str(name) and str(name).endswith(".pt"):  # bare name: maybe an Ultralytics release
        from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES, attempt_download_asset

        if Path(name).stem in {Path(n).stem for n in GITHUB_ASSETS_NAMES}:
            try:
                got = Path(attempt_download_asset(str(name)))
                if got.is_file():
                    return got.resolve()
            except Exception as e:  # offline: Ultralytics raises a ConnectionError after retries
                raise _missing(
                    "weights", name, looked, f"; the Ultralytics download failed ({type(e).__name__})"
                ) from None
    raise _missing("weights", name, looked)


def resolve_data(name: str | os.PathLike) -> Path | str:
    """A dataset yaml: local path, then $LIPS_ASSETS/datasets/<stem>/<stem>.yaml, then Ultralytics' own
    dataset yamls (e.g. coco.yaml, which Ultralytics downloads on first use)."""
    path, looked = _local("datasets", name)
    if path:
        return path
    if Path(name).name == str(name):  # bare name: maybe one of Ultralytics' dataset yamls
        from ultralytics.utils.checks import check_yaml

        try:
            found = check_yaml(str(name) if Path(name).suffix else f"{name}.yaml", hard=False)
        except Exception:  # Ultralytics may try a download for unknown names; offline that fails
            found = None
        if found:
            return str(found)
    raise _missing("datasets", name, looked)


def resolve_video(name: str | os.PathLike) -> Path:
    path, looked = _local("videos", name)
    if path:
        return path
    raise _missing("videos", name, looked)


def paper_dir() -> Path:
    """The authors' published logs ($LIPS_ASSETS/lips_paper)."""
    root = asset_root()
    if root is None or not (root / "lips_paper").is_dir():
        raise LipsError(f"the LIPS paper logs were not found ({_where(root)}); set {ENV} to a folder with lips_paper/")
    return root / "lips_paper"
