"""Which way round to ask the BLAS for the convolution's weight gradient.

    PYTHONPATH=. python bench/gemm_layouts.py [--repeat 9]

dW_mat (F, C*KH*KW) is a sum over the pixels of a chunk: either dout @ cols^T, whose output
has F rows, or (cols @ dout^T)^T, whose output has C*KH*KW rows. The FLOPs are the same; the
BLAS's speed is not (conv.py uses the faster one). One thread, the chunk shapes of the
reference networks' stride-1 convs, interleaved calls, median GFLOP/s.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

# (F, C*KH*KW, pixels of one chunk): CIFAR conv2, CIFAR conv3, small-CNN conv2, dx of CIFAR conv2
SHAPES = [(128, 576, 1088), (128, 1152, 1152), (64, 288, 1792), (64, 1152, 1088)]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=9)
    args = p.parse_args()
    threadpool_limits(1)
    rng = np.random.default_rng(0)
    print(f"{'F, C*KH*KW, pixels':>22}  {'dout @ cols^T':>14}  {'cols @ dout^T':>14}  (GFLOP/s)")
    for F, K, Q in SHAPES:
        cols = rng.random((K, Q), dtype=np.float32)
        dout = rng.random((F, Q), dtype=np.float32)
        out_f, out_k = np.empty((F, K), np.float32), np.empty((K, F), np.float32)
        ways = [lambda: np.matmul(dout, cols.T, out=out_f),
                lambda: np.matmul(cols, dout.T, out=out_k)]
        times = [[], []]
        for r in range(args.repeat + 1):
            for i, f in enumerate(ways):
                t0 = time.perf_counter()
                f()
                if r:                                  # the first round warms up
                    times[i].append(time.perf_counter() - t0)
        rates = [2 * F * K * Q / np.median(t) / 1e9 for t in times]
        print(f"{str((F, K, Q)):>22}  {rates[0]:14.0f}  {rates[1]:14.0f}")


if __name__ == "__main__":
    main()
