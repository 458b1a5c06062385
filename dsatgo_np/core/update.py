"""The SGD update as a pure function on arrays: the formula that optim.SGD applies.

Kept apart from optim.py (the stateful optimisers) so that the kernel tables (kernels.py) and
their faster versions (fast/optim.py, gpu/layers.py) can take it without importing the shell.
"""
from __future__ import annotations


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
