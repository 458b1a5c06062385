"""The run folder: the unit of work of the training command.

A run folder holds config.json, metrics.jsonl (one JSON row per finished epoch), last.npz,
best.npz and plots/. What this module guarantees:

- The folder given is the folder used: its path is resolved once, at the start; the `out`
  stored in config.json is never read back.
- One writer at a time: a run holds an OS lock (``fcntl.flock``) on ``<folder>/.lock`` while it
  writes; the lock goes with the process, however it ends (even SIGKILL). A second run gets
  :class:`RunBusy` naming the holder's PID.
- metrics.jsonl and last.npz agree: an epoch's row is appended before its checkpoint is saved,
  and on resume every row past the checkpoint's epoch is dropped (a row the checkpoint knows but
  the file lost is restored from the checkpoint). Temporaries of an interrupted save
  (``*.tmp``) are removed at the start.
- Files follow the umask. Every OSError while writing becomes :class:`RunIOError`, whose
  message names the file and the fix.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import sys

from .checkpoint import TMP_SUFFIX, atomic_write

try:
    import fcntl
except ImportError:             # not on POSIX: no lock, everything else works
    fcntl = None

CONFIG, METRICS, LAST, BEST, LOCK = "config.json", "metrics.jsonl", "last.npz", "best.npz", ".lock"
RUN_FILES = (CONFIG, METRICS, LAST, BEST)


class RunError(Exception):
    """A failure of the training command; ``exit_code`` is what the command exits with."""
    exit_code = 2


class RunBusy(RunError):
    """Another process holds the run folder's lock."""


class Diverged(RunError):
    """A non-finite loss, gradient, weight or running statistic stopped training."""
    exit_code = 3


class RunIOError(RunError):
    """A file of the run could not be written (disk full, permissions, not a folder)."""
    exit_code = 4


_FIXES = {
    errno.ENOSPC: "free some disk space (or choose --out on another disk), then --resume the run",
    errno.EDQUOT: "free some of your disk quota, then --resume the run",
    errno.EACCES: "make the folder writable or choose another --out",
    errno.EPERM: "make the folder writable or choose another --out",
    errno.EROFS: "the file system is read-only: choose another --out",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another --out",
    errno.EEXIST: "a part of the path is a file, not a folder: choose another --out",
    errno.EISDIR: "a folder stands where the run keeps a file: remove it or choose another --out",
}


@contextlib.contextmanager
def writing(path):
    """Turn an OSError raised inside the block into a RunIOError naming ``path`` and the fix."""
    try:
        yield
    except OSError as e:
        fix = _FIXES.get(e.errno, "check the folder and the disk, then --resume the run")
        raise RunIOError(f"cannot write {path} ({e.strerror or e}): {fix}") from e


class RunFolder:
    """One run folder, by absolute path."""

    def __init__(self, path):
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self._fd = None

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def holds_run(self) -> bool:
        return any(os.path.exists(self.file(f)) for f in RUN_FILES)

    # --- the lock ---------------------------------------------------------------------------
    def acquire(self):
        """Take the folder's lock or raise RunBusy with the holder's PID."""
        if fcntl is None:
            return
        path = self.file(LOCK)
        with writing(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            try:
                with open(path) as f:
                    holder = f.read().strip() or "unknown"
            except OSError:
                holder = "unknown"
            raise RunBusy(f"{self.path} is in use by another training run (PID {holder}): wait "
                          "for it to finish or stop it, or choose another --out") from None
        except OSError as e:     # a file system without locks (some network mounts)
            print(f"warning: cannot lock {path} ({e.strerror or e}); running without the guard "
                  "against a second run in the same folder", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self):
        if self._fd is not None:
            os.close(self._fd)          # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def remove_if_unused(self):
        """Remove the folder when it holds nothing but the lock file (a run that failed before
        writing anything must not leave an empty folder behind)."""
        try:
            if set(os.listdir(self.path)) <= {LOCK}:
                if os.path.exists(self.file(LOCK)):
                    os.remove(self.file(LOCK))
                os.rmdir(self.path)
        except OSError:
            pass

    # --- files ------------------------------------------------------------------------------
    def remove_temporaries(self) -> list:
        """Delete what an interrupted atomic save leaves: '<file>.<random>.tmp' (and the
        'tmp*.npz.tmp' of earlier versions). Returns the names removed."""
        removed = []
        for name in os.listdir(self.path):
            ours = any(name.startswith(f + ".") for f in RUN_FILES) or name.startswith("tmp")
            if ours and name.endswith(TMP_SUFFIX):
                with writing(self.file(name)):
                    os.remove(self.file(name))
                removed.append(name)
        return removed

    def write_config(self, config: dict):
        text = (json.dumps(config, indent=2) + "\n").encode()
        with writing(self.file(CONFIG)):
            atomic_write(self.file(CONFIG), lambda f: f.write(text))

    def read_rows(self) -> list:
        """The rows of metrics.jsonl up to the first line that is not a whole JSON row (a kill
        during an append leaves half a line)."""
        rows = []
        try:
            with open(self.file(METRICS)) as f:
                for line in f:
                    if not line.endswith("\n"):
                        break
                    try:
                        row = json.loads(line)
                    except ValueError:
                        break
                    if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                        break
                    rows.append(row)
        except FileNotFoundError:
            pass
        return rows

    def sync_rows(self, epochs_done: int, saved_row: dict | None = None) -> list:
        """Make metrics.jsonl hold exactly one row for each epoch 1..epochs_done, as far as it
        knows them: rows past the checkpoint are dropped, a duplicated epoch keeps its first
        row, the checkpoint's own row fills in a lost last row. Rewritten only if it changes."""
        rows = self.read_rows()
        kept, seen = [], set()
        for row in rows:
            if row["epoch"] <= epochs_done and row["epoch"] not in seen:
                kept.append(row)
                seen.add(row["epoch"])
        if saved_row is not None and saved_row.get("epoch") == epochs_done \
                and epochs_done not in seen:
            kept.append(saved_row)
        if kept == rows and self._whole_file(len(rows)):
            return kept
        text = "".join(json.dumps(r) + "\n" for r in kept).encode()
        with writing(self.file(METRICS)):
            atomic_write(self.file(METRICS), lambda f: f.write(text))
        return kept

    def _whole_file(self, n_rows: int) -> bool:
        """True when metrics.jsonl has exactly n_rows lines (no half line after them)."""
        try:
            with open(self.file(METRICS), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return n_rows == 0
        return data.count(b"\n") == n_rows and (not data or data.endswith(b"\n"))

    def append_row(self, row: dict) -> int:
        """Append one epoch's row; returns the file's size before, for truncate_rows."""
        path = self.file(METRICS)
        with writing(path):
            size = os.path.getsize(path) if os.path.exists(path) else 0
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
        return size

    def truncate_rows(self, size: int):
        """Undo an append_row whose checkpoint could not be saved (best effort)."""
        try:
            os.truncate(self.file(METRICS), size)
        except OSError:
            pass
