"""Run independent slices of NumPy work on several CPU cores at once.

NumPy releases the GIL inside its loops, so Python threads on separate slices of the same
arrays run side by side. ``ranges(work, n)`` splits range(n) into one contiguous run per thread
and calls ``work(lo, hi)`` on each, in parallel; each thread writes only its own slices, so
element-wise results are the serial ones bit for bit. Threads: ``DSATGO_THREADS`` if set, else
the CPUs this process may run on; ``set_threads(n)`` changes it (1: no pool at all).
``ranges(..., blas=False)`` caps the BLAS at one thread meanwhile (threadpoolctl), so that two
levels of threads do not compete for the same cores.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np

# Below this many bytes of input, blocks() stays on the calling thread: waking a pool thread
# and waiting for it costs about as much as the second core saves on a 1 MiB array (the MLP's
# BatchNorm on [512, 512] float32). `.venv-bench/bin/python bench/bench_train.py --nets mlp
# --modes train --steps 10 --rounds 4 --warmup 3 --extra-tree head=<checkout of 7c2e0da>`,
# twice: the MLP's ds-atgo step 15.6 / 16.0 ms without, 14.9 / 15.4 ms with.
SERIAL_BYTES = 1 << 21

_threads = None     # set lazily from the environment
_pool = None        # ThreadPoolExecutor with _threads - 1 workers (the caller is the last one)
_blas = None        # threadpoolctl.ThreadpoolController, or False when it is not installed
_inside = threading.local()   # .run is True while this thread runs a piece of ranges()


def _default_threads() -> int:
    env = os.environ.get("DSATGO_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"DSATGO_THREADS={env!r}: set it to a whole number >= 1 "
                             "(1 runs everything on one core)")
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                      # not on Linux
        return max(1, os.cpu_count() or 1)


def threads() -> int:
    """How many threads the fast paths use."""
    global _threads
    if _threads is None:
        _threads = _default_threads()
    return _threads


def set_threads(n: int) -> None:
    """Use n threads from now on (1: serial). Benchmarks and tests call this."""
    global _threads, _pool
    if int(n) != n or n < 1:
        raise ValueError(f"set_threads needs a whole number >= 1, got {n!r}")
    if _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None
    _threads = int(n)


def split(n: int, parts: int, grain: int = 1):
    """Cut range(n) into at most `parts` contiguous (lo, hi) runs of at least `grain` items,
    boundaries on multiples of `grain` (so that a block structure inside a run is kept)."""
    units = -(-n // grain) if n > 0 else 0                  # ceil(n / grain)
    parts = max(1, min(parts, units))
    bounds = [min(n, (units * i // parts) * grain) for i in range(parts + 1)]
    return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


def _blas_one_thread():
    """Context that caps the BLAS at one thread (a no-op without threadpoolctl)."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
            _blas = ThreadpoolController()
        except ImportError:
            _blas = False
    return _blas.limit(limits=1, user_api="blas") if _blas else nullcontext()


def ranges(work, n: int, grain: int = 1, blas: bool = True):
    """[work(lo, hi) for each run of split(n, threads(), grain)], the runs in parallel.

    The calling thread does the first run itself. An exception in any run is raised here,
    after every run has finished (no thread is left writing into the caller's arrays). A call
    made from inside a run runs serially: the outer call already holds the threads.
    With blas=False the BLAS runs on one thread meanwhile.
    """
    runs = split(n, threads(), grain)
    if len(runs) <= 1 or getattr(_inside, "run", False):   # nested: the outer call has the threads
        return [work(lo, hi) for lo, hi in split(n, 1, grain)]
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=threads() - 1, thread_name_prefix="dsatgo")
    with nullcontext() if blas else _blas_one_thread():
        futures = [_pool.submit(_run_piece, work, lo, hi) for lo, hi in runs[1:]]
        try:
            first = _run_piece(work, *runs[0])
        finally:
            others = []
            errors = []
            for f in futures:
                try:
                    others.append(f.result())
                except BaseException as e:          # noqa: BLE001 - re-raised below
                    errors.append(e)
        if errors:
            raise errors[0]
    return [first] + others


# At or above this many multiply-adds, OpenBLAS runs a GEMM on its own threads (its
# SMP_THRESHOLD_MIN * GEMM_MULTITHREAD_THRESHOLD); below it, on the calling thread.
BLAS_THREADED_MACS = 65536 * 4
# At or above this many, matmul() leaves the product to the BLAS's threads (see there).
BLAS_OWN_MACS = 1 << 25


def matmul(a, b, out=None, split: bool = False):
    """a @ b for 2-D arrays, without leaving the BLAS's threads spinning where it can.

    OpenBLAS's threads spin for a while after each threaded GEMM, on the cores that this
    module's threads need next: in the small CNN's training step, the neuron's, BatchNorm's
    and the convolution's backward passes ran 1.4-1.7x slower after them (docs/PERFORMANCE.md,
    "The BLAS's idle threads"). So only a product of at least BLAS_OWN_MACS multiply-adds
    (an MLP's layers, which the BLAS's threads run faster than two one-thread GEMMs, and whose
    serial element-wise passes leave the second core to them) runs on the BLAS's threads; a
    smaller one (a readout layer: well under a millisecond) runs on one thread.
    split=True shares the output's rows (or columns, if fewer) between this module's
    threads instead, each running a one-thread GEMM: for a product that streams memory more
    than it computes (average pooling's backward).
    """
    M, K = a.shape
    N = b.shape[1]
    macs = M * N * K
    if macs < BLAS_THREADED_MACS or (macs >= BLAS_OWN_MACS and not split):
        return np.matmul(a, b, out=out)
    if not split or threads() == 1:
        with _blas_one_thread():
            return np.matmul(a, b, out=out)
    if out is None:
        out = np.empty((M, N), dtype=np.result_type(a, b))
    if M >= N:
        ranges(lambda lo, hi: np.matmul(a[lo:hi], b, out=out[lo:hi]), M, blas=False)
    else:
        ranges(lambda lo, hi: np.matmul(a, b[:, lo:hi], out=out[:, lo:hi]), N, blas=False)
    return out


def _run_piece(work, lo, hi):
    _inside.run = True
    try:
        return work(lo, hi)
    finally:
        _inside.run = False


def blocks(work, n: int, item_bytes: int, block_bytes: int = 1 << 19):
    """work(lo, hi) on consecutive blocks of range(n), each about block_bytes of items of
    item_bytes (at least one item), so that a block's operands stay in cache across the
    several operations of `work`; the blocks are shared between threads. Returns the results
    in order."""
    size = max(1, block_bytes // max(1, item_bytes))

    def run(lo, hi):
        return [work(i, min(hi, i + size)) for i in range(lo, hi, size)]

    if n * item_bytes < SERIAL_BYTES:          # too little work to pay for a thread hand-off
        return run(0, n)
    return [r for part in ranges(run, n, grain=size) for r in part]
