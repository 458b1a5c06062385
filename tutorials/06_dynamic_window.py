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
# # 6. The dynamic window: DS-ATGO's backward stage
#
# Tutorial 5 moved the threshold to where the potentials are. The surrogate window of
# tutorial 2 is centred on that threshold, but its width $k$ is still a constant. If a
# layer's potentials are concentrated (small $\sigma$), a window of width 1 covers most of
# them and gives credit to neurons that no small change could make fire; if they are
# dispersed, the same window covers only a thin slice and most neurons get no gradient.
#
# DS-ATGO's backward stage (threshold-driven gradient optimisation, TGO) sets the width
# per layer and per step from the same statistics:
#
# $$k[t] = k_0\,\bigl(1 + \tanh(z[t] - V_{th})\bigr), \qquad z[t] = f_c\,(\mu[t] + \sigma[t]) = \theta[t],
#   \qquad k_0 = 1,\ V_{th} = 1 .$$
#
# Concentrated potentials (small $z$) narrow the window, dispersed ones widen it, and
# $k$ stays in $(0, 2k_0)$, so neither extreme runs away. Like $\theta[t]$, $k[t]$ is a
# constant in the backward pass.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

from _common import FAST, savefig
from dsatgo_np import surrogate, threshold
from dsatgo_np.core.neuron import SpikeConfig, make_rule

rng = np.random.default_rng(0)
Phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))
lam = np.float64(0.2)

# %% [markdown]
# ## Eq. 7's two branches are one expression
#
# The paper writes the width with two cases: $k_0(1 + \tanh(z - V_{th}))$ when
# $z \ge V_{th}$, and $k_0(1 - \tanh(V_{th} - z))$ otherwise. Since $\tanh$ is odd,
# $-\tanh(V_{th} - z) = \tanh(z - V_{th})$, and the two cases are the same formula. The
# library implements the one formula (`dynamic_width`) and keeps the printed two-branch
# version (`dynamic_width_two_branches`) to prove it:

# %%
z = np.linspace(-2.0, 4.0, 601)
k_one = surrogate.dynamic_width(z)
k_two = np.array([surrogate.dynamic_width_two_branches(float(v)) for v in z])
assert np.allclose(k_one, k_two, rtol=0, atol=1e-15)
assert np.all((k_one > 0) & (k_one < 2)) and surrogate.dynamic_width(np.float64(1.0)) == 1.0

fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot(z, k_one, label=r"$k_0(1 + \tanh(z - V_{th}))$")
ax.plot(z[::25], k_two[::25], "o", ms=4, label="Eq. 7, two branches")
ax.axhline(2, color="gray", ls=":", lw=1)
ax.axvline(1, color="gray", ls=":", lw=1)
ax.set_xlabel(r"$z = f_c(\mu + \sigma)$")
ax.set_ylabel("window width k")
ax.set_title("dynamic width: narrow when concentrated, wide when dispersed")
ax.legend(fontsize=8)
savefig(fig, "06_width_vs_z")

# %% [markdown]
# ## The paper's Fig. 5, reproduced
#
# Model a layer's potentials as $H \sim \mathcal{N}(0, s^2)$. With the adaptive threshold,
# $\theta = \mu + \sigma = s$. A neuron gets a gradient when it lies inside the window,
# $|H - \theta| < k/2$, which happens with probability
#
# $$P_{\text{in}}(s, k) = \Phi\!\left(1 + \frac{k}{2s}\right) - \Phi\!\left(1 - \frac{k}{2s}\right).$$
#
# With a fixed window ($k = 1$) this share falls as $1/s$ once the layer spreads out; with
# the dynamic window ($k = 1 + \tanh(s - 1)$) the width grows with $s$ and the share stays
# much flatter. [docs/METHOD.md](../docs/METHOD.md) section 7 lists the six values. We compute them twice with the
# library's own functions: by integrating the Gaussian density over the region where
# `surrogate.window` is non-zero, and with the closed form above.

# %%
paper = {("fixed", 0.5): 47.72, ("fixed", 1.0): 24.17, ("fixed", 2.0): 12.10,
         ("dynamic", 0.5): 26.00, ("dynamic", 1.0): 24.17, ("dynamic", 2.0): 21.30}
M = 400_001 if FAST else 2_000_001


def share_in_window(s, k, theta):
    """P(|H - theta| < k/2) for H ~ N(0, s^2): the density integrated where window > 0."""
    h, dh = np.linspace(-12 * s, 12 * s, M, retstep=True)
    density = np.exp(-0.5 * (h / s) ** 2) / (s * math.sqrt(2 * math.pi))
    inside = surrogate.window(h, theta, k) > 0
    return float(np.sum(density[inside]) * dh)


print(f"{'s':>4} {'window':>8} {'k':>7} {'integrated':>11} {'closed form':>12} {'paper':>7}")
for (kind, s), expected in paper.items():
    theta = threshold.adaptive_threshold(np.float64(0.0), np.float64(s))   # mu + sigma = s
    k = surrogate.dynamic_width(theta) if kind == "dynamic" else np.float64(1.0)
    integrated = 100 * share_in_window(s, k, theta)
    closed = 100 * (Phi(1 + k / (2 * s)) - Phi(1 - k / (2 * s)))
    print(f"{s:>4} {kind:>8} {float(k):7.4f} {integrated:10.4f}% {closed:11.4f}% {expected:6.2f}%")
    assert abs(integrated - expected) < 0.01 and abs(closed - expected) < 0.006

# %% [markdown]
# ## Share of neurons inside the window as the layer spreads
#
# Now measured rather than modelled: for each spread $s$ we sample a layer of potentials
# $H \sim \mathcal{N}(0, s^2)$, let each method's rule (`make_rule`) measure its threshold
# and width from it exactly as in training, and count the neurons inside the window.
# The four methods of docs/METHOD.md section 5 (MPD-AGL needs a BatchNorm scale, and is left out):
#
# | method | threshold | width |
# |---|---|---|
# | `vanilla` | $V_{th} = 1$ | $k_0 = 1$ |
# | `at` | $\mu + \sigma$ | $k_0 = 1$ |
# | `tgo` | $V_{th} = 1$ | dynamic, from the measured $z$ |
# | `ds-atgo` | $\mu + \sigma$ | dynamic |

# %%
spreads = np.geomspace(0.25, 4.0, 13 if FAST else 33)
n = 50_000 if FAST else 400_000
methods = ("vanilla", "at", "tgo", "ds-atgo")
share = {m: [] for m in methods}
for s in spreads:
    H = rng.normal(0.0, s, n)
    for m in methods:
        step = make_rule(SpikeConfig(method=m), lam, training=True)(H, 0)   # theta[t], k[t]
        share[m].append(100 * np.mean(surrogate.window(H, step.theta, step.k) > 0))
share = {m: np.array(v) for m, v in share.items()}

fig, ax = plt.subplots(figsize=(6.2, 3.6))
for m, style in zip(methods, ("s-", "^-", "v-", "o-")):
    ax.semilogx(spreads, share[m], style, ms=4, label=m)
ax.axvspan(0.5, 2.0, color="gray", alpha=0.1, lw=0)
ax.set_xticks([0.25, 0.5, 1, 2, 4], ["0.25", "0.5", "1", "2", "4"])
ax.minorticks_off()
ax.set_xlabel("spread s of the potentials, H ~ N(0, s²)")
ax.set_ylabel("% neurons inside the gradient window")
ax.set_title("who gets a gradient")
ax.legend(fontsize=8)
savefig(fig, "06_share_in_window")

# %%
mid = (spreads >= 0.5) & (spreads <= 2.0)
span = {m: np.ptp(share[m][mid]) for m in methods}
print("range of the share over s in [0.5, 2] (points):", {m: round(float(v), 1) for m, v in span.items()})
assert span["ds-atgo"] < 8 < 30 < span["at"]          # the dynamic window keeps the share flat
assert share["vanilla"][0] < 5                         # fixed threshold, concentrated layer: no gradient

# %% [markdown]
# Two failures of fixed choices are visible. `vanilla` fails at the left: a concentrated
# layer never reaches the threshold at 1, so almost no neuron is near it (and, tutorial 5,
# almost none fires). `at` fixes the threshold but over-covers concentrated layers and
# under-covers dispersed ones. `ds-atgo` keeps the share between roughly 21 % and 26 %
# across a factor of four in spread (shaded): in that range every layer hands gradients
# to about the same share of its neurons, whatever its scale. Outside it the share drifts
# again, more slowly than with a fixed window: $k$ cannot grow past $2k_0$, and for a
# zero-mean layer it cannot shrink below $k_0(1 + \tanh(-V_{th})) = 0.24$.
#
# ## Eq. 7 or the released code?
#
# The paper's Eq. 7 feeds the adaptive threshold into the width,
# $z = f_c(\mu + \sigma)$ (the library's default, `width="threshold"`). The authors'
# released code feeds the standard deviation alone, $z = \sigma$ (`width="std"`). When
# $\mu = 0$ and $f_c = 1$ the two are the same number; otherwise they differ, and a
# positive mean widens Eq. 7's window but not the released code's.

# %%
print(f"{'mu':>5} {'f_c':>5} {'k, Eq. 7':>9} {'k, released':>12}")
base = rng.normal(0.0, 0.8, 100_000)
base -= base.mean()                                     # mean 0 up to round-off
for mu, f_c in [(0.0, 1.0), (0.5, 1.0), (0.0, 1.3), (-0.4, 1.0)]:
    H = base + mu
    k = {w: make_rule(SpikeConfig(method="ds-atgo", width=w, f_c=f_c), lam, True)(H, 0).k
         for w in ("threshold", "std")}
    print(f"{mu:>5} {f_c:>5} {float(k['threshold']):9.4f} {float(k['std']):12.4f}")
    if mu == 0.0 and f_c == 1.0:
        assert np.isclose(k["threshold"], k["std"], rtol=0, atol=1e-12)
    else:
        assert abs(k["threshold"] - k["std"]) > 0.05
    # the released code's width is the library formula applied to sigma alone
    assert np.isclose(k["std"], surrogate.dynamic_width(np.std(H, ddof=1)), rtol=1e-12)

# %% [markdown]
# Inside a network the potentials that reach a spiking layer come out of BatchNorm and
# are close to zero-mean at first, so the two choices start out alike; BatchNorm's
# learned shift and the neuron's memory move $\mu$ away from 0 during training, and then
# they part. The project offers both and defaults to the paper's equation.
