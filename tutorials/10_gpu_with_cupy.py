# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 10. The same code on a GPU, with CuPy
#
# CuPy is a NumPy look-alike whose arrays live on an NVIDIA GPU: `cupy.exp`,
# `cupy.mean`, `a @ b` and slicing behave like their NumPy namesakes. `dsatgo_np` uses
# that to run one code base on both: **the arrays decide**. Every array function starts
# with
#
# ```python
# xp = get_xp(x)        # numpy for NumPy arrays, cupy for CuPy arrays
# ```
#
# and then writes `xp.exp`, `xp.zeros_like`, ... instead of `np.`. There is no
# `if gpu:` anywhere in the layers, the neuron or the losses, and `cupy` is imported in
# one file only, `dsatgo_np/backend.py`, so the package installs and runs without it.
#
# This tutorial has a CPU half, which runs everywhere, and a GPU half, which runs when
# CuPy sees a GPU and is skipped (with a message) otherwise.

# %%
import time

import numpy as np

import dsatgo_np as dn
from _common import FAST
from dsatgo_np import backend, data, losses, surrogate, threshold

GPU = backend.gpu_available()
print("GPU available to CuPy:", GPU)

# %% [markdown]
# ## The CPU half: what backend neutrality means
#
# `get_xp` looks at its arguments. NumPy arrays and plain Python numbers give `numpy`;
# only a CuPy array gives `cupy`.

# %%
a = np.linspace(-1.0, 1.0, 5, dtype=np.float32)
assert dn.get_xp(a) is np and dn.get_xp(0.5) is np and dn.get_xp(a, 2.0) is np

# %% [markdown]
# The dtype follows the input: a float32 layer stays float32 all the way, on either device
# (float32 to train, float64 to check gradients, tutorial 4). Statistics come back as
# array scalars of the input's dtype (0-d CuPy arrays on a GPU), not Python floats:
# converting with `float()` would make the GPU finish its queue and copy to the host at
# every step of the time loop, so the library never does it inside one.

# %%
g = surrogate.window(a, np.float32(0.0), np.float32(1.0))
mu, sigma = threshold.layer_stats(a)
assert g.dtype == np.float32 and mu.dtype == np.float32 and sigma.shape == ()
print("window:", g, " mu, sigma:", mu, sigma, sigma.dtype)

# %% [markdown]
# `to_numpy` brings any array back to the host (for printing, plotting, saving); on a
# NumPy array it returns the array itself, no copy. `get_backend("cupy")` is how code asks
# for CuPy by name, and it fails with an explanation when CuPy or a GPU is missing.

# %%
assert dn.to_numpy(a) is a
if not GPU:
    try:
        backend.get_backend("cupy")
        raise AssertionError("get_backend('cupy') should fail without a GPU")
    except RuntimeError as e:
        print("get_backend('cupy'):", e)

# %% [markdown]
# A model moves between devices with `net.to("numpy")` or `net.to("cupy")`: every
# parameter, gradient and buffer (BatchNorm statistics, running thresholds) is copied to
# the other device. Inputs go over with `xp.asarray`. One training step, written once for
# whatever `xp` is:

# %%
def train_step(net, x, y, xp, T):
    """One forward/backward on device xp; returns host copies of everything to compare."""
    x = xp.asarray(x, dtype=net.parameters()[0].data.dtype)   # the model's float32 or float64
    y = xp.asarray(y)
    out = net.forward(dn.encode.direct(x, T))
    loss, dout = losses.cross_entropy(out, y)
    net.zero_grad()
    net.backward(dout)
    spikes = [dn.to_numpy(m.cache.S) for m in net.modules() if isinstance(m, dn.model.Spiking)]
    grads = {name: dn.to_numpy(p.grad) for name, p in net.named_parameters()}
    return dn.to_numpy(out), float(loss), spikes, grads


def build(dtype):
    """A small CNN for 8x8 digits: conv-tdBN-spike-pool twice, then the readout."""
    return dn.models.cnn(in_shape=(1, 8, 8), channels=(8, 16), T=4, method="ds-atgo",
                         dtype=dtype, seed=0)


x, y = data.load("digits", "train")
x = data.normalize(x[:32 if FAST else 128], "digits")
y = y[:len(x)]

# %% [markdown]
# On the CPU, and as a dress rehearsal of the comparison the GPU half makes, the step
# run twice on two identically built networks gives identical results:

# %%
def compare(a, b, dtype):
    """Largest differences between two train_step results."""
    out_a, loss_a, spikes_a, grads_a = a
    out_b, loss_b, spikes_b, grads_b = b
    flipped = sum(int(np.sum(sa != sb)) for sa, sb in zip(spikes_a, spikes_b))
    total = sum(sa.size for sa in spikes_a)
    # per parameter, the worst difference relative to that gradient's largest entry: an
    # elementwise relative error would blow up on entries that are zero up to round-off
    grad_err = max(float(np.max(np.abs(grads_a[k] - grads_b[k])) / (np.max(np.abs(grads_a[k])) + 1e-30))
                   for k in grads_a)
    out_err = float(np.max(np.abs(out_a - out_b)))
    print(f"{dtype}: {flipped} of {total} spikes differ, max |out diff| {out_err:.1e}, "
          f"|loss diff| {abs(loss_a - loss_b):.1e}, worst gradient difference {grad_err:.1e} (relative)")
    return flipped / total, out_err, abs(loss_a - loss_b) / abs(loss_a), grad_err


cpu_a = train_step(build("float32"), x, y, np, 4)
cpu_b = train_step(build("float32").to("numpy"), x, y, np, 4)
assert compare(cpu_a, cpu_b, "float32, CPU vs CPU") == (0.0, 0.0, 0.0, 0.0)

# %% [markdown]
# ## The GPU path without a GPU: a strict stand-in
#
# Two things differ on a GPU besides speed. First, which code runs: NumPy arrays get the
# CPU speed layer (`dsatgo_np/fast/`: blocked loops, threads), every other array module the
# plain core, the equations as written (`dsatgo_np/kernels.py` decides; CuPy gets CUDA
# kernels for the neuron and its statistics, tdBN, convolution and SGD, `dsatgo_np/gpu/`).
# Second, what CuPy refuses: it never turns
# a device array into a NumPy one behind your back, and every `float()` or `.item()` is a
# copy to the host that makes the program wait for the GPU.
#
# `dsatgo_np.xp_strict` is a stand-in for CuPy, backed by NumPy, that behaves like CuPy in
# exactly those ways, and counts every read back to the host. The same `train_step` on it
# runs the plain core, so it must equal NumPy running the plain core, to the last bit:

# %%
from dsatgo_np import xp_strict

dn.set_kernels("plain")                 # NumPy on the plain core too, for a bit-for-bit check
plain_numpy = train_step(build("float32"), x, y, np, 4)
dn.set_kernels("auto")
with xp_strict.count_transfers() as reads:
    strict = train_step(build("float32").to("strict"), x, y, xp_strict, 4)
assert compare(plain_numpy, strict, "float32, NumPy vs the CuPy stand-in") == (0.0, 0.0, 0.0, 0.0)
print("reads back to the host in one step, the comparison's copies included:", reads.count)
try:
    np.asarray(xp_strict.zeros(3))
    raise AssertionError("the stand-in should refuse an implicit copy to the host")
except TypeError as e:
    print("np.asarray on a device array:", str(e)[:70], "...")

# %% [markdown]
# ## The GPU half: parity with NumPy
#
# On a GPU the same step runs on CuPy arrays. The results cannot be bit-identical:
# a GPU sums in a different order, so sums differ in the last bits. Two tolerances follow:
#
# - in **float64**, round-off is $10^{-16}$; no potential lands that close to its
#   threshold, every spike agrees and outputs and gradients agree to about $10^{-10}$;
# - in **float32**, round-off is $10^{-7}$, and a potential within that distance of its
#   threshold may spike on one device and not the other. Such flips are rare (a handful
#   per hundred thousand spikes at most); when none happens, outputs and gradients agree
#   to float32 precision.

# %%
if not GPU:
    print("SKIPPED the GPU half: CuPy is not installed or sees no GPU on this machine.\n"
          "Install it with `pip install dsatgo_np[gpu]` on a machine with CUDA to run it.")
else:
    cp = backend.get_backend("cupy")
    for dtype in ("float64", "float32"):
        cpu = train_step(build(dtype), x, y, np, 4)
        gpu = train_step(build(dtype).to("cupy"), x, y, cp, 4)
        flips, out_err, loss_err, grad_err = compare(cpu, gpu, f"{dtype}, CPU vs GPU")
        if dtype == "float64":
            assert flips == 0 and out_err < 1e-9 and loss_err < 1e-9 and grad_err < 1e-9
        else:
            assert flips < 1e-3 and loss_err < 1e-3
            if flips == 0:
                assert out_err < 1e-4 and grad_err < 1e-3

    # the trained model comes back to the CPU with everything it learned, running thresholds too
    net = build("float32").to("cupy")
    train_step(net, x, y, cp, 4)
    state = net.to("numpy").state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert any(k.endswith("running_threshold") for k in state)

    # a rough timing: training steps of a wider network on a larger batch
    xb, yb = data.load("digits", "train")
    xb, yb = data.normalize(xb[:512], "digits"), yb[:512]
    for name, xp in (("numpy", np), ("cupy", cp)):
        net = dn.models.mlp([64, 1024, 1024, 10], T=4).to(name)
        opt = dn.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        xd, yd = xp.asarray(xb), xp.asarray(yb)
        for i in range(4):                                   # the first one warms up (CuPy compiles)
            if i == 1:
                start = time.perf_counter()
            loss, dout = losses.cross_entropy(net.forward(dn.encode.direct(xd, 4)), yd)
            net.zero_grad()
            net.backward(dout)
            opt.step()
            float(loss)                                      # waits for the GPU to finish the step
        print(f"{name}: {(time.perf_counter() - start) / 3 * 1000:.1f} ms per training step")

# %% [markdown]
# Note the pattern in `train_step`: the loop body never asks which device it is on. The
# only device-specific lines are where data enters (`xp.asarray`) and where results
# leave (`to_numpy`, `float(loss)` once per step). Keep it that way in your own code and
# the GPU comes for free.
