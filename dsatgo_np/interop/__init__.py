"""Moving models out of and into dsatgo_np.

    official.py   the authors' PyTorch release (ResNet19) and PyTorch key names, in safetensors
    nirgraph.py   the Neuromorphic Intermediate Representation (NIR): Norse, snnTorch, Lava, chips

Each submodule imports its optional dependency (safetensors, nir) only when called, and
raises MissingPackage, with the line that installs it, when it is not there.
"""


class MissingPackage(ImportError):
    """An optional package that a function needs is not installed; the message says how to
    install it. (Defined before the submodules are imported: they raise it.)"""


from .nirgraph import from_nir, to_nir  # noqa: E402,F401  (nir loads on the first call)
