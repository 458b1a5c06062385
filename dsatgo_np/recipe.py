"""The recipe of a run: its options (Config), their checks, its data and its network.

One flat Config holds every option of the training command (saved as a run's config.json);
check_config refuses any that is of the wrong type, out of range or unread by the method;
build_model and make_optimizer turn a Config into the network and optimiser it trains, and
load_data into its data. Checkpoints, interop and the training command all build from here.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from . import data, encode, models, optim
from .backend import BACKENDS
from .core.neuron import METHODS, SpikeConfig

MODELS = ("mlp", "cnn", "vgg", "sew-resnet", "resnet19")



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
        raise ValueError(f"{source} lacks the option(s) {', '.join(missing)} (damaged, or "
                       "written by an older version): add them with the values the run was "
                       "trained with (last.npz keeps the run's options under 'config' in its "
                       "metadata), or restore the file from a copy of the run")
    cfg = Config(**values)
    try:
        check_config(cfg)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{source}: {e}") from None
    return cfg


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
