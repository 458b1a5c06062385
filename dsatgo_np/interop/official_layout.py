"""The authors' PyTorch layer names for our networks: the mapping, and the state dicts both ways.

The release's wrappers: tdLayer(layer, bn) ("<path>.layer.weight", ".layer.bias",
"<path>.bn.tdBN.{weight, bias, running_mean, running_var, num_batches_tracked}") and
SpikingNeuron ("<path>.neuron.w", PLIF's decay sigmoid(w)). Our arrays already have PyTorch's
layouts, so a transfer renames keys (num_batches_tracked exported as 0). The release keeps its
running thresholds outside its state_dict: they travel apart, {neuron path: (T,) array}.
Only resnet19 follows the release's own module tree; mlp, cnn and vgg map to one nn.Sequential,
sew_resnet to the release's tree with its own widths (docs/INTEROP.md).
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from .. import encode, models
from ..backend import get_xp, to_numpy
from ..model import (AvgPool2d, BatchNorm, Conv2d, Flatten, GlobalAvgPool, Linear, MaxPool2d,
                     SEWBlock, Spiking)

THRESHOLD_SUFFIX = ".neuron.running_threshold"    # where the release keeps them, per neuron
FORMAT = "dsatgo_np"                               # safetensors metadata "format"
RELEASE = "the authors' PyTorch release (github.com/jqjiang1999/DS-ATGO)"


class ArchitectureMismatch(ValueError):
    """The weights come from another architecture (or another T) than the one asked for."""


class Entry(NamedTuple):
    ours: str | None     # key in net.state_dict(); None for num_batches_tracked (PyTorch only)
    theirs: str          # key in the PyTorch model's state_dict()
    kind: str            # "param" | "buffer" | "count"


class Layout(NamedTuple):
    entries: list        # [Entry], in PyTorch's state_dict order
    neurons: list        # [(our Spiking prefix, PyTorch SpikingNeuron path)]


# --- the key mapping --------------------------------------------------------------------------------

class _Mapper:
    def __init__(self):
        self.entries, self.neurons = [], []

    def td(self, ours_layer: str, layer, theirs: str, ours_bn: str | None = None):
        """tdLayer(layer, bn): our Linear/Conv2d at ours_layer, our BatchNorm at ours_bn."""
        for name, _ in layer.named_parameters():
            self.entries.append(Entry(ours_layer + name, f"{theirs}.layer.{name}", "param"))
        if ours_bn is not None:
            bn = f"{theirs}.bn.tdBN."
            self.entries += [Entry(ours_bn + "weight", bn + "weight", "param"),
                             Entry(ours_bn + "bias", bn + "bias", "param"),
                             Entry(ours_bn + "running_mean", bn + "running_mean", "buffer"),
                             Entry(ours_bn + "running_var", bn + "running_var", "buffer"),
                             Entry(None, bn + "num_batches_tracked", "count")]

    def neuron(self, ours: str, module: Spiking, theirs: str):
        if module.neuron == "plif":
            self.entries.append(Entry(ours + "w", f"{theirs}.neuron.w", "param"))
        self.neurons.append((ours, theirs))

    def triple(self, mods, ours: str, theirs_td: str, theirs_neuron: str, start: int = 0):
        """mods[start:start+3] = layer, BatchNorm, Spiking under the prefix ours."""
        layer, bn, spike = mods[start:start + 3]
        _expect(isinstance(layer, (Linear, Conv2d)) and isinstance(bn, BatchNorm)
                and isinstance(spike, Spiking), f"{ours}{start}", "layer -> BatchNorm -> Spiking")
        self.td(f"{ours}{start}.", layer, theirs_td, f"{ours}{start + 1}.")
        self.neuron(f"{ours}{start + 2}.", spike, theirs_neuron)


def _expect(ok: bool, where: str, what: str):
    if not ok:
        raise ArchitectureMismatch(f"module {where!r} is not the expected {what}: only networks "
                                   "built by dsatgo_np.models can be mapped to PyTorch")


def layout(net) -> Layout:
    """Our state_dict keys <-> the PyTorch twin's, for a network of dsatgo_np.models."""
    name = getattr(net, "spec", {}).get("name")
    if name in ("resnet19", "sew_resnet"):
        return _resnet_layout(net)
    if name in ("mlp", "cnn", "vgg"):
        return _sequential_layout(net)
    raise ArchitectureMismatch(f"no PyTorch mapping for model {name!r}: export works for "
                               "dsatgo_np.models.resnet19, sew_resnet, mlp, cnn and vgg")


def _resnet_layout(net) -> Layout:
    """The release's tree: encode.{0,1}, ResNetBlocks.<i>.0.{conv1, spike1, conv2, spike2,
    downsample.{0,1}}, global_ap, fc.{0 (Linear + BN1d), 1 (neuron), 2 (readout)}."""
    m, mods = _Mapper(), list(net)
    m.triple(mods, "", "encode.0", "encode.1")
    blocks = [i for i, mod in enumerate(mods) if isinstance(mod, SEWBlock)]
    for j, i in enumerate(blocks):
        main = list(mods[i]._children["main"])
        here = f"ResNetBlocks.{j}.0"
        m.triple(main, f"{i}.main.", f"{here}.conv1", f"{here}.spike1")
        m.triple(main, f"{i}.main.", f"{here}.conv2", f"{here}.spike2", start=3)
        if "shortcut" in mods[i]._children:
            short = list(mods[i]._children["shortcut"])
            m.triple(short, f"{i}.shortcut.", f"{here}.downsample.0", f"{here}.downsample.1")
    h = blocks[-1] + 1
    _expect(isinstance(mods[h], GlobalAvgPool) and len(mods) == h + 5, str(h),
            "head: global average pool, Linear, BatchNorm, Spiking, readout")
    m.triple(mods, "", "fc.0", "fc.1", start=h + 1)
    m.td(f"{h + 4}.", mods[h + 4], "fc.2")
    return Layout(m.entries, m.neurons)


def _sequential_layout(net) -> Layout:
    """One nn.Sequential: each Linear/Conv2d and its BatchNorm become one tdLayer (one index),
    each Spiking, pooling or Flatten one index; the readout a tdLayer without BN."""
    m, mods, j, i = _Mapper(), list(net), 0, 0
    while i < len(mods):
        mod = mods[i]
        if isinstance(mod, (Linear, Conv2d)):
            bn = i + 1 < len(mods) and isinstance(mods[i + 1], BatchNorm)
            m.td(f"{i}.", mod, str(j), f"{i + 1}." if bn else None)
            i += 2 if bn else 1
        elif isinstance(mod, Spiking):
            m.neuron(f"{i}.", mod, str(j))
            i += 1
        else:
            _expect(isinstance(mod, (Flatten, AvgPool2d, MaxPool2d)), str(i),
                    "Linear, Conv2d, BatchNorm, Spiking, pooling or Flatten")
            i += 1
        j += 1
    return Layout(m.entries, m.neurons)


# --- export / import ------------------------------------------------------------------------------

def export_official(net, grads: bool = False):
    """-> (state, thresholds), NumPy arrays in PyTorch's layouts and key names.

    state:      exactly the keys of the PyTorch model's state_dict() (for resnet19: the
                release's ResNet19(T, n_classes)), BatchNorm statistics and num_batches_tracked
                (0: not counted here) included. grads=True: each parameter's key maps to its
                gradient instead, and buffers are left out.
    thresholds: {SpikingNeuron path: (T,) running thresholds}, e.g. "encode.1",
                "ResNetBlocks.3.0.downsample.1", "fc.1".
    """
    lay = layout(net)
    params = dict(net.named_parameters())
    ours = net.state_dict()
    state = {}
    for e in lay.entries:
        if grads:
            if e.kind == "param":
                state[e.theirs] = to_numpy(params[e.ours].grad).copy()
        elif e.kind == "count":
            state[e.theirs] = np.zeros((), dtype=np.int64)
        else:
            state[e.theirs] = ours[e.ours]
    thresholds = {theirs: ours[o + "running_threshold"] for o, theirs in lay.neurons}
    _warn_semantics(net)
    return state, thresholds


def _warn_semantics(net):
    cfg = net.config
    if net.spec.get("name") == "resnet19" and (
            cfg.method, cfg.width, cfg.f_c, cfg.threshold, cfg.detach_reset, cfg.threshold_grad
    ) != ("ds-atgo", "std", 1.0, "measured", False, False):
        warnings.warn(f"{RELEASE} computes method='ds-atgo', width='std', f_c=1, measured "
                      f"thresholds, reset not detached; this network uses method={cfg.method!r}, "
                      f"width={cfg.width!r}, f_c={cfg.f_c}: the weights load there, the "
                      "predictions may differ", stacklevel=3)


def import_official(state: dict, thresholds: dict | None = None, T: int = 2,
                    n_classes: int | None = None, spec: dict | None = None, batches=None,
                    **spiking):
    """Build a network and load PyTorch weights into it. -> net (in eval mode).

    state:      a PyTorch state_dict as NumPy arrays (or anything np.asarray takes: tensors
                after .numpy()); every key must be there, and no other.
    thresholds: {SpikingNeuron path: (T,)} running thresholds. None: the release lost them,
                so they come from calibrate(net, batches) when batches is given, else stay at
                V_th (with a warning): call calibrate before evaluating.
    T:          time steps (the running thresholds have one value per step).
    n_classes:  classes of the readout; None: read from the state.
    spec:       architecture (net.spec of dsatgo_np.models); None: the release's ResNet19.
    spiking:    options of the spiking layers (method, neuron, width, dtype, ...).
    """
    if spec is None:
        if n_classes is None:
            w = state.get("fc.2.layer.weight")
            if w is None:
                raise ArchitectureMismatch(
                    "this state has no 'fc.2.layer.weight': it is not the release's ResNet19 "
                    "state_dict; pass spec=... for one of our other architectures")
            n_classes = int(np.shape(w)[0])
        spec = dict(name="resnet19", n_classes=n_classes)
    elif n_classes is not None:
        spec = {**spec, "n_classes": n_classes}
    net = models.build(spec, T=T, **spiking)
    load_official(net, state, thresholds)
    if thresholds is None:
        if batches is not None:
            calibrate(net, batches)
        else:
            warnings.warn("no running thresholds given: they stay at V_th until "
                          "dsatgo_np.interop.official.calibrate(net, batches) sets them from a "
                          "few training batches", stacklevel=2)
    return net.eval()


def load_official(net, state: dict, thresholds: dict | None = None):
    """Copy a PyTorch state (and running thresholds) into net; raises ArchitectureMismatch
    naming the missing, unexpected or misshapen keys."""
    lay = layout(net)
    expected = [e.theirs for e in lay.entries]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in set(expected)]
    if missing or unexpected:
        raise ArchitectureMismatch(
            f"these weights are not a {net.spec['name']} of this shape: missing keys "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected keys "
            f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}; check the architecture "
            "(and for ResNet19, that the state comes from the release's ResNet19)")
    ours = net.state_dict()
    new = dict(ours)
    for e in lay.entries:
        if e.kind == "count":
            continue
        value = np.asarray(state[e.theirs])
        if value.shape != ours[e.ours].shape:
            raise ArchitectureMismatch(
                f"{e.theirs!r} has shape {value.shape}, this {net.spec['name']} expects "
                f"{ours[e.ours].shape}: another width or number of classes?")
        new[e.ours] = value
    if thresholds is not None:
        paths = [theirs for _, theirs in lay.neurons]
        if set(thresholds) != set(paths):
            raise ArchitectureMismatch(
                f"running thresholds for {sorted(set(paths) - set(thresholds))[:5]} are missing "
                f"and {sorted(set(thresholds) - set(paths))[:5]} belong to no neuron of this "
                "network")
        for o, theirs in lay.neurons:
            value = np.asarray(thresholds[theirs]).reshape(-1)
            if value.shape != ours[o + "running_threshold"].shape:
                raise ArchitectureMismatch(
                    f"neuron {theirs!r} has {value.size} running thresholds, one per time step, "
                    f"but the network was built with T={net.T}: pass T={value.size}")
            new[o + "running_threshold"] = value
    net.load_state_dict(new)
    return net


def calibrate(net, batches, encoded: bool = False):
    """Set the running thresholds from a few training batches, BatchNorm statistics untouched.

    Each batch runs forward in training mode (tdBN normalises with the batch's statistics,
    theta[t] = f_c (mu[t] + sigma[t]) is measured, as in training); each neuron's running
    threshold becomes the plain mean of its theta[t] over the batches, not a momentum average
    that a few batches would leave near its start. batches: arrays [B, ...] of static inputs
    (direct-encoded over net.T steps here; [T, B, ...] when encoded=True), or (x, y) pairs.
    Returns net, in the mode it was in.
    """
    spikers = [m for m in net.modules() if isinstance(m, Spiking)]
    norms = [(m, dict(m._buffers)) for m in net.modules() if isinstance(m, BatchNorm)]
    was_training = net.training
    sums, n = [0.0] * len(spikers), 0
    net.train()
    try:
        for item in batches:
            x = item[0] if isinstance(item, (tuple, list)) else item
            net.forward(x if encoded else encode.direct(x, net.T))
            for i, m in enumerate(spikers):
                sums[i] = sums[i] + to_numpy(m.cache.theta).astype(np.float64)
                m.cache = None
            n += 1
    finally:
        for m, buffers in norms:                           # keep the trained statistics
            m._buffers.update(buffers)
        net.train(was_training)
    if n == 0:
        raise ValueError("calibrate needs at least one batch of training inputs")
    for i, m in enumerate(spikers):
        old = m._buffers["running_threshold"]
        m._buffers["running_threshold"] = get_xp(old).asarray(sums[i] / n, dtype=old.dtype)
    return net
