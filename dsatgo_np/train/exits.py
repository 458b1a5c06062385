"""The training command's exit codes, its signals and its name as the user typed it.

Ctrl-C or SIGTERM (StopFlag): the first finishes the batch, saves last.npz and stops; a second
stops at once (Interrupted), except inside a save, which is let finish.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

EXIT_CODES = {
    0: "finished (or nothing left to do)",
    1: "internal error: a bug; rerun with --debug and report the traceback",
    2: "bad options or input: an argument, an option, the config file, the data, a checkpoint "
       "or model file, a run folder whose files are damaged, disagree or are links, a folder "
       "that holds another run or is in use, an optional package that is not installed",
    3: "training diverged: a non-finite loss, gradient, weight or running statistic; "
       "last.npz and best.npz from before are kept",
    4: "I/O failure: a file of the run could not be written (disk full, permissions); "
       "last.npz and best.npz from before are kept",
    130: "stopped by Ctrl-C (SIGINT): after saving last.npz (--resume continues), or before "
         "anything was written",
    143: "stopped by SIGTERM: after saving last.npz (--resume continues), or before anything "
         "was written",
}
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM that stops the command at once. started: whether the run had begun
    to write (then its last saved checkpoint stays as it was); before that, nothing was
    written."""

    def __init__(self, signum, started: bool = True):
        super().__init__(signum)
        self.signum, self.started = signum, started


class StopFlag:
    """First Ctrl-C (or SIGTERM, as a shutdown sends): finish the batch, save, stop.
    Second one: stop at once, except inside a save (``with stop.saving():``), which is let
    finish, since the run stops right after it anyway."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self._saving = False

    @property
    def set(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        # Python runs signal handlers in the main thread only; elsewhere (a worker thread)
        # training runs without them.
        main = threading.current_thread() is threading.main_thread()
        self.old = {s: signal.signal(s, self._handle) for s in self.SIGNALS} if main else {}
        return self

    def _handle(self, signum, frame):
        if self.set:
            if self._saving:
                return
            raise Interrupted(signum)
        self.signum = signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{name}: stopping after this batch and saving a checkpoint "
              "(send it again to stop at once)", file=sys.stderr)

    @contextlib.contextmanager
    def saving(self):
        self._saving = True
        try:
            yield
        finally:
            self._saving = False

    def __exit__(self, *exc):
        for s, handler in self.old.items():
            signal.signal(s, handler)



def prog() -> str:
    """The command's name as the user typed it: the console script or the module."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("dsatgo-train") else "python -m dsatgo_np.train"
