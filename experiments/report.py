"""Build docs/RESULTS.md from the runs of experiments/run.py and the template beside this file.

    python experiments/report.py                 # reads runs/experiments/, writes docs/RESULTS.md
                                                 # and docs/figures/*.png
    python experiments/report.py --mismatch-only # only the section "Where the threshold mismatch
                                                 # appears" (MISMATCH.template.md,
                                                 # mismatch_report.py)

The template holds the prose; each line `{{table NAME}}` or `{{figure NAME}}` is replaced by a
table or figure computed here from the runs' metrics.jsonl: no number is typed by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join("runs", "experiments")
sys.path.insert(0, HERE)
import mismatch_report  # noqa: E402  (the threshold-mismatch study's tables and figures)

# The section "Where the threshold mismatch appears" has a template of its own; it is spliced
# into the output in place of the section of the same title, or appended.
MISMATCH_TEMPLATE = os.path.join(HERE, "MISMATCH.template.md")


def load_runs(root, exp):
    """{label: [(seed, rows, machine)]} for every finished run of one experiment."""
    runs = {}
    folder = os.path.join(root, exp)
    if not os.path.isdir(folder):
        return runs
    for name in sorted(os.listdir(folder)):
        m = re.fullmatch(r"(.+)-s(\d+)", name)
        path = os.path.join(folder, name)
        try:
            rows = [json.loads(x) for x in open(os.path.join(path, "metrics.jsonl"))]
            machine = json.load(open(os.path.join(path, "machine.json")))
        except (OSError, ValueError):
            continue                          # unfinished run: left out of the tables
        if m and rows:
            runs.setdefault(m.group(1), []).append((int(m.group(2)), rows, machine))
    return runs


def pct(values):
    """'97.83 +- 0.12' over seeds (percent); a single value without the +-. A run that has no
    value (NaN: a run resumed late in its last epoch records no diagnostics for it) is left
    out, and the cell says over how many runs it is."""
    n = len(values)
    values = [100 * v for v in values if v is not None and v == v]
    if not values:
        return "n/a"
    note = "" if len(values) == n else f" ({len(values)} of {n} runs)"
    if len(values) == 1:
        return f"{values[0]:.2f}{note}"
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}{note}"


METHOD_ORDER = ("vanilla", "at", "tgo", "ds-atgo", "mpd-agl")


def summary_table(runs, label_name="method"):
    labels = list(runs)
    if set(labels) <= set(METHOD_ORDER):          # methods in the paper's order, not alphabetical
        labels = [m for m in METHOD_ORDER if m in runs]
    lines = [f"| {label_name} | test accuracy % | firing rate % | gradient-window share % | "
             "seeds | epochs | wall time per run |", "|---|---|---|---|---|---|---|"]
    for label in labels:
        if label not in runs:
            continue
        rs = runs[label]
        last = [rows[-1] for _, rows, _ in rs]
        wall = statistics.mean(m["wall_time_s"] for _, _, m in rs)
        lines.append(f"| {label} | {pct([r['test_acc'] for r in last])} | "
                     f"{pct([r.get('firing_rate') for r in last])} | "
                     f"{pct([r.get('grad_share') for r in last])} | "
                     f"{', '.join(str(s) for s, _, _ in rs)} | {len(rs[0][1])} | {wall:.0f} s |")
    return "\n".join(lines)


def machine_line(runs):
    for rs in runs.values():
        m = rs[0][2]
        return f"Machine: {m['machine']}, {m['cpus']} CPUs, Python {m['python']}."
    return ""


def last_diagnostics(runs, labels):
    """{label: the per-layer diagnostics of its first run's last epoch}, for labels that ran."""
    return {lab: runs[lab][0][1][-1].get("diagnostics", {}) for lab in labels if lab in runs}


def per_layer_table(runs, labels):
    """Per layer: firing rate and gradient share of the last epoch, one column pair per label."""
    diags = last_diagnostics(runs, labels)
    if not diags:
        return "(no runs yet)"
    layers = list(next(iter(diags.values())))
    head = "| layer | " + " | ".join(f"{lab} firing % | {lab} window %" for lab in diags) + " |"
    lines = [head, "|---" * (1 + 2 * len(diags)) + "|"]
    for layer in layers:
        cells = []
        for d in diags.values():
            s = d.get(layer, {})
            cells += [f"{100 * s.get('firing_rate_mean', float('nan')):.1f}",
                      f"{100 * s.get('grad_share_mean', float('nan')):.1f}"]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def potentials_table(runs, labels):
    """Per layer and label: the potentials' mean and std, the threshold and the window width,
    each averaged over the time steps of the last epoch's recorded batches (first seed)."""
    diags = last_diagnostics(runs, labels)
    if not diags:
        return "(no runs yet)"
    head = "| layer | " + " | ".join(f"{lab} mu / sigma / theta / k" for lab in diags) + " |"
    lines = [head, "|---" * (1 + len(diags)) + "|"]
    for layer in next(iter(diags.values())):
        cells = []
        for d in diags.values():
            s = d.get(layer, {})
            vals = [statistics.mean(s[key]) if s.get(key) else float("nan")
                    for key in ("mean", "std", "theta", "k")]
            cells.append(" / ".join(f"{v:.2f}" for v in vals))
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def epochs_table(runs):
    """Test accuracy after every epoch and the epoch's wall time, two columns per run."""
    cols = [(lab, seed, rows) for lab, rs in runs.items() for seed, rows, _ in rs]
    if not cols:
        return "(no runs yet)"
    n = max(len(rows) for _, _, rows in cols)
    lines = ["| epoch | " + " | ".join(f"{lab} (seed {seed}) test % | epoch wall s"
                                       for lab, seed, _ in cols) + " |",
             "|---" * (1 + 2 * len(cols)) + "|"]
    for e in range(n):
        cells = []
        for _, _, rows in cols:
            if e < len(rows):
                took = rows[e]["time"] - (rows[e - 1]["time"] if e else 0.0)
                cells += [f"{100 * rows[e]['test_acc']:.2f}", f"{took:.0f}"]
            else:
                cells += ["", ""]
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(name, runs, out_dir):
    from dsatgo_np.diagnostics import plots
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.png")
    exp, kind = name.split(":") if ":" in name else (name, "")
    sums = last_diagnostics(runs.get(exp, {}), runs.get(exp, {}))
    if not sums:
        return None
    path = os.path.join(out_dir, f"{exp}-{kind}.png")
    if kind == "firing":
        plots.plot_firing_rates(sums, path)
    elif kind == "window":
        plots.plot_grad_share(sums, path)
    elif kind.startswith("steps-"):
        plots.plot_firing_rates_per_step(sums[kind[6:]], path)
    else:
        raise ValueError(f"unknown figure kind {kind!r}")
    return path


def fc_table(runs):
    lines = ["| f_c | test accuracy % | firing rate % | gradient-window share % | seeds |",
             "|---|---|---|---|---|"]
    for label in sorted(runs, key=lambda s: float(s[2:])):
        last = [rows[-1] for _, rows, _ in runs[label]]
        lines.append(f"| {label[2:]} | {pct([r['test_acc'] for r in last])} | "
                     f"{pct([r.get('firing_rate') for r in last])} | "
                     f"{pct([r.get('grad_share') for r in last])} | {len(last)} |")
    return "\n".join(lines)


def render(template, root, out_md, fig_dir):
    cache = {}

    def runs_of(exp):
        if exp not in cache:
            cache[exp] = load_runs(root, exp)
        return cache[exp]

    out = []
    for line in open(template):
        mm = re.fullmatch(r"\{\{mismatch ([\w-]+) ([^}]+)\}\}\s*", line)
        if mm:                               # the threshold-mismatch study (mismatch_report.py)
            out.append(mismatch_report.render_directive(*mm.groups(), root, fig_dir,
                                                 os.path.dirname(out_md) or ".") + "\n")
            continue
        m = re.fullmatch(r"\{\{(table|figure|layers|potentials|epochs|machine) ([^}]+)\}\}\s*",
                         line)
        if not m:
            out.append(line)
            continue
        kind, arg = m.groups()
        if kind == "table":
            runs = runs_of(arg)
            if not runs:
                text = f"(no finished run yet: `python experiments/run.py {arg}`)"
            else:
                text = fc_table(runs) if arg == "fc" else summary_table(runs)
        elif kind == "machine":
            text = machine_line(runs_of(arg))
        elif kind == "layers":
            exp, labels = arg.split(":")
            text = per_layer_table(runs_of(exp), labels.split(","))
        elif kind == "potentials":
            exp, labels = arg.split(":")
            text = potentials_table(runs_of(exp), labels.split(","))
        elif kind == "epochs":
            text = epochs_table(runs_of(arg))
        else:
            exp = arg.split(":")[0]
            path = figure(arg, {exp: runs_of(exp)}, fig_dir)
            rel = os.path.relpath(path, os.path.dirname(out_md)) if path else None
            text = f"![{arg}]({rel})" if rel else "(figure pending: its runs are not finished)"
        out.append(text + "\n")
    with open(out_md, "w") as f:
        f.writelines(out)
    return out_md


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=ROOT)
    p.add_argument("--template", default=os.path.join(HERE, "RESULTS.template.md"))
    p.add_argument("--out", default=os.path.join("docs", "RESULTS.md"))
    p.add_argument("--figures", default=os.path.join("docs", "figures"))
    p.add_argument("--mismatch-only", action="store_true",
                   help="regenerate only the section of MISMATCH.template.md in --out, "
                        "leaving the rest of the file as it is")
    a = p.parse_args(argv)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    if not a.mismatch_only:
        render(a.template, a.root, a.out, a.figures)
    print(splice_section(a.out, MISMATCH_TEMPLATE, a.root, a.figures))
    return 0


def splice_section(out_md, template, root, fig_dir):
    """Render `template` (one "## " section) and put it in out_md in place of the section with
    the same heading (up to the next "## " heading), or at the end if there is none."""
    part = out_md + ".part"                  # beside out_md, so figure links come out right
    try:
        text = open(render(template, root, part, fig_dir)).read()
    finally:
        if os.path.exists(part):
            os.remove(part)
    heading = text.splitlines()[0]
    lines = open(out_md).read().splitlines(keepends=True) if os.path.exists(out_md) else []
    start = next((i for i, x in enumerate(lines) if x.rstrip() == heading), None)
    if start is None:
        body = "".join(lines).rstrip("\n")
        new = (body + "\n\n" if body else "") + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        rest = "".join(lines[end:])
        new = "".join(lines[:start]) + text.rstrip("\n") + ("\n\n" + rest if rest else "\n")
    with open(out_md, "w") as f:
        f.write(new)
    return out_md


if __name__ == "__main__":
    sys.exit(main())
