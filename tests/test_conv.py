"""conv2d and pooling: finite differences (float64) on the plain and the fast kernels, fast vs
plain parity, shape errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dsatgo_np import conv as plain_conv
from dsatgo_np import pooling as plain_pooling
from dsatgo_np.core.conv import conv2d_backward, conv2d_forward
from dsatgo_np.fast import conv as fast_conv
from dsatgo_np.fast import parallel
from dsatgo_np.fast import pooling as fast_pooling
from dsatgo_np.core.pooling import (avgpool2d_backward, avgpool2d_forward, global_avgpool_backward,
                               global_avgpool_forward, maxpool2d_backward, maxpool2d_forward)
from dsatgo_np.gradcheck import GradientCheckError, check_backward

FAST = settings(max_examples=25, deadline=None)
# Central differences with h = 1e-6 carry a round-off of about |L| * 1e-16 / h ~ 1e-9 to 1e-8
# here (L = sum(out * dout)); an entry whose true gradient nearly cancels to zero needs this
# absolute slack. A planted 1 % error is orders of magnitude larger.
ATOL = 1e-7


@st.composite
def conv_cases(draw):
    """Small float64 conv2d problems: (x, weight, bias, stride, padding, rng)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    N, C, F = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    H, W = draw(st.integers(3, 7)), draw(st.integers(3, 7))
    KH, KW = draw(st.integers(1, 3)), draw(st.integers(1, 3))  # non-square too: the col2im path
    stride, padding = draw(st.integers(1, 2)), draw(st.integers(0, 1))
    x = rng.standard_normal((N, C, H, W))
    weight = rng.standard_normal((F, C, KH, KW))
    bias = rng.standard_normal(F)
    return x, weight, bias, stride, padding, rng


CONVS = {"plain": plain_conv, "fast": fast_conv}
POOLS = {"plain": plain_pooling, "fast": fast_pooling}
KERNEL_SETS = pytest.mark.parametrize("impl", ["plain", "fast"])


def conv_fn(stride, padding, module=plain_conv):
    return lambda x, weight, bias: module.conv2d_forward(x, weight, bias, stride, padding)[0]


# ---------------------------------------------------------------------------- finite differences

@KERNEL_SETS
@FAST
@given(conv_cases())
def test_conv2d_gradients_match_finite_differences(impl, case):
    x, weight, bias, stride, padding, rng = case
    module = CONVS[impl]
    out, cache = module.conv2d_forward(x, weight, bias, stride, padding)
    dout = rng.standard_normal(out.shape)
    dx, grads = module.conv2d_backward(dout, cache)
    check_backward(conv_fn(stride, padding, module), {"x": x, "weight": weight, "bias": bias},
                   dout, {"x": dx, **grads}, atol=ATOL)


@KERNEL_SETS
@FAST
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_avgpool_gradient_matches_finite_differences(impl, N, C, k, OH, OW, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, k * OH, k * OW))
    pool = POOLS[impl]
    out, cache = pool.avgpool2d_forward(x, k)
    dout = rng.standard_normal(out.shape)
    check_backward(lambda x: pool.avgpool2d_forward(x, k)[0], {"x": x}, dout,
                   {"x": pool.avgpool2d_backward(dout, cache)}, atol=ATOL)


@FAST
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), st.integers(1, 6),
       st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_avgpool_fast_matches_plain(N, C, k, OH, OW, seed):
    """Forward to round-off (k*k terms added in another order); backward bit for bit: both
    multiply each dout by 1/k^2 once (the fast one through a product with zeros)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, k * OH, k * OW), dtype=np.float32)
    out, cache = fast_pooling.avgpool2d_forward(x, k)
    out_plain, _ = plain_pooling.avgpool2d_forward(x, k)
    np.testing.assert_allclose(out, out_plain, rtol=0, atol=4 * np.finfo(np.float32).eps * k * k * 5)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    np.testing.assert_array_equal(fast_pooling.avgpool2d_backward(dout, cache),
                                  plain_pooling.avgpool2d_backward(dout, cache))
    np.testing.assert_array_equal(fast_pooling.avgpool2d_backward(dout[:, ::-1], cache),  # strided
                                  plain_pooling.avgpool2d_backward(dout[:, ::-1], cache))


@FAST
@given(st.integers(1, 3), st.integers(1, 3), st.integers(3, 7), st.integers(3, 7),
       st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_maxpool_gradient_matches_finite_differences(N, C, H, W, k, stride, seed):
    rng = np.random.default_rng(seed)
    # distinct values 0.1 apart: no ties, and h = 1e-6 never changes which entry is the max
    x = 0.1 * rng.permutation(N * C * H * W).reshape(N, C, H, W).astype(np.float64)
    out, cache = maxpool2d_forward(x, k, stride)
    dout = rng.standard_normal(out.shape)
    check_backward(lambda x: maxpool2d_forward(x, k, stride)[0], {"x": x}, dout,
                   {"x": maxpool2d_backward(dout, cache)}, atol=ATOL)


@FAST
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5),
       st.integers(0, 2**32 - 1))
def test_global_avgpool_gradient_matches_finite_differences(N, C, H, W, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    out, cache = global_avgpool_forward(x)
    dout = rng.standard_normal(out.shape)
    check_backward(lambda x: global_avgpool_forward(x)[0], {"x": x}, dout,
                   {"x": global_avgpool_backward(dout, cache)}, atol=ATOL)


def test_planted_one_percent_error_in_dweight_is_caught():
    rng = np.random.default_rng(0)
    x, weight, bias = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3)), None
    out, cache = conv2d_forward(x, weight, padding=1)
    dout = rng.standard_normal(out.shape)
    _, grads = conv2d_backward(dout, cache)
    inputs = {"x": x, "weight": weight, "bias": bias}
    check_backward(conv_fn(1, 1), inputs, dout, {"weight": grads["weight"]}, atol=ATOL)
    with pytest.raises(GradientCheckError, match="weight"):
        check_backward(conv_fn(1, 1), inputs, dout, {"weight": grads["weight"] * 1.01}, atol=ATOL)


# ---------------------------------------------------------------------------- fast vs plain

def parity_tol(x, weight, out_shape):
    """A bound on the round-off between two orders of summation: the longest sum has `terms`
    products, each at most |x| max(|W|, |dout|) (dout is standard normal: below 6 here)."""
    N, C, H, W = x.shape
    F, _, KH, KW = weight.shape
    terms = max(C * KH * KW, N * out_shape[2] * out_shape[3], F * KH * KW)
    scale = float(np.abs(x).max()) * max(float(np.abs(weight).max()), 6.0)
    return 2 * np.finfo(x.dtype).eps * terms * scale


def assert_parity(x, weight, bias, stride, padding, dout_seed):
    out, cache = fast_conv.conv2d_forward(x, weight, bias, stride, padding)
    rtol, atol = 0, parity_tol(x, weight, out.shape)
    out_ref, cache_ref = plain_conv.conv2d_forward(x, weight, bias, stride, padding)
    np.testing.assert_allclose(out, out_ref, rtol=rtol, atol=atol)
    dout = np.random.default_rng(dout_seed).standard_normal(out.shape).astype(x.dtype)
    dx, grads = fast_conv.conv2d_backward(dout, cache)
    dx_ref, grads_ref = plain_conv.conv2d_backward(dout, cache_ref)
    np.testing.assert_allclose(dx, dx_ref, rtol=rtol, atol=atol)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        np.testing.assert_allclose(grads[name], grads_ref[name], rtol=rtol, atol=atol)
    for a in (out, dx, *grads.values()):
        assert a.dtype == x.dtype


@FAST
@given(conv_cases())
def test_fast_conv_matches_plain_float64(case):
    x, weight, bias, stride, padding, _ = case
    assert_parity(x, weight, bias, stride, padding, 1)


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", [
    ((8, 24, 12, 12), (16, 24, 3, 3), 1, 1),  # stride 1, F <= C: dx by the flipped forward conv
    ((6, 3, 11, 9), (16, 3, 3, 3), 1, 1),     # F > C: dx by col2im over wide rows
    ((5, 8, 11, 10), (6, 8, 3, 2), 2, 1),     # stride 2, non-square kernel: im2col + col2im
    ((4, 8, 9, 9), (4, 8, 5, 5), 1, 2),
    ((3, 4, 7, 9), (6, 4, 3, 2), 1, 0),       # stride 1, non-square kernel, no padding: wide col2im
])
def test_fast_conv_matches_plain_float32(x_shape, w_shape, stride, padding):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    weight = rng.standard_normal(w_shape, dtype=np.float32)
    bias = rng.standard_normal(w_shape[0], dtype=np.float32)
    assert_parity(x, weight, bias, stride, padding, 2)



@pytest.mark.parametrize("x_shape, w_shape, stride, padding, with_bias", [
    ((5, 4, 6, 7), (3, 4, 3, 3), 1, 1, True),    # stride 1, F <= C: dx by the flipped forward
    ((5, 2, 6, 7), (5, 2, 3, 3), 1, 0, False),   # F > C: dx by col2im over wide rows
    ((5, 3, 7, 6), (4, 3, 3, 2), 2, 1, True),    # stride 2: im2col, its GEMMs and col2im
    ((5, 3, 7, 6), (4, 3, 3, 3), 2, 0, False),
])
def test_a_float32_convolution_makes_float32_arrays_only(arrays_made, x_shape, w_shape, stride,
                                                          padding, with_bias):
    """A float32 network computes in float32 all through (half the memory and traffic of
    float64): every array the fast convolution makes, its scratch buffers of columns, padded
    planes, GEMM results and gradients included, is float32. A float64 buffer would go
    unseen in the results, which are cast back to float32 and agree to round-off."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    weight = rng.standard_normal(w_shape, dtype=np.float32)
    bias = rng.standard_normal(w_shape[0], dtype=np.float32) if with_bias else None
    made = arrays_made(fast_conv)
    out, cache = fast_conv.conv2d_forward(x, weight, bias, stride, padding)
    dx, grads = fast_conv.conv2d_backward(rng.standard_normal(out.shape, dtype=np.float32), cache)
    assert len(made) >= 6                        # columns, products, results of both passes
    assert {dtype for dtype, _ in made} == {np.dtype(np.float32)}
    assert out.dtype == dx.dtype == grads["weight"].dtype == np.float32


@pytest.mark.parametrize("kernel", [1, 2, 3])
def test_float32_average_pooling_makes_float32_arrays_only(arrays_made, kernel):
    """As for the convolution: the fast average pooling's output, row sums, spreading matrix
    and dx are float32 for float32 data (the values could not show a float64 one: 1/k^2
    times one value, plus zeros, rounds the same)."""
    x = np.random.default_rng(5).standard_normal((3, 2, 6, 6), dtype=np.float32)
    made = arrays_made(fast_pooling)
    out, cache = fast_pooling.avgpool2d_forward(x, kernel)
    dx = fast_pooling.avgpool2d_backward(np.ones_like(out), cache)
    assert len(made) >= 3
    assert {dtype for dtype, _ in made} == {np.dtype(np.float32)}
    assert out.dtype == dx.dtype == np.float32

@pytest.mark.parametrize("samples_per_chunk", [1, 2, 3])
@pytest.mark.parametrize("C, F", [(2, 5), (4, 3)])  # stride-1 dx by wide col2im / flipped conv
def test_chunked_columns_match_plain(monkeypatch, samples_per_chunk, C, F):
    """Several im2col chunks, the last one partial (N = 5), give the same numbers."""
    rng = np.random.default_rng(2)
    x, weight = rng.standard_normal((5, C, 6, 7)), rng.standard_normal((F, C, 3, 3))
    bias = rng.standard_normal(F)
    for stride in (1, 2):
        OH, OW = (6 + 2 - 3) // stride + 1, (7 + 2 - 3) // stride + 1
        pixels = OH * (7 + 2) if stride == 1 else OH * OW   # stride 1: whole padded rows
        sample_bytes = C * 9 * pixels * 8                    # columns of one sample
        monkeypatch.setattr(fast_conv, "CHUNK_BYTES", samples_per_chunk * sample_bytes)
        assert fast_conv._chunk_size(5, sample_bytes) == samples_per_chunk
        saved = parallel.threads()
        for n in (1, 2):                                     # 2 threads: chunks per thread
            parallel.set_threads(n)
            try:
                assert_parity(x, weight, bias, stride, 1, 3)
            finally:
                parallel.set_threads(saved)


def test_need_dx_false_returns_none_and_same_weight_grads():
    rng = np.random.default_rng(3)
    x, weight, bias = (rng.standard_normal((3, 2, 6, 6)), rng.standard_normal((4, 2, 3, 3)),
                       rng.standard_normal(4))
    out, cache = conv2d_forward(x, weight, bias, padding=1)
    dout = rng.standard_normal(out.shape)
    dx, grads = conv2d_backward(dout, cache)
    dx_none, grads_no_dx = conv2d_backward(dout, cache, need_dx=False)
    assert dx is not None and dx_none is None
    assert grads.keys() == grads_no_dx.keys() == {"weight", "bias"}
    for name in grads:
        np.testing.assert_array_equal(grads[name], grads_no_dx[name])


def test_no_bias_means_no_bias_grad():
    rng = np.random.default_rng(4)
    x, weight = rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    out, cache = conv2d_forward(x, weight)
    _, grads = conv2d_backward(np.ones_like(out), cache)
    assert set(grads) == {"weight"}


def test_inputs_are_not_mutated():
    rng = np.random.default_rng(5)
    x, weight, bias = (rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)),
                       rng.standard_normal(4))
    saved = [a.copy() for a in (x, weight, bias)]
    out, cache = conv2d_forward(x, weight, bias, padding=1)
    dout = rng.standard_normal(out.shape)
    dout_saved = dout.copy()
    conv2d_backward(dout, cache)
    for a, b in zip((x, weight, bias, dout), (*saved, dout_saved)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- pooling values

def test_pool_forward_values_and_dtype():
    x = np.arange(2 * 3 * 4 * 6, dtype=np.float32).reshape(2, 3, 4, 6)
    windows = np.lib.stride_tricks.sliding_window_view(x, (2, 2), axis=(2, 3))[:, :, ::2, ::2]
    avg, _ = avgpool2d_forward(x)
    mx, _ = maxpool2d_forward(x)
    glob, _ = global_avgpool_forward(x)
    np.testing.assert_allclose(avg, windows.mean(axis=(4, 5)))
    np.testing.assert_array_equal(mx, windows.max(axis=(4, 5)))
    np.testing.assert_allclose(glob, x.mean(axis=(2, 3)))
    assert avg.dtype == mx.dtype == glob.dtype == np.float32


def test_maxpool_tie_sends_gradient_to_first_position_only():
    x = np.ones((1, 1, 4, 4))
    out, cache = maxpool2d_forward(x, 2)
    dx = maxpool2d_backward(np.ones_like(out), cache)
    expected = np.zeros((4, 4))
    expected[::2, ::2] = 1.0  # offset (0, 0) of each 2x2 window, like PyTorch's argmax
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_backward_dtype_follows_input():
    x = np.random.default_rng(6).standard_normal((2, 3, 4, 4)).astype(np.float32)
    for forward, backward in [(avgpool2d_forward, avgpool2d_backward),
                              (maxpool2d_forward, maxpool2d_backward),
                              (global_avgpool_forward, global_avgpool_backward)]:
        out, cache = forward(x)
        assert backward(np.ones_like(out), cache).dtype == np.float32


# ---------------------------------------------------------------------------- errors

def test_errors_name_shapes_and_fix():
    x = np.zeros((2, 3, 5, 5))
    w = np.zeros((4, 3, 3, 3))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\].*\(3, 5, 5\).*reshape\(T \* B"):
        conv2d_forward(x[0], w)
    with pytest.raises(ValueError, match=r"channel mismatch.*C=2.*C=3.*\[F, 2, KH, KW\] or fix "
                                         r"the previous layer's channels"):
        conv2d_forward(np.zeros((2, 2, 5, 5)), w)
    with pytest.raises(ValueError, match=r"kernel 9x9 is larger than the padded input 7x7"):
        conv2d_forward(x, np.zeros((4, 3, 9, 9)), padding=1)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        conv2d_forward(x, w, np.zeros(3))
    with pytest.raises(TypeError, match="float32.*float64|float64.*float32"):
        conv2d_forward(x.astype(np.float32), w)
    out, cache = conv2d_forward(x, w)
    with pytest.raises(ValueError, match=r"dout has shape \(2, 4, 2, 2\).*\(2, 4, 3, 3\)"):
        conv2d_backward(np.zeros((2, 4, 2, 2)), cache)
    with pytest.raises(ValueError, match=r"divisible by 2.*\(2, 3, 5, 5\).*pad or crop"):
        avgpool2d_forward(x)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        maxpool2d_forward(x[0])
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        global_avgpool_forward(x[0])


@pytest.mark.parametrize("stride", [1, 2])
def test_the_convolution_runs_its_gemms_on_one_blas_thread(monkeypatch, stride):
    """The convolution shares its samples between this module's threads, each running
    one-thread GEMMs: a threaded GEMM beside them would wait for its slower thread at every
    call (docs/PERFORMANCE.md, "The machine"). So every parallel run of the convolution,
    forward and backward, both dL/dx paths and both dW paths, runs inside the cap that holds
    OpenBLAS at one thread (parallel._blas_one_thread)."""
    import contextlib
    capped, seen = [], []
    real_cap, real_ranges = parallel._blas_one_thread, parallel.ranges

    @contextlib.contextmanager
    def watched_cap():
        capped.append(True)
        try:
            with real_cap():
                yield
        finally:
            capped.pop()

    def watched_ranges(work, n, grain=1, blas=True):
        def piece(lo, hi):
            seen.append(bool(capped))
            return work(lo, hi)
        return real_ranges(piece, n, grain, blas)
    monkeypatch.setattr(parallel, "_blas_one_thread", watched_cap)
    monkeypatch.setattr(parallel, "ranges", watched_ranges)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    saved = parallel.threads()
    parallel.set_threads(2)
    try:
        for w_shape in ((5, 3, 3, 3), (2, 3, 3, 3)):            # widening (F > C) and not
            w = rng.standard_normal(w_shape).astype(np.float32)
            out, cache = fast_conv.conv2d_forward(x, w, None, stride=stride, padding=1)
            fast_conv.conv2d_backward(np.ones_like(out), cache, need_dx=True)
    finally:
        parallel.set_threads(saved)
    assert len(seen) >= 2 * 3 * 2 and all(seen), seen
