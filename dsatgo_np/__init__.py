"""dsatgo_np: spiking neural networks trained with DS-ATGO, from scratch in NumPy (CuPy on GPU).

    import dsatgo_np as dn
    net = dn.models.mlp([784, 512, 512, 10], T=4, method="ds-atgo")
    out = net.forward(dn.encode.direct(x, 4))          # [T, B, 10]
    loss, dout = dn.losses.cross_entropy(out, y)
    net.zero_grad(); net.backward(dout); opt.step()
"""
import os as _os

from . import (backend, checkpoint, containers, data, diagnostics, encode, files,  # noqa: F401
               gradcheck, kernels, model, models, optim, recipe, spiking)
from .core import (conv, layers, losses, neuron, pooling, surrogate, threshold,  # noqa: F401
                   update)
from . import interop  # noqa: F401  (safetensors, nir and torch load only when a function needs them)
from .backend import get_xp, to_numpy  # noqa: F401
from .checkpoint import save  # noqa: F401  (dn.save(net, "net.npz"))
from .files import load  # noqa: F401  (dn.load(a run folder, .npz, .safetensors or .nir))
from .kernels import set_kernels  # noqa: F401
from .module import manual_seed  # noqa: F401  (the generator of layers built without rng=)
from .core.neuron import METHODS, SpikeConfig  # noqa: F401

if _os.environ.get("DSATGO_MALLOC", "").strip().lower() == "keep":   # an explicit opt-in
    from .fast import allocator as _allocator
    _allocator.keep_freed_memory()

__version__ = "0.1.0"
