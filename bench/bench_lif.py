"""Fast kernels against the plain core: LIF forward/backward and tdBN, on the benchmark shapes.

    PYTHONPATH=. python bench/bench_lif.py [--repeat 5] [--block 65536] [--block-bytes 524288]

For each shape, the median time of the plain core (neuron.lif_forward, ...) and of the fast
kernel (fast/neuron.py, fast/layers.py), interleaved call by call, and their ratio; float32, method ds-atgo for the neuron
("lif fwd v": vanilla, whose fixed threshold needs no statistics, to show what they cost).
--block / --block-bytes override fast.neuron.BLOCK / fast.layers.BLOCK_BYTES to try other block sizes.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from dsatgo_np import layers as plain_layers
from dsatgo_np import neuron as plain_neuron
from dsatgo_np.fast import layers, neuron
from dsatgo_np.core.neuron import SpikeConfig, make_rule

# [T*B, C, ...] activations of the benchmark networks (T = 4)
SHAPES = {
    "mlp 512": (512, 512),
    "cnn conv1": (256, 32, 28, 28),
    "cnn conv2": (256, 64, 14, 14),
    "cifar conv1": (128, 64, 32, 32),
    "cifar conv3": (128, 128, 16, 16),
}


def interleaved(fns, repeat):
    """Median seconds of each function, calling them in turn `repeat` times after a warm-up."""
    for f in fns:
        f()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for f, ts in zip(fns, times):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
    return [float(np.median(ts)) for ts in times]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--block", type=int, default=neuron.BLOCK)
    p.add_argument("--block-bytes", type=int, default=layers.BLOCK_BYTES)
    args = p.parse_args()
    neuron.BLOCK, layers.BLOCK_BYTES = args.block, args.block_bytes
    rng = np.random.default_rng(0)
    print(f"neuron.BLOCK={neuron.BLOCK}, layers.BLOCK_BYTES={layers.BLOCK_BYTES}, float32, "
          f"median of {args.repeat}")
    print(f"{'shape':<12} {'op':<10} {'plain ms':>12} {'fast ms':>9} {'speed-up':>9}")
    for name, shape in SHAPES.items():
        x = (rng.standard_normal(shape) + 0.3).astype(np.float32)
        X = x.reshape((4, -1) + shape[1:])                        # (T, B, ...)
        lam = np.asarray(0.2, dtype=np.float32)
        rule = make_rule(SpikeConfig(method="ds-atgo"), lam, True)
        plain = make_rule(SpikeConfig(method="vanilla"), lam, True)      # no statistics
        _, cache = neuron.lif_forward(X, lam, rule)
        dS = rng.standard_normal(X.shape).astype(np.float32)
        C = shape[1]
        g, b = np.ones(C, np.float32), np.zeros(C, np.float32)
        _, c_ref, _, _ = plain_layers.batchnorm_forward(x, g, b)
        _, c_fast, _, _ = layers.batchnorm_forward(x, g, b)
        cases = {
            "lif fwd": (lambda: plain_neuron.lif_forward(X, lam, rule),
                        lambda: neuron.lif_forward(X, lam, rule)),
            "lif fwd v": (lambda: plain_neuron.lif_forward(X, lam, plain),
                          lambda: neuron.lif_forward(X, lam, plain)),
            "lif bwd": (lambda: plain_neuron.lif_backward(dS, cache, need_dlam=False),
                        lambda: neuron.lif_backward(dS, cache, need_dlam=False)),
            "bn fwd": (lambda: plain_layers.batchnorm_forward(x, g, b),
                       lambda: layers.batchnorm_forward(x, g, b)),
            "bn bwd": (lambda: plain_layers.batchnorm_backward(x, c_ref),
                       lambda: layers.batchnorm_backward(x, c_fast)),
        }
        for op, (ref, fast) in cases.items():
            t_ref, t_fast = interleaved([ref, fast], args.repeat)
            print(f"{name:<12} {op:<10} {1e3 * t_ref:12.1f} {1e3 * t_fast:9.1f} "
                  f"{t_ref / t_fast:8.1f}x")


if __name__ == "__main__":
    main()
