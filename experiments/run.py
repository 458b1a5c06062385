"""Run the experiments of docs/RESULTS.md: each one a list of training runs of dsatgo_np.train.

    python experiments/run.py ablation-mnist            # one experiment (resumable: finished runs are skipped)
    python experiments/run.py ablation-mnist --smoke    # tiny settings, for the test suite
    python experiments/run.py --list
    python experiments/run.py mismatch-scale-mnist      # the threshold-mismatch study (mismatch.py)

Runs go to runs/experiments/<experiment>/<label>-s<seed>/ (config, metrics, checkpoints, plots);
experiments/report.py turns them into the tables and figures of docs/RESULTS.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

from dsatgo_np import train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mismatch  # noqa: E402  (the threshold-mismatch study: plain networks, its own runner)

ROOT = os.path.join("runs", "experiments")
METHODS = ("vanilla", "at", "tgo", "ds-atgo", "mpd-agl")
SEEDS = (0, 1, 2)

# Shared budgets: every method of an ablation gets exactly the same epochs, schedule and data.
MNIST_MLP = dict(dataset="mnist", model="mlp", hidden=[512, 512], T=4, epochs=3, batch_size=64,
                 lr=0.05, schedule="cosine")
FMNIST_CNN = dict(dataset="fashion-mnist", model="cnn", channels=[32, 64], T=4, epochs=1,
                  batch_size=64, lr=0.05, schedule="cosine")
CIFAR_VGG = dict(dataset="cifar10", model="vgg", vgg_layers=[64, 128, "P", 128, "P"], T=2, epochs=2,
                 batch_size=64, lr=0.05, schedule="cosine", augment=True, weight_decay=1e-4,
                 label_smoothing=0.1, train_subset=10000)   # shrunk: 10k of the 50k images
SIDE = dict(MNIST_MLP, epochs=2)          # the side studies (3-6): a shorter budget, 2 seeds
DEEP = dict(dataset="cifar10", model="sew-resnet", width_mult=0.125, T=2, epochs=1, batch_size=32,
            lr=0.05, schedule="cosine", augment=True, train_subset=10000, diag_every=5)


def ablation(base, seeds=SEEDS):
    return [(m, dict(base, method=m), s) for m in METHODS for s in seeds]


EXPERIMENTS = {
    # 1. the ablation on three data sets
    "ablation-mnist": ablation(MNIST_MLP),
    "ablation-fmnist": ablation(FMNIST_CNN),
    "ablation-cifar": ablation(CIFAR_VGG, seeds=(0,)),
    # 2. firing rates and gradient-window shares of a deep network; a T = 10 run per step
    "deep": [(m, dict(DEEP, method=m), 0) for m in ("vanilla", "ds-atgo")],
    "t10": [(m, dict(MNIST_MLP, T=10, epochs=1, method=m, diag_every=5), 0)
            for m in ("vanilla", "ds-atgo")],
    # 3. paper Eq. 7 against the released code
    "width": [(w, dict(SIDE, width=w), s) for w in ("threshold", "std") for s in (0, 1)],
    # 4. the firing-rate control factor f_c
    "fc": [(f"fc{fc}", dict(SIDE, f_c=fc), s) for fc in (0.6, 0.8, 1.0, 1.2, 1.4, 1.6)
           for s in (0, 1)],
    # 5. the gradient through the adaptive threshold (our extension)
    "threshold-grad": [(f"tgrad-{g}", dict(SIDE, threshold_grad=g), s)
                       for g in (False, True) for s in (0, 1)],
    # 6. estimated vs measured threshold; running average vs batch statistics at inference
    "threshold-variants": [(label, dict(SIDE, **opts), s)
                           for label, opts in (("measured+running", {}),
                                               ("measured+batch-stats", dict(running=False)),
                                               ("estimated", dict(threshold="estimated")))
                           for s in (0, 1)],
    # a longer DS-ATGO MLP run: how far the MNIST MLP gets with more epochs
    "mlp-long": [("ds-atgo", dict(MNIST_MLP, epochs=10, weight_decay=1e-4, method="ds-atgo"), 0)],
    # the documented CNN runs (DS-ATGO, longer budget than the ablation)
    "cnn-mnist": [("ds-atgo", dict(FMNIST_CNN, dataset="mnist", epochs=3, method="ds-atgo"), 0)],
    "cnn-mnist-long": [("ds-atgo", dict(FMNIST_CNN, dataset="mnist", epochs=5, method="ds-atgo"), 0)],
    "cnn-fmnist": [("ds-atgo", dict(FMNIST_CNN, epochs=4, method="ds-atgo"), 0)],
    # the attempt at a 92 % Fashion-MNIST target: twice cnn-fmnist's epochs, with
    # weight decay; about 40 minutes of one core beside another run
    "cnn-fmnist-long": [("ds-atgo", dict(FMNIST_CNN, epochs=8, weight_decay=1e-4,
                                         method="ds-atgo"), 0)],
    # the lower peak rate that cnn-fmnist-long's per-epoch accuracies point to
    "cnn-fmnist-lr02": [("ds-atgo", dict(FMNIST_CNN, epochs=5, lr=0.02, method="ds-atgo"), 0)],
    # the same rate for twice the epochs, which cnn-fmnist-lr02's still-rising
    # accuracy pointed to
    "cnn-fmnist-lr02-long": [("ds-atgo", dict(FMNIST_CNN, epochs=10, lr=0.02,
                                              method="ds-atgo"), 0)],
    # the first attempt, 15 epochs with crop + flip: stopped after one epoch (too long for a
    # working day at 687 s per epoch on one core)
    "cnn-fmnist-aug": [("ds-atgo", dict(FMNIST_CNN, epochs=15, augment=True, method="ds-atgo"),
                        0)],
    # the CIFAR target: DS-ATGO on all 50,000 images for about 2 hours of both cores
    # (7 epochs at the threaded engine's speed); run it alone, with DSATGO_THREADS unset
    "cifar-long": [("ds-atgo", dict(CIFAR_VGG, train_subset=0, epochs=7, method="ds-atgo"), 0)],
    # the same recipe from three more seeds, and from seed 0 at a lower peak rate: how much of a
    # run's course is its seed (about 2 minutes a run on a GPU: --backend cupy)
    "cifar-long-seeds": [("ds-atgo", dict(CIFAR_VGG, train_subset=0, epochs=7, method="ds-atgo"), s)
                         for s in (1, 2, 3)]
                        + [("ds-atgo-lr02", dict(CIFAR_VGG, train_subset=0, epochs=7, lr=0.02,
                                                 method="ds-atgo"), 0)],
}

SMOKE = dict(dataset="digits", model="mlp", hidden=[32], epochs=1, batch_size=100, T=2,
             train_subset=300)


def run_dir(exp, label, seed):
    return os.path.join(ROOT, exp, f"{label}-s{seed}")


def finished(path, epochs):
    try:
        with open(os.path.join(path, "metrics.jsonl")) as f:
            return sum(1 for _ in f) >= epochs
    except OSError:
        return False


def run(exp: str, smoke: bool = False, root: str = ROOT, labels=None, backend: str = "numpy"):
    runs = EXPERIMENTS[exp]
    if labels:                                  # only these labels, in this order
        runs = [r for lab in labels for r in runs if r[0] == lab]
    for label, opts, seed in runs:
        if smoke:
            opts = dict(opts, **SMOKE)
            opts.pop("vgg_layers", None)
        cfg = train.Config(**dict(opts, seed=seed, plots=not smoke, backend=backend,
                                  out=os.path.join(root, exp, f"{label}-s{seed}")))
        if finished(cfg.out, cfg.epochs):
            print(f"{exp}/{label}-s{seed}: done already")
            continue
        lock = mismatch.claim(cfg.out)    # one claim file for both runners
        if lock is None:
            print(f"{exp}/{label}-s{seed}: another runner has it, skipped")
            continue
        try:
            resume = os.path.exists(os.path.join(cfg.out, "config.json"))   # begun
            print(f"== {exp}/{label}-s{seed}" + (" (resuming)" if resume else ""), flush=True)
            summary = train.fit(cfg, resume=resume, progress=sys.stderr.isatty())
        finally:
            os.remove(lock)
        if summary.get("interrupted"):
            print("interrupted: run the same command again to continue", file=sys.stderr)
            return 1
        with open(os.path.join(cfg.out, "machine.json"), "w") as f:
            json.dump(dict(machine=platform.platform(), cpus=os.cpu_count(),
                           python=platform.python_version(), finished=time.ctime(),
                           wall_time_s=summary.get("train_time_s"),   # all sessions
                           blas_threads=os.environ.get("OPENBLAS_NUM_THREADS", "default"),
                           config=dataclasses.asdict(cfg)), f, indent=2)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiments", nargs="*",
                   help=f"any of: {', '.join(list(EXPERIMENTS) + list(mismatch.EXPERIMENTS))}")
    p.add_argument("--smoke", action="store_true", help="tiny settings on the digits set")
    p.add_argument("--root", default=ROOT, help="where the runs go")
    p.add_argument("--list", action="store_true")
    p.add_argument("--labels", default="",
                   help="only the runs with these labels, in this order (e.g. ds-atgo,tgo)")
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy"),
                   help="cupy: train on the GPU (the same batches and initial weights)")
    a = p.parse_args(argv)
    if a.list or not a.experiments:
        for name, runs in {**EXPERIMENTS, **mismatch.EXPERIMENTS}.items():
            print(f"{name}: {len(runs)} runs")
        return 0
    labels = [lab for lab in a.labels.split(",") if lab]
    for exp in a.experiments:
        if exp in mismatch.EXPERIMENTS:          # mismatch-*: plain networks, mismatch.run
            unknown = set(labels) - {r[0] for r in mismatch.EXPERIMENTS[exp]}
            if unknown:
                p.error(f"{exp} has no run labelled {sorted(unknown)}: its labels look like "
                        f"{mismatch.EXPERIMENTS[exp][0][0]} (method_knobvalue)")
            mismatch.run(exp, a.smoke, a.root, labels)
            continue
        if exp not in EXPERIMENTS:
            p.error(f"unknown experiment {exp!r}: choose from {', '.join(EXPERIMENTS)}")
        known = {r[0] for r in EXPERIMENTS[exp]}
        if set(labels) - known:
            p.error(f"{exp} has no run labelled {sorted(set(labels) - known)}: its labels are "
                    f"{', '.join(sorted(known))}")
        if run(exp, a.smoke, a.root, labels, a.backend):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
