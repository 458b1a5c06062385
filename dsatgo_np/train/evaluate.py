"""Test accuracy: of a network in training (each epoch), and of a saved model file."""
from __future__ import annotations

from .. import data, encode
from ..backend import get_backend, to_numpy
from ..recipe import Config

def accuracy(net, x, y, T: int, xp, batch_size: int = 500) -> float:
    """Share of x [N, ...] whose time-averaged readout peaks at y [N], in eval mode."""
    was_training = net.training
    net.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        out = net.forward(encode.direct(xp.asarray(x[i:i + batch_size]), T))
        correct += int((to_numpy(out.mean(axis=0).argmax(axis=1)) == y[i:i + batch_size]).sum())
    net.train(was_training)
    return correct / len(y)


def evaluate(net, x, y, cfg: Config, xp, batch_size: int = 500) -> float:
    """Test accuracy in eval mode (running BN statistics and running thresholds); leaves the
    network in training mode."""
    acc = accuracy(net, x, y, cfg.T, xp, batch_size)
    net.train()
    return acc



def evaluate_checkpoint(path: str, data_dir: str = "", backend: str = "numpy",
                        dataset: str | None = None) -> dict:
    """Test accuracy of the network saved at ``path`` (a checkpoint, or a run folder's
    best.npz), on its run's data set (or ``dataset``)."""
    from .. import files
    net, meta = files.load_with_meta(path, backend)
    config = meta.get("config", {})
    dataset = dataset or config.get("dataset")
    if dataset is None:
        raise ValueError(f"{path} does not say which data set it was trained on: pass --dataset")
    acc = evaluate_net(net, dataset, data_dir or config.get("data_dir", ""), backend)
    return dict(test_acc=acc, recorded=meta.get("test_acc"), epoch=meta.get("epoch"))


def evaluate_net(net, dataset: str, data_dir: str = "", backend: str = "numpy",
                 T: int | None = None) -> float:
    """Test accuracy of ``net`` on ``dataset``'s normalised test split."""
    data.check_name(dataset)
    T = T or getattr(net, "T", None)
    if not T:
        raise ValueError("the network does not say its number of time steps: pass --T")
    xte, yte = data.load(dataset, "test", root=data_dir or None)
    xte = data.normalize(xte, dataset)
    return accuracy(net, xte, yte, T, get_backend(backend))
