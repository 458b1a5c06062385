"""Networks to and from NIR, the Neuromorphic Intermediate Representation (the `nir` package).

NIR's LIF node is a differential equation; an importer integrates it with its own time step dt.
Its Euler step is

    v[t] = v[t-1] + (dt / tau) * (v_leak - v[t-1] + r * I[t]),   spike when v > v_threshold,
                                                                  then v = v_reset

With tau = dt / (1 - lam), v_leak = 0 and v_reset = 0 this is our charge H = lam V + (1 - lam) r I,
so r = 1 / (1 - lam) makes it H[t] = lam V[t-1] + X[t] (docs/METHOD.md section 2). With
fold_r (the default) r stays 1 and the factor 1 / (1 - lam) moves into the Affine or Conv2d
before the neuron, because importers such as Norse's ignore r. Eval-mode tdBN folds into that node too:

    W' = s W,  b' = s (b - running_mean) + beta,  s = gamma / sqrt(running_var + eps)  (per output)

A NIR threshold is one value per neuron for all time. Fixed-threshold methods (vanilla, tgo,
mpd-agl, and the "estimated" threshold) export exactly; the adaptive ones (at, ds-atgo) fire in
eval mode at a running threshold R[t] that changes with the step, so the exported layer fires at
one of: "mean" (the mean of R[1..T], default) or "first" (R[1]). The graph's metadata keeps T,
dt, the method and every layer's R[t], so nothing is lost, only not simulated.

Two differences of convention, both harmless for trained networks: NIR fires at v > threshold,
we at H >= theta (they differ only when H equals theta to the last bit); NIR leaves the initial
potential to the simulator (Norse starts at v_leak = 0, as we do).

    to_nir(net, dt=1e-3, fold_r=True)     mlp / cnn / vgg in eval mode -> nir.NIRGraph
    from_nir(graph, T)                    a feed-forward NIR chain -> a network in eval mode
    cli_export(checkpoint, path)          a training checkpoint (.npz) -> a .nir file
    load_file(path)                       a .nir file -> a network, ready for evaluation
"""
from __future__ import annotations

import numpy as np

from . import MissingPackage
from ..model import (AvgPool2d, BatchNorm, Conv2d, Dropout, Flatten, Linear, MaxPool2d,
                     Sequential, Spiking)
from ..core.neuron import SpikeConfig
from ..core.threshold import estimated_threshold

EXPORTER = "dsatgo_np"
THRESHOLD_CHOICES = ("mean", "first")
POOLS = ("avg", "sum")


def _nir():
    try:
        import nir
    except ImportError as e:
        raise MissingPackage("NIR files need the nir package: pip install 'dsatgo_np[nir]' "
                             "(or pip install nir)") from e
    return nir


# --- thresholds --------------------------------------------------------------------------------

def step_thresholds(spk: Spiking) -> np.ndarray:
    """theta[t] that `spk` fires at in eval mode, t = 1..T: (T,) in the model's dtype.

    Fixed methods: v_th. Estimated threshold: f_c sqrt(1 + lam^2) v_th. Measured AT: the running
    thresholds R[t] (with running=False eval uses the batch's own statistics, which no fixed
    graph can do: R[t] is then the nearest stand-in).
    """
    cfg, T = spk.config, spk.T
    running = spk.state_dict()["running_threshold"]                       # (T,)
    dtype = running.dtype
    if not cfg.adaptive:
        return np.full(T, cfg.v_th, dtype=dtype)
    if cfg.threshold == "estimated":
        lam = np.asarray(spk.decay(np, dtype), dtype=dtype)
        return np.full(T, estimated_threshold(lam, cfg.f_c, cfg.v_th), dtype=dtype)
    return running


def layer_threshold(steps: np.ndarray, choice: str = "mean") -> float:
    """One threshold for all T steps: "mean" of theta[t] or the "first" step's. Rounded to the
    model's dtype, so that every consumer of the graph fires at the same value."""
    if choice not in THRESHOLD_CHOICES:
        raise ValueError(f"unknown threshold choice {choice!r}: choose one of "
                         f"{', '.join(THRESHOLD_CHOICES)}")
    value = steps.astype(np.float64).mean() if choice == "mean" else steps[0]
    return float(np.asarray(value, dtype=steps.dtype))


# --- export --------------------------------------------------------------------------------------

def _input_shape(net, in_shape):
    if in_shape is not None:
        return tuple(int(n) for n in in_shape)
    spec = getattr(net, "spec", None) or {}
    if spec.get("name") == "mlp":
        return (int(spec["sizes"][0]),)
    if "in_shape" in spec:
        return tuple(int(n) for n in spec["in_shape"])
    raise ValueError("to_nir cannot tell the network's input shape (no mlp/cnn/vgg spec): pass "
                     "in_shape=(C, H, W) or (N,)")


def _conv_out(shape, weight, stride, padding):
    _, h, w = shape
    k = weight.shape[-1]
    size = lambda n: (n + 2 * padding - k) // stride + 1                  # noqa: E731
    return (weight.shape[0], size(h), size(w))


class _Exporter:
    """Walks a Sequential once, folding each Linear/Conv with the BN and neuron that follow."""

    def __init__(self, nir, dt, fold_r, threshold, pool, shape):
        self.nir, self.dt, self.fold_r, self.choice, self.pool = nir, dt, fold_r, threshold, pool
        self.shape = shape                       # per-sample shape of the current signal
        self.nodes = {"input": nir.Input(input_type={"input": np.array(shape)})}
        self.chain = ["input"]
        self.count: dict[str, int] = {}
        self.pending = None                      # [kind, W (float64), b (float64), module, bn?]
        self.pre_scale = 1.0                     # 1/k^2 of a SumPool2d, for the next W
        self.thresholds, self.exact = {}, True

    def add(self, kind, node):
        self.count[kind] = self.count.get(kind, 0) + 1
        name = f"{kind}{self.count[kind]}"
        self.nodes[name] = node
        self.chain.append(name)
        return name

    def weights(self, module):
        w = np.asarray(module.state_dict()["weight"], dtype=np.float64) * self.pre_scale
        self.pre_scale = 1.0
        b = module.state_dict().get("bias")
        b = np.zeros(w.shape[0]) if b is None else np.asarray(b, dtype=np.float64)
        return w, b

    def flush(self):
        """Emit the pending Linear/Conv (with whatever was folded into it) as Affine/Conv2d."""
        if self.pending is None:
            return
        kind, w, b, module, _ = self.pending
        dtype = module.state_dict()["weight"].dtype
        w, b = w.astype(dtype), b.astype(dtype)
        if kind == "fc":
            self.add("fc", self.nir.Affine(weight=w, bias=b))
            self.shape = (w.shape[0],)
        else:
            out = _conv_out(self.shape, w, module.stride, module.padding)
            self.add("conv", self.nir.Conv2d(input_shape=self.shape[1:], weight=w,
                                             stride=module.stride, padding=module.padding,
                                             dilation=1, groups=1, bias=b))
            self.shape = out
        self.pending = None

    def linear(self, module):
        self.flush()
        w, b = self.weights(module)
        self.pending = ["fc" if isinstance(module, Linear) else "conv", w, b, module, False]

    def batchnorm(self, bn):
        if self.pending is None or self.pending[4]:
            raise ValueError("to_nir folds a BatchNorm into the Linear/Conv2d right before it; "
                             "this network has a BatchNorm elsewhere, which NIR cannot express")
        st = bn.state_dict()
        s = st["weight"].astype(np.float64) / np.sqrt(st["running_var"].astype(np.float64) + bn.eps)
        w, b = self.pending[1], self.pending[2]
        self.pending[1] = w * s.reshape((-1,) + (1,) * (w.ndim - 1))        # row o times s[o]
        self.pending[2] = s * (b - st["running_mean"]) + st["bias"]
        self.pending[4] = True

    def spiking(self, spk):
        if self.pending is None:
            raise ValueError("to_nir needs a Linear or Conv2d (and BatchNorm) before each spiking "
                             "layer: NIR's LIF takes its input current from such a node")
        dtype = spk.state_dict()["running_threshold"].dtype
        lam = float(np.asarray(spk.decay(np, dtype), dtype=dtype))      # the decay it runs with
        if not 0 <= lam < 1:
            raise ValueError(f"a LIF decay lam must lie in [0, 1) for NIR's tau = dt / (1 - lam), "
                             f"got {lam}")
        gain = 1.0 / (1.0 - lam)                     # r that makes (dt / tau) r = 1
        if self.fold_r:
            self.pending[1], self.pending[2] = self.pending[1] * gain, self.pending[2] * gain
            r = 1.0
        else:
            r = gain
        self.flush()
        steps = step_thresholds(spk)
        theta = layer_threshold(steps, self.choice)
        self.exact &= bool(np.all(steps == steps[0])) and (
            not spk.config.adaptive or spk.config.running or spk.config.threshold == "estimated")
        full = lambda v: np.full(self.shape, v, dtype=np.float64)          # noqa: E731
        name = self.add("lif", self.nir.LIF(tau=full(self.dt / (1.0 - lam)), r=full(r),
                                            v_leak=full(0.0), v_threshold=full(theta),
                                            v_reset=full(0.0)))
        self.thresholds[name] = steps

    def pooling(self, module):
        self.flush()
        k = int(module.kernel)
        c, h, w = self.shape
        kernel = np.array([k, k])
        if self.pool == "avg":
            self.add("pool", self.nir.AvgPool2d(kernel_size=kernel, stride=kernel,
                                                padding=np.array([0, 0])))
        else:                    # sum = k^2 avg: the next Linear/Conv takes the 1/k^2
            self.add("pool", self.nir.SumPool2d(kernel_size=kernel, stride=kernel,
                                                padding=np.array([0, 0])))
            self.pre_scale /= k * k
        self.shape = (c, h // k, w // k)

    def flatten(self):
        self.flush()
        if len(self.shape) > 1:    # NIR shapes carry no batch axis: flatten from axis 0
            self.add("flatten", self.nir.Flatten(input_type={"input": np.array(self.shape)},
                                                 start_dim=0, end_dim=-1))
            self.shape = (int(np.prod(self.shape)),)

    def finish(self):
        self.flush()
        if self.pre_scale != 1.0:
            raise ValueError("pool='sum' needs a Linear or Conv2d after the last pooling to take "
                             "its 1/k^2; export with pool='avg'")
        self.nodes["output"] = self.nir.Output(output_type={"output": np.array(self.shape)})
        self.chain.append("output")


def to_nir(net, dt: float = 1e-3, fold_r: bool = True, threshold: str = "mean",
           pool: str = "avg", in_shape=None, metadata: dict | None = None):
    """Export an mlp / cnn / vgg network (a Sequential) in eval mode as a nir.NIRGraph.

    dt:        the simulator's time step; tau = dt / (1 - lam) makes its Euler step ours
    fold_r:    put r = 1 / (1 - lam) into the weights before each LIF (r = 1 in the graph)
    threshold: "mean" or "first" of the running thresholds, for adaptive methods
    pool:      "avg" writes nir.AvgPool2d; "sum" writes nir.SumPool2d and scales the next
               node's weights by 1/k^2 (exact: a power of two), for importers without AvgPool2d
    in_shape:  per-sample input shape; by default from net.spec ([N] for an mlp, [C, H, W])
    Input [T, B, *in_shape] one step at a time; output node: the readout, [B, classes] per step.
    """
    nir = _nir()
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}: choose one of {', '.join(POOLS)}")
    if not dt > 0:
        raise ValueError(f"dt must be a positive time step, got {dt}")
    layer_threshold(np.ones(1), threshold)                                 # checks the choice
    if not isinstance(net, Sequential):
        raise TypeError(f"to_nir exports a Sequential network (models.mlp, cnn, vgg), got "
                        f"{type(net).__name__}")
    if not all(isinstance(p.data, np.ndarray) for p in net.parameters()):
        raise ValueError("to_nir reads a network on the CPU: call net.to('numpy') first")
    ex = _Exporter(nir, float(dt), fold_r, threshold, pool, _input_shape(net, in_shape))
    for module in net:
        if isinstance(module, (Linear, Conv2d)):
            ex.linear(module)
        elif isinstance(module, BatchNorm):
            ex.batchnorm(module)
        elif isinstance(module, Spiking):
            ex.spiking(module)
        elif isinstance(module, AvgPool2d):
            ex.pooling(module)
        elif isinstance(module, Flatten):
            ex.flatten()
        elif isinstance(module, Dropout):
            continue                                                  # identity in eval mode
        elif isinstance(module, MaxPool2d):
            raise ValueError("NIR 1.0 has no max-pooling node: build the network with "
                             "pool='avg' to export it")
        else:
            raise ValueError(f"to_nir exports mlp, cnn and vgg networks; it cannot express "
                             f"{type(module).__name__} (residual blocks, global pooling)")
    ex.finish()
    spikes = [m for m in net if isinstance(m, Spiking)]
    cfg = spikes[0].config if spikes else SpikeConfig(method="vanilla")
    meta = dict(exporter=EXPORTER, T=int(getattr(net, "T", spikes[0].T if spikes else 1)),
                dt=float(dt), method=cfg.method, neuron=spikes[0].neuron if spikes else "lif",
                threshold_choice=threshold, exact=ex.exact, fold_r=bool(fold_r), pool=pool,
                fire="H >= theta, hard reset to 0",
                model=(getattr(net, "spec", None) or {}).get("name", ""),
                running_thresholds=ex.thresholds)
    meta.update(metadata or {})
    edges = list(zip(ex.chain[:-1], ex.chain[1:]))
    return nir.NIRGraph(nodes=ex.nodes, edges=edges, metadata=meta)


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
        if kind == "fc":
            self.push(Linear(w.shape[1], w.shape[0], bias=True, dtype=self.dtype),
                      dict(weight=w, bias=b))
        else:
            self.push(Conv2d(w.shape[1], w.shape[0], w.shape[2], opt["stride"], opt["padding"],
                             bias=True, dtype=self.dtype), dict(weight=w, bias=b))
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


# --- files ---------------------------------------------------------------------------------------

def cli_export(src_checkpoint, dst, dt: float = 1e-3, fold_r: bool = True,
               threshold: str = "mean", pool: str = "avg"):
    """Write a training checkpoint (RUN/best.npz, or the run folder RUN) as a .nir file with
    nir.write; returns the graph. Its metadata also names the data set, for `evaluate`."""
    import os
    from ..checkpoint import load_model
    nir = _nir()
    if os.path.isdir(src_checkpoint):
        src_checkpoint = os.path.join(src_checkpoint, "best.npz")
    net, meta = load_model(src_checkpoint)
    config = meta.get("config", {})
    extra = dict(source=str(src_checkpoint))
    if config.get("dataset"):
        extra["dataset"] = config["dataset"]
    if meta.get("test_acc") is not None:
        extra["source_test_acc"] = float(meta["test_acc"])
    graph = to_nir(net.eval(), dt=dt, fold_r=fold_r, threshold=threshold, pool=pool,
                   metadata=extra)
    nir.write(dst, graph)
    return graph


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
