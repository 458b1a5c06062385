"""The base of the stateful shell: Parameter, Module (parameters, buffers, children, train/eval,
state dicts) and the helpers every layer module shares. The layers themselves are in model.py.

A Module holds what persists (weights, BatchNorm statistics, running thresholds) and the cache
of its last forward; the arithmetic is in the pure functions its layers call (model.py).
"""
from __future__ import annotations

import numbers

import numpy as np

from .backend import get_backend, get_xp, to_device, to_numpy

# A layer built without rng= draws its initial weights from this one generator, as PyTorch's
# layers draw from its global one: two such layers get different weights. It starts seeded
# with 0, so a script that builds its layers in the same order gets the same weights on every
# run; manual_seed(s) restarts it. The builders in models.py pass a generator of their own
# (their seed=) and leave this one alone.
_weights_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    """Restart the generator that layers built without rng= draw their weights from."""
    global _weights_rng
    _weights_rng = np.random.default_rng(seed)
    return _weights_rng


def weights_rng(rng: np.random.Generator | None = None) -> np.random.Generator:
    """rng itself, or the shared generator of manual_seed when rng is None."""
    return _weights_rng if rng is None else rng


class Parameter:
    """A learnable array and its gradient, in PyTorch's layouts.

    zero_grad() only marks the gradient as zero; the first add_grad() after it writes the
    gradient instead of adding it to a cleared array, which saves two passes over every
    parameter per step (one to clear, one to read the zeros back). Reading .grad while it is
    marked clears it then, so the laziness never shows.
    """
    __slots__ = ("data", "_grad", "_zero")

    def __init__(self, data):
        self.data = data
        self._grad = get_xp(data).zeros_like(data)
        self._zero = False

    @property
    def grad(self):
        if self._zero:
            self._grad[...] = 0
            self._zero = False
        return self._grad

    @grad.setter
    def grad(self, value):
        self._grad, self._zero = value, False

    def zero_grad(self):
        self._zero = True

    def add_grad(self, g):
        """grad += g (g broadcast to the parameter's shape)."""
        if self._zero:
            self._grad[...] = g
            self._zero = False
        else:
            self._grad += g

    def __repr__(self):
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


class Module:
    """Base class: named parameters, buffers and children; train()/eval(); state dicts."""

    def __init__(self):
        self.training = True
        self._params: dict[str, Parameter] = {}
        self._buffers: dict[str, object] = {}
        self._children: dict[str, Module] = {}

    # --- structure -----------------------------------------------------------------------
    def named_parameters(self, prefix: str = ""):
        for name, p in self._params.items():
            yield prefix + name, p
        for cname, child in self._children.items():
            yield from child.named_parameters(f"{prefix}{cname}.")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = ""):
        for name, b in self._buffers.items():
            yield prefix + name, b
        for cname, child in self._children.items():
            yield from child.named_buffers(f"{prefix}{cname}.")

    def modules(self):
        yield self
        for child in self._children.values():
            yield from child.modules()

    def train(self, mode: bool = True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    def to(self, backend: str):
        """Move every parameter and buffer to "numpy" (CPU) or "cupy" (GPU)."""
        xp = get_backend(backend)
        for m in self.modules():
            for p in m._params.values():
                p.data, p.grad = to_device(p.data, xp), to_device(p.grad, xp)
            for k, b in m._buffers.items():
                m._buffers[k] = to_device(b, xp)
        return self

    def __call__(self, x):
        return self.forward(x)

    def extra_repr(self) -> str:
        """Shapes and options shown by repr(); modules override it."""
        return ", ".join(f"{k}={tuple(p.data.shape)}" for k, p in self._params.items())

    def __repr__(self):
        head = f"{type(self).__name__}({self.extra_repr()})"
        if not self._children:
            return head
        body = "\n".join(f"  ({name}): " + repr(c).replace("\n", "\n  ")
                         for name, c in self._children.items())
        return f"{type(self).__name__}(\n{body}\n)"

    # --- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """name -> NumPy array copy, parameters then buffers (BN statistics, running thresholds)."""
        state = {name: to_numpy(p.data).copy() for name, p in self.named_parameters()}
        state.update({name: to_numpy(b).copy() for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state: dict):
        """Copy arrays into this model; every entry must be present with the right shape and
        hold finite real numbers in the model's dtype."""
        own = dict(self.named_parameters())
        bufs = {name: None for name, _ in self.named_buffers()}
        expected = list(own) + list(bufs)
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in own and k not in bufs]
        if missing or unexpected:
            raise ValueError("state dict does not fit this model (another architecture, "
                             f"method or T?): missing {missing[:6]}, unexpected {unexpected[:6]}")
        new = {}             # every entry checked before any is copied in
        for name in expected:
            value = to_numpy(state[name])
            if value.dtype.kind not in "biuf":              # complex, strings, objects
                raise TypeError(f"state dict entry {name!r} has dtype {value.dtype}; a model "
                                "holds real numbers only: was the file written by dsatgo_np?")
            holder, key = self._locate(name)
            current = holder._params[key].data if key in holder._params else holder._buffers[key]
            if value.shape != current.shape:
                raise ValueError(f"state dict entry {name!r} has shape {value.shape}, the model "
                                 f"expects {tuple(current.shape)}: was it saved from another "
                                 "architecture or another T?")
            with np.errstate(over="ignore", invalid="ignore"):     # reported just below
                cast = value.astype(current.dtype)                  # a copy
            if cast.dtype.kind == "f" and not np.isfinite(cast).all():
                # checked after the cast: 1e300 is finite in float64 and inf in float32
                raise ValueError(f"state dict entry {name!r} holds NaN or infinite values (in "
                                 f"{current.dtype}): a network holds finite numbers only; was "
                                 "it saved from a diverged run?")
            new[name] = (holder, key, to_device(cast, get_xp(current)))
        for holder, key, value in new.values():
            if key in holder._params:
                holder._params[key].data = value
            else:
                holder._buffers[key] = value
        return self

    def _locate(self, name: str):
        holder = self
        parts = name.split(".")
        for part in parts[:-1]:
            holder = holder._children[part]
        return holder, parts[-1]


def _fold(x):
    """[T, B, ...] -> [T * B, ...]; a static (direct-encoded) input keeps only x[0]."""
    return x.reshape((-1,) + x.shape[2:])                 # (T*B, ...)


def is_static(x) -> bool:
    """True for a direct-encoded input: the same array at every step (time stride 0)."""
    return x.ndim > 1 and x.shape[0] > 1 and x.strides[0] == 0


def _kept(module, cache):
    """The cache to keep: none in eval mode, so inference frees each layer's input early."""
    return cache if module.training else None


def _cache(module):
    if getattr(module, "cache", None) is None:
        raise RuntimeError(f"{type(module).__name__}.backward needs a forward in training mode "
                           "first (eval mode keeps no cache): call net.train(), then "
                           "net.forward(x), then net.backward(dout)")
    return module.cache


def _check_size(layer, **sizes):
    for name, value in sizes.items():
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{layer}: {name} must be a whole number >= 1, got {value!r}")


def _check_input(name, x, weight, ndim):
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected input of {ndim} dimensions ([T, B, ...]), got shape "
                         f"{tuple(x.shape)}; encode static data first with dn.encode.direct(x, T)")
    if x.dtype != weight.dtype:
        raise TypeError(f"{name}: input dtype {x.dtype} differs from the model's {weight.dtype}; "
                        f"cast the input with x.astype('{weight.dtype}') or build the model "
                        f"with dtype='{x.dtype}'")
