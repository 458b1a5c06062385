"""The training loop: one epoch after another, each step checked, each epoch committed.

fit(cfg) trains cfg's model in its run folder: checks first (a new run's data, or a resumed
run's files: resume.py), then claims the folder, writes config.json and trains. An epoch's row
goes to metrics.jsonl before its checkpoint; Ctrl-C saves the position inside the epoch, so
--resume continues exactly where it stopped. Non-finite numbers stop it (check_finite).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import operator
import os
import signal
import sys
import time

import numpy as np
from tqdm.auto import tqdm

from .. import data, diagnostics, encode, optim
from ..backend import get_backend, to_numpy
from ..checkpoint import load_npz, model_meta, save_checkpoint, save_npz
from ..core import losses
from ..recipe import Config, check_config
from .evaluate import evaluate
from .exits import Interrupted, StopFlag, prog
from .folder import BEST, LAST, Diverged, RunFolder, writing
from .resume import check_resume, setup

_NOTEBOOK = any("notebook" in c.__module__ for c in tqdm.__mro__)   # tqdm.auto chose its widget
MAX_BATCH_ENTRIES = 1000      # per-batch metrics of an epoch: every batch up to this many batches


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
    none yet), after checking its files against each other (resume.check_resume). on_batch(epoch,
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
            start = check_resume(cfg, folder, verbose)
        else:
            _refuse_a_run(folder)
            start = setup(cfg, None)
            folder.claim(create=True)
            folder.check_links()
            _refuse_a_run(folder)                    # again, now that the folder is ours
        started = True
        begin(cfg, folder, start, verbose)
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


def begin(cfg: Config, folder: RunFolder, start: dict, verbose: bool):
    """Every check has passed: remove temporaries, write config.json (not for a finished run,
    which keeps its own) and make the repairs that check_resume found needed."""
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
    with StopFlag() as stop:
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
        from ..diagnostics import curves
        return curves.plot_run(run)
    except ImportError as e:
        print(f"(no plots: {e})", file=sys.stderr)
    except Exception as e:          # plots are a by-product: never lose a finished run to them
        print(f"(plots failed: {type(e).__name__}: {e})", file=sys.stderr)
    return []
