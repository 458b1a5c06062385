"""Where the time of a dsatgo_np training step goes: milliseconds per module kind and phase.

    PYTHONPATH=. python bench/profile_step.py [--nets mlp,cnn,cifar,sew] [--method ds-atgo]
                                              [--steps 5] [--threads N] [--by-layer]

--threads N sets both dsatgo_np's threads (parallel.set_threads) and the BLAS's. To see what
the allocator tuning buys, run it once more with DSATGO_MALLOC=system in the environment.

Wraps forward and backward of every leaf module with a timer and sums by module kind
(Linear, Conv2d, BatchNorm, Spiking, pooling, ...), plus the loss, zero_grad and the
optimiser step; reports the median over --steps steps after one warm-up step. --by-layer
keeps every layer apart instead, named by its place in the network and its repr.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from nets import NETS, batch, build_ours  # noqa: E402


def instrument(net, totals, by_layer=False):
    """Replace each leaf module's forward/backward by a timed wrapper adding into totals."""
    from dsatgo_np.model import SEWBlock, Sequential
    for i, m in enumerate(net.modules()):
        if isinstance(m, (Sequential, SEWBlock)):
            continue
        kind = f"{i:3d} {m!r}" if by_layer else type(m).__name__
        for phase in ("forward", "backward"):
            fn = getattr(m, phase)

            def timed(*a, _fn=fn, _key=(kind, phase), **kw):
                t0 = time.perf_counter()
                r = _fn(*a, **kw)
                totals[_key] += time.perf_counter() - t0
                return r
            setattr(m, phase, timed)


def profile(net_key, method, steps, by_layer=False):
    import dsatgo_np as dn
    spec = NETS[net_key]
    net = build_ours(spec, method)
    x, y = batch(spec)
    opt = dn.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    totals = collections.defaultdict(float)
    instrument(net, totals, by_layer)
    rows, walls = [], []
    for i in range(steps + 1):
        totals.clear()
        t0 = time.perf_counter()
        out = net.forward(dn.encode.direct(x, spec.T))
        t1 = time.perf_counter()
        loss, d = dn.losses.cross_entropy(out, y)
        t2 = time.perf_counter()
        net.zero_grad()
        t3 = time.perf_counter()
        net.backward(d)
        t4 = time.perf_counter()
        opt.step()
        t5 = time.perf_counter()
        totals[("loss", "")] += t2 - t1
        totals[("zero_grad", "")] += t3 - t2
        totals[("SGD.step", "")] += t5 - t4
        if i:                                          # the first step warms up
            rows.append(dict(totals))
            walls.append(t5 - t0)
    keys = sorted(rows[0], key=lambda k: -np.median([r[k] for r in rows]))
    wall = np.median(walls) * 1e3
    print(f"\n{spec.title}, method={method}: step {wall:.1f} ms (median of {steps})")
    print(f"  {'module':<14} {'phase':<9} {'ms':>8} {'share':>6}")
    for k in keys:
        ms = np.median([r[k] for r in rows]) * 1e3
        print(f"  {k[0]:<14} {k[1]:<9} {ms:8.1f} {ms / wall:6.1%}")
    if by_layer:
        keys = [k for k in keys if k[1]]
        print("  (by layer: forward + backward, in network order)")
        for name in sorted({k[0] for k in keys}):
            ms = sum(np.median([r.get((name, ph), 0.0) for r in rows]) for ph in ("forward", "backward")) * 1e3
            print(f"  {name:<60} {ms:8.1f} {ms / wall:6.1%}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", default="mlp,cnn,cifar,sew")
    p.add_argument("--method", default="ds-atgo")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--by-layer", action="store_true", help="time every layer apart")
    p.add_argument("--threads", type=int, default=None,
                   help="dsatgo_np's and the BLAS's threads; default: the number of CPUs")
    args = p.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits

        from dsatgo_np.fast import parallel
        threadpool_limits(args.threads)
        parallel.set_threads(args.threads)
    from dsatgo_np.fast import allocator, parallel
    print(f"threads: {parallel.threads()}, malloc tuned: {allocator.keep_freed_memory()}")
    for key in args.nets.split(","):
        profile(key, args.method, args.steps, args.by_layer)


if __name__ == "__main__":
    main()
