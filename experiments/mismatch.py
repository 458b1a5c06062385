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
(confidence intervals over seeds, Welch's t-test) are here too.
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


# --- tables and figures for docs/RESULTS.md (called by experiments/report.py) -------------------

ABLATION = ("vanilla", "at", "tgo", "ds-atgo")
AXIS = {"scale": "tdBN initial scale alpha", "gain": "initial weight gain (no BatchNorm)",
        "depth": "spiking layers", "T": "time steps T"}


def load(root, exp):
    """{(variant, value, method): [metrics row of each seed, seed order]} of exp's finished runs."""
    out = {}
    folder = os.path.join(root, exp)
    if not os.path.isdir(folder):
        return out
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        try:
            with open(os.path.join(path, "config.json")) as f:
                cfg = json.load(f)
            with open(os.path.join(path, "metrics.jsonl")) as f:
                row = json.loads(f.readline())
            with open(os.path.join(path, "machine.json")) as f:
                row["machine"] = json.load(f)
        except (OSError, ValueError):
            continue                                  # unfinished: left out
        row["seed"], row["dataset"] = cfg["seed"], cfg["dataset"]
        out.setdefault((cfg["variant"], cfg["value"], cfg["method"]), []).append(row)
    for rows in out.values():
        rows.sort(key=lambda r: r["seed"])
    return out


def _variants(runs):
    return sorted({v for v, _, _ in runs}, key=lambda v: (v != "bn", v))


def _values(runs, variant):
    return sorted({x for v, x, _ in runs if v == variant})


def _methods(runs):
    return [m for m in METHODS if any(k[2] == m for k in runs)]


def deepest(row, when="diagnostics"):
    """The last spiking layer's entry of a row's diagnostics ("diagnostics": the last epoch's
    training batches; "init": the first batch, before any update)."""
    d = row[when]
    return d[list(d)[-1]]


def _acc(rows):
    return [100 * r["test_acc"] for r in rows]


def _cell(values, digits=1):
    m, h = mean_ci(values)
    return f"{m:.{digits}f}" if h != h else f"{m:.{digits}f} +- {h:.{digits}f}"


def _knob(v):
    return f"{v:g}"


def _name(knob, variant):
    return {"bn": " (tdBN)", "nobn": " (no BatchNorm)"}.get(variant, "")


def table_accuracy(runs, knob):
    """Test accuracy, mean +- 95 % t-interval half-width over seeds, per knob value and method."""
    methods = _methods(runs)
    lines = []
    for variant in _variants(runs):
        lines += [f"| {knob}{_name(knob, variant)} | " + " | ".join(methods) + " | seeds |",
                  "|---" * (len(methods) + 2) + "|"]
        for x in _values(runs, variant):
            cells = [_cell(_acc(runs[variant, x, m])) if (variant, x, m) in runs else ""
                     for m in methods]
            n = min(len(runs.get((variant, x, m), [])) for m in methods)
            lines.append(f"| {_knob(x)} | " + " | ".join(cells) + f" | {n} |")
        lines.append("")
    return "\n".join(lines).rstrip()


def table_deepest(runs, knob):
    """Deepest spiking layer: firing rate at the first batch -> after training, and the share
    inside the gradient window after training; means over seeds, in %."""
    methods = _methods(runs)
    lines = []
    for variant in _variants(runs):
        lines += [f"| {knob}{_name(knob, variant)} | sigma of H[1] at start, vanilla / ds-atgo | " +
                  " | ".join(f"{m} firing start -> end / window" for m in methods) + " |",
                  "|---" * (len(methods) + 2) + "|"]
        for x in _values(runs, variant):
            cells = []
            for m in methods:
                rows = runs.get((variant, x, m), [])
                if not rows:
                    cells.append("")
                    continue
                f0 = np.mean([100 * deepest(r, "init")["firing_rate_mean"] for r in rows])
                f1 = np.mean([100 * deepest(r)["firing_rate_mean"] for r in rows])
                g1 = np.mean([100 * deepest(r)["grad_share_mean"] for r in rows])
                cells.append(f"{f0:.1f} -> {f1:.1f} / {g1:.1f}")
            sd = [f"{np.mean([deepest(r, 'init')['std'][0] for r in runs[variant, x, m]]):.2f}"
                  if (variant, x, m) in runs else "-" for m in ("vanilla", "ds-atgo")]
            lines.append(f"| {_knob(x)} | {' / '.join(sd)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()


def table_reach(runs, knob):
    """Per method: the knob values where every seed reaches each level of REACH[dataset]."""
    methods = _methods(runs)
    dataset = next(iter(runs.values()))[0]["dataset"]
    levels = REACH.get(dataset, REACH["mnist"])
    lines = ["| method | " + " | ".join(f"{knob} values where every seed reaches "
                                         f"{100 * lv:.0f} % | range" for lv in levels) + " |",
             "|---" * (1 + 2 * len(levels)) + "|"]
    for variant in _variants(runs):
        for m in methods:
            cells = []
            for lv in levels:
                ok = [x for x in _values(runs, variant) if (variant, x, m) in runs
                      and min(r["test_acc"] for r in runs[variant, x, m]) >= lv]
                cells += [", ".join(map(_knob, ok)) or "-",
                          f"{_knob(min(ok))} .. {_knob(max(ok))}" if ok else "none"]
            lines.append(f"| {m}{_name(knob, variant)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_tests(runs, knob):
    """Every method against vanilla at every knob value: difference of mean accuracy (points),
    Welch's two-sided p, and Holm's adjustment over the whole table."""
    others = [m for m in _methods(runs) if m != "vanilla"]
    entries = []
    for variant in _variants(runs):
        for x in _values(runs, variant):
            if (variant, x, "vanilla") not in runs:
                continue
            for m in others:
                if (variant, x, m) in runs:
                    d, p = welch(_acc(runs[variant, x, m]), _acc(runs[variant, x, "vanilla"]))
                    entries.append((variant, x, m, d, p))
    if not entries:
        return "(no runs yet)"
    adj = holm([e[4] for e in entries])
    cells = {(v, x, m): f"{d:+.1f} (p {_p(p)}; Holm {_p(a)})"
             for (v, x, m, d, p), a in zip(entries, adj)}
    lines = []
    for variant in _variants(runs):
        lines += [f"| {knob}{_name(knob, variant)} | " + " | ".join(f"{m} - vanilla" for m in others)
                  + " |", "|---" * (len(others) + 1) + "|"]
        for x in _values(runs, variant):
            lines.append(f"| {_knob(x)} | " + " | ".join(cells.get((variant, x, m), "")
                                                      for m in others) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()


def _p(p):
    if p != p:
        return "n/a"
    return "< 1e-4" if p < 1e-4 else f"{p:.2g}"


def table_order(runs_by_exp, alpha=0.05):
    """The paper's ablation order (vanilla < AT < TGO < DS-ATGO) on every setting where the four
    ablation methods differ (one-way ANOVA over seeds, p < alpha): neighbours compared by
    Welch's t (two-sided), '<' where p < alpha, '~' where not."""
    from scipy import stats
    lines = ["| setting | vanilla | at | tgo | ds-atgo | ANOVA p | at vs vanilla | tgo vs at | "
             "ds-atgo vs tgo | ds-atgo vs at | measured order | paper's order? |",
             "|---" * 12 + "|"]
    counts = {"yes": 0, "no": 0}
    for exp, runs in runs_by_exp.items():
        knob = KNOBS.get(exp, "knob")
        for variant in _variants(runs):
            for x in _values(runs, variant):
                if not all((variant, x, m) in runs for m in ABLATION):
                    continue
                acc = {m: _acc(runs[variant, x, m]) for m in ABLATION}
                if min(len(a) for a in acc.values()) < 2:
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    p_all = float(stats.f_oneway(*acc.values()).pvalue)
                if not p_all < alpha:
                    continue
                pairs = [("at", "vanilla"), ("tgo", "at"), ("ds-atgo", "tgo"), ("ds-atgo", "at")]
                tests = {pr: welch(acc[pr[0]], acc[pr[1]]) for pr in pairs}
                ranked = sorted(ABLATION, key=lambda m: np.mean(acc[m]))
                text = ranked[0]
                for lo, hi in zip(ranked, ranked[1:]):
                    text += (" < " if welch(acc[hi], acc[lo])[1] < alpha else " ~ ") + hi
                # the paper's order holds if no measured difference contradicts it
                contra = any(welch(acc[b], acc[a])[1] < alpha and np.mean(acc[b]) < np.mean(acc[a])
                             for i, a in enumerate(ABLATION) for b in ABLATION[i + 1:])
                strict = all(tests[pr][1] < alpha and tests[pr][0] > 0 for pr in pairs[:3])
                verdict = "yes, strictly" if strict else ("not contradicted" if not contra else "no")
                counts["yes" if not contra else "no"] += 1
                cells = [_cell(acc[m]) for m in ABLATION]
                cells += [_p(p_all)] + [f"{tests[pr][0]:+.1f} (p {_p(tests[pr][1])})" for pr in pairs]
                lines.append(f"| {exp} {knob} {_knob(x)}{_name(knob, variant)} | " +
                             " | ".join(cells) + f" | {text} | {verdict} |")
    if len(lines) == 2:
        return "(no setting where the four ablation methods differ, or no runs yet)"
    lines.append("")
    lines.append(f"Settings where the four differ: {sum(counts.values())}; the paper's order is "
                 f"contradicted by a significant reversal in {counts['no']} of them.")
    return "\n".join(lines)


def table_layers(runs, variant, value):
    """Per spiking layer of one setting: firing rate and window share after training, %,
    mean over seeds, one column pair per method."""
    methods = [m for m in _methods(runs) if (variant, value, m) in runs]
    if not methods:
        return "(no runs yet)"
    layers = list(runs[variant, value, methods[0]][0]["diagnostics"])
    lines = ["| layer | " + " | ".join(f"{m} firing / window" for m in methods) + " |",
             "|---" * (len(methods) + 1) + "|"]
    for i, name in enumerate(layers):
        cells = []
        for m in methods:
            rows = runs[variant, value, m]
            f = np.mean([100 * r["diagnostics"][name]["firing_rate_mean"] for r in rows])
            g = np.mean([100 * r["diagnostics"][name]["grad_share_mean"] for r in rows])
            cells.append(f"{f:.1f} / {g:.1f}")
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_steps(runs, variant, value):
    """Deepest layer, per time step: firing rate after training (%), mean over seeds."""
    methods = [m for m in _methods(runs) if (variant, value, m) in runs]
    if not methods:
        return "(no runs yet)"
    T = len(deepest(runs[variant, value, methods[0]][0])["firing_rate"])
    lines = ["| method | " + " | ".join(f"t={t + 1}" for t in range(T)) + " | max - min |",
             "|---" * (T + 2) + "|"]
    for m in methods:
        rates = np.mean([deepest(r)["firing_rate"] for r in runs[variant, value, m]], axis=0) * 100
        lines.append(f"| {m} | " + " | ".join(f"{v:.1f}" for v in rates) +
                     f" | {np.ptp(rates):.1f} |")
    return "\n".join(lines)


def _axes(nrows, ncols, size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


# Okabe & Ito's colour-blind-safe palette (blue, orange, bluish green, vermillion, reddish
# purple), one colour and one marker per method, in METHODS' order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7")
MARKERS = ("o", "s", "^", "D", "v")


def figure_knob(runs, knob, path, title=""):
    """Accuracy, and the deepest layer's firing rate (first batch and after training) and
    window share, against the knob: one line per method (mean, 95 % interval over seeds)."""
    variants = _variants(runs)
    fig, axes = _axes(len(variants), 4, (17, 3.9 * len(variants)))
    panels = (("test accuracy (%)", lambda r: 100 * r["test_acc"]),
              ("deepest layer: firing rate at start (%)",
               lambda r: 100 * deepest(r, "init")["firing_rate_mean"]),
              ("deepest layer: firing rate after training (%)",
               lambda r: 100 * deepest(r)["firing_rate_mean"]),
              ("deepest layer: in gradient window (%)",
               lambda r: 100 * deepest(r)["grad_share_mean"]))
    for row, variant in zip(axes, variants):
        xs = _values(runs, variant)
        for j, (ylabel, get) in enumerate(panels):
            ax = row[j]
            for i, m in enumerate(METHODS):
                pts = [(x, mean_ci([get(r) for r in runs[variant, x, m]]))
                       for x in xs if (variant, x, m) in runs]
                if not pts:
                    continue
                x = [p[0] for p in pts]
                y = np.array([p[1][0] for p in pts])
                h = np.nan_to_num(np.array([p[1][1] for p in pts]))
                ax.plot(x, y, marker=MARKERS[i], color=PALETTE[i], label=m, ms=5, lw=1.6)
                ax.fill_between(x, y - h, y + h, color=PALETTE[i], alpha=0.15, lw=0)
            if j in (1, 2):
                ax.axhline(15.87, color="k", ls=":", lw=1, label="Theorem 1: 15.87 %")
            if knob in ("scale", "gain"):
                ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [_knob(x) for x in xs])
            ax.set_xlabel(AXIS.get(knob, knob) + _name(knob, variant))
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
    return _finish(fig, axes[0][1], path, title, fontsize=9)


def _finish(fig, legend_ax, path, title, fontsize=8):
    """One legend below the panels (from LEGEND_AX's lines), the title, and the file at PATH."""
    handles, labels = legend_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=fontsize)
    if title:
        fig.suptitle(title)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def figure_layers(runs, variant, value, path, title=""):
    """Firing rate and window share per layer after training, one line per method."""
    fig, axes = _axes(1, 2, (11, 3.8))
    for i, m in enumerate(METHODS):
        rows = runs.get((variant, value, m))
        if not rows:
            continue
        names = list(rows[0]["diagnostics"])
        for ax, key in zip(axes[0], ("firing_rate_mean", "grad_share_mean")):
            y = np.mean([[100 * r["diagnostics"][n][key] for n in names] for r in rows], axis=0)
            ax.plot(range(1, len(names) + 1), y, marker=MARKERS[i], color=PALETTE[i], label=m, ms=4)
    axes[0][0].axhline(15.87, color="k", ls=":", lw=1, label="Theorem 1")
    for ax, lab in zip(axes[0], ("firing rate (%)", "in gradient window (%)")):
        ax.set_xlabel("spiking layer")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    return _finish(fig, axes[0][0], path, title)


def figure_steps(runs, variant, value, path, title=""):
    """Deepest layer's firing rate and window share per step after training, per method."""
    fig, axes = _axes(1, 2, (11, 3.8))
    for i, m in enumerate(METHODS):
        rows = runs.get((variant, value, m))
        if not rows:
            continue
        for ax, key in zip(axes[0], ("firing_rate", "grad_share")):
            y = 100 * np.mean([deepest(r)[key] for r in rows], axis=0)
            ax.plot(range(1, len(y) + 1), y, marker=MARKERS[i], color=PALETTE[i], label=m, ms=4)
    axes[0][0].axhline(15.87, color="k", ls=":", lw=1, label="Theorem 1")
    for ax, lab in zip(axes[0], ("firing rate (%)", "in gradient window (%)")):
        ax.set_xlabel("time step t")
        ax.set_ylabel("deepest layer: " + lab)
        ax.grid(alpha=0.3)
    return _finish(fig, axes[0][0], path, title)


def render_directive(kind, arg, root, fig_dir, md_dir):
    """Text for a template line {{mismatch KIND ARG}}; ARG is an experiment name, with
    ':variant:value' for layers and steps, or a comma-separated list of experiments for order."""
    if kind == "order":
        runs = {e: load(root, e) for e in arg.split(",")}
        return table_order({e: r for e, r in runs.items() if r})
    exp, *where = arg.split(":")
    runs = load(root, exp)
    if not runs:
        return f"(no finished run yet: `python experiments/run.py {exp}`)"
    knob = KNOBS.get(exp, "knob")
    if kind == "acc":
        return table_accuracy(runs, knob)
    if kind == "deep":
        return table_deepest(runs, knob)
    if kind == "reach":
        return table_reach(runs, knob)
    if kind == "tests":
        return table_tests(runs, knob)
    if kind in ("layers", "steps", "figure-layers", "figure-steps"):
        variant, value = where[0], float(where[1])
        if kind == "layers":
            return table_layers(runs, variant, value)
        if kind == "steps":
            return table_steps(runs, variant, value)
        path = os.path.join(fig_dir, f"{exp}-{kind[7:]}-{variant or 'all'}{_knob(value)}.png")
        draw = figure_layers if kind == "figure-layers" else figure_steps
        draw(runs, variant, value, path, f"{exp}, {knob} = {_knob(value)}{_name(knob, variant)}")
    elif kind == "figure":
        path = figure_knob(runs, knob, os.path.join(fig_dir, f"{exp}.png"), exp)
    else:
        raise ValueError(f"unknown mismatch directive {kind!r}")
    return f"![{exp}]({os.path.relpath(path, md_dir)})"


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
