"""Shared by the numbered tutorials: fast mode, colours and saving figures.

    FAST = True when the environment variable DSATGO_FAST=1 (the tests run every tutorial
    this way: smaller data, fewer epochs, smaller samples; the asserts stay the same).
    savefig(fig, "name") writes tutorials/figures/name.png (or $DSATGO_FIGURES/name.png).
    Lines take their colours from dsatgo_np.diagnostics.style.PALETTE (Okabe-Ito, colour-blind safe,
    no yellow): "C0", "C1", ... in a tutorial name its colours in that order.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib
from cycler import cycler

from dsatgo_np.diagnostics.style import PALETTE

FAST = os.environ.get("DSATGO_FAST") == "1"
IN_NOTEBOOK = "ipykernel" in sys.modules
if not IN_NOTEBOOK and "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")   # as a script: write PNGs, never open a window

matplotlib.rcParams["axes.prop_cycle"] = cycler(color=PALETTE)

FIGURES = Path(os.environ.get("DSATGO_FIGURES") or Path(__file__).resolve().parent / "figures")


def savefig(fig, name: str) -> None:
    """Save ``fig`` as <figures>/<name>.png; in a notebook it is also shown below the cell."""
    import matplotlib.pyplot as plt
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    if not IN_NOTEBOOK:
        plt.close(fig)      # a script keeps no figure open; a notebook shows it at cell end
