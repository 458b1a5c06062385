"""Moving models out of and into dsatgo_np (also as dn.interop after `import dsatgo_np as dn`).

    official.py   the authors' PyTorch release (ResNet19) and PyTorch key names, in safetensors
    nirgraph.py   the Neuromorphic Intermediate Representation (NIR): Norse, snnTorch, Lava, chips

Each submodule imports its optional dependency (safetensors, nir) only when called, so this
package loads with dsatgo_np and needs neither; a missing one raises MissingPackage, with the
line that installs it.
"""

from . import nirgraph, official  # noqa: F401
from .missing import MissingPackage  # noqa: F401
from .nirgraph import from_nir, to_nir  # noqa: F401
from .official import (calibrate, export_official, import_official, load_official,  # noqa: F401
                       load_safetensors, read_safetensors, save_safetensors)
