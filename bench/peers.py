"""The benchmark networks in PyTorch, snnTorch, SpikingJelly and Norse (the `bench` extra).

Every peer builds the architecture of bench/nets.py: Linear/Conv (no bias) -> BatchNorm over
time, batch and space (tdBN: the time axis folded into the batch, [T*B, ...]) -> LIF with
decay 0.2, threshold 1 and a hard reset to 0, average pooling, a Linear readout with bias,
cross-entropy on the readout averaged over T, SGD with momentum 0.9. Only the neuron differs,
each in its framework's idiom:

  torch         a hand-written loop over T, spike = Heaviside with a rectangular surrogate
                (a torch.autograd.Function), hard reset V = H (1 - S)
  snntorch      snn.Leaky(beta=0.2, reset_mechanism="zero", fast_sigmoid surrogate), stepped
                over T (snnTorch resets with the previous step's spike)
  spikingjelly  neuron.LIFNode(tau=1.25, decay_input=False, v_reset=0, surrogate.Rect(),
                step_mode="m"): H = 0.2 V + X, its multi-step
                functional.lif_multi_step
  norse         LIFBoxCell (no synaptic current) with dt * tau_mem_inv = 0.8, so
                V = 0.2 V + 0.8 X, SuperSpike surrogate, stepped over T

Direct encoding: every peer, like dsatgo_np, computes the first Linear/Conv and its BatchNorm
once on the static image and repeats the result over T (SpikingJelly's "static conv" idiom,
conv + BN), so no framework pays T times for layers whose input never changes. (BatchNorm over
T copies of a batch has that batch's statistics; only torch's running variance differs, by its
unbiased factor B / (B - 1) instead of T B / (T B - 1), which the timing does not see.)
"""
from __future__ import annotations

import torch
import torch.nn as nn

from nets import Net

FRAMEWORKS = ("torch", "snntorch", "spikingjelly", "norse")


# --- neurons: [T*B, ...] in, [T*B, ...] out, looping over T inside -------------------------

class _RectSpike(torch.autograd.Function):
    """Heaviside forward, rectangular window of width 1 (height 1) backward."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * (z.abs() < 0.5).to(grad.dtype)


class TorchLIF(nn.Module):
    def __init__(self, T, lam=0.2, theta=1.0):
        super().__init__()
        self.T, self.lam, self.theta = T, lam, theta

    def forward(self, x):
        xs = x.reshape(self.T, -1, *x.shape[1:])             # (T, B, ...)
        v, out = torch.zeros_like(xs[0]), []
        for t in range(self.T):
            h = self.lam * v + xs[t]
            s = _RectSpike.apply(h - self.theta)
            v = h * (1 - s)
            out.append(s)
        return torch.stack(out).reshape(x.shape)


class SnnTorchLIF(nn.Module):
    def __init__(self, T):
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate
        self.T = T
        self.lif = snn.Leaky(beta=0.2, threshold=1.0, reset_mechanism="zero",
                             spike_grad=surrogate.fast_sigmoid())

    def forward(self, x):
        xs = x.reshape(self.T, -1, *x.shape[1:])
        mem = self.lif.init_leaky()
        out = []
        for t in range(self.T):
            spk, mem = self.lif(xs[t], mem)
            out.append(spk)
        return torch.stack(out).reshape(x.shape)


class SpikingJellyLIF(nn.Module):
    def __init__(self, T):
        super().__init__()
        from spikingjelly.activation_based import neuron, surrogate
        self.T = T
        self.lif = neuron.LIFNode(tau=1.25, decay_input=False, v_threshold=1.0, v_reset=0.0,
                                  surrogate_function=surrogate.Rect(), step_mode="m")

    def forward(self, x):
        out = self.lif(x.reshape(self.T, -1, *x.shape[1:]))  # multi-step: (T, B, ...)
        self.lif.reset()                                     # functional.reset_net, per layer
        return out.reshape(x.shape)


class NorseLIF(nn.Module):
    def __init__(self, T):
        super().__init__()
        from norse.torch import LIFBoxCell, LIFBoxParameters
        self.T = T
        p = LIFBoxParameters(tau_mem_inv=torch.as_tensor(800.0), v_th=torch.as_tensor(1.0),
                             v_reset=torch.as_tensor(0.0), method="super")
        self.cell = LIFBoxCell(p, dt=0.001)

    def forward(self, x):
        xs = x.reshape(self.T, -1, *x.shape[1:])
        state, out = None, []
        for t in range(self.T):
            z, state = self.cell(xs[t], state)
            out.append(z)
        return torch.stack(out).reshape(x.shape)


NEURONS = {"torch": TorchLIF, "snntorch": SnnTorchLIF, "spikingjelly": SpikingJellyLIF,
           "norse": NorseLIF}


# --- the networks ----------------------------------------------------------------------------

class RepeatT(nn.Module):
    """[B, ...] -> [T*B, ...]: the static first layer's output, once per step."""

    def __init__(self, T):
        super().__init__()
        self.T = T

    def forward(self, x):
        return x.unsqueeze(0).expand(self.T, *x.shape).reshape(-1, *x.shape[1:])


class SEWBlock(nn.Module):
    def __init__(self, main, shortcut=None):
        super().__init__()
        self.main, self.shortcut = main, shortcut

    def forward(self, x):
        return self.main(x) + (x if self.shortcut is None else self.shortcut(x))


class Readout(nn.Module):
    """Linear readout on [T*B, ...] -> mean over T: [B, K]."""

    def __init__(self, n_in, n_out, T):
        super().__init__()
        self.fc, self.T = nn.Linear(n_in, n_out), T

    def forward(self, x):
        return self.fc(x.flatten(1)).reshape(self.T, -1, self.fc.out_features).mean(0)


def build(net: Net, framework: str) -> nn.Module:
    """The torch model of `net` with `framework`'s neuron; input [B, ...] -> logits [B, K]."""
    T, lif = net.T, NEURONS[framework]

    def conv_block(c_in, c_out, stride=1, kernel=3, first=False):
        conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
        return [conv, nn.BatchNorm2d(c_out)] + ([RepeatT(T)] if first else []) + [lif(T)]

    if net.name == "mlp":
        sizes = [net.in_shape[0], *net.hidden]
        mods = [nn.Flatten()]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            mods += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b)]
            mods += ([RepeatT(T)] if i == 0 else []) + [lif(T)]
        return nn.Sequential(*mods, Readout(sizes[-1], net.n_classes, T))
    if net.name == "sew":
        chans = [32, 64, 128]
        mods = conv_block(net.in_shape[0], chans[0], first=True)
        c = chans[0]
        for stage, (n_blocks, c_out) in enumerate(zip((3, 3, 2), chans)):
            for i in range(n_blocks):
                stride = 2 if (stage > 0 and i == 0) else 1
                main = nn.Sequential(*conv_block(c, c_out, stride), *conv_block(c_out, c_out))
                short = None
                if stride != 1 or c != c_out:
                    short = nn.Sequential(*conv_block(c, c_out, stride, kernel=1))
                mods.append(SEWBlock(main, short))
                c = c_out
        mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 64, bias=False),
                 nn.BatchNorm1d(64), lif(T), Readout(64, net.n_classes, T)]
        return nn.Sequential(*mods)
    c, h, w = net.in_shape
    mods = []
    for item in net.convs:
        if item == "P":
            mods.append(nn.AvgPool2d(2))
            h, w = h // 2, w // 2
        else:
            mods += conv_block(c, item, first=not mods)
            c = item
    return nn.Sequential(*mods, Readout(c * h * w, net.n_classes, T))
