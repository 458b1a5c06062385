"""What computing a direct-encoded first layer once saves: a training step (ds-atgo) of the
benchmark networks with the input as encode.direct's broadcast view (the first layers see a
time stride of 0 and compute once) against the same input copied T times, interleaved, best
of two rounds.

    PYTHONPATH=. python bench/bench_static.py
"""
import os
import sys
import time

import numpy as np

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]
import dsatgo_np as dn  # noqa: E402
from nets import NETS, batch, build_ours  # noqa: E402


def step_ms(spec, x, y, copied: bool, steps: int) -> float:
    net = build_ours(spec, "ds-atgo")
    opt = dn.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    def step():
        inputs = dn.encode.direct(x, spec.T)                 # (T, B, ...), a view of x
        if copied:
            inputs = np.ascontiguousarray(inputs)            # T real copies
        _, d = dn.losses.cross_entropy(net.forward(inputs), y)
        net.zero_grad()
        net.backward(d)
        opt.step()
    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps * 1e3


def main():
    for key in ("mlp", "cnn", "cifar"):
        spec = NETS[key]
        x, y = batch(spec)
        best = {}
        for copied in (False, True, False, True):
            ms = step_ms(spec, x, y, copied, 2 if key == "cifar" else 5)
            best[copied] = min(best.get(copied, ms), ms)
        print(f"{spec.title}: computed once {best[False]:.1f} ms, copied T times "
              f"{best[True]:.1f} ms ({best[True] / best[False]:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
