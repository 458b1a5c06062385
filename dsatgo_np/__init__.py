"""dsatgo_np: spiking neural networks trained with DS-ATGO, from scratch in NumPy (CuPy on GPU)."""
from . import backend, gradcheck  # noqa: F401

__version__ = "0.1.0"
