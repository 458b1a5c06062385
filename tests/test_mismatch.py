"""The threshold-mismatch study: plain networks whose membrane scale is a knob, its runner, its
statistics, and the report section built from it (tiny settings on the offline digits set)."""
import math
import os

import numpy as np
import pytest

from dsatgo_np import diagnostics, encode, models
from dsatgo_np.model import BatchNorm, Linear
from digits_runs import load_experiment



# --- plain_mlp / plain_cnn -----------------------------------------------------------------------

def test_plain_mlp_knobs_set_bn_scale_and_weight_gain():
    base = models.plain_mlp(3, 16, T=2, in_features=20, seed=4)
    net = models.plain_mlp(3, 16, T=2, bn_scale=0.25, init_gain=3.0, in_features=20, seed=4)
    bns = [m for m in net.modules() if isinstance(m, BatchNorm)]
    assert len(bns) == 3 and all(np.all(b._params["weight"].data == 0.25) for b in bns)
    lin, lin0 = ([m for m in n.modules() if isinstance(m, Linear)] for n in (net, base))
    for a, b in zip(lin[:-1], lin0[:-1]):                    # the spiking layers: scaled
        np.testing.assert_allclose(a._params["weight"].data, 3.0 * b._params["weight"].data,
                                   rtol=2e-7)
    np.testing.assert_array_equal(lin[-1]._params["weight"].data,           # readout: not
                                  lin0[-1]._params["weight"].data)
    assert models.build(net.spec, T=2).spec == net.spec       # rebuilt from its spec


def test_plain_mlp_bn_scale_moves_the_potentials_and_only_the_fixed_threshold_feels_it():
    x = np.random.default_rng(0).standard_normal((200, 20)).astype("float32")
    stats = {}
    for method in ("vanilla", "ds-atgo"):
        for a in (0.25, 4.0):
            net = models.plain_mlp(2, 64, T=2, bn_scale=a, in_features=20, method=method)
            net.forward(encode.direct(x, 2))
            stats[method, a] = list(diagnostics.collect(net).values())[0]
    # H[1] = BN(x) ~ N(0, a^2) at the first step: its measured spread is a
    for a in (0.25, 4.0):
        assert abs(stats["vanilla", a]["std"][0] / a - 1) < 0.02
    assert stats["vanilla", 0.25]["firing_rate_mean"] < 0.01            # 4 sigma below V_th
    assert stats["vanilla", 4.0]["firing_rate_mean"] > 0.35             # 1/4 sigma
    for a in (0.25, 4.0):                                                 # Theorem 1 either way
        assert abs(stats["ds-atgo", a]["firing_rate_mean"] - diagnostics.THEOREM1_RATE) < 0.03


def test_plain_networks_without_batchnorm_and_mpd_agl():
    x = np.random.default_rng(1).standard_normal((8, 1, 8, 8)).astype("float32")
    for build in (lambda **k: models.plain_mlp(3, 16, T=2, in_features=64, **k),
                  lambda **k: models.plain_cnn(3, 4, in_shape=(1, 8, 8), T=2, **k)):
        net = build(bn=False, method="mpd-agl", init_gain=2.0)
        assert not any(isinstance(m, BatchNorm) for m in net.modules())
        out = net.forward(encode.direct(x, 2))
        assert out.shape == (2, 8, 10)
        for _, layer in diagnostics.spiking_layers(net):      # g = 1: k = 2 g V_th = 1 at t = 1
            assert float(layer.cache.k[0]) == pytest.approx(1.0)
        net.backward(np.ones_like(out))                        # trains without BatchNorm


@pytest.mark.parametrize("bad", [dict(depth=0), dict(depth=2.5), dict(bn_scale=0),
                                 dict(init_gain=-1)])
def test_plain_mlp_refuses_bad_knobs(bad):
    opts = dict(depth=2, bn_scale=1.0, init_gain=1.0, **{})
    opts.update(bad)
    with pytest.raises(ValueError, match="depth|bn_scale"):
        models.plain_mlp(opts.pop("depth"), 8, in_features=4, **opts)


# --- statistics ---------------------------------------------------------------------------------

def test_mean_ci_welch_and_holm_against_hand_values():
    pytest.importorskip("scipy")
    mm = load_experiment("mismatch")
    m, h = mm.mean_ci([1.0, 2.0, 3.0])             # t(0.975, df 2) = 4.302653, s = 1, n = 3
    assert m == 2.0 and h == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    # Welch with equal sizes and spreads: t = diff / sqrt(2 s^2 / n) = 3 / sqrt(2/3), df = 4
    d, p = mm.welch([4.0, 5.0, 6.0], [1.0, 2.0, 3.0])
    assert d == 3.0 and p == pytest.approx(0.0213, abs=2e-4)
    assert mm.welch([11.35] * 3, [11.35] * 3) == (0.0, 1.0)      # no spread, no difference
    assert mm.welch([90.0] * 3, [11.35] * 3)[1] == 0.0           # no spread, a difference
    assert mm.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert mm.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    adj = mm.holm([0.01, math.nan, 0.02])                 # NaN: no test, not in the family
    assert adj[0] == pytest.approx(0.02) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.02)
    assert math.isnan(mm.welch([1.0], [2.0, 3.0])[1])     # one seed: no test


# --- runner and report ---------------------------------------------------------------------------

def test_runner_and_report_section(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    pytest.importorskip("scipy")
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("DSATGO_DATA", str(tmp_path / "data"))
    mm, report = load_experiment("mismatch"), load_experiment("report")
    mr = load_experiment("mismatch_report")
    root = str(tmp_path / "runs")
    labels = [f"{m}_scale{a}" for m in ("vanilla", "at", "tgo", "ds-atgo") for a in ("0.25", "1")]
    assert mm.main(["mismatch-scale-mnist", "--smoke", "--root", root,
                    "--labels", ",".join(labels)]) == 0
    folder = os.path.join(root, "mismatch-scale-mnist")
    assert len(os.listdir(folder)) == len(labels) * 2              # smoke: two seeds
    runs = mr.load(root, "mismatch-scale-mnist")
    assert set(runs) == {("", a, m) for m in ("vanilla", "at", "tgo", "ds-atgo") for a in (0.25, 1.0)}
    # at scale 1/4 the fixed threshold's deepest layer is nearly silent, the adaptive one is not
    fr = {m: np.mean([mr.deepest(r, "init")["firing_rate_mean"] for r in runs["", 0.25, m]])
          for m in ("vanilla", "ds-atgo")}
    assert fr["vanilla"] < 0.02 < 0.1 < fr["ds-atgo"]

    out = tmp_path / "docs" / "R.md"
    out.parent.mkdir()
    out.write_text("# Results\n\nkept\n\n## Where the threshold mismatch appears\n\nold\n\n"
                   "## Later\n\nkept too\n")
    report.splice_section(str(out), report.MISMATCH_TEMPLATE, root, str(out.parent / "figures"))
    text = out.read_text()
    assert text.startswith("# Results\n\nkept\n") and text.rstrip().endswith("## Later\n\nkept too")
    assert "\nold\n" not in text and "{{" not in text
    assert "| 0.25 | " in text and "| vanilla" in text                 # tables of the scale runs
    assert os.path.exists(out.parent / "figures" / "mismatch-scale-mnist.png")
    assert "](figures/mismatch-scale-mnist.png)" in text
    report.splice_section(str(out), report.MISMATCH_TEMPLATE, root, str(out.parent / "figures"))
    assert out.read_text() == text                                     # idempotent


def test_run_py_dispatches_the_mismatch_experiments(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setenv("DSATGO_DATA", str(tmp_path / "data"))
    run = load_experiment("run")
    root = str(tmp_path / "runs")
    assert run.main(["mismatch-depth-mnist", "--smoke", "--root", root,
                     "--labels", "ds-atgo_depth2-nobn"]) == 0
    assert sorted(os.listdir(os.path.join(root, "mismatch-depth-mnist"))) == \
        ["ds-atgo_depth2-nobn-s0", "ds-atgo_depth2-nobn-s1"]
    with pytest.raises(SystemExit):                               # an unknown label is refused
        run.main(["mismatch-depth-mnist", "--smoke", "--root", root, "--labels", "nope"])


def test_cnn_runs_train_a_plain_cnn(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setenv("DSATGO_DATA", str(tmp_path / "data"))
    mm, mr = load_experiment("mismatch"), load_experiment("mismatch_report")
    root = str(tmp_path / "runs")
    assert mm.main(["mismatch-scale-cnn-mnist", "--smoke", "--root", root,
                    "--labels", "ds-atgo_scale0.25"]) == 0
    (row,) = mr.load(root, "mismatch-scale-cnn-mnist")[("", 0.25, "ds-atgo")][:1]
    assert len(row["diagnostics"]) == 4                            # 4 conv spiking layers
    assert abs(mr.deepest(row, "init")["firing_rate_mean"] - diagnostics.THEOREM1_RATE) < 0.05
