"""The IDX format of MNIST and Fashion-MNIST: read_idx, and a split as float32 images and labels."""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .cache import IDX_FILES, DataError
from .sources import fetch_idx

# --------------------------------------------------------------------------- IDX format
# IDX type byte -> big-endian dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _idx_header(head: bytes, path: Path) -> tuple[np.dtype, tuple, int]:
    """Parse the magic number: ``(dtype, dims, header length)``."""
    fix = f"delete {path} so it is fetched again"
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {head[:4].hex()}): {fix}")
    ndim = head[3]
    if len(head) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated inside its header: {fix}")
    dims = tuple(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.dtype(IDX_DTYPES[head[2]]), dims, 4 + 4 * ndim


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw or .gz) into an array of its dims, in native byte order.

    Truncated, over-long or corrupt files raise DataError naming the file.
    """
    path = Path(path)
    fix = f"delete {path} so it is fetched again"
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        if gz:
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            with open(path, "rb") as f:
                raw = f.read(4 + 4 * 255)  # enough for any header; the data is read below
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path} ({e}): it is truncated or corrupt; {fix}") from e
    dtype, dims, start = _idx_header(raw, path)
    count = int(np.prod(dims, dtype=np.int64))
    have = (len(raw) if gz else path.stat().st_size) - start
    if have != count * dtype.itemsize:
        what = "truncated" if have < count * dtype.itemsize else "longer than its header says"
        raise DataError(f"{path} is {what}: its header says {dims} of {dtype} "
                        f"({count * dtype.itemsize} bytes) but {have} bytes follow; {fix}")
    if gz:
        data = np.frombuffer(raw, dtype, count, offset=start)
    else:
        data = np.fromfile(path, dtype, count, offset=start)
    # astype copies to native byte order (and a writable array for frombuffer's read-only view).
    return data.astype(dtype.newbyteorder("="), copy=gz).reshape(dims)


def load_split(name, split, root, download, verbose):
    directory = fetch_idx(name, root, download, verbose)
    images, labels = (read_idx(directory / f) for f in IDX_FILES[split])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{directory}: {split} images {images.shape} and labels {labels.shape} "
                        f"do not match: delete the folder's files so they are fetched again")
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        raise DataError(f"{directory}: {split} images hold NaN or inf values: delete the "
                        "folder's files so they are fetched again")
    # One pass uint8 -> float32 (exactly k/255): this is most of the load time.
    x = np.divide(images[:, None], np.float32(255), dtype=np.float32)
    return x, labels.astype(np.int64)
