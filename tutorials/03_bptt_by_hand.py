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
# # 3. Backpropagation through time, by hand
#
# A spiking neuron is a recurrent network of one unit: $V[t-1]$ feeds $H[t]$. Its gradient
# is computed by **backpropagation through time** (BPTT): unroll the $T$ steps into one
# long computation graph and walk it backwards. We derive every partial derivative for one
# neuron, code the backward loop by hand, prove it right with finite differences, and then
# find the same numbers in `dsatgo_np.core.neuron.lif_backward`.
#
# ## The graph of one step
#
# $$H[t] = \lambda V[t-1] + X[t], \qquad S[t] = \Theta(H[t] - \theta[t]), \qquad V[t] = H[t]\,(1 - S[t])$$
#
# The local partial derivatives, one per arrow of the graph:
#
# | arrow | partial |
# |---|---|
# | $X[t] \to H[t]$ | $\partial H[t] / \partial X[t] = 1$ |
# | $V[t-1] \to H[t]$ | $\partial H[t] / \partial V[t-1] = \lambda$ |
# | $H[t] \to S[t]$ | $\partial S[t] / \partial H[t] \approx g[t] = \frac{1}{k[t]}\mathbb{1}[\,|H[t]-\theta[t]| < k[t]/2\,]$ (the surrogate, tutorial 2) |
# | $H[t] \to V[t]$ (directly) | $\partial V[t] / \partial H[t] = 1 - S[t]$ |
# | $S[t] \to V[t]$ (the reset) | $\partial V[t] / \partial S[t] = -H[t]$ |
#
# $\theta[t]$ and $k[t]$ are constants here ([docs/METHOD.md](../docs/METHOD.md) section 3: the backward pass treats them so).
#
# ## Walking it backwards
#
# Write $dA$ for the total derivative $dL/dA$ of a loss $L$ that depends on the spikes. The
# loss gives us $dS[t]$ at every step. Nothing comes after the last step, so $dV[T] = 0$.
# Then for $t = T, T-1, \dots, 1$, collect every path out of each variable:
#
# - $S[t]$ reaches the loss directly and through the reset into $V[t]$:
#   $$d\tilde S[t] = dS[t] - dV[t]\,H[t]$$
# - $H[t]$ reaches $S[t]$ and, directly, $V[t]$:
#   $$dH[t] = d\tilde S[t]\,g[t] + dV[t]\,(1 - S[t])$$
# - $X[t]$ and $V[t-1]$ reach only $H[t]$:
#   $$dX[t] = dH[t], \qquad dV[t-1] = \lambda\, dH[t]$$
# - $\lambda$ is used at every step: its gradient **accumulates**,
#   $d\lambda \mathrel{+}= dH[t]\,V[t-1]$.
#
# (`DERIVATIONS.md`, section 3, states the same recursion for the library.)

# %%
import matplotlib.pyplot as plt
import numpy as np

from _common import savefig
from dsatgo_np import surrogate
from dsatgo_np.core.neuron import SpikeConfig, lif_backward, lif_forward, make_rule

LAM, THETA, K = 0.2, 1.0, 1.0

# %% [markdown]
# The forward pass, with a switch for **smooth mode**: firing with the window's primitive
# $p(H) = \mathrm{clip}((H - \theta)/k + 1/2, 0, 1)$ instead of the step. In smooth mode the
# forward pass is a genuine piecewise-linear function whose exact derivative *is* our
# backward pass (the window is $p'$), so finite differences can check it. The backward
# keeps whatever it needs from the forward (H, S, V); it never recomputes them.

# %%
def forward_by_hand(x, lam=LAM, smooth=False):
    """x: [T] for one neuron, or [T, ...] for many -> (S, H, V), each shaped like x."""
    H, S, V = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    v = np.zeros_like(x[0])
    for t in range(len(x)):
        H[t] = lam * v + x[t]
        S[t] = surrogate.primitive(H[t], THETA, K) if smooth else (H[t] >= THETA)
        v = H[t] * (1 - S[t])
        V[t] = v
    return S, H, V


def backward_by_hand(dS, H, S, V, lam=LAM, detach_reset=False):
    """dS = dL/dS, [T] or [T, ...] -> (dX shaped like dS, dlam)."""
    T = len(dS)
    dX, dlam = np.zeros_like(dS), 0.0
    dV = np.zeros_like(dS[0])                          # dV[T] = 0: nothing after the last step
    for t in reversed(range(T)):
        g = surrogate.window(H[t], THETA, K)           # dS[t]/dH[t], the surrogate
        dS_tot = dS[t] if detach_reset else dS[t] - dV * H[t]   # dV[t]/dS[t] = -H[t]
        dH = dS_tot * g + dV * (1 - S[t])              # dV[t]/dH[t] = 1 - S[t]
        dX[t] = dH                                     # dH[t]/dX[t] = 1
        if t > 0:
            dlam += np.sum(dH * V[t - 1])              # dH[t]/dlam = V[t-1]
        dV = lam * dH                                  # dH[t]/dV[t-1] = lam
    return dX, dlam


# %% [markdown]
# ## Check 1: finite differences in smooth mode
#
# The loss $L = \sum_t c[t]\,S[t]$ with random weights $c$ gives $dS[t] = c[t]$. We
# perturb each $X[t]$ by $\pm\epsilon$ and compare. The threshold and width are fixed
# numbers here, as in the backward pass. One more precaution: the primitive has kinks at
# $\theta \pm k/2$, where a finite difference straddling the kink would measure half a
# slope; we make sure no $H[t]$ sits within $10^{-3}$ of one (tutorial 4 shows why).

# %%
rng = np.random.default_rng(3)
T = 12
x = rng.uniform(0.3, 1.4, T)
c = rng.normal(0.0, 1.0, T)
S, H, V = forward_by_hand(x, smooth=True)
assert np.min(np.abs(np.abs(H - THETA) - K / 2)) > 1e-3, "an input sits on a kink: change the seed"
dX, dlam = backward_by_hand(c, H, S, V)

eps = 1e-6
loss = lambda x, lam=LAM: np.sum(c * forward_by_hand(x, lam, smooth=True)[0])
dX_num = np.array([(loss(x + eps * e) - loss(x - eps * e)) / (2 * eps) for e in np.eye(T)])
dlam_num = (loss(x, LAM + eps) - loss(x, LAM - eps)) / (2 * eps)
print("dL/dX by hand:     ", np.round(dX, 5))
print("finite differences:", np.round(dX_num, 5))
assert np.allclose(dX, dX_num, atol=1e-8) and np.isclose(dlam, dlam_num, atol=1e-8)
print(f"dL/dlam: by hand {dlam:.6f}, finite differences {dlam_num:.6f}")

# %% [markdown]
# ## Check 2: the library, on a whole layer
#
# `lif_backward(dS, cache)` runs the same loop on `[T, B, N]` arrays, reading $H$, $S$,
# $V$, $\theta[t]$ and $k[t]$ from the cache that `lif_forward` returned. Our hand loop
# broadcasts too, so we can compare on a layer of 32 x 64 neurons, with real spikes now
# (not smooth mode): this is the gradient that training uses.

# %%
T, B, N = 8, 32, 64
X = rng.normal(0.7, 0.5, (T, B, N))
dS = rng.normal(0.0, 1.0, (T, B, N))                    # some upstream gradient
rule = make_rule(SpikeConfig(method="vanilla"), np.float64(LAM), training=True)  # theta=1, k=1

S_lib, cache = lif_forward(X, LAM, rule)
dX_lib, dlam_lib = lif_backward(dS, cache)

S_hand, H_hand, V_hand = forward_by_hand(X)            # the loops broadcast over (B, N)
dX_hand, dlam_hand = backward_by_hand(dS, H_hand, S_hand, V_hand)
assert np.array_equal(S_lib, S_hand)
assert np.allclose(dX_lib, dX_hand, rtol=1e-12, atol=1e-14)
assert np.isclose(dlam_lib, dlam_hand, rtol=1e-12)
print(f"lif_backward matches the hand loop on {T}x{B}x{N}; dlam = {float(dlam_lib):.4f}")

# %% [markdown]
# ## How far back does credit reach?
#
# Put the whole loss on the last step, $dS[t] = \mathbb{1}[t = T]$. Feed a weak constant
# input that keeps $H[t] < 0.5$, below the window, then a final kick that lands
# $H[T]$ inside it without firing. Below the window $g[t] = 0$, so the reset term
# $-dV[t]\,H[t]\,g[t]$ vanishes; without spikes $1 - S[t] = 1$; the recursion
# $dV[t-1] = \lambda\, dH[t]$ is all that is left, and
#
# $$dX[t] = g[T]\,\lambda^{T-t}:$$
#
# credit decays geometrically into the past. With the paper's $\lambda = 0.2$ an input
# 5 steps back gets $0.2^5 = 3 \cdot 10^{-4}$ of the credit.

# %%
T = 16
fig, ax = plt.subplots(figsize=(6, 3.4))
for lam in (0.2, 0.5, 0.8):
    x = np.full((T, 1), 0.3 * (1 - lam))                # H[t] = 0.3 (1 - lam^t) < 0.5
    x[-1] = 0.6                                         # H[T] in (0.5, 1): inside the window
    S, cache = lif_forward(x, lam, make_rule(SpikeConfig(method="vanilla"), np.float64(lam), True))
    assert S.sum() == 0 and 0.5 < cache.H[-1, 0] < 1.0
    dS = np.zeros((T, 1))
    dS[-1] = 1.0
    dX, _ = lif_backward(dS, cache)
    steps_back = T - 1 - np.arange(T)
    assert np.allclose(dX[:, 0], lam ** steps_back)    # g[T] = 1 / k = 1 inside the window
    ax.semilogy(np.arange(1, T + 1), dX[:, 0], "o-", label=rf"$\lambda$ = {lam}")
ax.set_xlabel("step t")
ax.set_ylabel(r"$dL/dX[t]$ for $L = S[T]$")
ax.set_title(r"credit assignment through time: $\lambda^{T-t}$")
ax.legend()
savefig(fig, "03_credit_through_time")

# %% [markdown]
# ## What `detach_reset` changes
#
# Many SNN libraries offer to treat $S[t]$ in the reset $V[t] = H[t](1 - S[t])$ as a
# constant. That deletes one arrow of the graph, $S[t] \to V[t]$, so the term
# $-dV[t]\,H[t]$ disappears: $d\tilde S[t] = dS[t]$. The forward pass is unchanged; the
# backward pass is no longer its derivative.
#
# The library takes it as an argument of `lif_forward` (it is stored in the cache and
# read by `lif_backward`). With it, the library equals our hand loop without the term,
# and the finite-difference check of the smooth forward now **fails** (deliberately: it is
# an approximation).

# %%
T, B, N = 8, 32, 64
X = rng.normal(0.7, 0.5, (T, B, N))
dS = rng.normal(0.0, 1.0, (T, B, N))
S, cache_full = lif_forward(X, LAM, rule)
_, cache_det = lif_forward(X, LAM, rule, detach_reset=True)
dX_full, _ = lif_backward(dS, cache_full)
dX_det, _ = lif_backward(dS, cache_det)
S_h, H_h, V_h = forward_by_hand(X)
assert np.allclose(dX_det, backward_by_hand(dS, H_h, S_h, V_h, detach_reset=True)[0], rtol=1e-12)
assert np.allclose(dX_full, backward_by_hand(dS, H_h, S_h, V_h)[0], rtol=1e-12)
changed = np.mean(dX_full != dX_det)
cosine = np.sum(dX_full * dX_det) / np.linalg.norm(dX_full) / np.linalg.norm(dX_det)
print(f"detach_reset changes {changed:.0%} of the entries of dL/dX; cosine similarity {cosine:.3f}")

# %% [markdown]
# Where exactly do they differ? Nothing follows the last step ($dV[T] = 0$), so there the
# reset term vanishes and the two agree exactly. One step earlier, both carry the same
# $dV[T-1] = \lambda\,dH[T] = \lambda\,dX[T]$ back, and full BPTT adds exactly the reset
# term $-dV[T-1]\,H[T-1]\,g[T-1]$: nonzero where $H[T-1]$ lies inside the window and
# some gradient came back from step $T$.

# %%
g_prev = surrogate.window(H_h[-2], THETA, K)                 # g[T-1], shape (B, N)
reset_term = -LAM * dX_full[-1] * H_h[-2] * g_prev            # -dV[T-1] H[T-1] g[T-1]
assert np.array_equal(dX_full[-1], dX_det[-1])                # the last step: no reset path
assert np.allclose(dX_full[-2] - dX_det[-2], reset_term, rtol=1e-12, atol=1e-15)
differs = dX_full[-2] != dX_det[-2]
assert np.array_equal(differs, (g_prev > 0) & (dX_full[-1] != 0))
print(f"at step T-1 they differ for {differs.mean():.0%} of the neurons, exactly those with H[T-1] "
      f"in the window and a gradient from step T; the difference then travels back through dV")

# the smooth-mode check of the first section, now on the library: exact with the reset
# path, off without it
x = np.random.default_rng(3).uniform(0.3, 1.4, (12, 1))      # the same neuron as above
c = np.random.default_rng(4).normal(0.0, 1.0, (12, 1))
loss = lambda x: np.sum(c * lif_forward(x, LAM, rule, smooth=True)[0])
dX_num = np.array([(loss(x + eps * e) - loss(x - eps * e)) / (2 * eps) for e in np.eye(12)[:, :, None]])
err = {}
for detach in (False, True):
    _, cache = lif_forward(x, LAM, rule, smooth=True, detach_reset=detach)
    err[detach] = np.max(np.abs(lif_backward(c, cache)[0][:, 0] - dX_num))
err_full, err_det = err[False], err[True]
print(f"worst error against finite differences: full {err_full:.1e}, detach_reset {err_det:.1e}")
assert err_full < 1e-8 < 1e-3 < err_det

# %% [markdown]
# Where do the two differ? The reset term $-dV[t]\,H[t]\,g[t]$ is there at every step where
# $H[t]$ lies inside the window, **whether or not the neuron fired**: the surrogate says
# "a little more potential and this neuron would have fired, and then reset to 0". Redo
# the credit experiment with a constant input that parks $H$ at $0.9$, inside the window.
# With $S[t] = 0$ and $g[t] = 1$ the full recursion multiplies by
# $\lambda\,(1 - H[t])$ per step, the detached one by $\lambda$ only:
#
# $$dX[t] = g[T] \prod_{u=t}^{T-1} \lambda\,(1 - H[u]\,g[u]) \quad\text{(full)}, \qquad
#   dX[t] = g[T]\,\lambda^{T-t} \quad\text{(detach\_reset)}.$$

# %%
T, lam = 16, 0.8
x = np.full((T, 1), 0.9 * (1 - lam))                  # H[t] = 0.9 (1 - lam^t) -> 0.9, no spike
rule_08 = make_rule(SpikeConfig(method="vanilla"), np.float64(lam), True)
dS = np.zeros((T, 1))
dS[-1] = 1.0
credit = {}
for detach in (False, True):
    S, cache = lif_forward(x, lam, rule_08, detach_reset=detach)
    assert S.sum() == 0
    credit[detach] = lif_backward(dS, cache)[0][:, 0]
h, g = cache.H[:, 0], surrogate.window(cache.H[:, 0], THETA, K)
full = np.array([g[-1] * np.prod(lam * (1 - h[t:-1] * g[t:-1])) for t in range(T)])
assert np.allclose(credit[False], full) and np.allclose(credit[True], g[-1] * lam ** np.arange(T)[::-1])

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
lim = np.abs(dX_full).max()
ax1.plot(dX_full.ravel(), dX_det.ravel(), ".", ms=2, alpha=0.4)
ax1.plot([-lim, lim], [-lim, lim], "k:", lw=1)
ax1.set_xlabel("dL/dX, full BPTT")
ax1.set_ylabel("dL/dX, detach_reset")
ax1.set_title("a layer, random upstream gradient")
ax2.semilogy(np.arange(1, T + 1), credit[False], "o-", label="full BPTT")
ax2.semilogy(np.arange(1, T + 1), credit[True], "s-", label="detach_reset")
ax2.set_xlabel("step t")
ax2.set_ylabel(r"$dL/dX[t]$ for $L = S[T]$")
ax2.set_title(rf"one neuron, H parked at 0.9, $\lambda$ = {lam}")
ax2.legend()
savefig(fig, "03_detach_reset")

# %% [markdown]
# Full BPTT is the exact derivative of the smooth forward pass; `detach_reset` hands the
# past more credit than that forward pass justifies. DS-ATGO keeps the reset path by
# default (`SpikeConfig(detach_reset=False)`, as docs/METHOD.md section 2 specifies).
