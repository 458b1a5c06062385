"""Weights traded with the authors' PyTorch release: a PyTorch ResNet19 written here from the
published architecture (network_model/ResNet19.py, layers.py, neuron.py, surrogate.py of
github.com/jqjiang1999/DS-ATGO), with its module names and its neuron, against ours.

The PyTorch side keeps the release's layout [B, T, ...]; ours is [T, B, ...].
"""
import copy
import json
import math
import os
import re
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
nn = torch.nn

import dsatgo_np as dn  # noqa: E402
from dsatgo_np.interop import official  # noqa: E402
from dsatgo_np.interop.official import ArchitectureMismatch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = 2
torch.set_num_threads(1)


# --- a PyTorch ResNet19 with the release's module names and neuron ---------------------------------

class Rectangle(torch.autograd.Function):
    """Heaviside forward; backward 1/k inside |x| < k/2 (x = H - theta)."""

    @staticmethod
    def forward(ctx, x, k):
        ctx.save_for_backward(x)
        ctx.k = k
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() < ctx.k / 2).to(grad.dtype) / ctx.k, None


class PLIFNode(nn.Module):
    """H = sigmoid(w) V + X; training: theta = mu + sigma of H (detached, unbiased std), window
    k = 1 + tanh(sigma - 1), running thresholds R <- 0.9 R + 0.1 theta kept as a plain
    attribute (not in state_dict); eval: theta = R[t]. Reset V = H (1 - S), S not detached."""

    def __init__(self, T, init_a=5.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(-math.log(init_a - 1)))
        self.running_threshold = torch.full((T,), 1.0)
        self.log = []                                   # (H, theta) per step, for the tests

    def step(self, v, x, t):
        h = torch.sigmoid(self.w) * v + x
        d = h.detach()
        mu, sigma = d.mean(), d.std()
        if self.training:
            theta = mu + sigma
            self.running_threshold[t] = 0.9 * self.running_threshold[t] + 0.1 * theta
            s = Rectangle.apply(h - theta, 1 + torch.tanh(sigma - 1))
        else:
            theta = self.running_threshold[t]
            s = (h - theta >= 0).to(h.dtype)
        self.log.append((d, theta))
        return s, h * (1 - s)


class SpikingNeuron(nn.Module):
    def __init__(self, T):
        super().__init__()
        self.neuron = PLIFNode(T)

    def forward(self, x):                               # [B, T, ...]
        v, out = 0.0, []
        self.neuron.log = []
        for t in range(x.shape[1]):
            s, v = self.neuron.step(v, x[:, t], t)
            out.append(s)
        return torch.stack(out, 1)


class BN2d(nn.Module):
    """tdBN: BatchNorm3d over [B, C, T, H, W], scale initialised to alpha * V_th = 1."""

    def __init__(self, c):
        super().__init__()
        self.tdBN = nn.BatchNorm3d(c)

    def forward(self, x):
        return self.tdBN(x.transpose(1, 2)).transpose(1, 2)


class BN1d(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.tdBN = nn.BatchNorm1d(c)

    def forward(self, x):
        return self.tdBN(x.transpose(1, 2)).transpose(1, 2)


class TdLayer(nn.Module):
    def __init__(self, layer, bn=None):
        super().__init__()
        self.layer, self.bn = layer, bn

    def forward(self, x):
        y = self.layer(x.flatten(0, 1))
        y = y.view(x.shape[:2] + y.shape[1:])
        return y if self.bn is None else self.bn(y)


class BasicBlock(nn.Module):
    def __init__(self, c_in, c, stride, T):
        super().__init__()
        self.conv1 = TdLayer(nn.Conv2d(c_in, c, 3, stride, 1, bias=False), BN2d(c))
        self.spike1 = SpikingNeuron(T)
        self.conv2 = TdLayer(nn.Conv2d(c, c, 3, 1, 1, bias=False), BN2d(c))
        self.spike2 = SpikingNeuron(T)
        self.downsample = None
        if stride != 1 or c_in != c:
            self.downsample = nn.Sequential(
                TdLayer(nn.Conv2d(c_in, c, 1, stride, bias=False), BN2d(c)), SpikingNeuron(T))

    def forward(self, x):
        out = self.spike2(self.conv2(self.spike1(self.conv1(x))))
        return out + (x if self.downsample is None else self.downsample(x))      # SEW ADD


class ResNet19(nn.Module):
    def __init__(self, T, output_size):
        super().__init__()
        self.T = T
        self.encode = nn.Sequential(TdLayer(nn.Conv2d(3, 128, 3, 1, 1, bias=False), BN2d(128)),
                                    SpikingNeuron(T))
        blocks, c = [], 128
        for c_out, stride in [(128, 1)] * 3 + [(256, 2), (256, 1), (256, 1), (512, 2), (512, 1)]:
            blocks.append(nn.Sequential(BasicBlock(c, c_out, stride, T)))
            c = c_out
        self.ResNetBlocks = nn.Sequential(*blocks)
        self.global_ap = TdLayer(nn.AdaptiveAvgPool2d((1, 1)))
        self.fc = nn.Sequential(TdLayer(nn.Linear(512, 256, bias=False), BN1d(256)),
                                SpikingNeuron(T), TdLayer(nn.Linear(256, output_size, bias=False)))
        for m in self.modules():                        # the release's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):                               # [B, 3, H, W] -> [B, T, classes]
        x = self.ResNetBlocks(self.encode(x.unsqueeze(1).repeat(1, self.T, 1, 1, 1)))
        x = self.global_ap(x)
        return self.fc(x.view(x.shape[0], x.shape[1], -1))

    def neurons(self):
        return {name: m for name, m in self.named_modules() if isinstance(m, SpikingNeuron)}

    def set_thresholds(self, thresholds):
        for name, m in self.neurons().items():
            m.neuron.running_threshold = torch.as_tensor(np.asarray(thresholds[name])).float()


def smoothed_ce(out, y, eps=0.1):
    """The release's loss: label-smoothed cross-entropy of the mean over T (mean over batch)."""
    logp = torch.log_softmax(out.mean(1), 1)
    q = torch.full_like(logp, eps / logp.shape[1])
    q[torch.arange(len(y)), y] += 1 - eps
    return (-q * logp).mean(0).sum()


# --- helpers ------------------------------------------------------------------------------------------

def images(seed, B=4, size=8):
    return np.random.default_rng(seed).standard_normal((B, 3, size, size)).astype(np.float32)


def module_at(net, prefix):
    m = net
    for part in prefix.strip(".").split("."):
        m = m._children[part]
    return m


@pytest.fixture(scope="module")
def ours():
    return trained_ours()


@pytest.fixture(scope="module")
def theirs():
    return trained_torch()


def trained_ours(steps=1, seed=0):
    """A resnet19 after a few SGD steps: BN statistics, thresholds and PLIF decays all moved."""
    net = dn.models.resnet19(T=T, n_classes=10, seed=seed)
    opt = dn.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for i in range(steps):
        out = net.forward(dn.encode.direct(images(100 + i), T))
        loss, d = dn.losses.cross_entropy(out, np.arange(4) % 10, label_smoothing=0.1)
        net.zero_grad()
        net.backward(d)
        opt.step()
    settle_ours(net, images(300))
    return net


def settle_ours(net, x):
    """Eval-mode statistics of one training batch: BatchNorm's running statistics become the
    batch's (momentum 1), the running thresholds its measured thresholds (calibrate), so that
    eval mode fires as training does (a few steps would leave them near their start)."""
    norms = [m for m in net.modules() if isinstance(m, dn.model.BatchNorm)]
    for m in norms:
        m.momentum = 1.0
    net.train().forward(dn.encode.direct(x, net.T))
    for m in norms:
        m.momentum = 0.1
    official.calibrate(net, [x])


def trained_torch(steps=1, seed=0):
    torch.manual_seed(seed)
    model = ResNet19(T, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for i in range(steps):
        loss = smoothed_ce(model(torch.from_numpy(images(200 + i))), torch.arange(4) % 10)
        opt.zero_grad()
        loss.backward()
        opt.step()
    settle_torch(model, images(400))
    return model


def settle_torch(model, x):
    """settle_ours for the PyTorch model."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(x))
    for m in norms:
        m.momentum = 0.1
    for m in model.neurons().values():
        m.neuron.running_threshold = torch.stack([th for _, th in m.neuron.log]).float()


def clean_samples(net, model, B):
    """Samples whose spikes agree in every layer, ours vs PyTorch (after an eval forward of
    both with records on). A float32 sum in another order may put a neuron whose potential
    sits within rounding of its threshold on the other side: for each sample, the first
    layer with any differing spike must show only such neurons (|H - theta| below 1e-4, a
    thousand times float32's rounding of potentials of order 1: sums of ~1e3 products of
    order 1 are exact to about sqrt(1e3) * 6e-8 = 2e-6); that sample is then left out."""
    clean = []
    for b in range(B):
        ok = True
        for ours_prefix, theirs in official.layout(net).neurons:
            cache = module_at(net, ours_prefix).cache
            log = model.get_submodule(theirs).neuron.log
            s_ours = cache.S[:, b]
            s_theirs = np.stack([(h[b] >= th).numpy() for h, th in log])
            diff = s_ours != s_theirs
            if diff.any():
                margin = np.abs(cache.H[:, b] - cache.theta.reshape((-1,) + (1,) * (cache.H.ndim - 2)))
                assert margin[diff].max() < 1e-4, f"{theirs}: spikes differ far from threshold"
                ok = False
                break
        clean.append(ok)
    return np.array(clean)


# --- export to the release ------------------------------------------------------------------------------

def test_fresh_resnet19_is_initialised_as_the_release():
    """PLIF w = -ln 4, tdBN scale 1 and shift 0, fresh statistics and thresholds equal; weights
    drawn with the release's spread: Kaiming normal (fan-out) convolutions, PyTorch's default
    Linear (std within 10 % of the PyTorch model's, 8 standard errors of a 3456-value sample)."""
    state, thresholds = official.export_official(dn.models.resnet19(T=T, n_classes=10, seed=1))
    torch.manual_seed(1)
    ref = {k: v.numpy() for k, v in ResNet19(T, 10).state_dict().items()}
    assert state.keys() == ref.keys()
    for k, v in ref.items():
        assert state[k].shape == v.shape, k
        if k.endswith("layer.weight"):
            assert abs(state[k].std() / v.std() - 1) < 0.1, k
        else:
            np.testing.assert_allclose(state[k], v, rtol=1e-7, err_msg=k)
    assert all(np.array_equal(v, np.ones(T)) for v in thresholds.values())


def test_export_loads_strictly_and_predicts_the_same_logits(ours):
    net = ours
    state, thresholds = official.export_official(net)
    model = ResNet19(T, 10)
    assert set(state) == set(model.state_dict())
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()},
                          strict=True)
    assert set(thresholds) == set(model.neurons()) and len(thresholds) == 20
    assert "ResNetBlocks.3.0.downsample.1" in thresholds and "fc.1" in thresholds
    model.set_thresholds(thresholds)
    assert not np.allclose(thresholds["fc.1"], 1.0)             # the training moved them
    model.eval()
    net.eval()
    for m in net.modules():
        if isinstance(m, dn.model.Spiking):
            m.record = True
    x = images(7)
    ours = net.forward(dn.encode.direct(x, T)).transpose(1, 0, 2)           # [B, T, K]
    with torch.no_grad():
        theirs = model(torch.from_numpy(x)).numpy()
    assert np.ptp(theirs) > 0.1                               # the head fires
    clean = clean_samples(net, model, len(x))
    assert clean.sum() >= len(x) - 1
    err = np.abs(ours - theirs)[clean].max() / np.abs(theirs[clean]).max()
    assert err < 1e-4, err


# --- import from the release ----------------------------------------------------------------------------

def torch_state(model):
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    thresholds = {k: m.neuron.running_threshold.numpy().copy() for k, m in model.neurons().items()}
    return state, thresholds


def test_import_of_a_trained_torch_model_predicts_its_logits(theirs):
    model = theirs
    state, thresholds = torch_state(model)
    net = official.import_official(state, thresholds, T=T)
    assert net.spec == dict(name="resnet19", n_classes=10) and not net.training
    for m in net.modules():
        if isinstance(m, dn.model.Spiking):
            m.record = True
    model.eval()
    x = images(8)
    ours = net.forward(dn.encode.direct(x, T)).transpose(1, 0, 2)
    with torch.no_grad():
        theirs = model(torch.from_numpy(x)).numpy()
    assert np.ptp(theirs) > 0.1                               # the head fires
    clean = clean_samples(net, model, len(x))
    assert clean.sum() >= len(x) - 1
    assert np.abs(ours - theirs)[clean].max() / np.abs(theirs[clean]).max() < 1e-4


def test_one_training_step_gives_the_release_loss_and_gradients(theirs):
    """float64 on both sides, so that no spike flips: every gradient equal to 1e-9 of its
    largest entry (float64 sums of ~1e4 terms lose about 1e4 * 1e-16 = 1e-12 relative; the
    step functions pass only exact 0/1 values)."""
    model = copy.deepcopy(theirs).double()
    state, thresholds = torch_state(model)
    net = official.import_official(state, thresholds, T=T, dtype="float64")
    model.train()
    net.train()
    x, y = images(9, B=2).astype(np.float64), np.array([3, 1])
    out = model(torch.from_numpy(x))
    loss = smoothed_ce(out, torch.from_numpy(y))
    model.zero_grad()
    loss.backward()
    ours_out = net.forward(dn.encode.direct(x, T))
    ours_loss, d = dn.losses.cross_entropy(ours_out, y, label_smoothing=0.1)
    net.zero_grad()
    net.backward(d)
    np.testing.assert_allclose(ours_out.transpose(1, 0, 2), out.detach().numpy(), rtol=1e-10,
                               atol=1e-12 * np.abs(ours_out).max())
    assert abs(float(ours_loss) - loss.item()) < 1e-12
    grads, thr = official.export_official(net, grads=True)
    theirs = {k: p.grad.numpy() for k, p in model.named_parameters()}
    assert set(grads) == set(theirs)
    nonzero = 0
    for k, g in theirs.items():
        scale = np.abs(g).max()
        nonzero += scale > 0
        np.testing.assert_allclose(grads[k], g, rtol=0, atol=1e-9 * scale + 1e-300, err_msg=k)
    assert nonzero == len(theirs)             # every parameter, PLIF decays included, learns
    _, thr = official.export_official(net)
    for k, m in model.neurons().items():      # the release keeps R in float32
        np.testing.assert_allclose(thr[k], m.neuron.running_threshold.numpy(), rtol=1e-6)
    after, _ = torch_state(model)
    state_now, _ = official.export_official(net)
    for k in after:
        if k.endswith("running_mean") or k.endswith("running_var"):
            np.testing.assert_allclose(state_now[k], after[k], rtol=1e-10, atol=1e-14)


def test_calibration_averages_training_thresholds_and_keeps_bn_statistics(theirs):
    model = copy.deepcopy(theirs)
    state, thresholds = torch_state(model)
    batches = [images(20 + i, B=2) for i in range(2)]
    net = official.import_official(state, None, T=T, batches=batches)
    model.train()
    measured = {k: [] for k in model.neurons()}
    with torch.no_grad():
        for x in batches:
            model(torch.from_numpy(x))
            for k, m in model.neurons().items():
                measured[k].append([float(th) for _, th in m.neuron.log])
    got, thr = official.export_official(net)
    for k, values in measured.items():
        np.testing.assert_allclose(thr[k], np.mean(values, axis=0), rtol=1e-4, atol=1e-5)
    for k, v in state.items():
        if "running" in k:
            np.testing.assert_array_equal(got[k], v)
    with pytest.warns(UserWarning, match="calibrate"):
        official.import_official(state, None, T=T)


def test_import_refuses_foreign_or_misshapen_states():
    state, thresholds = torch_state(ResNet19(T, 10))
    with pytest.raises(ArchitectureMismatch, match="missing keys.*encode.0.layer.weight"):
        official.import_official({k: v for k, v in state.items() if k != "encode.0.layer.weight"},
                                 thresholds, T=T)
    with pytest.raises(ArchitectureMismatch, match="pass T=2"):
        official.import_official(state, thresholds, T=3)
    with pytest.raises(ArchitectureMismatch, match="shape"):
        official.import_official(state, thresholds, T=T, n_classes=7)
    with pytest.raises(ArchitectureMismatch, match="not the release's ResNet19"):
        official.import_official({"0.weight": np.zeros(3)}, None, T=T)


# --- safetensors files ------------------------------------------------------------------------------------

def test_safetensors_round_trip_is_exact_and_torch_reads_it(tmp_path, ours):
    net = ours
    path = official.save_safetensors(net, tmp_path / "m.safetensors")
    back = official.load_safetensors(path, expect="resnet19")
    a, b = net.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    assert back.T == T and back.config == net.config
    from safetensors.torch import load_file
    tensors = load_file(path)
    model = ResNet19(T, 10)
    thr = {k[:-len(official.THRESHOLD_SUFFIX)]: tensors.pop(k) for k in list(tensors)
           if k.endswith(official.THRESHOLD_SUFFIX)}
    model.load_state_dict(tensors, strict=True)
    model.set_thresholds({k: v.numpy() for k, v in thr.items()})
    np.testing.assert_array_equal(model.neurons()["fc.1"].neuron.running_threshold.numpy(),
                                  a["14.running_threshold"])


def test_safetensors_refuses_another_architecture(tmp_path):
    mlp = dn.models.mlp([12, 6, 3], T=T)
    path = official.save_safetensors(mlp, tmp_path / "mlp.safetensors")
    with pytest.raises(ArchitectureMismatch, match="holds a mlp.*expected.*resnet19"):
        official.load_safetensors(path, expect="resnet19")
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open
    with safe_open(path, framework="np") as f:
        meta = dict(f.metadata())
    meta["architecture"] = json.dumps(dict(name="mlp", sizes=[12, 7, 3]))  # tensors of 12-6-3
    save_file(load_file(path), tmp_path / "liar.safetensors", metadata=meta)
    with pytest.raises(ArchitectureMismatch, match="shape"):
        official.load_safetensors(tmp_path / "liar.safetensors")
    with pytest.raises(FileNotFoundError, match="no model file"):
        official.load_safetensors(tmp_path / "none.safetensors")


def test_a_release_file_saved_from_pytorch_comes_back(tmp_path, theirs):
    """What docs/INTEROP.md tells a PyTorch user to save: the state_dict plus the running
    thresholds, no metadata of ours. T comes from the thresholds."""
    from safetensors.torch import save_file
    model = theirs
    tensors = dict(model.state_dict())
    tensors.update({k + official.THRESHOLD_SUFFIX: m.neuron.running_threshold
                    for k, m in model.neurons().items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp_path / "r.safetensors")
    net = official.load_safetensors(tmp_path / "r.safetensors")
    state, thr = official.export_official(net)
    np.testing.assert_array_equal(state["fc.2.layer.weight"],
                                  model.state_dict()["fc.2.layer.weight"].numpy())
    np.testing.assert_array_equal(thr["encode.1"], model.neurons()["encode.1"].neuron.running_threshold)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "s.safetensors")
    with pytest.raises(ValueError, match="pass T="):                 # no thresholds, no metadata
        official.load_safetensors(tmp_path / "s.safetensors")
    with pytest.raises(ValueError, match="no running thresholds.*docs/INTEROP.md"):
        official.cli_import(tmp_path / "s.safetensors", tmp_path / "s.npz")


# --- docs/INTEROP.md: its PyTorch twin on every architecture, and its commands in order ------------------

DOC = os.path.join(ROOT, "docs", "INTEROP.md")
BLOCK = re.compile(r"(<!-- ([^>]*) -->\n)?```(bash|python)\n(.*?)```", re.S)


def doc_blocks():
    """[(marker or None, language, code)] of docs/INTEROP.md, in order."""
    return [(m.group(2), m.group(3), m.group(4)) for m in BLOCK.finditer(open(DOC).read())]


def twin():
    """The namespace of the page's PyTorch twin module."""
    code = next(c for _, lang, c in doc_blocks() if lang == "python" and "class Node" in c)
    ns = {}
    exec(compile(code, "torch_twin.py", "exec"), ns)
    return ns


TWIN_CASES = {        # builder, its spiking options beyond T=3 and the seed
    "mlp": (lambda **k: dn.models.mlp([48, 20, 12, 5], **k), dict(neuron="lif")),
    "cnn": (lambda **k: dn.models.cnn((3, 4, 4), (6, 8), 5, **k), dict(neuron="plif")),
    "vgg": (lambda **k: dn.models.vgg((3, 4, 4), (6, "P", 8), 5, hidden=(10,), pool="max", **k),
            dict(neuron="plif")),
    "sew_resnet": (lambda **k: dn.models.sew_resnet((3, 4, 4), 5, blocks=(1, 1, 1),
                                                    width_mult=1 / 16, head=16, **k),
                   dict(neuron="plif", width="std")),
    "mlp-vanilla": (lambda **k: dn.models.mlp([48, 20, 5], **k), dict(method="vanilla")),
    "mlp-at": (lambda **k: dn.models.mlp([48, 20, 5], **k), dict(method="at", f_c=1.2)),
    "mlp-tgo": (lambda **k: dn.models.mlp([48, 20, 5], **k), dict(method="tgo", k0=0.7)),
    "mlp-detach": (lambda **k: dn.models.mlp([48, 20, 5], **k),
                   dict(detach_reset=True, width="std", lam=0.5)),
}


@pytest.mark.parametrize("name", list(TWIN_CASES))
def test_the_docs_twin_loads_each_architecture_and_learns_alike(name, tmp_path):
    """Eval logits of a file loaded in the twin (float32, 1e-4 relative), then one training
    step in float64 of the same weights: loss and every gradient (1e-9 of the largest entry)."""
    ns = twin()
    builder, opts = TWIN_CASES[name]
    net = builder(T=3, seed=4, **opts)
    x = np.random.default_rng(5).standard_normal((6, 3, 4, 4)).astype(np.float32)
    settle_ours(net, x)
    path = official.save_safetensors(net, tmp_path / f"{name}.safetensors")
    model, T_file = ns["load"](str(path))
    assert T_file == 3
    with torch.no_grad():
        theirs = model(ns["direct"](torch.from_numpy(x), 3)).numpy()
    ours = net.eval().forward(dn.encode.direct(x, 3)).transpose(1, 0, 2)
    assert np.ptp(theirs, axis=0).max() > 0.01            # samples differ: the network fires
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())

    net64 = official.load_safetensors(path, dtype="float64").train()
    model = model.double().train()
    y = np.arange(6) % 5
    out = model(ns["direct"](torch.from_numpy(x.astype(np.float64)), 3))
    loss = torch.nn.functional.cross_entropy(out.mean(1), torch.from_numpy(y))
    loss.backward()
    ours_out = net64.forward(dn.encode.direct(x.astype(np.float64), 3))
    ours_loss, d = dn.losses.cross_entropy(ours_out, y)
    net64.zero_grad()
    net64.backward(d)
    assert abs(float(ours_loss) - loss.item()) < 1e-12
    grads, _ = official.export_official(net64, grads=True)
    for k, p in model.named_parameters():
        g = p.grad.numpy()
        np.testing.assert_allclose(grads[k], g, rtol=0, atol=1e-9 * np.abs(g).max() + 1e-300,
                                   err_msg=k)


def test_the_docs_twin_builds_the_release_resnet19_tree():
    """The twin's resnet19 has this file's ResNet19 keys and shapes, plus its running thresholds."""
    o = official._spiking_options(dn.models.mlp([4, 3, 2], T=T, neuron="plif"))
    tw = twin()["build"](dict(name="resnet19", n_classes=10), T, o).state_dict()
    ref = ResNet19(T, 10).state_dict()
    thr = {k for k in tw if k.endswith(official.THRESHOLD_SUFFIX)}
    assert {k: tuple(v.shape) for k, v in tw.items() if k not in thr} == \
        {k: tuple(v.shape) for k, v in ref.items()}
    assert {k[:-len(official.THRESHOLD_SUFFIX)] for k in thr} == set(ResNet19(T, 10).neurons())


def test_the_docs_commands_and_code_run_in_order(tmp_path, monkeypatch, capsys):
    """Every block of docs/INTEROP.md, in order, in a fresh folder: the shell commands through
    the training command's entry point, the Python blocks in one namespace, the twin saved as
    the file the page names; the release's code is this file's ResNet19, and CIFAR-10 is four
    random 8x8 images. Not run: the block marked as needing CIFAR-10."""
    import types
    from dsatgo_np import train
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))             # torch_twin.py is saved there
    monkeypatch.delitem(sys.modules, "torch_twin", raising=False)
    monkeypatch.setenv("DSATGO_DATA", str(tmp_path / "data"))
    release = types.ModuleType("network_model.ResNet19")
    release.ResNet19 = ResNet19
    monkeypatch.setitem(sys.modules, "network_model", types.ModuleType("network_model"))
    monkeypatch.setitem(sys.modules, "network_model.ResNet19", release)
    load = dn.data.load
    monkeypatch.setattr(dn.data, "load", lambda name, split="train", **kw: (
        (images(3), np.arange(4)) if name == "cifar10" else load(name, split, **kw)))
    ns, accuracies, ran = {}, [], 0
    for marker, lang, code in doc_blocks():
        if marker and marker.startswith("not run by the tests"):
            continue
        if marker and marker.startswith("save as "):
            with open(marker[len("save as "):], "w") as f:
                f.write(code)
        elif lang == "python":
            exec(compile(code, DOC, "exec"), ns)
        else:
            for line in code.strip().splitlines():
                argv = line.split()
                assert argv[:3] == ["python", "-m", "dsatgo_np.train"], line
                assert train.main(argv[3:]) == 0, line
                out = capsys.readouterr().out
                if argv[3] == "evaluate":
                    accuracies += [float(a) for a in re.findall(r"test accuracy ([\d.]+) %", out)]
        ran += 1
    assert ran == len(doc_blocks()) - 1
    assert len(accuracies) == 3 and len(set(accuracies)) == 1 and accuracies[0] > 50
    assert abs(100 * ns["twin_acc"] - accuracies[0]) <= 100 / 360 + 1e-9   # at most one sample
    assert os.path.exists("release-firing.png")
    back = dn.load("runs/release.npz")
    state, thr = official.export_official(back)
    np.testing.assert_array_equal(state["fc.2.layer.weight"],
                                  ns["model"].state_dict()["fc.2.layer.weight"].numpy())
