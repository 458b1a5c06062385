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
# # 9. The ablation in miniature
#
# **Full mode takes a few minutes** (about 2 on two CPU cores: 5 methods x 3 seeds, each
# 2 epochs of a 10,000-image MNIST subset; MNIST is downloaded on first use, tutorial 8).
# With `DSATGO_FAST=1` it uses the offline digits set and 2 seeds, and runs in seconds.
#
# The paper's ablation (its Fig. 7, [docs/METHOD.md](../docs/METHOD.md) section 7) switches DS-ATGO's two stages on
# and off: **AT and TGO each beat vanilla, TGO more than AT, and both together are best**,
# +1.71 points on CIFAR-10 (+2.30 on CIFAR10-DVS) with a SEW-ResNet19 trained for
# hundreds of epochs. Here the same five methods (docs/METHOD.md section 5) train with one
# small, identical budget:
#
# | method | forward threshold $\theta[t]$ | surrogate width $k[t]$ |
# |---|---|---|
# | `vanilla` | $V_{th} = 1$ | $k_0 = 1$ |
# | `at` | $\mu[t] + \sigma[t]$ | $k_0$ |
# | `tgo` | $V_{th} = 1$ | $k_0 (1 + \tanh(\mu[t] + \sigma[t] - V_{th}))$, window centred on $V_{th}$ |
# | `ds-atgo` | $\mu[t] + \sigma[t]$ | $k_0 (1 + \tanh(\theta[t] - V_{th}))$ |
# | `mpd-agl` | $V_{th} = 0.5$ | $2 g V_{th}$ at $t = 1$, $2\sqrt{1 + \lambda^2}\, g V_{th}$ after ($g$: mean BN scale) |
#
# What can a tiny run show? What each method *does* (thresholds, widths, firing rates)
# is visible at any scale, and we assert it. Who *wins* is another matter: we measure the
# seed-to-seed spread and compare.

# %%
import json
import math
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np

import dsatgo_np as dn
from _common import FAST, FIGURES, IN_NOTEBOOK, savefig
from dsatgo_np import data, diagnostics, train
from dsatgo_np.diagnostics import plots

METHODS = ("vanilla", "at", "tgo", "ds-atgo", "mpd-agl")
THEOREM1 = diagnostics.THEOREM1_RATE                  # 1 - Phi(1) = 0.158655
PAPER = {                                             # docs/METHOD.md section 7 (CIFAR-10, SEW-ResNet19)
    "vanilla": "baseline",
    "at": "beats vanilla",
    "tgo": "beats vanilla, by more than AT",
    "ds-atgo": "best: +1.71 points over vanilla",
    "mpd-agl": "earlier method, not in the ablation",
}


def show(path):
    """The library's plot functions save a PNG; in a notebook, also show it."""
    if IN_NOTEBOOK:
        from IPython.display import Image, display
        display(Image(filename=path))


# %% [markdown]
# ## One budget for everyone
#
# Same network, data, batches, learning-rate schedule and number of steps; only `method`
# changes. `seed` changes both the initial weights and the order of the batches, so the
# spread over seeds is the noise any difference between methods has to rise above.

# %%
if FAST:
    budget = dict(dataset="digits", hidden=[128, 128], epochs=3, train_subset=0, diag_every=2)
    seeds = (0, 1)
else:
    budget = dict(dataset="mnist", hidden=[512, 512], epochs=2, train_subset=10_000, diag_every=10)
    seeds = (0, 1, 2)
T = 4
workdir = tempfile.TemporaryDirectory(prefix="dsatgo_09_")   # removed when Python exits
runs = {}                                                    # (method, seed) -> run folder
for method in METHODS:
    for seed in seeds:
        cfg = train.Config(**budget, T=T, method=method, seed=seed, plots=False,
                           out=os.path.join(workdir.name, f"{method}-{seed}"))
        s = train.fit(cfg, verbose=False, progress=False)
        runs[method, seed] = s["run"]
        print(f"{method:>8}, seed {seed}: test accuracy {100 * s['test_acc']:.2f} %, "
              f"{s['wall_time_s']:.1f} s")

# %% [markdown]
# ## The table
#
# From each run's last row of `metrics.jsonl`: test accuracy, and the firing rate and
# gradient-available share averaged over the layers (and the steps and batches of the last
# epoch). Accuracy is given as mean $\pm$ standard deviation over the seeds.

# %%
last = {key: [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))][-1]
        for key, run in runs.items()}
acc = {m: 100 * np.array([last[m, s]["test_acc"] for s in seeds]) for m in METHODS}          # (seeds,), %
rate = {m: 100 * np.mean([last[m, s]["firing_rate"] for s in seeds]) for m in METHODS}       # %
share = {m: 100 * np.mean([last[m, s]["grad_share"] for s in seeds]) for m in METHODS}       # %
diag = {m: last[m, seeds[0]]["diagnostics"] for m in METHODS}                                 # seed 0
layer_names = list(diag["vanilla"])

print(f"{data.dataset_label(budget['dataset'])}, mlp hidden {budget['hidden']}, T = {T}, "
      f"{budget['epochs']} epochs, {len(seeds)} seeds\n")
print(f"{'method':>8} | {'the paper says':<36} | {'accuracy %':>14} | {'vs vanilla':>10} | "
      f"{'seeds':<23} | {'rate %':>6} | {'in window %':>11}")
for m in METHODS:
    d = acc[m].mean() - acc["vanilla"].mean()
    print(f"{m:>8} | {PAPER[m]:<36} | {acc[m].mean():6.2f} +- {acc[m].std(ddof=1):4.2f} | "
          f"{d:+10.2f} | {' '.join(f'{a:6.2f}' for a in acc[m]):<23} | {rate[m]:6.2f} | {share[m]:11.2f}")

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
x = np.arange(len(METHODS))
colors = [f"C{i}" for i in range(len(METHODS))]
means = np.array([acc[m].mean() for m in METHODS])
stds = np.array([acc[m].std(ddof=1) for m in METHODS])
axes[0].bar(x, means, yerr=stds, color=colors, alpha=0.7, capsize=4)
for i, m in enumerate(METHODS):
    axes[0].plot(np.full(len(seeds), i), acc[m], "k.", ms=5)
lo = min(a.min() for a in acc.values())
axes[0].set_ylim(lo - 1.5, min(100, max(a.max() for a in acc.values()) + 1.0))
axes[0].set_ylabel("test accuracy (%)")
axes[0].set_title(f"accuracy: mean +- std, dots = {len(seeds)} seeds")
axes[1].bar(x, [rate[m] for m in METHODS], color=colors, alpha=0.7)
axes[1].axhline(100 * THEOREM1, color="k", ls="--", lw=1, label="Theorem 1: 15.87 %")
axes[1].set_ylabel("firing rate (%)")
axes[1].set_title("firing rate, mean over layers")
axes[1].legend(fontsize=8)
axes[2].bar(x, [share[m] for m in METHODS], color=colors, alpha=0.7)
axes[2].set_ylabel("inside |H - theta| < k/2 (%)")
axes[2].set_title("gradient-available share")
for ax in axes:
    ax.set_xticks(x, METHODS, rotation=20)
    ax.grid(axis="y", alpha=0.3)
savefig(fig, "09_ablation")
show(plots.plot_firing_rates(diag, FIGURES / "09_firing_rates_per_layer.png"))

# %%
for m in METHODS:                                  # every method learns: chance is 10 %
    assert acc[m].min() > 85, (m, acc[m])

# %% [markdown]
# ## What the numbers can and cannot say
#
# The paper's ordering comes from CIFAR-10 on a 19-layer residual network trained for
# 400 epochs, where the layers' statistics drift far from where BatchNorm starts them and
# the fixed threshold and window fit badly. Our network has two spiking layers whose tdBN
# holds $H[1]$ near $\mathcal N(0, 1)$: there the fixed threshold $V_{th} = 1$ already
# equals $\mu + \sigma$ and the dynamic width $1 + \tanh(\theta - 1)$ is close to $k_0 = 1$
# (tutorial 8). So AT and TGO have little to correct here, and the question is whether the
# accuracy differences between the four ablation methods rise above the differences
# between seeds of one method. The numbers:

# %%
ablation = ("vanilla", "at", "tgo", "ds-atgo")
gap = max(acc[m].mean() for m in ablation) - min(acc[m].mean() for m in ablation)
noise = max(acc[m].std(ddof=1) for m in ablation)
best = max(ablation, key=lambda m: acc[m].mean())
order = sorted(ablation, key=lambda m: -acc[m].mean())
print(f"largest gap between the four ablation methods' means: {gap:.2f} points")
print(f"largest seed-to-seed standard deviation of one method:  {noise:.2f} points")
print(f"standard error of a {len(seeds)}-seed mean: about {noise / math.sqrt(len(seeds)):.2f} points, "
      f"of a difference of two such means about {noise * math.sqrt(2 / len(seeds)):.2f}")
print(f"order measured here: {' > '.join(order)} (the paper: ds-atgo > tgo > at > vanilla)")
print(f"DS-ATGO vs vanilla: {acc['ds-atgo'].mean() - acc['vanilla'].mean():+.2f} points here, "
      f"+1.71 in the paper")
verdict = "within" if gap < 3 * noise * math.sqrt(2 / len(seeds)) else "beyond"
print(f"-> the gap is {verdict} three standard errors of a difference: "
      f"{'seed noise can explain it' if verdict == 'within' else 'more than seed noise'}")

# %% [markdown]
# Read the order above as a draw from noise unless the gap is several times the standard
# error of a difference; reproducing the paper's ordering needs its scale (deep network,
# CIFAR-10, hundreds of epochs, several seeds), which the `experiments/` runner and a GPU
# are for. So this tutorial asserts no winner. `mpd-agl` stands apart for a plain reason:
# its threshold is 0.5, so it fires about twice as often.
#
# ## What the methods do, which is robust
#
# Behaviour is another matter: it does not depend on the scale. Load each method's
# seed-0 network with `dn.load`, run one training-mode forward pass on 500 test images,
# and check the table above (docs/METHOD.md section 5) by hand, per layer and per step,
# from the measured $\mu[t]$, $\sigma[t]$ and the BatchNorm scale $g$:

# %%
x_test, _ = data.load(budget["dataset"], "test")
x_probe = data.normalize(x_test[:500], budget["dataset"])


lam, v_th, k0 = 0.2, 1.0, 1.0
for m in METHODS:
    net = dn.load(os.path.join(runs[m, seeds[0]], "last.npz")).train()   # measured thresholds
    net.forward(dn.encode.direct(x_probe, T))
    stats = diagnostics.collect(net)
    for name, layer in diagnostics.spiking_layers(net):
        st = stats[name]
        z = st["mean"] + st["std"]                     # mu[t] + sigma[t], measured, f_c = 1
        if m == "vanilla":
            theta, k = np.full(T, v_th), np.full(T, k0)
        elif m == "at":
            theta, k = z, np.full(T, k0)
        elif m == "tgo":
            theta, k = np.full(T, v_th), k0 * (1 + np.tanh(z - v_th))
        elif m == "ds-atgo":
            theta, k = z, k0 * (1 + np.tanh(z - v_th))
        else:                                          # mpd-agl
            g = layer.scale_from._params["weight"].data.mean()
            theta = np.full(T, 0.5)
            k = np.array([2 * g * 0.5] + [2 * math.sqrt(1 + lam ** 2) * g * 0.5] * (T - 1))
        assert np.allclose(st["theta"], theta, rtol=1e-4), (m, name, st["theta"], theta)
        assert np.allclose(st["k"], k, rtol=1e-4), (m, name, st["k"], k)
    print(f"{m:>8}: theta[t], k[t] as the table says in all {len(stats)} layers; "
          f"{name}: theta {np.round(st['theta'], 3)}, k {np.round(st['k'], 3)}")

# %% [markdown]
# And in the logged averages of every seed: the adaptive methods fire near Theorem 1's
# 15.87 % and hold that rate over the steps, where the fixed threshold zig-zags
# (tutorial 8 explains why); the dynamic-width methods move their window away from $k_0$;
# the others keep exactly $k_0$; MPD-AGL fires about twice as often.

# %%
def step_spread(m, s):                                # range of the per-step rates, in points
    return max(np.ptp(st["firing_rate"]) for st in last[m, s]["diagnostics"].values()) * 100


for s in seeds:
    for m in METHODS:
        d = last[m, s]["diagnostics"]
        if m in ("at", "ds-atgo"):
            for name, st in d.items():                 # measured: within 1.8 (MNIST), 3.1 (digits)
                assert abs(st["firing_rate_mean"] - THEOREM1) < 0.035, (m, s, name, st["firing_rate_mean"])
            assert step_spread(m, s) < 0.5 * step_spread("vanilla", s)
        if m in ("vanilla", "at"):
            assert all(kk == k0 for st in d.values() for kk in st["k"])
        if m in ("tgo", "ds-atgo"):
            assert max(abs(kk - k0) for st in d.values() for kk in st["k"]) > 0.02
        if m == "mpd-agl":
            assert last[m, s]["firing_rate"] > 1.5 * last["vanilla", s]["firing_rate"]
print("per-step spread of the firing rate (points, seed 0):",
      {m: round(float(step_spread(m, seeds[0])), 2) for m in METHODS})
print(f"k[t] of the last spiking layer, {layer_names[-1]} (seed 0):", {m: np.round(diag[m][layer_names[-1]]["k"], 3).tolist()
                                          for m in METHODS})
