"""Smoke test of the experiment scripts: tiny settings on the offline digits set."""
import os

import pytest

pytest.importorskip("sklearn")

from digits_runs import ROOT, load_experiment  # noqa: E402


def test_runner_and_report_on_tiny_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("DSATGO_DATA", str(tmp_path / "data"))
    run, report = load_experiment("run"), load_experiment("report")
    root = str(tmp_path / "runs")
    assert run.main(["ablation-mnist", "fc", "--smoke", "--root", root]) == 0
    assert run.main(["ablation-mnist", "--smoke", "--root", root]) == 0      # resumable: all skipped
    md = report.render(os.path.join(ROOT, "experiments", "RESULTS.template.md"), root,
                       str(tmp_path / "R.md"), str(tmp_path / "fig"))
    text = open(md).read()
    for method in run.METHODS:
        assert f"| {method} | " in text
    assert "| 0.6 | " in text and "| 1.6 | " in text           # the f_c table
    assert "{{" not in text


def test_every_experiment_is_well_formed():
    run = load_experiment("run")
    from dsatgo_np.train import Config
    for name, runs in run.EXPERIMENTS.items():
        assert runs, name
        for label, opts, seed in runs:
            Config(**opts, seed=seed)                # every option is a known one


def test_labels_pick_and_order_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("DSATGO_DATA", str(tmp_path / "data"))
    run = load_experiment("run")
    root = str(tmp_path / "runs")
    assert run.main(["ablation-mnist", "--smoke", "--root", root, "--labels", "tgo,at"]) == 0
    done = sorted(os.listdir(os.path.join(root, "ablation-mnist")))
    assert done == [f"{m}-s{s}" for m in ("at", "tgo") for s in run.SEEDS]
    with pytest.raises(SystemExit):                          # an unknown label is refused
        run.main(["ablation-mnist", "--smoke", "--root", root, "--labels", "nope"])


def test_a_run_killed_before_its_first_checkpoint_is_resumed(tmp_path, monkeypatch):
    """A run folder holding config.json but no checkpoint yet (killed in its first epoch) is
    continued with --resume, not refused as a folder that already holds a run."""
    monkeypatch.setenv("DSATGO_DATA", str(tmp_path / "data"))
    run = load_experiment("run")
    root = str(tmp_path / "runs")
    assert run.main(["ablation-mnist", "--smoke", "--root", root, "--labels", "at"]) == 0
    folder = os.path.join(root, "ablation-mnist", f"at-s{run.SEEDS[0]}")
    for name in ("last.npz", "best.npz", "metrics.jsonl", "machine.json"):
        os.remove(os.path.join(folder, name))
    assert run.main(["ablation-mnist", "--smoke", "--root", root, "--labels", "at"]) == 0
    assert os.path.exists(os.path.join(folder, "machine.json"))
