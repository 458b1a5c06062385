"""The training command's command line: options, subcommands, exit codes, one-line errors.

    python -m dsatgo_np.train --help          (or dsatgo-train --help once installed)

Every failure prints one line that names the problem and the fix and exits with a code of
exits.EXIT_CODES; --debug adds the traceback. The training itself is loop.fit.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import textwrap
import traceback

from .. import data
from ..backend import BACKENDS
from ..interop import MissingPackage
from ..recipe import Config, _flag, config_from_dict
from .evaluate import evaluate_checkpoint, evaluate_net
from .exits import EXIT_CODES, SIGNAL_EXIT, Interrupted, prog
from .folder import RunError, RunFolder
from .loop import fit


HELP = {
    "dataset": "data set: mnist, fashion-mnist, cifar10, digits (offline)",
    "model": "network: mlp, cnn, vgg, sew-resnet, resnet19 (the authors' release; cifar10)",
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
    "optimizer": "sgd or adam", "lr": "learning rate", "momentum": "SGD momentum, in [0, 1)",
    "weight_decay": "L2 weight decay", "schedule": "cosine or constant learning rate",
    "label_smoothing": "cross-entropy label smoothing, in [0, 1)",
    "augment": "random crop (padding 4) and horizontal flip",
    "train_subset": "train on a fixed random N of the training samples (0: all)",
    "seed": "random seed",
    "backend": "numpy (CPU), cupy (GPU) or strict (a CuPy stand-in for tests)",
    "out": "run folder (default: runs/<dataset>-<model>-<method>-<time>)",
    "data_dir": "data cache folder (default: $DSATGO_DATA or ~/.cache/dsatgo_np)",
    "diag_every": "record diagnostics every N batches", "plots": "write PNG plots at the end",
}
NO_DEFAULT = {"out", "data_dir"}        # their default is described in the help text itself


def _exit_codes_text() -> str:
    return "exit codes:\n" + "\n".join(
        textwrap.fill(text, 79, initial_indent=f"  {code:>3}  ", subsequent_indent=" " * 7)
        for code, text in EXIT_CODES.items())


def _item(text):
    return text if text == "P" else int(text)


class UsageError(ValueError):
    """A command line that argparse refuses: one line, with a pointer to --help."""


class _Parser(argparse.ArgumentParser):
    """argparse, whose errors end in one line (the problem and where --help is) instead of
    the whole usage."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def _nonempty(text: str) -> str:
    """A path argument: an empty string would silently mean 'the default'."""
    if not text:
        raise argparse.ArgumentTypeError("needs a path, got an empty string")
    return text


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog(),
        description="Train a spiking network with DS-ATGO (or a baseline) and report test "
                    "accuracy, firing rates and gradient-window shares. Subcommands: "
                    "'evaluate PATH', 'plot RUN_DIR', 'export SRC DST', 'import SRC DST' "
                    "(each with --help).",
        epilog=_exit_codes_text(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=_nonempty,
                   help="JSON file of options (command-line flags override it)")
    p.add_argument("--resume", metavar="RUN_DIR", type=_nonempty,
                   help="continue the run saved in RUN_DIR with its own options; --epochs, "
                   "--lr, --momentum, --weight-decay, --schedule, --label-smoothing, --augment, "
                   "--backend, --data-dir, --diag-every and --plots may change, the others "
                   "(network, data, batches, seed, optimizer) are the run's")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    defaults = Config()
    for f in dataclasses.fields(Config):
        default = getattr(defaults, f.name)
        shown = "" if f.name in NO_DEFAULT else \
            f" (default: {' '.join(map(str, default)) if isinstance(default, list) else default})"
        kw = dict(default=None, help=HELP[f.name] + shown)
        if isinstance(default, bool):
            p.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kw)
        elif isinstance(default, list):
            p.add_argument(_flag(f.name), nargs="+", type=_item, **kw)
        elif f.name == "backend":
            p.add_argument(_flag(f.name), choices=BACKENDS, **kw)
        elif f.name in NO_DEFAULT:
            p.add_argument(_flag(f.name), type=_nonempty, **kw)
        else:
            p.add_argument(_flag(f.name), type=type(default), **kw)
    return p


def config_from_args(args) -> Config:
    """The run's options: a --config file's (or, for --resume, the run's config.json, which
    must hold every option), then the flags given."""
    values = {}
    if args.resume and (args.config or args.out):
        raise ValueError("--resume RUN_DIR takes the run's own config.json and folder: drop "
                         "--config and --out")
    if args.config:
        try:
            with open(args.config, "rb") as f:
                values = json.loads(f.read().decode("utf-8"))
        except OSError as e:
            raise ValueError(f"cannot read the config file {args.config}: {e.strerror or e}") from e
        except UnicodeDecodeError as e:
            raise ValueError(f"the config file {args.config} is not UTF-8 text ({e.reason} at "
                             f"byte {e.start})") from e
        except ValueError as e:
            raise ValueError(f"the config file {args.config} is not valid JSON ({e})") from e
        config_from_dict(values, f"the config file {args.config}")   # unknown keys, types
    if args.resume:
        folder = RunFolder(args.resume)
        if not os.path.isdir(folder.path):
            raise FileNotFoundError(f"no run folder at {args.resume}: check the path given "
                                    "to --resume")
        if os.path.lexists(folder.file("config.json")):   # else fit says why, under the lock
            values = dataclasses.asdict(config_from_dict(
                folder.read_config(), folder.file("config.json"), complete=True))
    for f in dataclasses.fields(Config):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    if args.resume:
        values["out"] = args.resume           # the folder given is the folder used
    return Config(**values)


def _interop(module: str, function: str):
    """dsatgo_np.interop.<module>.<function>, imported only when asked for."""
    import importlib
    try:
        mod = importlib.import_module(f"dsatgo_np.interop.{module}")
    except ImportError as e:
        raise ValueError(f"this installation has no dsatgo_np.interop.{module} ({e}): model "
                         "exchange needs it; install the full package") from e
    fn = getattr(mod, function, None)
    if fn is None:
        raise ValueError(f"dsatgo_np.interop.{module} has no {function}(): this installation's "
                         "model exchange is incomplete; update the package")
    return fn


def _sub(name: str, description: str) -> argparse.ArgumentParser:
    p = _Parser(prog=f"{prog()} {name}", description=description, epilog=_exit_codes_text(),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    return p


def cmd_evaluate(argv) -> int:
    p = _sub("evaluate", "Test accuracy of a saved network: a run folder (its best.npz), a "
                         "checkpoint .npz, or a .nir / .safetensors file.")
    p.add_argument("path")
    p.add_argument("--data-dir", default="", help="data cache folder")
    p.add_argument("--backend", default="numpy", choices=BACKENDS)
    p.add_argument("--dataset", default=None, help="data set (checkpoints and the .nir and "
                   ".safetensors files this command exports record theirs; needed only for a "
                   "file that records none)")
    p.add_argument("--T", type=int, default=None, help="time steps, when the file does not say")
    a = p.parse_args(argv)
    if a.path.endswith((".nir", ".safetensors")):
        load = (_interop("nirgraph", "load_file") if a.path.endswith(".nir")
                else _interop("official", "load_safetensors"))
        if not os.path.exists(a.path):
            raise FileNotFoundError(f"no file at {a.path}")
        net = load(a.path)
        dataset = a.dataset or _recorded_dataset(a.path, net)
        if dataset is None:
            raise ValueError(f"{a.path} does not say which data set it was trained on: "
                             "add --dataset (mnist, fashion-mnist, cifar10 or digits)")
        acc = evaluate_net(net, dataset, a.data_dir, a.backend, a.T)
        print(f"{a.path}: test accuracy {100 * acc:.2f} % on {dataset}")
        return 0
    r = evaluate_checkpoint(a.path, a.data_dir, a.backend, a.dataset)
    rec = "" if r["recorded"] is None else f" (recorded at save time: {100 * r['recorded']:.2f} %)"
    print(f"{a.path}: test accuracy {100 * r['test_acc']:.2f} %{rec}")
    return 0


def _recorded_dataset(path, net):
    """The data set that `export` wrote into a .nir or .safetensors file, or None."""
    if path.endswith(".nir"):
        return (getattr(net, "metadata", None) or {}).get("dataset")
    return _interop("official", "dataset_of")(path)


def cmd_plot(argv) -> int:
    p = _sub("plot", "Draw the plots of a run folder from its metrics.jsonl.")
    p.add_argument("run_dir")
    a = p.parse_args(argv)
    folder = RunFolder(a.run_dir)
    if not os.path.exists(folder.file("metrics.jsonl")):
        raise FileNotFoundError(f"{a.run_dir} has no metrics.jsonl: is it a run folder?")
    if not folder.read_rows()[0]:
        raise ValueError(f"{a.run_dir}/metrics.jsonl holds no finished epoch: train (or "
                         "--resume) the run for at least one epoch first")
    try:
        from ..diagnostics import curves
    except ImportError as e:
        raise ValueError(f"plots need matplotlib ({e}): pip install 'dsatgo_np[plot]'") from e
    for path in curves.plot_run(a.run_dir):
        print(path)
    return 0


def cmd_export(argv) -> int:
    p = _sub("export", "Write a saved network (run folder or checkpoint) as DST: .safetensors "
                       "(the authors' layout) or .nir (the Neuromorphic Intermediate "
                       "Representation).")
    p.add_argument("src")
    p.add_argument("dst")
    a = p.parse_args(argv)
    if a.dst.endswith(".safetensors"):
        fn = _interop("official", "cli_export")
    elif a.dst.endswith(".nir"):
        fn = _interop("nirgraph", "cli_export")
    else:
        raise ValueError(f"cannot tell the format of {a.dst}: name it *.safetensors or *.nir")
    fn(a.src, a.dst)
    print(f"wrote {a.dst}")
    return 0


def cmd_import(argv) -> int:
    p = _sub("import", "Turn a network saved in the authors' layout (SRC, a .safetensors file) "
                       "into a checkpoint (DST) that evaluate and dn.load read. A .nir file needs "
                       "no import: evaluate and dn.load read it as it is.")
    p.add_argument("src")
    p.add_argument("dst")
    a = p.parse_args(argv)
    if a.src.endswith(".nir"):
        raise ValueError(f"import reads .safetensors files only; {a.src} is a NIR graph, which "
                         f"needs no import: evaluate it ({prog()} evaluate {a.src}) or load it "
                         "(dn.load) as it is")
    _interop("official", "cli_import")(a.src, a.dst)
    print(f"wrote {a.dst}")
    return 0


def cmd_train(argv) -> int:
    args = parser().parse_args(argv)
    cfg = config_from_args(args)
    summary = fit(cfg, resume=bool(args.resume), progress=not args.quiet)
    if summary.get("interrupted"):
        return SIGNAL_EXIT.get(summary.get("signal"), 130)
    return 0


COMMANDS = {"evaluate": cmd_evaluate, "plot": cmd_plot, "export": cmd_export,
            "import": cmd_import, "train": cmd_train}


def _on_sigterm(signum, frame):
    raise Interrupted(signum, started=False)      # fit says otherwise once it has written


def main(argv=None) -> int:
    """The command line; returns the exit code (EXIT_CODES) instead of raising."""
    old_term = signal.signal(signal.SIGTERM, _on_sigterm)   # outside the loop: stop, exit 143
    own_process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        if own_process:          # a process of its own: keep freed arrays for the next step
            from ..fast import allocator
            allocator.keep_freed_memory()
        command = COMMANDS.get(argv[0]) if argv else None
        return (command or cmd_train)(argv[1:] if command else argv)
    except BaseException as e:   # every failure: one line naming the problem and the fix
        if isinstance(e, SystemExit):
            raise
        if debug:
            traceback.print_exc()
        code, text = _failure(e)
        print(text, file=sys.stderr)
        return code
    finally:
        signal.signal(signal.SIGTERM, old_term)


def _failure(e: BaseException) -> tuple[int, str]:
    if isinstance(e, KeyboardInterrupt):
        signum = getattr(e, "signum", signal.SIGINT)
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if isinstance(e, Interrupted) and e.started:
            return SIGNAL_EXIT.get(signum, 130), (f"stopped at once ({name}): the run folder "
                                                  "keeps its last saved checkpoint; --resume "
                                                  "continues from it")
        return SIGNAL_EXIT.get(signum, 130), f"stopped ({name}) before anything was written"
    if isinstance(e, RunError):
        return e.exit_code, f"error: {e}"
    if isinstance(e, (ValueError, TypeError, FileNotFoundError, FileExistsError, MemoryError,
                      NotADirectoryError, data.DataError, RuntimeError, MissingPackage)):
        return 2, "error: " + str(e).replace("\n", " ")
    if isinstance(e, OSError):
        return 4, f"error: {e}: check the paths, the disk and the permissions"
    return 1, (f"internal error: {type(e).__name__}: {e}. This is a bug: rerun with --debug "
               "and report the traceback")
