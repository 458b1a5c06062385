"""Mutation testing of the engine on a small machine: a seeded, stratified sample of mutmut's
mutants, and the score over it. Not a test module (pytest collects test_*.py only).

    python tests/mutation_sample.py generate          # write mutants/ (no test runs)
    mutmut run --max-children 2 $(python tests/mutation_sample.py sample)
    python tests/mutation_sample.py score             # killed / non-equivalent, survivors

The modules and the test selection are [tool.mutmut] in pyproject.toml; docs/TESTING.md
explains the choices and records the last score. Works with mutmut 3.8 (generate uses its
internal steps, the same that `mutmut run` takes before it runs any test).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

SEED = 2026
FRACTION = 0.04          # of each module's mutants
AT_LEAST = 10            # per module (the small method modules get proportionally more)

# Mutants whose program computes the same results as the original for every input the
# engine can receive; each with the reason (docs/TESTING.md lists them too).
EQUIVALENT: dict[str, str] = {}


def metas(root: Path = Path("mutants")):
    """{module path: {mutant name: exit code or None}} from mutmut's .meta files."""
    out = {}
    for meta in sorted(root.glob("dsatgo_np/**/*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            out[str(meta.relative_to(root))[:-len(".meta")]] = codes
    return out


def generate():
    import mutmut.__main__ as mm                     # noqa: PLC0415 (optional dev tool)
    Path("mutants").mkdir(exist_ok=True)
    mm.copy_src_dir()
    mm.copy_also_copy_files()
    mm.setup_source_paths()
    mm.store_lines_covered_by_tests()
    print(mm.create_mutants(1), file=sys.stderr)


def sample(fraction: float = FRACTION, at_least: int = AT_LEAST, seed: int = SEED):
    """Per module, max(at_least, fraction * n) mutants drawn without replacement."""
    rng = random.Random(seed)
    chosen = []
    for path, codes in metas().items():
        names = sorted(codes)
        k = min(len(names), max(at_least, round(fraction * len(names))))
        chosen += sorted(rng.sample(names, k))
    return chosen


def score(names):
    from mutmut.stats import status_by_exit_code    # noqa: PLC0415
    by_module = defaultdict(lambda: defaultdict(int))
    survivors = []
    codes = {n: c for m in metas().values() for n, c in m.items()}
    for name in names:
        status = status_by_exit_code[codes[name]]
        module = name.rsplit(".", 1)[0]
        if name in EQUIVALENT:
            status = "equivalent"
        elif status in ("killed", "timeout"):
            status = "killed"
        else:
            survivors.append((name, status))
        by_module[module][status] += 1
    total = defaultdict(int)
    for module, counts in sorted(by_module.items()):
        for k, v in counts.items():
            total[k] += v
        print(f"{module:28s} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    counted = sum(total.values()) - total["equivalent"]
    print(f"sampled {sum(total.values())}, equivalent {total['equivalent']}, killed {total['killed']}"
          f" of {counted} non-equivalent: score {100 * total['killed'] / max(counted, 1):.1f} %")
    for name, status in survivors:
        print(f"  {status}: {name}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["generate", "sample", "score"])
    p.add_argument("--fraction", type=float, default=FRACTION)
    p.add_argument("--at-least", type=int, default=AT_LEAST)
    p.add_argument("--seed", type=int, default=SEED)
    a = p.parse_args()
    if a.command == "generate":
        generate()
    elif a.command == "sample":
        print(" ".join(sample(a.fraction, a.at_least, a.seed)))
    else:
        score(sample(a.fraction, a.at_least, a.seed))


if __name__ == "__main__":
    main()
