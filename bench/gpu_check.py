"""One command for a machine with a GPU: the CuPy tests, then the training-step time of the
reference networks (bench/nets.py) on CuPy against NumPy, and against PyTorch on CUDA when it
is installed. Results go to --out as gpu_check.json and gpu_check.md; the whole run keeps to
--budget seconds (default 270: under five minutes with the tests).

    python bench/gpu_check.py --out gpu-check          # needs `pip install -e ".[gpu]"`

Without a GPU (cupy missing, or no CUDA device) it says so, writes that to --out and exits 0.

A step is the one of bench/bench_train.py: forward of dn.encode.direct(x, T), cross-entropy,
zero_grad, backward, SGD (momentum 0.9). On the GPU, `--steps` steps run back to back and the
device is synchronised once after them: the time per step is what a training loop sees, host
overhead (one Python call per operation, one kernel launch each) included. Rows:

    numpy          the CPU (default, fast kernels), for the ratio
    cupy           CuPy with gpu.py's fused LIF kernels (the default for CuPy arrays)
    cupy plain     CuPy with the plain core's LIF (dn.set_kernels("plain")): what fusing saves
    torch-cuda     bench/peers.py's torch network on the GPU (hand-written LIF loop, autograd)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]

import numpy as np  # noqa: E402

import dsatgo_np as dn  # noqa: E402
from dsatgo_np import backend, kernels  # noqa: E402
from nets import NETS, batch, build_ours  # noqa: E402


def gpu_info() -> dict:
    import cupy as cp
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    return dict(gpu=name.decode() if isinstance(name, bytes) else str(name),
                memory_gib=round(props["totalGlobalMem"] / 2**30, 1), cupy=cp.__version__,
                cuda_runtime=cp.cuda.runtime.runtimeGetVersion(), numpy=np.__version__,
                cpus=os.cpu_count(), python=platform.python_version())


def run_tests(timeout: float) -> dict:
    """pytest tests/test_cupy.py -m "not slow": its exit code and summary line."""
    cmd = [sys.executable, "-m", "pytest", "tests/test_cupy.py", "-m", "not slow", "-q",
           "-p", "no:cacheprovider"]
    t0 = time.time()
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        lines = (r.stdout + r.stderr).strip().splitlines()
        return dict(command=" ".join(cmd[2:]), returncode=r.returncode, seconds=time.time() - t0,
                    summary=lines[-1] if lines else "", failures=[x for x in lines
                                                                 if x.startswith("FAILED")])
    except subprocess.TimeoutExpired:
        return dict(command=" ".join(cmd[2:]), returncode=None, seconds=timeout,
                    summary=f"timed out after {timeout:.0f} s", failures=[])


def dsatgo_step(spec, method, xp):
    """A zero-argument training step of dsatgo_np on module xp, with its data on xp."""
    x, y = batch(spec)
    net = build_ours(spec, method)
    if xp is not np:
        net.to("cupy")
    opt = dn.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    xd, yd = xp.asarray(x), xp.asarray(y)

    def step():
        out = net.forward(dn.encode.direct(xd, spec.T))
        _, d = dn.losses.cross_entropy(out, yd)
        net.zero_grad()
        net.backward(d)
        opt.step()
    return step


def torch_step(spec):
    import torch
    import peers
    x, y = batch(spec)
    model = peers.build(spec, "torch").cuda()
    xt, yt = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return step


def time_steps(step, sync, steps: int, warmup: int, repeats: int = 3) -> list:
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


def measure(args, deadline: float) -> list:
    import cupy as cp
    sync_gpu = cp.cuda.Device().synchronize
    try:
        import torch
        has_torch = torch.cuda.is_available()
    except ImportError:
        has_torch = False
    rows, before = [], kernels.current()
    for net_key in args.nets:
        spec = NETS[net_key]
        cases = [("numpy", m) for m in args.methods] + [("cupy", m) for m in args.methods]
        cases += [("cupy plain", m) for m in args.methods]
        cases += [("torch-cuda", "-")] if has_torch else []
        for framework, method in cases:
            row = dict(net=net_key, title=spec.title, framework=framework, method=method)
            if time.time() > deadline:
                rows.append(dict(row, skipped="time budget spent"))
                continue
            cpu = framework == "numpy"
            try:
                dn.set_kernels("plain" if framework == "cupy plain" else "fast")
                if framework == "torch-cuda":
                    step, sync = torch_step(spec), torch.cuda.synchronize
                else:
                    step, sync = dsatgo_step(spec, method, np if cpu else cp), (
                        (lambda: None) if cpu else sync_gpu)
                times = time_steps(step, sync, args.numpy_steps if cpu else args.steps,
                                   1 if cpu else args.warmup, 1 if cpu else 3)
            except Exception as e:                 # record it, keep measuring the others
                rows.append(dict(row, error=f"{type(e).__name__}: {e}"))
                continue
            finally:
                dn.set_kernels(before)
            ms = 1e3 * float(np.median(times))
            rows.append(dict(row, ms_per_step=ms, samples_per_s=spec.batch / ms * 1e3,
                             times_ms=[1e3 * t for t in times]))
            print(f"  {net_key:5s} {framework:10s} {method:8s} {ms:9.2f} ms/step", flush=True)
    return rows


def markdown(info, tests, rows, command) -> str:
    lines = [f"command: `{command}`", "",
             f"GPU {info.get('gpu')} ({info.get('memory_gib')} GiB), CuPy {info.get('cupy')}, "
             f"CUDA runtime {info.get('cuda_runtime')}, NumPy {info.get('numpy')}, "
             f"{info.get('cpus')} CPUs", "",
             f"CuPy tests (`{tests['command']}`): {tests['summary']}", ""]
    for failure in tests["failures"]:
        lines.append(f"- {failure}")
    for net_key in dict.fromkeys(r["net"] for r in rows):
        sel = [r for r in rows if r["net"] == net_key]
        ref = {r["method"]: r.get("ms_per_step") for r in sel if r["framework"] == "numpy"}
        torch_ms = next((r.get("ms_per_step") for r in sel if r["framework"] == "torch-cuda"),
                        None)
        lines += ["", f"{sel[0]['title']}: training step", "",
                  "| framework | method | ms / step | samples / s | NumPy / this "
                  "| this / torch-cuda |", "|---|---|---:|---:|---:|---:|"]
        for r in sel:
            if "ms_per_step" not in r:
                why = r.get("error") or r.get("skipped")
                lines.append(f"| {r['framework']} | {r['method']} | {why} | | | |")
                continue
            ms, base = r["ms_per_step"], ref.get(r["method"])
            speedup = f"{base / ms:.1f}x" if base and r["framework"] != "numpy" else "-"
            vs_torch = (f"{ms / torch_ms:.2f}x" if torch_ms and r["framework"] != "torch-cuda"
                        else "-")
            lines.append(f"| {r['framework']} | {r['method']} | {ms:.2f} | "
                         f"{r['samples_per_s']:.0f} | {speedup} | {vs_torch} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu-check", help="folder for gpu_check.json and .md")
    p.add_argument("--nets", default="mlp,cnn,cifar,sew", help=f"of {', '.join(NETS)}")
    p.add_argument("--methods", default="vanilla,ds-atgo")
    p.add_argument("--steps", type=int, default=20, help="GPU steps per timed repeat (3 repeats)")
    p.add_argument("--warmup", type=int, default=3, help="GPU steps before timing")
    p.add_argument("--numpy-steps", type=int, default=3, help="NumPy steps timed (after 1)")
    p.add_argument("--budget", type=float, default=270, help="seconds for the whole check")
    p.add_argument("--skip-tests", action="store_true", help="only the timings")
    args = p.parse_args(argv)
    args.nets, args.methods = args.nets.split(","), args.methods.split(",")
    unknown = [n for n in args.nets if n not in NETS] + [m for m in args.methods
                                                          if m not in dn.METHODS]
    if unknown:
        p.error(f"unknown network or method {unknown}: networks {list(NETS)}, "
                f"methods {list(dn.METHODS)}")
    start = time.time()
    command = "python bench/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
    os.makedirs(args.out, exist_ok=True)
    if not backend.gpu_available():
        reason = ("cupy is not installed" if backend._cupy is None else
                  "cupy sees no CUDA device")
        message = (f"gpu_check: no GPU here ({reason}); nothing to measure. On a machine with "
                   "CUDA: pip install -e \".[gpu]\" and run it again.")
        print(message)
        with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
            json.dump(dict(gpu=False, reason=reason, command=command), f, indent=1)
        with open(os.path.join(args.out, "gpu_check.md"), "w") as f:
            f.write(f"command: `{command}`\n\n{message}\n")
        return 0
    info = gpu_info()
    print(f"{info['gpu']}, CuPy {info['cupy']}: running tests/test_cupy.py", flush=True)
    tests = (dict(command="skipped", returncode=None, seconds=0, summary="skipped", failures=[])
             if args.skip_tests else run_tests(timeout=0.5 * args.budget))
    print(f"  {tests['summary']} ({tests['seconds']:.0f} s)", flush=True)
    rows = measure(args, deadline=start + args.budget - 20)
    result = dict(gpu=True, command=command, info=info, tests=tests, rows=rows,
                  seconds=time.time() - start)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(result, f, indent=1)
    text = markdown(info, tests, rows, command)
    with open(os.path.join(args.out, "gpu_check.md"), "w") as f:
        f.write(text)
    print(text)
    print(f"wrote {args.out}/gpu_check.json and gpu_check.md in {time.time() - start:.0f} s")
    return 0 if tests["returncode"] in (0, None) else 1


if __name__ == "__main__":
    sys.exit(main())
