"""Diagnostics on hand-made caches (exact values), on a real tiny network, and the plots."""
import json
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import dsatgo_np as dn
from dsatgo_np import diagnostics as dg
from dsatgo_np.model import Sequential, Spiking
from dsatgo_np.core.neuron import LIFCache


def make_cache(H, theta, k):
    """A LIFCache with S = Heaviside(H - theta[t]) and the given per-step theta, k."""
    H = np.asarray(H, dtype=np.float32)
    theta = np.asarray(theta, dtype=np.float32)
    k = np.asarray(k, dtype=np.float32)
    T = H.shape[0]
    S = (H >= theta.reshape((T,) + (1,) * (H.ndim - 1))).astype(np.float32)
    nan = np.full(T, np.nan, dtype=np.float32)
    return LIFCache(H, S, np.float32(0.2), theta, k, nan, nan, 1.0, False, False)


# H: (T=2, B=2, N=3)
H_HAND = [[[0.0, 1.0, 2.0], [0.5, 1.25, -1.0]],
          [[0.5, 0.0, 3.0], [-1.0, 1.0, 1.5]]]
THETA_HAND, K_HAND = [1.0, 0.5], [1.0, 2.0]


def test_step_summary_hand_made():
    st_ = dg.step_summary(make_cache(H_HAND, THETA_HAND, K_HAND))
    # t=0: H >= 1 at 1.0, 2.0, 1.25 -> 3/6; window |H - 1| < 0.5 holds for 1.0, 1.25 only
    # (0.5 and 1.5 sit on the open boundary and do not count)
    # t=1: H >= 0.5 at 0.5, 3.0, 1.0, 1.5 -> 4/6; |H - 0.5| < 1 for 0.5, 0.0, 1.0 (1.5 on the edge)
    np.testing.assert_allclose(st_["firing_rate"], [3 / 6, 4 / 6])
    np.testing.assert_allclose(st_["grad_share"], [2 / 6, 3 / 6])
    np.testing.assert_allclose(st_["mean"], [3.75 / 6, 5.0 / 6])
    h0 = np.array(H_HAND[0]).ravel()
    np.testing.assert_allclose(st_["std"][0], np.sqrt(((h0 - h0.mean()) ** 2).sum() / 5))
    np.testing.assert_allclose(st_["std"], [np.std(np.array(h).ravel(), ddof=1) for h in H_HAND])
    np.testing.assert_allclose(st_["theta"], THETA_HAND)
    np.testing.assert_allclose(st_["k"], K_HAND)
    assert st_["firing_rate_mean"] == pytest.approx((3 / 6 + 4 / 6) / 2)
    assert st_["grad_share_mean"] == pytest.approx((2 / 6 + 3 / 6) / 2)
    assert st_["n"] == 6
    assert all(st_[key].dtype == np.float64 and st_[key].shape == (2,) for key in dg.PER_STEP)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(2, 5), st.integers(0, 10 ** 6))
def test_grad_share_matches_elementwise_count(T, n, seed):
    rng = np.random.default_rng(seed)
    H = rng.standard_normal((T, 3, n))
    theta, k = rng.uniform(0, 1.5, T), rng.uniform(0.2, 2, T)
    got = dg.step_summary(make_cache(H, theta, k))["grad_share"]
    H32, th32, k32 = H.astype(np.float32), theta.astype(np.float32), k.astype(np.float32)
    want = [sum(abs(h - th32[t]) < k32[t] / 2 for h in H32[t].ravel()) / H[t].size
            for t in range(T)]
    np.testing.assert_allclose(got, want)


def net_with(cache):
    layer = Spiking(T=cache.H.shape[0], dtype="float32")
    layer.cache = cache
    return Sequential(layer), layer


def test_recorder_averages_two_updates_weighted_by_batch():
    a = make_cache(H_HAND, THETA_HAND, K_HAND)
    rng = np.random.default_rng(0)
    b = make_cache(rng.standard_normal((2, 4, 3)), [0.2, 0.9], [1.5, 0.5])      # n = 12, twice a's
    net, layer = net_with(a)
    rec = dg.Recorder()
    rec.update(net)
    layer.cache = b
    rec.update(net)
    sa, sb = dg.step_summary(a), dg.step_summary(b)
    summary = rec.summary()
    assert list(summary) == ["spike 1"] and summary["spike 1"]["batches"] == 2
    for key in dg.PER_STEP:
        np.testing.assert_allclose(summary["spike 1"][key], (6 * sa[key] + 12 * sb[key]) / 18)
    want = np.mean((6 * sa["firing_rate"] + 12 * sb["firing_rate"]) / 18)
    assert summary["spike 1"]["firing_rate_mean"] == pytest.approx(want)
    assert json.loads(json.dumps(summary)) == summary                 # plain floats and lists
    assert rec.means()["firing_rate"] == pytest.approx(summary["spike 1"]["firing_rate_mean"])
    rec.reset()
    assert rec.summary() == {}


def test_recorder_equal_batches_is_plain_mean():
    a = make_cache(H_HAND, THETA_HAND, K_HAND)
    b = make_cache(np.array(H_HAND) * 2 - 0.5, [0.0, 1.0], [0.5, 1.0])
    net, layer = net_with(a)
    rec = dg.Recorder()
    rec.update(net)
    layer.cache = b
    rec.update(net)
    got = rec.summary()["spike 1"]
    sa, sb = dg.step_summary(a), dg.step_summary(b)
    for key in dg.PER_STEP:
        np.testing.assert_allclose(got[key], (sa[key] + sb[key]) / 2)


def test_collect_on_a_real_mlp_and_the_eval_mode_error():
    x = np.random.default_rng(1).standard_normal((16, 20)).astype(np.float32)
    net = dn.models.mlp([20, 32, 24, 5], T=3, method="ds-atgo")
    net.forward(dn.encode.direct(x, 3))
    stats = dg.collect(net)
    names = ["spike 1 (fc 20-32)", "spike 2 (fc 32-24)"]
    assert list(stats) == [name for name, _ in dg.spiking_layers(net)] == names
    for s in stats.values():
        assert s["firing_rate"].shape == (3,)
        assert np.all((s["firing_rate"] >= 0) & (s["firing_rate"] <= 1))
        assert np.all((s["grad_share"] >= 0) & (s["grad_share"] <= 1))
    means = dg.network_means(stats)
    rates = [s["firing_rate_mean"] for s in stats.values()]
    assert means["firing_rate"] == pytest.approx(np.mean(rates))
    assert np.isnan(dg.network_means({})["firing_rate"])

    net.eval()
    net.forward(dn.encode.direct(x, 3))
    with pytest.raises(RuntimeError, match="record=True"):
        dg.collect(net)
    dg.record(net)
    net.forward(dn.encode.direct(x, 3))
    assert list(dg.collect(net)) == names
    dg.record(net, on=False)
    assert all(not layer.record for _, layer in dg.spiking_layers(net))


def test_layer_names_say_what_feeds_each_spiking_layer():
    net = dn.models.sew_resnet(in_shape=(3, 8, 8), blocks=(1, 1), channels=(4, 8), head=8, T=2)
    names = dg.layer_names(net)
    assert names == {
        "2": "spike 1 (conv 3-4)",
        "3.main.2": "spike 2 (block 1.main, conv 4-4)",
        "3.main.5": "spike 3 (block 1.main, conv 4-4)",
        "4.main.2": "spike 4 (block 2.main, conv 4-8 stride 2)",
        "4.main.5": "spike 5 (block 2.main, conv 8-8)",
        "4.shortcut.2": "spike 6 (block 2.shortcut, conv 4-8 1x1 stride 2)",
        "8": "spike 7 (fc 8-8)",
    }
    # every path leads to a Spiking module, and spiking_layers pairs each name with it
    found = dict(dg.spiking_layers(net))
    for path, name in names.items():
        holder, key = net._locate(path)
        assert found[name] is holder._children[key]
    assert dg.layer_names(dn.models.cnn(channels=(8, 16))) == {
        "2": "spike 1 (conv 1-8)", "6": "spike 2 (conv 8-16)"}
    assert dg.layer_names(Sequential(Spiking(T=2))) == {"0": "spike 1"}   # nothing feeds it


def test_histograms_count_every_entry_and_keep_the_window_in_range():
    net, _ = net_with(make_cache(H_HAND, THETA_HAND, K_HAND))
    h = dg.histograms(net, bins=10)["spike 1"]
    assert h["edges"].shape == (11,) and h["counts"].shape == (2, 10)
    np.testing.assert_array_equal(h["counts"].sum(axis=1), [6, 6])
    np.testing.assert_allclose(h["theta"], THETA_HAND)
    assert h["edges"][0] <= min(t - k / 2 for t, k in zip(THETA_HAND, K_HAND))
    assert h["edges"][-1] >= max(t + k / 2 for t, k in zip(THETA_HAND, K_HAND))


@pytest.mark.parametrize("s, fixed, dynamic", [(0.5, 47.72, 26.00), (1.0, 24.17, 24.17),
                                               (2.0, 12.10, 21.30)])
def test_gaussian_window_share_reproduces_method_table(s, fixed, dynamic):
    """docs/METHOD.md section 7 (paper Fig. 5): theta = s, k = 1 or k = 1 + tanh(s - 1)."""
    assert 100 * dg.gaussian_window_share(s, 1.0, s) == pytest.approx(fixed, abs=0.01)
    k = float(dn.surrogate.dynamic_width(s))
    assert 100 * dg.gaussian_window_share(s, k, s) == pytest.approx(dynamic, abs=0.01)


def test_gaussian_window_share_matches_sampling():
    rng = np.random.default_rng(0)
    h = rng.normal(0.3, 1.7, 400_000)
    want = np.mean(np.abs(h - 1.1) < 0.4)
    assert dg.gaussian_window_share(1.7, 0.8, 1.1, mu=0.3) == pytest.approx(want, abs=3e-3)


# --- plots -------------------------------------------------------------------------------------

def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_data():
    """Summaries of two methods and histograms of a tiny MLP after three batches."""
    rng = np.random.default_rng(0)
    summaries, hists = {}, None
    for method in ("vanilla", "ds-atgo"):
        net = dn.models.mlp([16, 24, 24, 4], T=3, method=method)
        rec = dg.Recorder()
        for _ in range(3):
            net.forward(dn.encode.direct(rng.standard_normal((8, 16)).astype(np.float32), 3))
            rec.update(net)
        summaries[method] = rec.summary()
        hists = dg.histograms(net, bins=20)
    return summaries, hists


def test_each_plot_writes_a_png(tmp_path, run_data):
    plots = pytest.importorskip("dsatgo_np.diagnostics.plots")
    from dsatgo_np.diagnostics import curves
    pytest.importorskip("matplotlib")
    summaries, hists = run_data
    paths = [
        plots.plot_firing_rates(summaries, tmp_path / "fr.png"),
        plots.plot_firing_rates_per_step(summaries["ds-atgo"], tmp_path / "frt.png"),
        plots.plot_grad_share(summaries, tmp_path / "gs.png"),
        plots.plot_membrane_histograms(hists, tmp_path / "hist.png"),
        plots.plot_membrane_steps(hists, tmp_path / "steps.png"),
        plots.plot_window_share(tmp_path / "ws.png"),
        curves.plot_training_curves([{"epoch": 1, "train_loss": 2.0, "train_acc": 0.3},
                                    {"epoch": 2, "train_loss": 1.0, "train_acc": 0.6,
                                     "test_acc": 0.5, "firing_rate": 0.16}],
                                   tmp_path / "curves.png"),
    ]
    for p in paths:
        assert is_png(p)


def one_epoch_with_batches(n=50):
    """A metrics row as the training command writes it, with its per-batch points."""
    steps = list(range(1, n + 1))                     # batches trained so far
    loss = [2.0 - 1.5 * i / n for i in steps]
    return {"epoch": 1, "train_loss": 1.2, "train_acc": 0.6, "test_acc": 0.7, "firing_rate": 0.16,
            "steps_per_epoch": n,
            "batches": {"step": steps, "loss": loss, "accuracy": [0.1 + 0.8 * i / n for i in steps]}}


def labelled(ax, start):
    """The one line of ax whose label starts with start."""
    (line,) = [x for x in ax.lines if x.get_label().startswith(start)]
    return line


def test_one_epoch_draws_a_curve_over_its_batches():
    pytest.importorskip("dsatgo_np.diagnostics.plots")
    from dsatgo_np.diagnostics import curves
    pytest.importorskip("matplotlib")
    row = one_epoch_with_batches(50)
    loss_ax, acc_ax, rate_ax = training_axes = curves.training_curves_figure([row]).axes
    raw, smooth = loss_ax.lines[:2]                  # faint per-batch values, then their mean
    np.testing.assert_array_equal(raw.get_xdata(), row["batches"]["step"])
    np.testing.assert_allclose(raw.get_ydata(), row["batches"]["loss"])
    n = 50 // 40                                     # running mean over this many batches
    want = [np.mean(row["batches"]["loss"][max(0, i + 1 - n):i + 1]) for i in range(50)]
    np.testing.assert_allclose(smooth.get_ydata(), want)
    np.testing.assert_allclose(acc_ax.lines[0].get_ydata(),
                               [100 * a for a in row["batches"]["accuracy"]])   # in percent
    test_point = labelled(acc_ax, "test accuracy")   # at the end of the epoch
    assert list(test_point.get_xdata()) == [50] and list(test_point.get_ydata()) == [70.0]
    for ax in training_axes:                         # the whole epoch in view, not one point
        assert ax.get_xlim()[0] <= 0 and ax.get_xlim()[1] >= 50
    # logged every 4th batch, two epochs: the second epoch's test point at 2 * 50
    rows = [one_epoch_with_batches(), dict(one_epoch_with_batches(), epoch=2, test_acc=0.8)]
    for r in rows:
        r["batches"] = {k: v[3::4] for k, v in r["batches"].items()}
    rows[1]["batches"]["step"] = [50 + s for s in rows[1]["batches"]["step"]]
    acc_ax = curves.training_curves_figure(rows).axes[1]
    assert list(labelled(acc_ax, "test accuracy").get_xdata()) == [50, 100]
    assert list(labelled(acc_ax, "test accuracy").get_ydata()) == [70.0, 80.0]


def test_running_mean_of_the_batch_curve():
    pytest.importorskip("dsatgo_np.diagnostics.plots")
    from dsatgo_np.diagnostics import curves
    np.testing.assert_allclose(curves._smooth([1.0, 3.0, 5.0, 7.0], 2), [1.0, 2.0, 4.0, 6.0])


def test_epochs_without_batches_fall_back_to_epoch_points():
    pytest.importorskip("dsatgo_np.diagnostics.plots")
    from dsatgo_np.diagnostics import curves
    pytest.importorskip("matplotlib")
    rows = [{"epoch": 1, "train_loss": 2.0, "test_acc": 0.5},
            {"epoch": 2, "train_loss": 1.0, "test_acc": 0.6}]
    loss_ax, acc_ax = curves.training_curves_figure(rows).axes
    assert list(loss_ax.lines[0].get_xdata()) == [1, 2]
    assert list(acc_ax.lines[0].get_ydata()) == [50.0, 60.0]
    one = curves.training_curves_figure(rows[:1]).axes[0]
    lo, hi = one.get_xlim()
    assert lo <= 0.5 and hi >= 1.5                   # one epoch: a point in a readable range
    # a run resumed from an older log mixes rows with and without batches: epoch points
    mixed = [rows[0], dict(one_epoch_with_batches(), epoch=2)]
    assert curves._per_batch(mixed) is None


def test_lines_use_the_colour_blind_safe_palette_without_yellow(run_data):
    plots = pytest.importorskip("dsatgo_np.diagnostics.plots")
    colors = pytest.importorskip("matplotlib.colors")
    summary = {f"spike {i + 1}": st for i, st in
               enumerate(list(run_data[0]["ds-atgo"].values()) * 5)}      # 10 layers
    ax = plots.firing_rates_per_step_figure(summary).axes[0]
    layer_lines = [line for line in ax.lines if line.get_label().startswith("spike")]
    assert len(layer_lines) == 10
    styles = {(colors.to_hex(line.get_color()), line.get_linestyle()) for line in layer_lines}
    assert len(styles) == 10                         # every layer drawn differently
    assert all(c in [p.lower() for p in plots.PALETTE] for c, _ in styles)
    assert "#f0e442" not in {p.lower() for p in plots.PALETTE}     # Okabe-Ito's yellow


def test_plot_run_tolerates_missing_keys(tmp_path, run_data):
    pytest.importorskip("dsatgo_np.diagnostics.plots")
    from dsatgo_np.diagnostics import curves
    pytest.importorskip("matplotlib")
    summaries, _ = run_data
    rows = [{"epoch": 1, "train_loss": 1.5, "test_acc": 0.4},
            {"epoch": 2, "train_loss": 1.1, "diagnostics": summaries["ds-atgo"]}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = curves.plot_run(tmp_path)
    assert [p.split("/")[-1] for p in paths] == ["training_curves.png", "firing_rates.png",
                                                 "firing_rates_per_step.png", "grad_share.png"]
    assert all(is_png(p) for p in paths)

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "metrics.jsonl").write_text(json.dumps({"epoch": 1}) + "\n")
    assert curves.plot_run(bare) == []


def test_older_logs_get_readable_layer_names_from_the_saved_model(tmp_path, monkeypatch):
    pytest.importorskip("dsatgo_np.diagnostics.plots")
    from dsatgo_np.diagnostics import curves
    pytest.importorskip("matplotlib")
    net = dn.models.mlp([16, 24, 24, 4], T=3)
    old = {"3": {"firing_rate_mean": 0.1}, "6": {"firing_rate_mean": 0.2}}
    assert dg.rename_layers(old, net) == {"spike 1 (fc 16-24)": {"firing_rate_mean": 0.1},
                                          "spike 2 (fc 24-24)": {"firing_rate_mean": 0.2}}
    summary = {}                                     # what plot_run hands to the bar chart
    monkeypatch.setattr(curves, "plot_firing_rates",
                        lambda by_method, path: summary.update(by_method) or path)
    monkeypatch.setattr(curves, "plot_firing_rates_per_step", lambda s, path: path)
    monkeypatch.setattr(curves, "plot_grad_share", lambda s, path: path)
    monkeypatch.setattr(curves, "plot_training_curves", lambda rows, path: path)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "diagnostics": old}) + "\n")
    curves.plot_run(tmp_path)                         # no saved model: the logged names
    assert list(summary[tmp_path.name]) == ["3", "6"]
    dn.save(net, tmp_path / "best.npz")
    curves.plot_run(tmp_path)
    assert list(summary[tmp_path.name]) == ["spike 1 (fc 16-24)", "spike 2 (fc 24-24)"]


def test_plots_without_matplotlib_say_how_to_install(tmp_path, monkeypatch):
    from dsatgo_np.diagnostics import plots
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install dsatgo_np\[plot\]"):
        plots.plot_window_share(tmp_path / "ws.png")
