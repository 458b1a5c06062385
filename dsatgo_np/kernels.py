"""Which implementation of each kernel the model calls: the plain core or a faster one.

The model never calls neuron.lif_forward, conv.conv2d_forward, ... directly: it asks
``kernels.of(x)`` for the table that fits x's array module and calls the kernel of that name.

    plain   the core (neuron.py, layers.py, conv.py, pooling.py, ...), on any array module
    fast    NumPy arrays: dsatgo_np/fast/ (blocked loops, im2col, threads)
    gpu     CuPy arrays (and the stand-in xp_strict with a kernel compiler): dsatgo_np/gpu/

Each is tested equal to the plain core. ``DSATGO_KERNELS=plain`` or ``set_kernels("plain")``
forces the plain core everywhere (to read along with the code); ``set_kernels("auto")`` undoes it.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np

from .core import conv, layers, neuron, pooling, threshold, update
from .backend import get_xp

NAMES = ("lif_forward", "lif_backward", "layer_stats", "linear_forward", "linear_backward",
         "matmul", "batchnorm_forward", "batchnorm_backward", "batchnorm_backward_static",
         "batchnorm_eval", "conv2d_forward", "conv2d_backward", "avgpool2d_forward",
         "avgpool2d_backward", "maxpool2d_forward", "maxpool2d_backward",
         "global_avgpool_forward", "global_avgpool_backward", "update_running", "sgd_update",
         "adam_update")
# Kernels with no CPU version of their own (a few values per layer, or a single pass that
# NumPy already makes): the fast table takes the plain core's.
PLAIN_ON_CPU = ("maxpool2d_forward", "maxpool2d_backward", "global_avgpool_forward",
                "global_avgpool_backward", "update_running", "adam_update")
CHOICES = ("auto", "plain", "fast")


def _matmul(a, b):
    return a @ b


PLAIN = SimpleNamespace(
    name="plain",
    lif_forward=neuron.lif_forward, lif_backward=neuron.lif_backward,
    layer_stats=threshold.layer_stats,
    linear_forward=layers.linear_forward, linear_backward=layers.linear_backward,
    matmul=_matmul,
    batchnorm_forward=layers.batchnorm_forward, batchnorm_backward=layers.batchnorm_backward,
    batchnorm_backward_static=layers.batchnorm_backward_static,
    batchnorm_eval=layers.batchnorm_eval,
    conv2d_forward=conv.conv2d_forward, conv2d_backward=conv.conv2d_backward,
    avgpool2d_forward=pooling.avgpool2d_forward, avgpool2d_backward=pooling.avgpool2d_backward,
    maxpool2d_forward=pooling.maxpool2d_forward, maxpool2d_backward=pooling.maxpool2d_backward,
    global_avgpool_forward=pooling.global_avgpool_forward,
    global_avgpool_backward=pooling.global_avgpool_backward,
    update_running=threshold.update_running, sgd_update=update.sgd_update,
    adam_update=update.adam_update,
)

_tables = {"plain": PLAIN}


def _fast():
    """The CPU table, imported on first use (it starts threadpoolctl and a thread pool)."""
    if "fast" not in _tables:
        from .fast import conv as fconv, layers as flayers, neuron as fneuron
        from .fast import optim as foptim, parallel, pooling as fpooling
        _tables["fast"] = SimpleNamespace(
            **{k: getattr(PLAIN, k) for k in PLAIN_ON_CPU}, name="fast",
            lif_forward=fneuron.lif_forward, lif_backward=fneuron.lif_backward,
            layer_stats=fneuron.fast_layer_stats,
            linear_forward=flayers.linear_forward, linear_backward=flayers.linear_backward,
            matmul=parallel.matmul,
            batchnorm_forward=flayers.batchnorm_forward,
            batchnorm_backward=flayers.batchnorm_backward,
            batchnorm_backward_static=flayers.batchnorm_backward_static,
            batchnorm_eval=flayers.batchnorm_eval,
            conv2d_forward=fconv.conv2d_forward, conv2d_backward=fconv.conv2d_backward,
            avgpool2d_forward=fpooling.avgpool2d_forward,
            avgpool2d_backward=fpooling.avgpool2d_backward, sgd_update=foptim.sgd_update)
    return _tables["fast"]


def _gpu():
    """The plain table with dsatgo_np/gpu/'s kernels (compiled on first call)."""
    if "gpu" not in _tables:
        from .gpu import conv as gconv, layers as glayers, neuron as gneuron, stats as gstats
        _tables["gpu"] = SimpleNamespace(**{
            **vars(PLAIN), "name": "gpu",
            "lif_forward": gneuron.lif_forward, "lif_backward": gneuron.lif_backward,
            "layer_stats": gstats.layer_stats,
            "batchnorm_forward": glayers.batchnorm_forward,
            "batchnorm_backward": glayers.batchnorm_backward,
            "batchnorm_backward_static": glayers.batchnorm_backward_static,
            "conv2d_forward": gconv.conv2d_forward, "conv2d_backward": gconv.conv2d_backward,
            "update_running": glayers.update_running, "sgd_update": glayers.sgd_update,
            "adam_update": glayers.adam_update})
    return _tables["gpu"]


def _runs_cuda(xp) -> bool:
    """CuPy, or the stand-in while a kernel compiler is installed in it (tests)."""
    if getattr(xp, "__name__", "") == "cupy":
        return True
    runs = getattr(xp, "runs_cuda_kernels", None)
    return bool(runs and runs())


def _from_env() -> str:
    value = os.environ.get("DSATGO_KERNELS", "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"DSATGO_KERNELS={value!r}: choose one of {', '.join(CHOICES)}")
    return value


_choice = _from_env()


def set_kernels(name: str) -> None:
    """"plain": the plain core for every array module; "fast": the default per module (the
    fast kernels for NumPy arrays) even where DSATGO_KERNELS=plain; "auto": as the
    environment says."""
    global _choice
    if name not in CHOICES:
        raise ValueError(f"unknown kernel set {name!r}: choose one of {', '.join(CHOICES)}")
    _choice = _from_env() if name == "auto" else name


def current() -> str:
    """The kernel set in force: "plain", or "auto"/"fast" (the default per array module)."""
    return _choice


def for_module(xp) -> SimpleNamespace:
    """The kernel table for arrays of module xp."""
    if _choice == "plain":
        return PLAIN
    if xp is np:
        return _fast()
    if _runs_cuda(xp):
        table = _gpu()
        if getattr(xp, "__name__", "") == "cupy" and "tf32" not in _tables:
            from .gpu import precision        # DSATGO_TF32=1: the opt-in, once per process
            _tables["tf32"] = precision.tf32_from_env() and precision.set_tf32(True)
        return table
    return PLAIN


def of(x) -> SimpleNamespace:
    """The kernel table for array x (see for_module)."""
    return for_module(get_xp(x))
