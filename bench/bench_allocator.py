"""What dsatgo_np.fast.allocator's malloc tuning buys: a large LIF layer's forward and backward, timed
in two fresh processes, one with the tuning (the default) and one with DSATGO_MALLOC=system.

    PYTHONPATH=. python bench/bench_allocator.py [--shape 4,32,128,32,32] [--repeat 5]

Each process allocates its arrays anew every call, as a training step does; the best of
--repeat calls is printed, after one warm-up call.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def child(shape, repeat):
    import numpy as np

    import dsatgo_np as dn
    from dsatgo_np import neuron
    from dsatgo_np.fast import allocator, parallel
    from dsatgo_np.fast import neuron as fast_neuron
    tuned = allocator.keep_freed_memory()          # a no-op under DSATGO_MALLOC=system
    rng = np.random.default_rng(0)
    X = rng.normal(0.2, 1.0, shape).astype(np.float32)
    dS = np.ones_like(X)
    lam = np.asarray(0.2, np.float32)
    cfg = dn.SpikeConfig(method="ds-atgo")
    best = {"forward": 1e9, "backward": 1e9}
    for i in range(repeat + 1):
        rule = neuron.make_rule(cfg, lam, True, g=np.asarray(1.0, np.float32))
        t0 = time.perf_counter()
        S, cache = fast_neuron.lif_forward(X, lam, rule)
        t1 = time.perf_counter()
        fast_neuron.lif_backward(dS, cache, need_dlam=False)
        t2 = time.perf_counter()
        del S, cache
        if i:
            best["forward"] = min(best["forward"], t1 - t0)
            best["backward"] = min(best["backward"], t2 - t1)
    print(f"malloc tuned: {str(tuned):5}  threads: {parallel.threads()}  "
          f"LIF forward {best['forward'] * 1e3:6.1f} ms  backward {best['backward'] * 1e3:6.1f} ms")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="4,32,128,32,32", help="T,B,C,H,W of the layer")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    shape = tuple(int(v) for v in a.shape.split(","))
    if a.child:
        return child(shape, a.repeat)
    print(f"LIF layer of shape {shape} (float32), ds-atgo")
    for malloc in ("", "system"):
        env = dict(os.environ, DSATGO_MALLOC=malloc)
        subprocess.run([sys.executable, __file__, "--child", "--shape", a.shape,
                        "--repeat", str(a.repeat)], env=env, check=True)


if __name__ == "__main__":
    main()
