"""Figures of what the spiking layers do: analogues of the paper's Figs. 5, 8, 10 and 11.

The plot_* functions save a PNG and return its path, the *_figure functions return the Figure
itself. Inputs are the plain dicts of diagnostics: a "summary" is {layer: stats} as
diagnostics.collect() or Recorder.summary() give it, keyed by readable layer names such as
"spike 1 (fc 784-512)". Colour scales (images) always carry a colour bar.
"""
from __future__ import annotations

import numpy as np

from ..core.surrogate import dynamic_width
from . import THEOREM1_RATE, gaussian_window_share
from .style import PALETTE, _figure, _save, colour, line_style

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
        for val, other, tint in pairs:
            ax.plot(mark, val, "o", color=tint)       # label above the upper point, below the lower
            ax.annotate(f"{val:.2f} %", (mark, val), textcoords="offset points", fontsize=8,
                        xytext=(5, 6 if val >= other else -13), color=tint)
    ax.set_xlabel("spread s of the membrane potential, H ~ N(0, s^2), theta = s")
    ax.set_ylabel("inside the window (%)")
    ax.set_title("Gradient-available share under the Gaussian model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
