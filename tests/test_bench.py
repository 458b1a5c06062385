"""The benchmark's own arithmetic (bench/ is not a package: imported by path)."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))

from bench_train import ratio_interval  # noqa: E402


def test_ratio_interval_brackets_the_true_ratio_and_narrows_with_more_steps():
    rng = np.random.default_rng(1)
    best = rng.lognormal(0.0, 0.15, 200)
    slower = 1.3 * rng.lognormal(0.0, 0.15, 200)
    lo, hi = ratio_interval(slower, best)
    assert 1.15 < lo < 1.3 < hi < 1.45
    lo_same, hi_same = ratio_interval(best, best)
    assert lo_same <= 1.0 <= hi_same
    few_lo, few_hi = ratio_interval(slower[:10], best[:10])
    assert few_hi - few_lo > hi - lo                     # fewer steps: a wider interval


def test_profile_step_by_layer_keeps_every_layer_apart():
    import collections

    import dsatgo_np as dn
    from profile_step import instrument
    x = dn.encode.direct(np.ones((2, 6), np.float32), 2)
    for by_layer, expected in ((False, {"Linear", "BatchNorm", "Spiking"}),
                               (True, None)):
        net = dn.models.mlp([6, 5, 4, 3], T=2)
        totals = collections.defaultdict(float)
        instrument(net, totals, by_layer)
        net.backward(dn.losses.cross_entropy(net.forward(x), np.array([0, 1]))[1])
        names = {name for name, phase in totals if phase == "forward"}
        if expected:
            assert expected <= names                        # summed by kind
        else:                                               # one entry per layer, by place
            linears = sorted(n for n in names if "Linear" in n)
            assert len(linears) == 3 and all(n.split()[0].isdigit() for n in linears)
            assert {(n, "backward") for n in linears} <= set(totals)
