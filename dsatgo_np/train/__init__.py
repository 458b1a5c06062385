"""The training command: python -m dsatgo_np.train (dsatgo-train once installed).

    recipe (dsatgo_np/recipe.py)  the options, their checks, the data and the network
    exits.py     exit codes, signals, the command's name
    folder.py    the run folder (lock, files, rows);  rows.py  metrics.jsonl against last.npz
    resume.py    where a run starts: a new run's setup, a resumed run's files checked
    loop.py      fit(): the training loop;  evaluate.py  test accuracy
    cli.py       the command line: options, subcommands, one-line errors

The names below are the command's face: dsatgo_np.train.fit, .Config, .main, ...
"""
from __future__ import annotations

import sys

from ..recipe import (MODELS, Config, build_model, check_config, check_memory,  # noqa: F401
                      config_from_dict, load_data, make_optimizer)
from .evaluate import accuracy, evaluate, evaluate_checkpoint, evaluate_net  # noqa: F401
from .exits import EXIT_CODES, SIGNAL_EXIT, Interrupted, prog  # noqa: F401
from .folder import (BEST, CONFIG, LAST, METRICS, Diverged, RunBusy, RunError,  # noqa: F401
                     RunFolder, RunIOError)
from .loop import check_finite, fit, make_plots  # noqa: F401
from .resume import FIXED, refuse_changes  # noqa: F401


def main(argv=None) -> int:
    """The command line (cli.main): returns the exit code instead of raising."""
    try:
        from .cli import main as run
    except KeyboardInterrupt:                 # Ctrl-C while the command line is loading
        print("stopped (Ctrl-C) before anything was written", file=sys.stderr)
        return 130
    return run(argv)
