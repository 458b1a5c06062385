"""The run folder as the unit of work: the folder given is the folder used, one writer at a time,
metrics and checkpoints that agree, numerical guards, exit codes and one-line errors.

Small runs of the training command on the offline digits set (scikit-learn), a second or less
each.
"""
import errno
import dataclasses
import json
import os
import shutil
import signal
import stat

import numpy as np
import pytest

pytest.importorskip("sklearn")

from dsatgo_np import checkpoint, data, optim, train  # noqa: E402
from dsatgo_np.core import losses  # noqa: E402
from dsatgo_np.train import folder as runs, loop, resume  # noqa: E402
from dsatgo_np.train.folder import RunFolder  # noqa: E402
from digits_runs import FAST, small  # noqa: E402



def rows(run):
    return [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def run_cli(argv, capsys):
    code = train.main(argv)
    err = capsys.readouterr().err
    return code, err


# --- 1. the folder given is the folder used ------------------------------------------------

def test_resuming_a_copy_writes_the_copy_and_leaves_the_original_alone(tmp_path, capsys):
    cfg = small(tmp_path, "orig")
    train.fit(cfg, verbose=False)
    before = read_bytes(os.path.join(cfg.out, "last.npz"))
    copy = tmp_path / "copy"
    shutil.copytree(cfg.out, copy)
    assert train.main(["--resume", str(copy), "--epochs", "2", "--quiet"]) == 0
    assert read_bytes(os.path.join(cfg.out, "last.npz")) == before
    assert [r["epoch"] for r in rows(cfg.out)] == [1]
    assert [r["epoch"] for r in rows(copy)] == [1, 2]
    assert json.load(open(copy / "config.json"))["out"] == str(copy)


def test_a_moved_run_resumes_where_it_is(tmp_path):
    cfg = small(tmp_path, "orig")
    train.fit(dataclasses.replace(cfg, out=tmp_path / "orig"), verbose=False)  # a Path
    moved = tmp_path / "moved"
    os.rename(cfg.out, moved)
    assert train.main(["--resume", str(moved), "--epochs", "2", "--quiet"]) == 0
    assert [r["epoch"] for r in rows(moved)] == [1, 2]
    assert not os.path.exists(cfg.out)               # no stray folder at the stored path


def test_a_relative_run_folder_resumed_from_elsewhere(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    train.fit(small(tmp_path, out="rel"), verbose=False)
    monkeypatch.chdir(tmp_path / "b")
    assert train.main(["--resume", "../a/rel", "--epochs", "2", "--quiet"]) == 0
    assert os.listdir(tmp_path / "b") == []
    assert [r["epoch"] for r in rows(tmp_path / "a" / "rel")] == [1, 2]


# --- 2. config.json only after every check -------------------------------------------------

def test_a_failed_resume_leaves_config_json_as_it_was(tmp_path, capsys, monkeypatch):
    cfg = small(tmp_path)
    train.fit(cfg, verbose=False)
    config = read_bytes(os.path.join(cfg.out, "config.json"))
    real = data.load

    def no_data(*a, **k):
        raise data.DataError("no data here: fix it")
    monkeypatch.setattr(data, "load", no_data)       # fails after the checkpoint was read
    code, err = run_cli(["--resume", cfg.out, "--lr", "0.01", "--epochs", "2", "--quiet"], capsys)
    assert code == 2 and "no data here" in err
    assert read_bytes(os.path.join(cfg.out, "config.json")) == config
    monkeypatch.setattr(data, "load", real)
    assert train.main(["--resume", cfg.out, "--epochs", "2", "--quiet"]) == 0


# --- 3. one writer at a time ---------------------------------------------------------------

def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path, capsys):
    cfg = small(tmp_path, epochs=2)
    results = []

    def second_writer(epoch, i):
        if (epoch, i) == (1, 2):                   # while the first run is in its 2nd epoch
            results.append(run_cli(["--resume", cfg.out, "--epochs", "3", "--quiet"], capsys))
            results.append(run_cli(FAST + ["--out", cfg.out], capsys))
    train.fit(cfg, on_batch=second_writer, verbose=False)
    for code, err in results:
        assert code == 2
        assert f"in use by another training run (PID {os.getpid()})" in err
    assert [r["epoch"] for r in rows(cfg.out)] == [1, 2]
    # the lock went with the run: the folder can be resumed now
    assert train.main(["--resume", cfg.out, "--epochs", "3", "--quiet"]) == 0


def test_the_lock_is_released_after_a_failure(tmp_path, capsys):
    cfg = small(tmp_path)
    train.fit(cfg, verbose=False)
    code, _ = run_cli(["--resume", cfg.out, "--hidden", "64", "--epochs", "2", "--quiet"], capsys)
    assert code == 2
    RunFolder(cfg.out).claim().release()           # nobody holds it any more


# --- 4. metrics.jsonl and last.npz agree ---------------------------------------------------

def test_rows_past_the_checkpoint_are_dropped_on_resume(tmp_path):
    cfg = small(tmp_path)
    train.fit(cfg, verbose=False)
    first = rows(cfg.out)
    with open(os.path.join(cfg.out, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(dict(first[0], epoch=2, test_acc=0.0)) + "\n")   # a stop after the
        f.write('{"epoch": 3, "train_lo')                                   # row, and half a row
    assert train.main(["--resume", cfg.out, "--epochs", "2", "--quiet"]) == 0
    got = rows(cfg.out)
    assert [r["epoch"] for r in got] == [1, 2] and got[0] == first[0]
    assert got[1]["test_acc"] == checkpoint.read_checkpoint(os.path.join(cfg.out, "last.npz"))[2]["test_acc"]


def test_a_row_lost_after_its_checkpoint_is_restored(tmp_path):
    cfg = small(tmp_path)
    train.fit(cfg, verbose=False)
    first = rows(cfg.out)
    open(os.path.join(cfg.out, "metrics.jsonl"), "w").close()
    assert train.main(["--resume", cfg.out, "--epochs", "2", "--quiet"]) == 0
    got = rows(cfg.out)
    assert [r["epoch"] for r in got] == [1, 2] and got[0] == first[0]


def test_a_new_run_never_appends_to_old_metrics(tmp_path, capsys):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text('{"epoch": 1}\n')
    code, err = run_cli(FAST + ["--out", str(folder)], capsys)
    assert code == 2 and "already holds a run" in err and "--resume" in err
    assert (folder / "metrics.jsonl").read_text() == '{"epoch": 1}\n'


def test_a_failed_save_takes_the_row_back_and_exits_4(tmp_path, capsys, monkeypatch):
    cfg = small(tmp_path, epochs=2)
    calls = []

    def disk_full_at_epoch_2(f, **arrays):
        calls.append(1)
        if len(calls) > 2:                         # epoch 1's best.npz and last.npz went fine
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(f, **arrays)
    real = np.savez
    monkeypatch.setattr(checkpoint.np, "savez", disk_full_at_epoch_2)
    with pytest.raises(train.RunError) as e:
        train.fit(cfg, verbose=False)
    assert e.value.exit_code == 4 and "free some disk space" in str(e.value)
    assert [r["epoch"] for r in rows(cfg.out)] == [1]          # no row without a checkpoint
    _, _, meta = checkpoint.read_checkpoint(os.path.join(cfg.out, "last.npz"))
    assert meta["epoch"] == 1
    assert not [n for n in os.listdir(cfg.out) if n.endswith(".tmp")]


# --- 5. numerical guards -------------------------------------------------------------------

@pytest.mark.parametrize("flag, value, message", [
    ("--lr", "nan", "--lr must be a finite number"),
    ("--lr", "inf", "--lr must be a finite number"),
    ("--lr", "-0.1", "--lr must be a positive"),
    ("--momentum", "1.5", "--momentum must be in [0, 1)"),
    ("--f-c", "nan", "--f-c must be a finite number"),
    ("--label-smoothing", "1", "--label-smoothing must be in [0, 1)"),
    ("--weight-decay", "-1", "--weight-decay must be at least 0"),
    ("--hidden", "0", "--hidden must hold positive integers"),
    ("--diag-every", "0", "--diag-every must be an integer of at least 1"),
    ("--train-subset", "-5", "--train-subset must be a number of samples"),
    ("--train-subset", "100000", "--train-subset 100000 is more than the 1437"),
    ("--seed", "-1", "--seed must be an integer of at least 0"),
])
def test_bad_numbers_are_refused_before_anything_is_written(tmp_path, capsys, flag, value, message):
    out = tmp_path / "x"
    code, err = run_cli(FAST + ["--out", str(out), flag, value], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()                         # not even an empty folder


@pytest.mark.filterwarnings("ignore::RuntimeWarning")      # the overflow being tested
def test_divergence_stops_with_code_3_and_keeps_the_checkpoints(tmp_path, capsys):
    cfg = small(tmp_path)
    train.fit(cfg, verbose=False)
    last, best = (read_bytes(os.path.join(cfg.out, n)) for n in ("last.npz", "best.npz"))
    code, err = run_cli(["--resume", cfg.out, "--epochs", "2", "--lr", "1e30", "--quiet"], capsys)
    assert code == 3, err
    assert "training diverged at epoch 2, batch" in err and "lower --lr" in err
    assert read_bytes(os.path.join(cfg.out, "last.npz")) == last
    assert read_bytes(os.path.join(cfg.out, "best.npz")) == best
    assert [r["epoch"] for r in rows(cfg.out)] == [1]


def test_a_nan_gradient_names_the_step_and_the_gradient(tmp_path, monkeypatch):
    real = losses.cross_entropy
    calls = []

    def poisoned(out, y, smoothing=0.0, **options):
        calls.append(1)
        loss, dout = real(out, y, smoothing, **options)
        if len(calls) == 4:
            dout[0, 0, 0] = np.nan                   # finite loss, NaN gradient
        return loss, dout
    monkeypatch.setattr(losses, "cross_entropy", poisoned)
    with pytest.raises(train.Diverged, match=r"batch 4 of 15 \(step 4\): the gradient of "):
        train.fit(small(tmp_path), verbose=False)


def test_a_non_finite_running_statistic_is_caught(tmp_path):
    def overflow(epoch, i):
        if i == 5:                  # the trained network is the last one built (after a probe)
            value = next(b for n, b in net_ref[-1].named_buffers() if "running_var" in n)
            value[...] = np.inf
    net_ref = []
    real_build = train.build_model

    def keep(*a, **k):
        net = real_build(*a, **k)
        net_ref.append(net)
        return net
    import unittest.mock as mock
    with mock.patch.object(resume, "build_model", keep):
        with pytest.raises(train.Diverged, match="running statistic"):
            train.fit(small(tmp_path), on_batch=overflow, verbose=False)


def test_a_nan_input_pixel_is_refused_where_data_enters(tmp_path, monkeypatch, capsys):
    real = data.load

    def with_nan(name, split="train", root=None, **kw):
        x, y = real(name, split, root=root, **kw)
        x = x.copy()
        x[3, 0, 2, 2] = np.nan
        return x, y
    monkeypatch.setattr(data, "load", with_nan)
    out = tmp_path / "nan"
    code, err = run_cli(FAST + ["--out", str(out)], capsys)
    assert code == 2 and "non-finite input" in err
    assert not out.exists()


# --- 6. signals: 130 and 143, with the checkpoint saved -----------------------------------

@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_exit_with_their_codes(tmp_path, monkeypatch, sig, code):
    real_step, count = optim.SGD.step, []

    def step(self):
        real_step(self)
        count.append(1)
        if len(count) == 6:
            os.kill(os.getpid(), sig)
    monkeypatch.setattr(optim.SGD, "step", step)
    out = tmp_path / "sig"
    assert train.main(FAST + ["--out", str(out)]) == code
    _, _, meta = checkpoint.read_checkpoint(out / "last.npz")
    assert meta["position"]["batch"] == 6 and meta["position"]["epoch"] == 0
    assert not (out / "metrics.jsonl").exists() or rows(out) == []
    monkeypatch.setattr(optim.SGD, "step", real_step)
    assert train.main(["--resume", str(out), "--quiet"]) == 0
    assert [r["epoch"] for r in rows(out)] == [1]


# --- 7. one line naming the problem and the fix, never a traceback -------------------------

def test_out_below_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code, err = run_cli(FAST + ["--out", str(tmp_path / "afile" / "sub")], capsys)
    assert code == 4 and "not a folder" in err and "Traceback" not in err


def test_unwritable_run_folder(tmp_path, capsys, monkeypatch):
    real = checkpoint.tempfile.mkstemp

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", denied)
    code, err = run_cli(FAST + ["--out", str(tmp_path / "ro")], capsys)
    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", real)
    assert code == 4 and "make the folder writable" in err
    assert len(err.strip().splitlines()) == 1


def test_a_checkpoint_without_in_shape(tmp_path, capsys):
    cfg = small(tmp_path)
    net = train.build_model(cfg, (1, 8, 8), 10)
    import dataclasses
    path = tmp_path / "old.npz"
    checkpoint.save_checkpoint(path, net, None, dict(config=dataclasses.asdict(cfg)))
    code, err = run_cli(["evaluate", str(path)], capsys)
    assert code == 2 and "lacks in_shape" in err and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path, capsys):
    code, err = run_cli(FAST + ["--out", str(tmp_path / "d"), "--lr", "nan", "--debug"], capsys)
    assert code == 2 and "Traceback" in err and err.strip().endswith("got nan")


def test_an_internal_error_says_it_is_a_bug(tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(resume, "check_memory", boom)
    code, err = run_cli(FAST + ["--out", str(tmp_path / "z")], capsys)
    assert code == 1 and "internal error: ZeroDivisionError" in err and "--debug" in err
    assert not (tmp_path / "z").exists()


# --- 10. the smaller items -----------------------------------------------------------------

def test_leftover_temporaries_are_removed_at_the_start(tmp_path):
    cfg = small(tmp_path)
    train.fit(cfg, verbose=False)
    for name in ("last.npz.x1y2.tmp", "tmpab12cd.npz.tmp", "config.json.zz.tmp"):
        (tmp_path / "run" / name).write_bytes(b"\0" * 100)
    (tmp_path / "run" / "notes.tmp").write_text("mine")
    assert train.main(["--resume", cfg.out, "--epochs", "2", "--quiet"]) == 0
    assert sorted(n for n in os.listdir(cfg.out) if n.endswith(".tmp")) == ["notes.tmp"]


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_files_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        cfg = small(tmp_path)
        train.fit(cfg, verbose=False)
    finally:
        os.umask(old)
    for name in ("last.npz", "best.npz", "config.json", "metrics.jsonl"):
        mode = stat.S_IMODE(os.stat(os.path.join(cfg.out, name)).st_mode)
        assert mode == 0o666 & ~mask, (name, oct(mode))


def test_a_failure_after_set_up_leaves_no_folder(tmp_path, capsys, monkeypatch):
    def no_data(*a, **k):
        raise data.DataError("no data here: fix it")
    monkeypatch.setattr(data, "load", no_data)
    out = tmp_path / "never"
    code, err = run_cli(FAST + ["--out", str(out)], capsys)
    assert code == 2 and "no data here" in err and not out.exists()


def test_resuming_a_finished_run_says_how_to_extend_it(tmp_path, capsys):
    cfg = small(tmp_path)
    train.fit(cfg, verbose=False)
    config = read_bytes(os.path.join(cfg.out, "config.json"))
    assert train.main(["--resume", cfg.out, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "is finished after 1 epochs" in out and "--epochs 2" in out and "n/a" not in out
    assert read_bytes(os.path.join(cfg.out, "config.json")) == config


def test_plot_of_an_empty_metrics_file_is_an_error(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text("")
    code, err = run_cli(["plot", str(tmp_path)], capsys)
    assert code == 2 and "holds no finished epoch" in err


def test_ctrl_c_during_the_evaluation_stops_at_the_epoch_boundary(tmp_path, monkeypatch):
    real = train.evaluate

    def evaluate_then_ctrl_c(*a, **k):
        acc = real(*a, **k)
        os.kill(os.getpid(), signal.SIGINT)
        return acc
    monkeypatch.setattr(loop, "evaluate", evaluate_then_ctrl_c)
    out = tmp_path / "eval"
    assert train.main(FAST + ["--epochs", "3", "--out", str(out)]) == 130
    _, _, meta = checkpoint.read_checkpoint(out / "last.npz")
    assert meta["position"]["epoch"] == 1 and meta["position"]["batch"] == 0
    assert [r["epoch"] for r in rows(out)] == [1]


def test_resume_without_a_checkpoint_starts_over(tmp_path, capsys):
    """A run killed before its first checkpoint: --resume starts it from epoch 1."""
    cfg = small(tmp_path)
    folder = RunFolder(cfg.out)
    os.makedirs(folder.path)
    folder.write_config(dict(dataclasses.asdict(cfg), out="/somewhere/else"))
    assert train.main(["--resume", cfg.out, "--quiet"]) == 0
    assert [r["epoch"] for r in rows(cfg.out)] == [1]
    assert "has no checkpoint yet" in capsys.readouterr().out


def test_a_file_system_without_locks_warns_and_trains(tmp_path, capsys, monkeypatch):

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(runs.fcntl, "flock", no_locks)
    out = tmp_path / "nfs"
    assert train.main(FAST + ["--out", str(out)]) == 0
    assert "running without the guard" in capsys.readouterr().err
    assert [r["epoch"] for r in rows(out)] == [1]


# --- 11. start-up: checks before the folder, one line for a signal ---------------------------

def test_a_run_killed_while_it_starts_leaves_no_folder(tmp_path):
    """SIGKILL while the data load: the folder is claimed only after every check, so there is
    nothing to leave behind (no folder holding only .lock that --resume cannot read)."""
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    out = tmp_path / "a" / "run"
    pid = os.fork()
    if pid == 0:
        try:
            data.load = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
            train.main(FAST + ["--out", str(out)])
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert os.listdir(tmp_path) == []


def test_a_folder_claimed_but_never_configured(tmp_path, capsys):
    """What an older run killed at its start leaves: --resume says to start it again, and a
    new run may use the folder."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("12345\n")
    code, err = run_cli(["--resume", str(out), "--quiet"], capsys)
    assert code == 2 and "holds no run" in err and f"--out {out}" in err
    assert len(err.strip().splitlines()) == 1
    assert train.main(FAST + ["--out", str(out)]) == 0
    assert [r["epoch"] for r in rows(out)] == [1]


@pytest.mark.parametrize("sig, code, name", [(signal.SIGINT, 130, "Ctrl-C"),
                                             (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_while_the_run_starts_is_one_line(tmp_path, capsys, monkeypatch, sig, code, name):
    real = data.load

    def load_then_signal(*a, **k):
        os.kill(os.getpid(), sig)
        return real(*a, **k)
    monkeypatch.setattr(data, "load", load_then_signal)
    # Python's own Ctrl-C handler, as in a terminal: a shell that starts pytest in the
    # background hands it SIGINT ignored, and the signal would then never arrive
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    out = tmp_path / "run"
    try:
        got, err = run_cli(FAST + ["--out", str(out)], capsys)
    finally:
        signal.signal(signal.SIGINT, old)
    assert got == code and err.strip() == f"stopped ({name}) before anything was written"
    assert not out.exists()


def test_a_second_ctrl_c_during_the_save_lets_the_save_finish(tmp_path, capsys, monkeypatch):
    real_step, real_savez, count = optim.SGD.step, checkpoint.np.savez, []

    def step(self):
        real_step(self)
        count.append(1)
        if len(count) == 6:
            os.kill(os.getpid(), signal.SIGINT)          # stop after this batch and save

    def savez_with_a_second_ctrl_c(f, **arrays):
        os.kill(os.getpid(), signal.SIGINT)              # and again, inside the save
        return real_savez(f, **arrays)
    monkeypatch.setattr(optim.SGD, "step", step)
    monkeypatch.setattr(checkpoint.np, "savez", savez_with_a_second_ctrl_c)
    out = tmp_path / "run"
    code, err = run_cli(FAST + ["--out", str(out)], capsys)
    assert code == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("stopped; saved")
    _, _, meta = checkpoint.read_checkpoint(out / "last.npz")
    assert meta["position"]["batch"] == 6


# --- 12. empty and odd arguments -------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--resume", "--config", "--out", "--data-dir"])
def test_an_empty_path_is_refused(tmp_path, capsys, monkeypatch, flag):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(FAST + [flag, ""], capsys)
    assert code == 2 and f"argument {flag}: needs a path, got an empty string" in err
    assert "--help" in err and len(err.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []                  # no run started in ./runs


@pytest.mark.parametrize("argv, needle", [
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--backend", "gpu"], "argument --backend: invalid choice: 'gpu'"),
    (["evaluate"], "the following arguments are required: path"),
    (["export", "a"], "the following arguments are required: dst"),
])
def test_an_argument_error_is_one_line_with_a_pointer_to_help(capsys, argv, needle):
    code, err = run_cli(argv, capsys)
    assert code == 2 and needle in err and err.strip().endswith("--help)")
    assert len(err.strip().splitlines()) == 1 and "usage:" not in err


def test_a_config_file_without_hidden_layers_is_refused_before_writing(tmp_path, capsys):
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"dataset": "digits", "hidden": [], "plots": False}))
    out = tmp_path / "run"
    code, err = run_cli(["--config", str(conf), "--out", str(out), "--quiet"], capsys)
    assert code == 2 and f"the config file {conf}: --hidden needs at least one layer size" in err
    assert not out.exists()


def test_a_config_file_that_is_not_utf8_is_named(tmp_path, capsys):
    conf = tmp_path / "c.json"
    conf.write_bytes(b'{"lr": "\xff"}')
    code, err = run_cli(["--config", str(conf), "--quiet"], capsys)
    assert code == 2 and f"the config file {conf} is not UTF-8 text" in err


def test_a_metrics_file_that_is_not_utf8_is_named(tmp_path, capsys):
    cfg = small(tmp_path, epochs=2)
    train.fit(cfg, verbose=False)
    with open(os.path.join(cfg.out, "metrics.jsonl"), "r+b") as f:
        f.write(b"\xff")
    code, err = run_cli(["--resume", cfg.out, "--epochs", "3", "--quiet"], capsys)
    assert code == 2 and "metrics.jsonl, line 1, is not an epoch's row" in err


@pytest.mark.parametrize("fail", ["data", "write"])
def test_a_failed_command_leaves_no_parent_folder_and_no_lock(tmp_path, capsys, monkeypatch, fail):
    if fail == "data":
        def failing(*a, **k):
            raise data.DataError("no data here: fix it")
        monkeypatch.setattr(data, "load", failing)
    else:                                    # a failure after the folder was claimed
        def failing(self, config):
            raise runs.RunIOError("cannot write config.json (No space left on device)")
        monkeypatch.setattr(runs.RunFolder, "write_config", failing)
    code, _ = run_cli(FAST + ["--out", str(tmp_path / "a" / "b" / "c")], capsys)
    assert code in (2, 4)
    assert os.listdir(tmp_path) == []
    (tmp_path / "empty").mkdir()             # a folder that was there stays, with nothing added
    code, _ = run_cli(FAST + ["--out", str(tmp_path / "empty")], capsys)
    assert code in (2, 4)
    assert os.listdir(tmp_path / "empty") == []
