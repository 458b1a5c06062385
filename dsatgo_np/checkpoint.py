"""Checkpoints: model state, optimiser state and run metadata in one .npz, written atomically.

Layout of the .npz:  "model/<name>" arrays, "optim/<name>" arrays, and "meta", a JSON string
(the run's config, the position in training, the metrics at save time). Everything needed to
evaluate (BatchNorm statistics, running thresholds) lives in the model's state dict.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from .backend import to_numpy


def save_npz(path, arrays: dict):
    """Write arrays to an .npz atomically: a temporary file in the same folder, then a rename,
    so an interrupted save never leaves a half-written checkpoint behind."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{k: to_numpy(v) for k, v in arrays.items()})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_npz(path) -> dict:
    """Read an .npz written by save_npz, with a clear error for missing or corrupt files."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}: check the path or the run folder")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as e:
        raise ValueError(f"checkpoint {path!r} is corrupt or not an .npz file ({e}); "
                         "delete it and use another checkpoint of the run") from e


def save_checkpoint(path, model, optimizer=None, meta: dict | None = None):
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({f"optim/{k}": np.asarray(v) for k, v in optimizer.state_dict().items()})
    arrays["meta"] = np.array(json.dumps(meta or {}))
    save_npz(path, arrays)


def read_checkpoint(path):
    """-> (model_state, optim_state, meta). Clear errors for missing, corrupt or foreign files."""
    arrays = load_npz(path)
    if "meta" not in arrays:
        raise ValueError(f"{path} is an .npz file but not a dsatgo_np checkpoint (no 'meta' entry)")
    meta = json.loads(str(arrays["meta"]))
    model = {k[6:]: v for k, v in arrays.items() if k.startswith("model/")}
    optim = {k[6:]: v for k, v in arrays.items() if k.startswith("optim/")}
    return model, optim, meta


def load_model_state(model, state: dict, path=""):
    """load_state_dict with a message that names the checkpoint when the architectures differ."""
    try:
        model.load_state_dict(state)
    except ValueError as e:
        raise ValueError(f"checkpoint {path} does not match this model: {e}") from e
    return model
