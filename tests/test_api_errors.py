"""Named errors, with the fix in the message, where the Python API used to fail deep inside
NumPy or, worse, to carry on: losses, encodings and optimiser options; and every error the
engine raises, read in full (the problem and the fix)."""
import math
import re

import numpy as np
import pytest

import dsatgo_np as dn
from dsatgo_np.containers import Dropout, Flatten
from dsatgo_np.core.neuron import Rule, SpikeConfig
from dsatgo_np.model import BatchNorm, Linear
from dsatgo_np.spiking import Spiking

OUT = np.random.default_rng(0).standard_normal((4, 3, 10)).astype(np.float32)   # [T, B, K]


@pytest.mark.parametrize("loss", [dn.losses.cross_entropy, dn.losses.mse, dn.losses.accuracy])
@pytest.mark.parametrize("labels, error, message", [
    (np.array([0, -1, 2]), ValueError, r"class indices in \[0, 10\), got values from -1 to 2"),
    (np.array([0, 10, 2]), ValueError, r"class indices in \[0, 10\), got values from 0 to 10"),
    (np.array([0.0, 1.0, 2.0]), TypeError, "integer class indices, got dtype float64"),
    ([0, 1, 2], TypeError, r"got a list: pass np.asarray"),
    (np.array([0, 1]), ValueError, "do not match a batch of 3"),
])
def test_bad_labels_are_named(loss, labels, error, message):
    with pytest.raises(error, match=message):
        loss(OUT, labels)


def test_label_minus_one_is_not_the_last_class():
    """On the old code, label -1 indexed class K-1 and gave a finite loss."""
    with pytest.raises(ValueError, match="got values from -1"):
        dn.losses.cross_entropy(OUT, np.array([9, -1, 0]))
    loss, _ = dn.losses.cross_entropy(OUT, np.array([9, 9, 0]))
    assert math.isfinite(float(loss))                 # the valid neighbour still works


@pytest.mark.parametrize("loss", [dn.losses.cross_entropy, dn.losses.mse])
def test_a_batch_of_zero_samples(loss):
    with pytest.raises(ValueError, match="at least one step, sample and class"):
        loss(np.zeros((4, 0, 10), np.float32), np.zeros(0, np.int64))


@pytest.mark.parametrize("smoothing", [float("nan"), -0.1, 1.0])
def test_label_smoothing_out_of_range(smoothing):
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        dn.losses.cross_entropy(OUT, np.array([0, 1, 2]), smoothing)


@pytest.mark.parametrize("encode", [dn.encode.direct,
                                    lambda x, T: dn.encode.poisson(x, T, np.random.default_rng(0))])
def test_encodings_refuse_empty_batches_non_finite_values_and_bad_T(encode):
    with pytest.raises(ValueError, match="at least one sample"):
        encode(np.zeros((0, 1, 8, 8), np.float32), 4)
    x = np.full((2, 1, 8, 8), 0.5, np.float32)
    for bad in (np.nan, np.inf):
        y = x.copy()
        y[1, 0, 3, 3] = bad
        with pytest.raises(ValueError, match="non-finite values"):
            encode(y, 4)
    for T in (0, -1, 2.5):
        with pytest.raises(ValueError, match="T must be a positive integer"):
            encode(x, T)
    with pytest.raises(TypeError, match="must be an array"):
        encode([[0.5]], 4)
    assert encode(x, 3).shape == (3, 2, 1, 8, 8)


def test_poisson_takes_probabilities_0_and_1_as_never_and_always():
    """A pixel at 0 never fires, a pixel at 1 (white, after x / 255) fires at every step."""
    x = np.array([[0.0, 1.0, 1.0, 0.0]], np.float32)
    spikes = dn.encode.poisson(x, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(spikes, np.broadcast_to(x, (5, 1, 4)))


def test_poisson_needs_probabilities():
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        dn.encode.poisson(np.full((2, 3), 1.5, np.float32), 4, np.random.default_rng(0))


def params():
    return dn.models.mlp([4, 3, 2], T=2).parameters()


@pytest.mark.parametrize("make, message", [
    (lambda p: dn.optim.Adam(p, lr=-1e-3), "Adam: lr must be positive and finite"),
    (lambda p: dn.optim.Adam(p, lr=float("nan")), "Adam: lr must be"),
    (lambda p: dn.optim.Adam(p, betas=(0.9, 1.0)), r"Adam: beta2 must be in \[0, 1\)"),
    (lambda p: dn.optim.Adam(p, betas=(-0.1, 0.9)), r"Adam: beta1 must be in \[0, 1\)"),
    (lambda p: dn.optim.Adam(p, eps=0.0), "Adam: eps must be a positive"),
    (lambda p: dn.optim.Adam(p, weight_decay=float("inf")), "Adam: weight_decay must be"),
    (lambda p: dn.optim.SGD(p, lr=float("nan")), "SGD: lr must be positive and finite"),
    (lambda p: dn.optim.SGD(p, lr=0.0), "SGD: lr must be"),
    (lambda p: dn.optim.SGD(p, lr=0.1, momentum=-1), r"SGD: momentum must be in \[0, 1\)"),
    (lambda p: dn.optim.SGD(p, lr=0.1, momentum=float("nan")), "SGD: momentum must be"),
    (lambda p: dn.optim.SGD(p, lr=0.1, weight_decay=-1e-4), "SGD: weight_decay must be"),
    (lambda p: dn.optim.SGD(p, lr=0.1, nesterov=True), "^SGD: nesterov=True needs a momentum > 0$"),
    (lambda p: dn.optim.SGD([], lr=0.1), "no parameters to optimise"),
])
def test_optimiser_options_are_checked(make, message):
    with pytest.raises(ValueError, match=message):
        make(params())


def test_optimiser_option_of_the_wrong_type():
    with pytest.raises(TypeError, match="lr must be a number"):
        dn.optim.SGD(params(), lr="fast")


def test_valid_edges_are_accepted():
    dn.optim.SGD(params(), lr=1e-8, momentum=0.0, weight_decay=0.0)
    dn.optim.Adam(params(), lr=1e-3, betas=(0.0, 0.0), eps=1e-12)


@pytest.mark.usefixtures("each_kernel_set")
@pytest.mark.parametrize("x_shape, w_shape, message", [
    ((2, 3, 5, 5), (4, 3, 3), r"weight of shape \[F, C, KH, KW\], got shape \(4, 3, 3\)"),
    ((3, 5, 5), (4, 3, 3, 3), r"x of shape \[N, C, H, W\], got shape \(3, 5, 5\)"),
])
def test_conv2d_names_a_wrong_number_of_dimensions(x_shape, w_shape, message):
    """A 3-D weight or input is refused with its shape and the layout expected."""
    x, w = np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32)
    with pytest.raises(ValueError, match=message):
        dn.kernels.of(x).conv2d_forward(x, w, None, stride=1, padding=1)


# ---------------------------------------------------------------------------- every message in full

F32 = np.float32
X4, W4 = np.zeros((2, 3, 5, 5), F32), np.zeros((4, 3, 3, 3), F32)      # conv input and weight
NET = dn.models.mlp([4, 3, 2], T=2)
STATE = NET.state_dict()                                                 # '1.weight' is (3, 4)


def _conv_cache():
    return dn.core.conv.conv2d_forward(X4, W4)[1]


def _with(key, value):
    return dict(STATE, **{key: value})


ERRORS = [
    # the array modules, the kernel table, the thread pool
    (lambda: dn.backend.get_backend("jax"), ValueError,
     "unknown backend 'jax': choose one of numpy, cupy, strict"),
    (lambda: dn.kernels.set_kernels("quick"), ValueError,
     "unknown kernel set 'quick': choose one of auto, plain, fast"),
    (lambda: dn.fast.parallel.set_threads(0), ValueError,
     "set_threads needs a whole number >= 1, got 0"),
    # convolution and pooling
    (lambda: dn.core.conv.conv2d_forward(X4[0], W4), ValueError,
     "conv2d expects x of shape [N, C, H, W], got shape (3, 5, 5): merge time and batch first "
     "with x.reshape(T * B, C, H, W)"),
    (lambda: dn.core.conv.conv2d_forward(X4, W4[0]), ValueError,
     "conv2d expects weight of shape [F, C, KH, KW], got shape (3, 3, 3)"),
    (lambda: dn.core.conv.conv2d_forward(np.zeros((2, 2, 5, 5), F32), W4), ValueError,
     "conv2d channel mismatch: x (2, 2, 5, 5) has C=2 but weight (4, 3, 3, 3) expects C=3: "
     "build the weight as [F, 2, KH, KW] or fix the previous layer's channels"),
    (lambda: dn.core.conv.conv2d_forward(X4, W4, np.zeros(3, F32)), ValueError,
     "conv2d bias must have shape (4,) to match weight (4, 3, 3, 3), got (3,)"),
    (lambda: dn.core.conv.conv2d_forward(X4, W4.astype(np.float64)), TypeError,
     "conv2d dtypes differ: x float32, weight float64: build parameters in the input's dtype "
     "(float32 to train, float64 to check gradients), an upcast would silently slow "
     "everything down"),
    (lambda: dn.core.conv.conv2d_forward(X4, W4, np.zeros(4)), TypeError,
     "conv2d dtypes differ: x float32, weight float32, bias float64: build parameters in the "
     "input's dtype (float32 to train, float64 to check gradients), an upcast would silently "
     "slow everything down"),
    (lambda: dn.core.conv.conv2d_forward(X4, W4, stride=0), ValueError,
     "conv2d needs an integer stride >= 1 and padding >= 0, got stride=0, padding=0"),
    (lambda: dn.core.conv.conv2d_forward(X4, np.zeros((4, 3, 9, 9), F32), padding=1), ValueError,
     "conv2d kernel 9x9 is larger than the padded input 7x7 (x (2, 3, 5, 5), padding=1): "
     "increase padding or use a smaller kernel"),
    (lambda: dn.core.conv.conv2d_backward(np.zeros((2, 4, 2, 2), F32), _conv_cache()), ValueError,
     "dout has shape (2, 4, 2, 2), but the forward output had shape (2, 4, 3, 3)"),
    (lambda: dn.core.conv.conv2d_backward(np.zeros((2, 4, 3, 3)), _conv_cache()), TypeError,
     "dout is float64 but the forward ran in float32: keep one dtype through forward and "
     "backward"),
    (lambda: dn.core.pooling.avgpool2d_forward(X4[0]), ValueError,
     "avgpool2d expects x of shape [N, C, H, W], got shape (3, 5, 5): merge time and batch "
     "first with x.reshape(T * B, C, H, W)"),
    (lambda: dn.core.pooling.avgpool2d_forward(X4, 0), ValueError,
     "avgpool2d needs a whole kernel >= 1, got 0"),
    (lambda: dn.core.pooling.avgpool2d_forward(X4, 2), ValueError,
     "avgpool2d with kernel 2 needs H and W divisible by 2, got x (2, 3, 5, 5): pad or crop the "
     "input, or pick a kernel that divides them (e.g. padding=1 on the previous 3x3 conv keeps "
     "H and W)"),
    (lambda: dn.core.layers.linear_forward(np.zeros((2, 5), F32), np.zeros((3, 4), F32), None),
     ValueError, "linear: input of shape (2, 5) does not fit a weight of shape (3, 4); expected "
     "[N, 4] (flatten first?)"),
    # losses
    (lambda: dn.losses.cross_entropy(OUT, [0, 1, 2]), TypeError,
     "labels must be an integer array [B], got a list: pass np.asarray(y, dtype=np.int64)"),
    (lambda: dn.losses.cross_entropy(OUT, np.zeros(3)), TypeError,
     "labels must be integer class indices, got dtype float64: pass y.astype(np.int64) (after "
     "checking they are whole numbers)"),
    (lambda: dn.losses.cross_entropy(OUT, np.zeros(2, np.int64)), ValueError,
     "labels of shape (2,) do not match a batch of 3: expected integer labels of shape [B]"),
    (lambda: dn.losses.cross_entropy(OUT, np.array([0, 10, 2])), ValueError,
     "labels must be class indices in [0, 10), got values from 0 to 10: the readout has 10 "
     "outputs; fix the labels or the number of classes"),
    (lambda: dn.losses.cross_entropy(np.zeros((4, 0, 10), F32), np.zeros(0, np.int64)),
     ValueError, "losses need at least one step, sample and class: the readout has shape "
     "(4, 0, 10)"),
    # encodings
    (lambda: dn.encode.direct(np.zeros((2, 3), F32), 0), ValueError,
     "encode.direct: T must be a positive integer number of time steps, got 0"),
    (lambda: dn.encode.direct([[0.5]], 4), TypeError,
     "encode.direct: x must be an array [B, ...] (NumPy or CuPy), got list: pass "
     "np.asarray(x, dtype=np.float32)"),
    (lambda: dn.encode.poisson(np.zeros((0, 3), F32), 4, np.random.default_rng(0)), ValueError,
     "encode.poisson: x must be a batch [B, ...] of at least one sample, got shape (0, 3)"),
    (lambda: dn.encode.direct(np.full((2, 3), np.nan, F32), 4), ValueError,
     "encode.direct: x holds non-finite values (NaN or inf): clean the input (e.g. "
     "np.nan_to_num) or fix where it came from"),
    (lambda: dn.encode.poisson(np.full((2, 3), 1.5, F32), 4, np.random.default_rng(0)),
     ValueError, "encode.poisson: x must hold firing probabilities in [0, 1]: scale the input "
     "(e.g. x / 255) before rate coding"),
    # the neuron's options and rule
    (lambda: SpikeConfig(method="atgo"), ValueError,
     "unknown method 'atgo': choose one of vanilla, at, tgo, ds-atgo, mpd-agl"),
    (lambda: SpikeConfig(f_c=0), ValueError, "f_c must be a finite positive number, got 0"),
    (lambda: SpikeConfig(momentum=2), ValueError, "momentum must lie in [0, 1], got 2"),
    (lambda: SpikeConfig(method="mpd-agl", k0=2.0), ValueError,
     "k0=2.0 does nothing for method 'mpd-agl': only a method with a surrogate width of its own "
     "(all but mpd-agl, whose width follows g) uses it; leave it at 1.0 or pick such a method"),
    (lambda: SpikeConfig(method="at", threshold="estimated", momentum=0.5), ValueError,
     "momentum=0.5 does nothing for method 'at' with threshold='estimated': only the measured "
     "threshold of an adaptive method (at, ds-atgo) uses it; leave it at 0.1 or pick such a "
     "method"),
    (lambda: Rule(SpikeConfig(method="mpd-agl"), 0.5, True), ValueError,
     "method 'mpd-agl' needs g, the mean scale of the preceding BatchNorm"),
    (lambda: Rule(SpikeConfig(), 0.5, False), ValueError,
     "eval mode with running thresholds needs the running array"),
    # the layers
    (lambda: Flatten().backward(np.zeros(3, F32)), RuntimeError,
     "Flatten.backward needs a forward first: call net.forward(x), then net.backward(dout)"),
    (lambda: Linear(3, 2).backward(np.ones((2, 2, 2), F32)), RuntimeError,
     "Linear.backward needs a forward in training mode first (eval mode keeps no cache): call "
     "net.train(), then net.forward(x), then net.backward(dout)"),
    (lambda: Dropout(1.0), ValueError, "dropout probability must lie in [0, 1), got 1.0"),
    (lambda: Linear(0, 3), ValueError, "Linear: n_in must be a whole number >= 1, got 0"),
    (lambda: Linear(3, 2).forward(np.ones((2, 3), F32)), ValueError,
     "Linear: expected input of 3 dimensions ([T, B, ...]), got shape (2, 3); encode static "
     "data first with dn.encode.direct(x, T)"),
    (lambda: Linear(3, 2).forward(np.ones((2, 2, 3))), TypeError,
     "Linear: input dtype float64 differs from the model's float32; cast the input with "
     "x.astype('float32') or build the model with dtype='float64'"),
    (lambda: BatchNorm(3, momentum=2.0), ValueError,
     "BatchNorm: momentum=2.0 is out of range (momentum in [0, 1], eps > 0, a finite scale)"),
    (lambda: BatchNorm(3).forward(np.ones((2, 4, 5), F32)), ValueError,
     "BatchNorm over 3 channels got input of shape (2, 4, 5); expected [T, B, 3, ...]"),
    (lambda: Spiking(2, neuron="izhikevich"), ValueError,
     "unknown neuron 'izhikevich': choose 'lif' or 'plif'"),
    (lambda: Spiking(2, neuron="lif", lam=2.0), ValueError,
     "decay lam=2.0 is out of range for a LIF neuron: LIF needs 0 <= lam <= 1 (lam > 1 makes V "
     "grow)"),
    (lambda: Spiking(2, neuron="plif", lam=1.0), ValueError,
     "decay lam=1.0 is out of range for a PLIF neuron: PLIF needs 0 < lam < 1"),
    (lambda: Spiking(2).forward(np.ones((2, 3), F32)), ValueError,
     "Spiking: expected [T, B, ...], got shape (2, 3)"),
    (lambda: Spiking(2).forward(np.ones((3, 2, 4), F32)), ValueError,
     "this spiking layer keeps running thresholds for T=2 steps, but the input has T=3; build "
     "the model with T=3 or encode the input with T=2"),
    (lambda: Spiking(2, SpikeConfig(method="mpd-agl")).forward(np.ones((2, 2, 4), F32)),
     ValueError, "method 'mpd-agl' needs the BatchNorm that feeds the neuron "
     "(Spiking(..., scale_from=bn))"),
    # loading a state dict
    (lambda: NET.load_state_dict({k: v for k, v in STATE.items() if k != "1.weight"}),
     ValueError, "state dict does not fit this model (another architecture, method or T?): "
     "missing ['1.weight'], unexpected []"),
    (lambda: NET.load_state_dict(_with("1.weight", STATE["1.weight"] + 1j)), TypeError,
     "state dict entry '1.weight' has dtype complex64; a model holds real numbers only: was the "
     "file written by dsatgo_np?"),
    (lambda: NET.load_state_dict(_with("1.weight", np.zeros((2, 2), F32))), ValueError,
     "state dict entry '1.weight' has shape (2, 2), the model expects (3, 4): was it saved from "
     "another architecture or another T?"),
    (lambda: NET.load_state_dict(_with("1.weight", np.full((3, 4), np.nan, F32))), ValueError,
     "state dict entry '1.weight' holds NaN or infinite values (in float32): a network holds "
     "finite numbers only; was it saved from a diverged run?"),
    # the builders
    (lambda: dn.models.mlp([4, 2], f_C=1.0), TypeError,
     "unknown option(s) ['f_C']; spiking options are ['detach_reset', 'f_c', 'k0', 'momentum', "
     "'running', 'smooth', 'threshold', 'threshold_grad', 'v_th'] and lam"),
    (lambda: dn.models.mlp([4, 2], dtype="float16"), ValueError,
     "dtype must be 'float32' (training) or 'float64' (gradient checks), got 'float16'"),
    (lambda: dn.models.mlp([4, 2], T=0), ValueError,
     "T must be a positive integer number of time steps, got 0"),
    (lambda: dn.models.mlp([4, 2], neuron="izhikevich"), ValueError,
     "unknown neuron 'izhikevich': choose 'lif' or 'plif'"),
    (lambda: dn.models.mlp([4]), ValueError, "mlp needs at least [inputs, classes], got sizes=[4]"),
    (lambda: dn.models.cnn((1, 6, 6), (4, "P", 4, "P"), 3, T=2), ValueError,
     "cannot pool a 3x3 map by 2: use fewer 'P' or another input size"),
    (lambda: dn.models.build({"name": "lenet"}), ValueError,
     "unknown model 'lenet': choose one of mlp, cnn, vgg, sew_resnet, plain_mlp, plain_cnn, "
     "resnet19"),
    (lambda: dn.models.plain_mlp(0), ValueError,
     "depth must be a positive number of spiking layers, got 0"),
    (lambda: dn.models.plain_mlp(1, bn_scale=0.0), ValueError,
     "bn_scale and init_gain must be positive, got bn_scale=0.0, init_gain=1.0"),
    # the optimisers
    (lambda: dn.optim.SGD([], lr=0.1), ValueError,
     "SGD got no parameters to optimise: pass net.parameters() of a network that has some"),
    (lambda: dn.optim.SGD(NET.parameters(), lr="fast"), TypeError,
     "SGD: lr must be a number, got 'fast'"),
    (lambda: dn.optim.SGD(NET.parameters(), lr=0.1, momentum=1.0), ValueError,
     "SGD: momentum must be in [0, 1), got 1.0"),
    (lambda: dn.optim.SGD(NET.parameters(), lr=0.1, nesterov=True), ValueError,
     "SGD: nesterov=True needs a momentum > 0"),
    (lambda: dn.optim.Adam(NET.parameters(), betas=(0.9,)), ValueError,
     "Adam: betas must be a pair (beta1, beta2), got (0.9,)"),
]


@pytest.mark.parametrize("call, error, message", ERRORS, ids=[m[:40] for _, _, m in ERRORS])
def test_each_engine_error_reads_in_full(call, error, message):
    """The whole message, from its first character to its last: what is wrong (with the
    values that make it wrong) and how to fix it. A test that matched only a part would let
    the rest, often the fix, be garbled unnoticed."""
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        call()
