"""What the spiking layers do: firing rates, gradient-available shares, membrane histograms.

The quantities the paper plots to show what DS-ATGO changes (Figs. 5, 8, 10, 11), read from
the cache a `Spiking` layer keeps after its forward pass (nothing here changes the network):

    firing_rate[t] = mean(S[t]);  mean[t], std[t] of H[t] (ddof = 1)
    grad_share[t]  = mean(|H[t] - theta[t]| < k[t] / 2): the share inside the surrogate window,
                     the paper's "gradient-available" share (outside it dS/dH = 0)

Recorder averages them over a training epoch's batches; in eval mode the layers drop their
cache unless record(net) is called first.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import get_xp, to_numpy
from ..model import Conv2d, Linear, SEWBlock, Spiking

THEOREM1_RATE = 0.5 * math.erfc(1 / math.sqrt(2))   # P(H >= mu + sigma) = 1 - Phi(1) = 0.158655

PER_STEP = ("firing_rate", "mean", "std", "theta", "k", "grad_share")   # each (T,)

_NO_CACHE = ("no spiking layer holds a cache: run a forward pass in training mode, "
             "or set record=True on the layers in eval mode (diagnostics.record(net))")


# --- finding the spiking layers, and naming them ---------------------------------------------

def _feeder(module) -> str | None:
    """What a Linear or Conv2d computes, as a short label ("fc 784-512", "conv 32-64");
    None for any other module. Kernels other than 3x3 and strides other than 1 are named."""
    weight = getattr(module, "_params", {}).get("weight")
    if isinstance(module, Linear):
        n_out, n_in = weight.data.shape                      # (O, I)
        return f"fc {n_in}-{n_out}"
    if isinstance(module, Conv2d):
        c_out, c_in, kh, kw = weight.data.shape              # (F, C, KH, KW)
        label = f"conv {c_in}-{c_out}"
        if (kh, kw) != (3, 3):
            label += f" {kh}x{kw}"
        if module.stride != 1:
            label += f" stride {module.stride}"
        return label
    return None


def layer_names(net) -> dict[str, str]:
    """{module path: readable name} for every Spiking module of net, in network order.

    The path joins the keys of the module tree with "." ("3" is the fourth module of a
    Sequential, "3.main.2" a neuron inside the main path of a SEW block). The readable name
    counts the spiking layers from 1 and says what feeds each one, the last Linear or Conv2d
    before it; a neuron inside a residual block also names the block (counted from 1) and
    its branch:

        mlp([784, 512, 512, 10]):   "3" -> "spike 1 (fc 784-512)", "6" -> "spike 2 (fc 512-512)"
        cnn():                      "2" -> "spike 1 (conv 1-32)", "6" -> "spike 2 (conv 32-64)"
        sew_resnet(blocks=(1, 1), channels=(4, 8)):
            "3.main.2" -> "spike 2 (block 1.main, conv 4-4)",
            "4.shortcut.2" -> "spike 6 (block 2.shortcut, conv 4-8 1x1 stride 2)"
    """
    names: dict[str, str] = {}
    state = {"feeder": None, "blocks": 0}

    def walk(module, path, block):
        if isinstance(module, Spiking):
            where = [block] if block else []
            if state["feeder"]:
                where.append(state["feeder"])
            detail = f" ({', '.join(where)})" if where else ""
            names[path] = f"spike {len(names) + 1}{detail}"
        state["feeder"] = _feeder(module) or state["feeder"]
        if isinstance(module, SEWBlock):
            state["blocks"] += 1
            number = state["blocks"]
        for key, child in module._children.items():
            inner = block
            if isinstance(module, SEWBlock):
                inner = f"block {number}.{key}"          # key: main or shortcut
            walk(child, f"{path}.{key}" if path else key, inner)

    walk(net, "", "")
    return names


def spiking_layers(net) -> list[tuple[str, Spiking]]:
    """Every Spiking module of net in network order, with its readable name (layer_names).

    The diagnostics below key their results by these names, so that logs and plots say
    "spike 2 (fc 512-512)" where the module tree says "6".
    """
    names = layer_names(net)
    found = []

    def walk(module, path):
        if isinstance(module, Spiking):
            found.append((names[path], module))
        for key, child in module._children.items():
            walk(child, f"{path}.{key}" if path else key)

    walk(net, "")
    return found


def rename_layers(summary: dict, net) -> dict:
    """summary with its module-path keys ("3", "3.main.2": how logs written before
    layer_names named the layers) replaced by net's readable names; other keys unchanged."""
    names = layer_names(net)
    return {names.get(key, key): value for key, value in summary.items()}


def record(net, on: bool = True):
    """Make every spiking layer keep its cache in eval mode too (or stop, with on=False)."""
    for _, layer in spiking_layers(net):
        layer.record = on
    return net


# --- statistics of one layer -------------------------------------------------------------------

def step_summary(cache) -> dict:
    """Per-step statistics of one spiking layer from its LIFCache.

    cache.H, cache.S: [T, B, ...]; cache.theta, cache.k: [T].
    Returns NumPy float64 arrays of length T under PER_STEP's keys, plus
    firing_rate_mean and grad_share_mean (floats, mean over t) and n, the number of
    entries of H[t] (batch x neurons), used to weight batches in Recorder.

    mean and std are measured here whatever the method: cache.mu and cache.sigma are NaN
    for the methods that never look at the statistics (vanilla).
    """
    H, S = cache.H, cache.S
    xp = get_xp(H)
    T = H.shape[0]
    h = H.reshape(T, -1)                                   # (T, B*N)
    s = S.reshape(T, -1)                                   # (T, B*N)
    theta = xp.asarray(cache.theta).reshape(T, 1)          # (T, 1)
    k = xp.asarray(cache.k).reshape(T, 1)                  # (T, 1)
    # float64 accumulators: a float32 mean over ~10^6 entries loses digits the test checks
    inside = xp.abs(h - theta) < 0.5 * k                   # (T, B*N) the surrogate window
    stats = {
        "firing_rate": s.mean(axis=1, dtype=xp.float64),
        "mean": h.mean(axis=1, dtype=xp.float64),
        # ddof = 1 as the adaptive threshold measures it (threshold.layer_stats)
        "std": h.std(axis=1, ddof=1, dtype=xp.float64),
        "theta": theta[:, 0].astype(xp.float64),
        "k": k[:, 0].astype(xp.float64),
        "grad_share": inside.mean(axis=1, dtype=xp.float64),
    }
    stats = {key: to_numpy(v) for key, v in stats.items()}   # one device sync per array
    stats["firing_rate_mean"] = float(stats["firing_rate"].mean())
    stats["grad_share_mean"] = float(stats["grad_share"].mean())
    stats["n"] = int(h.shape[1])
    return stats


def collect(net) -> dict[str, dict]:
    """step_summary for every spiking layer that holds a cache, keyed by its readable name."""
    out = {name: step_summary(layer.cache)
           for name, layer in spiking_layers(net) if layer.cache is not None}
    if not out:
        raise RuntimeError(_NO_CACHE)
    return out


def network_means(stats_by_layer: dict) -> dict:
    """Firing rate and gradient-available share averaged over layers (and steps): two floats.

    Accepts collect()'s result or Recorder.summary(); handy as a one-number log per epoch.
    """
    if not stats_by_layer:                          # nothing recorded yet
        return {"firing_rate": math.nan, "grad_share": math.nan}
    rates = [float(v["firing_rate_mean"]) for v in stats_by_layer.values()]
    shares = [float(v["grad_share_mean"]) for v in stats_by_layer.values()]
    return {"firing_rate": float(np.mean(rates)), "grad_share": float(np.mean(shares))}


# --- membrane histograms -----------------------------------------------------------------------

def histograms(net, bins: int = 60, range_sigma: float = 4.0) -> dict[str, dict]:
    """Histogram of H per layer and per step, counts only (no copy of H is kept).

    One set of edges per layer, shared by its steps: mean(H) +- range_sigma * std(H) over
    all steps, widened if needed so that every window [theta - k/2, theta + k/2] fits.
    Entries outside the edges are not counted.

    Returns {name: dict(edges (bins+1,), counts (T, bins), theta (T,), k (T,))}, NumPy arrays.
    Each layer's H is read back to the host once (on a GPU, one copy instead of a wait per
    step and statistic).
    """
    out = {}
    for name, layer in spiking_layers(net):
        c = layer.cache
        if c is None:
            continue
        T = c.H.shape[0]
        h = to_numpy(c.H).reshape(T, -1)                                 # (T, B*N) on the host
        theta = to_numpy(c.theta).astype(np.float64)
        k = to_numpy(c.k).astype(np.float64)
        mu = float(h.mean(dtype=np.float64))
        sd = float(h.std(dtype=np.float64))
        lo = min(mu - range_sigma * sd, float((theta - k).min()))
        hi = max(mu + range_sigma * sd, float((theta + k).max()))
        if not hi > lo:                                                  # constant H
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
        counts = np.stack([np.histogram(h[t], bins=edges.astype(h.dtype))[0]
                           for t in range(T)])
        out[name] = {"edges": edges, "counts": counts.astype(np.int64), "theta": theta, "k": k}
    if not out:
        raise RuntimeError(_NO_CACHE)
    return out


# --- accumulation over batches -----------------------------------------------------------------

class Recorder:
    """Running mean of collect() over batches, per layer and per step.

    Each batch weighs by n, its number of entries of H[t] (a smaller last batch counts less).
    std is averaged like the rest: it is the mean within-batch spread, not the std of the
    pooled data, which is what the adaptive threshold sees at every batch.
    """

    def __init__(self):
        self.reset()

    def reset(self):
        self._sums: dict[str, dict[str, np.ndarray]] = {}
        self._weights: dict[str, float] = {}
        self._batches: dict[str, int] = {}

    def update(self, net):
        """Add the statistics of the network's last forward pass; returns them too."""
        stats = collect(net)
        for name, st in stats.items():
            sums = self._sums.setdefault(name, {key: 0.0 for key in PER_STEP})
            for key in PER_STEP:
                sums[key] = sums[key] + st["n"] * np.asarray(st[key], dtype=np.float64)
            self._weights[name] = self._weights.get(name, 0.0) + st["n"]
            self._batches[name] = self._batches.get(name, 0) + 1
        return stats

    def state(self) -> dict:
        """Everything accumulated so far as plain JSON types (float64 values survive JSON
        exactly), for a checkpoint; Recorder.from_state(state) continues where this one was."""
        return {name: dict(sums={k: [float(v) for v in np.atleast_1d(a)] for k, a in sums.items()},
                           weight=self._weights[name], batches=self._batches[name])
                for name, sums in self._sums.items()}

    @classmethod
    def from_state(cls, state: dict) -> "Recorder":
        rec = cls()
        for name, st in state.items():
            rec._sums[name] = {k: np.asarray(v, dtype=np.float64) for k, v in st["sums"].items()}
            rec._weights[name] = float(st["weight"])
            rec._batches[name] = int(st["batches"])
        return rec

    def means(self) -> dict:
        """network_means of the summary so far: {"firing_rate", "grad_share"}, NaN if empty."""
        return network_means(self.summary())

    def summary(self) -> dict[str, dict]:
        """{layer: {key: list of T floats, firing_rate_mean, grad_share_mean, batches}}.

        Plain floats, lists and ints only, so json.dumps takes it as it is.
        """
        out = {}
        for name, sums in self._sums.items():
            per_step = {key: sums[key] / self._weights[name] for key in PER_STEP}
            entry = {key: [float(v) for v in per_step[key]] for key in PER_STEP}
            entry["firing_rate_mean"] = float(per_step["firing_rate"].mean())
            entry["grad_share_mean"] = float(per_step["grad_share"].mean())
            entry["batches"] = self._batches[name]
            out[name] = entry
        return out


# --- the Gaussian model (paper Fig. 5) ----------------------------------------------------------

def gaussian_window_share(s: float, k: float, theta: float, mu: float = 0.0) -> float:
    """Exact share of H ~ N(mu, s^2) inside the window |H - theta| < k/2.

        share = Phi((theta + k/2 - mu) / s) - Phi((theta - k/2 - mu) / s),
        Phi(x) = (1 + erf(x / sqrt 2)) / 2

    With theta = s (the adaptive threshold of a zero-mean layer) and k = 1 this gives
    47.72 %, 24.17 %, 12.10 % at s = 1/2, 1, 2 (docs/METHOD.md section 7).
    """
    s, k, theta, mu = float(s), float(k), float(theta), float(mu)
    if s <= 0 or k <= 0:
        raise ValueError(f"s and k must be positive, got s={s}, k={k}")

    def phi(x):
        return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))

    return phi((theta + 0.5 * k - mu) / s) - phi((theta - 0.5 * k - mu) / s)
