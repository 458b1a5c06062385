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
# # 4. Gradient checking: how to trust a hand-written backward pass
#
# Every backward pass in `dsatgo_np` is written by hand, so every one can be wrong in a
# way that still trains, only worse. The defence is old and simple: compare with finite
# differences. This tutorial shows the tool (`dsatgo_np.gradcheck`), and the four things
# that make it work on spiking networks: float64, vector-Jacobian products, staying off
# kinks, and holding the thresholds fixed. It ends by planting a bug and watching the
# check catch it.

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np

from _common import savefig
from dsatgo_np import layers
from dsatgo_np.gradcheck import GradientCheckError, check_backward, numerical_vjp, rel_error
from dsatgo_np.core.neuron import SpikeConfig, lif_backward, lif_forward, make_rule, replay_rule

rng = np.random.default_rng(0)

# %% [markdown]
# ## What a backward pass computes: a vector-Jacobian product
#
# A layer maps $x$ to $y = f(x)$. Its backward pass receives $\bar y = dL/dy$ and returns
# $dL/dx = J^\top \bar y$, with $J = \partial y / \partial x$. The Jacobian itself is never
# formed (for a layer of $T \cdot B \cdot N$ neurons it would have $(TBN)^2$ entries). The
# numerical version perturbs one entry of $x$ at a time and measures the change of the
# scalar $\sum y \cdot \bar y$:
#
# $$\left(J^\top \bar y\right)_i \approx
#   \frac{\sum f(x + \epsilon e_i)\,\bar y - \sum f(x - \epsilon e_i)\,\bar y}{2\epsilon}$$
#
# That costs two forward passes per input entry: fine for the small inputs of a check.
# Errors are measured relative to the size of the gradients,
# $\max_i |a_i - n_i| / (|a_i| + |n_i|)$ (`rel_error`), because an absolute error means
# nothing without a scale.
#
# A first check on the linear layer $y = x W^\top$:

# %%
x = rng.normal(size=(6, 4))
w = rng.normal(size=(3, 4))
dy = rng.normal(size=(6, 3))
y, cache = layers.linear_forward(x, w)
dx, grads = layers.linear_backward(dy, cache)

x_before = x.copy()
dx_num = numerical_vjp(lambda x: layers.linear_forward(x, w)[0], x, dy)
assert np.array_equal(x, x_before)                 # the checker perturbs a private copy
print(f"linear, dL/dx: relative error {rel_error(dx, dx_num):.1e}")

errors = check_backward(lambda x, weight: layers.linear_forward(x, weight)[0],
                        {"x": x, "weight": w}, dy, {"x": dx, "weight": grads["weight"]})
print("check_backward:", {k: f"{v:.1e}" for k, v in errors.items()})

# %% [markdown]
# ## Why float64
#
# A central difference has two errors. Truncation, from the curvature of $f$, shrinks
# like $\epsilon^2$. Round-off grows like $u\,|f| / \epsilon$, where $u$ is the unit
# round-off of the number format: $u \approx 6 \cdot 10^{-8}$ in float32,
# $1.1 \cdot 10^{-16}$ in float64. Dividing a difference of two nearly equal float32
# numbers by $2\epsilon = 2 \cdot 10^{-6}$ amplifies that round-off a million-fold.
#
# We check the spiking layer in smooth mode (tutorial 3) at several $\epsilon$, once with
# every array in float32 and once in float64, against the float64 backward pass.
# `numerical_vjp` refuses float32 outright, so the float32 differences are written out here.

# %%
T, B, N = 4, 3, 5
lam = np.float64(0.2)
vanilla = make_rule(SpikeConfig(method="vanilla"), lam, training=True)   # theta = 1, k = 1
X = rng.normal(0.6, 0.6, (T, B, N))
dS = rng.normal(size=(T, B, N))
_, cache = lif_forward(X, lam, vanilla, smooth=True)
dX, _ = lif_backward(dS, cache)
margin = np.min(np.abs(np.abs(cache.H - 1.0) - 0.5))   # distance of any H to a kink
print(f"closest potential to a kink: {margin:.1e}")


def fd(X, eps, dtype):
    """Central differences of sum(S * dS) with every array cast to dtype."""
    Xd, dSd, lamd = X.astype(dtype), dS.astype(dtype), dtype(0.2)
    rule = make_rule(SpikeConfig(method="vanilla"), lamd, training=True)
    out = np.zeros_like(X)
    for i in np.ndindex(X.shape):
        Xp, Xm = Xd.copy(), Xd.copy()
        Xp[i] += dtype(eps)
        Xm[i] -= dtype(eps)
        fp = np.sum(lif_forward(Xp, lamd, rule, smooth=True)[0] * dSd)
        fm = np.sum(lif_forward(Xm, lamd, rule, smooth=True)[0] * dSd)
        out[i] = (float(fp) - float(fm)) / (2 * eps)
    return out


eps_grid = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]
err = {dt: [rel_error(dX, fd(X, e, dt)) for e in eps_grid] for dt in (np.float32, np.float64)}
print("relative error of the finite differences, by step size:")
print(f"{'step':>8}", " ".join(f"{e:>7.0e}" for e in eps_grid))
for dt, errs in err.items():
    print(f"{dt.__name__:>8}", " ".join(f"{e:>7.0e}" for e in errs))

fig, ax = plt.subplots(figsize=(6, 3.5))
for dt, errs in err.items():
    ax.loglog(eps_grid, errs, "o-", label=dt.__name__)
ax.axvline(1e-6, color="gray", ls=":", label=r"$\epsilon = 10^{-6}$ (the default)")
ax.axhline(1e-6, color="k", ls="--", lw=1, label="tolerance of check_backward")
ax.set_xlabel(r"finite-difference step $\epsilon$")
ax.set_ylabel("relative error vs backward")
ax.set_title("float32 cannot check a gradient at small steps")
ax.legend(fontsize=8)
savefig(fig, "04_float32_vs_float64")

# %%
i6 = eps_grid.index(1e-6)
TOLERANCE = inspect.signature(check_backward).parameters["tol"].default   # 1e-6
below = TOLERANCE / err[np.float64][i6]
best32 = min(err[np.float32])
print(f"float64 at the default step 1e-06: {err[np.float64][i6]:.1e}, {below:.0f} times below the "
      f"tolerance {TOLERANCE:.0e}")
print(f"float32: best {best32:.0e} (step {eps_grid[err[np.float32].index(best32)]:.0e}), "
      f"{err[np.float32][i6]:.0e} at the default step")
assert err[np.float32][i6] > 1e-3 > 1e-7 > err[np.float64][i6] and below > 100
try:
    numerical_vjp(lambda X: X, X.astype(np.float32), dS.astype(np.float32))
    raise AssertionError("numerical_vjp accepted float32")
except TypeError as e:
    print("numerical_vjp on float32:", e)

# %% [markdown]
# Both curves fall while truncation dominates (the smooth neuron is not linear: the reset
# $V = H(1 - S)$ multiplies two functions of $H$) and rise once round-off takes over. In
# float64 the bottom of the V lies near $10^{-10}$, and at the default
# $\epsilon = 10^{-6}$ the error is still far below the tolerance (by the factor printed
# above, more than a hundred); in float32 even the best step stays far above it (printed
# above too) and the default step gives noise. That is the library's
# rule: *train in float32, check gradients in float64*. (Steps larger than the distance
# to the nearest kink, printed above, would add a third error: see the next section.)
#
# ## Kinks
#
# The smooth spike $p(H) = \mathrm{clip}((H - \theta)/k + 1/2, 0, 1)$ has two corners, at
# $\theta \pm k/2$. There the left and right slopes differ ($0$ and $1/k$), and a central
# difference straddling the corner returns their average, or any blend of them if the
# corner lies anywhere within $\epsilon$ of the input. The backward pass, using the open
# window $|H - \theta| < k/2$, says $0$ at the corner. Neither is wrong, but they disagree,
# and a check run there fails for no fault of the code.
#
# One neuron, one step, $\theta = 1$, $k = 1$: the upper corner is at $X = 1.5$.

# %%
def one_step(x_value):
    X1 = np.array([[x_value]])                          # (T=1, B=1)
    _, c1 = lif_forward(X1, lam, vanilla, smooth=True)
    d1 = np.ones((1, 1))
    dX1, _ = lif_backward(d1, c1)
    f = lambda X: lif_forward(X, lam, vanilla, smooth=True)[0]
    return check_backward(f, {"X": X1}, d1, {"X": dX1})


for x_value in (1.5, 1.5 + 5e-7, 1.5 + 1e-3, 1.2):
    try:
        one_step(x_value)
        print(f"X = {x_value!r:<20} passes")
        assert abs(x_value - 1.5) > 1e-6, "a check on a kink should not pass"
    except GradientCheckError as e:
        print(f"X = {x_value!r:<20} fails: {str(e).splitlines()[1].strip()}")
        assert abs(x_value - 1.5) <= 1e-6, "a check away from the kinks should pass"

# %% [markdown]
# A random input lands within $\epsilon$ of a corner with probability of order
# $\epsilon \times$ (number of potentials) $\times$ (density), small but not zero in a
# large test suite; and a single step can move later potentials onto corners too. So the
# library's tests build inputs away from the corners and assert a margin, as we did above
# with `margin`.
#
# ## Why thresholds and widths are held fixed
#
# DS-ATGO's threshold is measured from the layer: $\theta[t] = f_c(\mu[t] + \sigma[t])$.
# Perturb one input and $\mu$, $\sigma$ and therefore $\theta$ and $k$ move too. The
# finite difference sees that motion; the backward pass, by design ([docs/METHOD.md](../docs/METHOD.md) section 3),
# does not: it treats $\theta$ and $k$ as constants. So a check with the live rule fails,
# and it should. To check what the backward pass claims to compute, replay the thresholds
# and widths that the forward pass recorded: `replay_rule(cache.theta, cache.k)`.

# %%
rule = make_rule(SpikeConfig(method="ds-atgo"), lam, training=True)
_, cache = lif_forward(X, lam, rule, smooth=True)
dX, _ = lif_backward(dS, cache)
live = lambda X: lif_forward(X, lam, rule, smooth=True)[0]
replay = replay_rule(cache.theta, cache.k)
frozen = lambda X: lif_forward(X, lam, replay, smooth=True)[0]
print("thresholds of the forward pass:", np.round(cache.theta, 3), " widths:", np.round(cache.k, 3))

try:
    check_backward(live, {"X": X}, dS, {"X": dX})
    raise AssertionError("the live adaptive rule should not pass: theta is not differentiated")
except GradientCheckError as e:
    print("live rule:     fails,", str(e).splitlines()[1].strip())
errors = check_backward(frozen, {"X": X}, dS, {"X": dX})
print(f"replayed rule: passes, relative error {errors['X']:.1e}")

# %% [markdown]
# The library can also let the gradient flow through the threshold, an extension beyond
# the paper (`SpikeConfig(threshold_grad=True)`, using
# $\partial\mu/\partial H_i = 1/N$ and $\partial\sigma/\partial H_i = (H_i - \mu)/((N-1)\sigma)$).
# With the `"at"` method (adaptive threshold, fixed width) the backward pass is then the
# full derivative, and the check with the **live** rule passes:

# %%
rule_at = make_rule(SpikeConfig(method="at"), lam, training=True)
_, cache_at = lif_forward(X, lam, rule_at, smooth=True, threshold_grad=True)
dX_at, _ = lif_backward(dS, cache_at)
errors = check_backward(lambda X: lif_forward(X, lam, rule_at, smooth=True)[0], {"X": X}, dS, {"X": dX_at})
print(f"'at' with threshold_grad, live rule: relative error {errors['X']:.1e}")

# %% [markdown]
# ## A planted bug
#
# A checker that never fails proves nothing. Scale the true gradient by 1.01, the kind
# of slip a wrong constant makes, and the check must raise `GradientCheckError`. The
# relative error of a 1 % bug is about $0.01 / 2.01 = 0.005$, far above the tolerance of
# $10^{-6}$.

# %%
def buggy_lif_backward(dS, cache):
    dX, dlam = lif_backward(dS, cache)
    return 1.01 * dX, dlam


dX_bug, _ = buggy_lif_backward(dS, cache)
try:
    check_backward(frozen, {"X": X}, dS, {"X": dX_bug})
    raise AssertionError("a 1 % gradient error went unnoticed")
except GradientCheckError as e:
    print("planted 1 % bug caught:\n ", str(e).splitlines()[1].strip())
assert abs(rel_error(dX_bug, dX) - 0.01 / 2.01) < 1e-9
assert check_backward(frozen, {"X": X}, dS, {"X": dX})["X"] < 1e-6    # the real one passes
