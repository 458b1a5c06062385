"""Figures of a run: analogues of the paper's Figs. 5, 8, 10 and 11, and training curves.

Every function draws on its own matplotlib Figure with the Agg canvas (no pyplot, no global
backend switch, nothing left open); the plot_* functions save it as a PNG and return its
path, the *_figure functions return the Figure itself (to show or to inspect). Inputs are the plain
dicts of diagnostics.py: a "summary" is {layer: stats} as returned by diagnostics.collect()
or Recorder.summary() (arrays or lists alike), keyed by readable layer names such as
"spike 1 (fc 784-512)" (diagnostics.layer_names).

Colours come from the Okabe-Ito palette, which readers with any common colour-vision
deficiency can tell apart, without its yellow (unreadable as a line on white); past seven
lines the dash pattern changes too. Colour scales (images) always carry a colour bar.

    python -c "from dsatgo_np.plots import plot_run; print(plot_run('runs/mnist-dsatgo'))"
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from .diagnostics import THEOREM1_RATE, gaussian_window_share, rename_layers
from .core.surrogate import dynamic_width


# Okabe & Ito, "Color Universal Design" (2008): blue, orange, bluish green, vermillion,
# reddish purple, sky blue, black. Its eighth colour, yellow, is left out.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
DASHES = ("-", "--", ":", "-.")


def colour(i: int) -> str:
    """The i-th colour of PALETTE, cycling."""
    return PALETTE[i % len(PALETTE)]


def line_style(i: int) -> dict:
    """Colour and dash pattern of the i-th line: a new dash pattern after every 7 colours."""
    return {"color": colour(i), "ls": DASHES[(i // len(PALETTE)) % len(DASHES)]}


def _figure(nrows: int = 1, ncols: int = 1, size=(7.0, 4.2)):
    """A fresh Figure on the Agg canvas, and its axes as a flat list."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install dsatgo_np[plot]") from e
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, list(axes.flat)


def _save(fig, path) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def _layer_order(summaries) -> list[str]:
    """Union of the layer names of several summaries, in order of first appearance."""
    names = []
    for summary in summaries:
        names += [n for n in summary if n not in names]
    return names


def _bar_size(summary_by_method: dict):
    """Figure size that widens with the number of layers (and leaves room for their names)."""
    layers = _layer_order(summary_by_method.values())
    longest = max(map(len, layers), default=0)
    return (max(6.0, 0.5 * len(layers) + 3), 4.2 + 0.06 * longest * (len(layers) > 3))


def _grouped_bars(ax, summary_by_method: dict, key: str):
    """One group of bars per layer, one colour per method; values in percent."""
    layers = _layer_order(summary_by_method.values())
    x = np.arange(len(layers))
    width = 0.8 / max(len(summary_by_method), 1)
    for i, (label, summary) in enumerate(summary_by_method.items()):
        vals = [100 * float(summary[n][key]) if n in summary else np.nan for n in layers]
        ax.bar(x + (i - (len(summary_by_method) - 1) / 2) * width, vals, width, label=label,
               color=colour(i))
    crowded = len(layers) > 3 or max(map(len, layers), default=0) > 24   # long names overlap
    ax.set_xticks(x, layers, rotation=45 if crowded else 0, ha="right" if crowded else "center")
    ax.set_xlabel("spiking layer")
    ax.grid(axis="y", alpha=0.3)


# --- per-layer figures (paper Figs. 8, 10, 11) -------------------------------------------------

def plot_firing_rates(summary_by_method: dict, path) -> str:
    """Mean firing rate of every layer, one bar per method, against Theorem 1's 15.87 %."""
    fig, (ax,) = _figure(size=_bar_size(summary_by_method))
    _grouped_bars(ax, summary_by_method, "firing_rate_mean")
    ax.axhline(100 * THEOREM1_RATE, color="k", ls="--", lw=1,
               label=f"Theorem 1: 1 - Phi(1) = {100 * THEOREM1_RATE:.2f} %")
    ax.set_ylabel("firing rate (%)")
    ax.set_title("Firing rate per layer (mean over steps and batches)")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=8)
    return _save(fig, path)


def plot_firing_rates_per_step(summary: dict, path) -> str:
    """firing_rates_per_step_figure(summary), saved as a PNG at path."""
    return _save(firing_rates_per_step_figure(summary), path)


def firing_rates_per_step_figure(summary: dict):
    """Firing rate at each time step, one line per layer, as a Figure."""
    fig, (ax,) = _figure(size=(8.0, 4.2))
    for i, (name, st) in enumerate(summary.items()):
        rate = 100 * np.asarray(st["firing_rate"], dtype=float)
        ax.plot(np.arange(1, len(rate) + 1), rate, marker="o", ms=3, label=name, **line_style(i))
    ax.axhline(100 * THEOREM1_RATE, color="k", ls="--", lw=1, label="Theorem 1 (15.87 %)")
    T = max(len(st["firing_rate"]) for st in summary.values())
    ax.set_xticks(np.arange(1, T + 1))
    ax.set_xlabel("time step t")
    ax.set_ylabel("firing rate (%)")
    ax.set_title("Firing rate per time step")
    ax.grid(alpha=0.3)
    ax.legend(title="layer", fontsize=7, ncol=1 + len(summary) // 10,
              loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def plot_grad_share(summary_by_method: dict, path) -> str:
    """Share of membrane potentials inside the surrogate window, per layer and method."""
    fig, (ax,) = _figure(size=_bar_size(summary_by_method))
    _grouped_bars(ax, summary_by_method, "grad_share_mean")
    ax.set_ylabel("inside |H - theta| < k/2 (%)")
    ax.set_title("Gradient-available share per layer")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=8)
    return _save(fig, path)


def plot_membrane_histograms(hists: dict, path, step: int = -1) -> str:
    """One panel per layer: distribution of H at one step, threshold and surrogate window.

    hists: diagnostics.histograms() output; step: which time step (default the last).
    """
    names = list(hists)
    ncols = min(4, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = _figure(nrows, ncols, size=(3.2 * ncols, 2.6 * nrows + 0.4))
    for ax, name in zip(axes, names):
        h = hists[name]
        edges = np.asarray(h["edges"], dtype=float)
        counts = np.asarray(h["counts"], dtype=float)[step]
        theta, k = float(np.asarray(h["theta"])[step]), float(np.asarray(h["k"])[step])
        share = 100 * counts / max(counts.sum(), 1)
        ax.stairs(share, edges, fill=True, alpha=0.6, color=PALETTE[0], label="H")
        ax.axvspan(theta - k / 2, theta + k / 2, color=PALETTE[1], alpha=0.3,
                   label="window |H - theta| < k/2")
        ax.axvline(theta, color=PALETTE[3], lw=1.5, label="theta")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("membrane potential H", fontsize=8)
        ax.set_ylabel("share (%)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    T = np.asarray(hists[names[0]]["counts"]).shape[0]
    t = (step % T) + 1
    fig.suptitle(f"Membrane potential H at step t = {t} of {T}")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8)
    return _save(fig, path)


def plot_membrane_steps(hists: dict, path) -> str:
    """One panel per layer: the distribution of H at every step as a heat map (rows: steps t,
    colour: share of the layer's potentials per bin, with its colour bar), the threshold
    theta[t] and the window edges theta[t] +- k[t]/2 drawn on each row.

    hists: diagnostics.histograms() output.
    """
    from matplotlib import colormaps              # imported only once a figure is being drawn
    names = list(hists)
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    T_max = max(np.asarray(h["counts"]).shape[0] for h in hists.values())
    fig, axes = _figure(nrows, ncols, size=(4.3 * ncols, 0.8 + nrows * (1.3 + 0.3 * T_max)))
    for ax, name in zip(axes, names):
        h = hists[name]
        edges = np.asarray(h["edges"], dtype=float)
        counts = np.asarray(h["counts"], dtype=float)                    # (T, bins)
        T = counts.shape[0]
        share = 100 * counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = ax.pcolormesh(edges, np.arange(T + 1) + 0.5, share, cmap=colormaps["cividis"],
                              vmin=0, shading="flat")
        fig.colorbar(image, ax=ax, label="share of H[t] (%)", pad=0.02)
        rows = np.arange(1, T + 1)
        theta, k = np.asarray(h["theta"], dtype=float), np.asarray(h["k"], dtype=float)
        for t, th, kk in zip(rows, theta, k):
            ax.plot([th, th], [t - 0.45, t + 0.45], color=PALETTE[3], lw=2,
                    label="theta[t]" if t == 1 else None)
            ax.plot([th - kk / 2] * 2, [t - 0.45, t + 0.45], color="white", lw=1, ls="--",
                    label="window edges" if t == 1 else None)
            ax.plot([th + kk / 2] * 2, [t - 0.45, t + 0.45], color="white", lw=1, ls="--")
        ax.set_yticks(rows)
        ax.invert_yaxis()                                                 # t = 1 on top
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("membrane potential H", fontsize=8)
        ax.set_ylabel("time step t", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle("Membrane potential H at every step, against the threshold and the window")
    handles, labels = axes[0].get_legend_handles_labels()
    legend = fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8,
                        facecolor="0.5")                  # grey, so that the white dashes show
    for text in legend.get_texts():
        text.set_color("white")
    return _save(fig, path)


# --- the Gaussian model (paper Fig. 5) ----------------------------------------------------------

def plot_window_share(path, k0: float = 1.0, v_th: float = 1.0) -> str:
    """Share of H ~ N(0, s^2) inside the window centred on theta = s, for fixed k and TGO's k(s)."""
    s = np.linspace(0.25, 3.0, 221)
    fixed = [100 * gaussian_window_share(si, k0, si) for si in s]
    dynamic = [100 * gaussian_window_share(si, float(dynamic_width(si, k0, v_th)), si) for si in s]
    fig, (ax,) = _figure()
    ax.plot(s, fixed, color=PALETTE[0], label=f"AT + fixed window (k = {k0:g})")
    ax.plot(s, dynamic, color=PALETTE[3], ls="--", label="AT + TGO (k = k0 (1 + tanh(s - V_th)))")
    for mark in (0.5, 1.0, 2.0):
        vals = [100 * gaussian_window_share(mark, kk, mark)
                for kk in (k0, float(dynamic_width(mark, k0, v_th)))]
        pairs = ((vals[0], vals[1], PALETTE[0]), (vals[1], vals[0], PALETTE[3]))
        for val, other, colour in pairs:
            ax.plot(mark, val, "o", color=colour)     # label above the upper point, below the lower
            ax.annotate(f"{val:.2f} %", (mark, val), textcoords="offset points", fontsize=8,
                        xytext=(5, 6 if val >= other else -13), color=colour)
    ax.set_xlabel("spread s of the membrane potential, H ~ N(0, s^2), theta = s")
    ax.set_ylabel("inside the window (%)")
    ax.set_title("Gradient-available share under the Gaussian model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


# --- training curves ---------------------------------------------------------------------------

def _series(rows, key):
    """(epochs, values) of the rows that have key; [] if none."""
    pts = [(r.get("epoch", i + 1), r[key]) for i, r in enumerate(rows)
           if r.get(key) is not None]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


def _percent(values):
    """Fractions (all <= 1) in percent; values already in percent unchanged."""
    values = [float(v) for v in values]
    finite = [v for v in values if np.isfinite(v)]
    return [100 * v for v in values] if finite and max(finite) <= 1 else values


def _per_batch(rows):
    """(steps, loss, accuracy, ends) from the rows' "batches" entries, or None when a row
    with a train loss lacks one (older logs: epoch points only).

    A row's "batches" is {"step": [batches trained so far, counted over all epochs],
    "loss": [...], "accuracy": [...]}, logged every few batches; ends maps each such row's
    epoch to the batch count at its end: epoch * steps_per_epoch when the row says
    steps_per_epoch, else its last step.
    """
    rows = [r for r in rows if r.get("train_loss") is not None or r.get("batches")]
    if not rows or not all(isinstance(r.get("batches"), dict) and r["batches"].get("step")
                           for r in rows):
        return None
    steps, loss, acc, ends = [], [], [], {}
    for i, r in enumerate(rows):
        b = r["batches"]
        steps += [int(v) for v in b["step"]]
        loss += [float(v) for v in b.get("loss", [np.nan] * len(b["step"]))]
        acc += [float(v) for v in b.get("accuracy", [np.nan] * len(b["step"]))]
        epoch = r.get("epoch", i + 1)
        ends[epoch] = int(epoch * r["steps_per_epoch"]) if r.get("steps_per_epoch") else steps[-1]
    return np.array(steps), np.array(loss), np.array(acc), ends


def _per_batch_rates(rows):
    """(steps, firing rates) of the batches whose diagnostics were recorded (the rows'
    "batches": {"rate_step", "firing_rate"}, every diag_every batches); empty for older logs."""
    steps, rates = [], []
    for r in rows:
        b = r.get("batches") or {}
        steps += [int(v) for v in b.get("rate_step", [])]
        rates += [float(v) for v in b.get("firing_rate", [])]
    return np.array(steps), np.array(rates)


def _smooth(values, n: int):
    """Trailing mean over n points (fewer at the start), NaN-free input; same length."""
    c = np.cumsum(np.insert(np.asarray(values, dtype=float), 0, 0.0))
    i = np.arange(1, len(values) + 1)
    lo = np.maximum(i - n, 0)
    return (c[i] - c[lo]) / (i - lo)


def _batch_curve(ax, steps, values, label, i):
    """A noisy per-batch series: the raw values faint, their running mean solid."""
    ok = np.isfinite(values)
    if not ok.any():
        return
    steps, values = steps[ok], values[ok]
    n = max(1, len(values) // 40)                         # about 40 windows over the run
    ax.plot(steps, values, color=colour(i), alpha=0.25, lw=0.8)
    ax.plot(steps, _smooth(values, n), color=colour(i), lw=1.6,
            label=f"{label} (running mean of {n})" if n > 1 else label)


def plot_training_curves(metrics_rows: list[dict], path) -> str:
    """training_curves_figure(metrics_rows), saved as a PNG at path."""
    return _save(training_curves_figure(metrics_rows), path)


def training_curves_figure(metrics_rows: list[dict]):
    """Loss, accuracy and the overall firing rate of a run (metrics.jsonl rows), as a Figure.

    Rows that log their batches ("batches": {"step", "loss", "accuracy"}) give per-batch
    curves over the batch count, so that a one-epoch run shows how it learned; the epoch
    values (test accuracy, test loss, firing rate) are then points at the end of each epoch.
    Without them every value is a point per epoch. Fractions are shown in percent.
    """
    has_rate = any(r.get("firing_rate") is not None for r in metrics_rows)
    ncols = 3 if has_rate else 2
    fig, axes = _figure(1, ncols, size=(4.4 * ncols, 3.8))
    batches = _per_batch(metrics_rows)
    if batches is not None:
        steps, loss, acc, ends = batches
        _batch_curve(axes[0], steps, loss, "train loss, per batch", 0)
        _batch_curve(axes[1], steps, np.array(_percent(acc)), "train accuracy, per batch", 0)
        x_of, x_label = ends, "batches trained"
    else:
        x_of, x_label = None, "epoch"

    def epoch_points(ax, key, label, i, percent=False):
        ep, val = _series(metrics_rows, key)
        if x_of is not None:
            keep = [j for j, e in enumerate(ep) if e in x_of]
            ep, val = [x_of[ep[j]] for j in keep], [val[j] for j in keep]
        if not ep:
            return
        val = _percent(val) if percent else val
        ax.plot(ep, val, marker="o", ms=6 if len(ep) == 1 else 4, label=label, **line_style(i))

    if batches is None:
        epoch_points(axes[0], "train_loss", "train loss", 0)
    epoch_points(axes[0], "test_loss", "test loss", 1)
    axes[0].set_ylabel("loss")
    axes[0].set_title("Loss")
    if batches is None:
        epoch_points(axes[1], "train_acc", "train accuracy", 0, percent=True)
    epoch_points(axes[1], "test_acc", "test accuracy, end of epoch", 1, percent=True)
    axes[1].set_ylabel("accuracy (%)")
    axes[1].set_title("Accuracy")
    if has_rate:
        rate_steps, rates = _per_batch_rates(metrics_rows) if batches is not None else ([], [])
        if len(rates):
            _batch_curve(axes[2], rate_steps, np.array(_percent(rates)),
                         "mean over layers, recorded batches", 0)
        epoch_points(axes[2], "firing_rate", "mean over layers, epoch", 2, percent=True)
        axes[2].axhline(100 * THEOREM1_RATE, color="k", ls="--", lw=1, label="Theorem 1 (15.87 %)")
        axes[2].set_ylabel("firing rate (%)")
        axes[2].set_title("Firing rate")
    n_epochs = max((r.get("epoch", i + 1) for i, r in enumerate(metrics_rows)), default=1)
    for ax in axes:
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
        if x_of is not None:
            ax.set_xlim(0, max(x_of.values()) * 1.02)
            for end in sorted(x_of.values())[:-1]:        # epoch boundaries
                ax.axvline(end, color="0.6", lw=0.8, ls=":")
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_xlim(0.5, n_epochs + 0.5)              # one epoch: a point, not a zoom on it
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return fig


# --- everything a run folder supports ------------------------------------------------------------

def read_metrics(path) -> list[dict]:
    """The JSON objects of a metrics.jsonl file, one per non-empty line."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _readable(summary: dict, run_dir: str) -> dict:
    """Older logs name layers by module path ("3"): rename them from the run's saved model."""
    if not any(re.fullmatch(r"\d+(\.\w+)*", key) for key in summary):
        return summary
    try:
        from .checkpoint import load
        return rename_layers(summary, load(run_dir))
    except (OSError, ValueError, KeyError, TypeError):
        return summary                                # no usable checkpoint: the logged names


def plot_run(run_dir) -> list[str]:
    """Write every plot the run's metrics.jsonl supports into <run_dir>/plots/; return the paths.

    Training curves need epoch rows with losses or accuracies; the per-layer figures need a
    "diagnostics" entry (a Recorder summary) and use the last epoch that has one.
    """
    run_dir = os.fspath(run_dir)
    rows = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    out_dir = os.path.join(run_dir, "plots")
    paths = []
    curve_keys = ("train_loss", "test_loss", "train_acc", "test_acc")
    if any(r.get(key) is not None for r in rows for key in curve_keys):
        paths.append(plot_training_curves(rows, os.path.join(out_dir, "training_curves.png")))
    diag = [r["diagnostics"] for r in rows if r.get("diagnostics")]
    if diag:
        summary = _readable(diag[-1], run_dir)
        label = os.path.basename(os.path.normpath(run_dir)) or "run"
        paths.append(plot_firing_rates({label: summary}, os.path.join(out_dir, "firing_rates.png")))
        paths.append(plot_firing_rates_per_step(
            summary, os.path.join(out_dir, "firing_rates_per_step.png")))
        paths.append(plot_grad_share({label: summary}, os.path.join(out_dir, "grad_share.png")))
    return paths
