"""Time forward + backward of the fast conv2d (float32) on the shapes of the small SNN CNNs.

    PYTHONPATH=. python bench/bench_conv.py [--repeat 3] [--chunk-bytes 4194304] [--dx-methods]
                                            [--pool]

FLOPs: forward 2*N*F*C*KH*KW*OH*OW; backward twice that (dW and dx), once when need_dx=False.
Each time is the best of --repeat runs after one warm-up. When torch is importable, the same
shapes run through torch.nn.functional.conv2d (forward + autograd backward) for comparison.
--dx-methods also times the three ways to get dL/dx at stride 1: col2im (fast/conv.py _conv_dx_col2im,
the general path), col2im over wide rows (_conv_dx_s1, what conv2d_backward uses when
F > C) and the forward conv with the flipped kernel (what it uses when F <= C).
--pool also times average pooling's backward (2x2) on the networks' pooled shapes: the k*k
the plain core's pooling.avgpool2d_backward against the matrix product of the fast
fast/pooling.avgpool2d_backward.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from dsatgo_np import pooling as plain_pooling
from dsatgo_np.fast import conv
from dsatgo_np.fast import pooling

POOLED = [(256, 32, 28, 28), (256, 64, 14, 14), (128, 128, 32, 32), (128, 128, 16, 16)]

# (x shape, weight shape, padding, need_dx)
SHAPES = [
    ((256, 1, 28, 28), (32, 1, 3, 3), 1, False),      # MNIST conv1, T=4 x B=64
    ((256, 32, 14, 14), (64, 32, 3, 3), 1, True),     # MNIST conv2
    ((128, 3, 32, 32), (64, 3, 3, 3), 1, True),       # CIFAR conv1, T=4 x B=32
    ((128, 64, 32, 32), (128, 64, 3, 3), 1, True),    # CIFAR conv2
    ((128, 128, 16, 16), (128, 128, 3, 3), 1, True),  # CIFAR conv3
    ((64, 32, 32, 32), (32, 32, 3, 3), 1, True),      # SEW-ResNet x0.25 first stage, T=2 x B=32
]


def best_ms(fn, repeat):
    fn()  # warm-up: first-touch page faults, BLAS thread start
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def flops(x_shape, w_shape, padding, stride=1):
    N, C, H, W = x_shape
    F, _, KH, KW = w_shape
    OH, OW = (H + 2 * padding - KH) // stride + 1, (W + 2 * padding - KW) // stride + 1
    return 2 * N * F * C * KH * KW * OH * OW


def bench_numpy(x_shape, w_shape, padding, need_dx, repeat):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal(w_shape, dtype=np.float32) * 0.1
    b = np.zeros(w_shape[0], dtype=np.float32)
    out, cache = conv.conv2d_forward(x, w, b, padding=padding)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    fwd = best_ms(lambda: conv.conv2d_forward(x, w, b, padding=padding), repeat)
    bwd = best_ms(lambda: conv.conv2d_backward(dout, cache, need_dx=need_dx), repeat)
    return fwd, bwd


def bench_torch(torch, x_shape, w_shape, padding, need_dx, repeat):
    F = torch.nn.functional
    x = torch.randn(x_shape, requires_grad=need_dx)
    w = (0.1 * torch.randn(w_shape)).requires_grad_()
    b = torch.zeros(w_shape[0], requires_grad=True)
    dout = torch.randn(F.conv2d(x, w, b, padding=padding).shape)

    def step():
        out = F.conv2d(x, w, b, padding=padding)
        out.backward(dout)
    return best_ms(step, repeat)


def bench_dx_methods(x_shape, w_shape, padding, repeat):
    """(col2im ms, wide col2im ms, flipped-kernel ms) for dL/dx of a stride-1 conv."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal(w_shape, dtype=np.float32) * 0.1
    out, _ = conv.conv2d_forward(rng.standard_normal(x_shape, dtype=np.float32), w, padding=padding)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    KH = w_shape[2]
    w_flip = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    col2im = best_ms(lambda: conv._conv_dx_col2im(dout, w, x_shape, 1, padding), repeat)
    wide = best_ms(lambda: conv._conv_dx_s1(dout, w, x_shape, padding), repeat)
    flipped = best_ms(lambda: conv.conv2d_forward(dout, w_flip, padding=KH - 1 - padding), repeat)
    return col2im, wide, flipped


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk-bytes", type=int, default=conv.CHUNK_BYTES,
                        help="size of the im2col buffer (conv.CHUNK_BYTES)")
    parser.add_argument("--dx-methods", action="store_true",
                        help="also compare the three ways to get dL/dx at stride 1")
    parser.add_argument("--pool", action="store_true",
                        help="also compare average pooling's two backward passes")
    args = parser.parse_args()
    conv.CHUNK_BYTES = args.chunk_bytes
    try:
        import torch
    except ImportError:
        torch = None

    print(f"numpy {np.__version__}, CHUNK_BYTES={conv.CHUNK_BYTES}, float32")
    print(f"{'x':>20} {'weight':>18} {'fwd ms':>8} {'bwd ms':>8} {'total ms':>9} "
          f"{'fwd GF/s':>9} {'bwd GF/s':>9} {'GF/s':>6}" + ("  torch ms" if torch else ""))
    total_ms = 0.0
    for x_shape, w_shape, padding, need_dx in SHAPES:
        fwd, bwd = bench_numpy(x_shape, w_shape, padding, need_dx, args.repeat)
        f = flops(x_shape, w_shape, padding)
        fb = f * (2 if need_dx else 1)
        line = (f"{str(x_shape):>20} {str(w_shape):>18} {fwd:8.1f} {bwd:8.1f} {fwd + bwd:9.1f} "
                f"{f / fwd / 1e6:9.1f} {fb / bwd / 1e6:9.1f} {(f + fb) / (fwd + bwd) / 1e6:6.1f}")
        if torch is not None:
            line += f"  {bench_torch(torch, x_shape, w_shape, padding, need_dx, args.repeat):8.1f}"
        print(line + ("" if need_dx else "   (need_dx=False)"))
        total_ms += fwd + bwd
    print(f"total {total_ms:.1f} ms")
    if args.dx_methods:
        print("\ndL/dx at stride 1: general col2im, col2im over wide rows, flipped-kernel conv")
        for x_shape, w_shape, padding, need_dx in SHAPES:
            if need_dx:
                col2im, wide, flipped = bench_dx_methods(x_shape, w_shape, padding, args.repeat)
                print(f"{str(x_shape):>20} {str(w_shape):>18}  col2im {col2im:7.1f} ms  "
                      f"wide {wide:7.1f} ms  flipped {flipped:7.1f} ms")
    if args.pool:
        print("\naverage pooling 2x2, backward: plain core (broadcast copy), fast (matrix product)")
        rng = np.random.default_rng(0)
        for x_shape in POOLED:
            x = rng.standard_normal(x_shape, dtype=np.float32)
            out, cache = pooling.avgpool2d_forward(x, 2)
            dout = rng.standard_normal(out.shape, dtype=np.float32)
            ref = best_ms(lambda: plain_pooling.avgpool2d_backward(dout, cache), args.repeat)
            fast = best_ms(lambda: pooling.avgpool2d_backward(dout, cache), args.repeat)
            print(f"{str(x_shape):>20}  plain {ref:7.2f} ms  matmul {fast:7.2f} ms  "
                  f"{ref / fast:5.2f}x")


if __name__ == "__main__":
    main()
