"""NIR export and import: round trips for every method and model, a hand-written NIR simulator,
files, the checkpoint helpers, and (with Norse installed) Norse running the exported graphs."""
import dataclasses

import numpy as np
import pytest

nir = pytest.importorskip("nir")

import dsatgo_np as dn  # noqa: E402
from dsatgo_np import train  # noqa: E402
from dsatgo_np.checkpoint import save_checkpoint  # noqa: E402
from dsatgo_np.interop import nirgraph  # noqa: E402
from dsatgo_np.model import Spiking  # noqa: E402

METHODS = ("vanilla", "at", "tgo", "ds-atgo", "mpd-agl")
T = 3


def tiny(model, method="vanilla", neuron="lif", T=T, **kw):
    """A small network of `model` whose eval-mode state is far from its initial values."""
    if model == "mlp":
        net = dn.models.mlp([12, 10, 8, 3], T=T, method=method, neuron=neuron, **kw)
    elif model == "cnn":
        net = dn.models.cnn((1, 8, 8), (3, 4), 3, T=T, method=method, neuron=neuron, **kw)
    else:
        net = dn.models.vgg((2, 8, 8), (3, "P", 4, "P"), 3, hidden=(6,), T=T, method=method,
                            neuron=neuron, **kw)
    rng = np.random.default_rng(7)
    state = net.state_dict()
    for k, v in state.items():
        if k.endswith("running_mean"):
            state[k] = rng.normal(0.0, 0.3, v.shape)
        elif k.endswith("running_var"):
            state[k] = rng.uniform(0.5, 2.0, v.shape)
        elif k.endswith("running_threshold"):          # a different R[t] at every step
            state[k] = rng.uniform(0.6, 1.4, v.shape)
        elif k.endswith(".w"):                         # PLIF: a trained decay, not 0.2
            state[k] = rng.normal(-1.0, 0.5, v.shape)
        elif v.ndim == 1 and k.endswith("weight"):     # BatchNorm scale
            state[k] = rng.uniform(1.0, 3.0, v.shape)
        elif v.ndim == 1 and not k.startswith(f"{len(net) - 1}."):   # BatchNorm shift
            state[k] = rng.normal(0.5, 0.5, v.shape)
    net.load_state_dict({k: np.asarray(v, np.float32) for k, v in state.items()})
    return net.eval()


def inputs(net, batch=4, seed=0):
    shape = tuple(net.spec.get("in_shape") or [net.spec["sizes"][0]])
    x = np.random.default_rng(seed).normal(0, 1, (batch,) + shape).astype(np.float32)
    return dn.encode.direct(x, net.T)


def run(net, X):
    """(output [T, B, K], [spikes [T, B, ...] of every spiking layer])."""
    spikes = [m for m in net.modules() if isinstance(m, Spiking)]
    for m in spikes:
        m.record = True
    out = net.forward(X)
    return out, [m.cache.S.copy() for m in spikes]


def flat_threshold_copy(net, choice):
    """The network with each layer's running thresholds replaced by the one exported value:
    what the graph must compute, by the method's own forward pass."""
    state = net.state_dict()
    for k, v in state.items():
        if k.endswith("running_threshold") and net.config.adaptive:
            one = v.astype(np.float64).mean() if choice == "mean" else v[0]
            state[k] = np.full_like(v, np.float32(one))
    ref = dn.models.build(net.spec, **{f.name: getattr(net.config, f.name)
                                       for f in dataclasses.fields(net.config)},
                          T=net.T, neuron=next(m for m in net if isinstance(m, Spiking)).neuron)
    return ref.load_state_dict(state).eval()


# --- round trips ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["mlp", "cnn", "vgg"])
@pytest.mark.parametrize("method", METHODS)
def test_round_trip_fires_the_same_spikes_and_outputs(model, method):
    neuron = "plif" if method in ("at", "tgo") else "lif"
    net = tiny(model, method, neuron)
    X = inputs(net)
    for choice in nirgraph.THRESHOLD_CHOICES:
        graph = nirgraph.to_nir(net, threshold=choice)
        back = nirgraph.from_nir(graph)
        out, spikes = run(flat_threshold_copy(net, choice), X)
        out2, spikes2 = run(back, X)
        assert 0.02 < np.mean([s.mean() for s in spikes]) < 0.9       # the layers do fire
        for s, s2 in zip(spikes, spikes2, strict=True):
            np.testing.assert_array_equal(s, s2)
        # identical spikes into the same readout weights: the same bits
        np.testing.assert_array_equal(out, out2)
        assert graph.metadata["exact"] == (method not in ("at", "ds-atgo"))


@pytest.mark.parametrize("model", ["mlp", "vgg"])
def test_graph_is_a_fixed_point_of_from_nir_then_to_nir(model):
    net = tiny(model, "ds-atgo", "plif")
    for fold_r in (False, True):
        g = nirgraph.to_nir(net, fold_r=fold_r)
        g2 = nirgraph.to_nir(nirgraph.from_nir(g), fold_r=fold_r)
        assert list(g.nodes) == list(g2.nodes) and g.edges == g2.edges
        for name, node in g.nodes.items():
            for field in ("weight", "bias", "tau", "r", "v_leak", "v_threshold", "v_reset"):
                if hasattr(node, field):
                    a, b = getattr(node, field), getattr(g2.nodes[name], field)
                    if fold_r and field in ("weight", "bias"):
                        # W (1 - lam) / (1 - lam) rounds twice in float32: one ulp at most
                        np.testing.assert_array_max_ulp(a, b, maxulp=1)
                    else:
                        np.testing.assert_array_equal(a, b)


def test_exported_lif_reproduces_the_euler_step():
    net = tiny("mlp", "vanilla", "plif")
    dt = 5e-4
    g = nirgraph.to_nir(net, dt=dt, fold_r=False)
    lam = [float(m.decay(np, np.float32)) for m in net if isinstance(m, Spiking)]
    for name, lam_l in zip(["lif1", "lif2"], lam, strict=True):
        node = g.nodes[name]
        # Euler: v + dt/tau (v_leak - v + r I) = lam v + I exactly when these hold
        np.testing.assert_allclose(1 - dt / node.tau, lam_l, rtol=1e-15)
        np.testing.assert_allclose(dt / node.tau * node.r, 1.0, rtol=1e-15)
        assert np.all(node.v_leak == 0) and np.all(node.v_reset == 0)
    assert abs(lam[0] - 0.2) > 1e-3                          # PLIF's trained decay, per layer
    # fold_r=True: r = 1, the 1 / (1 - lam) sits in the weights before the LIF
    g1 = nirgraph.to_nir(net, dt=dt)
    np.testing.assert_array_equal(g1.nodes["lif1"].r, 1.0)
    np.testing.assert_allclose(g1.nodes["fc1"].weight, g.nodes["fc1"].weight / (1 - lam[0]),
                               rtol=1e-6)


def test_threshold_choices_are_the_mean_and_the_first_running_threshold():
    net = tiny("mlp", "at")
    R = net.state_dict()["3.running_threshold"]                      # first spiking layer
    assert len(set(R.tolist())) == T
    for choice, expected in (("mean", R.astype(np.float64).mean()), ("first", R[0])):
        g = nirgraph.to_nir(net, threshold=choice)
        np.testing.assert_array_equal(g.nodes["lif1"].v_threshold, np.float32(expected))
        np.testing.assert_array_equal(g.metadata["running_thresholds"]["lif1"], R)
    with pytest.raises(ValueError, match="threshold choice"):
        nirgraph.to_nir(net, threshold="median")


def test_estimated_threshold_exports_exactly():
    net = tiny("mlp", "ds-atgo", threshold="estimated")
    g = nirgraph.to_nir(net)
    assert g.metadata["exact"]
    np.testing.assert_allclose(g.nodes["lif1"].v_threshold, np.sqrt(1 + 0.2 ** 2), rtol=1e-6)
    out, _ = run(net, inputs(net))
    np.testing.assert_array_equal(out, run(nirgraph.from_nir(g), inputs(net))[0])


def test_from_nir_leaves_the_weights_generator_as_it_was():
    g = nirgraph.to_nir(tiny("mlp", "ds-atgo"))
    dn.manual_seed(3)
    expected = dn.model.Linear(5, 4).parameters()[0].data
    dn.manual_seed(3)
    nirgraph.from_nir(g)
    np.testing.assert_array_equal(dn.model.Linear(5, 4).parameters()[0].data, expected)


# --- files and the command-line helpers -----------------------------------------------------------

def test_written_file_reads_back_with_its_metadata(tmp_path):
    net = tiny("cnn", "ds-atgo")
    path = tmp_path / "cnn.nir"
    nir.write(path, nirgraph.to_nir(net))
    back = nirgraph.load_file(str(path))
    meta = back.metadata
    assert (int(meta["T"]), float(meta["dt"]), str(meta["method"])) == (T, 1e-3, "ds-atgo")
    np.testing.assert_array_equal(meta["running_thresholds"]["lif2"],
                                  net.state_dict()["6.running_threshold"])
    X = inputs(net)
    np.testing.assert_array_equal(run(back, X)[0], run(flat_threshold_copy(net, "mean"), X)[0])


def test_cli_export_and_load_file(tmp_path):
    ref = tiny("mlp", "at")
    cfg = train.Config(dataset="digits", hidden=[10, 8], T=T, method="at")
    net = train.build_model(cfg, (12,), 3).load_state_dict(ref.state_dict())
    ckpt, dst = tmp_path / "run" / "best.npz", tmp_path / "model.nir"
    meta = dict(config=dataclasses.asdict(cfg), in_shape=[12], n_classes=3, test_acc=0.5)
    save_checkpoint(ckpt, net, None, meta)
    nirgraph.cli_export(str(tmp_path / "run"), str(dst))          # a run folder: its best.npz
    back = nirgraph.load_file(str(dst))
    assert str(back.metadata["dataset"]) == "digits"
    X = inputs(ref)
    expected = run(flat_threshold_copy(ref, "mean"), X)[0]
    np.testing.assert_array_equal(run(back, X)[0], expected)
    # like models.mlp, it flattens image-shaped input [T, B, 3, 4] itself
    np.testing.assert_array_equal(run(back, X.reshape(X.shape[:2] + (3, 4)))[0], expected)
    with pytest.raises(FileNotFoundError, match="no NIR file"):
        nirgraph.load_file(str(tmp_path / "missing.nir"))
    with pytest.raises(ValueError, match="not a readable NIR file"):
        nirgraph.load_file(str(ckpt))


def test_clear_errors_for_what_nir_cannot_express():
    with pytest.raises(ValueError, match="residual"):
        nirgraph.to_nir(dn.models.sew_resnet((3, 8, 8), 3, blocks=(1, 1, 1),
                                             width_mult=1 / 32, head=4).eval())
    with pytest.raises(ValueError, match="max-pooling"):
        nirgraph.to_nir(dn.models.vgg((1, 4, 4), (2, "P"), 3, pool="max").eval())
    graph = nir.NIRGraph.from_list(nir.Input(input_type=np.array([3])),
                                   nir.CubaLI(tau_syn=np.ones(3), tau_mem=np.ones(3),
                                              r=np.ones(3), v_leak=np.zeros(3)),
                                   nir.Output(output_type=np.array([3])))
    with pytest.raises(ValueError, match="cannot read node"):
        nirgraph.from_nir(graph, T=2)
    g = nirgraph.to_nir(tiny("mlp"))
    with pytest.raises(ValueError, match="time steps T"):
        nirgraph.from_nir(nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata={}))
    g.edges.append(("fc1", "fc3"))
    with pytest.raises(ValueError, match="branch"):
        nirgraph.from_nir(g)


# --- from_nir on a graph written elsewhere, against NIR's equations by hand -------------------

def nir_euler(graph_nodes, x, T, dt):
    """Hand simulation of Input -> Affine -> LIF -> SumPool-free Affine -> IF -> Affine, in
    float64: v += dt/tau (v_leak - v + r I) (LIF), v += r I (IF); fire at v > theta; v = 0."""
    fc1, lif, fc2, if_, fc3 = graph_nodes
    v1, v2, outs = np.zeros(lif.tau.shape), np.zeros(if_.r.shape), []
    for _ in range(T):
        i1 = x @ fc1.weight.T + fc1.bias
        v1 = v1 + dt / lif.tau * (lif.v_leak - v1 + lif.r * i1)
        s1 = (v1 > lif.v_threshold).astype(float)
        v1 = v1 * (1 - s1)
        v2 = v2 + if_.r * (s1 @ fc2.weight.T + fc2.bias)
        s2 = (v2 > if_.v_threshold).astype(float)
        v2 = v2 * (1 - s2)
        outs.append(s2 @ fc3.weight.T + fc3.bias)
    return np.stack(outs)                                          # (T, B, K)


def test_from_nir_runs_a_foreign_graph_as_nir_defines_it():
    rng = np.random.default_rng(3)
    n0, n1, n2, k, dt, steps = 6, 7, 5, 3, 1e-3, 5
    fc1 = nir.Affine(weight=rng.normal(0, 1, (n1, n0)), bias=rng.normal(0.2, 0.3, n1))
    lif = nir.LIF(tau=np.full(n1, 4e-3), r=rng.uniform(0.5, 2, n1),
                  v_leak=rng.normal(0, 0.2, n1), v_threshold=rng.uniform(0.2, 0.8, n1),
                  v_reset=np.zeros(n1))
    fc2 = nir.Affine(weight=rng.normal(0, 1, (n2, n1)), bias=rng.normal(0, 0.3, n2))
    if_ = nir.IF(r=rng.uniform(0.5, 1.5, n2), v_threshold=rng.uniform(0.5, 1.5, n2),
                 v_reset=np.zeros(n2))
    fc3 = nir.Affine(weight=rng.normal(0, 1, (k, n2)), bias=rng.normal(0, 1, k))
    nodes = [fc1, lif, fc2, if_, fc3]
    graph = nir.NIRGraph.from_list(nir.Input(input_type=np.array([n0])), *nodes,
                                   nir.Output(output_type=np.array([k])))
    x = rng.normal(0, 1, (16, n0))
    net = nirgraph.from_nir(graph, T=steps, dt=dt, dtype="float64")
    out, spikes = run(net, dn.encode.direct(x, steps))
    assert 0.05 < spikes[0].mean() < 0.95 and 0.05 < spikes[1].mean() < 0.95
    np.testing.assert_allclose(out, nir_euler(nodes, x, steps, dt), rtol=1e-12, atol=1e-12)


def test_from_nir_reads_sum_pooling_as_average_pooling_times_k2():
    net = tiny("cnn")
    X = inputs(net)
    back = nirgraph.from_nir(nirgraph.to_nir(net, pool="sum"))
    np.testing.assert_array_equal(run(back, X)[0], run(net, X)[0])


# --- Norse --------------------------------------------------------------------------------------

def norse_steps(graph, X, path, unbatched=False):
    """Write the graph, read it back, run it in Norse one step at a time: (T, B, K)."""
    torch = pytest.importorskip("torch")
    norse = pytest.importorskip("norse.torch")
    nir.write(path, graph)
    module = norse.from_nir(nir.read(path))
    samples = [X[:, i:i + 1] for i in range(X.shape[1])] if unbatched else [X]
    outs = []
    with torch.no_grad():
        for xs in samples:
            state, steps = None, []
            for t in range(X.shape[0]):
                x = torch.from_numpy(np.array(xs[t][0] if unbatched else xs[t]))
                y, state = module(x, state)
                steps.append(y.numpy().reshape(len(xs[t]), -1))
            outs.append(np.stack(steps))                            # (T, b, K)
    return np.concatenate(outs, axis=1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("method,neuron", [("vanilla", "lif"), ("vanilla", "plif"),
                                           ("mpd-agl", "lif")])
def test_norse_runs_the_exported_mlp_step_by_step(tmp_path, method, neuron):
    net = tiny("mlp", method, neuron)
    X = inputs(net, batch=8)
    ours = run(net, X)[0]
    theirs = norse_steps(nirgraph.to_nir(net), X, tmp_path / "mlp.nir")
    # a readout sums 8 spikes x weights in float32: ~8 eps of its scale, far below 1e-5
    assert np.abs(theirs - ours).max() < 1e-5 * np.abs(ours).max()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("model,neuron", [("cnn", "lif"), ("vgg", "plif")])
def test_norse_runs_the_exported_cnn_with_sum_pooling(tmp_path, model, neuron):
    # Norse 1.1.0 maps no nir.AvgPool2d (its importer fails), so pool="sum"; its Flatten takes
    # NIR's batch-free start_dim=0 literally, so it runs one sample at a time ([C, H, W]).
    net = tiny(model, "vanilla", neuron)
    X = inputs(net, batch=3)
    ours = run(net, X)[0]
    theirs = norse_steps(nirgraph.to_nir(net, pool="sum"), X, tmp_path / f"{model}.nir",
                         unbatched=True)
    assert np.abs(theirs - ours).max() < 1e-5 * np.abs(ours).max()
