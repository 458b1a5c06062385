"""Data sets as NumPy arrays: loading, normalisation, batching and augmentation.

    x, y = load("mnist", "train")            # x float32 [60000, 1, 28, 28] in [0, 1], y int64
    for xb, yb in batches(x, y, 128, seed=0, epoch=3):
        xb = normalize(xb, "mnist")

mnist and fashion-mnist: IDX files fetched and md5-checked (sources.py, cache.py, idx.py);
cifar10: the official release or a local copy, decoded once and cached (cifar10.py); digits:
scikit-learn's 8x8 digits, offline. Every problem raises DataError, saying how to fix it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..backend import get_xp
from . import cifar10, idx
from .cache import (DATASETS, IDX_FILES, MD5, SPLITS, DataError, check_name,  # noqa: F401
                    dataset_dir, default_root)
from .sources import fetch_idx, require_sklearn
from .idx import read_idx  # noqa: F401

__all__ = ["DATASETS", "NORMALIZATION", "DataError", "load", "fetch", "default_root",
           "normalize", "batches", "num_batches", "random_crop_flip", "read_idx", "dataset_label"]

NORMALIZATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    # Measured on the shared JPEG q75 copy (its README); the official release is within 0.001.
    "cifar10": ((0.4913, 0.4821, 0.4465), (0.2452, 0.2428, 0.2606)),
    # x = pixel / 16 over the 1,437 training digits of our split (seed 0), population std:
    # xtr = load("digits", "train")[0]; xtr.mean() = 0.30545, xtr.std() = 0.37604.
    "digits": ((0.3054,), (0.3760,)),
}

DIGITS_SEED, DIGITS_TRAIN = 0, 1437  # shuffle all 1,797 digits with seed 0: 1,437 train, 360 test


# --------------------------------------------------------------------------- public API
def load(name: str, split: str = "train", root=None, download: bool = True,
         progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Data set ``name``'s ``split`` as ``(x, y)``.

    Returns x float32 ``[N, C, H, W]`` in [0, 1] (MNIST/Fashion ``[N, 1, 28, 28]``, CIFAR-10
    ``[N, 3, 32, 32]``, digits ``[N, 1, 8, 8]``) and y int64 ``[N]``.
    ``root``: cache root (default :func:`default_root`). ``download``: allow commands and the
    network (MNIST/Fashion); local files are always used. ``progress``: status lines and bars.
    """
    check_name(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if name in MD5:
        x, y = idx.load_split(name, split, root, download, progress)
    elif name == "cifar10":
        x, y = cifar10.load_split(split, root, progress, download)
    else:
        x, y = _load_digits(split)
    return x, y


def fetch(name: str, root=None, progress: bool = True) -> Path:
    """Make sure data set ``name``'s files are in the cache and verified; returns its folder.

    MNIST/Fashion-MNIST: the four IDX files (sources in ``data.fetch.SOURCES``).
    CIFAR-10: both splits decoded into ``train.npz`` / ``test.npz``. digits: nothing to fetch.
    """
    check_name(name)
    if name in MD5:
        return fetch_idx(name, root, download=True, verbose=progress)
    if name == "cifar10":
        return cifar10.ensure(root, SPLITS, progress, download=True)
    require_sklearn()
    return dataset_dir(name, root)


def dataset_label(name: str, root=None) -> str:
    """The name to report results under, e.g. ``"MNIST"`` or ``"CIFAR-10 (JPEG q75 copy)"``.

    For cifar10 this reads the cache, so call it after :func:`load`.
    """
    check_name(name)
    if name != "cifar10":
        return {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "digits": "digits"}[name]
    for split in SPLITS:
        path = dataset_dir(name, root) / f"{split}.npz"
        if path.is_file():
            return str(cifar10.read_npz(path, ("label",))["label"])
    raise DataError("dataset_label('cifar10') reads the decoded cache: call load('cifar10') first")


def normalize(x, name: str):
    """``(x - mean) / std`` per channel with :data:`NORMALIZATION`; x ``[..., C, H, W]``, float32."""
    if name not in NORMALIZATION:
        raise DataError(f"no normalization constants for {name!r}: choose one of "
                        f"{', '.join(NORMALIZATION)}")
    mean, std = NORMALIZATION[name]
    if x.ndim < 3 or x.shape[-3] != len(mean):
        raise DataError(f"normalize(x, {name!r}) needs x shaped [N, {len(mean)}, H, W], got "
                        f"{tuple(x.shape)}")
    xp = get_xp(x)
    m = xp.asarray(mean, dtype=xp.float32).reshape(-1, 1, 1)
    s = xp.asarray(std, dtype=xp.float32).reshape(-1, 1, 1)
    return ((xp.asarray(x, dtype=xp.float32) - m) / s).astype(xp.float32, copy=False)


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches :func:`batches` yields for ``n`` samples."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(x, y, batch_size: int, shuffle: bool = True, seed: int = 0, epoch: int = 0,
            drop_last: bool = False):
    """Yield ``(xb, yb)`` batches of ``x [N, ...]`` and ``y [N]``.

    The order depends only on ``(seed, epoch)`` (``np.random.default_rng([seed, epoch])``), so
    a run resumed at epoch k sees exactly the batches it would have seen. The last batch is
    smaller unless ``drop_last``.
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x and y differ in length ({n} vs {len(y)}): pass matching arrays")
    count = num_batches(n, batch_size, drop_last)  # validates batch_size now, not at first next()
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else None
    return _batch_iter(x, y, batch_size, count, order)


def _batch_iter(x, y, batch_size, count, order):
    xp = get_xp(x)
    for b in range(count):
        lo, hi = b * batch_size, (b + 1) * batch_size
        if order is None:
            yield x[lo:hi], y[lo:hi]  # views: no copy when not shuffling
        else:
            idx = xp.asarray(order[lo:hi])        # on x's device (no copy for NumPy)
            yield x[idx], y[idx]


def random_crop_flip(x, rng: np.random.Generator, pad: int = 4):
    """CIFAR augmentation of a batch ``[B, C, H, W]``: zero-pad by ``pad``, crop a random
    ``H x W`` window per image, then flip it left-right with p = 0.5. Returns a new array.

    Draws, in this order: row offsets ``[B]``, column offsets ``[B]``, flip coins ``[B]``.
    """
    if x.ndim != 4:
        raise ValueError(f"random_crop_flip needs a batch [B, C, H, W], got shape {x.shape}")
    xp = get_xp(x)
    B, C, H, W = x.shape
    oy = rng.integers(0, 2 * pad + 1, size=B)
    ox = rng.integers(0, 2 * pad + 1, size=B)
    flip = rng.random(B) < 0.5
    padded = xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    rows = oy[:, None] + np.arange(H)  # [B, H] rows of the padded image to keep
    cols = ox[:, None] + np.arange(W)  # [B, W]
    cols = np.where(flip[:, None], cols[:, ::-1], cols)  # a flip reads the columns backwards
    # One gather for the whole batch: index arrays broadcast to [B, C, H, W].
    b = xp.asarray(np.arange(B)[:, None, None, None])
    c = xp.asarray(np.arange(C)[None, :, None, None])
    return padded[b, c, xp.asarray(rows[:, None, :, None]), xp.asarray(cols[:, None, None, :])]



# --------------------------------------------------------------------------- digits
def _load_digits(split):
    digits = require_sklearn().load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # [1797, 1, 8, 8], pixels 0..16
    y = digits.target.astype(np.int64)
    perm = np.random.default_rng(DIGITS_SEED).permutation(len(y))
    idx = perm[:DIGITS_TRAIN] if split == "train" else perm[DIGITS_TRAIN:]
    return x[idx], y[idx]
