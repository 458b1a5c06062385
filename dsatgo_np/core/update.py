"""The SGD and Adam updates as pure functions on arrays: the formulas that optim.SGD and
optim.Adam apply.

Kept apart from optim.py (the stateful optimisers) so that the kernel tables (kernels.py) and
their faster versions (fast/optim.py, gpu/layers.py) can take them without importing the shell.
"""
from __future__ import annotations

from ..backend import get_xp


def sgd_update(p, g, b, lr: float, momentum: float, weight_decay: float, nesterov: bool):
    """One SGD step, in place, on arrays (or matching views): the formulas of SGD's docstring.
    b is the momentum buffer (None without momentum)."""
    if weight_decay:
        g = g + weight_decay * p
    if momentum:
        b *= momentum
        b += g
        g = g + momentum * b if nesterov else b
    p -= lr * g


def adam_update(p, g, m, v, lr: float, beta1: float, beta2: float, eps: float,
                weight_decay: float, step: int):
    """One Adam step, in place, on arrays: the formulas of Adam's docstring. m and v are the
    moment buffers (updated in place); step is t >= 1, the step's number."""
    if weight_decay:
        g = g + weight_decay * p
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    m_hat = m / (1 - beta1 ** step)                      # bias corrections
    v_hat = v / (1 - beta2 ** step)
    p -= lr * m_hat / (get_xp(p).sqrt(v_hat) + eps)
