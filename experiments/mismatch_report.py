"""The threshold-mismatch study's tables and figures for docs/RESULTS.md: the finished runs
of experiments/mismatch.py read back, averaged over seeds with confidence intervals, tested
(Welch's t-test, Holm's correction) and drawn. experiments/report.py calls render_directive
for each {{mismatch KIND ARG}} line of RESULTS.template.md."""
from __future__ import annotations

import json
import os
import warnings

import numpy as np

from mismatch import KNOBS, METHODS, REACH, holm, mean_ci, welch


ABLATION = ("vanilla", "at", "tgo", "ds-atgo")
AXIS = {"scale": "tdBN initial scale alpha", "gain": "initial weight gain (no BatchNorm)",
        "depth": "spiking layers", "T": "time steps T"}


def load(root, exp):
    """{(variant, value, method): [metrics row of each seed, seed order]} of exp's finished runs."""
    out = {}
    folder = os.path.join(root, exp)
    if not os.path.isdir(folder):
        return out
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        try:
            with open(os.path.join(path, "config.json")) as f:
                cfg = json.load(f)
            with open(os.path.join(path, "metrics.jsonl")) as f:
                row = json.loads(f.readline())
            with open(os.path.join(path, "machine.json")) as f:
                row["machine"] = json.load(f)
        except (OSError, ValueError):
            continue                                  # unfinished: left out
        row["seed"], row["dataset"] = cfg["seed"], cfg["dataset"]
        out.setdefault((cfg["variant"], cfg["value"], cfg["method"]), []).append(row)
    for rows in out.values():
        rows.sort(key=lambda r: r["seed"])
    return out


def _variants(runs):
    return sorted({v for v, _, _ in runs}, key=lambda v: (v != "bn", v))


def _values(runs, variant):
    return sorted({x for v, x, _ in runs if v == variant})


def _methods(runs):
    return [m for m in METHODS if any(k[2] == m for k in runs)]


def deepest(row, when="diagnostics"):
    """The last spiking layer's entry of a row's diagnostics ("diagnostics": the last epoch's
    training batches; "init": the first batch, before any update)."""
    d = row[when]
    return d[list(d)[-1]]


def _acc(rows):
    return [100 * r["test_acc"] for r in rows]


def _cell(values, digits=1):
    m, h = mean_ci(values)
    return f"{m:.{digits}f}" if h != h else f"{m:.{digits}f} +- {h:.{digits}f}"


def _knob(v):
    return f"{v:g}"


def _name(knob, variant):
    return {"bn": " (tdBN)", "nobn": " (no BatchNorm)"}.get(variant, "")


def table_accuracy(runs, knob):
    """Test accuracy, mean +- 95 % t-interval half-width over seeds, per knob value and method."""
    methods = _methods(runs)
    lines = []
    for variant in _variants(runs):
        lines += [f"| {knob}{_name(knob, variant)} | " + " | ".join(methods) + " | seeds |",
                  "|---" * (len(methods) + 2) + "|"]
        for x in _values(runs, variant):
            cells = [_cell(_acc(runs[variant, x, m])) if (variant, x, m) in runs else ""
                     for m in methods]
            n = min(len(runs.get((variant, x, m), [])) for m in methods)
            lines.append(f"| {_knob(x)} | " + " | ".join(cells) + f" | {n} |")
        lines.append("")
    return "\n".join(lines).rstrip()


def table_deepest(runs, knob):
    """Deepest spiking layer: firing rate at the first batch -> after training, and the share
    inside the gradient window after training; means over seeds, in %."""
    methods = _methods(runs)
    lines = []
    for variant in _variants(runs):
        lines += [f"| {knob}{_name(knob, variant)} | sigma of H[1] at start, vanilla / ds-atgo | " +
                  " | ".join(f"{m} firing start -> end / window" for m in methods) + " |",
                  "|---" * (len(methods) + 2) + "|"]
        for x in _values(runs, variant):
            cells = []
            for m in methods:
                rows = runs.get((variant, x, m), [])
                if not rows:
                    cells.append("")
                    continue
                f0 = np.mean([100 * deepest(r, "init")["firing_rate_mean"] for r in rows])
                f1 = np.mean([100 * deepest(r)["firing_rate_mean"] for r in rows])
                g1 = np.mean([100 * deepest(r)["grad_share_mean"] for r in rows])
                cells.append(f"{f0:.1f} -> {f1:.1f} / {g1:.1f}")
            sd = [f"{np.mean([deepest(r, 'init')['std'][0] for r in runs[variant, x, m]]):.2f}"
                  if (variant, x, m) in runs else "-" for m in ("vanilla", "ds-atgo")]
            lines.append(f"| {_knob(x)} | {' / '.join(sd)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()


def table_reach(runs, knob):
    """Per method: the knob values where every seed reaches each level of REACH[dataset]."""
    methods = _methods(runs)
    dataset = next(iter(runs.values()))[0]["dataset"]
    levels = REACH.get(dataset, REACH["mnist"])
    lines = ["| method | " + " | ".join(f"{knob} values where every seed reaches "
                                         f"{100 * lv:.0f} % | range" for lv in levels) + " |",
             "|---" * (1 + 2 * len(levels)) + "|"]
    for variant in _variants(runs):
        for m in methods:
            cells = []
            for lv in levels:
                ok = [x for x in _values(runs, variant) if (variant, x, m) in runs
                      and min(r["test_acc"] for r in runs[variant, x, m]) >= lv]
                cells += [", ".join(map(_knob, ok)) or "-",
                          f"{_knob(min(ok))} .. {_knob(max(ok))}" if ok else "none"]
            lines.append(f"| {m}{_name(knob, variant)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_tests(runs, knob):
    """Every method against vanilla at every knob value: difference of mean accuracy (points),
    Welch's two-sided p, and Holm's adjustment over the whole table."""
    others = [m for m in _methods(runs) if m != "vanilla"]
    entries = []
    for variant in _variants(runs):
        for x in _values(runs, variant):
            if (variant, x, "vanilla") not in runs:
                continue
            for m in others:
                if (variant, x, m) in runs:
                    d, p = welch(_acc(runs[variant, x, m]), _acc(runs[variant, x, "vanilla"]))
                    entries.append((variant, x, m, d, p))
    if not entries:
        return "(no runs yet)"
    adj = holm([e[4] for e in entries])
    cells = {(v, x, m): f"{d:+.1f} (p {_p(p)}; Holm {_p(a)})"
             for (v, x, m, d, p), a in zip(entries, adj)}
    lines = []
    for variant in _variants(runs):
        lines += [f"| {knob}{_name(knob, variant)} | " + " | ".join(f"{m} - vanilla" for m in others)
                  + " |", "|---" * (len(others) + 1) + "|"]
        for x in _values(runs, variant):
            lines.append(f"| {_knob(x)} | " + " | ".join(cells.get((variant, x, m), "")
                                                      for m in others) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()


def _p(p):
    if p != p:
        return "n/a"
    return "< 1e-4" if p < 1e-4 else f"{p:.2g}"


def table_order(runs_by_exp, alpha=0.05):
    """The paper's ablation order (vanilla < AT < TGO < DS-ATGO) on every setting where the four
    ablation methods differ (one-way ANOVA over seeds, p < alpha): neighbours compared by
    Welch's t (two-sided), '<' where p < alpha, '~' where not."""
    from scipy import stats
    lines = ["| setting | vanilla | at | tgo | ds-atgo | ANOVA p | at vs vanilla | tgo vs at | "
             "ds-atgo vs tgo | ds-atgo vs at | measured order | paper's order? |",
             "|---" * 12 + "|"]
    counts = {"yes": 0, "no": 0}
    for exp, runs in runs_by_exp.items():
        knob = KNOBS.get(exp, "knob")
        for variant in _variants(runs):
            for x in _values(runs, variant):
                if not all((variant, x, m) in runs for m in ABLATION):
                    continue
                acc = {m: _acc(runs[variant, x, m]) for m in ABLATION}
                if min(len(a) for a in acc.values()) < 2:
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    p_all = float(stats.f_oneway(*acc.values()).pvalue)
                if not p_all < alpha:
                    continue
                pairs = [("at", "vanilla"), ("tgo", "at"), ("ds-atgo", "tgo"), ("ds-atgo", "at")]
                tests = {pr: welch(acc[pr[0]], acc[pr[1]]) for pr in pairs}
                ranked = sorted(ABLATION, key=lambda m: np.mean(acc[m]))
                text = ranked[0]
                for lo, hi in zip(ranked, ranked[1:]):
                    text += (" < " if welch(acc[hi], acc[lo])[1] < alpha else " ~ ") + hi
                # the paper's order holds if no measured difference contradicts it
                contra = any(welch(acc[b], acc[a])[1] < alpha and np.mean(acc[b]) < np.mean(acc[a])
                             for i, a in enumerate(ABLATION) for b in ABLATION[i + 1:])
                strict = all(tests[pr][1] < alpha and tests[pr][0] > 0 for pr in pairs[:3])
                verdict = "yes, strictly" if strict else ("not contradicted" if not contra else "no")
                counts["yes" if not contra else "no"] += 1
                cells = [_cell(acc[m]) for m in ABLATION]
                cells += [_p(p_all)] + [f"{tests[pr][0]:+.1f} (p {_p(tests[pr][1])})" for pr in pairs]
                lines.append(f"| {exp} {knob} {_knob(x)}{_name(knob, variant)} | " +
                             " | ".join(cells) + f" | {text} | {verdict} |")
    if len(lines) == 2:
        return "(no setting where the four ablation methods differ, or no runs yet)"
    lines.append("")
    lines.append(f"Settings where the four differ: {sum(counts.values())}; the paper's order is "
                 f"contradicted by a significant reversal in {counts['no']} of them.")
    return "\n".join(lines)


def table_layers(runs, variant, value):
    """Per spiking layer of one setting: firing rate and window share after training, %,
    mean over seeds, one column pair per method."""
    methods = [m for m in _methods(runs) if (variant, value, m) in runs]
    if not methods:
        return "(no runs yet)"
    layers = list(runs[variant, value, methods[0]][0]["diagnostics"])
    lines = ["| layer | " + " | ".join(f"{m} firing / window" for m in methods) + " |",
             "|---" * (len(methods) + 1) + "|"]
    for i, name in enumerate(layers):
        cells = []
        for m in methods:
            rows = runs[variant, value, m]
            f = np.mean([100 * r["diagnostics"][name]["firing_rate_mean"] for r in rows])
            g = np.mean([100 * r["diagnostics"][name]["grad_share_mean"] for r in rows])
            cells.append(f"{f:.1f} / {g:.1f}")
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_steps(runs, variant, value):
    """Deepest layer, per time step: firing rate after training (%), mean over seeds."""
    methods = [m for m in _methods(runs) if (variant, value, m) in runs]
    if not methods:
        return "(no runs yet)"
    T = len(deepest(runs[variant, value, methods[0]][0])["firing_rate"])
    lines = ["| method | " + " | ".join(f"t={t + 1}" for t in range(T)) + " | max - min |",
             "|---" * (T + 2) + "|"]
    for m in methods:
        rates = np.mean([deepest(r)["firing_rate"] for r in runs[variant, value, m]], axis=0) * 100
        lines.append(f"| {m} | " + " | ".join(f"{v:.1f}" for v in rates) +
                     f" | {np.ptp(rates):.1f} |")
    return "\n".join(lines)


def _axes(nrows, ncols, size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


# Okabe & Ito's colour-blind-safe palette (blue, orange, bluish green, vermillion, reddish
# purple), one colour and one marker per method, in METHODS' order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7")
MARKERS = ("o", "s", "^", "D", "v")


def figure_knob(runs, knob, path, title=""):
    """Accuracy, and the deepest layer's firing rate (first batch and after training) and
    window share, against the knob: one line per method (mean, 95 % interval over seeds)."""
    variants = _variants(runs)
    fig, axes = _axes(len(variants), 4, (17, 3.9 * len(variants)))
    panels = (("test accuracy (%)", lambda r: 100 * r["test_acc"]),
              ("deepest layer: firing rate at start (%)",
               lambda r: 100 * deepest(r, "init")["firing_rate_mean"]),
              ("deepest layer: firing rate after training (%)",
               lambda r: 100 * deepest(r)["firing_rate_mean"]),
              ("deepest layer: in gradient window (%)",
               lambda r: 100 * deepest(r)["grad_share_mean"]))
    for row, variant in zip(axes, variants):
        xs = _values(runs, variant)
        for j, (ylabel, get) in enumerate(panels):
            ax = row[j]
            for i, m in enumerate(METHODS):
                pts = [(x, mean_ci([get(r) for r in runs[variant, x, m]]))
                       for x in xs if (variant, x, m) in runs]
                if not pts:
                    continue
                x = [p[0] for p in pts]
                y = np.array([p[1][0] for p in pts])
                h = np.nan_to_num(np.array([p[1][1] for p in pts]))
                ax.plot(x, y, marker=MARKERS[i], color=PALETTE[i], label=m, ms=5, lw=1.6)
                ax.fill_between(x, y - h, y + h, color=PALETTE[i], alpha=0.15, lw=0)
            if j in (1, 2):
                ax.axhline(15.87, color="k", ls=":", lw=1, label="Theorem 1: 15.87 %")
            if knob in ("scale", "gain"):
                ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [_knob(x) for x in xs])
            ax.set_xlabel(AXIS.get(knob, knob) + _name(knob, variant))
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
    return _finish(fig, axes[0][1], path, title, fontsize=9)


def _finish(fig, legend_ax, path, title, fontsize=8):
    """One legend below the panels (from LEGEND_AX's lines), the title, and the file at PATH."""
    handles, labels = legend_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=fontsize)
    if title:
        fig.suptitle(title)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def figure_layers(runs, variant, value, path, title=""):
    """Firing rate and window share per layer after training, one line per method."""
    fig, axes = _axes(1, 2, (11, 3.8))
    for i, m in enumerate(METHODS):
        rows = runs.get((variant, value, m))
        if not rows:
            continue
        names = list(rows[0]["diagnostics"])
        for ax, key in zip(axes[0], ("firing_rate_mean", "grad_share_mean")):
            y = np.mean([[100 * r["diagnostics"][n][key] for n in names] for r in rows], axis=0)
            ax.plot(range(1, len(names) + 1), y, marker=MARKERS[i], color=PALETTE[i], label=m, ms=4)
    axes[0][0].axhline(15.87, color="k", ls=":", lw=1, label="Theorem 1")
    for ax, lab in zip(axes[0], ("firing rate (%)", "in gradient window (%)")):
        ax.set_xlabel("spiking layer")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    return _finish(fig, axes[0][0], path, title)


def figure_steps(runs, variant, value, path, title=""):
    """Deepest layer's firing rate and window share per step after training, per method."""
    fig, axes = _axes(1, 2, (11, 3.8))
    for i, m in enumerate(METHODS):
        rows = runs.get((variant, value, m))
        if not rows:
            continue
        for ax, key in zip(axes[0], ("firing_rate", "grad_share")):
            y = 100 * np.mean([deepest(r)[key] for r in rows], axis=0)
            ax.plot(range(1, len(y) + 1), y, marker=MARKERS[i], color=PALETTE[i], label=m, ms=4)
    axes[0][0].axhline(15.87, color="k", ls=":", lw=1, label="Theorem 1")
    for ax, lab in zip(axes[0], ("firing rate (%)", "in gradient window (%)")):
        ax.set_xlabel("time step t")
        ax.set_ylabel("deepest layer: " + lab)
        ax.grid(alpha=0.3)
    return _finish(fig, axes[0][0], path, title)


def render_directive(kind, arg, root, fig_dir, md_dir):
    """Text for a template line {{mismatch KIND ARG}}; ARG is an experiment name, with
    ':variant:value' for layers and steps, or a comma-separated list of experiments for order."""
    if kind == "order":
        runs = {e: load(root, e) for e in arg.split(",")}
        return table_order({e: r for e, r in runs.items() if r})
    exp, *where = arg.split(":")
    runs = load(root, exp)
    if not runs:
        return f"(no finished run yet: `python experiments/run.py {exp}`)"
    knob = KNOBS.get(exp, "knob")
    if kind == "acc":
        return table_accuracy(runs, knob)
    if kind == "deep":
        return table_deepest(runs, knob)
    if kind == "reach":
        return table_reach(runs, knob)
    if kind == "tests":
        return table_tests(runs, knob)
    if kind in ("layers", "steps", "figure-layers", "figure-steps"):
        variant, value = where[0], float(where[1])
        if kind == "layers":
            return table_layers(runs, variant, value)
        if kind == "steps":
            return table_steps(runs, variant, value)
        path = os.path.join(fig_dir, f"{exp}-{kind[7:]}-{variant or 'all'}{_knob(value)}.png")
        draw = figure_layers if kind == "figure-layers" else figure_steps
        draw(runs, variant, value, path, f"{exp}, {knob} = {_knob(value)}{_name(knob, variant)}")
    elif kind == "figure":
        path = figure_knob(runs, knob, os.path.join(fig_dir, f"{exp}.png"), exp)
    else:
        raise ValueError(f"unknown mismatch directive {kind!r}")
    return f"![{exp}]({os.path.relpath(path, md_dir)})"
