"""Checkpoints: model state, optimiser state and run metadata in one .npz, written atomically.

Layout of the .npz:  "model/<name>" arrays, "optim/<name>" arrays, and "meta", a JSON string
(the run's config, the position in training, the metrics at save time, and under "model" the
recipe that rebuilds the network: its `spec` and spiking options). Everything needed to
evaluate (BatchNorm statistics, running thresholds) lives in the model's state dict.

    dn.save(net, "mlp.npz")            # any network of dn.models; dn.load (files.py) reads it
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import numpy as np

from . import models
from .backend import to_numpy
from .recipe import Config, build_model

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


ZIP, HDF5 = (b"PK\x03\x04", b"PK\x05\x06"), b"\x89HDF\r\n\x1a\n"


def file_format(path) -> str | None:
    """What a model file holds, by its first bytes: "npz" (a zip archive: dn.save, the
    training command), "nir" (HDF5: nir.write), "safetensors" (an 8-byte header length, then
    a JSON header), or None."""
    with open(path, "rb") as f:
        head = f.read(9)
        size = os.fstat(f.fileno()).st_size
    if head[:4] in ZIP:
        return "npz"
    if head[:8] == HDF5:
        return "nir"
    if len(head) == 9 and head[8:] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    return None


def load_npz(path) -> dict:
    """Read an .npz written by save_npz, with a clear error for missing or damaged files."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}: check the path or the run folder")
    kind = file_format(path)
    if kind is None:
        raise ValueError(f"{path} is not a model file: its first bytes are not those of an .npz "
                         "checkpoint, a .safetensors or a .nir file (damaged, or another kind "
                         "of file); check the path, or use another checkpoint of the run")
    if kind != "npz":
        raise ValueError(f"{path} is a .{kind} file, not an .npz checkpoint: read it with "
                         "dn.load, which reads .npz, .safetensors and .nir files and run folders")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as e:
        raise ValueError(f"checkpoint {path!r} is damaged ({type(e).__name__}: {e}): use "
                         "another checkpoint of the run (last.npz or best.npz)") from e


def check_arrays(arrays: dict, path) -> dict:
    """Refuse arrays read from a file that no network could hold: not real numbers, NaN or
    inf, a negative BatchNorm variance (keys ending in running_var). Names the file and the
    entry. Returns ``arrays``."""
    for key, value in arrays.items():
        value = np.asarray(value)
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{path}: the entry {key!r} has dtype {value.dtype}, not real "
                             "numbers: the file is damaged or was not written by dsatgo_np")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad = int(np.count_nonzero(~np.isfinite(value)))
            raise ValueError(f"{path}: the entry {key!r} holds {bad} NaN or infinite value(s): "
                             "the file is damaged, or was saved from a diverged network; use "
                             "another checkpoint")
        if key.endswith("running_var") and value.size and value.min() < 0:
            raise ValueError(f"{path}: the BatchNorm variance {key!r} holds a negative value "
                             f"({value.min():g}): the file is damaged; use another checkpoint")
    return arrays


def save_checkpoint(path, model, optimizer=None, meta: dict | None = None):
    """model's state dict, optimizer's (if any) and meta (JSON) into one .npz, atomically."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict().items()})
    arrays["meta"] = np.array(json.dumps(meta or {}))
    save_npz(path, arrays)


def read_checkpoint(path):
    """-> (model_state, optim_state, meta). Clear errors for missing, damaged or foreign files;
    every array is checked (check_arrays) before it is returned."""
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
    check_arrays({k: v for k, v in arrays.items() if k != "meta"}, path)
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


def resolve(path) -> str:
    """A run folder's best.npz (else last.npz); any other path as it is."""
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("best.npz", "last.npz"):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise FileNotFoundError(f"{path} holds no best.npz or last.npz: pass a run folder with a "
                                "finished epoch, or a checkpoint file")
    return path


def load_model(path):
    """(network, metadata) of a .npz written by dn.save or the training command: the network
    rebuilt from the recipe in its metadata, with its saved state (train mode, on NumPy)."""
    state, _, meta = read_checkpoint(path)
    recipe = meta.get("model")
    if recipe is not None:
        try:
            net = models.build(recipe["spec"], **recipe["spiking"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: the model recipe in its metadata cannot be built ({e}); "
                             "the file is damaged or from another version") from e
    elif "config" in meta:          # a training checkpoint from before recipes were stored
        missing = [k for k in ("in_shape", "n_classes") if k not in meta]
        if missing:
            raise ValueError(f"{path} holds no finished epoch (it lacks {', '.join(missing)} in "
                             "its metadata: an interrupted run's last.npz?): use best.npz, or "
                             "resume the run first")
        net = build_model(Config(**meta["config"]), tuple(meta["in_shape"]), meta["n_classes"])
    else:
        raise ValueError(f"{path} is a checkpoint without a model recipe: it was not written by "
                         "dn.save or the training command")
    load_model_state(net, state, path)
    return net, meta
