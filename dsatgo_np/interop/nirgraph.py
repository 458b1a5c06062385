"""Networks to NIR, the Neuromorphic Intermediate Representation (the `nir` package); the way
back is nir_import.py (from_nir, load_file, also importable from here).

NIR's LIF node is an ODE; its Euler step v += (dt / tau) (v_leak - v + r I) with tau = dt /
(1 - lam), v_leak = v_reset = 0 and r = 1 / (1 - lam) is our H[t] = lam V[t-1] + X[t]. With
fold_r (the default) the factor 1 / (1 - lam) and an eval-mode tdBN fold into the Affine or
Conv2d before the neuron (W' = s W, b' = s (b - mean) + beta, s = gamma / sqrt(var + eps)), as
importers such as Norse's ignore r. A NIR threshold is fixed in time: the adaptive methods'
running thresholds R[t] export as their mean ("mean") or R[1] ("first"), all of them kept in
the graph's metadata. NIR fires at v > threshold, we at H >= theta (equal but at a tie).
docs/NIR.md has the derivation and the measured agreement.
"""
from __future__ import annotations

import numpy as np

from ..core.threshold import estimated_threshold
from ..model import (AvgPool2d, BatchNorm, Conv2d, Dropout, Flatten, Linear, MaxPool2d,
                     Sequential, Spiking)
from ..core.neuron import SpikeConfig
from .nir_import import EXPORTER, _conv_out, _nir, from_nir, load_file  # noqa: F401
THRESHOLD_CHOICES = ("mean", "first")
POOLS = ("avg", "sum")


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
