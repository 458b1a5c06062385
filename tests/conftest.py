"""Shared fixtures and the hypothesis profiles. `each_kernel_set` runs a test once on the fast
kernels and once on the plain core (dsatgo_np/kernels.py), so that every gradient test checks
both; `arrays_made` records the dtype of every array a module makes through NumPy."""
import numpy as np
import pytest
from hypothesis import settings

from dsatgo_np import kernels
from dsatgo_np.module import manual_seed

# Hypothesis draws each test's examples from a seed made from the test itself ("fixed", the
# default), so every run of the suite, CI's included, checks the same examples and a failure
# repeats on the next run; a failing example is printed with the @reproduce_failure line that
# replays it. To look for failures the fixed examples miss, draw fresh ones:
#     pytest --hypothesis-profile=explore
# Loaded here, before any test module builds its settings, which take their unset fields from
# the profile loaded at that moment.
settings.register_profile("fixed", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile("fixed")


@pytest.fixture(autouse=True)
def weights_generator_as_at_import():
    """Every test starts with the generator of layers built without rng= as a fresh process
    has it, so a test's weights do not depend on which tests ran before it."""
    manual_seed(0)


@pytest.fixture(params=["fast", "plain"])
def each_kernel_set(request):
    saved = kernels.current()
    kernels.set_kernels(request.param)
    try:
        yield request.param
    finally:
        kernels.set_kernels(saved)


# The NumPy functions that hand back a new array (or fill one the caller passes, with out=);
# arrays_made records the dtype and shape of each array they return to a watched module.
MAKERS = ("empty", "zeros", "ones", "full", "empty_like", "zeros_like", "ones_like", "full_like",
          "array", "asarray", "ascontiguousarray", "repeat", "concatenate", "stack", "matmul",
          "einsum", "multiply", "add", "subtract")


class _RecordingNumpy:
    """NumPy as one module sees it, with every array that MAKERS return recorded."""

    def __init__(self, made):
        for name in MAKERS:
            setattr(self, name, self._recording(getattr(np, name), made))

    @staticmethod
    def _recording(make, made):
        def recorded(*args, **kwargs):
            out = make(*args, **kwargs)
            if isinstance(out, np.ndarray):
                made.append((out.dtype, out.shape))
            return out
        return recorded

    def __getattr__(self, name):                       # everything else: NumPy itself
        return getattr(np, name)


@pytest.fixture
def arrays_made(monkeypatch):
    """watch(module) -> a list that fills with (dtype, shape) of each array the module makes
    through NumPy (its `np` replaced for the test), scratch buffers included: so that a test
    can check that float32 data never gets a float64 buffer (twice the memory and traffic,
    which the results, cast back, would not show)."""
    def watch(module):
        made = []
        monkeypatch.setattr(module, "np", _RecordingNumpy(made))
        return made
    return watch
