"""Ready networks built from "Linear/Conv -> tdBN -> spiking neuron" blocks.

Every builder takes the same spiking keywords: T, method, neuron ("lif" | "plif"),
width ("threshold" | "std"), dtype, seed, and any other SpikeConfig field
(f_c, k0, v_th, threshold, running, momentum, threshold_grad, detach_reset, smooth) or lam.
The readout is a last non-spiking Linear whose outputs are averaged over T by the loss.
"""
from __future__ import annotations

import numpy as np

from .model import (AvgPool2d, BatchNorm, Conv2d, Flatten, GlobalAvgPool, Linear, MaxPool2d,
                    SEWBlock, Sequential, Spiking)
from .core.neuron import SpikeConfig

_CONFIG_KEYS = set(SpikeConfig.__dataclass_fields__)


class _Builder:
    """Shared state of one network under construction: options, seeded rng, dtype."""

    def __init__(self, T, method, neuron, width, dtype, seed, lam=0.2, **options):
        unknown = set(options) - _CONFIG_KEYS
        if unknown:
            raise TypeError(f"unknown option(s) {sorted(unknown)}; spiking options are "
                            f"{sorted(_CONFIG_KEYS - {'method', 'width'})} and lam")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' (training) or 'float64' (gradient checks), "
                             f"got {dtype!r}")
        if not isinstance(T, (int, np.integer)) or T < 1:
            raise ValueError(f"T must be a positive integer number of time steps, got {T!r}")
        self.config = SpikeConfig(method=method, width=width, **options)
        self.T, self.neuron, self.dtype, self.lam = T, neuron, dtype, lam
        if neuron not in ("lif", "plif"):
            raise ValueError(f"unknown neuron {neuron!r}: choose 'lif' or 'plif'")
        self.rng = np.random.default_rng(seed)

    def spike(self, bn):
        return Spiking(self.T, self.config, self.neuron, self.lam, scale_from=bn, dtype=self.dtype)

    def linear_block(self, n_in, n_out):
        """Linear (no bias: BN's shift replaces it) -> tdBN -> neuron."""
        bn = BatchNorm(n_out, dtype=self.dtype)
        return [Linear(n_in, n_out, bias=False, rng=self.rng, dtype=self.dtype), bn, self.spike(bn)]

    def conv_block(self, c_in, c_out, kernel=3, stride=1):
        """Conv (no bias) -> tdBN -> neuron."""
        bn = BatchNorm(c_out, dtype=self.dtype)
        return [Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False, rng=self.rng,
                       dtype=self.dtype), bn, self.spike(bn)]

    def readout(self, n_in, n_out):
        return Linear(n_in, n_out, bias=True, rng=self.rng, dtype=self.dtype)

    def finish(self, net, name, **arch):
        net.T, net.config, net.spec = self.T, self.config, dict(name=name, **arch)
        return net


def mlp(sizes, T=4, method="ds-atgo", neuron="lif", width="threshold", dtype="float32",
        seed=0, **options):
    """sizes = [inputs, hidden..., classes]; input [T, B, ...] is flattened to [T, B, inputs]."""
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least [inputs, classes], got sizes={sizes}")
    b = _Builder(T, method, neuron, width, dtype, seed, **options)
    mods = [Flatten()]
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        mods += b.linear_block(n_in, n_out)
    mods.append(b.readout(sizes[-2], sizes[-1]))
    return b.finish(Sequential(*mods), "mlp", sizes=list(sizes))


def vgg(in_shape=(3, 32, 32), layers=(64, 128, "P", 128, "P"), n_classes=10, hidden=(),
        T=4, method="ds-atgo", neuron="lif", width="threshold", dtype="float32", seed=0,
        pool="avg", **options):
    """VGG-style CNN: an int is a 3x3 conv block, "P" a 2x2 pooling; then Linear blocks of
    sizes `hidden` and the readout. The default is the CIFAR benchmark network of bench/."""
    b = _Builder(T, method, neuron, width, dtype, seed, **options)
    c, h, w = in_shape
    mods = []
    for item in layers:
        if item == "P":
            if h % 2 or w % 2:
                raise ValueError(f"cannot pool a {h}x{w} map by 2: use fewer 'P' or another input size")
            mods.append(AvgPool2d(2) if pool == "avg" else MaxPool2d(2))
            h, w = h // 2, w // 2
        else:
            mods += b.conv_block(c, int(item))
            c = int(item)
    mods.append(Flatten())
    n = c * h * w
    for size in hidden:
        mods += b.linear_block(n, size)
        n = size
    mods.append(b.readout(n, n_classes))
    return b.finish(Sequential(*mods), "vgg", in_shape=list(in_shape), layers=list(layers),
                    n_classes=n_classes, hidden=list(hidden), pool=pool)


def cnn(in_shape=(1, 28, 28), channels=(32, 64), n_classes=10, T=4, method="ds-atgo",
        neuron="lif", width="threshold", dtype="float32", seed=0, **options):
    """Small CNN: for each channel count conv3x3 -> tdBN -> neuron -> AvgPool2d(2); then readout."""
    layers = [x for c in channels for x in (c, "P")]
    net = vgg(in_shape, layers, n_classes, (), T, method, neuron, width, dtype, seed, **options)
    net.spec = dict(name="cnn", in_shape=list(in_shape), channels=list(channels), n_classes=n_classes)
    return net


def sew_resnet(in_shape=(3, 32, 32), n_classes=10, blocks=(3, 3, 2), channels=(128, 256, 512),
               width_mult=1.0, head=256, T=2, method="ds-atgo", neuron="lif",
               width="threshold", dtype="float32", seed=0, **options):
    """SEW-ResNet19 (docs/METHOD.md section 6): stem conv, stages of SEW basic blocks with strides
    1/2/2, global average pool, Linear-BN-spike head, readout. width_mult scales channels."""
    b = _Builder(T, method, neuron, width, dtype, seed, **options)
    chans = [max(1, int(round(c * width_mult))) for c in channels]
    hid = max(1, int(round(head * width_mult)))
    mods = b.conv_block(in_shape[0], chans[0])                   # stem
    c = chans[0]
    for stage, (n_blocks, c_out) in enumerate(zip(blocks, chans)):
        for i in range(n_blocks):
            stride = 2 if (stage > 0 and i == 0) else 1
            main = Sequential(*b.conv_block(c, c_out, 3, stride), *b.conv_block(c_out, c_out))
            short = None
            if stride != 1 or c != c_out:
                short = Sequential(*b.conv_block(c, c_out, kernel=1, stride=stride))
            mods.append(SEWBlock(main, short))
            c = c_out
    mods += [GlobalAvgPool()] + b.linear_block(c, hid) + [b.readout(hid, n_classes)]
    return b.finish(Sequential(*mods), "sew_resnet", in_shape=list(in_shape), n_classes=n_classes,
                    blocks=list(blocks), channels=list(channels), width_mult=width_mult, head=head)


BUILDERS = {"mlp": mlp, "cnn": cnn, "vgg": vgg, "sew_resnet": sew_resnet}


def build(spec: dict, **spiking):
    """Rebuild a network from its `spec` (as stored in checkpoints) and spiking keywords."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(BUILDERS)}")
    return BUILDERS[name](**spec, **spiking)


# --- plain (non-residual) networks whose membrane scale is a knob --------------------------------

def _check_knobs(depth, bn_scale, init_gain):
    if not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"depth must be a positive number of spiking layers, got {depth!r}")
    if not (bn_scale > 0 and init_gain > 0):
        raise ValueError(f"bn_scale and init_gain must be positive, got bn_scale={bn_scale}, "
                         f"init_gain={init_gain}")


def _scaled(layer, gain):
    """Multiply a layer's initial weight by gain: the input current, and so the membrane
    potentials of the neurons it feeds, scale by gain at initialisation."""
    for name, p in layer.named_parameters():
        if name == "weight":
            p.data *= p.data.dtype.type(gain)
    return layer


def _plain_block(b, layer, n_out, bn, bn_scale, init_gain):
    """layer -> [tdBN with scale bn_scale] -> neuron. Without tdBN, MPD-AGL's g is 1 (the scale
    of an identity), from a BatchNorm that is never part of the network."""
    if bn:
        norm = BatchNorm(n_out, scale=bn_scale, dtype=b.dtype)
        return [_scaled(layer, init_gain), norm, b.spike(norm)]
    return [_scaled(layer, init_gain), b.spike(BatchNorm(1, dtype=b.dtype))]


def plain_mlp(depth, hidden=128, T=4, bn=True, bn_scale=1.0, init_gain=1.0, in_features=784,
              n_classes=10, method="ds-atgo", neuron="lif", width="threshold", dtype="float32",
              seed=0, **options):
    """A plain spiking MLP of `depth` spiking layers of `hidden` neurons, for studies of the
    membrane scale; input [T, B, ...] is flattened to [T, B, in_features].

    Each block is Linear (no bias) -> tdBN -> neuron, or Linear -> neuron when bn=False.
    bn_scale: tdBN's initial scale, alpha * V_th in the tdBN paper (1.0: the usual block):
        at initialisation the first step's potentials are ~ N(0, bn_scale^2) in every layer.
    init_gain: factor on the spiking layers' initial weights (PyTorch's uniform init).
    """
    _check_knobs(depth, bn_scale, init_gain)
    b = _Builder(T, method, neuron, width, dtype, seed, **options)
    mods, n = [Flatten()], in_features
    for _ in range(depth):
        mods += _plain_block(b, Linear(n, hidden, bias=False, rng=b.rng, dtype=dtype), hidden,
                             bn, bn_scale, init_gain)
        n = hidden
    mods.append(b.readout(n, n_classes))
    return b.finish(Sequential(*mods), "plain_mlp", depth=depth, hidden=hidden, bn=bn,
                    bn_scale=bn_scale, init_gain=init_gain, in_features=in_features,
                    n_classes=n_classes)


def plain_cnn(depth, channels=16, in_shape=(1, 28, 28), T=4, bn=True, bn_scale=1.0,
              init_gain=1.0, n_classes=10, method="ds-atgo", neuron="lif", width="threshold",
              dtype="float32", seed=0, **options):
    """A plain spiking CNN of `depth` conv3x3 spiking layers of `channels` channels, with a 2x2
    average pooling after each of the first two, then the readout; input [T, B, C, H, W].
    bn, bn_scale and init_gain as in plain_mlp."""
    _check_knobs(depth, bn_scale, init_gain)
    b = _Builder(T, method, neuron, width, dtype, seed, **options)
    c, h, w = in_shape
    mods = []
    for i in range(depth):
        conv = Conv2d(c, channels, 3, 1, 1, bias=False, rng=b.rng, dtype=dtype)
        mods += _plain_block(b, conv, channels, bn, bn_scale, init_gain)
        c = channels
        if i < 2 and h % 2 == 0 and w % 2 == 0:
            mods.append(AvgPool2d(2))
            h, w = h // 2, w // 2
    mods += [Flatten(), b.readout(c * h * w, n_classes)]
    return b.finish(Sequential(*mods), "plain_cnn", depth=depth, channels=channels,
                    in_shape=list(in_shape), bn=bn, bn_scale=bn_scale, init_gain=init_gain,
                    n_classes=n_classes)


BUILDERS.update(plain_mlp=plain_mlp, plain_cnn=plain_cnn)


# --- the authors' released ResNet19, layer for layer ----------------------------------------------

def resnet19(T=2, n_classes=10, method="ds-atgo", neuron="plif", width="std", dtype="float32",
             seed=0, **options):
    """ResNet19 as the authors' PyTorch release builds it (SEW-ResNet, docs/METHOD.md section 6), so
    that its weights trade with that release (dsatgo_np.interop.official). Input [T, B, 3, H, W].

        stem:   conv3x3(3, 128) -> tdBN -> spike
        blocks: 3, 3, 2 SEW basic blocks of 128, 256, 512 channels, strides 1, 2, 2:
                out = spike(tdBN(conv3x3(spike(tdBN(conv3x3(x)))))) + shortcut(x),
                shortcut = spike(tdBN(conv1x1(x))) where stride or width changes, else x
        head:   global average pool -> Linear(512, 256, no bias) -> BN -> spike
                -> Linear(256, n_classes, no bias), outputs [T, B, n_classes]

    Defaults follow the release: PLIF with decay sigmoid(w) = 0.2 at start (w = -ln 4),
    surrogate width from sigma (width="std"), tdBN scale alpha * V_th = 1, convolutions drawn
    from N(0, 2 / (c_out k^2)) (Kaiming, fan-out), Linear layers PyTorch's uniform default.
    """
    b = _Builder(T, method, neuron, width, dtype, seed, **options)

    def conv_block(c_in, c_out, kernel=3, stride=1):
        mods = b.conv_block(c_in, c_out, kernel, stride)
        for _, p in mods[0].named_parameters():            # Kaiming normal, fan-out
            std = np.sqrt(2.0 / (c_out * kernel * kernel))
            p.data[...] = b.rng.standard_normal(p.data.shape, dtype=dtype) * p.data.dtype.type(std)
        return mods

    mods = conv_block(3, 128)                                     # stem
    c = 128
    for c_out, stride, n_blocks in ((128, 1, 3), (256, 2, 3), (512, 2, 2)):
        for i in range(n_blocks):
            s = stride if i == 0 else 1
            main = Sequential(*conv_block(c, c_out, 3, s), *conv_block(c_out, c_out))
            short = Sequential(*conv_block(c, c_out, 1, s)) if (s != 1 or c != c_out) else None
            mods.append(SEWBlock(main, short))
            c = c_out
    mods += [GlobalAvgPool()] + b.linear_block(512, 256)
    mods.append(Linear(256, n_classes, bias=False, rng=b.rng, dtype=dtype))
    return b.finish(Sequential(*mods), "resnet19", n_classes=n_classes)


BUILDERS["resnet19"] = resnet19
