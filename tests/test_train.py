"""The training command end to end on the offline digits set: outputs, resume, evaluate, errors."""
import dataclasses
import json
import os
import signal

import numpy as np
import pytest

pytest.importorskip("sklearn")

from dsatgo_np import files, models, train  # noqa: E402
from dsatgo_np.train import loop  # noqa: E402
from dsatgo_np.checkpoint import read_checkpoint  # noqa: E402


def small(tmp_path, name="run", **kw):
    opts = dict(dataset="digits", hidden=[64], epochs=2, batch_size=50, lr=0.1, plots=False,
                out=str(tmp_path / name), data_dir=str(tmp_path / "data"))
    opts.update(kw)
    return train.Config(**opts)


def test_cli_trains_and_writes_its_outputs(tmp_path, capsys):
    out = tmp_path / "cli"
    code = train.main(["--dataset", "digits", "--hidden", "64", "--epochs", "2", "--batch-size",
                       "50", "--out", str(out), "--method", "ds-atgo", "--quiet"])
    assert code == 0
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["test_acc"] > 0.85
    assert 0 < rows[-1]["firing_rate"] < 1
    layer = next(iter(rows[-1]["diagnostics"].values()))
    assert len(layer["firing_rate"]) == 4                                 # per step, T = 4
    assert {"config.json", "last.npz", "best.npz"} <= set(os.listdir(out))
    assert "test accuracy" in capsys.readouterr().out


def test_evaluate_reloaded_checkpoint_gives_the_recorded_accuracy(tmp_path):
    summary = train.fit(small(tmp_path, method="at", neuron="plif"), verbose=False)
    r = train.evaluate_checkpoint(os.path.join(summary["run"], "best.npz"))
    assert r["test_acc"] == r["recorded"] == summary["best_test_acc"]
    _, _, meta = read_checkpoint(os.path.join(summary["run"], "best.npz"))
    assert meta["config"]["method"] == "at"


def _final_state(run):
    model, optim, meta = read_checkpoint(os.path.join(run, "last.npz"))
    return model, optim, meta


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_resume_after_an_interruption_matches_an_uninterrupted_run(tmp_path, sig):
    cfg = small(tmp_path, "straight")
    train.fit(cfg, verbose=False)

    def interrupt(epoch, i):                 # a real Ctrl-C (or a shutdown's SIGTERM) mid-epoch
        if (epoch, i) == (0, 7):
            os.kill(os.getpid(), sig)
    cut = small(tmp_path, "cut")
    first = train.fit(cut, on_batch=interrupt, verbose=False)
    assert first["interrupted"] and first["position"]["batch"] == 8
    train.fit(cut, resume=True, verbose=False)

    a, oa, ma = _final_state(cfg.out)
    b, ob, mb = _final_state(cut.out)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for k in oa:
        np.testing.assert_array_equal(oa[k], ob[k], err_msg=k)
    assert ma["test_acc"] == mb["test_acc"]
    rows_a = [json.loads(x) for x in open(os.path.join(cfg.out, "metrics.jsonl"))]
    rows_b = [json.loads(x) for x in open(os.path.join(cut.out, "metrics.jsonl"))]
    assert [r["train_loss"] for r in rows_a] == [r["train_loss"] for r in rows_b]
    # the interrupted epoch's diagnostics are checkpointed too, not restarted after the resume
    assert [r["diagnostics"] for r in rows_a] == [r["diagnostics"] for r in rows_b]


def test_resume_between_epochs_via_cli(tmp_path):
    cfg = small(tmp_path, "a", epochs=1)
    train.fit(cfg, verbose=False)
    assert train.main(["--resume", cfg.out, "--epochs", "2", "--quiet"]) == 0
    rows = [json.loads(x) for x in open(os.path.join(cfg.out, "metrics.jsonl"))]
    assert [r["epoch"] for r in rows] == [1, 2]


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "imagenet"], "invalid choice|unknown dataset"),
    (["--model", "transformer"], "unknown model"),
    (["--method", "dsatgo"], "unknown method"),
    (["--T", "0"], "--T must be an integer of at least 1"),
    (["--method", "vanilla", "--width", "std"], "--width 'std' does nothing for method 'vanilla'"),
    (["--method", "tgo", "--threshold-grad"], "--threshold-grad True does nothing for method"),
    (["--method", "mpd-agl", "--f-c", "1.5"], "--f-c 1.5 does nothing for method 'mpd-agl'"),
])
def test_bad_options_are_named(tmp_path, capsys, argv, message):
    code = train.main(["--dataset", "digits"] + argv + ["--out", str(tmp_path / "x"), "--quiet"])
    assert code == 2
    import re
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "x").exists()                 # refused before anything is written


def test_existing_run_and_bad_checkpoints(tmp_path, capsys):
    cfg = small(tmp_path, "r", epochs=1)
    train.fit(cfg, verbose=False)
    assert train.main(["--dataset", "digits", "--out", cfg.out, "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x00" * 10)
    assert train.main(["evaluate", str(bad)]) == 2
    assert "is not a model file" in capsys.readouterr().err
    # a checkpoint from another architecture: resume a run whose config was changed by hand
    conf = json.load(open(os.path.join(cfg.out, "config.json")))
    conf["hidden"] = [32]
    json.dump(conf, open(os.path.join(cfg.out, "config.json"), "w"))
    assert train.main(["--resume", cfg.out, "--epochs", "2", "--quiet"]) == 2
    assert "last.npz and config.json disagree on --hidden" in capsys.readouterr().err


def test_config_file_and_unknown_keys(tmp_path, capsys):
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"dataset": "digits", "hidden": [32], "epochs": 1, "batch_size": 100,
                                "plots": False, "out": str(tmp_path / "fromfile")}))
    assert train.main(["--config", str(conf), "--quiet", "--method", "vanilla"]) == 0
    saved = json.load(open(tmp_path / "fromfile" / "config.json"))
    assert saved["method"] == "vanilla" and saved["hidden"] == [32]
    conf.write_text(json.dumps({"datset": "digits"}))
    assert train.main(["--config", str(conf), "--quiet"]) == 2
    assert "unknown option" in capsys.readouterr().err


def test_memory_check_refuses_a_huge_configuration(tmp_path, capsys):
    code = train.main(["--dataset", "digits", "--hidden", "64", "--batch-size", "100000000",
                       "--out", str(tmp_path / "huge"), "--quiet"])
    assert code == 2
    assert "lower --batch-size" in capsys.readouterr().err


def test_train_subset_is_a_random_sample_of_every_class(tmp_path, monkeypatch):
    """Data stored sorted by class (as the CIFAR-10 copy is) must still give every class."""
    import dsatgo_np.data as data
    cfg = small(tmp_path, train_subset=200)
    x_all, y_all = data.load("digits", "train", root=cfg.data_dir)
    by_class = np.argsort(y_all, kind="stable")
    original = data.load

    def sorted_load(name, split, root=None):
        x, y = original(name, split, root=root)
        return (x[by_class], y[by_class]) if split == "train" else (x, y)
    monkeypatch.setattr(data, "load", sorted_load)
    _, y_sub, _, _ = train.load_data(cfg)
    assert len(y_sub) == 200 and len(np.unique(y_sub)) == 10


# --- the command line: help, names, subcommands ------------------------------------------

def help_text(monkeypatch, capsys, argv0="python", args=("--help",)):
    monkeypatch.setattr("sys.argv", [argv0])
    with pytest.raises(SystemExit) as e:
        train.main(list(args))
    assert e.value.code == 0
    return capsys.readouterr().out


def test_help_shows_exactly_one_default_per_option(monkeypatch, capsys):
    text = help_text(monkeypatch, capsys)
    import re
    # argparse wraps each option's help; join an option's lines before counting
    options = re.split(r"\n  (?=-)", text.split("options:", 1)[1].split("exit codes:", 1)[0])
    for field in dataclasses.fields(train.Config):
        flag = "--" + field.name.replace("_", "-")
        entry = next(o for o in options if o.startswith(flag + " ") or o.startswith(flag + ",")
                     or o.startswith(flag + "\n") or o.startswith(f"{flag}, --no-"))
        assert len(re.findall(r"\(default", entry)) == 1, (flag, entry)
        assert "default: None" not in entry
    for code in train.EXIT_CODES:
        assert re.search(rf"^\s+{code}\s+\w", text, re.M), code


def test_usage_names_the_command_as_it_was_run(monkeypatch, capsys):
    assert help_text(monkeypatch, capsys, "/venv/bin/dsatgo-train").startswith("usage: dsatgo-train")
    assert help_text(monkeypatch, capsys, "/x/dsatgo_np/train.py").startswith(
        "usage: python -m dsatgo_np.train")
    assert help_text(monkeypatch, capsys, "/venv/bin/dsatgo-train", ("evaluate", "--help")
                     ).startswith("usage: dsatgo-train evaluate")


def test_evaluate_help_says_exported_files_record_their_data_set(monkeypatch, capsys):
    """export writes the data set into .nir and .safetensors files and evaluate reads it from
    there (test_evaluate_a_nir_file_on_the_data_set_its_export_recorded): the help must not ask for
    --dataset with every such file."""
    text = " ".join(help_text(monkeypatch, capsys, args=("evaluate", "--help")).split())
    assert ("--dataset DATASET data set (checkpoints and the .nir and .safetensors files this "
            "command exports record theirs; needed only for a file that records none)") in text


@pytest.mark.parametrize("argv, missing", [
    (["export", "run", "m.safetensors"], "official"),
    (["export", "run", "m.nir"], "nirgraph"),
    (["import", "a.safetensors", "b.npz"], "official"),
    (["evaluate", "m.nir"], "nirgraph"),
    (["evaluate", "m.safetensors"], "official"),
])
def test_model_exchange_commands_dispatch_by_suffix(monkeypatch, capsys, argv, missing):
    """Each command calls its module's function; a missing module is a clear exit 2."""
    import sys
    import types
    calls = []
    for name in ("official", "nirgraph"):
        mod = types.ModuleType(f"dsatgo_np.interop.{name}")
        mod.cli_export = lambda s, d, name=name: calls.append((name, "export", s, d))
        mod.cli_import = lambda s, d, name=name: calls.append((name, "import", s, d))
        monkeypatch.setitem(sys.modules, f"dsatgo_np.interop.{name}", mod)
    if argv[0] != "evaluate":
        assert train.main(argv) == 0
        assert calls == [(missing, argv[0], argv[1], argv[2])]
    monkeypatch.setitem(sys.modules, f"dsatgo_np.interop.{missing}", None)   # import fails
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert f"dsatgo_np.interop.{missing}" in err and "Traceback" not in err


def trained_net_as_nir_file(tmp_path, monkeypatch):
    """A small trained network, and a .nir path whose loader (stubbed) returns it."""
    import sys
    import types
    summary = train.fit(small(tmp_path, epochs=1), verbose=False)
    net = files.load(summary["run"])
    mod = types.ModuleType("dsatgo_np.interop.nirgraph")
    mod.load_file = lambda path: net
    monkeypatch.setitem(sys.modules, "dsatgo_np.interop.nirgraph", mod)
    path = tmp_path / "m.nir"
    path.write_bytes(b"")
    return summary, net, str(path)


def test_evaluate_a_nir_file_through_its_loader(tmp_path, monkeypatch, capsys):
    summary, _, path = trained_net_as_nir_file(tmp_path, monkeypatch)
    assert train.main(["evaluate", path, "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert f"test accuracy {100 * summary['best_test_acc']:.2f} % on digits" in out


def test_evaluate_a_nir_file_on_the_data_set_its_export_recorded(tmp_path, monkeypatch, capsys):
    """Without --dataset, the data set written by `export` decides; a file that names none
    is a clear exit 2, never a silent evaluation on MNIST."""
    _, net, path = trained_net_as_nir_file(tmp_path, monkeypatch)
    net.metadata = {"dataset": "digits"}
    assert train.main(["evaluate", path]) == 0
    assert "% on digits" in capsys.readouterr().out
    net.metadata = {}
    assert train.main(["evaluate", path]) == 2
    assert "--dataset" in capsys.readouterr().err


def test_epoch_rows_carry_per_batch_loss_and_accuracy(tmp_path):
    cfg = small(tmp_path, epochs=2)
    train.fit(cfg, verbose=False)
    rows = [json.loads(x) for x in open(os.path.join(cfg.out, "metrics.jsonl"))]
    steps = rows[0]["steps_per_epoch"]
    assert steps == 29                                     # 1437 digits in batches of 50
    for epoch, row in enumerate(rows):
        b = row["batches"]
        assert b["every"] == 1
        assert b["step"] == list(range(epoch * steps + 1, (epoch + 1) * steps + 1))
        assert len(b["loss"]) == len(b["accuracy"]) == steps
        # the epoch's train loss is the sample-weighted mean of its batches' losses
        sizes = [50] * (steps - 1) + [1437 - 50 * (steps - 1)]
        mean = sum(s * loss for s, loss in zip(sizes, b["loss"])) / 1437
        assert abs(mean - row["train_loss"]) < 1e-12 * steps
        # the firing rate of every diag_every-th batch (10 by default), whose running mean
        # over the epoch is the row's firing_rate (batches weigh by their size)
        assert b["rate_step"] == list(range(epoch * steps + 1, (epoch + 1) * steps + 1, 10))
        assert all(0 < r < 1 for r in b["firing_rate"])
        assert min(b["firing_rate"]) <= row["firing_rate"] <= max(b["firing_rate"])
        correct = sum(s * a for s, a in zip(sizes, b["accuracy"]))
        assert abs(correct - row["train_acc"] * 1437) < 1e-9


def test_long_epochs_log_every_few_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "MAX_BATCH_ENTRIES", 10)
    cfg = small(tmp_path, epochs=1)
    train.fit(cfg, verbose=False)
    row = json.loads(open(os.path.join(cfg.out, "metrics.jsonl")).readline())
    assert row["batches"]["every"] == 3                     # ceil(29 / 10)
    assert row["batches"]["step"] == list(range(1, 30, 3))


def test_progress_bar_after_a_resume_counts_only_new_batches(tmp_path, monkeypatch):
    """tqdm starts at the resumed position: its rate and time left count this session's
    batches only (the hand-written bar divided all batches by this session's time)."""
    made = []
    real = loop.tqdm

    def spy(*a, **k):
        bar = real(*a, **k)
        made.append(bar)
        return bar
    monkeypatch.setattr(loop, "tqdm", spy)

    def interrupt(epoch, i):
        if (epoch, i) == (0, 20):
            os.kill(os.getpid(), signal.SIGINT)
    cfg = small(tmp_path, epochs=1)
    train.fit(cfg, on_batch=interrupt, verbose=False)
    made.clear()
    train.fit(cfg, resume=True, verbose=True, progress=True)
    d = made[0].format_dict
    assert d["total"] == 29 and d["initial"] == 21 and d["n"] == 29
    # tqdm's rate is (n - initial) / elapsed: the 8 batches of this session
    shown = made[0].format_meter(**dict(d, elapsed=2.0, rate=None))
    assert "4.00it/s" in shown or "4.00batch/s" in shown, shown


def test_resnet19_from_the_command_line_is_the_release_network_and_needs_colour_images():
    cfg = train.Config(model="resnet19", dataset="cifar10", T=2, method="ds-atgo",
                       neuron="plif", width="std")
    net = train.build_model(cfg, (3, 8, 8), 10)
    assert sum(p.data.size for p in net.parameters()) == sum(
        p.data.size for p in models.resnet19(T=2).parameters())
    with pytest.raises(ValueError, match="3-channel"):
        train.build_model(train.Config(model="resnet19"), (1, 28, 28), 10)


def test_import_of_a_nir_file_says_it_needs_none(tmp_path, capsys):
    code = train.main(["import", str(tmp_path / "net.nir"), str(tmp_path / "back.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "import reads .safetensors files only" in err
    assert "evaluate" in err and "dn.load" in err and "export it again" not in err
    assert not (tmp_path / "back.npz").exists()


@pytest.mark.parametrize("package, dst, install", [
    ("safetensors", "m.safetensors", "pip install 'dsatgo_np[interop]'"),
    ("nir", "m.nir", "pip install 'dsatgo_np[nir]'"),
])
def test_a_missing_optional_package_is_exit_2_with_the_install_line(tmp_path, capsys,
                                                                    monkeypatch, package, dst,
                                                                    install):
    import sys
    summary = train.fit(small(tmp_path, epochs=1), verbose=False)
    monkeypatch.setitem(sys.modules, package, None)            # as if not installed
    code = train.main(["export", summary["run"], str(tmp_path / dst)])
    err = capsys.readouterr().err
    assert code == 2 and install in err and "bug" not in err
    assert len(err.strip().splitlines()) == 1
