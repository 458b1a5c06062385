"""One command for a machine with a GPU: the GPU tests, then dsatgo_np's training step on CuPy
against PyTorch, SpikingJelly and snnTorch on CUDA, with the precision of each, the launches per
step, TF32's effect, the same experiment on CPU and GPU, and the main command's first batch.

    python bench/gpu_check.py --out gpu-check            # needs `pip install -e ".[gpu]"`
    python bench/gpu_check.py --count-only --out counts  # any machine with g++: launches only

Results go to --out as gpu_check.json and gpu_check.md. Networks (bench/nets.py) at their CPU
batch and at a GPU batch eight times larger. A step is bench/gpu_steps.py's; `--steps` of them
run back to back and the device is synchronised after them, so the time per step is what a
training loop sees, host overhead (one Python call per kernel launch) included. Without a GPU
it says so, writes that to --out and exits 0 (with --count-only it counts on the stand-in).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT, os.path.join(ROOT, "tests")]

import numpy as np  # noqa: E402

from dsatgo_np import backend  # noqa: E402
from gpu_steps import (available_peers, dsatgo_step, launches_per_step, peer_step,  # noqa: E402
                       stand_in_operations, torch_precision)
from nets import NETS  # noqa: E402

GPU_BATCH = 8           # the GPU batch is this many times the CPU batch of bench/nets.py


def run_tests(timeout: float) -> dict:
    """The GPU tests on the real GPU: their exit code and summary line."""
    cmd = [sys.executable, "-m", "pytest", "tests/test_cupy.py", "tests/test_gpu_kernels.py",
           "-q", "-p", "no:cacheprovider", "-x"]
    t0 = time.time()
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        lines = (r.stdout + r.stderr).strip().splitlines()
        return dict(command=" ".join(cmd[2:]), returncode=r.returncode, seconds=time.time() - t0,
                    summary=lines[-1] if lines else "", tail=lines[-30:])
    except subprocess.TimeoutExpired:
        return dict(command=" ".join(cmd[2:]), returncode=None, seconds=timeout,
                    summary=f"timed out after {timeout:.0f} s", tail=[])


def time_steps(step, sync, steps: int, warmup: int = 3, repeats: int = 3) -> list:
    """Seconds per step, one figure per repeat of `steps` back-to-back steps."""
    for _ in range(warmup):                       # first calls compile kernels, fill caches
        step()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        times.append((time.perf_counter() - t0) / steps)
    return times


def cases(peers: list):
    """(framework, method, precision switch) of every timed row."""
    yield "dsatgo_np", "vanilla", "float32"
    yield "dsatgo_np", "ds-atgo", "float32"
    yield "dsatgo_np", "ds-atgo", "tf32"
    for p in peers:
        yield p, "vanilla LIF", "default"
    if "torch" in peers:
        yield "torch", "vanilla LIF", "float32"


def measure(args, deadline: float, peers: list) -> list:
    import cupy as cp

    from dsatgo_np.gpu import precision
    sync_cp = cp.cuda.Device().synchronize
    rows = []
    for key in args.nets:
        net = NETS[key]
        for size in (net.batch, GPU_BATCH * net.batch):
            for framework, method, prec in cases(peers):
                row = dict(net=key, title=net.title.split(",")[0], batch=size,
                           framework=framework, method=method)
                if time.time() > deadline:
                    rows.append(dict(row, skipped="time budget spent"))
                    continue
                try:
                    if framework == "dsatgo_np":
                        precision.set_tf32(prec == "tf32")
                        row["precision"] = "TF32" if prec == "tf32" else "float32"
                        step, sync = dsatgo_step(net, size, method, cp), sync_cp
                        if size == net.batch and prec == "float32":
                            row["launches"] = launches_per_step(step, sync)
                    else:
                        import torch
                        row["precision"] = torch_precision(prec == "default", False)
                        step, sync = peer_step(net, size, framework), torch.cuda.synchronize
                    times = time_steps(step, sync, args.steps)
                except Exception as e:                 # record it, measure the others
                    rows.append(dict(row, error=f"{type(e).__name__}: {e}"[:300]))
                    continue
                finally:
                    precision.set_tf32(False)
                ms = 1e3 * float(np.median(times))
                rows.append(dict(row, ms_per_step=ms, times_ms=[1e3 * t for t in times]))
                print(f"  {key:5s} B={size:5d} {framework:12s} {method:11s} "
                      f"{row['precision'][:9]:9s} {ms:9.2f} ms", flush=True)
    return rows


def count_operations(nets) -> dict:
    """{net: {method: operations per step}} on the stand-in (tests/cuda_emulator.py)."""
    build = tempfile.mkdtemp(prefix="dsatgo-emulator-")
    return {key: {m: stand_in_operations(NETS[key], NETS[key].batch, m, build)
                  for m in ("vanilla", "ds-atgo")} for key in nets}


def markdown(result: dict) -> str:
    info, rows = result.get("info", {}), result.get("rows", [])
    lines = [f"command: `{result['command']}`", ""]
    if info:
        lines += [", ".join(f"{k} {v}" for k, v in info.items()), ""]
    if "tests" in result:
        lines += [f"GPU tests (`{result['tests']['command']}`): {result['tests']['summary']}", ""]
    ops = result.get("operations", {})
    for key in dict.fromkeys(r["net"] for r in rows):
        for size in dict.fromkeys(r["batch"] for r in rows if r["net"] == key):
            sel = [r for r in rows if r["net"] == key and r["batch"] == size]
            ref = {(r["framework"], r["precision"]): r.get("ms_per_step") for r in sel
                   if "ms_per_step" in r}
            sj = ref.get(("spikingjelly", "TF32 convolutions (PyTorch's default)"))
            pt = ref.get(("torch", "TF32 convolutions (PyTorch's default)"))
            lines += ["", f"{sel[0]['title']}, T={NETS[key].T}, B={size}: training step", "",
                      "| framework | method | precision | ms / step | / PyTorch | "
                      "/ SpikingJelly | launches |", "|---|---|---|---:|---:|---:|---:|"]
            for r in sel:
                if "ms_per_step" not in r:
                    lines.append(f"| {r['framework']} | {r['method']} | "
                                 f"{r.get('precision', '')} | {r.get('error') or r.get('skipped')}"
                                 " | | | |")
                    continue
                ms = r["ms_per_step"]
                count = r.get("launches") or {}
                stand_in = ops.get(key, {}).get(r["method"]) if size == NETS[key].batch else None
                launches = " / ".join(str(v) for v in (count.get("kernels"), stand_in) if v)
                vs_pt = f"{ms / pt:.2f}" if pt else "-"
                vs_sj = f"{ms / sj:.2f}" if sj else "-"
                lines.append(f"| {r['framework']} | {r['method']} | {r['precision']} | {ms:.2f} "
                             f"| {vs_pt} | {vs_sj} | {launches} |")
    if "operations" in result and not rows:
        lines += ["| network | method | operations per step (stand-in) |", "|---|---|---:|"]
        for key, by_method in ops.items():
            lines += [f"| {key} | {m} | {n} |" for m, n in by_method.items()]
    for name in ("tf32", "conv_breakdown", "same_experiment", "first_batch"):
        if name in result:
            lines += ["", f"{name}: `{json.dumps(result[name])[:3000]}`"]
    return "\n".join(lines) + "\n"


def write(args, result):
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(args.out, "gpu_check.md"), "w") as f:
        f.write(markdown(result))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu-check", help="folder for gpu_check.json and .md")
    p.add_argument("--nets", default="mlp,cnn,cifar", help=f"of {', '.join(NETS)}")
    p.add_argument("--steps", type=int, default=20, help="GPU steps per timed repeat (3 repeats)")
    p.add_argument("--budget", type=float, default=330, help="seconds for the step timings")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--count-only", action="store_true", help="only the stand-in's operations")
    p.add_argument("--same-steps", type=int, default=30, help="steps of the same experiment")
    p.add_argument("--skip", default="", help="stages to leave out, e.g. same_experiment,"
                   "first_batch (of tf32, conv_breakdown, rows, same_experiment, first_batch)")
    args = p.parse_args(argv)
    args.nets = args.nets.split(",")
    unknown = [n for n in args.nets if n not in NETS]
    if unknown:
        p.error(f"unknown network {unknown}: choose from {list(NETS)}")
    command = "python bench/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
    os.makedirs(args.out, exist_ok=True)
    result = dict(command=command)
    if args.count_only:
        result["operations"] = count_operations(args.nets)
        write(args, result)
        print(markdown(result))
        return 0
    if not backend.gpu_available():
        reason = "cupy is not installed" if backend._cupy is None else "cupy sees no CUDA device"
        print(f"gpu_check: no GPU here ({reason}); nothing to measure. On a machine with CUDA: "
              "pip install -e \".[gpu]\" and run it again (--count-only counts launches here).")
        write(args, dict(result, gpu=False, reason=reason))
        return 0
    import gpu_probes
    result["info"] = gpu_probes.versions()
    print(result["info"], flush=True)
    stages = [("tests", lambda: run_tests(150)) if not args.skip_tests else None,
              ("tf32", gpu_probes.tf32_effect),
              ("conv_breakdown", gpu_probes.conv_breakdown),
              ("rows", lambda: measure(args, time.time() + args.budget, available_peers())),
              ("same_experiment", lambda: gpu_probes.same_experiment(args.same_steps)),
              ("first_batch", lambda: gpu_probes.first_batch(tempfile.mkdtemp(),
                                                             tempfile.mkdtemp()))]
    skip = set(args.skip.split(",")) if args.skip else set()
    for name, stage in filter(None, stages):
        if name in skip:
            continue
        t0 = time.time()
        try:
            result[name] = stage()
        except Exception as e:                         # keep the other stages' results
            result[name] = dict(error=f"{type(e).__name__}: {e}"[:1000])
        print(f"{name}: {time.time() - t0:.0f} s", flush=True)
        write(args, result)                            # after every stage: nothing lost
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
