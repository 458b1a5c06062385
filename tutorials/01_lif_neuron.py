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
# # 1. The LIF neuron, by hand
#
# An artificial neuron of a deep network is a function: the same input gives the same
# output. A spiking neuron has **memory**. It integrates its input current into a membrane
# potential, leaks part of it away at every step, and when the potential crosses a
# threshold it emits a spike (a 1) and starts again from zero.
#
# The whole neuron is three lines. For steps $t = 1 \dots T$, with $V[0] = 0$:
#
# $$H[t] = \lambda\, V[t-1] + X[t] \qquad \text{(charge: leak what was left, add the input)}$$
# $$S[t] = \Theta(H[t] - \theta), \quad \Theta(z) = 1 \text{ if } z \ge 0 \text{ else } 0 \qquad \text{(fire)}$$
# $$V[t] = H[t]\,(1 - S[t]) \qquad \text{(hard reset: a neuron that fired starts from 0)}$$
#
# $X[t]$ is the input current, $H[t]$ the potential after charging, $V[t]$ the potential
# carried to the next step, $\lambda$ the decay factor (the paper calls it $\tau$) and
# $\theta$ the threshold. This project's fixed LIF uses $\lambda = 0.2$: a very leaky
# neuron that keeps only a fifth of its potential from one step to the next.
#
# Note the $\ge$: a potential exactly on the threshold fires. That tie rule is a choice
# (the paper's released code makes it), and we will check that the library follows it.

# %%
import matplotlib.pyplot as plt
import numpy as np

from _common import FAST, savefig
from dsatgo_np.core.neuron import SpikeConfig, lif_forward, make_rule

LAM, THETA = 0.2, 1.0

# %% [markdown]
# ## The recurrence, written out
#
# One loop over time; every array operation works on all neurons at once, so `X` can be
# `[T]` for one neuron or `[T, B, N]` for a layer.

# %%
def lif_by_hand(X, lam=LAM, theta=THETA):
    """X: [T, ...] input currents -> (H, S, V), each [T, ...]."""
    H, S, V = np.zeros_like(X), np.zeros_like(X), np.zeros_like(X)
    v = np.zeros_like(X[0])                     # V[0] = 0: the neuron starts at rest
    for t in range(len(X)):
        H[t] = lam * v + X[t]                   # charge
        S[t] = (H[t] >= theta).astype(X.dtype)  # fire; the tie H == theta fires
        v = H[t] * (1 - S[t])                   # hard reset
        V[t] = v
    return H, S, V


# %% [markdown]
# Four input currents, each fed to its own neuron over $T = 20$ steps:
#
# - a constant $0.5$: too weak to ever fire, as we will see below;
# - a constant $0.9$: fires every second step;
# - a constant $1.0$: lands exactly on the threshold at the first step, and fires every step;
# - a ramp from $0$ to $1.6$: silent at first, then faster and faster.

# %%
T = 20
inputs = {
    "constant 0.5": np.full(T, 0.5),
    "constant 0.9": np.full(T, 0.9),
    "constant 1.0": np.full(T, 1.0),
    "ramp 0 -> 1.6": np.linspace(0.0, 1.6, T),
}
X = np.stack(list(inputs.values()), axis=1)     # (T, 4): one neuron per input
H, S, V = lif_by_hand(X)
for name, s in zip(inputs, S.T):
    print(f"{name:>14}: {''.join('|' if b else '.' for b in s)}   ({int(s.sum())} spikes)")

# %% [markdown]
# Plotting a membrane trace: at every step the potential jumps up to $H[t]$ (charge),
# then, if it reached the threshold, drops to $V[t] = 0$ (reset), then decays by $\lambda$
# before the next input arrives. The sawtooth below draws exactly that.

# %%
fig, axes = plt.subplots(1, 4, figsize=(15, 3.2), sharey=True)
for ax, (name, x), h, s, v in zip(axes, inputs.items(), H.T, S.T, V.T):
    # the path: ... V[t-1] -> H[t] (charge) -> V[t] (reset, if it fired) -> ...
    tt = np.repeat(np.arange(1, T + 1), 2)
    path = np.stack([h, v], axis=1).reshape(-1)
    ax.plot(np.r_[0, tt], np.r_[0, path], color="C0", lw=1.2, label="membrane potential")
    ax.axhline(THETA, color="k", ls="--", lw=1, label=r"threshold $\theta$")
    fired = np.flatnonzero(s) + 1
    ax.plot(fired, h[s == 1], "v", color="C3", ms=7, label="spike")
    ax.step(np.arange(1, T + 1), x, where="mid", color="C2", lw=0.8, alpha=0.7, label="input $X[t]$")
    ax.set_title(name)
    ax.set_xlabel("step t")
axes[0].set_ylabel("potential")
axes[0].legend(loc="upper left", fontsize=7)
savefig(fig, "01_membrane_traces")

# %% [markdown]
# What the traces say, checked rather than eyeballed:
#
# - Under a constant input $x$ without spikes, the potential approaches the fixed point
#   of $H = \lambda H + x$, that is $H^* = x / (1 - \lambda)$. For $x = 0.5$ that is
#   $0.625 < \theta$: the neuron never fires, however long we wait.
# - Every spike is followed by $V = 0$, exactly.
# - $x = 1.0$ reaches $H = \theta$ exactly at the first step, and the tie fires.

# %%
assert S[:, 0].sum() == 0
assert np.isclose(H[-1, 0], 0.5 / (1 - LAM), rtol=1e-9)
assert np.all(V[S == 1] == 0)
assert np.all(S[:, 2] == 1)                     # H = theta fires: Heaviside(0) = 1
assert S[:, 1].tolist() == [0, 1] * (T // 2)    # 0.9, then 0.9 * 1.2 = 1.08 >= 1

# %% [markdown]
# ## The library does the same
#
# `dsatgo_np.core.neuron.lif_forward(X, lam, rule)` runs the same recurrence. What varies
# between the methods of this project is the **rule**, a function called at every step on
# $H[t]$ that returns the threshold $\theta[t]$ (and the surrogate width $k[t]$ that the
# backward pass will need; tutorial 2). The `"vanilla"` method has a fixed threshold
# $V_{th} = 1$, like our hand-written neuron. Later tutorials swap in the adaptive
# threshold of DS-ATGO without touching the neuron.
#
# `training=True` matters only for the adaptive methods (training mode measures the
# threshold from the batch, eval mode uses a running average); vanilla ignores it.

# %%
rule = make_rule(SpikeConfig(method="vanilla"), np.float64(LAM), training=True)
S_lib, cache = lif_forward(X, LAM, rule)
assert np.array_equal(S_lib, S)           # the same spikes, bit for bit
assert np.array_equal(cache.H, H) and np.array_equal(cache.V, V)   # V: recomputed as H (1 - S)
assert np.all(cache.theta == 1.0)         # vanilla: theta[t] = V_th = 1 at every step
print("lif_forward gives the same spikes as the hand-written loop")

# %% [markdown]
# The same on a whole layer, `[T, B, N]` = 8 steps, a batch of 16, 50 neurons, with random
# currents:

# %%
rng = np.random.default_rng(0)
X_layer = rng.normal(0.6, 0.5, (8, 16, 50))
S_lib, _ = lif_forward(X_layer, LAM, rule)
assert np.array_equal(S_lib, lif_by_hand(X_layer)[1])
print(f"layer firing rate: {S_lib.mean():.3f}")

# %% [markdown]
# ## Firing rate against input current
#
# Feed a constant current $x$ from rest. Without a spike, after $n$ steps
#
# $$H[n] = x\,(1 + \lambda + \dots + \lambda^{n-1}) = x\,\frac{1 - \lambda^n}{1 - \lambda}.$$
#
# The neuron fires at the first $n$ where this reaches $\theta$, resets to 0, and the same
# story starts again: the spike train is periodic with period
#
# $$n(x) = \min\{n \ge 1 : x\,(1 - \lambda^n) / (1 - \lambda) \ge \theta\},$$
#
# and over $T$ steps it fires $\lfloor T / n(x) \rfloor$ times. Below the **rheobase**
# $x \le \theta (1 - \lambda)$ there is no such $n$ and the neuron stays silent. The
# library runs every $x$ of a grid as one batch (the fixed threshold ignores the batch).

# %%
def period(x, lam, theta=THETA, n_max=10_000):
    """n(x) of the formula above, or None below the rheobase."""
    if x * (1 / (1 - lam)) <= theta:
        return None
    return next(n for n in range(1, n_max) if x * (1 - lam**n) / (1 - lam) >= theta)


T_rate = 120 if FAST else 720        # divisible by 1..6 and more, so floor(T / n) is exact
xs = np.linspace(0.0, 2.0, 101 if FAST else 401) + 1e-3 * np.pi   # offset: no exact ties
fig, ax = plt.subplots(figsize=(6, 3.5))
for lam in (0.2, 0.8):
    rule = make_rule(SpikeConfig(method="vanilla"), np.float64(lam), training=True)
    X_rate = np.broadcast_to(xs, (T_rate, len(xs)))          # (T, B): one neuron per x
    S_rate, _ = lif_forward(X_rate, lam, rule)
    rates = S_rate.mean(axis=0)
    expected = np.array([0.0 if (n := period(x, lam)) is None else (T_rate // n) / T_rate
                         for x in xs])
    assert np.array_equal(rates, expected), f"lam={lam}: library rate differs from the formula"
    ax.plot(xs, rates, drawstyle="steps-post", label=rf"$\lambda$ = {lam}")
    ax.axvline(THETA * (1 - lam), color="gray", ls=":", lw=1)
ax.set_xlabel("constant input current x")
ax.set_ylabel("firing rate (spikes / step)")
ax.set_title("f-I curve of the LIF neuron (dotted: rheobase)")
ax.legend()
savefig(fig, "01_rate_vs_current")

# %% [markdown]
# Two things to take away for the next tutorials:
#
# 1. The rate is a **staircase**: $1, \tfrac12, \tfrac13, \dots$, then nothing below the
#    rheobase. A tiny change of the input usually changes no spike at all, and sometimes
#    changes one spike completely. That is why the spike has no useful derivative
#    (tutorial 2).
# 2. The leak sets the memory: with $\lambda = 0.8$ the neuron integrates weak inputs for
#    many steps (rheobase $0.2$); with $\lambda = 0.2$ it barely remembers the previous
#    step (rheobase $0.8$), so gradients through time will fade fast too (tutorial 3).
