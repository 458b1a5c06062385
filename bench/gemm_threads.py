"""How one float32 GEMM (a CIFAR conv layer's per-sample product) fares with 1 and 2 threads.

    .venv-bench/bin/python bench/gemm_threads.py [--repeat 100] [--mlp]

Runs NumPy (OpenBLAS) and, when importable, torch, each with 1 then 2 threads, in fresh
processes (OpenBLAS reads OPENBLAS_NUM_THREADS at start-up), and prints ms per call. On a
machine whose second core is busy with another process, the 2-thread figures show the wait of
a threaded BLAS call for its descheduled helper thread.

--mlp instead times the MLP's five GEMMs (784-512-512, T=4, B=128) two ways, each way in a
fresh process of its own (so that neither meets the other's idle BLAS threads): NumPy's
matmul on OpenBLAS's two threads, and dsatgo_np.fast.parallel.matmul(split=True), two one-thread
GEMMs on dsatgo_np's threads. The gap is why parallel.matmul leaves products of at least
BLAS_OWN_MACS multiply-adds to the BLAS's threads.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

CODE = """
import sys, time, numpy as np
th, repeat = int(sys.argv[1]), int(sys.argv[2])
a = np.random.default_rng(0).random((128, 576), dtype=np.float32)
b = np.random.default_rng(1).random((576, 1024), dtype=np.float32)
def per_call(f):
    f(); t0 = time.perf_counter()
    for _ in range(repeat): f()
    return (time.perf_counter() - t0) / repeat * 1e3
print(f"numpy  {th} thread(s): {per_call(lambda: a @ b):6.2f} ms per 128x576x1024 GEMM")
try:
    import torch
except ImportError:
    sys.exit()
torch.set_num_threads(th)
ta, tb = torch.from_numpy(a), torch.from_numpy(b)
print(f"torch  {th} thread(s): {per_call(lambda: ta @ tb):6.2f} ms per 128x576x1024 GEMM")
"""

MLP_CODE = """
import sys, time, numpy as np
from dsatgo_np.fast import parallel
way, repeat = sys.argv[1], int(sys.argv[2])
r = np.random.default_rng(0)
f = lambda *s: r.standard_normal(s).astype(np.float32)
x0, W1, S, W2, d, D = f(128, 784), f(512, 784), f(512, 512), f(512, 512), f(512, 512), f(128, 512)
shapes = [("layer 1 forward", x0, W1.T), ("layer 2 forward", S, W2.T), ("layer 2 dW", d.T, S),
          ("layer 2 dx", d, W2), ("layer 1 dW", D.T, x0)]
mm = (lambda a, b: a @ b) if way == "blas" else (lambda a, b: parallel.matmul(a, b, split=True))
for name, a, b in shapes:
    mm(a, b); t0 = time.perf_counter()
    for _ in range(repeat): mm(a, b)
    print(f"{way:>5}  {name:<16} {(time.perf_counter() - t0) / repeat * 1e3:6.2f} ms")
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=100)
    p.add_argument("--mlp", action="store_true", help="the MLP's GEMMs, BLAS threads or split")
    args = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.mlp:
        for way in ("blas", "split"):
            subprocess.run([sys.executable, "-c", MLP_CODE, way, str(args.repeat)], check=True)
        return
    for th in (1, 2):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(th))
        subprocess.run([sys.executable, "-c", CODE, str(th), str(args.repeat)], env=env,
                       check=True)


if __name__ == "__main__":
    main()
