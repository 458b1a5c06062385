"""A NIR graph into a network of dsatgo_np: from_nir, and load_file for a .nir file.

A feed-forward chain of NIR nodes (Affine, Linear, Conv2d, LIF, pooling, Flatten) becomes a
Sequential in eval mode; a LIF node's tau, r and v_threshold give the decay, the input scale and
the fixed threshold (nirgraph.py derives the correspondence).
"""
from __future__ import annotations

import numpy as np

from .missing import MissingPackage
from ..core.neuron import SpikeConfig
from ..model import AvgPool2d, Conv2d, Flatten, Linear, Sequential, Spiking

EXPORTER = "dsatgo_np"


def _conv_out(shape, weight, stride, padding):
    _, h, w = shape
    k = weight.shape[-1]
    size = lambda n: (n + 2 * padding - k) // stride + 1                  # noqa: E731
    return (weight.shape[0], size(h), size(w))


def _nir():
    try:
        import nir
    except ImportError as e:
        raise MissingPackage("NIR files need the nir package: pip install 'dsatgo_np[nir]' "
                             "(or pip install nir)") from e
    return nir


# --- thresholds --------------------------------------------------------------------------------


# --- import --------------------------------------------------------------------------------------

def _chain(graph):
    """Node names from the Input to the Output of a feed-forward graph without branches."""
    succ, pred = {}, {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
        pred.setdefault(b, []).append(a)
    bad = [n for n in graph.nodes if len(succ.get(n, [])) > 1 or len(pred.get(n, [])) > 1]
    if bad:
        raise ValueError(f"from_nir reads feed-forward chains; node(s) {bad} branch, merge or "
                         "recur (residual or recurrent graphs are not supported)")
    starts = [n for n in graph.nodes if n not in pred]
    if len(starts) != 1:
        raise ValueError(f"from_nir needs exactly one input node, found {starts}")
    order = [starts[0]]
    while order[-1] in succ:
        order.append(succ[order[-1]][0])
        if len(order) > len(graph.nodes):
            raise ValueError("the NIR graph has a cycle: from_nir reads feed-forward chains")
    return order


def _pair(value, what):
    """An int for a square NIR field given as int or (n, n)."""
    v = np.atleast_1d(np.asarray(value)).astype(int)
    if np.any(v != v[0]):
        raise ValueError(f"only square {what} is supported, got {v.tolist()}")
    return int(v[0])


def _per_output(values, shape, what):
    """A per-neuron NIR parameter (broadcast to `shape`) as one value per output channel:
    (C,). A convolution shares its weights over space, so a value must not vary there."""
    full = np.broadcast_to(np.asarray(values, dtype=np.float64), shape)
    per = full.reshape(shape[0], -1)                                     # (C, H*W) or (N, 1)
    if np.any(per != per[:, :1]):
        raise ValueError(f"{what} varies within a channel of a convolution; only per-channel "
                         "values can be folded into its weights")
    return per[:, 0]


class _Importer:
    """Builds modules and their state for one chain; each LIF folds into the node before it."""

    def __init__(self, T, dt, dtype, lam_tol):
        self.T, self.dt, self.dtype, self.lam_tol = T, dt, dtype, lam_tol
        self.modules, self.state = [], {}
        self.pending = None          # [kind, W (float64), b (float64), options]
        self.pre_scale = 1.0         # k^2 of a SumPool2d, for the next W
        self.shape = None

    def push(self, module, state=None):
        i = len(self.modules)
        self.modules.append(module)
        self.state.update({f"{i}.{k}": v for k, v in (state or {}).items()})

    def flush(self):
        if self.pending is None:
            return
        kind, w, b, opt = self.pending
        w, b = w.astype(self.dtype), b.astype(self.dtype)
        # the graph's weights replace the drawn ones; a generator of its own keeps manual_seed's
        # (and so the next layers a user builds) as it was
        rng = np.random.default_rng(0)
        if kind == "fc":
            self.push(Linear(w.shape[1], w.shape[0], bias=True, rng=rng, dtype=self.dtype),
                      dict(weight=w, bias=b))
        else:
            self.push(Conv2d(w.shape[1], w.shape[0], w.shape[2], opt["stride"], opt["padding"],
                             bias=True, rng=rng, dtype=self.dtype), dict(weight=w, bias=b))
        self.pending = None

    def affine(self, node, bias=True):
        self.flush()
        w = np.asarray(node.weight, dtype=np.float64) * self.pre_scale
        b = np.asarray(node.bias, dtype=np.float64) if bias else np.zeros(w.shape[0])
        if w.ndim != 2:
            raise ValueError(f"an Affine/Linear weight must be 2-D [out, in], got {w.shape}")
        self.pre_scale, self.pending, self.shape = 1.0, ["fc", w, b, None], (w.shape[0],)

    def conv(self, node, name):
        self.flush()
        w = np.asarray(node.weight, dtype=np.float64) * self.pre_scale
        if _pair(node.dilation, "dilation") != 1 or int(node.groups) != 1:
            raise ValueError(f"{name}: only dilation 1 and groups 1 are supported")
        k = _pair(w.shape[2:], "kernel")
        padding = node.padding
        if isinstance(padding, str):
            if padding == "same" and k % 2 == 0:
                raise ValueError(f"{name}: 'same' padding with an even kernel is not supported")
            padding = k // 2 if padding == "same" else 0
        opt = dict(stride=_pair(node.stride, "stride"), padding=_pair(padding, "padding"))
        if self.shape is None or len(self.shape) != 3:
            raise ValueError(f"{name}: a Conv2d needs a [C, H, W] input shape from the Input node")
        out = _conv_out(self.shape, w, opt["stride"], opt["padding"])
        b = np.asarray(node.bias, dtype=np.float64)
        self.pre_scale, self.pending, self.shape = 1.0, ["conv", w, b, opt], out

    def neuron(self, node, name, nir):
        """LIF: X = (dt/tau) (r I + v_leak), lam = 1 - dt/tau; IF: X = r I, lam = 1. The gain and
        any per-neuron threshold fold into the weights before (the state scales with them:
        firing at v >= theta_i is firing at v / theta_i >= 1)."""
        if self.pending is None:
            raise ValueError(f"{name}: a spiking node must follow an Affine, Linear or Conv2d "
                             "(its input current is folded into their weights)")
        shape = self.shape
        if isinstance(node, nir.LIF):
            rate = _per_output(self.dt / np.asarray(node.tau, dtype=np.float64), shape, "tau")
            leak, lam = rate * _per_output(node.v_leak, shape, "v_leak"), 1.0 - rate
        else:                    # v += r I per step, as Norse runs (and writes) nir.IF
            rate, leak, lam = np.ones(shape[0]), np.zeros(shape[0]), np.ones(shape[0])
        if np.ptp(lam) > self.lam_tol:
            raise ValueError(f"{name}: the decay 1 - dt/tau differs between neurons (from "
                             f"{lam.min():.6g} to {lam.max():.6g}); a layer here has one decay")
        if not np.all(_per_output(node.v_reset, shape, "v_reset") == 0):
            raise ValueError(f"{name}: only a reset to v_reset = 0 is supported")
        theta = _per_output(node.v_threshold, shape, "v_threshold")
        if not np.all(theta > 0):
            raise ValueError(f"{name}: thresholds must be positive, got min {theta.min()}")
        gain = rate * _per_output(node.r, shape, "r")
        if np.all(theta == theta[0]):
            v_th = float(theta[0])
        else:                                # fold 1/theta_i into neuron i's input
            gain, leak, v_th = gain / theta, leak / theta, 1.0
        kind, w, b, opt = self.pending
        if not np.all(gain == 1.0):          # X = gain (W x + b) + leak
            w = w * gain.reshape((-1,) + (1,) * (w.ndim - 1))
            b = b * gain
        self.pending = [kind, w, b + leak, opt]
        self.flush()
        cfg = SpikeConfig(method="vanilla", v_th=v_th)
        lam0 = float(np.asarray(lam.mean(), dtype=self.dtype))
        if not 0 <= lam0 <= 1:
            raise ValueError(f"{name}: tau must be at least dt (decay 1 - dt/tau in [0, 1]), "
                             f"got decay {lam0}")
        self.push(Spiking(self.T, cfg, "lif", lam=lam0, dtype=self.dtype),
                  dict(running_threshold=np.full(self.T, v_th, dtype=self.dtype)))

    def pooling(self, node, name, nir):
        self.flush()
        k = _pair(node.kernel_size, "kernel_size")
        if _pair(node.stride, "stride") != k or np.any(np.asarray(node.padding) != 0):
            raise ValueError(f"{name}: only pooling with stride = kernel and no padding is "
                             "supported")
        if isinstance(node, nir.SumPool2d):
            self.pre_scale *= k * k          # sum = k^2 avg: the next weights take the k^2
        self.push(AvgPool2d(k))
        if self.shape is not None and len(self.shape) == 3:
            self.shape = (self.shape[0], self.shape[1] // k, self.shape[2] // k)

    def flatten(self, node, name):
        self.flush()
        if int(node.end_dim) != -1 or int(node.start_dim) not in (0, 1):
            raise ValueError(f"{name}: only a Flatten of every non-batch axis is supported")
        self.push(Flatten())
        if self.shape is not None:
            self.shape = (int(np.prod(self.shape)),)


def from_nir(graph, T: int | None = None, dt: float | None = None, dtype: str = "float32",
             lam_tol: float = 1e-6):
    """A network (Sequential, eval mode) that runs a feed-forward NIR graph step by step.

    Node types: Input, Affine, Linear, Conv2d, LIF, IF, AvgPool2d, SumPool2d, Flatten, Output.
    T:  time steps (default: the graph's metadata, as written by to_nir)
    dt: the time step that the LIF's tau refers to (default: metadata, else 1e-3 like Norse)
    Each spiking layer becomes a vanilla LIF with the layer's decay lam = 1 - dt/tau (one per
    layer, up to lam_tol) and threshold; r, v_leak and per-neuron thresholds fold into the
    weights before it. Input [T, B, *input shape] -> output [T, B, *output shape].
    """
    nir = _nir()
    meta = dict(getattr(graph, "metadata", None) or {})
    T = int(T if T is not None else meta.get("T", 0))
    if T < 1:
        raise ValueError("from_nir needs the number of time steps T (the graph's metadata has "
                         "none): from_nir(graph, T=4)")
    dt = float(dt if dt is not None else meta.get("dt", 1e-3))
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    im = _Importer(T, dt, dtype, lam_tol)
    for name in _chain(graph):
        node = graph.nodes[name]
        if isinstance(node, nir.Input):
            im.shape = tuple(int(n) for n in np.atleast_1d(node.input_type["input"]))
            if len(im.shape) == 1:       # like models.mlp: [T, B, 1, 28, 28] -> [T, B, 784]
                im.push(Flatten())
        elif isinstance(node, nir.Affine):
            im.affine(node)
        elif isinstance(node, nir.Linear):
            im.affine(node, bias=False)
        elif isinstance(node, nir.Conv2d):
            im.conv(node, name)
        elif isinstance(node, (nir.LIF, nir.IF)):
            im.neuron(node, name, nir)
        elif isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
            im.pooling(node, name, nir)
        elif isinstance(node, nir.Flatten):
            im.flatten(node, name)
        elif isinstance(node, nir.Output):
            break
        else:
            raise ValueError(f"from_nir cannot read node {name!r} of type {type(node).__name__}; "
                             "it reads Input, Affine, Linear, Conv2d, LIF, IF, AvgPool2d, "
                             "SumPool2d, Flatten and Output")
    im.flush()
    if im.pre_scale != 1.0:
        raise ValueError("the graph ends in a SumPool2d, which has no equivalent here")
    net = Sequential(*im.modules)
    net.load_state_dict(im.state)
    net.T, net.config = T, SpikeConfig(method="vanilla")
    first = graph.nodes[_chain(graph)[0]]
    net.spec = dict(name="nir", in_shape=np.atleast_1d(first.input_type["input"]).tolist())
    net.metadata = meta
    return net.eval()


def load_file(path, T: int | None = None):
    """Read a .nir file into a network in eval mode (from_nir); net.metadata holds the graph's."""
    import os
    nir = _nir()
    if not os.path.exists(path):
        raise FileNotFoundError(f"no NIR file at {path!r}: check the path")
    try:
        graph = nir.read(path)
    except Exception as e:                                   # h5py and nir raise many kinds
        raise ValueError(f"{path} is not a readable NIR file ({type(e).__name__}: {e})") from e
    return from_nir(graph, T=T)
