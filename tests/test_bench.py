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
