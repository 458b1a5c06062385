"""Figures of a run: analogues of the paper's Figs. 5, 8, 10 and 11, and training curves.

Every function draws on its own matplotlib Figure with the Agg canvas (no pyplot, no global
backend switch, nothing left open), saves a PNG and returns its path. Inputs are the plain
dicts of diagnostics.py: a "summary" is {layer: stats} as returned by diagnostics.collect()
or Recorder.summary() (arrays or lists alike).

    python -c "from dsatgo_np.plots import plot_run; print(plot_run('runs/mnist-dsatgo'))"
"""
from __future__ import annotations

import json
import os

import numpy as np

from .diagnostics import THEOREM1_RATE, gaussian_window_share
from .surrogate import dynamic_width


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
    """Figure size that widens with the number of layers."""
    return (max(6.0, 0.5 * len(_layer_order(summary_by_method.values())) + 3), 4.2)


def _cmap(name):
    from matplotlib import colormaps           # imported only once a figure is being drawn
    return colormaps[name]


def _grouped_bars(ax, summary_by_method: dict, key: str):
    """One group of bars per layer, one colour per method; values in percent."""
    layers = _layer_order(summary_by_method.values())
    x = np.arange(len(layers))
    width = 0.8 / max(len(summary_by_method), 1)
    for i, (label, summary) in enumerate(summary_by_method.items()):
        vals = [100 * float(summary[n][key]) if n in summary else np.nan for n in layers]
        ax.bar(x + (i - (len(summary_by_method) - 1) / 2) * width, vals, width, label=label)
    crowded = len(layers) > 8                      # long names like "5.shortcut.2" overlap
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
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_firing_rates_per_step(summary: dict, path) -> str:
    """Firing rate at each time step, one line per layer."""
    fig, (ax,) = _figure()
    cmap = _cmap("viridis")
    n = max(len(summary) - 1, 1)
    for i, (name, st) in enumerate(summary.items()):
        rate = 100 * np.asarray(st["firing_rate"], dtype=float)
        ax.plot(np.arange(1, len(rate) + 1), rate, "o-", ms=3, color=cmap(i / n), label=name)
    ax.axhline(100 * THEOREM1_RATE, color="k", ls="--", lw=1, label="Theorem 1 (15.87 %)")
    T = max(len(st["firing_rate"]) for st in summary.values())
    ax.set_xticks(np.arange(1, T + 1))
    ax.set_xlabel("time step t")
    ax.set_ylabel("firing rate (%)")
    ax.set_title("Firing rate per time step")
    ax.grid(alpha=0.3)
    ax.legend(title="layer", fontsize=7, ncol=1 + len(summary) // 10,
              loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, path)


def plot_grad_share(summary_by_method: dict, path) -> str:
    """Share of membrane potentials inside the surrogate window, per layer and method."""
    fig, (ax,) = _figure(size=_bar_size(summary_by_method))
    _grouped_bars(ax, summary_by_method, "grad_share_mean")
    ax.set_ylabel("inside |H - theta| < k/2 (%)")
    ax.set_title("Gradient-available share per layer")
    ax.legend(fontsize=8)
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
        ax.stairs(share, edges, fill=True, alpha=0.6, color="tab:blue", label="H")
        ax.axvspan(theta - k / 2, theta + k / 2, color="tab:orange", alpha=0.25,
                   label="window |H - theta| < k/2")
        ax.axvline(theta, color="tab:red", lw=1.2, label="theta")
        ax.set_title(f"layer {name}", fontsize=9)
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


# --- the Gaussian model (paper Fig. 5) ----------------------------------------------------------

def plot_window_share(path, k0: float = 1.0, v_th: float = 1.0) -> str:
    """Share of H ~ N(0, s^2) inside the window centred on theta = s, for fixed k and TGO's k(s)."""
    s = np.linspace(0.25, 3.0, 221)
    fixed = [100 * gaussian_window_share(si, k0, si) for si in s]
    dynamic = [100 * gaussian_window_share(si, float(dynamic_width(si, k0, v_th)), si) for si in s]
    fig, (ax,) = _figure()
    ax.plot(s, fixed, label=f"AT + fixed window (k = {k0:g})")
    ax.plot(s, dynamic, label="AT + TGO (k = k0 (1 + tanh(s - V_th)))")
    for mark in (0.5, 1.0, 2.0):
        vals = [100 * gaussian_window_share(mark, kk, mark)
                for kk in (k0, float(dynamic_width(mark, k0, v_th)))]
        pairs = ((vals[0], vals[1], "tab:blue"), (vals[1], vals[0], "tab:orange"))
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


def plot_training_curves(metrics_rows: list[dict], path) -> str:
    """Loss and accuracy per epoch (and the overall firing rate when logged).

    Accuracies and rates given as fractions (all <= 1) are shown in percent.
    """
    has_rate = any(r.get("firing_rate") is not None for r in metrics_rows)
    fig, axes = _figure(1, 3 if has_rate else 2, size=(4.2 * (3 if has_rate else 2), 3.6))
    for key in ("train_loss", "test_loss"):
        ep, val = _series(metrics_rows, key)
        if ep:
            axes[0].plot(ep, val, "o-", ms=3, label=key.replace("_", " "))
    axes[0].set_ylabel("loss")
    axes[0].set_title("Loss")
    for key in ("train_acc", "test_acc"):
        ep, val = _series(metrics_rows, key)
        if ep:
            scale = 100 if max(val) <= 1 else 1
            axes[1].plot(ep, [scale * v for v in val], "o-", ms=3, label=key.replace("_", " "))
    axes[1].set_ylabel("accuracy (%)")
    axes[1].set_title("Accuracy")
    if has_rate:
        ep, val = _series(metrics_rows, "firing_rate")
        scale = 100 if max(val) <= 1 else 1
        axes[2].plot(ep, [scale * v for v in val], "o-", ms=3, color="tab:green",
                     label="mean over layers")
        axes[2].axhline(100 * THEOREM1_RATE, color="k", ls="--", lw=1, label="Theorem 1 (15.87 %)")
        axes[2].set_ylabel("firing rate (%)")
        axes[2].set_title("Firing rate")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, path)


# --- everything a run folder supports ------------------------------------------------------------

def read_metrics(path) -> list[dict]:
    """The JSON objects of a metrics.jsonl file, one per non-empty line."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


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
        summary = diag[-1]
        label = os.path.basename(os.path.normpath(run_dir)) or "run"
        paths.append(plot_firing_rates({label: summary}, os.path.join(out_dir, "firing_rates.png")))
        paths.append(plot_firing_rates_per_step(
            summary, os.path.join(out_dir, "firing_rates_per_step.png")))
        paths.append(plot_grad_share({label: summary}, os.path.join(out_dir, "grad_share.png")))
    return paths
