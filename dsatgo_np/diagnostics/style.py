"""The figures' common style: the Okabe-Ito palette, dash patterns, a fresh Agg figure, saving.

Every figure is drawn on its own matplotlib Figure with the Agg canvas (no pyplot, no global
backend switch, nothing left open). The palette is one that readers with any common
colour-vision deficiency can tell apart, without its yellow (unreadable as a line on white);
past seven lines the dash pattern changes too.
"""
from __future__ import annotations

import os


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
