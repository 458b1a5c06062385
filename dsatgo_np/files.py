"""dn.load: a network from any model file the project writes, told by its first bytes.

    net = dn.load("runs/mnist-mlp-ds-atgo-20260101-120000")   # a run folder: its best.npz
    net = dn.load("net.npz")          # dn.save or a training checkpoint; .safetensors; .nir

The network comes back in eval mode, on the backend asked for. dn.save (checkpoint.py)
writes the .npz; export (the training command) the .safetensors and .nir files.
"""
from __future__ import annotations

import json
import os

from .checkpoint import file_format, load_model, resolve
from .interop import nirgraph, official


def load(path, backend: str = "numpy"):
    """The network saved at ``path``, in eval mode, so that it predicts with its running
    thresholds and BatchNorm statistics; on ``backend`` ("numpy" or "cupy"). ``path`` is a run
    folder (its best.npz, else last.npz), a checkpoint written by the training command or by
    :func:`save`, a .safetensors file (dn.interop.official.save_safetensors, or `export`) or
    a .nir file (`export`, or any feed-forward NIR graph that dn.interop.nirgraph.from_nir
    reads); the format is told by the file's first bytes, not its name.
    """
    return load_with_meta(path, backend)[0]


def load_with_meta(path, backend: str = "numpy"):
    """(network, metadata) of :func:`load`. The metadata of a checkpoint as it stored it; of a
    .safetensors or .nir file written by `export`, the same keys where the file records them
    (config.dataset, test_acc, epoch)."""
    path = resolve(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}: check the path")
    kind = file_format(path)
    if kind == "safetensors":
        net = official.load_safetensors(path)
        try:
            run = json.loads(official.read_safetensors(path)[2].get("run", "{}"))
        except ValueError:                       # a foreign file's own "run" entry
            run = {}
        run = run if isinstance(run, dict) else {}
        meta = {k: run[k] for k in ("test_acc", "epoch") if k in run}
        if run.get("dataset"):
            meta["config"] = dict(dataset=run["dataset"])
        return net.to(backend).eval(), meta
    if kind == "nir":
        net = nirgraph.load_file(path)
        recorded = getattr(net, "metadata", None) or {}
        meta = {}
        if "source_test_acc" in recorded:
            meta["test_acc"] = float(recorded["source_test_acc"])
        if recorded.get("dataset"):
            meta["config"] = dict(dataset=str(recorded["dataset"]))
        return net.to(backend).eval(), meta
    net, meta = load_model(path)
    return net.to(backend).eval(), meta
