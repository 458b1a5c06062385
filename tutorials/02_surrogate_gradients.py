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
# # 2. Surrogate gradients: a derivative for a step function
#
# Backpropagation needs $\partial S / \partial H$, the derivative of the spike with respect
# to the membrane potential. The spike is a step, $S = \Theta(H - \theta)$: its derivative
# is $0$ everywhere except at $H = \theta$, where it is infinite. Neither value teaches a
# network anything. This tutorial shows the problem with numbers, then the fix that every
# modern SNN uses, and the trade-off that fix brings, which is the trade-off DS-ATGO's
# backward stage (tutorial 6) is about.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

from _common import FAST, savefig
from dsatgo_np import surrogate

THETA = 1.0

# %% [markdown]
# ## Finite differences of a step
#
# The central difference $[\Theta(H + \epsilon - \theta) - \Theta(H - \epsilon - \theta)] / 2\epsilon$
# can take only two values: $0$ when the step lies outside $[H - \epsilon, H + \epsilon]$,
# and $1 / 2\epsilon$ when it lies inside. Shrinking $\epsilon$ does not converge to
# anything useful: the zeros stay zeros and the rare non-zero grows without bound.

# %%
H = np.linspace(0.0, 2.0, 2001)                         # potentials around theta = 1
for eps in (1e-1, 1e-3, 1e-6):
    fd = (surrogate.heaviside(H + eps - THETA) - surrogate.heaviside(H - eps - THETA)) / (2 * eps)
    values = np.unique(fd)
    print(f"eps = {eps:.0e}: values {values.tolist()}, non-zero at {np.mean(fd != 0):.2%} of the points")
    assert np.allclose(values, [0.0, 1 / (2 * eps)][:len(values)])

# %% [markdown]
# In a network every neuron's true gradient is therefore $0$ (almost surely): a loss
# that depends on the weights only through spikes is flat almost everywhere, and
# gradient descent cannot move.
#
# ## The rectangular surrogate and its primitive
#
# The surrogate gradient keeps the forward step but, in the backward pass, pretends that
# $\partial S / \partial H$ is a window of width $k$ and height $1/k$ centred on the
# threshold:
#
# $$g(H) = \frac{1}{k}\,\mathbb{1}\left[\,|H - \theta| < k/2\,\right].$$
#
# Its area is $1$, like the Dirac spike that is the step's true derivative; as
# $k \to 0$ it becomes that spike. This window is the exact derivative of a function,
# its **primitive**, a ramp that climbs from 0 to 1 across the window:
#
# $$p(H) = \mathrm{clip}\!\left(\frac{H - \theta}{k} + \frac12,\ 0,\ 1\right).$$
#
# So training with a surrogate gradient means: spike with the step, differentiate as if
# we had spiked with the ramp. The library's `surrogate.window(h, theta, k)` and
# `surrogate.primitive(h, theta, k)` are these two functions.

# %%
widths = (0.25, 0.5, 1.0, 2.0)
h = np.linspace(-0.5, 2.5, 1201)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
ax1.plot(h, surrogate.heaviside(h - THETA), "k", lw=2, label=r"step $\Theta(H-\theta)$")
for k in widths:
    ax1.plot(h, surrogate.primitive(h, THETA, k), label=f"primitive, k = {k}")
    ax2.plot(h, surrogate.window(h, THETA, k), label=f"window, k = {k}")
ax1.set_title("forward: the spike and its smooth primitives")
ax2.set_title("backward: the surrogate dS/dH (area 1)")
for ax in (ax1, ax2):
    ax.axvline(THETA, color="gray", ls=":", lw=1)
    ax.set_xlabel("membrane potential H")
    ax.legend(fontsize=8)
savefig(fig, "02_window_and_primitive")

# %% [markdown]
# The claim "the window is the derivative of the primitive" is checkable: central
# differences of `primitive` must equal `window`, except within $\epsilon$ of the two
# kinks at $\theta \pm k/2$, where the slope jumps (tutorial 4 shows what happens there).
# We also check the area, and that outside the window the primitive equals the step.

# %%
eps = 1e-6
for k in widths:
    grid = np.linspace(-0.5, 2.5, 30001)
    off_kinks = np.abs(np.abs(grid - THETA) - k / 2) > 10 * eps
    fd = (surrogate.primitive(grid + eps, THETA, k) - surrogate.primitive(grid - eps, THETA, k)) / (2 * eps)
    g = surrogate.window(grid, THETA, k)
    assert np.allclose(fd[off_kinks], g[off_kinks], atol=1e-6), k
    assert np.isclose(g.sum() * (grid[1] - grid[0]), 1.0, atol=1e-3)          # area 1
    outside = np.abs(grid - THETA) >= k / 2
    assert np.array_equal(surrogate.primitive(grid, THETA, k)[outside],
                          surrogate.heaviside(grid - THETA)[outside])
print("finite differences of the primitive equal the window, for every width")

# %% [markdown]
# ## What the surrogate estimates, and the width trade-off
#
# One spike has no derivative, but an *average* over many neurons does. Take a layer
# whose potentials are spread as $H \sim \mathcal{N}(0, s^2)$ and shift them all by $c$.
# The share of neurons that fire is $r(c) = P(H + c \ge \theta)$, a smooth function with
#
# $$\frac{dr}{dc} = p_H(\theta), \quad \text{the density of } H \text{ at the threshold.}$$
#
# The batch average of the surrogate estimates exactly this: $\mathbb{E}[g(H)] =
# P(|H - \theta| < k/2) / k$, the density averaged over the window. Let us check on a
# layer with $s = 0.5$, so that the fixed threshold $\theta = 1$ sits two standard
# deviations out, in the tail (tutorial 5 shows why that situation is common).

# %%
s = 0.5
rng = np.random.default_rng(0)
n_batches, B = (200, 256) if FAST else (2000, 256)
H = rng.normal(0.0, s, (n_batches, B))              # n_batches layers of B neurons
Phi = np.vectorize(lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2))))
density = math.exp(-0.5 * (THETA / s) ** 2) / (s * math.sqrt(2 * math.pi))

delta = 0.05                                         # the rate itself, by finite differences
rate_slope = (np.mean(H + delta >= THETA) - np.mean(H - delta >= THETA)) / (2 * delta)
print(f"d(rate)/dc: finite differences {rate_slope:.4f}, density at theta {density:.4f}")
assert abs(rate_slope / density - 1) < (0.1 if FAST else 0.04)

# %% [markdown]
# The surrogate estimate has two kinds of error, and the width $k$ trades one for the other:
#
# - **bias**: the window averages the density over $[\theta - k/2, \theta + k/2]$; a wide
#   window gives credit to neurons far from the threshold, whose spike a small change
#   could never flip;
# - **noise**: a narrow window contains few neurons; in a batch of $B$ the estimate rests
#   on the handful that happen to fall inside it, and most neurons get no gradient at all.

# %%
ks = np.geomspace(0.01, 4.0, 13 if FAST else 25)
share, bias, noise = [], [], []
for k in ks:
    g = surrogate.window(H, THETA, k)                 # (n_batches, B) surrogate dS/dH
    per_batch = g.mean(axis=1)                        # one estimate of dr/dc per batch
    share.append(np.mean(g > 0))
    exact_mean = (Phi((THETA + k / 2) / s) - Phi((THETA - k / 2) / s)) / k
    bias.append(exact_mean / density - 1)
    noise.append(per_batch.std() / density)
share, bias, noise = map(np.array, (share, bias, noise))
total = np.hypot(bias, noise)
best = ks[np.argmin(total)]

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.4))
ax1.semilogx(ks, 100 * share, "o-")
ax1.set_xlabel("window width k")
ax1.set_ylabel("% neurons with a non-zero gradient")
ax1.set_title(rf"$H \sim N(0, {s}^2)$, $\theta = {THETA}$")
ax2.loglog(ks, np.abs(bias), "o-", label="|bias|")
ax2.loglog(ks, noise, "s-", label=f"noise (batch of {B})")
ax2.loglog(ks, total, "k--", label="total")
ax2.axvline(best, color="gray", ls=":")
ax2.set_xlabel("window width k")
ax2.set_ylabel("relative error of the estimate of dr/dc")
ax2.set_title(f"the width trade-off (best k here: {best:.2f})")
ax2.legend(fontsize=8)
savefig(fig, "02_width_tradeoff")

# %%
assert share[0] < 0.01 and noise[0] > 1.0        # too narrow: < 1 % of neurons learn, noise > 100 %
assert share[-1] > 0.9 and bias[-1] > 0.5        # too wide: everyone learns, from a 50 %+ biased signal
assert ks[0] < best < ks[-1]                     # the best width lies in between
print(f"k = {ks[0]:.2f}: {share[0]:.2%} of neurons in the window; "
      f"k = {ks[-1]:.1f}: {share[-1]:.1%}; best k for this layer {best:.2f}")

# %% [markdown]
# The best width depends on how the potentials are spread around the threshold: a fixed
# $k$ that suits one layer is too narrow or too wide for another, and the spread changes
# during training. DS-ATGO moves the threshold to where the potentials are (tutorial 5)
# and sets the width from their spread (tutorial 6).
