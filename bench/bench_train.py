"""Training- and inference-step benchmark: dsatgo_np against PyTorch SNN frameworks, interleaved.

    PYTHONPATH=. python bench/bench_train.py                       # dsatgo_np only
    PYTHONPATH=. .venv-bench/bin/python bench/bench_train.py       # + torch, snnTorch, ...

Options: --nets mlp,cnn,cifar,sew  --methods vanilla,ds-atgo  --modes train,infer
         --frameworks torch,snntorch,spikingjelly,norse (default: those that import)
         --rounds 2 --steps 10 --warmup 3  --json results.json  --markdown table.md

Each (framework, network, mode) runs in its own worker process, so that its peak memory is
its own: peak RSS (ru_maxrss) minus the RSS after building the model and the batch, i.e. what
one step adds (activations, caches, gradients, temporaries, allocator slack). The workers of
one network and mode stay alive side by side; every round asks each of them in turn, in an
order that rotates from round to round, for --steps timed steps, so that load from other
processes on the machine hits every framework alike. "90 % interval" is a bootstrap interval of
the ratio to the fastest peer (both sets of step times resampled): how far the ratio could
move from this run's own noise. A step is, for dsatgo_np,

    out = net.forward(dn.encode.direct(x, T)); loss, d = dn.losses.cross_entropy(out, y)
    net.zero_grad(); net.backward(d); opt.step()

and for the torch peers zero_grad / forward / cross_entropy / backward / SGD.step; inference
is the forward in eval mode (torch.inference_mode for the peers). Threads: --threads for every
framework (torch.set_num_threads; dsatgo_np.fast.parallel.set_threads, which shares the
element-wise work and the convolutions' sample chunks); NumPy's BLAS keeps its default (2
here) unless --blas-threads.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

from nets import NETS, batch, build_ours, matmul_flops  # noqa: E402

PEERS = ("torch", "snntorch", "spikingjelly", "norse")


def rss_mb() -> float:
    """Resident set size of this process now, in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3    # KB on Linux


# --- worker: one framework, one network, one mode --------------------------------------------

def make_step(framework: str, method: str, net_key: str, mode: str, threads: int):
    """A zero-argument function that runs one step, built with all its data."""
    spec = NETS[net_key]
    x, y = batch(spec)
    if framework == "dsatgo_np":
        import dsatgo_np as dn
        from dsatgo_np.fast import allocator, parallel
        allocator.keep_freed_memory()                      # as the training command does
        parallel.set_threads(threads)
        net = build_ours(spec, method)
        opt = dn.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        if mode == "infer":
            net.eval()
            return lambda: net.forward(dn.encode.direct(x, spec.T))

        def step():
            out = net.forward(dn.encode.direct(x, spec.T))
            loss, d = dn.losses.cross_entropy(out, y)
            net.zero_grad()
            net.backward(d)
            opt.step()
        return step
    import torch
    import peers
    torch.set_num_threads(threads)
    model = peers.build(spec, framework)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if mode == "infer":
        model.eval()

        def infer():
            with torch.inference_mode():
                return model(xt)
        return infer

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
    return step


def worker(framework, method, net_key, mode, threads):
    """Answer driver commands on stdin, one JSON line each, until "quit"."""
    import warnings
    warnings.filterwarnings("ignore")
    step = make_step(framework, method, net_key, mode, threads)
    baseline = rss_mb()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "run":
            times = []
            for _ in range(int(cmd[1])):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            print(json.dumps({"times": times}), flush=True)
        elif cmd[0] == "mem":
            print(json.dumps({"baseline_mb": baseline, "peak_mb": peak_rss_mb()}), flush=True)
        else:
            break


# --- driver ------------------------------------------------------------------------------------

class Worker:
    def __init__(self, python, framework, method, net_key, mode, threads, blas_threads=None,
                 tree=None, tag="", kernels="auto"):
        self.label = framework if framework != "dsatgo_np" else f"dsatgo_np{tag} {method}"
        self.framework = framework
        env = dict(os.environ, DSATGO_KERNELS=kernels)
        if blas_threads:
            env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = str(blas_threads)
        env["PYTHONPATH"] = os.pathsep.join([tree or os.path.dirname(HERE), HERE,
                                             env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [python, os.path.abspath(__file__), "--worker", framework, method, net_key, mode,
             str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.times = []

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.label} died (see its stderr above)")
        return json.loads(line)

    def wait_ready(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.label} failed to start (see its stderr above)")

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=60)


def available_peers(python) -> list:
    """The peer frameworks that import under `python`."""
    found = []
    for fw in PEERS:
        code = {"torch": "import torch", "snntorch": "import snntorch",
                "spikingjelly": "import spikingjelly.activation_based.neuron",
                "norse": "import norse.torch"}[fw]
        r = subprocess.run([python, "-W", "ignore", "-c", code], capture_output=True)
        if r.returncode == 0:
            found.append(fw)
    return found


def gemm_peak_gflops(n=1024, repeat=10) -> float:
    """float32 matrix-multiply speed of NumPy here (best of `repeat`), GFLOP/s."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(repeat))
    return 2 * n ** 3 / best / 1e9


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_case(args, net_key, mode, peers):
    spec = NETS[net_key]
    specs = [("dsatgo_np", m, None, "", "auto") for m in args.methods]
    if args.plain:                                         # the plain core on the CPU too
        specs += [("dsatgo_np", m, None, " plain", "plain") for m in args.methods]
    for extra in args.extra_tree or []:                    # another checkout of dsatgo_np
        tag, path = extra.split("=", 1)
        specs += [("dsatgo_np", m, os.path.abspath(path), f" ({tag})", "auto")
                  for m in args.methods]
    specs += [(fw, "-", None, "", "auto") for fw in peers]
    workers = [Worker(args.python, fw, m, net_key, mode, args.threads, args.blas_threads,
                      tree, tag, kernels) for fw, m, tree, tag, kernels in specs]
    try:
        for w in workers:
            w.wait_ready()
        for w in workers:                                  # warm-up: caches, first-touch pages
            w.ask(f"run {args.warmup}")
        for r in range(args.rounds):
            order = workers[r % len(workers):] + workers[:r % len(workers)]
            for w in order:
                time.sleep(0.2)                            # let the last worker's threads idle
                w.times += w.ask(f"run {args.steps}")["times"]
        rows = []
        flops = matmul_flops(spec, train=(mode == "train"))
        for w in workers:
            mem = w.ask("mem")
            t = np.array(w.times) * 1e3
            med = float(np.median(t))
            rows.append(dict(net=net_key, mode=mode, label=w.label, framework=w.framework,
                             load_avg=os.getloadavg()[0],
                             median_ms=med, min_ms=float(t.min()), max_ms=float(t.max()),
                             samples_per_s=spec.batch / med * 1e3, gflops=flops / med / 1e6,
                             peak_mb=mem["peak_mb"] - mem["baseline_mb"],
                             steps=len(t), times_ms=t.tolist()))
        return rows
    finally:
        for w in workers:
            w.close()


def ratio_interval(times, best_times, level=0.9, resamples=2000):
    """Bootstrap interval of median(times) / median(best_times): both sets of step times
    resampled with replacement (fixed seed), the central `level` of the ratios. It says how
    far the ratio could move from the run's noise alone."""
    rng = np.random.default_rng(0)
    a, b = np.asarray(times), np.asarray(best_times)
    ra = np.median(rng.choice(a, (resamples, a.size)), axis=1)
    rb = np.median(rng.choice(b, (resamples, b.size)), axis=1)
    lo, hi = np.quantile(ra / rb, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def report(rows, nets, modes, lines):
    for mode in modes:
        for net_key in nets:
            sel = [r for r in rows if r["net"] == net_key and r["mode"] == mode]
            if not sel:
                continue
            peer = [r for r in sel if r["framework"] != "dsatgo_np"]
            best = min(peer, key=lambda r: r["median_ms"]) if peer else None
            best_mem = min(peer, key=lambda r: r["peak_mb"]) if peer else None
            lines.append(f"\n{NETS[net_key].title} - {mode} step"
                         + (f" (fastest peer: {best['label']})" if best else ""))
            lines.append("| framework | median ms | min ms | max ms | samples/s | GFLOP/s "
                         "| peak MB | time / fastest peer | 90 % interval | memory / smallest peer |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for r in sel:
                ratio = f"{r['median_ms'] / best['median_ms']:.2f}x" if best else "-"
                spread = "-"
                if best and r is not best and "times_ms" in r and "times_ms" in best:
                    spread = "{:.2f}-{:.2f}x".format(*ratio_interval(r["times_ms"],
                                                                      best["times_ms"]))
                mratio = f"{r['peak_mb'] / best_mem['peak_mb']:.2f}x" if best_mem else "-"
                lines.append(f"| {r['label']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | "
                             f"{r['max_ms']:.1f} | {r['samples_per_s']:.0f} | {r['gflops']:.1f} | "
                             f"{r['peak_mb']:.0f} | {ratio} | {spread} | {mratio} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    p.add_argument("--nets", default="mlp,cnn,cifar,sew")
    p.add_argument("--methods", default="vanilla,ds-atgo")
    p.add_argument("--modes", default="train,infer")
    p.add_argument("--frameworks", default=None, help="peers to run (default: all that import)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="OPENBLAS_NUM_THREADS / OMP_NUM_THREADS of every worker (default: unset)")
    p.add_argument("--plain", action=argparse.BooleanOptionalAction, default=True,
                   help="also time dsatgo_np with DSATGO_KERNELS=plain (rows 'dsatgo_np plain')")
    p.add_argument("--extra-tree", action="append", metavar="TAG=PATH",
                   help="also time the dsatgo_np of another checkout (e.g. with a patch applied)")
    p.add_argument("--python", default=sys.executable, help="interpreter of the workers")
    p.add_argument("--json", default=None, help="write every row to this file")
    p.add_argument("--markdown", default=None, help="write the tables to this file")
    args = p.parse_args()
    if args.worker:
        fw, method, net_key, mode, threads = args.worker
        return worker(fw, method, net_key, mode, int(threads))
    args.methods = args.methods.split(",")
    nets, modes = args.nets.split(","), args.modes.split(",")
    peers = available_peers(args.python) if args.frameworks is None else (
        [f for f in args.frameworks.split(",") if f])
    lines = [f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}",
             f"numpy {np.__version__}, {os.cpu_count()} CPUs, load average "
             f"{os.getloadavg()[0]:.1f}, peers: {', '.join(peers) or 'none'}",
             f"NumPy float32 GEMM peak before: {gemm_peak_gflops():.0f} GFLOP/s"]
    print("\n".join(lines), flush=True)
    rows = []
    for mode in modes:
        for net_key in nets:
            t0 = time.time()
            rows += run_case(args, net_key, mode, peers)
            print(f"  {net_key} {mode}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    lines.append(f"NumPy float32 GEMM peak after: {gemm_peak_gflops():.0f} GFLOP/s, "
                 f"load average {os.getloadavg()[0]:.1f}")
    report(rows, nets, modes, lines)
    text = "\n".join(lines)
    print(text[text.index("NumPy float32 GEMM peak after"):])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
