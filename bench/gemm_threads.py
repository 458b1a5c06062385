"""How one float32 GEMM (a CIFAR conv layer's per-sample product) fares with 1 and 2 threads.

    .venv-bench/bin/python bench/gemm_threads.py [--repeat 100]

Runs NumPy (OpenBLAS) and, when importable, torch, each with 1 then 2 threads, in fresh
processes (OpenBLAS reads OPENBLAS_NUM_THREADS at start-up), and prints ms per call. On a
machine whose second core is busy with another process, the 2-thread figures show the wait of
a threaded BLAS call for its descheduled helper thread.
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


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=100)
    args = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for th in (1, 2):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(th))
        subprocess.run([sys.executable, "-c", CODE, str(th), str(args.repeat)], env=env,
                       check=True)


if __name__ == "__main__":
    main()
