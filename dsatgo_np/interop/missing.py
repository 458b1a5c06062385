"""The error of a model exchange whose optional package (safetensors, nir) is not installed."""


class MissingPackage(ImportError):
    """An optional package that a function needs is not installed; the message says how to
    install it (the training command exits 2 with it)."""
