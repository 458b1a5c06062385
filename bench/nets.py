"""The reference networks of the benchmark, for dsatgo_np: builders, inputs and FLOP counts.

Shared by bench_train.py (timing, memory, peers) and profile_step.py (where the time goes).
Every network is "Linear/Conv (no bias) -> tdBN -> LIF (decay 0.2, threshold 1, hard reset)",
average pooling, a Linear readout with bias, cross-entropy on the mean over T, SGD momentum 0.9.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Net:
    name: str            # key on the command line
    title: str           # row label in the tables
    in_shape: tuple      # one sample, (784,) or (C, H, W)
    batch: int
    T: int
    convs: tuple = ()    # conv channels and "P" (2x2 average pooling), in order; () for the MLP
    hidden: tuple = ()   # MLP hidden sizes
    n_classes: int = 10


NETS = {
    "mlp": Net("mlp", "MLP 784-512-512-10, T=4, B=128", (784,), 128, 4, hidden=(512, 512)),
    "cnn": Net("cnn", "CNN 28x28x1 conv32-P-conv64-P-fc, T=4, B=64", (1, 28, 28), 64, 4,
               convs=(32, "P", 64, "P")),
    "cifar": Net("cifar", "CIFAR CNN conv64-conv128-P-conv128-P-fc, T=4, B=32", (3, 32, 32), 32, 4,
                 convs=(64, 128, "P", 128, "P")),
    "sew": Net("sew", "SEW-ResNet19 x0.25, 32x32x3, T=2, B=32", (3, 32, 32), 32, 2),
}


def build_ours(net: Net, method: str = "ds-atgo"):
    """The dsatgo_np model of `net` (float32)."""
    import dsatgo_np as dn
    if net.name == "mlp":
        return dn.models.mlp([net.in_shape[0], *net.hidden, net.n_classes], T=net.T, method=method)
    if net.name == "sew":
        return dn.models.sew_resnet(net.in_shape, net.n_classes, width_mult=0.25, T=net.T,
                                    method=method)
    return dn.models.vgg(net.in_shape, net.convs, net.n_classes, T=net.T, method=method)


def batch(net: Net, seed: int = 0):
    """A fixed float32 input batch [B, ...] in [0, 1) and integer labels [B]."""
    rng = np.random.default_rng(seed)
    x = rng.random((net.batch, *net.in_shape), dtype=np.float32)
    y = rng.integers(0, net.n_classes, net.batch)
    return x, y


def matmul_flops(net: Net, train: bool = True) -> float:
    """FLOPs of the matrix products of one step, with every layer run for all T steps
    (2 per multiply-add; a training step adds dW and dx, the first layer has no dx).

    A framework that computes a direct-encoded first layer once would need fewer; this count
    is the same for every framework, so the GFLOP/s figures compare.
    """
    T, B = net.T, net.batch
    layers = []                                   # (multiply-adds per sample and step, first?)
    if net.name == "mlp":
        sizes = [net.in_shape[0], *net.hidden, net.n_classes]
        layers = [(a * b, i == 0) for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
    elif net.name == "sew":
        layers = _sew_macs(net)
    else:
        c, h, w = net.in_shape
        for item in net.convs:
            if item == "P":
                h, w = h // 2, w // 2
            else:
                layers.append((c * item * 9 * h * w, not layers))
                c = item
        layers.append((c * h * w * net.n_classes, False))
    total = 0.0
    for macs, first in layers:
        passes = 1 if not train else (2 if first else 3)
        total += 2.0 * macs * T * B * passes
    return total


def _sew_macs(net: Net):
    """Multiply-adds of dsatgo_np.models.sew_resnet(width_mult=0.25) per sample and step."""
    chans = [32, 64, 128]
    c, h, w = net.in_shape
    out = [(c * chans[0] * 9 * h * w, True)]
    c = chans[0]
    for stage, (n_blocks, c_out) in enumerate(zip((3, 3, 2), chans)):
        for i in range(n_blocks):
            stride = 2 if (stage > 0 and i == 0) else 1
            oh, ow = h // stride, w // stride
            out.append((c * c_out * 9 * oh * ow, False))
            out.append((c_out * c_out * 9 * oh * ow, False))
            if stride != 1 or c != c_out:
                out.append((c * c_out * oh * ow, False))
            c, h, w = c_out, oh, ow
    out += [(c * 64, False), (64 * net.n_classes, False)]
    return out
