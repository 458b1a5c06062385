"""A run's training curves, and every figure its metrics.jsonl supports (plot_run).

    python -c "from dsatgo_np.diagnostics.curves import plot_run; print(plot_run('runs/<run>'))"
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from . import THEOREM1_RATE, rename_layers
from .plots import plot_firing_rates, plot_firing_rates_per_step, plot_grad_share
from .style import _figure, _save, colour, line_style

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
        from ..checkpoint import load_model, resolve
        return rename_layers(summary, load_model(resolve(run_dir))[0])
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
