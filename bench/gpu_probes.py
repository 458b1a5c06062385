"""The GPU checks besides step times, for bench/gpu_check.py: TF32's effect on a matrix
product and a convolution, the same experiment on CPU and GPU, the main command's first batch.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

import dsatgo_np as dn
from dsatgo_np import backend, data, encode, losses, optim, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _timed(fn, sync, repeats: int = 10) -> float:
    """Median seconds of fn() after two warm-up calls."""
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def tf32_effect() -> dict:
    """A 4096^3 float32 product and the CIFAR CNN's 128 -> 128 3x3 convolution on 1,024 images
    of 32x32 (forward and backward), with TF32 off and on: ms and the largest error relative
    to the float64 result's scale."""
    import cupy as cp

    from dsatgo_np.gpu import conv as gconv, precision
    sync = cp.cuda.Device().synchronize
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((4096, 4096)).astype(np.float32) for _ in range(2))
    exact = a.astype(np.float64) @ b.astype(np.float64)
    x = cp.asarray(rng.standard_normal((1024, 128, 32, 32), dtype=np.float32))
    w = cp.asarray(rng.standard_normal((128, 128, 3, 3), dtype=np.float32) / 34)
    dout = cp.asarray(rng.standard_normal((1024, 128, 32, 32), dtype=np.float32))
    ref = None
    rows = {}
    for tf32 in (False, True):
        how = precision.set_tf32(tf32)
        ad, bd = cp.asarray(a), cp.asarray(b)
        ms = 1e3 * _timed(lambda: ad @ bd, sync)
        err = float(np.abs(cp.asnumpy(ad @ bd) - exact).max() / np.abs(exact).max())
        fwd = 1e3 * _timed(lambda: gconv.conv2d_forward(x, w, None, 1, 1), sync)
        out, cache = gconv.conv2d_forward(x, w, None, 1, 1)
        bwd = 1e3 * _timed(lambda: gconv.conv2d_backward(dout, cache), sync)
        dx, grads = gconv.conv2d_backward(dout, cache)
        now = [cp.asnumpy(v) for v in (out, dx, grads["weight"])]
        ref = ref or now
        conv_err = max(float(np.abs(n - r).max() / np.abs(r).max()) for n, r in zip(now, ref))
        rows["tf32" if tf32 else "float32"] = dict(
            set=how, gemm_ms=ms, gemm_tflops=2 * 4096**3 / ms / 1e9, gemm_rel_error=err,
            conv_forward_ms=fwd, conv_backward_ms=bwd, conv_rel_diff_to_float32=conv_err)
    precision.set_tf32(False)
    return rows


def conv_breakdown() -> dict:
    """ms of each part of gpu/conv.py on the CIFAR CNN's 128 -> 128 3x3 convolution of 1,024
    images of 32x32 in float32: im2col, the three matrix products, the layout copies, col2im
    (one chunk of the default CHUNK_BYTES, then scaled to the whole batch)."""
    import cupy as cp

    from dsatgo_np.gpu import conv as gconv
    from dsatgo_np.gpu.build import kernel
    sync = cp.cuda.Device().synchronize
    rng = np.random.default_rng(1)
    N, C, F, H = 1024, 128, 128, 32
    x = cp.asarray(rng.standard_normal((N, C, H, H), dtype=np.float32))
    w2 = cp.asarray(rng.standard_normal((F, C * 9), dtype=np.float32))
    lo, hi = gconv._chunks(N, C * 9 * H * H * 4)[0]
    g = gconv._geometry(C, H, H, 3, 3, H, H, 1, 1)
    col = gconv._im2col(cp, x[lo:hi], g)
    d = cp.asarray(rng.standard_normal((F, col.shape[1]), dtype=np.float32))
    out = cp.empty((hi - lo, F, H, H), dtype=np.float32)
    dx = cp.empty_like(x[lo:hi])
    unfold = kernel(cp, "conv_unfold", *gconv._UNFOLD, consts=dict(F=F, L=H * H))
    fold = kernel(cp, "conv_fold", *gconv._FOLD, consts=dict(F=F, L=H * H))
    col2im = kernel(cp, "col2im", *gconv._COL2IM, consts=g)
    dcol = w2.T @ d
    parts = {"im2col": lambda: gconv._im2col(cp, x[lo:hi], g),
             "W @ col": lambda: w2 @ col,
             "unfold": lambda: unfold(d, w2, hi - lo, False, out),
             "fold": lambda: fold(out, hi - lo, d),
             "dout @ col^T": lambda: d @ col.T,
             "W^T @ dout": lambda: w2.T @ d,
             "col2im": lambda: col2im(dcol, hi - lo, dx)}
    scale = N / (hi - lo)
    return dict(images_per_chunk=hi - lo, **{k: 1e3 * scale * _timed(f, sync, 5)
                                             for k, f in parts.items()})


# --- the same experiment on the CPU and the GPU ---------------------------------------------------

CIFAR_LONG = dict(dataset="cifar10", model="vgg", vgg_layers=[64, 128, "P", 128, "P"], T=2,
                  batch_size=64, lr=0.05, schedule="cosine", augment=True, weight_decay=1e-4,
                  label_smoothing=0.1, epochs=7, method="ds-atgo")


def first_steps(cfg, xp, steps: int, x, y, in_shape, n_classes, device="cupy") -> list:
    """The batch losses of the training command's first `steps` steps on module xp: its batch
    order, augmentation, initial weights and schedule (dsatgo_np.train.loop, step for step)."""
    net = train.build_model(cfg, in_shape, n_classes)
    if xp is not np:
        net.to(device)
    opt = train.make_optimizer(cfg, net.parameters())
    total = data.num_batches(len(y), cfg.batch_size) * cfg.epochs
    out_losses = []
    for i, (xb, yb) in enumerate(data.batches(x, y, cfg.batch_size, seed=cfg.seed, epoch=0)):
        if i == steps:
            break
        opt.lr = optim.cosine_lr(cfg.lr, i, total)
        if cfg.augment:
            xb = data.random_crop_flip(xb, np.random.default_rng([cfg.seed, 0, i]))
        out = net.forward(encode.direct(xp.asarray(xb), cfg.T, check_finite=False))
        loss, dout = losses.cross_entropy(out, xp.asarray(yb), cfg.label_smoothing,
                                          check_labels=False)
        net.zero_grad()
        net.backward(dout)
        opt.step()
        out_losses.append(float(loss))
    return out_losses


def same_experiment(steps: int = 30) -> dict:
    """cifar-long's first steps on NumPy (this machine's CPU) and on CuPy, from the same seed."""
    import cupy as cp
    cfg = train.Config(**CIFAR_LONG)
    xtr, ytr, _, _ = train.load_data(cfg)[:4]
    in_shape, n_classes = xtr.shape[1:], int(ytr.max()) + 1
    t0 = time.time()
    cpu = first_steps(cfg, np, steps, xtr, ytr, in_shape, n_classes)
    t1 = time.time()
    gpu = first_steps(cfg, cp, steps, xtr, ytr, in_shape, n_classes)
    diff = [abs(a - b) for a, b in zip(cpu, gpu)]
    return dict(options=CIFAR_LONG, steps=steps, cpu_loss=cpu, gpu_loss=gpu, abs_diff=diff,
                cpu_seconds=t1 - t0, gpu_seconds=time.time() - t1)


# --- the main command's first batch -----------------------------------------------------------------

_FIRST_BATCH = r"""
import os, sys, time
t0 = time.time()
from dsatgo_np import train
cfg = train.Config(backend=sys.argv[2], out=sys.argv[1], plots=False)
def stop(epoch, i):
    print(f"first batch after {time.time() - t0:.2f} s", flush=True)
    os._exit(0)
train.fit(cfg, on_batch=stop, verbose=False, progress=False)
"""


def first_batch(cache_dir: str, out_dir: str, backend_name: str = "cupy") -> list:
    """Seconds from `import` to the end of the main command's first batch on CuPy, in fresh
    processes: with an empty kernel cache, then with the cache that run filled."""
    env = dict(os.environ, CUPY_CACHE_DIR=cache_dir, PYTHONPATH=ROOT)
    times = []
    for i in range(2):
        r = subprocess.run([sys.executable, "-c", _FIRST_BATCH, os.path.join(out_dir, f"r{i}"),
                            backend_name],
                           env=env, capture_output=True, text=True, timeout=300)
        line = [x for x in r.stdout.splitlines() if x.startswith("first batch")]
        times.append(float(line[0].split()[3]) if line else r.stderr[-500:])
    return times


def gpu_name() -> str:
    import cupy as cp
    name = cp.cuda.runtime.getDeviceProperties(0)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def versions() -> dict:
    import cupy as cp
    info = dict(gpu=gpu_name(), cupy=cp.__version__, numpy=np.__version__,
                cuda_runtime=cp.cuda.runtime.runtimeGetVersion(), cpus=os.cpu_count(),
                dsatgo_np=dn.__version__, backend_ok=backend.gpu_available())
    from importlib import metadata
    for name in ("torch", "spikingjelly", "snntorch"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "absent"
    return info
