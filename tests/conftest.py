"""Shared fixtures and the hypothesis profiles. `each_kernel_set` runs a test once on the fast
kernels and once on the plain core (dsatgo_np/kernels.py), so that every gradient test checks
both."""
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
