"""dn.save / dn.load: every model of dn.models comes back with the same weights, BatchNorm
statistics and running thresholds, in eval mode, predicting bit for bit the same."""
import os

import numpy as np
import pytest

import dsatgo_np as dn

NETS = {
    "mlp": lambda **kw: dn.models.mlp([64, 24, 10], **kw),
    "cnn": lambda **kw: dn.models.cnn((1, 8, 8), (4, 6), 10, **kw),
    "vgg": lambda **kw: dn.models.vgg((3, 8, 8), (4, "P", 6), 10, hidden=(12,), pool="max", **kw),
    "sew_resnet": lambda **kw: dn.models.sew_resnet((3, 8, 8), 10, blocks=(1, 1, 1),
                                                    width_mult=1 / 16, head=64, **kw),
}
OPTIONS = {"mlp": dict(method="ds-atgo", neuron="plif"), "cnn": dict(method="at", T=3),
           "vgg": dict(method="tgo", width="std", f_c=0.8), "sew_resnet": dict(method="ds-atgo", T=2)}


def trained(name, rng):
    """The network after two SGD steps, so that running statistics and thresholds have moved
    away from their initial values."""
    net = NETS[name](seed=3, **OPTIONS[name])
    shape = (16,) + ((64,) if name == "mlp" else tuple(net.spec["in_shape"]))
    opt = dn.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        x = rng.standard_normal(shape).astype(np.float32)
        y = rng.integers(0, 10, 16)
        out = net.forward(dn.encode.direct(x, net.T))
        _, dout = dn.losses.cross_entropy(out, y)
        net.zero_grad()
        net.backward(dout)
        opt.step()
    return net, rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("name", list(NETS))
def test_save_then_load_gives_the_same_network(tmp_path, name):
    net, x = trained(name, np.random.default_rng(0))
    path = tmp_path / f"{name}.npz"
    dn.save(net, path)
    back = dn.load(path)
    assert type(back) is type(net) and back.spec == net.spec and back.T == net.T
    assert back.training is False and all(not m.training for m in back.modules())
    want, got = net.state_dict(), back.state_dict()
    assert list(want) == list(got)
    moved = [k for k in want if "running" in k and not np.array_equal(want[k], NETS[name](
        seed=3, **OPTIONS[name]).state_dict()[k])]
    assert moved                                   # the round trip carries trained statistics
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    net.eval()
    np.testing.assert_array_equal(back.forward(dn.encode.direct(x, back.T)),
                                  net.forward(dn.encode.direct(x, net.T)))


def test_load_a_run_folder_gives_its_best_network_in_eval_mode(tmp_path):
    pytest.importorskip("sklearn")
    from dsatgo_np import train
    cfg = train.Config(dataset="digits", hidden=[32], epochs=2, batch_size=100, lr=0.1,
                       plots=False, out=str(tmp_path / "run"))
    summary = train.fit(cfg, verbose=False)
    net = dn.load(cfg.out)
    assert net.training is False
    x, y = dn.data.load("digits", "test")
    x = dn.data.normalize(x, "digits")
    pred = net.forward(dn.encode.direct(x, net.T)).mean(axis=0).argmax(axis=1)
    assert (pred == y).mean() == summary["best_test_acc"]
    # a checkpoint file works the same, and the training command's evaluate agrees
    assert dn.load(os.path.join(cfg.out, "best.npz")).state_dict().keys() == net.state_dict().keys()


def test_load_a_checkpoint_of_an_earlier_version(tmp_path):
    """Checkpoints written before the model recipe was stored: rebuilt from their config."""
    pytest.importorskip("sklearn")
    import dataclasses
    from dsatgo_np import checkpoint, train
    cfg = train.Config(dataset="digits", hidden=[16])
    net = train.build_model(cfg, (1, 8, 8), 10)
    path = tmp_path / "old.npz"
    checkpoint.save_checkpoint(path, net, None, dict(config=dataclasses.asdict(cfg),
                                                     in_shape=[1, 8, 8], n_classes=10))
    back = dn.load(path)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v)


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no best.npz or last.npz"):
        dn.load(tmp_path)
    with pytest.raises(TypeError, match="built by dn.models"):
        dn.save(dn.model.Sequential(dn.model.Linear(3, 2)), tmp_path / "x.npz")
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a dsatgo_np checkpoint"):
        dn.load(tmp_path / "foreign.npz")


def test_load_reads_every_format_the_project_writes(tmp_path):
    """A run folder, its .npz, and the .safetensors and .nir files `export` writes: dn.load
    reads each (by its first bytes, not its name)."""
    pytest.importorskip("sklearn")
    pytest.importorskip("safetensors")
    pytest.importorskip("nir")
    from dsatgo_np import train
    from dsatgo_np.interop import nirgraph
    cfg = train.Config(dataset="digits", hidden=[32], epochs=1, batch_size=100, lr=0.1,
                       plots=False, out=str(tmp_path / "run"))
    train.fit(cfg, verbose=False)
    for name in ("m.safetensors", "m.nir"):
        assert train.main(["export", cfg.out, str(tmp_path / name)]) == 0
    x, _ = dn.data.load("digits", "test")
    x = dn.encode.direct(dn.data.normalize(x[:50], "digits"), 4)
    want = dn.load(cfg.out).forward(x)
    np.testing.assert_array_equal(dn.load(tmp_path / "m.safetensors").forward(x), want)
    os.rename(tmp_path / "m.safetensors", tmp_path / "renamed.bin")           # any name
    np.testing.assert_array_equal(dn.load(tmp_path / "renamed.bin").forward(x), want)
    from_nir = dn.load(tmp_path / "m.nir")
    assert from_nir.training is False
    np.testing.assert_array_equal(from_nir.forward(x),
                                  nirgraph.load_file(str(tmp_path / "m.nir")).forward(x))
    _, meta = dn.files.load_with_meta(tmp_path / "m.nir")
    assert meta["config"]["dataset"] == "digits"


def test_a_file_that_is_no_model_is_never_called_a_file_to_delete(tmp_path):
    for name, content in (("text.npz", b"hello"), ("cut.npz", b"PK\x03\x04 cut short")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError) as e:
            dn.load(tmp_path / name)
        assert "delete" not in str(e.value) and name in str(e.value)
