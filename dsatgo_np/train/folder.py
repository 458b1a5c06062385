"""The run folder: the unit of work of the training command (config.json, metrics.jsonl,
last.npz, best.npz, plots/).

The folder given is the folder used (its stored path is never read back). One writer at a
time: a run holds an OS lock on ``<folder>/.lock`` (``fcntl.flock``, released however the
process ends), claimed atomically, and a folder is only removed by the lock's holder. Nothing
is read or written through a symbolic link. Every OSError while writing becomes RunIOError,
naming the file and the fix. rows.py keeps metrics.jsonl and last.npz in step on resume.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import sys

from ..checkpoint import TMP_SUFFIX, atomic_write

try:
    import fcntl
except ImportError:             # not on POSIX: no lock, everything else works
    fcntl = None

CONFIG, METRICS, LAST, BEST, LOCK = "config.json", "metrics.jsonl", "last.npz", "best.npz", ".lock"
RUN_FILES = (CONFIG, METRICS, LAST, BEST)
OWN = RUN_FILES + (LOCK, "plots")       # never followed when they are symbolic links


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


def _make_dirs(path: str) -> list:
    """Create ``path`` and its missing parents, one os.mkdir each; return the folders this call
    created, outermost first (only those may be removed again, and only when empty)."""
    missing, p = [], path
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    created = []
    for d in reversed(missing):
        try:
            os.mkdir(d)
            created.append(d)
        except FileExistsError:
            if not os.path.isdir(d):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), d) from None
    return created


class RunFolder:
    """One run folder, by absolute path."""

    def __init__(self, path):
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self._fd = None
        self._claimed = False
        self._created = []

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def claimed(self) -> bool:
        """Whether this object holds the folder's claim (claim() until release())."""
        return self._claimed

    def holds_run(self) -> bool:
        return any(os.path.lexists(self.file(f)) for f in RUN_FILES)

    # --- the claim --------------------------------------------------------------------------
    def claim(self, create: bool = False) -> "RunFolder":
        """Take the folder's lock, creating the folder (and its missing parents) first when
        ``create``; raise RunBusy naming the holder's PID when another process has it.

        Race-free: the lock file is opened (created if missing, never through a link), locked,
        and then checked to be the file the path still names; a folder removed or re-created
        in between by another process's clean-up makes this call start over."""
        if create:
            with writing(self.path):
                self._created = _make_dirs(self.path)
        elif not os.path.isdir(self.path):
            raise FileNotFoundError(f"no run folder at {self.path}: check the path given to "
                                    "--resume")
        if fcntl is None:
            self._claimed = True
            return self
        path = self.file(LOCK)
        for _ in range(1000):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            except FileNotFoundError:             # the folder went away under us
                if not create:
                    raise FileNotFoundError(f"no run folder at {self.path}: it was "
                                            "removed") from None
                with writing(self.path):
                    self._created += _make_dirs(self.path)
                continue
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise self._link_error(LOCK) from None
                with writing(path):
                    raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunBusy(f"{self.path} is in use by another training run (PID "
                              f"{self._holder()}): wait for it to finish or stop it, or choose "
                              "another --out") from None
            except OSError as e:     # a file system without locks (some network mounts)
                print(f"warning: cannot lock {path} ({e.strerror or e}); running without the "
                      "guard against a second run in the same folder", file=sys.stderr)
            if self._names(path, fd):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd, self._claimed = fd, True
                return self
            os.close(fd)           # the lock file was removed or replaced: claim it anew
        raise RunError(f"could not claim {self.path}: other processes keep removing and "
                       "re-creating it; choose another --out")

    @staticmethod
    def _names(path: str, fd: int) -> bool:
        """True when ``path`` is, right now, the file open as ``fd``."""
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        own = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)

    def _holder(self) -> str:
        try:
            fd = os.open(self.file(LOCK), os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd) as f:
                return f.read().strip() or "unknown"
        except (OSError, ValueError):
            return "unknown"

    def release(self):
        """Give the claim back. A folder left holding nothing but the lock file loses it (only
        while this process still holds the lock, so never one that another process has
        claimed), and then the folders this process created go too, when empty: a command
        that failed leaves the disk as it found it."""
        try:
            if set(os.listdir(self.path)) <= {LOCK}:
                if self._fd is not None:
                    os.remove(self.file(LOCK))
                for d in reversed(self._created):
                    os.rmdir(d)
        except OSError:
            pass                  # not empty (another process's files), or gone already
        finally:
            self._created, self._claimed = [], False
            if self._fd is not None:
                os.close(self._fd)          # closing the descriptor releases the flock
                self._fd = None

    def __enter__(self):
        if not self._claimed:
            self.claim()
        return self

    def __exit__(self, *exc):
        self.release()

    # --- files ------------------------------------------------------------------------------
    def _link_error(self, name: str) -> RunError:
        path = self.file(name)
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return RunError(f"{path} is a symbolic link (to {target}); a run writes only its own "
                        f"files: replace the link by a copy of the file (cp --remove-destination "
                        f"{target} {path}) or remove it")

    def check_links(self):
        """Refuse a run whose files (or plots/) are symbolic links: writing through them would
        change files outside the folder."""
        for name in OWN:
            if os.path.islink(self.file(name)):
                raise self._link_error(name)

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

    def _read(self, name: str) -> bytes:
        """The bytes of one of the run's files, never through a link."""
        try:
            fd = os.open(self.file(name), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise self._link_error(name) from None
            raise
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def read_config(self) -> dict:
        """config.json as a dict; RunError naming the file when it is not a JSON object in
        UTF-8 (the caller checks its options)."""
        path = self.file(CONFIG)
        try:
            values = json.loads(self._read(CONFIG).decode("utf-8"))
        except FileNotFoundError:
            if self.holds_run():
                raise RunError(f"{self.path} has no config.json but holds a run's files: the "
                               "run's options are lost; restore config.json from a copy of the "
                               "run") from None
            raise RunError(f"{self.path} holds no run: the run that created it stopped before "
                           "it began (no config.json); start it again with --out "
                           f"{self.path} and its options") from None
        except UnicodeDecodeError as e:
            raise RunError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): the file "
                           "is damaged; restore it from a copy of the run") from None
        except ValueError as e:
            raise RunError(f"{path} is not valid JSON ({e}): the file is damaged; restore it "
                           "from a copy of the run") from None
        if not isinstance(values, dict):
            raise RunError(f"{path} holds no JSON object of options: the file is damaged; "
                           "restore it from a copy of the run")
        return values

    def write_config(self, config: dict):
        text = (json.dumps(config, indent=2) + "\n").encode()
        with writing(self.file(CONFIG)):
            atomic_write(self.file(CONFIG), lambda f: f.write(text))

    def read_rows(self) -> tuple[list, bool]:
        """-> (rows, torn): every whole line of metrics.jsonl as a row, and whether bytes
        without a final newline follow them (an append cut short by a kill). A whole line
        that is not a JSON object with an integer "epoch" raises RunError naming its line."""
        path = self.file(METRICS)
        try:
            data = self._read(METRICS)
        except FileNotFoundError:
            return [], False
        lines = data.split(b"\n")
        torn = lines.pop() != b""              # what follows the last newline
        rows = []
        for n, line in enumerate(lines, 1):
            try:
                row = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                row = None
            if not isinstance(row, dict) or not _is_int(row.get("epoch")):
                shown = line[:40].decode("utf-8", "replace")
                raise RunError(f"{path}, line {n}, is not an epoch's row ({shown!r}): "
                               f"nothing was changed; {_ROWS_FIX}")
            rows.append(row)
        return rows, torn

    def write_rows(self, rows: list):
        text = "".join(json.dumps(r) + "\n" for r in rows).encode()
        with writing(self.file(METRICS)):
            atomic_write(self.file(METRICS), lambda f: f.write(text))

    def append_row(self, row: dict) -> int:
        """Append one epoch's row (never through a link); returns the file's size before, for
        truncate_rows."""
        path = self.file(METRICS)
        with writing(path):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            with os.fdopen(fd, "w") as f:
                size = os.fstat(fd).st_size
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(fd)
        return size

    def truncate_rows(self, size: int):
        """Undo an append_row whose checkpoint could not be saved (best effort)."""
        try:
            fd = os.open(self.file(METRICS), os.O_WRONLY | os.O_NOFOLLOW)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)
        except OSError:
            pass


_ROWS_FIX = ("metrics.jsonl must hold one JSON row per finished epoch, epochs 1, 2, ... in "
             "order: repair the file or restore it from a copy of the run")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
