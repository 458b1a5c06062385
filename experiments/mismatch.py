"""Where a fixed threshold fails: controlled experiments that move the membrane potentials.

DS-ATGO's adaptive threshold theta[t] = mu[t] + sigma[t] follows the potentials H[t] wherever
they are; a fixed threshold V_th = 1 (vanilla, TGO) or 0.5 (MPD-AGL) meets them only where tdBN
puts them, H ~ N(0, 1). These experiments move the potentials' scale with one knob at a time,
on plain (non-residual) spiking MLPs (dsatgo_np.models.plain_mlp), for the five methods and
three seeds each (five for the tdBN scale on MNIST):

    scale  tdBN's initial scale alpha * V_th in 1/8 .. 8 (H[0] ~ N(0, alpha^2) at the start)
    gain   no BatchNorm; a factor on the initial weights in 1/8 .. 8
    depth  2 .. 16 spiking layers, with and without tdBN
    T      2 .. 16 time steps

    python experiments/run.py mismatch-scale-mnist      # or any name of EXPERIMENTS below
    python experiments/mismatch.py mismatch-scale-mnist # the same

Each run is small (a fixed random 10,000-image training subset, one epoch, the full 10,000 test
images; seconds to a minute on one core) and writes runs/experiments/<experiment>/<label>-s<seed>/
config.json, metrics.jsonl (one row: test accuracy, diagnostics of the last epoch's training
batches per layer and per step, and of the very first batch, before any update) and
machine.json, the layout experiments/report.py reads. The statistics used by the report
(confidence intervals over seeds, Welch's t-test) are here too; the tables and figures built
from them are in experiments/mismatch_report.py.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings

import numpy as np

ROOT = os.path.join("runs", "experiments")
METHODS = ("vanilla", "at", "tgo", "ds-atgo", "mpd-agl")
SEEDS = (0, 1, 2)
MORE_SEEDS = (0, 1, 2, 3, 4)       # the main sweep (tdBN scale on MNIST)
KNOB_VALUES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
DEPTHS = (2, 4, 8, 16)
STEPS = (2, 4, 8, 16)

# One budget for every run (then changed by one knob): plain MLP, 128 neurons per spiking layer,
# 4 spiking layers, tdBN at its usual scale 1, T = 4; SGD with momentum, cosine schedule.
BASE = dict(dataset="mnist", depth=4, hidden=128, T=4, bn=True, bn_scale=1.0, init_gain=1.0,
            train_subset=10_000, test_subset=0, epochs=1, batch_size=64, lr=0.05, momentum=0.9,
            diag_every=5)
# What "trains" means in the range tables: every seed's test accuracy at least this (two levels).
REACH = {"mnist": (0.90, 0.80), "fashion-mnist": (0.75, 0.65), "digits": (0.5, 0.3)}

# Each experiment: its knob (what the report puts on the x axis) and its runs
# (label, options, seed), one label per method and knob value.
KNOBS = {}


def _runs(name, knob, values, opts_of, variants=(("", {}),), seeds=SEEDS):
    runs = []
    for suffix, extra in variants:
        for v in values:
            for m in METHODS:
                for s in seeds:
                    label = f"{m}_{knob}{v:g}{suffix}"
                    runs.append((label, dict(BASE, **extra, **opts_of(v), method=m,
                                             knob=knob, value=v, variant=suffix.lstrip("-")), s))
    KNOBS[name] = knob
    return runs


NO_BN = dict(bn=False)
EXPERIMENTS = {}
for ds, tag in (("mnist", "mnist"), ("fashion-mnist", "fmnist")):
    EXPERIMENTS[f"mismatch-scale-{tag}"] = _runs(
        f"mismatch-scale-{tag}", "scale", KNOB_VALUES, lambda v, ds=ds: dict(dataset=ds, bn_scale=v),
        seeds=MORE_SEEDS if ds == "mnist" else SEEDS)
    EXPERIMENTS[f"mismatch-gain-{tag}"] = _runs(
        f"mismatch-gain-{tag}", "gain", KNOB_VALUES,
        lambda v, ds=ds: dict(dataset=ds, bn=False, init_gain=v))
EXPERIMENTS["mismatch-depth-mnist"] = _runs(
    "mismatch-depth-mnist", "depth", DEPTHS, lambda v: dict(depth=int(v)),
    variants=(("-bn", {}), ("-nobn", NO_BN)))
EXPERIMENTS["mismatch-T-mnist"] = _runs("mismatch-T-mnist", "T", STEPS, lambda v: dict(T=int(v)))
# A plain CNN (4 conv3x3 spiking layers of 8 channels, average pooling after the first two) on a
# smaller budget, since a convolution costs far more on a CPU: 3,000 training images, a fixed
# random 2,000 of the test images, three tdBN scales.
CNN = dict(model="cnn", channels=8, train_subset=3_000, test_subset=2_000)
EXPERIMENTS["mismatch-scale-cnn-mnist"] = _runs(
    "mismatch-scale-cnn-mnist", "scale", (0.25, 1.0, 4.0), lambda v: dict(CNN, bn_scale=v))

SMOKE = dict(dataset="digits", hidden=16, train_subset=300, test_subset=100, batch_size=50,
             diag_every=1)


# --- one run -------------------------------------------------------------------------------------

_DATA = {}


def load_data(dataset, train_subset, test_subset):
    """Normalised (xtr, ytr, xte, yte), cached per process. The training subset is the fixed
    random one train.load_data takes (rng 0), so every run sees the same images."""
    import dsatgo_np as dn
    key = (dataset, train_subset, test_subset)
    if key not in _DATA:
        xtr, ytr = dn.data.load(dataset, "train")
        xte, yte = dn.data.load(dataset, "test")
        if train_subset:
            keep = np.sort(np.random.default_rng(0).permutation(len(ytr))[:train_subset])
            xtr, ytr = xtr[keep], ytr[keep]
        if test_subset:
            keep = np.sort(np.random.default_rng(1).permutation(len(yte))[:test_subset])
            xte, yte = xte[keep], yte[keep]
        _DATA[key] = (dn.data.normalize(xtr, dataset), ytr, dn.data.normalize(xte, dataset), yte)
    return _DATA[key]


def build(opts, seed, in_shape, n_classes):
    from dsatgo_np import models
    if opts.get("model", "mlp") == "cnn":
        return models.plain_cnn(opts["depth"], opts["channels"], in_shape=tuple(in_shape),
                                T=opts["T"], bn=opts["bn"], bn_scale=opts["bn_scale"],
                                init_gain=opts["init_gain"], n_classes=n_classes,
                                method=opts["method"], seed=seed)
    in_features = int(np.prod(in_shape))
    return models.plain_mlp(opts["depth"], opts["hidden"], T=opts["T"], bn=opts["bn"],
                            bn_scale=opts["bn_scale"], init_gain=opts["init_gain"],
                            in_features=in_features, n_classes=n_classes,
                            method=opts["method"], seed=seed)


def compact(stats):
    """The per-layer diagnostics a report needs, as plain JSON (per-step lists of length T)."""
    keys = ("firing_rate", "grad_share", "mean", "std", "theta", "k")
    return {name: {**{k: [float(v) for v in np.atleast_1d(st[k])] for k in keys},
                   "firing_rate_mean": float(st["firing_rate_mean"]),
                   "grad_share_mean": float(st["grad_share_mean"])}
            for name, st in stats.items()}


def evaluate(net, x, y, T, batch=1000):
    """Test accuracy in eval mode (running BN statistics and running thresholds)."""
    import dsatgo_np as dn
    net.eval()
    correct = 0
    for i in range(0, len(y), batch):
        out = net.forward(dn.encode.direct(x[i:i + batch], T))           # (T, b, K)
        correct += int((out.mean(axis=0).argmax(axis=1) == y[i:i + batch]).sum())
    net.train()
    return correct / len(y)


def train_one(opts: dict, seed: int, out: str) -> dict:
    """Train one plain MLP with opts and write config.json and metrics.jsonl under out."""
    import dsatgo_np as dn
    from dsatgo_np import diagnostics
    xtr, ytr, xte, yte = load_data(opts["dataset"], opts["train_subset"], opts["test_subset"])
    n_classes = int(max(ytr.max(), yte.max())) + 1
    net = build(opts, seed, xtr.shape[1:], n_classes)
    opt = dn.optim.SGD(net.parameters(), lr=opts["lr"], momentum=opts["momentum"])
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(dict(opts, seed=seed), f, indent=2)
    T, steps = opts["T"], dn.data.num_batches(len(ytr), opts["batch_size"])
    start, init, losses = time.time(), None, []
    for epoch in range(opts["epochs"]):
        rec = diagnostics.Recorder()
        for i, (xb, yb) in enumerate(dn.data.batches(xtr, ytr, opts["batch_size"], seed=seed,
                                                     epoch=epoch)):
            opt.lr = dn.optim.cosine_lr(opts["lr"], epoch * steps + i, opts["epochs"] * steps)
            out_ = net.forward(dn.encode.direct(xb, T))                   # (T, B, K)
            loss, dout = dn.losses.cross_entropy(out_, yb)
            if init is None:                   # the potentials where the knob put them
                init = compact(diagnostics.collect(net))
            net.zero_grad()
            net.backward(dout)
            opt.step()
            losses.append(float(loss))
            if i % opts["diag_every"] == 0:
                rec.update(net)
    acc = evaluate(net, xte, yte, T)
    summary = rec.summary()
    row = dict(epoch=opts["epochs"], test_acc=acc, train_loss=float(np.mean(losses[-steps:])),
               time=time.time() - start, diagnostics=compact(summary), init=compact(init),
               **diagnostics.network_means(summary))
    with open(os.path.join(out, "metrics.jsonl"), "w") as f:
        f.write(json.dumps(row) + "\n")
    return row


def engine_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        return "unknown"


def run(exp: str, smoke: bool = False, root: str = ROOT, labels=None) -> int:
    """Train every run of exp not finished yet (resumable; a killed run starts over)."""
    runs = EXPERIMENTS[exp]
    if labels:
        runs = [r for lab in labels for r in runs if r[0] == lab]
    commit = engine_commit()
    for label, opts, seed in runs:
        if smoke:
            if seed not in SEEDS[:2]:
                continue
            opts = dict(opts, **SMOKE, depth=min(opts["depth"], 4), T=min(opts["T"], 4))
        out = os.path.join(root, exp, f"{label}-s{seed}")
        if os.path.exists(os.path.join(out, "machine.json")):
            continue
        lock = claim(out)
        if lock is None:                         # another runner trains it
            continue
        try:
            row = train_one(opts, seed, out)
        finally:
            os.remove(lock)
        print(f"{exp}/{label}-s{seed}: test {100 * row['test_acc']:.2f} %, firing "
              f"{100 * row['firing_rate']:.1f} %, {row['time']:.1f} s", flush=True)
        with open(os.path.join(out, "machine.json"), "w") as f:
            json.dump(dict(machine=platform.platform(), cpus=os.cpu_count(),
                           python=platform.python_version(), finished=time.ctime(),
                           wall_time_s=row["time"], commit=commit,
                           threads=os.environ.get("DSATGO_THREADS", "default")), f, indent=2)
    return 0


def claim(folder):
    """Create folder/.running exclusively, so that two runners never train the same run
    (a runner killed mid-run leaves it behind: delete it to train that run again)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, ".running")
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return None
    return path


# --- statistics over seeds ---------------------------------------------------------------------

def mean_ci(values, level=0.95):
    """(mean, half-width of the t-interval at `level`) over seeds; half-width NaN for n < 2."""
    from scipy import stats
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), math.nan
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


def welch(a, b):
    """Welch's t-test of mean(a) != mean(b): (difference of means, two-sided p).

    Two samples without any spread (every seed the same number) give p = 0 if their means
    differ and 1 if they do not, where the t statistic itself is undefined."""
    from scipy import stats
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = float(a.mean() - b.mean())
    if min(len(a), len(b)) < 2:                 # no test from a single seed
        return diff, math.nan
    if a.std() == 0 and b.std() == 0:
        return diff, (0.0 if diff else 1.0)
    with warnings.catch_warnings():      # near-identical samples: scipy warns, p stays valid
        warnings.simplefilter("ignore", RuntimeWarning)
        return diff, float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def holm(pvalues):
    """Holm's step-down adjustment of a family of p-values (same order as given); NaN
    entries (no test) stay NaN and do not count in the family."""
    p = np.asarray(pvalues, dtype=np.float64)
    adj = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid])]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        adj[i] = running
    return adj.tolist()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiments", nargs="*", help=f"any of: {', '.join(EXPERIMENTS)}")
    p.add_argument("--smoke", action="store_true", help="tiny settings on the digits set")
    p.add_argument("--root", default=ROOT)
    p.add_argument("--labels", default="", help="only these labels (e.g. vanilla_scale0.25)")
    a = p.parse_args(argv)
    if not a.experiments:
        for name, runs in EXPERIMENTS.items():
            print(f"{name}: {len(runs)} runs")
        return 0
    for exp in a.experiments:
        if exp not in EXPERIMENTS:
            p.error(f"unknown experiment {exp!r}: choose from {', '.join(EXPERIMENTS)}")
        labels = [x for x in a.labels.split(",") if x]
        unknown = set(labels) - {r[0] for r in EXPERIMENTS[exp]}
        if unknown:
            p.error(f"{exp} has no run labelled {sorted(unknown)}: its labels look like "
                    f"{EXPERIMENTS[exp][0][0]} (method_knobvalue)")
        run(exp, a.smoke, a.root, labels)
    return 0


if __name__ == "__main__":
    sys.exit(main())
