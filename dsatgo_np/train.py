"""The training command: one readable loop, its options, checkpoints, logs and plots.

    python -m dsatgo_np.train                                  # MNIST, DS-ATGO MLP, 1 epoch
    python -m dsatgo_np.train --dataset fashion-mnist --model cnn --epochs 10
    python -m dsatgo_np.train --resume runs/<run>              # continue an interrupted run
    python -m dsatgo_np.train evaluate runs/<run>              # test accuracy of its best.npz
    python -m dsatgo_np.train plot runs/<run>                  # figures from a run's logs
    python -m dsatgo_np.train export runs/<run> model.safetensors   # or model.nir
    python -m dsatgo_np.train import official.safetensors model.npz

A run folder (see dsatgo_np.runs) holds config.json, metrics.jsonl (one JSON row per epoch,
with per-batch loss and accuracy), last.npz and best.npz (written atomically) and plots/.
Ctrl-C or SIGTERM stops after the current batch and saves last.npz with the position in the
epoch, so --resume continues exactly where it stopped. Exit codes: see EXIT_CODES.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import numbers
import operator
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from . import data, diagnostics, encode, models, optim

from .core import losses
from .backend import BACKENDS, get_backend, to_numpy
from .checkpoint import (load_model_state, load_npz, model_meta, read_checkpoint,
                         save_checkpoint, save_npz)
from .core.neuron import METHODS, SpikeConfig
from .runs import (BEST, CONFIG, LAST, METRICS, Diverged, RunError, RunFolder,  # noqa: F401
                   check_best, reconcile_rows, writing)

MODELS = ("mlp", "cnn", "vgg", "sew-resnet", "resnet19")

EXIT_CODES = {
    0: "finished (or nothing left to do)",
    1: "internal error: a bug; rerun with --debug and report the traceback",
    2: "bad options or input: an argument, an option, the config file, the data, a checkpoint "
       "or model file, a run folder whose files are damaged, disagree or are links, a folder "
       "that holds another run or is in use, an optional package that is not installed",
    3: "training diverged: a non-finite loss, gradient, weight or running statistic; "
       "last.npz and best.npz from before are kept",
    4: "I/O failure: a file of the run could not be written (disk full, permissions); "
       "last.npz and best.npz from before are kept",
    130: "stopped by Ctrl-C (SIGINT): after saving last.npz (--resume continues), or before "
         "anything was written",
    143: "stopped by SIGTERM: after saving last.npz (--resume continues), or before anything "
         "was written",
}
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
_NOTEBOOK = any("notebook" in c.__module__ for c in tqdm.__mro__)   # tqdm.auto chose its widget
MAX_BATCH_ENTRIES = 1000      # per-batch metrics of an epoch: every batch up to this many batches


@dataclass
class Config:
    """Every option of a run (one flat config, saved as config.json)."""
    dataset: str = "mnist"                # mnist | fashion-mnist | cifar10 | digits
    model: str = "mlp"                    # mlp | cnn | vgg | sew-resnet | resnet19
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
    backend: str = "numpy"                # numpy | cupy | strict (a CuPy stand-in for tests)
    out: str = ""                         # run folder (default runs/<dataset>-<model>-<method>-<time>)
    data_dir: str = ""                    # data cache (default $DSATGO_DATA or ~/.cache/dsatgo_np)
    diag_every: int = 10                  # record firing rates etc. every N batches
    plots: bool = True


# --- checking options ---------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


# option -> (test, what it must be); every number must also be finite
_RANGES = {
    "T": (lambda v: v >= 1, "an integer of at least 1"),
    "epochs": (lambda v: v >= 1, "an integer of at least 1"),
    "batch_size": (lambda v: v >= 1, "an integer of at least 1"),
    "diag_every": (lambda v: v >= 1, "an integer of at least 1 (record every N batches)"),
    "train_subset": (lambda v: v >= 0, "a number of samples, at least 0 (0: all)"),
    "seed": (lambda v: v >= 0, "an integer of at least 0"),
    "lr": (lambda v: v > 0, "a positive learning rate"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, "at least 0"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "f_c": (lambda v: v > 0, "a positive factor"),
    "width_mult": (lambda v: v > 0, "a positive multiplier"),
}


def check_config(cfg: Config):
    """Refuse any option that is of the wrong type, not finite or out of range, naming it and
    what it must be. Runs before anything is read or written."""
    choices = {"dataset": data.DATASETS, "model": MODELS, "method": METHODS,
               "neuron": ("lif", "plif"), "width": ("threshold", "std"),
               "threshold": ("measured", "estimated"), "optimizer": ("sgd", "adam"),
               "schedule": ("cosine", "constant"), "backend": BACKENDS}
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ValueError(f"unknown {key} {getattr(cfg, key)!r}: choose one of {', '.join(allowed)}")
    defaults = Config()
    for f in dataclasses.fields(Config):
        value, default, flag = getattr(cfg, f.name), getattr(defaults, f.name), _flag(f.name)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be true or false, got {value!r}")
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError(f"{flag} must be a string, got {value!r}")
        elif isinstance(default, int):
            if not _is_int(value):
                raise TypeError(f"{flag} must be an integer, got {value!r}")
        elif isinstance(default, float):
            if not _is_real(value) or not math.isfinite(value):
                raise ValueError(f"{flag} must be a finite number, got {value!r}")
        if f.name in _RANGES and not _RANGES[f.name][0](value):
            raise ValueError(f"{flag} must be {_RANGES[f.name][1]}, got {value!r}")
    for key, allow_pool in (("hidden", False), ("channels", False), ("vgg_layers", True)):
        items = getattr(cfg, key)
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"{_flag(key)} must be a list of sizes, got {items!r}")
        for item in items:
            if not ((_is_int(item) and item >= 1) or (allow_pool and item == "P")):
                what = "positive integers or P (pooling)" if allow_pool else "positive integers"
                raise ValueError(f"{_flag(key)} must hold {what}, got {list(items)!r}")
    if not cfg.hidden:
        raise ValueError("--hidden needs at least one layer size: an MLP without a hidden layer "
                         "has no spiking neuron")
    if not cfg.channels:
        raise ValueError("--channels needs at least one channel count")
    if not any(_is_int(i) for i in cfg.vgg_layers):
        raise ValueError("--vgg-layers needs at least one convolution (a channel count)")
    try:                                  # an option the method does not read: refused by name
        SpikeConfig(method=cfg.method, width=cfg.width, f_c=cfg.f_c, threshold=cfg.threshold,
                    running=cfg.running, threshold_grad=cfg.threshold_grad)
    except ValueError as e:
        name = str(e).split("=", 1)[0]
        raise ValueError(f"{_flag(name)} " + str(e)[len(name) + 1:]) from None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_from_dict(values, source: str, complete: bool = False) -> Config:
    """The Config that a JSON object read from ``source`` holds, checked as the options are
    (check_config), every error naming the file. Unknown keys are refused; complete=True (a
    run's config.json) also refuses a missing key instead of taking its default."""
    if not isinstance(values, dict):
        raise ValueError(f"{source} must hold one JSON object of options")
    known = [f.name for f in dataclasses.fields(Config)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} in {source}; known: {sorted(known)}")
    missing = [k for k in known if k not in values]
    if complete and missing:
        raise RunError(f"{source} lacks the option(s) {', '.join(missing)} (damaged, or "
                       "written by an older version): add them with the values the run was "
                       "trained with (last.npz keeps the run's options under 'config' in its "
                       "metadata), or restore the file from a copy of the run")
    cfg = Config(**values)
    try:
        check_config(cfg)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{source}: {e}") from None
    return cfg


# The options a resumed run keeps, each with the reason; every other option (epochs, lr,
# momentum, weight_decay, schedule, label_smoothing, augment, backend, data_dir, diag_every,
# plots) may change on resume and applies from there on.
_NETWORK = "it changes what the network computes"
_BATCHES = "it changes the training data or the order of its batches"
FIXED = {**dict.fromkeys(("model", "hidden", "channels", "vgg_layers", "width_mult", "method",
                          "neuron", "width", "f_c", "threshold", "running", "threshold_grad",
                          "detach_reset", "T"), _NETWORK),
         **dict.fromkeys(("dataset", "train_subset", "batch_size", "seed"), _BATCHES),
         "optimizer": "the run's optimizer state belongs to its own optimizer"}


def _as_flag(key: str, value) -> str:
    """An option as the command line writes it: --hidden 64 32, --no-running."""
    if isinstance(value, bool):
        return _flag(key) if value else "--no-" + key.replace("_", "-")
    shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return f"{_flag(key)} {shown}"


def _fixed_changes(cfg: Config, run: dict) -> list:
    """The options of FIXED whose value in cfg differs from ``run`` (a run's options)."""
    def norm(v):
        return list(v) if isinstance(v, (list, tuple)) else v
    return [k for k in FIXED if norm(getattr(cfg, k)) != norm(run.get(k))]


def refuse_changes(cfg: Config, run: Config, folder: str):
    """Refuse a resume whose options change one that the run keeps (FIXED), naming it."""
    for key in _fixed_changes(cfg, dataclasses.asdict(run)):
        given = _as_flag(key, getattr(cfg, key))
        raise ValueError(f"{given}: the run in {folder} was trained with "
                         f"{_as_flag(key, getattr(run, key))}, which a resumed run keeps "
                         f"({FIXED[key]}); drop {given.split()[0]} to resume it, or start a new "
                         "run with --out")


# --- building blocks --------------------------------------------------------------------

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
    if cfg.model == "resnet19":          # the authors' release, layer for layer (3-channel input)
        if tuple(in_shape)[0] != 3:
            raise ValueError(f"--model resnet19 takes 3-channel images (as the authors' release "
                             f"does), but {cfg.dataset} has shape {tuple(in_shape)}: use "
                             "--dataset cifar10, or --model sew-resnet")
        return models.resnet19(n_classes=n_classes, **spiking)
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


def accuracy(net, x, y, T: int, xp, batch_size: int = 500) -> float:
    """Share of x [N, ...] whose time-averaged readout peaks at y [N], in eval mode."""
    was_training = net.training
    net.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        out = net.forward(encode.direct(xp.asarray(x[i:i + batch_size]), T))
        correct += int((to_numpy(out.mean(axis=0).argmax(axis=1)) == y[i:i + batch_size]).sum())
    net.train(was_training)
    return correct / len(y)


def evaluate(net, x, y, cfg: Config, xp, batch_size: int = 500) -> float:
    """Test accuracy in eval mode (running BN statistics and running thresholds); leaves the
    network in training mode."""
    acc = accuracy(net, x, y, cfg.T, xp, batch_size)
    net.train()
    return acc


def _check_split(x, y, name, split):
    """Refuse data that would train on garbage: non-finite inputs, labels that are not class
    indices."""
    if len(y) == 0:
        raise data.DataError(f"the {name} {split} split is empty: check the data cache")
    # NaN and inf survive a sum (no full-size temporary, unlike isfinite on CIFAR's 600 MB)
    bad = 0
    if not math.isfinite(float(x.sum())):        # then count (a huge finite sum counts none)
        bad = int(sum(np.count_nonzero(~np.isfinite(x[i:i + 4096])) for i in range(0, len(x), 4096)))
    if bad:
        raise data.DataError(f"the {name} {split} split holds {bad} non-finite input value(s) "
                             "(NaN or inf): repair or re-fetch the data (delete its cache folder)")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise data.DataError(f"the {name} {split} labels must be class indices >= 0: re-fetch the data")


def load_data(cfg: Config):
    root = cfg.data_dir or None
    xtr, ytr = data.load(cfg.dataset, "train", root=root)
    xte, yte = data.load(cfg.dataset, "test", root=root)
    if cfg.train_subset:
        if cfg.train_subset > len(ytr):
            raise ValueError(f"--train-subset {cfg.train_subset} is more than the {len(ytr)} "
                             f"training samples of {cfg.dataset}: pass at most {len(ytr)} (0: all)")
        # A random subset, the same for every run: some data sets are stored sorted by class,
        # where the first N samples would hold only the first classes.
        keep = np.sort(np.random.default_rng(0).permutation(len(ytr))[:cfg.train_subset])
        xtr, ytr = xtr[keep], ytr[keep]
    xtr, xte = data.normalize(xtr, cfg.dataset), data.normalize(xte, cfg.dataset)
    _check_split(xtr, ytr, cfg.dataset, "train")
    _check_split(xte, yte, cfg.dataset, "test")
    return xtr, ytr, xte, yte


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM that stops the command at once. started: whether the run had begun
    to write (then its last saved checkpoint stays as it was); before that, nothing was
    written."""

    def __init__(self, signum, started: bool = True):
        super().__init__(signum)
        self.signum, self.started = signum, started


class _StopFlag:
    """First Ctrl-C (or SIGTERM, as a shutdown sends): finish the batch, save, stop.
    Second one: stop at once, except inside a save (``with stop.saving():``), which is let
    finish, since the run stops right after it anyway."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self._saving = False

    @property
    def set(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        # Python runs signal handlers in the main thread only; elsewhere (a worker thread)
        # training runs without them.
        main = threading.current_thread() is threading.main_thread()
        self.old = {s: signal.signal(s, self._handle) for s in self.SIGNALS} if main else {}
        return self

    def _handle(self, signum, frame):
        if self.set:
            if self._saving:
                return
            raise Interrupted(signum)
        self.signum = signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{name}: stopping after this batch and saving a checkpoint "
              "(send it again to stop at once)", file=sys.stderr)

    @contextlib.contextmanager
    def saving(self):
        self._saving = True
        try:
            yield
        finally:
            self._saving = False

    def __exit__(self, *exc):
        for s, handler in self.old.items():
            signal.signal(s, handler)


# --- numerical guards -------------------------------------------------------------------

def _all_finite(arrays) -> bool:
    # NaN and inf survive a sum: the sums of all arrays, added on the device, are read back as
    # one number (one sync per step on a GPU, whatever the depth).
    if math.isfinite(float(functools.reduce(operator.add, (a.sum() for a in arrays)))):
        return True
    # A sum of large finite values may overflow: only an entry that is not finite counts.
    return all(bool(np.isfinite(to_numpy(a)).all()) for a in arrays)


def check_finite(net, loss_value: float, where: str, lr: float):
    """Raise Diverged at the first non-finite loss, gradient, weight or running statistic
    (BatchNorm statistics, running thresholds), naming the step and the likely cause."""
    cause = (f"the learning rate (--lr {lr:g}) is too high for this network, or the data hold "
             "extreme values; lower --lr")
    what = None
    if not math.isfinite(loss_value):
        what = f"the loss is {loss_value}"
    else:
        params, buffers = list(net.named_parameters()), list(net.named_buffers())
        if _all_finite([p.data for _, p in params] + [b for _, b in buffers]):
            return
        for name, p in params:
            if not bool(np.isfinite(to_numpy(p.grad)).all()):
                what = f"the gradient of {name} is not finite"
                break
        else:
            for name, b in buffers:
                if not bool(np.isfinite(to_numpy(b)).all()):
                    what = f"the running statistic {name} is not finite"
                    cause = f"the activations overflowed: lower --lr ({lr:g})"
                    break
            else:
                name = next((n for n, p in params if not bool(np.isfinite(to_numpy(p.data)).all())),
                            "?")
                what = f"the weight {name} is not finite after the update"
                cause = f"a step of lr x gradient overflowed: --lr {lr:g} is far too high"
    raise Diverged(f"training diverged at {where}: {what}. Likely cause: {cause}. last.npz and "
                   "best.npz from before are kept; start again, or --resume the run with a "
                   "lower --lr")


# --- the training loop ------------------------------------------------------------------

def _default_run(cfg: Config) -> str:
    return os.path.join("runs", f"{cfg.dataset}-{cfg.model}-{cfg.method}-"
                                f"{time.strftime('%Y%m%d-%H%M%S')}")


def fit(cfg: Config, resume: bool = False, on_batch=None, verbose: bool = True,
        progress: bool = True) -> dict:
    """Train cfg's model in the run folder cfg.out; returns the final summary.

    resume: continue the run saved in cfg.out (from its last.npz; from the start when it has
    none yet), after checking its files against each other (see _check_resume). on_batch(epoch,
    i) is called after each step. verbose: print per-epoch results and the final summary;
    progress: show progress bars (tqdm). The summary has interrupted=True and the signal
    number after a Ctrl-C / SIGTERM, finished=True when a resumed run had nothing left to do.
    Raises RunError subclasses (RunBusy, Diverged, RunIOError), ValueError/TypeError for bad
    options, data.DataError for bad data, Interrupted for a signal that stops it at once.
    """
    began = time.monotonic()
    paths = {k: os.fspath(getattr(cfg, k)) for k in ("out", "data_dir")
             if isinstance(getattr(cfg, k), os.PathLike)}
    cfg = dataclasses.replace(cfg, **paths)           # pathlib.Path welcome, stored as str
    check_config(cfg)
    if resume and not cfg.out:
        raise ValueError("resume needs the run folder: set out (the command line: --resume "
                         "RUN_DIR)")
    folder = RunFolder(cfg.out or _default_run(cfg))
    cfg = dataclasses.replace(cfg, out=folder.path)
    started = False
    try:
        # Checks first, writing nothing: a new run loads its data before it claims (creates)
        # its folder; a resumed run claims it, then checks every file of it.
        if resume:
            folder.claim()
            start = _check_resume(cfg, folder, verbose)
        else:
            _refuse_a_run(folder)
            start = _setup(cfg, None)
            folder.claim(create=True)
            folder.check_links()
            _refuse_a_run(folder)                    # again, now that the folder is ours
        started = True
        _begin(cfg, folder, start, verbose)
        if start.get("finished"):
            return _finished(cfg, folder, start["meta"], verbose)
        return _train(cfg, folder, start, on_batch, verbose, progress, began)
    except KeyboardInterrupt as e:
        raise Interrupted(getattr(e, "signum", signal.SIGINT), started) from None
    finally:
        folder.release()


def _refuse_a_run(folder: RunFolder):
    """A new run never goes into a folder that holds one (RunBusy if that run is writing)."""
    if folder.holds_run():
        if not folder.claimed:
            folder.claim()
        raise FileExistsError(f"{folder.path} already holds a run: pass --resume {folder.path} "
                              "to continue it, or --out to start a new one elsewhere")


def _setup(cfg: Config, ckpt, last: str = "") -> dict:
    """Data, the memory check, the network and its optimiser (state from ckpt, a checkpoint's
    (model, optimizer, meta), when given)."""
    xtr, ytr, xte, yte = load_data(cfg)
    in_shape, n_classes = xtr.shape[1:], int(max(ytr.max(), yte.max())) + 1
    check_memory(cfg, in_shape, n_classes)
    net = build_model(cfg, in_shape, n_classes).to(cfg.backend)
    opt = make_optimizer(cfg, net.parameters())
    if ckpt is not None:
        model_state, optim_state, _ = ckpt
        load_model_state(net, model_state, last)
        try:
            opt.load_state_dict(optim_state)
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{last}: its optimizer state does not fit --optimizer "
                             f"{cfg.optimizer} ({e}): the file is damaged; use another "
                             "checkpoint of the run") from e
    return dict(data=(xtr, ytr, xte, yte), in_shape=in_shape, n_classes=n_classes, net=net,
                opt=opt, pos=dict(_START))


# The position in training that checkpoints carry: finished epochs, batches done in the next
# one, its running sums, the best test accuracy so far (-1 before any), the training time of
# every session (s) and the epoch where the learning rate's cosine cycle began.
_START = dict(epoch=0, batch=0, loss_sum=0.0, correct=0, seen=0, best=-1.0, elapsed=0.0,
              cycle_start=0)


def _count(v) -> bool:
    return _is_int(v) and v >= 0


def _amount(v) -> bool:
    return _is_real(v) and math.isfinite(v) and v >= 0


# each field of a position: what it must be
_POSITION = dict(epoch=_count, batch=_count, correct=_count, seen=_count, loss_sum=_amount,
                 elapsed=_amount, best=lambda v: _is_real(v) and (v == -1 or 0 <= v <= 1),
                 cycle_start=_count, recorder=lambda v: isinstance(v, dict),
                 batches=lambda v: isinstance(v, dict))
_OPTIONAL = ("cycle_start", "recorder", "batches")    # (cycle_start: 0 in older checkpoints)


def _read_position(meta: dict, path: str) -> dict:
    """A checkpoint's position (see _START), every field checked, the file and field named."""
    pos = meta.get("position")
    if not isinstance(pos, dict) or "epoch" not in pos:
        raise ValueError(f"{path} has no position in its metadata: it is not a training "
                         "checkpoint; move it away to start the run over")
    for key, ok in _POSITION.items():
        if key in _OPTIONAL and key not in pos:
            continue
        if not ok(pos.get(key)) or (key == "cycle_start" and pos[key] > pos["epoch"]):
            raise ValueError(f"{path}: its position's {key!r} is {pos.get(key, 'missing')!r}: "
                             "the file is damaged; use another checkpoint of the run")
    return dict(_START, **pos)


def _check_resume(cfg: Config, folder: RunFolder, verbose: bool) -> dict:
    """Every check of a resume, writing nothing: the folder's files are its own (no links);
    config.json is complete and valid and cfg keeps its FIXED options; last.npz is a valid
    checkpoint (arrays finite, BatchNorm variances >= 0, a valid position) of the same run;
    metrics.jsonl agrees with it (runs.reconcile_rows); best.npz holds the best epoch
    (runs.check_best). Then the data, the network and the optimiser, with last.npz's state.
    Returns what _begin writes and _train continues from."""
    folder.check_links()
    run = config_from_dict(folder.read_config(), folder.file(CONFIG), complete=True)
    refuse_changes(cfg, run, folder.path)
    last = folder.file(LAST)
    ckpt, meta, pos, saved = None, {}, dict(_START), {}
    if os.path.lexists(last):
        ckpt = read_checkpoint(last)
        meta = ckpt[2]
        pos = _read_position(meta, last)
        saved = meta.get("config")              # the options the checkpoint was saved with
        if not isinstance(saved, dict):
            raise ValueError(f"{last} has no options ('config') in its metadata: it is not a "
                             "checkpoint of the training command; use another checkpoint")
        for key in _fixed_changes(run, saved):
            raise RunError(f"{last} and config.json disagree on {_flag(key)} (last.npz: "
                           f"{_as_flag(key, saved.get(key))}, config.json: "
                           f"{_as_flag(key, getattr(run, key))}): one of them comes from another "
                           "run; nothing was changed: restore the run's own file")
    elif verbose:
        print(f"{folder.path} has no checkpoint yet: starting it from epoch 1")
    row = meta.get("row") if isinstance(meta.get("row"), dict) else None
    rows, torn = folder.read_rows()
    kept, past, rewrite = reconcile_rows(rows, torn, pos["epoch"], row, pos["best"],
                                         folder.file(METRICS))
    best = check_best(folder, pos["epoch"], kept, past, last_is_epoch_end=row is not None)
    start = dict(rows=kept if rewrite else None, best=best, meta=meta)
    if pos["epoch"] >= cfg.epochs:
        return dict(start, finished=True)
    start.update(_setup(cfg, ckpt, last))
    steps = data.num_batches(len(start["data"][1]), cfg.batch_size)
    if pos["batch"] > steps:
        raise ValueError(f"{last}: its position (batch {pos['batch']}) lies past the epoch's "
                         f"{steps} batches: the file is damaged; use another checkpoint")
    start["pos"] = pos
    previous = saved["epochs"] if _is_int(saved.get("epochs")) else cfg.epochs
    if cfg.schedule == "cosine" and pos["epoch"] >= previous and cfg.epochs > pos["epoch"]:
        pos["cycle_start"] = pos["epoch"]          # a finished run extended: a new cycle
        start["note"] = (f"extending {folder.path} from {previous} to {cfg.epochs} epochs: the "
                         f"cosine schedule starts a new cycle, from --lr {cfg.lr:g} at epoch "
                         f"{pos['epoch'] + 1} down to 0 at the end of epoch {cfg.epochs}")
    elif cfg.schedule == "cosine" and cfg.epochs != previous:
        start["note"] = (f"the cosine schedule of {folder.path} now ends with epoch "
                         f"{cfg.epochs} instead of {previous}: the learning rate follows the "
                         "new curve from here")
    if verbose:
        print(f"resuming {folder.path} at epoch {pos['epoch'] + 1}, batch {pos['batch']}")
    return start


def _begin(cfg: Config, folder: RunFolder, start: dict, verbose: bool):
    """Every check has passed: remove temporaries, write config.json (not for a finished run,
    which keeps its own) and make the repairs that _check_resume found needed."""
    folder.remove_temporaries()
    if not start.get("finished"):
        folder.write_config(dataclasses.asdict(cfg))
    if start.get("rows") is not None:
        folder.write_rows(start["rows"])
    best = start.get("best")
    if best == "rewrite":              # best.npz from last.npz, which holds the best epoch
        arrays = load_npz(folder.file(LAST))
        with writing(folder.file(BEST)):
            save_npz(folder.file(BEST), {k: v for k, v in arrays.items()
                                         if not k.startswith("optim/")})
        print(f"note: {folder.file(BEST)} was missing or damaged; written again from last.npz, "
              "which holds the best epoch", file=sys.stderr)
    elif best:
        print(best, file=sys.stderr)
    if verbose and start.get("note"):
        print(start["note"])


def _finished(cfg, folder, meta, verbose) -> dict:
    done = meta["position"]["epoch"]
    acc = meta.get("test_acc")
    if verbose:
        shown = "" if acc is None else f" (test accuracy {100 * acc:.2f} %)"
        print(f"{folder.path} is finished after {done} epochs{shown}. To train "
              f"it further, give it more epochs: {prog()} --resume {folder.path} --epochs "
              f"{done + 1}")
    return dict(run=folder.path, finished=True, test_acc=acc,
                best_test_acc=meta["position"].get("best"))


def _bar(total, initial, desc, show):
    # A terminal or a notebook (tqdm.auto's widget) redraws in place; a log file gets a line
    # every 10 s.
    live = sys.stderr.isatty() or _NOTEBOOK
    return tqdm(total=total, initial=initial, desc=desc, unit="batch", disable=not show,
                dynamic_ncols=True, mininterval=0.1 if live else 10.0, file=sys.stderr)


def _train(cfg, folder, setup, on_batch, verbose, progress, began) -> dict:
    xp = get_backend(cfg.backend)
    xtr, ytr, xte, yte = setup["data"]
    net, opt, pos = setup["net"], setup["opt"], setup["pos"]
    in_shape, n_classes = setup["in_shape"], setup["n_classes"]
    last = folder.file(LAST)
    steps = data.num_batches(len(ytr), cfg.batch_size)
    every = -(-steps // MAX_BATCH_ENTRIES)          # per-batch metrics: every `every`-th batch
    start = time.monotonic() - pos["elapsed"]      # the training time of every session
    test_acc = None
    recorded = pos.pop("recorder", None)          # the interrupted epoch's diagnostics so far
    batch_log = pos.pop("batches", None)
    with _StopFlag() as stop:
        for epoch in range(pos["epoch"], cfg.epochs):
            rec = diagnostics.Recorder.from_state(recorded) if recorded else diagnostics.Recorder()
            fr = rec.means()["firing_rate"] if recorded else float("nan")
            log = batch_log or dict(every=every, step=[], loss=[], accuracy=[])
            recorded = batch_log = None
            bar = _bar(steps, pos["batch"], f"epoch {epoch + 1}/{cfg.epochs}", verbose and progress)
            for i, (xb, yb) in enumerate(data.batches(xtr, ytr, cfg.batch_size, seed=cfg.seed,
                                                      epoch=epoch)):
                if i < pos["batch"]:
                    continue                                   # done before the interruption
                if cfg.schedule == "cosine":    # one cycle from cycle_start to the last epoch
                    c0 = pos["cycle_start"]
                    opt.lr = optim.cosine_lr(cfg.lr, (epoch - c0) * steps + i,
                                             (cfg.epochs - c0) * steps)
                if cfg.augment:
                    xb = data.random_crop_flip(xb, np.random.default_rng([cfg.seed, epoch, i]))
                # the data set was checked when it was loaded: no per-batch reads on a GPU
                out = net.forward(encode.direct(xp.asarray(xb), cfg.T, check_finite=False))
                loss, dout = losses.cross_entropy(out, xp.asarray(yb), cfg.label_smoothing,
                                                  check_labels=False)           # out (T, B, K)
                net.zero_grad()
                net.backward(dout)
                opt.step()
                loss = float(loss)
                check_finite(net, loss, f"epoch {epoch + 1}, batch {i + 1} of {steps} (step "
                                        f"{epoch * steps + i + 1})", cfg.lr)
                correct = int((to_numpy(out.mean(axis=0).argmax(axis=1)) == yb).sum())
                pos["loss_sum"] += loss * len(yb)
                pos["correct"] += correct
                pos["seen"] += len(yb)
                pos["batch"] = i + 1
                if i % every == 0:
                    log["step"].append(epoch * steps + i + 1)
                    log["loss"].append(loss)
                    log["accuracy"].append(correct / len(yb))
                if i % cfg.diag_every == 0:
                    batch_rate = diagnostics.network_means(rec.update(net))["firing_rate"]
                    log.setdefault("rate_step", []).append(epoch * steps + i + 1)
                    log.setdefault("firing_rate", []).append(batch_rate)
                    fr = rec.means()["firing_rate"]
                bar.set_postfix(loss=f"{pos['loss_sum'] / pos['seen']:.3f}",
                                acc=f"{pos['correct'] / pos['seen']:.3f}", fr=f"{fr:.3f}",
                                refresh=False)
                bar.update()
                if on_batch is not None:
                    on_batch(epoch, i)
                if stop.set:
                    break
            bar.close()
            pos["elapsed"] = time.monotonic() - start
            if stop.set:
                meta = dict(config=dataclasses.asdict(cfg), model=model_meta(net),
                            position=dict(pos, recorder=rec.state(), batches=log))
                with stop.saving(), writing(last):
                    save_checkpoint(last, net, opt, meta)
                print(f"stopped; saved {last}. Continue with: {prog()} --resume {folder.path}",
                      file=sys.stderr)
                return dict(run=folder.path, interrupted=True, signal=stop.signum, position=pos)
            test_acc = evaluate(net, xte, yte, cfg, xp)
            row = dict(epoch=epoch + 1, train_loss=pos["loss_sum"] / pos["seen"],
                       train_acc=pos["correct"] / pos["seen"], test_acc=test_acc, lr=opt.lr,
                       time=pos["elapsed"], steps_per_epoch=steps, batches=log,
                       diagnostics=rec.summary())
            row.update(rec.means())               # network-wide firing_rate and grad_share
            if verbose:
                print(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}, train acc "
                      f"{100 * row['train_acc']:.2f} %, test acc {100 * test_acc:.2f} %")
            is_best = test_acc > pos["best"]
            pos.update(epoch=epoch + 1, batch=0, loss_sum=0.0, correct=0, seen=0,
                       best=max(pos["best"], test_acc))
            meta = dict(config=dataclasses.asdict(cfg), model=model_meta(net), position=pos,
                        test_acc=test_acc, epoch=epoch + 1, in_shape=list(in_shape),
                        n_classes=n_classes, row=row)
            with stop.saving():
                _commit_epoch(folder, row, net, opt, meta, is_best)
            if stop.set and epoch + 1 < cfg.epochs:      # Ctrl-C during the evaluation
                print(f"stopped after epoch {epoch + 1}; saved {last}. Continue with: "
                      f"{prog()} --resume {folder.path}", file=sys.stderr)
                return dict(run=folder.path, interrupted=True, signal=stop.signum, position=pos)

    plots = make_plots(folder.path) if cfg.plots else []
    wall = time.monotonic() - began              # this process's work, from fit's start
    summary = dict(run=folder.path, test_acc=test_acc, best_test_acc=pos["best"],
                   wall_time_s=wall, train_time_s=pos["elapsed"], plots=plots)
    if verbose:
        print(f"\n{cfg.dataset} {cfg.model} {cfg.method}: test accuracy {100 * test_acc:.2f} % "
              f"(best {100 * pos['best']:.2f} %), wall time {wall:.0f} s\n"
              f"outputs in {folder.path}/ (config.json, metrics.jsonl, last.npz, best.npz"
              f"{', plots/' if plots else ''})")
    return summary


def _commit_epoch(folder, row, net, opt, meta, is_best):
    """The epoch's row, then best.npz (if it is the best), then last.npz. A stop anywhere in
    between is repaired by the next --resume: it drops the rows past last.npz's epoch and
    trains that epoch again, bit for bit the same. If a save fails, the row is taken back."""
    size = folder.append_row(row)
    try:
        if is_best:
            with writing(folder.file(BEST)):
                save_checkpoint(folder.file(BEST), net, None, meta)
        with writing(folder.file(LAST)):
            save_checkpoint(folder.file(LAST), net, opt, meta)
    except BaseException:
        folder.truncate_rows(size)
        raise


def make_plots(run: str) -> list:
    try:
        from . import plots
        return plots.plot_run(run)
    except ImportError as e:
        print(f"(no plots: {e})", file=sys.stderr)
    except Exception as e:          # plots are a by-product: never lose a finished run to them
        print(f"(plots failed: {type(e).__name__}: {e})", file=sys.stderr)
    return []


def evaluate_checkpoint(path: str, data_dir: str = "", backend: str = "numpy",
                        dataset: str | None = None) -> dict:
    """Test accuracy of the network saved at ``path`` (a checkpoint, or a run folder's
    best.npz), on its run's data set (or ``dataset``)."""
    from . import checkpoint
    net, meta = checkpoint.load_with_meta(path, backend)
    config = meta.get("config", {})
    dataset = dataset or config.get("dataset")
    if dataset is None:
        raise ValueError(f"{path} does not say which data set it was trained on: pass --dataset")
    acc = evaluate_net(net, dataset, data_dir or config.get("data_dir", ""), backend)
    return dict(test_acc=acc, recorded=meta.get("test_acc"), epoch=meta.get("epoch"))


def evaluate_net(net, dataset: str, data_dir: str = "", backend: str = "numpy",
                 T: int | None = None) -> float:
    """Test accuracy of ``net`` on ``dataset``'s normalised test split."""
    data.check_name(dataset)
    T = T or getattr(net, "T", None)
    if not T:
        raise ValueError("the network does not say its number of time steps: pass --T")
    xte, yte = data.load(dataset, "test", root=data_dir or None)
    xte = data.normalize(xte, dataset)
    return accuracy(net, xte, yte, T, get_backend(backend))


def prog() -> str:
    """The command's name as the user typed it: the console script or the module."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("dsatgo-train") else "python -m dsatgo_np.train"


def main(argv=None) -> int:
    """The command line (dsatgo_np.cli.main): returns the exit code instead of raising."""
    try:
        from .cli import main as run
    except KeyboardInterrupt:                 # Ctrl-C while the command line is loading
        print("stopped (Ctrl-C) before anything was written", file=sys.stderr)
        return 130
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
