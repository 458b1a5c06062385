"""Where a run starts: a new run's data and network, or a resumed run's files, each checked.

A resumed run keeps the options of FIXED (refuse_changes names the one changed); its
config.json, last.npz (arrays and position), metrics.jsonl and best.npz are checked against
each other before anything is written (check_resume), and only the repairs a stop can make
necessary are planned, for loop.begin to carry out.
"""
from __future__ import annotations

import dataclasses
import math
import os

from .. import data
from ..checkpoint import load_model_state, read_checkpoint
from ..recipe import (Config, _flag, _is_int, _is_real, build_model, check_memory,
                      config_from_dict, load_data, make_optimizer)
from .folder import CONFIG, LAST, METRICS, RunError, RunFolder
from .rows import check_best, reconcile_rows

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



def setup(cfg: Config, ckpt, last: str = "") -> dict:
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


def check_resume(cfg: Config, folder: RunFolder, verbose: bool) -> dict:
    """Every check of a resume, writing nothing: the folder's files are its own (no links);
    config.json is complete and valid and cfg keeps its FIXED options; last.npz is a valid
    checkpoint (arrays finite, BatchNorm variances >= 0, a valid position) of the same run;
    metrics.jsonl agrees with it (rows.reconcile_rows); best.npz holds the best epoch
    (rows.check_best). Then the data, the network and the optimiser, with last.npz's state.
    Returns what loop.begin writes and the loop continues from."""
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
    start.update(setup(cfg, ckpt, last))
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
