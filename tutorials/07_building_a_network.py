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
# # 7. Building and training a spiking network
#
# The pieces so far: a neuron (tutorial 1), its surrogate gradient (2), BPTT (3), the
# adaptive threshold and dynamic window (5, 6). A network puts them between ordinary
# layers. The recipe this project follows ([docs/METHOD.md](../docs/METHOD.md) section 6) is
#
# $$\text{image} \xrightarrow{\text{direct encoding}} X[t] \to \text{Linear/Conv} \to
#   \text{tdBN} \to \text{spiking neuron} \to \dots \to \text{readout} \to
#   \text{mean over } t \to \text{cross-entropy}$$
#
# - **Direct encoding**: the static image is the input current at every step $t$.
# - **Linear / Conv** layers have no memory: they treat the $T$ steps as $T$ more samples,
#   so `[T, B, ...]` is folded into `[T*B, ...]` and one matrix product serves every step.
# - **tdBN**: BatchNorm whose statistics run over time, batch (and space) together.
# - **Readout**: a last non-spiking Linear layer; its outputs are averaged over $T$
#   (rate decoding), $m = \frac1T \sum_t \mathrm{out}[t]$, and the loss is the
#   cross-entropy of $\mathrm{softmax}(m)$.
#
# First we write one training step by hand with the functional layers and check it
# against `dsatgo_np.models.mlp`; then we train that network on handwritten digits.

# %%
import matplotlib.pyplot as plt
import numpy as np

import dsatgo_np as dn
from _common import FAST, savefig
from dsatgo_np import data, layers, losses
from dsatgo_np.core.neuron import SpikeConfig, lif_backward, lif_forward, make_rule

# The library's plain core, the equations as written: what a debugger steps into from
# net.forward (the default kernels compute the same numbers faster; tutorial 10 compares them).
dn.set_kernels("plain")

# %% [markdown]
# The data: scikit-learn's 1,797 handwritten digits (8x8 pixels, offline), split by
# `dsatgo_np.data` into 1,437 training and 360 test images, normalised per pixel value
# with the training set's mean and standard deviation.

# %%
x_train, y_train = data.load("digits", "train")
x_test, y_test = data.load("digits", "test")
x_train, x_test = data.normalize(x_train, "digits"), data.normalize(x_test, "digits")
print("train", x_train.shape, x_train.dtype, " test", x_test.shape)

# %% [markdown]
# ## One step, by hand
#
# A network `mlp([64, 32, 10])`: Flatten, Linear(64, 32) without bias (tdBN's shift
# replaces it), tdBN(32), a DS-ATGO spiking layer, and the readout Linear(32, 10). We
# build it in float64 (the hand-written and library versions then agree to round-off)
# and copy its initial weights for our hand-written version.

# %%
T, B = 4, 16
net = dn.models.mlp([64, 32, 10], T=T, method="ds-atgo", dtype="float64", seed=0)
print(" -> ".join(type(m).__name__ for m in net))
print([name for name, _ in net.named_parameters()])
W1 = net[1]._params["weight"].data                    # (32, 64)
gamma, beta = net[2]._params["weight"].data, net[2]._params["bias"].data   # (32,)
W2, b2 = net[4]._params["weight"].data, net[4]._params["bias"].data         # (10, 32), (10,)
x, y = x_train[:B].astype(np.float64), y_train[:B]

# %% [markdown]
# The forward pass. Every stateless layer sees the folded `[T*B, ...]` array; the neuron
# sees `[T, B, ...]`, because it needs the time axis for its memory.

# %%
lam = 0.2
X0 = dn.encode.direct(x, T)                           # (T, B, 1, 8, 8): same image every step
a = X0.reshape(T * B, 64)                             # (T*B, 64): flatten and fold
z1, c_lin1 = layers.linear_forward(a, W1)             # (T*B, 32)
h1, c_bn, _, _ = layers.batchnorm_forward(z1, gamma, beta)   # (T*B, 32): stats over T and B
rule = make_rule(SpikeConfig(method="ds-atgo"), np.float64(lam), training=True)
S, c_lif = lif_forward(h1.reshape(T, B, 32), lam, rule)      # (T, B, 32) spikes
o, c_lin2 = layers.linear_forward(S.reshape(T * B, 32), W2, b2)   # (T*B, 10)
out = o.reshape(T, B, 10)
loss, dout = losses.cross_entropy(out, y)             # dout: (T, B, 10)
print(f"loss {float(loss):.4f}, hidden firing rate per step {np.round(S.mean(axis=(1, 2)), 3)}")
print("adaptive thresholds theta[t]:", np.round(c_lif.theta, 3), " widths k[t]:", np.round(c_lif.k, 3))

# %% [markdown]
# Rate decoding spreads the gradient evenly over time: since
# $\partial m / \partial \mathrm{out}[t] = 1/T$, every step receives $dL/dm$ divided by $T$.
#
# The backward pass walks the same layers in reverse, each backward taking the cache its
# forward returned. Parameter gradients come out keyed like the parameters.

# %%
assert all(np.array_equal(dout[t], dout[0]) for t in range(T))   # the same gradient at every step
dS_fold, g_lin2 = layers.linear_backward(dout.reshape(T * B, 10), c_lin2)   # (T*B, 32)
dh1, dlam = lif_backward(dS_fold.reshape(T, B, 32), c_lif)                   # BPTT, (T, B, 32)
dz1, g_bn = layers.batchnorm_backward(dh1.reshape(T * B, 32), c_bn)          # (T*B, 32)
_, g_lin1 = layers.linear_backward(dz1, c_lin1, need_dx=False)               # the input learns nothing
hand = {"1.weight": g_lin1["weight"], "2.weight": g_bn["weight"], "2.bias": g_bn["bias"],
        "4.weight": g_lin2["weight"], "4.bias": g_lin2["bias"]}

# %% [markdown]
# The library: `net.forward`, the same loss, `net.backward`. The gradients land in each
# parameter's `.grad`.

# %%
out_lib = net.forward(dn.encode.direct(x, T))
loss_lib, dout_lib = losses.cross_entropy(out_lib, y)
net.zero_grad()
net.backward(dout_lib)
assert np.allclose(out_lib, out, rtol=1e-10, atol=1e-12) and np.isclose(loss_lib, loss, rtol=1e-12)
for name, p in net.named_parameters():
    assert np.allclose(p.grad, hand[name], rtol=1e-8, atol=1e-12), name
    print(f"{name:>9}: max |library - hand| = {np.max(np.abs(p.grad - hand[name])):.1e}")

# %% [markdown]
# ## Training on digits
#
# The same architecture, wider (128 hidden neurons) and in float32, trained with SGD
# (learning rate 0.1, momentum 0.9) on batches of 64. Evaluation switches the network to
# eval mode: tdBN then uses its running statistics and the spiking layer its running
# thresholds (tutorial 5), so a test prediction does not depend on the rest of the batch.

# %%
epochs = 2 if FAST else 10
n_train = 512 if FAST else len(x_train)
net = dn.models.mlp([64, 128, 10], T=T, method="ds-atgo", seed=0)
opt = dn.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
spiking = net[3]


def evaluate(net, x, y):
    net.eval()
    out = net.forward(dn.encode.direct(x, T))
    net.train()
    return losses.accuracy(out, y)


batch_losses, test_acc = [], [evaluate(net, x_test, y_test)]
for epoch in range(epochs):
    for xb, yb in data.batches(x_train[:n_train], y_train[:n_train], 64, seed=0, epoch=epoch):
        out = net.forward(dn.encode.direct(xb, T))
        loss, dout = losses.cross_entropy(out, yb)
        net.zero_grad()
        net.backward(dout)
        opt.step()
        batch_losses.append(float(loss))
    test_acc.append(evaluate(net, x_test, y_test))
    print(f"epoch {epoch + 1}: last loss {batch_losses[-1]:.3f}, test accuracy {test_acc[-1]:.1%}")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.3))
ax1.plot(batch_losses, lw=0.8)
ax1.set_xlabel("training batch")
ax1.set_ylabel("cross-entropy")
ax1.set_title("training loss")
ax2.plot(range(epochs + 1), 100 * np.array(test_acc), "o-")
ax2.axhline(10, color="gray", ls=":", label="chance")
ax2.xaxis.get_major_locator().set_params(integer=True)
ax2.set_xlabel("epoch")
ax2.set_ylabel("test accuracy (%)")
ax2.set_title("digits, mlp [64, 128, 10], T = 4, DS-ATGO")
ax2.legend()
savefig(fig, "07_training")

# %% [markdown]
# A look inside the trained network: the hidden layer's spikes for a few test digits
# (eval mode, running thresholds). Each digit lights up its own pattern of the 128
# neurons, and the readout's time-averaged output picks the class.

# %%
net.eval()
spiking.record = True
show = 5
out = net.forward(dn.encode.direct(x_test[:show], T))
pred = out.mean(axis=0).argmax(axis=1)
hidden = spiking.cache.S                               # (T, show, 128)
eval_rate = float(hidden.mean())
spiking.record = False
net.train()

fig, axes = plt.subplots(2, show, figsize=(13, 3.8), gridspec_kw={"height_ratios": [2, 1]},
                         layout="constrained")
for i in range(show):
    axes[0, i].imshow(x_test[i, 0], cmap="gray")
    axes[0, i].set_title(f"label {y_test[i]}, predicted {pred[i]}", fontsize=9)
    raster = axes[1, i].imshow(hidden[:, i], aspect="auto", cmap=plt.get_cmap("Greys", 2),
                               vmin=-0.5, vmax=1.5, interpolation="nearest")
    axes[1, i].set_xlabel("hidden neuron")
    axes[1, i].set_yticks(range(T), [str(t + 1) for t in range(T)])
    axes[1, i].set_ylabel("step t" if i == 0 else "")
    axes[0, i].axis("off")
bar = fig.colorbar(raster, ax=axes[1, :], ticks=[0, 1], shrink=0.9, aspect=8)
bar.ax.set_yticklabels(["silent", "spike"])
savefig(fig, "07_hidden_spikes")
print(f"hidden firing rate in eval mode: {eval_rate:.1%}")

# %%
final = test_acc[-1]
assert final > (0.7 if FAST else 0.85), f"test accuracy {final:.1%}"
assert np.mean(batch_losses[-5:]) < batch_losses[0]
print(f"final test accuracy {final:.1%} (chance: 10 %)")
