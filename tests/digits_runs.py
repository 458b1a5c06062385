"""What the tests of the training command share: a small run on the offline digits set (as a
Config and as command-line options), the experiment scripts loaded as modules, and a test file
run again as a script in a fresh process that imports this working tree's library."""
import importlib.util
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAST = ["--dataset", "digits", "--hidden", "32", "--batch-size", "100", "--lr", "0.1",
        "--no-plots", "--quiet"]


def small(tmp_path, name="run", **kw):
    """The Config of FAST: one epoch of a 32-unit network, its run folder tmp_path/name."""
    from dsatgo_np import train
    opts = dict(dataset="digits", hidden=[32], epochs=1, batch_size=100, lr=0.1, plots=False,
                out=str(tmp_path / name))
    opts.update(kw)
    return train.Config(**opts)


def load_experiment(name):
    """experiments/NAME.py as a module (the folder is not a package; its scripts import each
    other as a run from the folder does, so the folder goes on the path)."""
    folder = os.path.join(ROOT, "experiments")
    if folder not in sys.path:
        sys.path.append(folder)
    path = os.path.join(folder, f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_as_script(test_file, tmp_path):
    """Save the digits set to tmp_path/digits.npz, run TEST_FILE as a script (argument:
    tmp_path) with one thread per process and this working tree first on the path; return the
    finished process (its stderr is in the assertion's message when it fails)."""
    from dsatgo_np import data
    splits = {s: data.load("digits", s) for s in ("train", "test")}
    np.savez(tmp_path / "digits.npz", **{f"{k}_{s}": v for s, xy in splits.items()
                                         for k, v in zip("xy", xy)})
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               DSATGO_THREADS="1", PYTHONPATH=os.pathsep.join([ROOT] + path))
    r = subprocess.run([sys.executable, test_file, str(tmp_path)], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def use_saved_digits(workdir):
    """In the script's process: make dsatgo_np.data.load read the digits run_as_script saved."""
    from dsatgo_np import data
    arrays = np.load(os.path.join(workdir, "digits.npz"))
    splits = {s: (arrays[f"x_{s}"], arrays[f"y_{s}"]) for s in ("train", "test")}
    data.load = lambda name, split="train", root=None, **kw: splits[split]
