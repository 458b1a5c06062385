"""SIGKILL anywhere, resume, and the run ends as if nothing had happened.

A small training run (digits, 3 epochs of 15 batches) is killed with SIGKILL at many points:
in the middle of an epoch before any checkpoint exists, inside a checkpoint save (half of
the file written), after a save's data but before its rename, between the metrics row and
the checkpoint, between best.npz and last.npz, and once stopped by Ctrl-C in mid-epoch.
After each kill the training command is run again (--resume once the folder holds a run).
The final weights and optimiser state must be bit-equal to an uninterrupted run's, and
metrics.jsonl must hold exactly one row per epoch, equal to the uninterrupted run's rows.

Each attempt is a forked child of one supervisor process (`python this_file.py WORKDIR`,
single-threaded: OPENBLAS_NUM_THREADS=1 and DSATGO_THREADS=1, importing the working tree's
dsatgo_np through PYTHONPATH), so no attempt pays for imports again: the whole test takes a
few seconds.
"""
import io
import json
import os
import signal
import sys

import numpy as np
import pytest

from digits_runs import ROOT, run_as_script, use_saved_digits

EPOCHS = 3
ARGS = ["--dataset", "digits", "--hidden", "32", "--batch-size", "100", "--lr", "0.1",
        "--epochs", str(EPOCHS), "--no-plots", "--quiet"]
# (where, n): stop the process the n-th time it reaches `where`, counted from its own start.
#   step: after an optimiser step      row: after an epoch's row went to metrics.jsonl
#   save: as a checkpoint save begins  savez: with half of a checkpoint's bytes written
#   rename: with a checkpoint written in full, before its rename into place
#   sigint: a Ctrl-C after a step (stops cleanly, exit 130); all others are SIGKILL
PLAN = [("step", 7),        # epoch 1 half done, no checkpoint yet: the next run starts over
        ("savez", 1),       # inside epoch 1's first save (best.npz)
        ("savez", 2),       # inside epoch 1's last.npz, best.npz already written
        ("row", 1),         # between epoch 1's row and its checkpoints
        ("save", 2),        # between best.npz and last.npz
        ("rename", 1),      # a whole temporary file, not yet renamed
        ("step", 20),       # epoch 1 saved; killed in epoch 2
        ("row", 1),         # between epoch 2's row and its checkpoint
        ("savez", 1),       # inside epoch 2's first save
        ("sigint", 4),      # Ctrl-C in epoch 2: last.npz with the position in the epoch
        ("step", 3),        # killed after resuming in the middle of an epoch
        ("save", 1),        # as epoch 2's first save begins
        ("step", 18)]       # epoch 2 saved; killed in epoch 3


def supervise(workdir):
    """Run the reference and the killed runs as forked children; print their exit statuses."""
    from dsatgo_np import checkpoint, optim, train
    from dsatgo_np.train import folder as runs, loop
    use_saved_digits(workdir)

    def child(run, where=None, n=0):
        count = [0]

        def reached(point):
            if point == where:
                count[0] += 1
                if count[0] == n:
                    sys.stdout.flush()
                    os.kill(os.getpid(), signal.SIGINT if where == "sigint" else signal.SIGKILL)

        real_step, real_append, real_save = optim.SGD.step, runs.RunFolder.append_row, \
            loop.save_checkpoint
        real_savez, real_replace = np.savez, os.replace

        def step(self):
            real_step(self)
            reached("step")
            reached("sigint")

        def append_row(self, row):
            size = real_append(self, row)
            reached("row")
            return size

        def save(*a, **k):
            reached("save")
            return real_save(*a, **k)

        def savez(f, **arrays):
            if where == "savez" and count[0] + 1 == n:
                buf = io.BytesIO()
                real_savez(buf, **arrays)
                f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
                f.flush()
            reached("savez")
            return real_savez(f, **arrays)

        def replace(src, dst):
            if str(dst).endswith(".npz"):
                reached("rename")
            return real_replace(src, dst)
        optim.SGD.step, runs.RunFolder.append_row, loop.save_checkpoint = step, append_row, save
        checkpoint.np.savez, checkpoint.os.replace = savez, replace
        folder = os.path.join(workdir, run)
        resume = os.path.exists(os.path.join(folder, "config.json"))
        argv = ["--resume", folder] if resume else ARGS + ["--out", folder]
        return train.main(argv)

    def attempt(*a):
        pid = os.fork()
        if pid == 0:
            try:
                code = child(*a)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            return signal.Signals(os.WTERMSIG(status)).name
        return os.WEXITSTATUS(status)

    import dsatgo_np
    results = dict(reference=attempt("reference"),
                   killed=[attempt("killed", where, n) for where, n in PLAN],
                   final=attempt("killed"), library=os.path.dirname(dsatgo_np.__file__))
    print(json.dumps(results))


def test_sigkill_anywhere_then_resume_ends_as_an_uninterrupted_run(tmp_path):
    pytest.importorskip("sklearn")
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    from dsatgo_np.checkpoint import read_checkpoint
    # the working tree's library, as the rest of the suite imports it (not an installed copy)
    r = run_as_script(__file__, tmp_path)
    results = json.loads(r.stdout.strip().splitlines()[-1])
    # every planned stop happened (a hook that never fired would make this test vacuous)
    expected = [130 if where == "sigint" else "SIGKILL" for where, _ in PLAN]
    assert results.pop("library") == os.path.join(ROOT, "dsatgo_np")
    assert results == dict(reference=0, killed=expected, final=0), r.stderr[-3000:]

    ref, run = tmp_path / "reference", tmp_path / "killed"
    for name in ("last.npz", "best.npz"):
        a_model, a_optim, a_meta = read_checkpoint(ref / name)
        b_model, b_optim, b_meta = read_checkpoint(run / name)
        assert a_model.keys() == b_model.keys() and a_optim.keys() == b_optim.keys()
        for k in a_model:
            np.testing.assert_array_equal(a_model[k], b_model[k], err_msg=f"{name} {k}")
        for k in a_optim:
            np.testing.assert_array_equal(a_optim[k], b_optim[k], err_msg=f"{name} {k}")
        assert a_meta["epoch"] == b_meta["epoch"] and a_meta["test_acc"] == b_meta["test_acc"]
    rows_a = [json.loads(x) for x in open(ref / "metrics.jsonl")]
    rows_b = [json.loads(x) for x in open(run / "metrics.jsonl")]
    assert [r["epoch"] for r in rows_b] == list(range(1, EPOCHS + 1))
    for a, b in zip(rows_a, rows_b):
        for row in (a, b):
            row.pop("time")                          # wall time differs, nothing else may
        assert a == b
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")]


if __name__ == "__main__":
    supervise(sys.argv[1])
