"""What NIR export costs each method: test accuracy before and after, per data set (docs/NIR.md).

    python experiments/nir_accuracy.py            # train what is missing, then print the table
    python experiments/nir_accuracy.py --no-train # only evaluate runs that exist

For every data set and method, a small MLP (784-512-512-10, T = 4, one epoch; the defaults of
`python -m dsatgo_np.train --dataset D --method M --epochs 1 --out runs/nir/D-M`) is evaluated
three ways on the test set:

    before:      this project's eval forward (the running thresholds R[t], one per step)
    NIR, mean:   the network read back from its .nir file (nir.write, nir.read, from_nir),
                 exported with one threshold per layer, the mean of R[1..T]
    NIR, first:  the same with R[1]

Fixed-threshold methods must lose nothing; the adaptive ones (at, ds-atgo) show the cost. A
second table lists their running thresholds R[t], per layer and step.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

from dsatgo_np import data, train
from dsatgo_np.checkpoint import load_model_state, read_checkpoint
from dsatgo_np.interop import nirgraph

METHODS = ("vanilla", "at", "tgo", "ds-atgo", "mpd-agl")
DATASETS = ("mnist", "fashion-mnist")
ROOT = os.path.join("runs", "nir")


def run_dir(dataset, method):
    return os.path.join(ROOT, f"{dataset}-{method}")


def ensure_trained(dataset, method):
    best = os.path.join(run_dir(dataset, method), "best.npz")
    if not os.path.exists(best):
        train.fit(train.Config(dataset=dataset, method=method, epochs=1,
                               out=run_dir(dataset, method), plots=False), progress=False)
    return best


def accuracies(best, xte, yte):
    """{"before": acc, "mean": acc, "first": acc} for one checkpoint."""
    state, _, meta = read_checkpoint(best)
    cfg = train.Config(**meta["config"])
    net = train.build_model(cfg, tuple(meta["in_shape"]), meta["n_classes"])
    load_model_state(net, state, best)
    out = {"before": train.evaluate(net, xte, yte, cfg, np)}
    with tempfile.TemporaryDirectory() as tmp:
        for choice in nirgraph.THRESHOLD_CHOICES:
            path = os.path.join(tmp, f"{choice}.nir")
            graph = nirgraph.cli_export(best, path, threshold=choice)
            out[choice] = train.evaluate(nirgraph.load_file(path), xte, yte, cfg, np)
    out["R"] = graph.metadata["running_thresholds"]          # {LIF node: R[1..T]}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-train", action="store_true", help="skip runs that do not exist yet")
    a = p.parse_args(argv)
    rows = []
    for dataset in DATASETS:
        xte, yte = data.load(dataset, "test")
        xte = data.normalize(xte, dataset)
        for method in METHODS:
            best = os.path.join(run_dir(dataset, method), "best.npz")
            if a.no_train and not os.path.exists(best):
                continue
            acc = accuracies(ensure_trained(dataset, method), xte, yte)
            rows.append((dataset, method, acc))
            print(f"{dataset} {method}: {acc}", file=sys.stderr)
    print("| data set | method | before | NIR, mean of R[t] | NIR, R[1] |")
    print("|---|---|---|---|---|")
    for dataset, method, acc in rows:
        print(f"| {dataset} | {method} | {100 * acc['before']:.2f} % | {100 * acc['mean']:.2f} % "
              f"({100 * (acc['mean'] - acc['before']):+.2f}) | {100 * acc['first']:.2f} % "
              f"({100 * (acc['first'] - acc['before']):+.2f}) |")
    print("\n| data set | method | layer | R[1..T] |")
    print("|---|---|---|---|")
    for dataset, method, acc in rows:
        if method in ("at", "ds-atgo"):
            for layer, R in acc["R"].items():
                print(f"| {dataset} | {method} | {layer} | {' '.join(f'{r:.3f}' for r in R)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
