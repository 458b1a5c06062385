"""What --resume (and evaluate, import, dn.load) read from disk is checked before it is used.

metrics.jsonl against itself and against last.npz, best.npz against the rows, config.json's
keys and values, the options a resumed run keeps, the arrays and position of a checkpoint,
links among the run's files. Each damage is reported by name with exit 2 and nothing
rewritten; only the repairs that a stop makes necessary are made. Small runs on the offline
digits set (scikit-learn).
"""
import json
import os
import shutil
from signal import SIGINT

import numpy as np
import pytest

pytest.importorskip("sklearn")

import dsatgo_np as dn  # noqa: E402
from dsatgo_np import checkpoint, optim, train  # noqa: E402
from dsatgo_np.train import loop  # noqa: E402
from digits_runs import small  # noqa: E402



def finished_run(tmp_path, name="run", **kw):
    cfg = small(tmp_path, name, **kw)
    train.fit(cfg, verbose=False)
    return cfg.out


def path(run, name):
    return os.path.join(run, name)


def read_bytes(p):
    with open(p, "rb") as f:
        return f.read()


def snapshot(run):
    """Every file of the run folder, by name, as bytes."""
    return {n: read_bytes(path(run, n)) for n in sorted(os.listdir(run))
            if os.path.isfile(path(run, n))}


def epochs(run):
    return [json.loads(x)["epoch"] for x in open(path(run, "metrics.jsonl"))]


def run_cli(argv, capsys):
    code = train.main(argv)
    captured = capsys.readouterr()
    return code, captured.err.strip(), captured.out


def refused(run, argv, capsys, *needles):
    """--resume RUN plus argv: exit 2, one line naming every needle, nothing changed."""
    before = snapshot(run)
    code, err, _ = run_cli(["--resume", run, "--quiet"] + argv, capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert snapshot(run) == before
    return err


def rewrite_checkpoint(p, change):
    """Rewrite the .npz at p after change(arrays, meta) edits its arrays and metadata."""
    arrays = checkpoint.load_npz(p)
    meta = json.loads(str(arrays["meta"]))
    change(arrays, meta)
    arrays["meta"] = np.array(json.dumps(meta))
    checkpoint.save_npz(p, arrays)


# --- metrics.jsonl: a damaged row is reported, never dropped with the rows after it ----------

@pytest.mark.parametrize("damage", [b"garbage\n", b"\x00\x00\x00\x00\n", b"[1, 2]\n"])
def test_a_bad_line_in_the_middle_is_reported_and_no_row_is_lost(tmp_path, capsys, damage):
    run = finished_run(tmp_path, epochs=3)
    lines = read_bytes(path(run, "metrics.jsonl")).splitlines(keepends=True)
    with open(path(run, "metrics.jsonl"), "wb") as f:
        f.write(lines[0] + damage + lines[1] + lines[2])
    refused(run, ["--epochs", "4"], capsys, "metrics.jsonl, line 2, is not an epoch's row",
            "nothing was changed")


@pytest.mark.parametrize("order", [[1, 0, 2], [0, 1, 1, 2], [0, 2]])
def test_rows_out_of_order_duplicated_or_missing_are_reported(tmp_path, capsys, order):
    run = finished_run(tmp_path, epochs=3)
    lines = read_bytes(path(run, "metrics.jsonl")).splitlines(keepends=True)
    with open(path(run, "metrics.jsonl"), "wb") as f:
        f.write(b"".join(lines[i] for i in order))
    refused(run, ["--epochs", "4"], capsys, "metrics.jsonl, line", "where epoch")


@pytest.mark.parametrize("damage", ["truncated", "emptied", "deleted"])
def test_rows_lost_before_the_checkpoint_are_reported(tmp_path, capsys, damage):
    run = finished_run(tmp_path, epochs=3)
    metrics = path(run, "metrics.jsonl")
    if damage == "truncated":                  # in the middle of epoch 2's row
        data = read_bytes(metrics)
        cut = data.index(b"\n") + 40
        with open(metrics, "wb") as f:
            f.write(data[:cut])
    elif damage == "emptied":
        open(metrics, "w").close()
    else:
        os.remove(metrics)
    err = refused(run, ["--epochs", "4"], capsys, "lacks the rows of epochs")
    assert "to 3" in err


def test_the_last_row_lost_is_still_restored_from_the_checkpoint(tmp_path):
    run = finished_run(tmp_path, epochs=2)
    data = read_bytes(path(run, "metrics.jsonl"))
    with open(path(run, "metrics.jsonl"), "wb") as f:        # half of epoch 2's row
        f.write(data[:data.index(b"\n") + 30])
    assert train.main(["--resume", run, "--epochs", "3", "--quiet"]) == 0
    assert epochs(run) == [1, 2, 3]


def test_a_checkpoint_from_another_run_is_reported(tmp_path, capsys):
    run = finished_run(tmp_path, "a", epochs=2)
    other = finished_run(tmp_path, "b", epochs=2, lr=0.05)    # lr may differ between sessions
    shutil.copy(path(other, "last.npz"), path(run, "last.npz"))
    refused(run, ["--epochs", "3"], capsys, "last.npz comes from another run")


def test_a_checkpoint_of_another_configuration_is_reported(tmp_path, capsys):
    run = finished_run(tmp_path, "a", epochs=2)
    other = finished_run(tmp_path, "b", epochs=2, seed=5)
    shutil.copy(path(other, "last.npz"), path(run, "last.npz"))
    refused(run, ["--epochs", "3"], capsys, "last.npz and config.json disagree on --seed")


# --- config.json: every key present, every value checked --------------------------------------

@pytest.mark.parametrize("key", ["lr", "epochs", "method"])
def test_a_key_missing_from_config_json_is_reported(tmp_path, capsys, key):
    run = finished_run(tmp_path, lr=0.02)
    conf = json.load(open(path(run, "config.json")))
    del conf[key]
    json.dump(conf, open(path(run, "config.json"), "w"))
    refused(run, ["--epochs", "2"], capsys, "config.json lacks the option(s) " + key)
    refused(run, [], capsys, "config.json lacks the option(s) " + key)


@pytest.mark.parametrize("key, value, needle", [
    ("lr", "fast", "--lr must be a finite number"),
    ("hidden", [], "--hidden needs at least one layer size"),
    ("T", 0, "--T must be an integer of at least 1"),
])
def test_a_bad_value_in_config_json_names_the_file(tmp_path, capsys, key, value, needle):
    run = finished_run(tmp_path)
    conf = json.load(open(path(run, "config.json")))
    conf[key] = value
    json.dump(conf, open(path(run, "config.json"), "w"))
    refused(run, ["--epochs", "2"], capsys, "config.json: " + needle)


def test_a_config_json_that_is_not_utf8_names_the_file(tmp_path, capsys):
    run = finished_run(tmp_path)
    with open(path(run, "config.json"), "ab") as f:
        f.write(b"\xff\xfe")
    refused(run, ["--epochs", "2"], capsys, "config.json is not UTF-8 text")


# --- options that a resumed run keeps ---------------------------------------------------------

@pytest.mark.parametrize("flags, name", [
    (["--method", "vanilla"], "--method vanilla"),
    (["--width", "std"], "--width std"),
    (["--f-c", "0.8"], "--f-c 0.8"),
    (["--threshold", "estimated"], "--threshold estimated"),
    (["--no-running"], "--no-running"),
    (["--threshold-grad"], "--threshold-grad"),
    (["--detach-reset"], "--detach-reset"),
    (["--neuron", "plif"], "--neuron plif"),
    (["--hidden", "64"], "--hidden 64"),
    (["--T", "2"], "--T 2"),
    (["--seed", "3"], "--seed 3"),
    (["--batch-size", "50"], "--batch-size 50"),
    (["--train-subset", "500"], "--train-subset 500"),
    (["--optimizer", "adam"], "--optimizer adam"),
    (["--dataset", "mnist"], "--dataset mnist"),
])
@pytest.mark.parametrize("more", [["--epochs", "2"], []])      # an unfinished or finished run
def test_options_that_change_the_run_are_refused_by_name(tmp_path, capsys, flags, name, more):
    run = finished_run(tmp_path)
    err = refused(run, flags + more, capsys, name + ":", "a resumed run keeps",
                  "start a new run with --out")
    assert "does not match this model" not in err


@pytest.mark.parametrize("flags, key, value", [
    (["--lr", "0.01"], "lr", 0.01), (["--momentum", "0.5"], "momentum", 0.5),
    (["--weight-decay", "0.001"], "weight_decay", 0.001),
    (["--schedule", "constant"], "schedule", "constant"),
    (["--label-smoothing", "0.1"], "label_smoothing", 0.1),
    (["--augment"], "augment", True), (["--diag-every", "5"], "diag_every", 5),
])
def test_options_documented_as_changeable_stay_changeable(tmp_path, flags, key, value):
    run = finished_run(tmp_path)
    assert train.main(["--resume", run, "--epochs", "2", "--quiet"] + flags) == 0
    assert json.load(open(path(run, "config.json")))[key] == value
    assert epochs(run) == [1, 2]


# --- checkpoints: arrays and position checked on every load -----------------------------------

def poison_weight(arrays, meta):
    w = arrays["model/1.weight"].copy()
    w[0, 0] = np.nan
    arrays["model/1.weight"] = w


def negative_variance(arrays, meta):
    v = arrays["model/2.running_var"].copy()
    v[0] = -1.0
    arrays["model/2.running_var"] = v


def poison_threshold(arrays, meta):
    arrays["model/3.running_threshold"] = np.full_like(arrays["model/3.running_threshold"], np.inf)


@pytest.mark.parametrize("damage, needle", [
    (poison_weight, "'model/1.weight' holds 1 NaN or infinite value"),
    (negative_variance, "the BatchNorm variance 'model/2.running_var' holds a negative value"),
    (poison_threshold, "'model/3.running_threshold' holds 4 NaN or infinite value"),
])
def test_a_damaged_last_npz_is_refused_on_resume(tmp_path, capsys, damage, needle):
    run = finished_run(tmp_path)
    rewrite_checkpoint(path(run, "last.npz"), damage)
    refused(run, ["--epochs", "2"], capsys, "last.npz", needle)


@pytest.mark.parametrize("damage, needle", [
    (poison_weight, "holds 1 NaN or infinite value"),
    (negative_variance, "holds a negative value"),
])
def test_evaluate_and_load_refuse_a_damaged_checkpoint(tmp_path, capsys, damage, needle):
    run = finished_run(tmp_path)
    bad = str(tmp_path / "bad.npz")
    shutil.copy(path(run, "best.npz"), bad)
    rewrite_checkpoint(bad, damage)
    code, err, out = run_cli(["evaluate", bad], capsys)
    assert code == 2 and needle in err and "bad.npz" in err and "test accuracy" not in out
    with pytest.raises(ValueError, match=needle):
        dn.load(bad)


def test_evaluate_and_import_refuse_a_safetensors_file_with_nan(tmp_path, capsys):
    stnp = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open
    run = finished_run(tmp_path)
    good, bad = str(tmp_path / "good.safetensors"), str(tmp_path / "bad.safetensors")
    assert train.main(["export", run, good]) == 0
    with safe_open(good, framework="np") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    key = next(k for k in tensors if k.endswith("weight"))
    tensors[key][0] = np.nan
    stnp.save_file(tensors, bad, metadata=meta)
    capsys.readouterr()
    for argv in (["evaluate", bad], ["import", bad, str(tmp_path / "back.npz")]):
        code, err, out = run_cli(argv, capsys)
        assert code == 2 and f"'{key}' holds" in err and "NaN" in err, err
        assert "test accuracy" not in out
    assert not (tmp_path / "back.npz").exists()


@pytest.mark.parametrize("key, value", [("epoch", "two"), ("batch", -1), ("best", float("nan")),
                                        ("elapsed", None)])
def test_a_damaged_position_is_refused_by_name(tmp_path, capsys, key, value):
    run = finished_run(tmp_path)

    def damage(arrays, meta):
        meta["position"][key] = value
    rewrite_checkpoint(path(run, "last.npz"), damage)
    refused(run, ["--epochs", "2"], capsys, f"last.npz: its position's '{key}'")


def test_load_state_dict_refuses_nan_and_values_that_overflow():
    net = dn.models.mlp([8, 4, 3], T=2)
    state = net.state_dict()
    key = next(k for k in state if k.endswith("weight"))
    before = {k: v.copy() for k, v in state.items()}
    nan = dict(state, **{key: np.where(np.eye(*state[key].shape) > 0, np.nan, state[key])})
    with pytest.raises(ValueError, match=f"'{key}' holds NaN or infinite values"):
        net.load_state_dict(nan)
    huge = dict(state, **{key: np.full(state[key].shape, 1e300)})        # float64: finite
    with pytest.raises(ValueError, match="in float32"):
        net.load_state_dict(huge)
    for k, v in net.state_dict().items():                 # nothing was copied in
        np.testing.assert_array_equal(v, before[k])


# --- best.npz -----------------------------------------------------------------------------------

def test_a_damaged_best_npz_is_rebuilt_when_last_npz_holds_the_best_epoch(tmp_path, capsys):
    run = finished_run(tmp_path)                           # one epoch: it is the best one
    with open(path(run, "best.npz"), "wb") as f:
        f.write(b"PK\x03\x04 garbage")
    code, err, _ = run_cli(["--resume", run, "--quiet"], capsys)
    assert code == 0 and "written again from last.npz" in err
    best, _, best_meta = checkpoint.read_checkpoint(path(run, "best.npz"))
    last, _, last_meta = checkpoint.read_checkpoint(path(run, "last.npz"))
    assert best_meta == last_meta and best.keys() == last.keys()
    for k in best:
        np.testing.assert_array_equal(best[k], last[k])
    code, _, out = run_cli(["evaluate", run], capsys)
    assert code == 0 and "test accuracy" in out


def declining_run(tmp_path, monkeypatch, name="run"):
    """Two epochs whose test accuracies fall (0.9, then 0.5): best.npz holds epoch 1."""
    accs = iter([0.9, 0.5])
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: next(accs))
    run = finished_run(tmp_path, name, epochs=2)
    monkeypatch.undo()
    assert checkpoint.read_checkpoint(path(run, "best.npz"))[2]["epoch"] == 1
    return run


def test_a_damaged_best_npz_that_no_file_can_rebuild_is_reported(tmp_path, capsys, monkeypatch):
    run = declining_run(tmp_path, monkeypatch)
    with open(path(run, "best.npz"), "wb") as f:
        f.write(b"garbage")
    refused(run, ["--epochs", "3"], capsys, "best.npz", "restore best.npz from a copy",
            "move it away")
    os.rename(path(run, "best.npz"), path(run, "best.npz.old"))     # as the message says
    code, err, _ = run_cli(["--resume", run, "--epochs", "3", "--quiet"], capsys)
    assert code == 0 and "has no best.npz" in err
    assert epochs(run) == [1, 2, 3]


def test_a_best_npz_of_another_epoch_is_reported(tmp_path, capsys, monkeypatch):
    run = declining_run(tmp_path, monkeypatch)
    shutil.copy(path(run, "last.npz"), path(run, "best.npz"))        # epoch 2, not the best
    refused(run, ["--epochs", "3"], capsys, "holds epoch 2", "the run's best is epoch 1")


# --- links --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [".lock", "metrics.jsonl", "config.json", "last.npz"])
def test_a_file_of_the_run_that_is_a_link_is_refused(tmp_path, capsys, name):
    run = finished_run(tmp_path)
    outside = tmp_path / "outside"
    if os.path.exists(path(run, name)):
        shutil.copy(path(run, name), outside)
        os.remove(path(run, name))
    else:
        outside.write_text("12345\n")
    os.symlink(outside, path(run, name))
    kept = read_bytes(outside)
    code, err, _ = run_cli(["--resume", run, "--epochs", "2", "--quiet"], capsys)
    assert code == 2 and f"{name} is a symbolic link" in err and len(err.splitlines()) == 1
    assert read_bytes(outside) == kept                   # nothing written through the link
    assert os.path.islink(path(run, name))


# --- options that change the schedule, and the wall time ----------------------------------------

def learning_rates(monkeypatch):
    rates = []
    real = optim.SGD.step

    def step(self):
        rates.append(self.lr)
        real(self)
    monkeypatch.setattr(optim.SGD, "step", step)
    return rates


def test_extending_a_finished_run_starts_a_new_cosine_cycle(tmp_path, capsys, monkeypatch):
    run = finished_run(tmp_path)                      # 15 batches of cosine from 0.1 down to 0
    rates = learning_rates(monkeypatch)
    code, _, out = run_cli(["--resume", run, "--epochs", "3"], capsys)
    assert code == 0 and "starts a new cycle, from --lr 0.1 at epoch 2 down to 0" in out
    assert len(rates) == 30 and rates[0] == 0.1                   # not 0.075, mid-way
    assert rates == [optim.cosine_lr(0.1, i, 30) for i in range(30)]


def test_an_interrupted_extension_resumes_on_the_same_cycle(tmp_path):
    """The cycle's start travels in the checkpoint: extend, stop in mid-epoch, resume, and the
    weights end bit-equal to an extension that ran straight through."""
    straight = finished_run(tmp_path, "straight")
    assert train.main(["--resume", straight, "--epochs", "3", "--quiet"]) == 0
    cut = finished_run(tmp_path, "cut")
    extended = train.fit(small(tmp_path, "cut", epochs=3), resume=True, verbose=False,
                         on_batch=lambda e, i: (e, i) == (1, 6) and os.kill(os.getpid(), SIGINT))
    assert extended["interrupted"]
    assert train.main(["--resume", cut, "--quiet"]) == 0
    a = checkpoint.read_checkpoint(path(straight, "last.npz"))
    b = checkpoint.read_checkpoint(path(cut, "last.npz"))
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], b[0][k], err_msg=k)
    assert [r["lr"] for r in map(json.loads, open(path(straight, "metrics.jsonl")))] == \
        [r["lr"] for r in map(json.loads, open(path(cut, "metrics.jsonl")))]


def test_the_wall_time_is_this_process_s(tmp_path, capsys):
    run = finished_run(tmp_path)

    def long_ago(arrays, meta):
        meta["position"]["elapsed"] = 1000.0          # earlier sessions trained for 1000 s
    rewrite_checkpoint(path(run, "last.npz"), long_ago)
    summary = train.fit(small(tmp_path, epochs=2), resume=True, verbose=False)
    assert summary["wall_time_s"] < 100
    assert summary["train_time_s"] > 1000              # the run's training time, all sessions
