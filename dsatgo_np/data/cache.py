"""The data cache: one folder per data set, its files' md5s checked when written and again once
per process, and every file written atomically.

MNIST and Fashion-MNIST are kept as their four raw IDX files, whose md5 (of the decompressed
content) is recorded with size and mtime in ``.verified``; a process checks the md5s again the
first time it loads a data set (a file changed in place is caught), later loads compare sizes
and mtimes only. Every problem raises DataError, saying how to fix it.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Callable

DATASETS = ("mnist", "fashion-mnist", "cifar10", "digits")
SPLITS = ("train", "test")

# Hooks to the outside world; tests replace them with fakes (monkeypatch.setattr).

MARKER = ".verified"


class DataError(Exception):
    """Any problem getting or reading a data set; the message says what was tried and the fix."""


class SourceError(Exception):
    """One source could not deliver the files (the next source is tried)."""


class SourceAbsent(SourceError):
    """A local source that is simply not there (no folder, none of the files): the normal
    case on most machines, so it is not reported as a failure while the next source is tried."""


# --------------------------------------------------------------------------- cache dir
def default_root() -> Path:
    """The cache root: ``$DSATGO_DATA``, else ``$XDG_CACHE_HOME/dsatgo_np``, else ``~/.cache/dsatgo_np``."""
    env = os.environ.get("DSATGO_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "dsatgo_np"


def check_name(name: str) -> None:
    """Raise DataError unless ``name`` is one of :data:`DATASETS`."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}")


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<name>/``, created if needed."""
    check_name(name)
    d = (Path(root).expanduser() if root is not None else default_root()) / name
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data folder {d} ({e}); pass root=... or set "
                        f"DSATGO_DATA to a writable folder") from e
    return d


def log(message: str, verbose: bool = True) -> None:
    """One status line on stderr (silent when ``verbose`` is False)."""
    if verbose:
        print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- IDX files and md5s
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_NAMES = IDX_FILES["train"] + IDX_FILES["test"]

# md5 of the DECOMPRESSED files (Debian rewrote the .gz headers, so .gz md5s differ).
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}


def file_hash(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


_CHECKED: set = set()  # (name, folder) whose files' md5s this process has computed


def is_verified(name: str, directory: Path) -> bool:
    """All four files match the sizes/mtimes recorded when their md5 was checked, and, the
    first time in this process, their content matches the published md5s."""
    try:
        marker = json.loads((directory / MARKER).read_text())
        for fname, md5 in MD5[name].items():
            entry = marker[fname]
            if entry["md5"] != md5 or entry["stamp"] != _stamp(directory / fname):
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no marker, a file missing, or a marker from another version
    key = (name, str(directory))
    if key not in _CHECKED:
        if any(file_hash(directory / f) != md5 for f, md5 in MD5[name].items()):
            return False  # changed in place: the sources (the cache first) say which file
        _CHECKED.add(key)
    return True


def _write_marker(name: str, directory: Path) -> None:
    _CHECKED.add((name, str(directory)))  # written right after every file's md5 was checked
    entries = {f: {"md5": m, "stamp": _stamp(directory / f)} for f, m in MD5[name].items()}
    text = json.dumps(entries, indent=1).encode()
    atomic_write(directory / MARKER, lambda f: f.write(text))


def atomic_write(dest: Path, write: Callable) -> None:
    """``write(f)`` into a temp file beside ``dest``, then rename: never half a file at ``dest``."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        _publish(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)  # gone already after a successful rename


def _publish(tmp: str, dest: Path) -> None:
    """Rename a finished temp file into place with the usual permissions (mkstemp gives 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dest)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def install_file(src: Path, dest: Path, expected_md5: str) -> None:
    """Put ``src`` (raw or gzipped) at ``dest`` decompressed, only if its md5 is ``expected_md5``.

    The copy goes to a temp file in ``dest``'s folder and is renamed into place after the md5
    matched, so a corrupt or truncated download never replaces anything.
    """
    fix = f"delete {src} so it is fetched again, or replace it with a good copy"
    if src == dest and not _is_gzip(src):  # already in place: just check it
        got = file_hash(dest)
        if got != expected_md5:
            raise DataError(f"{dest} is corrupt or truncated (md5 {got}, expected "
                            f"{expected_md5}): {fix}")
        return
    opener = gzip.open if _is_gzip(src) else open
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    h = hashlib.md5()
    try:
        with opener(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            for chunk in iter(lambda: fin.read(1 << 20), b""):
                h.update(chunk)
                fout.write(chunk)
        if h.hexdigest() != expected_md5:
            raise DataError(f"{src}: md5 of its content is {h.hexdigest()}, expected "
                            f"{expected_md5} (corrupt, truncated or another data set): {fix}")
        _publish(tmp, dest)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataError(f"{src} cannot be read ({e}): it is truncated or corrupt; {fix}") from e
    finally:
        Path(tmp).unlink(missing_ok=True)
