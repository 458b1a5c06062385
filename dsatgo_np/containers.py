"""The shell's stateless layers and containers: pooling, Flatten, Dropout, Sequential, SEWBlock.

Stateless layers fold time into the batch, [T, B, ...] -> [T * B, ...], and call the core
through the kernel table; Sequential applies modules in order and backpropagates in reverse.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import kernels
from .core import layers
from .module import Module, _cache, _fold, weights_rng


# --- stateless layers --------------------------------------------------------------------------

class AvgPool2d(Module):
    def __init__(self, kernel: int = 2):
        super().__init__()
        self.kernel = kernel

    def forward(self, x):
        T, B = x.shape[:2]
        self.kernels = kernels.of(x)
        out, self.cache = self.kernels.avgpool2d_forward(_fold(x), self.kernel)
        return out.reshape((T, B) + out.shape[1:])

    def backward(self, dout, need_dx: bool = True):
        cache = _cache(self)                  # raises if no forward ran
        dx = self.kernels.avgpool2d_backward(_fold(dout), cache)
        return dx.reshape(dout.shape[:2] + dx.shape[1:])


class MaxPool2d(Module):
    def __init__(self, kernel: int = 2, stride: int | None = None):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        T, B = x.shape[:2]
        self.kernels = kernels.of(x)
        out, self.cache = self.kernels.maxpool2d_forward(_fold(x), self.kernel, self.stride)
        return out.reshape((T, B) + out.shape[1:])

    def backward(self, dout, need_dx: bool = True):
        cache = _cache(self)                  # raises if no forward ran
        dx = self.kernels.maxpool2d_backward(_fold(dout), cache)
        return dx.reshape(dout.shape[:2] + dx.shape[1:])


class GlobalAvgPool(Module):
    """[T, B, C, H, W] -> [T, B, C]: mean over space."""

    def forward(self, x):
        T, B = x.shape[:2]
        self.kernels = kernels.of(x)
        out, self.cache = self.kernels.global_avgpool_forward(_fold(x))
        return out.reshape(T, B, -1)

    def backward(self, dout, need_dx: bool = True):
        cache = _cache(self)                  # raises if no forward ran
        dx = self.kernels.global_avgpool_backward(_fold(dout), cache)
        return dx.reshape(dout.shape[:2] + dx.shape[1:])


class Flatten(Module):
    """[T, B, ...] -> [T, B, prod(...)]."""

    def forward(self, x):
        self.shape = x.shape
        return x.reshape(x.shape[0], x.shape[1], -1)

    def backward(self, dout, need_dx: bool = True):
        if getattr(self, "shape", None) is None:
            raise RuntimeError("Flatten.backward needs a forward first: call net.forward(x), "
                               "then net.backward(dout)")
        return dout.reshape(self.shape)


class Dropout(Module):
    """Dropout with one mask per sample shared by all time steps; identity in eval mode.

    The masks come from one NumPy generator seeded with `seed`, drawn on the host and copied
    to x's device: the same masks on a CPU and a GPU, so that both run the same experiment.
    Without a seed, the layer draws one from the generator of manual_seed (as layers built
    without rng= draw their weights), so two Dropout layers never share their masks.
    """

    def __init__(self, p: float = 0.5, seed: int | None = None):
        super().__init__()
        if not (isinstance(p, numbers.Real) and 0 <= p < 1):
            raise ValueError(f"dropout probability must lie in [0, 1), got {p!r}")
        if seed is None:
            seed = int(weights_rng().integers(2**63))
        self.p, self.seed, self.keep = p, seed, None
        self.rng = np.random.default_rng(seed)

    def forward(self, x):
        self.keep = None
        if not self.training or self.p == 0:
            return x
        out, self.keep = layers.dropout_forward(x, self.p, self.rng)
        return out

    def backward(self, dout, need_dx: bool = True):
        return dout if self.keep is None else layers.dropout_backward(dout, self.keep)


# --- containers ----------------------------------------------------------------------------------

class Sequential(Module):
    """Modules applied in order; backward walks them in reverse."""

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            self._children[str(i)] = m

    def __iter__(self):
        return iter(self._children.values())

    def __len__(self):
        return len(self._children)

    def __getitem__(self, i):
        return list(self._children.values())[i]

    def forward(self, x):
        for m in self._children.values():
            x = m.forward(x)
        return x

    def backward(self, dout, need_dx: bool = False):
        """Backpropagate dL/dout; returns dL/dx only when need_dx. A network's input learns
        nothing, so by default its first layer skips dL/dx (a layer's own backward defaults to
        need_dx=True: inside a network, the layer before it needs it)."""
        mods = list(self._children.values())
        # a layer needs dL/dx only if something before it learns (or the caller asks)
        learns_before = [need_dx]
        for m in mods[:-1]:
            learns_before.append(learns_before[-1] or any(True for _ in m.named_parameters()))
        for m, need in zip(reversed(mods), reversed(learns_before)):
            dout = m.backward(dout, need_dx=need)
            if dout is None:
                break
        return dout


class SEWBlock(Module):
    """Spike-element-wise residual block: out = main(x) + shortcut(x) (SEW's ADD).

    main: conv-BN-spike-conv-BN-spike; shortcut: identity, or conv1x1-BN-spike when the
    shape changes. The sum of two spike trains may reach 2: SEW's ADD keeps it.
    """

    def __init__(self, main: Sequential, shortcut: Sequential | None = None):
        super().__init__()
        self._children["main"] = main
        if shortcut is not None:
            self._children["shortcut"] = shortcut

    def forward(self, x):
        out = self._children["main"].forward(x)
        short = self._children.get("shortcut")
        return out + (x if short is None else short.forward(x))

    def backward(self, dout, need_dx: bool = True):
        dx = self._children["main"].backward(dout, need_dx=True)     # d(a + b)/da = 1
        short = self._children.get("shortcut")
        return dx + (dout if short is None else short.backward(dout, need_dx=True))
