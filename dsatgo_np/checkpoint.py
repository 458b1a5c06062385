"""Checkpoints: model state, optimiser state and run metadata in one .npz, written atomically.

Layout of the .npz:  "model/<name>" arrays, "optim/<name>" arrays, and "meta", a JSON string
(the run's config, the position in training, the metrics at save time). Everything needed to
evaluate (BatchNorm statistics, running thresholds) lives in the model's state dict.
"""
from __future__ import annotations

import json

import numpy as np

from .model import load_npz, save_npz


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
