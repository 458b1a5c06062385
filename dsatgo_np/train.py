"""The training command: one readable loop, its options, checkpoints, logs and plots.

    python -m dsatgo_np.train                                  # MNIST, DS-ATGO MLP, 1 epoch
    python -m dsatgo_np.train --dataset fashion-mnist --model cnn --epochs 10
    python -m dsatgo_np.train --resume runs/<run>              # continue an interrupted run
    python -m dsatgo_np.train evaluate runs/<run>/best.npz     # test accuracy of a checkpoint
    python -m dsatgo_np.train plot runs/<run>                  # figures from a run's logs

A run folder holds config.json, metrics.jsonl (one JSON object per epoch), last.npz and
best.npz (written atomically) and plots/. Ctrl-C stops after the current batch and saves
last.npz with the position in the epoch, so --resume continues exactly where it stopped.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import data, diagnostics, encode, losses, models, optim
from .backend import get_backend, to_numpy
from .checkpoint import load_model_state, read_checkpoint, save_checkpoint
from .neuron import METHODS
from .progress import Progress

MODELS = ("mlp", "cnn", "vgg", "sew-resnet")


@dataclass
class Config:
    """Every option of a run (one flat config, saved as config.json)."""
    dataset: str = "mnist"                # mnist | fashion-mnist | cifar10 | digits
    model: str = "mlp"                    # mlp | cnn | vgg | sew-resnet
    hidden: list = field(default_factory=lambda: [512, 512])     # mlp hidden sizes
    channels: list = field(default_factory=lambda: [32, 64])     # cnn channels
    vgg_layers: list = field(default_factory=lambda: [64, 128, "P", 128, "P"])
    width_mult: float = 0.25              # sew-resnet channel multiplier (1.0 = ResNet19)
    method: str = "ds-atgo"
    neuron: str = "lif"                   # lif | plif
    width: str = "threshold"              # threshold (paper Eq. 7) | std (released code)
    f_c: float = 1.0
    threshold: str = "measured"           # measured | estimated
    running: bool = True                  # eval with running thresholds (else batch statistics)
    threshold_grad: bool = False
    detach_reset: bool = False
    T: int = 4
    epochs: int = 1
    batch_size: int = 64
    optimizer: str = "sgd"                # sgd | adam
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"              # cosine | constant
    label_smoothing: float = 0.0
    augment: bool = False                 # random crop (pad 4) + flip; for cifar10
    train_subset: int = 0                 # use only the first N training samples (0: all)
    seed: int = 0
    backend: str = "numpy"                # numpy | cupy
    out: str = ""                         # run folder (default runs/<dataset>-<model>-<method>-<time>)
    data_dir: str = ""                    # data cache (default $DSATGO_DATA or ~/.cache/dsatgo_np)
    diag_every: int = 10                  # record firing rates etc. every N batches
    plots: bool = True


def check_config(cfg: Config):
    choices = {"dataset": data.DATASETS, "model": MODELS, "method": METHODS,
               "neuron": ("lif", "plif"), "width": ("threshold", "std"),
               "threshold": ("measured", "estimated"), "optimizer": ("sgd", "adam"),
               "schedule": ("cosine", "constant"), "backend": ("numpy", "cupy")}
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ValueError(f"unknown {key} {getattr(cfg, key)!r}: choose one of {', '.join(allowed)}")
    for key in ("T", "epochs", "batch_size"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key} must be at least 1, got {getattr(cfg, key)}")


def build_model(cfg: Config, in_shape, n_classes):
    spiking = dict(T=cfg.T, method=cfg.method, neuron=cfg.neuron, width=cfg.width, f_c=cfg.f_c,
                   threshold=cfg.threshold, running=cfg.running, threshold_grad=cfg.threshold_grad,
                   detach_reset=cfg.detach_reset, seed=cfg.seed, dtype="float32")
    if cfg.model == "mlp":
        return models.mlp([int(np.prod(in_shape)), *cfg.hidden, n_classes], **spiking)
    if cfg.model == "cnn":
        return models.cnn(tuple(in_shape), tuple(cfg.channels), n_classes, **spiking)
    if cfg.model == "vgg":
        return models.vgg(tuple(in_shape), tuple(cfg.vgg_layers), n_classes, **spiking)
    return models.sew_resnet(tuple(in_shape), n_classes, width_mult=cfg.width_mult, **spiking)


def make_optimizer(cfg: Config, params):
    if cfg.optimizer == "sgd":
        return optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def check_memory(cfg: Config, in_shape, n_classes):
    """Refuse a configuration whose training step would not fit in memory, before it starts.

    The cost is measured, not guessed: one training forward of a fresh copy of the model on
    two samples, the bytes its caches hold, scaled to the batch, times 2 for the backward's
    temporaries.
    """
    probe = build_model(cfg, in_shape, n_classes)
    probe.forward(encode.direct(np.zeros((2,) + tuple(in_shape), np.float32), cfg.T))
    per_sample = sum(getattr(a, "nbytes", 0) for m in probe.modules()
                     for a in (getattr(m, "cache", None) or ())) / 2
    need = 2 * per_sample * cfg.batch_size
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        avail = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return need
    if need > 0.8 * avail:
        raise MemoryError(f"this configuration needs about {need / 2**30:.1f} GiB for one training "
                          f"step but only {avail / 2**30:.1f} GiB are free: lower --batch-size "
                          f"({cfg.batch_size}), --T ({cfg.T}) or the model's width")
    return need


def evaluate(net, x, y, cfg: Config, xp, batch_size: int = 500) -> float:
    """Test accuracy in eval mode (running BN statistics and running thresholds)."""
    net.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        xb = xp.asarray(x[i:i + batch_size])
        out = net.forward(encode.direct(xb, cfg.T))
        correct += int((to_numpy(out.mean(axis=0).argmax(axis=1)) == y[i:i + batch_size]).sum())
    net.train()
    return correct / len(y)


def load_data(cfg: Config):
    root = cfg.data_dir or None
    xtr, ytr = data.load(cfg.dataset, "train", root=root)
    xte, yte = data.load(cfg.dataset, "test", root=root)
    if cfg.train_subset:
        # A random subset, the same for every run: some data sets are stored sorted by class,
        # where the first N samples would hold only the first classes.
        keep = np.sort(np.random.default_rng(0).permutation(len(ytr))[:cfg.train_subset])
        xtr, ytr = xtr[keep], ytr[keep]
    return data.normalize(xtr, cfg.dataset), ytr, data.normalize(xte, cfg.dataset), yte


class _StopFlag:
    """First Ctrl-C (or SIGTERM, as a shutdown sends): finish the batch, save, stop.
    Second one: stop at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.set = False

    def __enter__(self):
        self.old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{name}: stopping after this batch and saving a checkpoint "
              "(send it again to stop at once)", file=sys.stderr)

    def __exit__(self, *exc):
        for s, handler in self.old.items():
            signal.signal(s, handler)


def fit(cfg: Config, resume: bool = False, on_batch=None, verbose: bool = True,
        progress: bool = True) -> dict:
    """Train cfg's model; returns the final summary. on_batch(epoch, i) is called after each step.

    verbose: print per-epoch results and the final summary; progress: show progress bars.
    """
    check_config(cfg)
    xp = get_backend(cfg.backend)
    run = cfg.out or os.path.join("runs", f"{cfg.dataset}-{cfg.model}-{cfg.method}-"
                                          f"{time.strftime('%Y%m%d-%H%M%S')}")
    cfg = dataclasses.replace(cfg, out=run)
    os.makedirs(run, exist_ok=True)
    last, best_path = os.path.join(run, "last.npz"), os.path.join(run, "best.npz")
    if not resume and os.path.exists(last):
        raise FileExistsError(f"{run} already holds a run: pass --resume {run} to continue it, "
                              "or --out to start a new one elsewhere")
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=2)

    xtr, ytr, xte, yte = load_data(cfg)
    in_shape, n_classes = xtr.shape[1:], int(max(ytr.max(), yte.max())) + 1
    check_memory(cfg, in_shape, n_classes)
    net = build_model(cfg, in_shape, n_classes).to(cfg.backend)
    opt = make_optimizer(cfg, net.parameters())
    steps = data.num_batches(len(ytr), cfg.batch_size)
    pos = dict(epoch=0, batch=0, loss_sum=0.0, correct=0, seen=0, best=-1.0, elapsed=0.0)
    if resume:
        model_state, optim_state, meta = read_checkpoint(last)
        load_model_state(net, model_state, last)
        opt.load_state_dict(optim_state)
        pos.update(meta["position"])
        if verbose:
            print(f"resuming {run} at epoch {pos['epoch'] + 1}, batch {pos['batch']}")

    start = time.time() - pos["elapsed"]
    test_acc = None
    recorded = pos.pop("recorder", None)          # the interrupted epoch's diagnostics so far
    with _StopFlag() as stop:
        for epoch in range(pos["epoch"], cfg.epochs):
            rec = diagnostics.Recorder.from_state(recorded) if recorded else diagnostics.Recorder()
            fr = rec.means()["firing_rate"] if recorded else float("nan")
            recorded = None
            bar = Progress(steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (verbose and progress))
            bar.update(pos["batch"])
            for i, (xb, yb) in enumerate(data.batches(xtr, ytr, cfg.batch_size, seed=cfg.seed,
                                                      epoch=epoch)):
                if i < pos["batch"]:
                    continue                                   # done before the interruption
                if cfg.schedule == "cosine":
                    opt.lr = optim.cosine_lr(cfg.lr, epoch * steps + i, cfg.epochs * steps)
                if cfg.augment:
                    xb = data.random_crop_flip(xb, np.random.default_rng([cfg.seed, epoch, i]))
                out = net.forward(encode.direct(xp.asarray(xb), cfg.T))      # (T, B, K)
                loss, dout = losses.cross_entropy(out, xp.asarray(yb), cfg.label_smoothing)
                net.zero_grad()
                net.backward(dout)
                opt.step()
                pred = to_numpy(out.mean(axis=0).argmax(axis=1))
                pos["loss_sum"] += float(loss) * len(yb)
                pos["correct"] += int((pred == yb).sum())
                pos["seen"] += len(yb)
                pos["batch"] = i + 1
                if i % cfg.diag_every == 0:
                    rec.update(net)
                    fr = rec.means()["firing_rate"]
                bar.update(loss=pos["loss_sum"] / pos["seen"], acc=pos["correct"] / pos["seen"],
                           fr=fr)
                if on_batch is not None:
                    on_batch(epoch, i)
                if stop.set:
                    break
            bar.close()
            pos["elapsed"] = time.time() - start
            if stop.set:
                save_checkpoint(last, net, opt, dict(config=dataclasses.asdict(cfg),
                                                     position=dict(pos, recorder=rec.state())))
                print(f"stopped; saved {last}. Continue with: python -m dsatgo_np.train "
                      f"--resume {run}", file=sys.stderr)
                return dict(run=run, interrupted=True, position=pos)
            test_acc = evaluate(net, xte, yte, cfg, xp)
            row = dict(epoch=epoch + 1, train_loss=pos["loss_sum"] / pos["seen"],
                       train_acc=pos["correct"] / pos["seen"], test_acc=test_acc, lr=opt.lr,
                       time=pos["elapsed"], diagnostics=rec.summary())
            row.update(rec.means())               # network-wide firing_rate and grad_share
            with open(os.path.join(run, "metrics.jsonl"), "a") as f:
                f.write(json.dumps(row) + "\n")
            if verbose:
                print(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}, train acc "
                      f"{100 * row['train_acc']:.2f} %, test acc {100 * test_acc:.2f} %")
            is_best = test_acc > pos["best"]
            pos.update(epoch=epoch + 1, batch=0, loss_sum=0.0, correct=0, seen=0,
                       best=max(pos["best"], test_acc))
            meta = dict(config=dataclasses.asdict(cfg), position=pos, test_acc=test_acc,
                        epoch=epoch + 1, in_shape=list(in_shape), n_classes=n_classes)
            save_checkpoint(last, net, opt, meta)
            if is_best:
                save_checkpoint(best_path, net, None, meta)

    wall = time.time() - start
    plots = make_plots(run) if cfg.plots else []
    summary = dict(run=run, test_acc=test_acc, best_test_acc=pos["best"], wall_time_s=wall,
                   plots=plots)
    if verbose:
        acc = "n/a" if test_acc is None else f"{100 * test_acc:.2f} %"
        print(f"\n{cfg.dataset} {cfg.model} {cfg.method}: test accuracy {acc} "
              f"(best {100 * pos['best']:.2f} %), wall time {wall:.0f} s\n"
              f"outputs in {run}/ (config.json, metrics.jsonl, last.npz, best.npz"
              f"{', plots/' if plots else ''})")
    return summary


def make_plots(run: str) -> list:
    try:
        from . import plots
        return plots.plot_run(run)
    except ImportError as e:
        print(f"(no plots: {e})", file=sys.stderr)
        return []


def evaluate_checkpoint(path: str, data_dir: str = "", backend: str = "numpy") -> dict:
    """Rebuild the model a checkpoint was saved from and measure its test accuracy."""
    model_state, _, meta = read_checkpoint(path)
    cfg = Config(**{**meta["config"], "backend": backend, "data_dir": data_dir or meta["config"]["data_dir"]})
    xp = get_backend(cfg.backend)
    xte, yte = data.load(cfg.dataset, "test", root=cfg.data_dir or None)
    xte = data.normalize(xte, cfg.dataset)
    if "n_classes" not in meta:
        raise ValueError(f"{path} holds no finished epoch (an interrupted run's last.npz?): "
                         "evaluate best.npz, or resume the run first")
    net = build_model(cfg, tuple(meta["in_shape"]), meta["n_classes"])
    load_model_state(net, model_state, path).to(cfg.backend)
    acc = evaluate(net, xte, yte, cfg, xp)
    return dict(test_acc=acc, recorded=meta.get("test_acc"), epoch=meta.get("epoch"))


# --- command line ----------------------------------------------------------------------------

HELP = {
    "dataset": "data set: mnist, fashion-mnist, cifar10 (the JPEG q75 copy), digits (offline)",
    "model": "network: mlp, cnn, vgg, sew-resnet",
    "hidden": "mlp hidden layer sizes", "channels": "cnn channel counts, one conv block each",
    "vgg_layers": "vgg layers: channel counts and P for 2x2 pooling",
    "width_mult": "sew-resnet channel multiplier (1.0 is ResNet19's 128/256/512)",
    "method": "vanilla, at, tgo, ds-atgo (the paper), mpd-agl",
    "neuron": "lif (fixed decay 0.2) or plif (learnable decay)",
    "width": "surrogate width input: threshold (paper Eq. 7) or std (released code)",
    "f_c": "firing-rate control factor of the adaptive threshold",
    "threshold": "measured statistics or the estimated f_c sqrt(1 + lam^2) V_th",
    "running": "evaluate with running thresholds (--no-running: batch statistics)",
    "threshold_grad": "let the gradient flow through the adaptive threshold (extension)",
    "detach_reset": "no gradient through the reset's spike",
    "T": "time steps", "epochs": "training epochs", "batch_size": "batch size",
    "optimizer": "sgd or adam", "lr": "learning rate", "momentum": "SGD momentum",
    "weight_decay": "L2 weight decay", "schedule": "cosine or constant learning rate",
    "label_smoothing": "cross-entropy label smoothing",
    "augment": "random crop (padding 4) and horizontal flip",
    "train_subset": "train on the first N samples only (0: all)", "seed": "random seed",
    "backend": "numpy (CPU) or cupy (GPU)", "out": "run folder",
    "data_dir": "data cache folder (default $DSATGO_DATA or ~/.cache/dsatgo_np)",
    "diag_every": "record diagnostics every N batches", "plots": "write PNG plots at the end",
}


def _item(text):
    return text if text == "P" else int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dsatgo_np.train",
        description="Train a spiking network with DS-ATGO (or a baseline) and report test "
                    "accuracy, firing rates and gradient-window shares. Subcommands: "
                    "'evaluate CHECKPOINT' and 'plot RUN_DIR'.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="JSON file of options (command-line flags override it)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        default = Config().__getattribute__(f.name)
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                           help=f"{HELP[f.name]} (default {default})")
        elif isinstance(default, list):
            p.add_argument(flag, nargs="+", type=_item, default=None,
                           help=f"{HELP[f.name]} (default {' '.join(map(str, default))})")
        else:
            p.add_argument(flag, type=type(default), default=None,
                           help=f"{HELP[f.name]} (default {default!r})")
    return p


def config_from_args(args) -> Config:
    values = {}
    if args.config:
        try:
            with open(args.config) as f:
                values = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read the config file {args.config}: {e}") from e
    if args.resume:
        path = os.path.join(args.resume, "config.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{args.resume} is not a run folder (no config.json)")
        with open(path) as f:
            values = json.load(f)
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} in the config; known: {sorted(known)}")
    for name in known:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    return Config(**values)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "evaluate":
            p = argparse.ArgumentParser(prog="python -m dsatgo_np.train evaluate",
                                        description="Test accuracy of a saved checkpoint.")
            p.add_argument("checkpoint")
            p.add_argument("--data-dir", default="")
            p.add_argument("--backend", default="numpy")
            a = p.parse_args(argv[1:])
            r = evaluate_checkpoint(a.checkpoint, a.data_dir, a.backend)
            rec = "" if r["recorded"] is None else f" (recorded at save time: {100 * r['recorded']:.2f} %)"
            print(f"{a.checkpoint}: test accuracy {100 * r['test_acc']:.2f} %{rec}")
            return 0
        if argv and argv[0] == "plot":
            p = argparse.ArgumentParser(prog="python -m dsatgo_np.train plot",
                                        description="Draw the plots of a run folder from its logs.")
            p.add_argument("run_dir")
            a = p.parse_args(argv[1:])
            if not os.path.exists(os.path.join(a.run_dir, "metrics.jsonl")):
                raise FileNotFoundError(f"{a.run_dir} has no metrics.jsonl: is it a run folder?")
            for path in make_plots(a.run_dir):
                print(path)
            return 0
        if argv and argv[0] == "train":
            argv = argv[1:]
        args = parser().parse_args(argv)
        cfg = config_from_args(args)
        fit(cfg, resume=bool(args.resume), progress=not args.quiet)
        return 0
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, MemoryError,
            data.DataError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
