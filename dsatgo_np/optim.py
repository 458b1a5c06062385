"""Optimisers and learning-rate schedules with PyTorch's semantics, so results compare.

Each optimiser updates Parameter objects (with .data and .grad) in place.
"""
from __future__ import annotations

import math

from . import kernels
from .backend import get_xp
from .core.update import adam_update, sgd_update  # noqa: F401  (the plain formulas)


def _check_options(name: str, params: list, lr, weight_decay, **ranges):
    """Named errors for options that would train on garbage: NaN or negative rates, momentum
    or betas outside [0, 1), no parameters. ranges: option -> (value, low, high, open_low,
    what it must be): the value must be finite and in [low, high) (in (low, high) if open_low)."""
    if not params:
        raise ValueError(f"{name} got no parameters to optimise: pass net.parameters() of a "
                         "network that has some")
    checks = dict(lr=(lr, 0.0, math.inf, False, "positive and finite"),
                  weight_decay=(weight_decay, 0.0, math.inf, False, "a finite number >= 0"),
                  **ranges)
    for key, (value, low, high, open_low, what) in checks.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{name}: {key} must be a number, got {value!r}") from None
        if not math.isfinite(v) or v < low or v >= high or (open_low and v <= low) \
                or (key == "lr" and v <= 0):
            raise ValueError(f"{name}: {key} must be {what}, got {value!r}")


class SGD:
    """SGD with momentum and weight decay, as torch.optim.SGD (dampening 0).

        g = grad + weight_decay * p          (decay joins the gradient before momentum)
        b = momentum * b + g                 (b = g at the first step)
        p = p - lr * (g + momentum * b if nesterov else b)

    The buffer starts at zero, so that the first step's b = momentum * 0 + g is g exactly.
    Each parameter's update is the kernel table's sgd_update (kernels.py): sgd_update below,
    or its faster CPU and GPU versions, tested equal bit for bit (tests/test_optim.py).
    """

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        self.params = list(params)
        _check_options("SGD", self.params, lr, weight_decay,
                       momentum=(momentum, 0.0, 1.0, False, "in [0, 1)"))
        if nesterov and not momentum:
            raise ValueError("SGD: nesterov=True needs a momentum > 0")
        self.lr, self.momentum, self.weight_decay, self.nesterov = lr, momentum, weight_decay, nesterov
        self.buffers = [None] * len(self.params)

    def step(self):
        options = (self.lr, self.momentum, self.weight_decay, self.nesterov)
        for i, p in enumerate(self.params):
            if self.momentum and self.buffers[i] is None:
                self.buffers[i] = get_xp(p.data).zeros_like(p.data)
            kernels.of(p.data).sgd_update(p.data, p.grad, self.buffers[i], *options)

    def state_dict(self) -> dict:
        return {f"momentum.{i}": b for i, b in enumerate(self.buffers) if b is not None}

    def load_state_dict(self, state: dict):
        xp = get_xp(self.params[0].data) if self.params else None
        for i, p in enumerate(self.params):
            b = state.get(f"momentum.{i}")
            self.buffers[i] = None if b is None else xp.asarray(b, dtype=p.data.dtype).copy()


class Adam:
    """Adam as torch.optim.Adam (L2 weight decay added to the gradient, bias-corrected moments):

        g = grad + weight_decay * p
        m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2      (both start at zero)
        p = p - lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)   (t: the step, from 1)

    Each parameter's update is the kernel table's adam_update (kernels.py): update.adam_update,
    or its GPU version (one launch per parameter), tested equal bit for bit.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        self.params = list(params)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"Adam: betas must be a pair (beta1, beta2), got {betas!r}")
        _check_options("Adam", self.params, lr, weight_decay,
                       beta1=(betas[0], 0.0, 1.0, False, "in [0, 1)"),
                       beta2=(betas[1], 0.0, 1.0, False, "in [0, 1)"),
                       eps=(eps, 0.0, math.inf, True, "a positive finite number"))
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.t = 0
        self.m = [None] * len(self.params)
        self.v = [None] * len(self.params)

    def step(self):
        self.t += 1
        b1, b2 = self.betas
        for i, p in enumerate(self.params):
            if self.m[i] is None:
                xp = get_xp(p.data)
                self.m[i], self.v[i] = xp.zeros_like(p.data), xp.zeros_like(p.data)
            kernels.of(p.data).adam_update(p.data, p.grad, self.m[i], self.v[i], self.lr, b1,
                                           b2, self.eps, self.weight_decay, self.t)

    def state_dict(self) -> dict:
        state = {"t": self.t}
        for i in range(len(self.params)):
            if self.m[i] is not None:
                state[f"m.{i}"], state[f"v.{i}"] = self.m[i], self.v[i]
        return state

    def load_state_dict(self, state: dict):
        self.t = int(state.get("t", 0))
        for i, p in enumerate(self.params):
            xp = get_xp(p.data)
            if f"m.{i}" in state:
                self.m[i] = xp.asarray(state[f"m.{i}"], dtype=p.data.dtype).copy()
                self.v[i] = xp.asarray(state[f"v.{i}"], dtype=p.data.dtype).copy()


def cosine_lr(base_lr: float, step: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Cosine annealing (torch's CosineAnnealingLR, T_max = total_steps) at a given step."""
    if total_steps <= 0:
        return base_lr
    step = min(step, total_steps)
    return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * step / total_steps)) / 2
