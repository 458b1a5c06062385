"""The four reference architectures at toy sizes, for tests that compare array modules."""
import dsatgo_np as dn


def build(name, method, neuron_kind="lif", dtype="float32", seed=1):
    """(network, input shape of one sample) for name in mlp, cnn, vgg, sew_resnet; T = 3."""
    kw = dict(T=3, method=method, neuron=neuron_kind, seed=seed, dtype=dtype)
    if name == "mlp":
        return dn.models.mlp([12, 10, 8, 3], **kw), (12,)
    if name == "cnn":
        return dn.models.cnn((1, 8, 8), (3, 4), 3, **kw), (1, 8, 8)
    if name == "vgg":
        return dn.models.vgg((2, 4, 4), (3, "P", 4), 3, hidden=(5,), pool="max", **kw), (2, 4, 4)
    net = dn.models.sew_resnet((2, 8, 8), 3, blocks=(1, 1), channels=(3, 5), head=6, **kw)
    return net, (2, 8, 8)
