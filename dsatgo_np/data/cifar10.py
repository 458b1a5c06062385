"""CIFAR-10: the official python release or a local copy, decoded once into md5-checked .npz caches.

Sources, in order: $DSATGO_CIFAR10, the cache folder (the official tarball or its extracted
batches, an image folder or its tarball), a JPEG q75 copy in a shared/data/ folder beside the
repository, and the official release, downloaded and checked against its published md5.
Nothing is unpickled unless its md5 is the official one.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm.auto import tqdm

from . import cache, sources
from .cache import SPLITS, DataError, atomic_write, dataset_dir, file_hash, log
from .sources import SourceError

# --------------------------------------------------------------------------- CIFAR-10
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
# The official python release (https://www.cs.toronto.edu/~kriz/cifar.html) and its md5s:
# the tarball's as published there, each batch's as extracted from it.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_PYTHON = "cifar-10-python.tar.gz"
CIFAR10_PYTHON_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR10_TARBALL = "cifar10-jpeg-q75.tar.gz"  # a JPEG copy kept beside the repository
CIFAR10_TARBALL_SHA256 = "efac85c8ed52f4ead1e1f1b670d8dcf435d551fccebdd8b6365e0a01a504f3a4"
CIFAR10_JPEG_LABEL = "CIFAR-10 (JPEG q75 copy)"
_PICKLES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_noted_labels: set = set()  # print the labelling note once per process
_checked_npz: set = set()   # decoded caches whose md5 this process has checked
NPZ_MARKER = ".verified"    # {"<split>.npz": md5} written with each decoded cache


def _cifar10_candidates(directory: Path) -> list[Path]:
    """Where CIFAR-10 may be, in order: $DSATGO_CIFAR10, the cache folder, a JPEG copy at
    ../shared/data/ beside the working directory or the repository."""
    env = os.environ.get("DSATGO_CIFAR10")
    repo = Path(__file__).resolve().parents[1]
    shared = [base.parent / "shared" / "data" / CIFAR10_TARBALL for base in (Path.cwd(), repo)]
    return ([Path(env).expanduser()] if env else []) + [directory] + shared


def _classify(path: Path) -> tuple[str, Path] | None:
    """``("pickles", dir)``, ``("folder", dir)``, ``("tar", file)`` or None for ``path``."""
    if path.is_file():
        return ("tar", path) if path.name.endswith(_TAR_SUFFIXES) else None
    if not path.is_dir():
        return None
    for d in (path, path / "cifar-10-batches-py"):
        if (d / "data_batch_1").is_file() or (d / "test_batch").is_file():
            return "pickles", d
    for d in [path, *sorted(p for p in path.iterdir() if p.is_dir())]:
        if (d / "train").is_dir() or (d / "test").is_dir():
            return "folder", d
    tars = sorted(p for p in path.iterdir() if p.name.endswith(_TAR_SUFFIXES))
    return ("tar", tars[0]) if tars else None


def _download_cifar10(directory: Path, verbose: bool) -> Path:
    """The official tarball into the cache, md5-checked before it is renamed into place."""
    dest = directory / CIFAR10_PYTHON
    log(f"cifar10: downloading the official release (163 MB) from {CIFAR10_URL}", verbose)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=CIFAR10_PYTHON + ".", suffix=".part")
    os.close(fd)
    try:
        sources._download(CIFAR10_URL, Path(tmp), verbose)
        got = file_hash(Path(tmp))
        if got != CIFAR10_PYTHON_MD5:
            raise SourceError(f"the download has md5 {got}, expected {CIFAR10_PYTHON_MD5} "
                              "(cut short or changed on the way)")
        cache._publish(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def _locate_cifar10(directory: Path, download: bool, verbose: bool) -> tuple[str, Path]:
    candidates = _cifar10_candidates(directory)
    for i, path in enumerate(candidates):
        found = _classify(path)
        if found:
            return found
        if i == 0 and os.environ.get("DSATGO_CIFAR10"):
            raise DataError(f"DSATGO_CIFAR10={path} is not a .tar.gz, nor a folder with "
                            f"train/<class>/*.png|jpg or cifar-10-batches-py/: fix or unset it")
    looked = ", ".join(str(p) for p in candidates)
    fix = (f"Fix: put the official {CIFAR10_PYTHON} (from {CIFAR10_URL}) or its "
           f"cifar-10-batches-py/ folder into {directory}/, or set DSATGO_CIFAR10 to it, to a "
           "JPEG copy's .tar.gz or to an image folder train|test/<class>/*.png")
    if not download:
        raise DataError(f"CIFAR-10 not found (looked in {looked}; download=False). {fix}")
    try:
        return "tar", _download_cifar10(directory, verbose)
    except SourceError as e:
        raise DataError(f"CIFAR-10 not found (looked in {looked}) and the download failed "
                        f"({e}). {fix}") from None


def _unpickle_batch(fname: str, raw: bytes) -> dict:
    """One official batch from its bytes, unpickled only when its md5 is the official one
    (a pickle can run any code: never unpickle a file that is not known)."""
    want = CIFAR10_BATCH_MD5.get(fname)
    got = hashlib.md5(raw).hexdigest()
    if got != want:
        raise DataError(f"CIFAR-10 batch {fname} has md5 {got}, not the official release's "
                        f"{want}: refusing to unpickle it; replace it with the official "
                        f"{CIFAR10_PYTHON} (from {CIFAR10_URL})")
    return pickle.loads(raw, encoding="bytes")


def _read_pickles(read_bytes, splits) -> dict:
    """Official python batches: ``read_bytes(basename)`` gives the bytes of each batch."""
    out = {}
    for split in splits:
        xs, ys = [], []
        for fname in _PICKLES[split]:
            try:
                batch = _unpickle_batch(fname, read_bytes(fname))
                xs.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(batch[b"labels"], np.int64))
            except (OSError, KeyError, ValueError, EOFError, pickle.UnpicklingError) as e:
                raise DataError(f"CIFAR-10 batch {fname} is missing or unreadable ({e}): "
                                f"re-extract {CIFAR10_PYTHON}") from e
        out[split] = (np.concatenate(xs), np.concatenate(ys))
    return out


def _image_key(parts) -> tuple | None:
    """``("train", 3, "0001.jpg")`` for a path ending in ``train/cat/0001.jpg``, else None."""
    if len(parts) < 3:
        return None
    split, cls, fname = parts[-3:]
    if split in SPLITS and cls in CIFAR10_CLASSES and fname.lower().endswith(_IMAGE_SUFFIXES):
        return split, CIFAR10_CLASSES.index(cls), fname
    return None


def _decode_images(items, splits, verbose) -> dict:
    """``items``: ``[(key, read_bytes)]`` with keys from :func:`_image_key`. Per split
    ``(x uint8 [N, 3, 32, 32], y int64 [N])``, by class, then file name within a class."""
    try:
        from PIL import Image
    except ImportError as e:
        raise DataError("decoding CIFAR-10 image files needs Pillow: `pip install "
                        "dsatgo_np[data]` (or `pip install Pillow`)") from e
    items = [it for it in items if it[0][0] in splits]
    rows = {s: [] for s in splits}
    with tqdm(total=len(items), desc="cifar10 decode", unit="img", disable=not verbose,
              file=sys.stderr) as bar:
        for (split, label, fname), read in items:
            try:
                with Image.open(io.BytesIO(read())) as im:
                    a = np.asarray(im.convert("RGB"))
            except (OSError, ValueError) as e:
                raise DataError(f"cannot decode CIFAR-10 image {split}/{fname} ({e})") from e
            if a.shape != (32, 32, 3):
                raise DataError(f"CIFAR-10 image {split}/{fname} is {a.shape}, not 32x32 RGB")
            rows[split].append((label, fname, a))
            bar.update()
    out = {}
    for split, r in rows.items():
        if not r:
            raise DataError(f"no CIFAR-10 {split} images (train|test/<class>/*.png|jpg) found")
        r.sort(key=lambda t: (t[0], t[1]))
        x = np.stack([t[2] for t in r]).transpose(0, 3, 1, 2)  # HWC -> [N, 3, 32, 32]
        out[split] = (np.ascontiguousarray(x), np.array([t[0] for t in r], np.int64))
    return out


def _label(items) -> str:
    jpeg = any(key[2].lower().endswith((".jpg", ".jpeg")) for key, _ in items)
    return "CIFAR-10 (JPEG copy)" if jpeg else "CIFAR-10"


def _read_cifar10(kind: str, path: Path, splits, verbose) -> tuple[dict, str]:
    """``({split: (x, y)}, label)`` from pickle batches, an image folder or a tarball."""
    if kind == "pickles":
        return _read_pickles(lambda f: (path / f).read_bytes(), splits), "CIFAR-10"
    if kind == "folder":
        items = [(key, f.read_bytes) for f in sorted(path.glob("*/*/*"))
                 if (key := _image_key(f.parts)) and f.is_file()]
        return _decode_images(items, splits, verbose), _label(items)
    if path.name == CIFAR10_PYTHON and (got := file_hash(path)) != CIFAR10_PYTHON_MD5:
        raise DataError(f"{path} has md5 {got}, not the official release's {CIFAR10_PYTHON_MD5}: "
                        f"delete it so it is downloaded again from {CIFAR10_URL}")
    try:
        with tarfile.open(path) as tf:
            members = [m for m in tf.getmembers() if m.isfile()]
            by_name = {PurePosixPath(m.name).name: m for m in members}
            if "data_batch_1" in by_name or "test_batch" in by_name:  # official layout
                return _read_pickles(lambda f: tf.extractfile(by_name[f]).read(), splits), \
                    "CIFAR-10"
            # Read in archive order: a .tar.gz is a stream, going back means decompressing again.
            items = [(key, lambda m=m: tf.extractfile(m).read()) for m in members
                     if (key := _image_key(PurePosixPath(m.name).parts))]
            return _decode_images(items, splits, verbose), _label(items)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path} ({e}): it is truncated or corrupt") from e


def _npz_marker(directory: Path) -> dict:
    try:
        marker = json.loads((directory / NPZ_MARKER).read_text())
        return marker if isinstance(marker, dict) else {}
    except (OSError, ValueError):
        return {}


def _cache_ok(directory: Path, split: str, verbose: bool) -> bool:
    """The decoded cache of ``split`` exists and, once per process, its md5 is the one
    recorded when it was written. A cache that fails is decoded again from its source."""
    path = directory / f"{split}.npz"
    if not path.is_file():
        return False
    if str(path) in _checked_npz:
        return True
    want = _npz_marker(directory).get(path.name)
    if want is None or file_hash(path) != want:
        log(f"cifar10: {path} is not the file decoded earlier (changed, or no checksum "
            "recorded): decoding it again", verbose)
        return False
    _checked_npz.add(str(path))
    return True


def ensure(root, splits, verbose, download=True) -> Path:
    """Decode the splits not cached yet into ``<root>/cifar10/<split>.npz``; returns the folder."""
    directory = dataset_dir("cifar10", root)
    missing = [s for s in splits if not _cache_ok(directory, s, verbose)]
    if not missing:
        return directory
    kind, path = _locate_cifar10(directory, download, verbose)
    known = kind == "tar" and path.name == CIFAR10_TARBALL
    if known and (got := file_hash(path, "sha256")) != CIFAR10_TARBALL_SHA256:
        raise DataError(f"{path} has sha256 {got}, expected {CIFAR10_TARBALL_SHA256}: the copy "
                        f"is corrupt or changed; restore it or set DSATGO_CIFAR10 to a good copy")
    log(f"cifar10: decoding {' and '.join(missing)} from {path} once (cache: {directory})",
        verbose)
    data, label = _read_cifar10(kind, path, missing, verbose)
    label = CIFAR10_JPEG_LABEL if known else label
    marker = _npz_marker(directory)
    for split, (x, y) in data.items():
        arrays = dict(x=x, y=y, label=np.array(label), source=np.array(str(path)))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        raw = buf.getvalue()
        atomic_write(directory / f"{split}.npz", lambda f: f.write(raw))
        marker[f"{split}.npz"] = hashlib.md5(raw).hexdigest()
        _checked_npz.add(str(directory / f"{split}.npz"))
    text = json.dumps(marker, indent=1).encode()
    atomic_write(directory / NPZ_MARKER, lambda f: f.write(text))
    return directory


def read_npz(path: Path, keys=("x", "y", "label")) -> dict:
    try:
        with np.load(path) as z:  # lazy: reads only the arrays asked for
            return {k: z[k] for k in keys}
    except (OSError, ValueError, KeyError, zlib.error, EOFError) as e:
        raise DataError(f"cache file {path} is unreadable ({e}): delete it so it is rebuilt") from e


def load_split(split, root, verbose, download=True):
    directory = ensure(root, (split,), verbose, download)
    z = read_npz(directory / f"{split}.npz")
    label = str(z["label"])
    if label != "CIFAR-10" and label not in _noted_labels:
        _noted_labels.add(label)
        log(f'cifar10: this is the {label}, not the official release: label every result '
            f'obtained on it "{label}"')
    if z["x"].dtype != np.uint8:
        raise DataError(f"{directory / (split + '.npz')} does not hold uint8 images: delete it "
                        "so it is decoded again")
    return np.divide(z["x"], np.float32(255), dtype=np.float32), z["y"].astype(np.int64)
