"""The thread split of the fast kernels (fast/parallel.py): the runs cover the work exactly once,
and every fast kernel gives the same numbers with 1 thread as with several.

Element-wise outputs and per-row sums must agree bit for bit whatever the thread count; only
the convolution's weight gradient, whose per-thread partial sums are added at the end, may
differ by float32 round-off.
"""
import contextlib
import os
import platform
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsatgo_np import neuron
from dsatgo_np.fast import conv, layers, parallel, pooling
from dsatgo_np.fast import neuron as fast_neuron
from dsatgo_np.fast.neuron import fast_layer_stats, lif_backward, lif_forward
from dsatgo_np.core.neuron import SpikeConfig, make_rule


@pytest.fixture(autouse=True)
def threaded_even_when_small(monkeypatch):
    """The arrays here are small: let parallel.blocks share them between threads anyway."""
    monkeypatch.setattr(parallel, "SERIAL_BYTES", 0)


def test_blocks_of_little_work_stay_on_the_calling_thread(monkeypatch):
    monkeypatch.setattr(parallel, "SERIAL_BYTES", 1 << 21)
    caller = threading.get_ident()
    with threads(2):
        small = parallel.blocks(lambda lo, hi: threading.get_ident(), 1000, 1024, 4096)  # 1 MB
        big = parallel.blocks(lambda lo, hi: threading.get_ident(), 4000, 1024, 4096)    # 4 MB
    assert set(small) == {caller} and len(small) == 250
    assert len(set(big)) == 2 and len(big) == 1000


@contextlib.contextmanager
def threads(n):
    saved = parallel.threads()
    parallel.set_threads(n)
    try:
        yield
    finally:
        parallel.set_threads(saved)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 500), parts=st.integers(1, 8), grain=st.integers(1, 64))
def test_split_covers_the_range_once_on_grain_boundaries(n, parts, grain):
    runs = parallel.split(n, parts, grain)
    assert len(runs) <= parts
    covered = [i for lo, hi in runs for i in range(lo, hi)]
    assert covered == list(range(n))                      # contiguous, in order, no overlap
    for lo, hi in runs:
        assert lo % grain == 0 and hi > lo
    if n >= parts * grain:                                 # enough work: every thread gets some
        assert len(runs) == parts


def test_ranges_returns_results_in_order_and_raises_a_workers_error():
    with threads(3):
        assert parallel.ranges(lambda lo, hi: (lo, hi), 9) == [(0, 3), (3, 6), (6, 9)]

        def work(lo, hi):
            if lo > 0:
                raise RuntimeError(f"run {lo}:{hi} failed")
            return lo

        with pytest.raises(RuntimeError, match="run 3:6 failed"):
            parallel.ranges(work, 9)


def test_a_nested_call_runs_serially_inside_its_thread():
    """ranges() inside a piece of ranges() must not wait for the busy pool (a deadlock)."""
    result = []
    with threads(2):
        caller = threading.Thread(target=lambda: result.append(parallel.ranges(
            lambda lo, hi: parallel.ranges(lambda a, b: (a, b), 4), 2)), daemon=True)
        caller.start()
        caller.join(timeout=30)
    assert not caller.is_alive(), "nested parallel.ranges deadlocked"
    assert result == [[[(0, 4)], [(0, 4)]]]


def test_bad_thread_counts_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="whole number"):
        parallel.set_threads(0)
    monkeypatch.setattr(parallel, "_threads", None)
    monkeypatch.setenv("DSATGO_THREADS", "two")
    with pytest.raises(ValueError, match=r"^DSATGO_THREADS='two': set it to a whole number >= 1 "
                                         r"\(1 runs everything on one core\)$"):
        parallel.threads()
    monkeypatch.setenv("DSATGO_THREADS", "3")
    assert parallel.threads() == 3


def both(fn):
    """fn() with 1 thread and with 3 threads."""
    with threads(1):
        one = fn()
    with threads(3):
        three = fn()
    return one, three


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), B=st.integers(1, 9), N=st.integers(2, 300),
       method=st.sampled_from(neuron.METHODS), block=st.sampled_from([5, 64]))
def test_lif_is_the_same_with_any_thread_count(seed, B, N, method, block):
    saved, fast_neuron.BLOCK = fast_neuron.BLOCK, block    # many blocks for the threads to share
    try:
        check_lif_threads(seed, B, N, method)
    finally:
        fast_neuron.BLOCK = saved


def check_lif_threads(seed, B, N, method):
    rng = np.random.default_rng(seed)
    X = rng.normal(0.5, 1.0, (3, B, N)).astype(np.float32)
    dS = rng.normal(size=X.shape).astype(np.float32)
    lam = np.asarray(0.3, dtype=np.float32)

    def run():
        rule = make_rule(SpikeConfig(method=method), lam, True, g=np.asarray(1.2, np.float32))
        S, cache = lif_forward(X, lam, rule)
        dX, dlam = lif_backward(dS, cache)
        return S, cache.H, cache.theta, dX, dlam

    for a, b in zip(*both(run)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(64, 3, 40, 40), (7, 1000), (5, 2049)])
def test_layer_stats_and_batchnorm_are_the_same_with_any_thread_count(shape, monkeypatch):
    monkeypatch.setattr(layers, "BLOCK_BYTES", 4096)       # many sample blocks
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 2.0, shape).astype(np.float32)
    dout = rng.normal(size=shape).astype(np.float32)
    gamma = rng.normal(1.0, 0.1, shape[1]).astype(np.float32)
    beta = rng.normal(0.0, 0.1, shape[1]).astype(np.float32)

    def run():
        mu, sigma = fast_layer_stats(x)
        out, cache, mean, var = layers.batchnorm_forward(x, gamma, beta)
        dx, grads = layers.batchnorm_backward(dout, cache)
        return mu, sigma, out, mean, var, dx, grads["weight"], grads["bias"]

    for a, b in zip(*both(run)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("C,F,stride,padding", [(3, 8, 1, 1), (8, 4, 2, 1), (4, 16, 1, 0), (8, 8, 1, 1)])
def test_conv_and_pooling_are_the_same_with_any_thread_count(C, F, stride, padding, monkeypatch):
    monkeypatch.setattr(conv, "CHUNK_BYTES", 2048)         # several chunks per thread
    rng = np.random.default_rng(1)
    x = rng.normal(size=(11, C, 12, 12)).astype(np.float32)
    w = rng.normal(size=(F, C, 3, 3)).astype(np.float32)
    b = rng.normal(size=F).astype(np.float32)

    def run():
        out, cache = conv.conv2d_forward(x, w, b, stride, padding)
        pooled, pcache = pooling.avgpool2d_forward(out, 2)
        dpool = pooling.avgpool2d_backward(np.ones_like(pooled), pcache)
        dx, grads = conv.conv2d_backward(dpool, cache)
        return out, pooled, dpool, dx, grads["bias"], grads["weight"]

    one, three = both(run)
    for a, b in zip(one[:-1], three[:-1]):
        np.testing.assert_array_equal(a, b)
    # dW: the threads' partial sums added at the end; each entry sums N*OH*OW products of
    # |x| (below 6) and |dpool| (at most 1/4)
    terms = x.shape[0] * one[0].shape[2] * one[0].shape[3]
    tol = 2 * np.finfo(np.float32).eps * terms * 6 * 0.25
    np.testing.assert_allclose(three[-1], one[-1], rtol=0, atol=tol)


def test_the_allocator_tuning_is_opt_in():
    """Importing dsatgo_np leaves malloc alone; DSATGO_MALLOC=keep or the function applies it,
    DSATGO_MALLOC=system refuses it (each case in a fresh process)."""
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    after_import = "import dsatgo_np.fast.allocator as a; import dsatgo_np; print(a._applied)"
    called = "import dsatgo_np.fast.allocator as a; print(a.keep_freed_memory())"
    for code, setting, expected in ((after_import, "", None), (after_import, "keep", glibc),
                                    (called, "", glibc), (called, "system", False)):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "DSATGO_MALLOC": setting}, check=True)
        assert out.stdout.strip() == str(expected), (code, setting)


@pytest.mark.parametrize("shape", [(3, 4, 5),          # too small for the BLAS to thread
                                   (300, 40, 50),      # medium: one BLAS thread
                                   (9, 300, 200),      # medium, wide: split by columns
                                   (400, 300, 300)])   # large: the BLAS's own threads
@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_gives_the_product_whichever_way_it_runs(monkeypatch, shape, split, dtype):
    """The product, in the operands' dtype (float32 stays float32 on every path)."""
    monkeypatch.setattr(parallel, "BLAS_OWN_MACS", 20_000_000)
    M, K, N = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((N, K)).astype(dtype).T                      # a transposed view
    # the BLAS may add the K products in another order on each path: |error| <= K eps |a| |b|
    tol = K * np.finfo(dtype).eps * np.abs(a).max() * np.abs(b).max()
    with threads(2):
        got = parallel.matmul(a, b, split=split)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, a @ b, rtol=0, atol=tol)
        out = np.full((M, N), np.nan, dtype=dtype)
        assert parallel.matmul(a, b, out=out, split=split) is out
        np.testing.assert_allclose(out, a @ b, rtol=0, atol=tol)


@pytest.mark.parametrize("macs_needed, split, expected", [
    (720_000, False, [("blas threads", (600, 30))]),      # large: one call, the BLAS's threads
    (720_001, False, [("one thread", (600, 30))]),        # medium: one call, one BLAS thread
    (720_000, True, [("ours", (300, 30)), ("ours", (300, 30))]),   # split: rows shared
])
@pytest.mark.parametrize("threaded_from", [1000, 720_000])   # at least BLAS_THREADED_MACS: ours
def test_matmul_hands_only_large_unsplit_products_to_the_blas_threads(monkeypatch, macs_needed,
                                                                     split, expected,
                                                                     threaded_from):
    """A product of at least BLAS_OWN_MACS multiply-adds (here 600 * 30 * 40 = 720,000) runs as
    one call on OpenBLAS's own threads; a smaller one on one BLAS thread; split=True shares
    its rows between this module's threads instead."""
    monkeypatch.setattr(parallel, "BLAS_THREADED_MACS", min(threaded_from, macs_needed))
    monkeypatch.setattr(parallel, "BLAS_OWN_MACS", macs_needed)
    calls, one_thread = [], []
    real = np.matmul

    @contextlib.contextmanager
    def blas_one_thread():
        one_thread.append(True)
        yield
        one_thread.pop()

    def spy(a, b, out=None):
        where = "ours" if threading.current_thread() is not threading.main_thread() or split \
            else ("one thread" if one_thread else "blas threads")
        calls.append((where, a.shape))
        return real(a, b, out=out)
    monkeypatch.setattr(parallel, "_blas_one_thread", blas_one_thread)
    monkeypatch.setattr(np, "matmul", spy)
    a, b = np.ones((600, 30)), np.ones((30, 40))
    with threads(2):
        np.testing.assert_array_equal(parallel.matmul(a, b, split=split), np.full((600, 40), 30.0))
    assert calls == expected


def test_the_blas_cap_holds_the_blas_at_one_thread_and_lets_go():
    """parallel._blas_one_thread, which the tests above replace by a spy, itself: inside it
    NumPy's BLAS runs one thread, after it its count is what it was. (Only NumPy's: another
    library loaded later, such as SciPy's own OpenBLAS, runs nothing of the engine's.)"""
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return {p["num_threads"] for p in threadpoolctl.threadpool_info()
                if p["user_api"] == "blas" and os.path.basename(
                    os.path.dirname(p["filepath"])).startswith("numpy")}
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        if not before or before == {1}:
            pytest.skip(f"no BLAS that runs 2 threads here (threadpoolctl: {before})")
        with parallel._blas_one_thread():
            assert blas_threads() == {1}
        assert blas_threads() == before


def test_matmul_split_shares_rows_between_threads(monkeypatch):
    seen = []
    real = np.matmul

    def spy(a, b, out=None):
        seen.append((threading.get_ident(), a.shape, b.shape))
        return real(a, b, out=out)
    monkeypatch.setattr(np, "matmul", spy)
    a, b = np.ones((600, 30)), np.ones((30, 40))
    with threads(2):
        parallel.matmul(a, b, split=True)
    assert len({t for t, _, _ in seen}) == 2                              # both threads worked
    assert sorted(s[1][0] for s in seen) == [300, 300] and all(s[2] == (30, 40) for s in seen)
