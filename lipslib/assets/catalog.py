"""What lipslib needs and how a user gets it: the authors' checkpoints and logs (downloaded from their repository,
sha256-checked), the two COCO subsets (built from a COCO 2017 folder with a committed manifest) and the videos.

catalog.yaml lists each asset, what uses it (the demo, the benchmarks, the tests) and where it comes from;
manifests/<dataset>.yaml name the COCO files of each dataset. Where an asset lies is resolve.py's business
(`asset_path`): this module only asks it.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import yaml

from lipslib.assets.resolve import ENV, asset_path, asset_root
from lipslib.errors import LipsError

CATALOG = Path(__file__).with_name("catalog.yaml")
RAW = "{url}/raw/{commit}/{path}"  # GitHub serves a file of a commit there (a redirect to raw.githubusercontent.com)
USES = ("demo", "benchmarks", "tests")
SHOWN = 3  # file names a message shows before "…"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the manifests hold thousands of names


@functools.cache
def load_catalog() -> dict:
    """The catalog, catalog.yaml (read once).

    Returns:
        {"repository": {"url", "commit"}, "uses": {use: asset names}, "assets": {name: {"kind", "about", and
        "files" (path under the kind's folder → repository "path", optional "commit", "sha256"), or "manifest"
        and "sources" (a dataset), or "note" (a video)}}}.

    Examples:
        >>> sorted(load_catalog()["uses"])
        ['benchmarks', 'demo', 'tests']
        >>> len(load_catalog()["assets"]["lips_paper"]["files"])
        105
    """
    return yaml.load(CATALOG.read_text(encoding="utf-8"), Loader=_LOADER)


@functools.cache
def manifest(name: str) -> dict:
    """A dataset's manifest: `yaml` (the dataset yaml's text), `folders` (COCO folder → `images`, and `labels`
    when they are not one per image), `lists` (split list file → folder and images, in order), `labels_sha256`.

    Args:
        name: a dataset of the catalog (coco_val2193, coco128).

    Returns:
        The manifest as a dict.

    Raises:
        LipsError: `name` is not a dataset of the catalog.

    Examples:
        >>> sorted(manifest("coco128")["folders"])
        ['train2017', 'val2017']
    """
    assets = load_catalog()["assets"]
    datasets = sorted(n for n, a in assets.items() if a["kind"] == "datasets")
    if name not in datasets:
        hint = f"; {name} is fetched, not built: lips assets fetch {name}" if assets.get(name, {}).get("files") else ""
        raise LipsError(f"unknown dataset '{name}': lips assets build knows {', '.join(datasets)}{hint}")
    return yaml.load(CATALOG.parent.joinpath(assets[name]["manifest"]).read_text(encoding="utf-8"), Loader=_LOADER)


def file_url(entry: dict) -> str:
    """The download URL of a catalog file entry.

    Args:
        entry: {"path": in the authors' repository, "commit" (optional; default: the repository's)}.

    Returns:
        RAW filled in: GitHub's URL of that file at that commit.

    Examples:
        >>> file_url({"path": "assets/benchmark.png", "commit": "8dd9145"}).split("/")[-4:]
        ['raw', '8dd9145', 'assets', 'benchmark.png']
    """
    repo = load_catalog()["repository"]
    return RAW.format(url=repo["url"], commit=entry.get("commit", repo["commit"]), path=entry["path"])


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, read in chunks.

    Args:
        path: the file.

    Returns:
        The hex digest.

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def labels_digest(labels: str | os.PathLike, names: list[str]) -> str:
    """One sha256 over label files: for each of `names` (paths under `labels`, e.g. val2017/000000000139.txt),
    sorted, the name, a NUL byte and the file's bytes. The manifests hold this digest of the reference copies.

    Args:
        labels: a dataset's labels/ folder.
        names: the label files to digest, as POSIX paths under it.

    Returns:
        The hex digest.

    Raises:
        OSError: a label file cannot be read.
    """
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(name.encode() + b"\0" + (Path(labels) / name).read_bytes())
    return h.hexdigest()


def _shown(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (", …" if len(names) > SHOWN else "")


def _manifest_files(m: dict) -> tuple[list[str], list[str]]:
    """A manifest's image and label files as paths under images/ and labels/ (val2017/000000000139.jpg)."""
    images, labels = [], []
    for folder, entry in m["folders"].items():
        images += [f"{folder}/{n}" for n in entry["images"]]
        names = entry.get("labels") or [Path(n).stem + ".txt" for n in entry["images"]]
        labels += [f"{folder}/{n}" for n in names]
    return images, labels


def _list_text(entry: dict) -> str:
    """A split list file's text: Ultralytics resolves its ./images/... lines against the yaml's folder."""
    return "".join(f"./images/{entry['folder']}/{n}\n" for n in entry["images"])


def _check_files(kind: str, files: dict, root: Path) -> tuple[str, str]:
    """Status and detail of an asset made of repository files: are they there, is each sha256 the catalog's."""
    missing = [k for k in files if not asset_path(kind, k, root).is_file()]
    if len(missing) == len(files):
        return "missing", "not found"
    if missing:
        return "incomplete", f"{len(missing)} of {len(files)} files missing ({_shown(missing)})"
    bad = [k for k, e in files.items() if sha256_of(asset_path(kind, k, root)) != e["sha256"]]
    if bad:
        return "differs", f"sha256 differs from the authors' file for {len(bad)} of {len(files)} ({_shown(bad)})"
    return "ok", "found, sha256 ok" if len(files) == 1 else f"found, {len(files)} files, sha256 ok"


def _check_dataset(name: str, yaml_file: Path) -> tuple[str, str]:
    """Status and detail of a dataset: its yaml, the manifest's images, labels and lists, its labels' digest."""
    if not yaml_file.is_file():
        return "missing", "not found"
    m, folder = manifest(name), yaml_file.parent
    images, labels = _manifest_files(m)
    lost = [f"images/{p}" for p in images if not (folder / "images" / p).is_file()]
    lost += [f"labels/{p}" for p in labels if not (folder / "labels" / p).is_file()]
    lost += [f for f in m.get("lists", {}) if not (folder / f).is_file()]
    if lost:
        return "incomplete", f"{len(lost)} of its files missing ({_shown(lost)})"
    same = labels_digest(folder / "labels", labels) == m["labels_sha256"]
    return "ok", f"found, {len(images)} images, labels {'identical to' if same else 'DIFFER from'} the reference copy"


def check(root: str | os.PathLike | None = None) -> dict:
    """What the demo, the benchmarks and the tests need, where each comes from, and whether the asset folder
    holds it intact (the sha256 of the weights and of the paper logs; a dataset's files, from its manifest).

    Args:
        root: the asset folder (default: $LIPS_ASSETS; unset, every asset is missing).

    Returns:
        {"env", "root" (None when unset), "ok" (all there and intact), "assets": [{"name", "kind", "about",
        "uses", "status" (ok, missing, incomplete, differs), "detail", "where", "sources", "get"}],
        "uses": {use: names not ok}}.

    Raises:
        LipsError: LIPS_ASSETS names no folder.

    Examples:
        >>> report = check("/nonexistent")
        >>> report["ok"], report["uses"]["demo"]
        (False, ['lips_iter01_best.pt', 'coco_val2193', 'crosswalk.mp4', 'lips_paper'])
    """
    cat = load_catalog()
    root = Path(root) if root is not None else asset_root()
    shown_root = root if root is not None else Path(f"${ENV}")  # where lipslib would look, said with the variable
    repo = cat["repository"]
    rows = []
    for name, a in cat["assets"].items():
        kind = a["kind"]
        where = asset_path(kind, "" if kind == "lips_paper" else name, shown_root)
        if root is None:
            status, detail = "missing", ""  # nothing to look at: the head of the listing says why
        elif a.get("files"):
            status, detail = _check_files(kind, a["files"], root)
        elif kind == "datasets":
            status, detail = _check_dataset(name, where)
        else:
            status, detail = ("ok", "found") if where.is_file() else ("missing", "not found")
        if a.get("files"):
            files = list(a["files"].values())
            sources = [file_url(files[0])] if len(files) == 1 else [repo["url"]]
            get = f"lips assets fetch {name}"
        elif kind == "datasets":
            sources, get = a["sources"], f"lips assets build {name} --coco DIR"
        else:
            sources, get = [], a["note"]
        uses = [u for u in USES if name in cat["uses"][u]]
        rows.append(
            {
                "name": name,
                "kind": kind,
                "about": a["about"],
                "uses": uses,
                "status": status,
                "detail": detail,
                "where": str(where),
                "sources": sources,
                "get": get,
            }
        )
    bad = {r["name"] for r in rows if r["status"] != "ok"}
    return {
        "env": ENV,
        "root": str(root) if root is not None else None,
        "ok": not bad,
        "assets": rows,
        "uses": {u: [n for n in cat["uses"][u] if n in bad] for u in USES},
    }


def describe(report: dict) -> str:
    """`check`'s report as the text `lips assets` prints.

    Args:
        report: what `check` returned.

    Returns:
        Per asset its status, what uses it, where lipslib looks for it, where it comes from and how to get it;
        then per use whether it is ready, and, when not, how to fetch and build.

    Examples:
        >>> print(describe(check("/nonexistent")).splitlines()[0])
        LIPS_ASSETS=/nonexistent
    """
    assets, repo = load_catalog()["assets"], load_catalog()["repository"]
    if report["root"] is None:
        lines = [
            f"{ENV} is unset: lipslib looks for its assets in the folder it names. Fetch and build them into a",
            f"folder (default ./assets, as below), then: export {ENV}=$PWD/assets",
        ]
    else:
        lines = [f"{ENV}={report['root']}"]
    lines += [f"The authors' files: {repo['url']} (commit {repo['commit'][:7]})", ""]
    for r in report["assets"]:
        status = r["status"] if r["status"] == "ok" else r["status"].upper()  # what to act on stands out
        lines += [f"{r['name']:22s}{status:12s}{r['detail']}".rstrip(), f"  {r['about']}"]
        lines += [f"  for:   {', '.join(r['uses'])}", f"  where: {r['where']}"]
        files = assets[r["name"]].get("files") or {}
        if len(files) > 1:  # the logs: one repository, files of more than one commit
            commits = dict.fromkeys([repo["commit"]] + [e.get("commit", repo["commit"]) for e in files.values()])
            lines.append(
                f"  from:  the authors' repository, {len(files)} files (commits {', '.join(c[:7] for c in commits)})"
            )
        else:
            lines += [f"  {'from:' if i == 0 else '':6s} {url}" for i, url in enumerate(r["sources"])]
        if not r["sources"]:
            lines.append("  from:  not recorded (no known URL)")
        lines.append(f"  get:   {r['get']}")
    lines.append("")
    for use, missing in report["uses"].items():
        label = "demo (make demo)" if use == "demo" else use
        lines.append(f"{label + ':':18s}{'ready' if not missing else 'needs ' + ', '.join(missing)}")
    if not report["ok"]:
        lines += [
            "",
            "lips assets fetch [NAME ...] [--to DIR] downloads the authors' checkpoints and logs (sha256-checked);",
            "lips assets build coco_val2193 --coco DIR (and coco128) makes a dataset from COCO 2017 in Ultralytics'",
            "layout, DIR/images/val2017/*.jpg + DIR/labels/val2017/*.txt: what `yolo val data=coco.yaml` downloads.",
        ]
    return "\n".join(lines)


def default_root() -> Path:
    """Where fetch and build write by default.

    Returns:
        $LIPS_ASSETS, else ./assets (relative to the working folder).

    Raises:
        LipsError: LIPS_ASSETS names no folder.
    """
    return asset_root() or Path("assets")


def _download(url: str, dest: Path, sha256: str, bar=None) -> None:
    """`url` to `dest` through a temporary file beside it, replaced onto `dest` only when its sha256 is `sha256`:
    a failed or wrong download leaves no file behind. `bar`: a tqdm bar to count the bytes on."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    by_hand = f"get it by hand from {url} and put it at {dest} (sha256 {sha256})"
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as response:
            if bar is not None:
                bar.reset(total=int(response.headers.get("Content-Length") or 0) or None)
            while chunk := response.read(1 << 20):
                f.write(chunk)
                h.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        if h.hexdigest() != sha256:
            raise LipsError(
                f"{url} gave a file whose sha256 is {h.hexdigest()[:16]}…, not the authors' {sha256[:16]}…; nothing "
                f"was written; {by_hand}"
            )
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from the others sharing an asset folder
        os.replace(tmp, dest)
    except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError and timeouts are OSErrors
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or type(e).__name__
        raise LipsError(f"downloading {url} failed ({reason}); nothing was written; {by_hand}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def fetch(names: list[str] | None = None, to: str | os.PathLike | None = None, progress: bool = True) -> list[dict]:
    """Download the authors' files (checkpoints, paper logs) into the asset layout under `to`, each checked
    against its sha256 and written atomically; files already there and intact are kept.

    Args:
        names: assets to fetch (default: all that have a download: lips_iter01_best.pt, lips_iter24_best.pt,
            lips_paper).
        to: the asset folder (default: $LIPS_ASSETS, else ./assets).
        progress: show tqdm bars (on stderr).

    Returns:
        Per asset: {"name", "where", "fetched" (files downloaded), "present" (files already there)}.

    Raises:
        LipsError: an unknown or not downloadable name, a file there that differs from the authors' (before any
            download), a download that fails or whose sha256 is not the catalog's (nothing is left of it).

    Examples:
        >>> fetch(["coco_val2193"])
        Traceback (most recent call last):
        ...
        lipslib.errors.LipsError: coco_val2193 is built, not downloaded: lips assets build coco_val2193 --coco DIR
    """
    from tqdm import tqdm

    from lipslib.files import check_writable

    assets = load_catalog()["assets"]
    fetchable = [n for n, a in assets.items() if a.get("files")]
    for name in names or []:
        if name not in assets:
            raise LipsError(f"unknown asset '{name}': lips assets fetch downloads {', '.join(fetchable)}")
        if assets[name]["kind"] == "datasets":
            raise LipsError(f"{name} is built, not downloaded: lips assets build {name} --coco DIR")
        if name not in fetchable:
            raise LipsError(f"{name} has no download: {assets[name]['note']}")
    root = Path(to).expanduser() if to is not None else default_root()
    plan = {
        n: {k: (e, asset_path(assets[n]["kind"], k, root)) for k, e in assets[n]["files"].items()}
        for n in names or fetchable
    }
    for files in plan.values():  # refuse before any download: nothing is overwritten, nothing half-done
        for entry, dest in files.values():
            if dest.exists() and (not dest.is_file() or sha256_of(dest) != entry["sha256"]):
                raise LipsError(
                    f"{dest} exists and is not the authors' file (sha256 {entry['sha256'][:16]}…); move it away "
                    f"and fetch again"
                )
            check_writable(dest)
    done = []
    for name, files in plan.items():
        todo = {k: v for k, v in files.items() if not v[1].is_file()}
        single = len(files) == 1
        # one bar per asset: the bytes of a checkpoint, the files of the logs
        unit = {"unit": "B", "unit_scale": True} if single else {"unit": "file", "total": len(todo)}
        # delay: a download that fails at once leaves its one error line alone on the terminal, with no empty bar
        with tqdm(desc=name, disable=not progress or not todo, delay=1, **unit) as bar:
            for entry, dest in todo.values():
                _download(file_url(entry), dest, entry["sha256"], bar if single else None)
                if not single:
                    bar.update(1)
        where = asset_path(assets[name]["kind"], name if single else "", root)
        done.append({"name": name, "where": str(where), "fetched": len(todo), "present": len(files) - len(todo)})
    return done


def build(
    name: str,
    coco: str | os.PathLike,
    out: str | os.PathLike | None = None,
    link: bool = False,
    progress: bool = True,
) -> dict:
    """Make a dataset of the catalog (coco_val2193, coco128) from a COCO 2017 folder in Ultralytics' layout —
    `coco/images/val2017/*.jpg` (COCO's val2017.zip) and `coco/labels/val2017/*.txt` (Ultralytics'
    coco2017labels.zip), what `yolo val data=coco.yaml` downloads — with the files its manifest names: the yaml,
    the split lists, images/ and labels/. Written in a temporary folder beside the output and renamed onto it
    at the end: a failure leaves nothing.

    Args:
        name: the dataset.
        coco: the COCO 2017 folder.
        out: the datasets folder to write `<name>/<name>.yaml` into (default: $LIPS_ASSETS/datasets, else
            ./assets/datasets).
        link: symlink the images and labels instead of copying them.
        progress: show a tqdm bar (on stderr).

    Returns:
        {"name", "yaml" (the dataset yaml), "images", "labels" (counts), "linked", "labels_sha256",
        "labels_identical" (to the reference copy's labels; False with other Ultralytics labels, not an error)}.

    Raises:
        LipsError: before anything is written: an unknown dataset, a missing folder, images or labels of the
            manifest that `coco` lacks (how many, the first few), an output folder that exists and is not empty.

    Examples:
        >>> build("coco_val2193", "/nonexistent/coco")
        Traceback (most recent call last):
        ...
        lipslib.errors.LipsError: --coco /nonexistent/coco is not a folder; ...
    """
    from tqdm import tqdm

    from lipslib.files import check_writable

    m = manifest(name)
    coco = Path(coco).expanduser()
    urls = ", ".join(load_catalog()["assets"][name]["sources"])
    layout = (
        f"expected COCO 2017 in Ultralytics' layout ({', '.join(f'images/{f}/*.jpg' for f in m['folders'])}, "
        f"{', '.join(f'labels/{f}/*.txt' for f in m['folders'])}), what `yolo val data=coco.yaml` downloads: {urls}"
    )
    if not coco.is_dir():
        raise LipsError(f"--coco {coco} is not a folder; {layout}")
    for sub in [f"{top}/{f}" for top in ("images", "labels") for f in m["folders"]]:
        if not (coco / sub).is_dir():
            raise LipsError(f"--coco {coco} has no {sub}/ folder; {layout}")
    images, labels = _manifest_files(m)
    lost_images = [f"images/{p}" for p in images if not (coco / "images" / p).is_file()]
    lost_labels = [f"labels/{p}" for p in labels if not (coco / "labels" / p).is_file()]
    if lost_images or lost_labels:
        what = [f"{len(lost_images)} of {name}'s {len(images)} images ({_shown(lost_images)})"] if lost_images else []
        what += [f"{len(lost_labels)} of its {len(labels)} labels ({_shown(lost_labels)})"] if lost_labels else []
        raise LipsError(f"--coco {coco} lacks {' and '.join(what)}; {layout}")
    out = Path(out).expanduser() if out is not None else default_root() / "datasets"
    yaml_file = out / asset_path("datasets", name, Path()).relative_to("datasets")  # <name>/<name>.yaml
    target = yaml_file.parent
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise LipsError(f"{target} exists and is not empty; remove it or give another --out")
    check_writable(target)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".part", dir=out))
    try:
        files = [("images", p) for p in images] + [("labels", p) for p in labels]
        for top, p in tqdm(files, desc=f"{name} ({'link' if link else 'copy'})", unit="file", disable=not progress):
            dst = tmp / top / p
            dst.parent.mkdir(parents=True, exist_ok=True)
            src = coco / top / p
            if link:
                dst.symlink_to(src.resolve())
            else:
                shutil.copyfile(src, dst)  # not copy2: a read-only source would make a read-only dataset
        (tmp / yaml_file.name).write_text(m["yaml"], encoding="utf-8")
        for list_file, entry in m.get("lists", {}).items():
            (tmp / list_file).write_text(_list_text(entry), encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the dataset from the others sharing an asset folder
        if target.is_dir():  # empty: checked above
            target.rmdir()
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    digest = labels_digest(target / "labels", labels)
    return {
        "name": name,
        "yaml": str(yaml_file),
        "images": len(images),
        "labels": len(labels),
        "linked": link,
        "labels_sha256": digest,
        "labels_identical": digest == m["labels_sha256"],
    }
