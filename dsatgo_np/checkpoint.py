"""Checkpoints: model state, optimiser state and run metadata in one .npz, written atomically.

Layout of the .npz:  "model/<name>" arrays, "optim/<name>" arrays, and "meta", a JSON string
(the run's config, the position in training, the metrics at save time, and under "model" the
recipe that rebuilds the network: its `spec` and spiking options). Everything needed to
evaluate (BatchNorm statistics, running thresholds) lives in the model's state dict.

    net = dn.load("runs/mnist-mlp-ds-atgo-20260101-120000")   # a run folder: its best.npz
    dn.save(net, "mlp.npz")                                   # any network of dn.models
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import numpy as np

from .backend import to_numpy

TMP_SUFFIX = ".tmp"     # temporaries: "<name>.<random>.tmp" beside the file they replace


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it into place, so an
    interrupted save never leaves half a file at ``path``. The file gets the permissions an
    ``open()`` would give (0666 less the umask), not mkstemp's 0600."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=TMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())            # the rename must not reach the disk before the data
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_npz(path, arrays: dict):
    """Write arrays (NumPy or CuPy, converted with backend.to_numpy) to an .npz atomically."""
    host = {k: to_numpy(v) for k, v in arrays.items()}
    atomic_write(path, lambda f: np.savez(f, **host))


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
    """model's state dict, optimizer's (if any) and meta (JSON) into one .npz, atomically."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    arrays["meta"] = np.array(json.dumps(meta or {}))
    save_npz(path, arrays)


def read_checkpoint(path):
    """-> (model_state, optim_state, meta). Clear errors for missing, corrupt or foreign files."""
    arrays = load_npz(path)
    if "meta" not in arrays:
        raise ValueError(f"{path} is an .npz file but not a dsatgo_np checkpoint (no 'meta' entry)")
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError as e:
        raise ValueError(f"{path}: its metadata is not valid JSON ({e}); the file is damaged, "
                         "use another checkpoint of the run") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: its metadata is not a JSON object; the file is damaged")
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


# --- one-line saving and loading of whole networks --------------------------------------------

def model_meta(net) -> dict:
    """The recipe that rebuilds ``net``: ``{"spec": net.spec, "spiking": {...}}``, where spiking
    holds T, the neuron kind, its decay lam (LIF), the dtype and every SpikeConfig field."""
    spec = getattr(net, "spec", None)
    config = getattr(net, "config", None)
    if spec is None or config is None:
        raise TypeError(f"save() needs a network built by dn.models (mlp, cnn, vgg, sew_resnet), "
                        f"which carries .spec; got a {type(net).__name__}. For another network "
                        "save net.state_dict() with checkpoint.save_npz")
    spiking = dict(T=int(net.T), **dataclasses.asdict(config))
    neurons = [m for m in net.modules() if hasattr(m, "neuron") and hasattr(m, "decay")]
    if neurons:
        spiking["neuron"] = neurons[0].neuron
        if neurons[0].neuron == "lif":
            spiking["lam"] = float(neurons[0].lam)
    params = net.parameters()
    if params:
        spiking["dtype"] = str(params[0].data.dtype)
    return dict(spec=dict(spec), spiking=spiking)


def save(net, path, meta: dict | None = None):
    """Save a network of dn.models (weights, BatchNorm statistics, running thresholds and the
    recipe to rebuild it) to the .npz file ``path``; ``dn.load(path)`` gives it back."""
    save_checkpoint(path, net, None, dict(meta or {}, model=model_meta(net)))


def _resolve(path) -> str:
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("best.npz", "last.npz"):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise FileNotFoundError(f"{path} holds no best.npz or last.npz: pass a run folder with a "
                                "finished epoch, or a checkpoint file")
    return path


def load(path, backend: str = "numpy"):
    """The network saved at ``path`` (a run folder: its best.npz, else last.npz; or a checkpoint
    file written by the training command or by :func:`save`), in eval mode, so that it predicts
    with its running thresholds and BatchNorm statistics; on ``backend`` ("numpy" or "cupy").
    """
    return load_with_meta(path, backend)[0]


def load_with_meta(path, backend: str = "numpy"):
    """(network, metadata) of :func:`load`; the metadata as the checkpoint stored it."""
    path = _resolve(path)
    state, _, meta = read_checkpoint(path)
    recipe = meta.get("model")
    if recipe is not None:
        from . import models
        try:
            net = models.build(recipe["spec"], **recipe["spiking"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: the model recipe in its metadata cannot be built ({e}); "
                             "the file is damaged or from another version") from e
    elif "config" in meta:          # a training checkpoint from before recipes were stored
        missing = [k for k in ("in_shape", "n_classes") if k not in meta]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)} in its metadata (an interrupted "
                             "run's last.npz?): load best.npz, or resume the run first")
        from . import train
        net = train.build_model(train.Config(**meta["config"]), tuple(meta["in_shape"]),
                                meta["n_classes"])
    else:
        raise ValueError(f"{path} is a checkpoint without a model recipe: it was not written by "
                         "dn.save or the training command")
    load_model_state(net, state, path)
    return net.to(backend).eval(), meta
