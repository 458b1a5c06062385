"""Shared fixtures. `each_kernel_set` runs a test once on the fast kernels and once on the
plain core (dsatgo_np/kernels.py), so that every gradient test checks both."""
import pytest

from dsatgo_np import kernels
from dsatgo_np.module import manual_seed


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
