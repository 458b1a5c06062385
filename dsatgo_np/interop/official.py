"""Weights to and from PyTorch: the authors' released ResNet19, and PyTorch twins of our models.

    state, thresholds = export_official(net)            # the release's state_dict keys
    net = import_official(state, thresholds, T=2)       # and back (official_layout.py)
    save_safetensors(net, "model.safetensors")          # both dicts, architecture and T inside
    net = load_safetensors("model.safetensors")

A safetensors file keeps the running thresholds as "<path>.neuron.running_threshold", where the
release's attribute lives; a file without them (the release's own state_dict) needs
calibrate() on a few batches. cli_export / cli_import are the training command's export and
import.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from .missing import MissingPackage
from ..checkpoint import check_arrays
from .official_layout import (FORMAT, RELEASE, THRESHOLD_SUFFIX,  # noqa: F401
                              ArchitectureMismatch, Entry, Layout, calibrate, export_official,
                              import_official, layout, load_official)


# --- safetensors files ---------------------------------------------------------------------------

def _safetensors():
    try:
        from safetensors import numpy as stnp
        from safetensors import safe_open
    except ImportError as e:
        raise MissingPackage("model files need the safetensors package: pip install "
                             "'dsatgo_np[interop]' (or pip install safetensors)") from e
    return stnp, safe_open


def _spiking_options(net) -> dict:
    """The keywords that rebuild net's spiking layers: models.build(spec, T=T, **these)."""
    from ..checkpoint import model_meta
    opts = model_meta(net)["spiking"]
    opts.pop("T", None)
    return opts


def save_safetensors(net, path, extra: dict | None = None):
    """Write net's PyTorch-named state and running thresholds ("<path>.neuron.running_threshold")
    to one safetensors file (no pickle), written atomically. Metadata (strings): format,
    architecture (net.spec as JSON), T, spiking (options as JSON), and any `extra` entries."""
    stnp, _ = _safetensors()
    state, thresholds = export_official(net)
    tensors = {k: np.asarray(v, order="C") for k, v in state.items()}   # keeps 0-d
    tensors.update({p + THRESHOLD_SUFFIX: np.asarray(v, order="C") for p, v in thresholds.items()})
    meta = {"format": FORMAT, "architecture": json.dumps(net.spec), "T": str(net.T),
            "spiking": json.dumps(_spiking_options(net))}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra or {}).items()})
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".safetensors.tmp", dir=folder)
    os.close(fd)
    try:
        stnp.save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def read_safetensors(path):
    """-> (state, thresholds or None, metadata dict) of a safetensors file, ours or PyTorch's."""
    stnp, safe_open = _safetensors()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}: check the path")
    try:
        with safe_open(path, framework="np") as f:
            meta = dict(f.metadata() or {})
        tensors = stnp.load_file(path)
    except Exception as e:
        raise ValueError(f"{path!r} is not a readable safetensors file ({e}); export it again "
                         "(python -m dsatgo_np.train export CHECKPOINT FILE)") from e
    check_arrays(tensors, path)
    thresholds = {k[:-len(THRESHOLD_SUFFIX)]: v for k, v in tensors.items()
                  if k.endswith(THRESHOLD_SUFFIX)}
    state = {k: v for k, v in tensors.items() if not k.endswith(THRESHOLD_SUFFIX)}
    return state, thresholds or None, meta


def load_safetensors(path, expect=None, T: int | None = None, batches=None, **spiking):
    """Read a model file and rebuild its network. -> net (in eval mode).

    A file written here names its architecture, T and spiking options in its metadata. A file
    saved in PyTorch from the release's ResNet19 (safetensors.torch.save_file of its
    state_dict, with or without the "<path>.neuron.running_threshold" entries) is read as a
    resnet19: T from its "T" metadata, else from the thresholds, else the T argument.

    expect:  a model name ("resnet19", "mlp", ...) or a spec dict the file must hold; another
             architecture raises ArchitectureMismatch, as do weights that do not fit the
             architecture the file names.
    batches: calibration batches, used when the file has no running thresholds.
    spiking: options that override the file's (e.g. dtype="float64").
    """
    state, thresholds, meta = read_safetensors(path)
    if "architecture" in meta:
        spec = json.loads(meta["architecture"])
    elif "fc.2.layer.weight" in state:
        spec = dict(name="resnet19", n_classes=int(state["fc.2.layer.weight"].shape[0]))
    else:
        raise ArchitectureMismatch(
            f"{path} names no architecture in its metadata and is not the release's ResNet19 "
            "(no 'fc.2.layer.weight'): save it with dsatgo_np.interop.official.save_safetensors")
    want = expect if isinstance(expect, (dict, type(None))) else {"name": expect}
    if want is not None and any(spec.get(k) != v for k, v in want.items()):
        raise ArchitectureMismatch(f"{path} holds a {spec.get('name')} ({json.dumps(spec)}), not "
                                   f"the expected {json.dumps(want)}")
    if "T" in meta:
        file_T = int(meta["T"])
    elif thresholds:
        file_T = int(np.asarray(next(iter(thresholds.values()))).size)
    else:
        file_T = None
    if T is not None and file_T is not None and T != file_T:
        raise ArchitectureMismatch(f"{path} was saved with T={file_T}, not T={T}")
    T = T or file_T
    if T is None:
        raise ValueError(f"{path} says nothing of its number of time steps: pass T=...")
    options = json.loads(meta.get("spiking", "{}"))
    options.update(spiking)
    try:
        return import_official(state, thresholds, T=T, spec=spec, batches=batches, **options)
    except ArchitectureMismatch as e:
        raise ArchitectureMismatch(f"{path}: {e}") from e


# --- the command line's export / import ------------------------------------------------------------

def cli_export(src_checkpoint, dst):
    """python -m dsatgo_np.train export RUN/best.npz model.safetensors: the network of a
    checkpoint (or of a run folder: its best.npz) to a safetensors file; the run's data set,
    recorded accuracy and epoch go into its "run" metadata, for cli_import."""
    from .. import checkpoint
    net, meta = checkpoint.load_model(checkpoint.resolve(src_checkpoint))
    net.eval()
    run = {k: meta[k] for k in ("test_acc", "epoch") if k in meta}
    if meta.get("config", {}).get("dataset"):
        run["dataset"] = meta["config"]["dataset"]
    save_safetensors(net, dst, extra={"run": run})
    return dst


def dataset_of(path) -> str | None:
    """The data set a model file was trained on, when its metadata says (files written by
    cli_export); None for others, such as a file saved from PyTorch."""
    _, _, meta = read_safetensors(path)
    return json.loads(meta.get("run", "{}")).get("dataset")


def cli_import(src, dst_checkpoint, batches=None, dataset: str | None = None):
    """python -m dsatgo_np.train import model.safetensors RUN/imported.npz: a model file (ours,
    or the release's ResNet19 saved from PyTorch) to a checkpoint that `python -m
    dsatgo_np.train evaluate` and dn.load read. A file without running thresholds needs
    calibration batches (its evaluation would otherwise fire at V_th). dataset: the data set
    to evaluate on, recorded in the checkpoint when the file does not name it."""
    from .. import checkpoint
    _, thresholds, fmeta = read_safetensors(src)
    if thresholds is None and batches is None:
        raise ValueError(f"{src} has no running thresholds (the release keeps them outside its "
                         "state_dict): save them with the lines in docs/INTEROP.md, or import "
                         "with calibration batches: cli_import(src, dst, batches=...)")
    net = load_safetensors(src, batches=batches)
    run = json.loads(fmeta.get("run", "{}"))
    meta = dict(imported_from=os.path.basename(os.fspath(src)), test_acc=run.get("test_acc"),
                epoch=run.get("epoch"))
    if dataset or run.get("dataset"):
        meta["config"] = dict(dataset=dataset or run["dataset"])
    checkpoint.save(net, dst_checkpoint, meta)
    return dst_checkpoint
