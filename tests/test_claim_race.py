"""Two or three training runs started at the same instant into the same new folder: exactly one
trains, the others are refused, and a --resume started while the winner trains is refused too.

Each trial forks its writers from one supervisor process (`python this_file.py WORKDIR`, which
imports the library once); they wait on a shared pipe and start together when it closes. The
winner's steps are slowed a little so that it is still training when the --resume comes. A
claim that let a loser's clean-up remove the winner's lock (or folder) lets that --resume in:
two writers, whose rows interleave in metrics.jsonl.
"""
import json
import os
import sys
import time

import pytest

from digits_runs import run_as_script, use_saved_digits

EPOCHS = 3
ARGS = ["--dataset", "digits", "--hidden", "16", "--batch-size", "100", "--train-subset", "300",
        "--epochs", str(EPOCHS), "--no-plots", "--quiet"]
TRIALS = {2: 12, 3: 12}          # writers at once: trials


def supervise(workdir):
    """Run every trial; print one JSON line per trial: the writers' and the resumer's exits."""
    from dsatgo_np import optim, train
    use_saved_digits(workdir)
    real_step = optim.SGD.step

    def slow_step(self):
        real_step(self)
        time.sleep(0.02)                     # 9 steps: the winner trains for 0.2 s at least
    optim.SGD.step = slow_step

    def fork(argv, pipe=None):
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            if pipe is not None:
                os.close(pipe[1])            # the write end must be the supervisor's alone
                os.read(pipe[0], 1)          # blocks until the supervisor closes it
            sys.stdout = open(os.devnull, "w")
            sys.stderr = open(os.path.join(workdir, f"err-{os.getpid()}"), "w")
            code = train.main(argv)
        finally:
            sys.stderr.flush()
            os._exit(code)

    def wait(pid):
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    def err(pid):
        try:
            with open(os.path.join(workdir, f"err-{pid}")) as f:
                return f.read().strip()
        except OSError:
            return ""

    for writers, trials in TRIALS.items():
        for t in range(trials):
            out = os.path.join(workdir, f"w{writers}-t{t}", "run")     # a parent to create too
            pipe = os.pipe()
            pids = [fork(ARGS + ["--out", out], pipe) for _ in range(writers)]
            os.close(pipe[0])
            os.close(pipe[1])                # every writer starts now
            codes, left = {}, set(pids)
            while len(codes) < writers - 1:  # the losers give up at once
                pid, status = os.wait()
                codes[pid] = os.waitstatus_to_exitcode(status)
                left.discard(pid)
            resumer = fork(["--resume", out, "--quiet"])
            resumed = wait(resumer)
            for pid in left:
                codes[pid] = wait(pid)
            rows = []
            if os.path.exists(os.path.join(out, "metrics.jsonl")):
                rows = [json.loads(x)["epoch"] for x in open(os.path.join(out, "metrics.jsonl"))]
            print(json.dumps(dict(writers=writers, codes=sorted(codes.values()),
                                  errors=[err(p) for p in pids], resumed=resumed,
                                  resume_error=err(resumer), rows=rows)), flush=True)


def test_one_writer_wins_every_race(tmp_path):
    pytest.importorskip("sklearn")
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    trials = [json.loads(line) for line in run_as_script(__file__, tmp_path).stdout.splitlines()]
    assert [t["writers"] for t in trials] == [w for w, n in TRIALS.items() for _ in range(n)]
    for t in trials:
        # one winner; every other writer refused, naming why
        assert t["codes"] == [0] + [2] * (t["writers"] - 1), t
        refused = [e for e in t["errors"] if e]
        assert len(refused) == t["writers"] - 1, t
        assert all("in use by another training run" in e or "already holds a run" in e
                   for e in refused), t
        # the --resume came while the winner trained (refused), or after it (finished)
        assert t["resumed"] in (0, 2), t
        if t["resumed"] == 2:
            assert "in use by another training run" in t["resume_error"], t
        assert t["rows"] == list(range(1, EPOCHS + 1)), t       # one writer's rows, in order
    # the race test must race: most resumes came while a winner was training
    assert sum(t["resumed"] == 2 for t in trials) >= len(trials) // 2


if __name__ == "__main__":
    supervise(sys.argv[1])
