"""Training steps of the benchmark networks on a GPU, for bench/gpu_check.py: dsatgo_np on CuPy
and the PyTorch frameworks on CUDA, each as a zero-argument function plus its precision.

A step is bench_train.py's: forward of the direct-encoded batch, cross-entropy on the readout
averaged over T, zero_grad, backward, SGD (momentum 0.9). dsatgo_np's step skips the two
per-batch host reads that a training loop makes once per data set (encode's NaN check, the
label range check), as the PyTorch steps make none.
"""
from __future__ import annotations

import numpy as np

import dsatgo_np as dn
from nets import Net, build_ours

PEERS = ("torch", "spikingjelly", "snntorch")


def batch(net: Net, size: int, seed: int = 0):
    """A fixed float32 batch [size, ...] in [0, 1) and integer labels [size]."""
    rng = np.random.default_rng(seed)
    x = rng.random((size, *net.in_shape), dtype=np.float32)
    return x, rng.integers(0, net.n_classes, size)


def dsatgo_step(net: Net, size: int, method: str, xp):
    """dsatgo_np's training step on module xp (numpy, cupy or the stand-in)."""
    x, y = batch(net, size)
    model = build_ours(net, method)
    if xp is not np:
        model.to("cupy" if xp.__name__ == "cupy" else "strict")
    opt = dn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    xd, yd = xp.asarray(x), xp.asarray(y)

    def step():
        out = model.forward(dn.encode.direct(xd, net.T, check_finite=False))
        _, d = dn.losses.cross_entropy(out, yd, check_labels=False)
        model.zero_grad()
        model.backward(d)
        opt.step()
    return step


def torch_precision(tf32_convs: bool, tf32_matmul: bool) -> str:
    """Set PyTorch's TF32 switches; the label for the table."""
    import torch
    torch.backends.cudnn.allow_tf32 = tf32_convs
    torch.backends.cuda.matmul.allow_tf32 = tf32_matmul
    if tf32_convs and tf32_matmul:
        return "TF32"
    return "TF32 convolutions (PyTorch's default)" if tf32_convs else "float32"


def peer_step(net: Net, size: int, framework: str):
    """bench/peers.py's model of `framework` on CUDA, its training step."""
    import torch

    import peers
    x, y = batch(net, size)
    model = peers.build(net, framework).cuda()
    xt, yt = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return step


def available_peers() -> list:
    """The frameworks of PEERS that import here, with torch seeing a GPU."""
    try:
        import torch
        if not torch.cuda.is_available():
            return []
    except ImportError:
        return []
    found = ["torch"]
    for name, module in (("spikingjelly", "spikingjelly.activation_based.neuron"),
                         ("snntorch", "snntorch")):
        try:
            __import__(module)
            found.append(name)
        except Exception:                 # a missing package or one of its dependencies
            pass
    return found


def launches_per_step(step, sync) -> dict | None:
    """Kernels and copies one step puts on the GPU, counted by PyTorch's CUDA profiler (CUPTI
    sees CuPy's launches too); None without torch."""
    try:
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return None
    step()
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        sync()
    counts = {"kernels": 0, "copies": 0}
    for event in prof.events():
        kind = str(getattr(event, "device_type", ""))
        if "CUDA" not in kind:
            continue
        name = event.name.lower()
        counts["copies" if ("memcpy" in name or "memset" in name) else "kernels"] += 1
    return counts


def stand_in_operations(net: Net, size: int, method: str, build_dir: str) -> int | None:
    """Operations of one dsatgo_np step on the CuPy stand-in with the GPU kernels (compiled
    for the CPU by tests/cuda_emulator.py): each would be at least one launch on a GPU."""
    import shutil

    if shutil.which("g++") is None:
        return None
    from cuda_emulator import Compiler
    from dsatgo_np import xp_strict
    with xp_strict.kernel_compiler(Compiler(build_dir)):
        step = dsatgo_step(net, size, method, xp_strict)
        step()                                        # compiles, allocates
        with xp_strict.count_transfers() as counted:
            step()
    return counted.operations
