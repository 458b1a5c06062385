"""metrics.jsonl against last.npz on resume: every row checked, only a stop's damage repaired.

reconcile_rows checks every row (JSON, epochs 1, 2, ... in order) against the checkpoint; it
repairs only what a stop can leave (half a row at the end, rows past the checkpoint's epoch,
the checkpoint's own row lost) and reports anything else, changing nothing. check_best does
the same for best.npz.
"""
from __future__ import annotations

import json
import math
import os

from ..checkpoint import read_checkpoint
from .folder import _ROWS_FIX, BEST, METRICS, RunError, RunFolder

def _same_row(a: dict, b: dict) -> bool:
    """Rows are equal as JSON (NaN == NaN here, unlike in Python)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _test_acc(row: dict, path: str) -> float:
    acc = row.get("test_acc")
    if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not math.isfinite(acc):
        raise RunError(f"{path}: the row of epoch {row['epoch']} has no test accuracy "
                       f"({acc!r}): nothing was changed; {_ROWS_FIX}")
    return float(acc)


def reconcile_rows(rows: list, torn: bool, epoch: int, saved_row, best: float, path: str):
    """Check metrics.jsonl's rows against a checkpoint at ``epoch`` (its finished epochs),
    whose own row is ``saved_row`` (None for a checkpoint saved inside an epoch) and whose
    best test accuracy so far is ``best`` (-1 before the first epoch).

    Returns (rows to keep, the row dropped past the checkpoint or None, whether metrics.jsonl
    must be rewritten). The repairs are exactly what a stop can leave behind: half a row at
    the end (a kill during an append), one row past the checkpoint (a stop between an
    epoch's row and its checkpoint: that epoch is trained again, to the same row), and the
    checkpoint's own row missing at the end (restored from the checkpoint). Anything else
    (a gap, a duplicate, an epoch out of order, rows the checkpoint does not know, a row or
    best accuracy that differs from the checkpoint's) raises RunError: a valid row is never
    dropped."""
    for n, row in enumerate(rows, 1):
        if row["epoch"] != n:
            raise RunError(f"{path}, line {n}, holds epoch {row['epoch']} where epoch {n} "
                           f"belongs: nothing was changed; {_ROWS_FIX}")
    have = len(rows)
    if have > epoch + 1:
        raise RunError(f"{path} has rows up to epoch {have}, but last.npz has finished only "
                       f"{epoch} epoch(s): last.npz is older than the log (copied from another "
                       "run or an earlier state?); nothing was changed: restore the run's own "
                       "last.npz, or start a new run with --out")
    past = rows[epoch] if have == epoch + 1 else None
    kept = rows[:epoch]
    if have == epoch - 1 and saved_row is not None and saved_row.get("epoch") == epoch:
        kept = rows + [saved_row]               # the checkpoint's row, lost from the file
    elif have < epoch:
        raise RunError(f"{path} lacks the rows of epochs {have + 1} to {epoch}, which last.npz "
                       "has trained: nothing was changed; restore metrics.jsonl from a copy of "
                       "the run, or start a new run with --out")
    if saved_row is not None and epoch >= 1 and not _same_row(kept[epoch - 1], saved_row):
        raise RunError(f"{path}: the row of epoch {epoch} differs from the one last.npz saved "
                       "with it: last.npz comes from another run; nothing was changed: restore "
                       "the run's own last.npz, or start a new run with --out")
    logged = max((_test_acc(r, path) for r in kept), default=-1.0)
    if logged != best:
        raise RunError(f"{path}'s best test accuracy ({logged}) differs from last.npz's "
                       f"({best}): the two come from different runs; nothing was changed: "
                       "restore the run's own files, or start a new run with --out")
    rewrite = torn or past is not None or len(kept) != have
    return kept, past, rewrite


def check_best(folder: RunFolder, epoch: int, kept: list, past, last_is_epoch_end: bool):
    """Check best.npz against the rows: it must hold the first epoch with the best test
    accuracy among the kept rows, or the epoch being committed when a stop came between its
    best.npz and its last.npz (one past the checkpoint, better than every kept row).

    Returns None when it does, "rewrite" when it does not but the best epoch is the
    checkpoint's own epoch (last.npz then holds that network: write best.npz from it), or a
    warning when best.npz is missing and no other file holds the best network. Raises
    RunError, changing nothing, for a best.npz that is damaged or from another epoch or run
    and cannot be rebuilt."""
    path = folder.file(BEST)
    accs = [_test_acc(r, folder.file(METRICS)) for r in kept]
    top = max(accs, default=-1.0)
    k = accs.index(top) + 1 if accs else None          # the first epoch with the top accuracy
    if not os.path.lexists(path):
        problem = None
    else:
        try:
            _, _, meta = read_checkpoint(path)
        except (ValueError, TypeError, OSError) as e:
            problem = str(e)
        else:
            b, acc = meta.get("epoch"), meta.get("test_acc")
            ahead = (b == epoch + 1 and _is_real(acc) and acc > top
                     and (past is None or past.get("test_acc") == acc))
            if (k is not None and b == k and acc == top) or ahead:
                return None
            problem = (f"{path} holds epoch {b!r} (test accuracy {acc!r}), but the run's best "
                       f"is epoch {k} ({top})" if k is not None else
                       f"{path} holds epoch {b!r}, but the run has no finished epoch")
    if k is None:
        if problem is None:
            return None
        raise RunError(f"{problem}: it does not belong to this run; nothing was changed: move "
                       f"it away (mv {path} {path}.old), and the first epoch writes a new one")
    if k == epoch and last_is_epoch_end:
        return "rewrite"
    if problem is None:
        return (f"warning: {folder.path} has no best.npz, and no other file holds its best "
                f"epoch ({k}, test accuracy {100 * top:.2f} %): evaluate and dn.load use "
                "last.npz until an epoch does better")
    raise RunError(f"{problem}; no other file holds epoch {k}'s network, so nothing was "
                   f"changed: restore best.npz from a copy of the run, or move it away (mv "
                   f"{path} {path}.old) to go on without it")


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
