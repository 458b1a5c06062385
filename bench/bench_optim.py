"""What SGD's chunked update buys: SGD.step (momentum 0.9) on a network's parameters, with
pieces of fast.optim.CHUNK values against one whole-array pass per operation, interleaved.

    PYTHONPATH=. python bench/bench_optim.py [--nets mlp,cnn,cifar,sew] [--rounds 5] [--steps 50]

Every round times --steps steps of each variant in turn (the order alternating between rounds)
and the median step is printed with the whole-array time's ratio to it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from nets import NETS, build_ours  # noqa: E402


def main():
    import dsatgo_np as dn
    from dsatgo_np.fast import optim
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", default="mlp,cnn,cifar,sew")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()
    variants = {f"chunks of {optim.CHUNK}": optim.CHUNK, "whole arrays": 1 << 62}
    print("| network | parameters | " + " | ".join(f"{v} (ms)" for v in variants)
          + " | whole / chunks |")
    print("|---|---:|" + "---:|" * (len(variants) + 1))
    for key in args.nets.split(","):
        params = build_ours(NETS[key], "ds-atgo").parameters()
        rng = np.random.default_rng(0)
        for q in params:
            q.grad = rng.standard_normal(q.data.shape).astype(q.data.dtype)
        opt = dn.optim.SGD(params, lr=1e-6, momentum=0.9)
        opt.step()                                                  # buffers allocated
        times = {v: [] for v in variants}
        for r in range(args.rounds):
            for v in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
                optim.CHUNK = variants[v]
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    opt.step()
                    times[v].append(time.perf_counter() - t0)
        med = {v: 1e3 * float(np.median(t)) for v, t in times.items()}
        n = sum(q.data.size for q in params)
        chunked, whole = med.values()
        print(f"| {key} | {n:,} | {chunked:.3f} | {whole:.3f} | {whole / chunked:.2f}x |")


if __name__ == "__main__":
    main()
