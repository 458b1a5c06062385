"""Moving models out of and into dsatgo_np.

    official.py   the authors' PyTorch release (ResNet19) and PyTorch key names, in safetensors
    nirgraph.py   the Neuromorphic Intermediate Representation (NIR): Norse, snnTorch, Lava, chips

Each submodule imports its optional dependency (safetensors, nir) only when called.
"""
from .nirgraph import from_nir, to_nir  # noqa: F401  (nir loads on the first call)
