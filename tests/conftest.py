"""Shared fixtures. `each_kernel_set` runs a test once on the fast kernels and once on the
plain core (dsatgo_np/kernels.py), so that every gradient test checks both."""
import pytest

from dsatgo_np import kernels


@pytest.fixture(params=["fast", "plain"])
def each_kernel_set(request):
    saved = kernels.current()
    kernels.set_kernels(request.param)
    try:
        yield request.param
    finally:
        kernels.set_kernels(saved)
