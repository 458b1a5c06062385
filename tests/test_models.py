"""The builders of dsatgo_np.models rebuild from their spec: what checkpoints store
(`net.spec` and the spiking options) gives back the same architecture and, with the same seed,
the same initial weights, for every builder that dn.load may meet."""
import numpy as np
import pytest

from dsatgo_np import models

# each builder with options that differ from its defaults, so that a spec entry that is lost
# or renamed shows as a different network
NETS = {
    "mlp": lambda **kw: models.mlp([20, 12, 9, 5], **kw),
    "cnn": lambda **kw: models.cnn((2, 8, 8), (3, 5), 7, **kw),
    "vgg": lambda **kw: models.vgg((3, 8, 8), (4, "P", 6, "P"), 6, hidden=(10,), pool="max", **kw),
    "sew_resnet": lambda **kw: models.sew_resnet((3, 8, 8), 4, blocks=(1, 2, 1),
                                                 channels=(32, 48, 64), width_mult=1 / 8,
                                                 head=24, **kw),
    "resnet19": lambda **kw: models.resnet19(n_classes=3, **kw),
    "plain_mlp": lambda **kw: models.plain_mlp(3, 11, bn_scale=0.5, init_gain=2.0,
                                               in_features=14, n_classes=4, **kw),
    "plain_mlp without BatchNorm": lambda **kw: models.plain_mlp(2, 6, bn=False,
                                                                 in_features=5, **kw),
    "plain_cnn": lambda **kw: models.plain_cnn(3, 5, in_shape=(2, 8, 8), bn_scale=0.25,
                                               init_gain=3.0, n_classes=6, **kw),
}
SPIKING = dict(T=3, method="tgo", neuron="plif", seed=7)


@pytest.mark.parametrize("name", NETS)
def test_a_network_rebuilds_from_its_spec(name):
    net = NETS[name](**SPIKING)
    again = models.build(net.spec, **SPIKING)
    assert again.spec == net.spec
    ours, theirs = dict(net.named_parameters()), dict(again.named_parameters())
    assert list(theirs) == list(ours)
    for key, p in ours.items():
        np.testing.assert_array_equal(theirs[key].data, p.data, err_msg=key)
    assert repr(again) == repr(net)


def test_build_names_the_builders_it_knows():
    with pytest.raises(ValueError, match="unknown model 'lenet': choose one of mlp, cnn, vgg, "
                                         "sew_resnet, plain_mlp, plain_cnn, resnet19"):
        models.build({"name": "lenet"})


@pytest.mark.parametrize("build, T", [(lambda: models.mlp([4, 3]), 4), (lambda: models.cnn(), 4),
                                      (lambda: models.vgg(), 4), (lambda: models.sew_resnet(), 2),
                                      (lambda: models.resnet19(), 2),
                                      (lambda: models.plain_mlp(2), 4),
                                      (lambda: models.plain_cnn(2), 4)])
def test_default_time_steps(build, T):
    """T = 4 for the MNIST-sized builders, T = 2 for the ResNets (the release's setting);
    docs/METHOD.md section 6."""
    net = build()
    assert net.T == T and all(m.T == T for m in net.modules() if hasattr(m, "config"))
