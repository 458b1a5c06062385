"""Mutation testing of the engine on a small machine: a seeded sample of mutmut's mutants, every
engine file sampled at the same rate, and the score over it. Not a test module (pytest collects
test_*.py only).

    python tests/mutation_sample.py generate          # write mutants/ (no test runs)
    mutmut run --max-children 2 $(python tests/mutation_sample.py sample --size 60 --seed 1)
    python tests/mutation_sample.py score --size 60 --seed 1   # killed / non-equivalent, survivors

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

SEED = 1
SIZE = 60                # mutants in a sample, shared out between the files by their mutant counts

# Mutants whose program computes the same results as the original for every input the
# engine can receive; each with the reason (docs/TESTING.md lists them too).
EQUIVALENT: dict[str, str] = {
    "dsatgo_np.fast.allocator.x_keep_freed_memory__mutmut_23":
        "find_library('c') and 'libc.so.6': glibc's libc is libc.so.6, the library the original "
        "loads; without glibc mallopt is missing either way and the function returns False",
    "dsatgo_np.fast.allocator.x_keep_freed_memory__mutmut_26":
        "find_library('C') finds nothing, so the fallback 'libc.so.6' loads the same libc",
    "dsatgo_np.fast.conv.x__conv_dx_s1__mutmut_101":
        "out=None: the product lands in a new array instead of a reused buffer; the returned "
        "array is the one used, so only memory traffic changes",
    "dsatgo_np.fast.conv.x_conv2d_backward__mutmut_27":
        "stride 1 takes the general dW path, which computes the same sum (the stride-1 path "
        "only saves an im2col): equal to round-off, a speed change",
    "dsatgo_np.fast.neuron.x_row_sums__mutmut_17":
        "einsum('IJ->I') is the same reduction as einsum('ij->i')",
    "dsatgo_np.fast.pooling.x_avgpool2d_backward__mutmut_45":
        "split=False runs the same matrix product without sharing its rows between threads",
    "dsatgo_np.spiking.xǁSpikingǁbackward__mutmut_1":
        "Spiking.backward never reads need_dx",
    "dsatgo_np.core.neuron.x_lif_backward__mutmut_16":
        "V computed even when need_dlam is False: it is read only for dlam, so only time changes",
    "dsatgo_np.optim.xǁSGDǁload_state_dict__mutmut_3":
        "the constructor refuses an empty parameter list, so self.params is never empty here",
    "dsatgo_np.model.xǁBatchNormǁforward__mutmut_34":
        "x[1] for x[0] of a direct-encoded input in eval mode: every step is the same array "
        "(is_static needs T > 1, so x[1] exists)",
    "dsatgo_np.fast.conv.x__conv_dw__mutmut_41":
        "a larger scratch buffer (hi + lo for hi - lo samples): only its first part is used",
    "dsatgo_np.fast.conv.x__conv_dx_s1__mutmut_11":
        "two more values of slack in the padded scratch buffer, never read",
    "dsatgo_np.spiking.xǁSpikingǁ__init____mutmut_79":
        "record = None for False: both are false where it is read",
    "dsatgo_np.fast.parallel.x_split__mutmut_31":
        "one more bound, equal to n: the empty run (n, n) it adds is dropped by hi > lo",
    "dsatgo_np.core.threshold.x_estimated_threshold__mutmut_4":
        "get_xp(None) is NumPy, and np.sqrt on a CuPy (or stand-in) array dispatches to its "
        "own module through __array_ufunc__",
    "dsatgo_np.fast.neuron.x_lif_backward__mutmut_73":
        "out= dropped: dS~ lands in a new array instead of a reused buffer; same values",
    "dsatgo_np.fast.parallel.x_split__mutmut_8":
        "n >= 0 for n > 0: at n = 0 both branches give 0 units",
    "dsatgo_np.fast.layers.x_batchnorm_forward__mutmut_84":
        "blocks() at its default block size instead of BLOCK_BYTES: the affine pass it splits "
        "is element-wise, so any block size writes the same values",
    "dsatgo_np.model.xǁConv2dǁbackward__mutmut_9":
        "need_dx=None for False: conv2d_backward reads it only as `if need_dx` / `if not "
        "need_dx`, where both are false",
    "dsatgo_np.fast.conv.x__conv_dx_s1__mutmut_143":
        "the slack past the last sample filled with 1 instead of 0: the shifted windows add "
        "into it, but the crop reads only the first m * P values of each plane",
    "dsatgo_np.containers.xǁAvgPool2dǁbackward__mutmut_1":
        "need_dx defaults to False: AvgPool2d.backward never reads need_dx",
    "dsatgo_np.fast.parallel.x__blas_one_thread__mutmut_8":
        "user_api=None caps every thread pool threadpoolctl finds, not only the BLAS; the "
        "engine runs nothing on the others (OpenMP), so the same cap acts",
    "dsatgo_np.core.layers.x__channel_axes__mutmut_12":
        "(1, -2, 1, ...) for (1, -1, 1, ...): NumPy (and the stand-in, backed by NumPy) read "
        "any negative size as the one unknown dimension (not checked on CuPy itself)",
    "dsatgo_np.containers.xǁDropoutǁbackward__mutmut_1":
        "need_dx defaults to False: Dropout.backward never reads need_dx",
    "dsatgo_np.containers.xǁGlobalAvgPoolǁbackward__mutmut_1":
        "need_dx defaults to False: GlobalAvgPool.backward never reads need_dx",
    "dsatgo_np.models.x_resnet19__mutmut_104":
        "`s != 1 and c != c_out` for `or`: in resnet19's fixed stages the stride is 2 exactly "
        "where the width changes, so the two conditions agree on every block",
    "dsatgo_np.core.surrogate.x_dynamic_width_two_branches__mutmut_3":
        "z > v_th for z >= v_th: at z = v_th both branches give k0 (tanh(0) = 0)",
    "dsatgo_np.fast.neuron.x_lif_backward__mutmut_76":
        "out=None for dV * H: the product lands in a new array instead of the reused buffer, "
        "then the subtraction writes the buffer as before; same values",
    "dsatgo_np.model.xǁLinearǁbackward__mutmut_9":
        "need_dx=None for False: linear_backward reads it only as `if need_dx`",
    "dsatgo_np.core.pooling.x_avgpool2d_backward__mutmut_2":
        "get_xp(None) is NumPy, and np.broadcast_to on a CuPy (or stand-in) array dispatches "
        "to its own module through __array_function__",
    "dsatgo_np.fast.neuron.x_lif_backward__mutmut_22":
        "reshape to (T, -2) for (T, -1): NumPy reads any negative size as the one unknown "
        "dimension, and this fast path runs on NumPy only",
    "dsatgo_np.core.surrogate.x_mpd_agl_width__mutmut_3":
        "get_xp(None, g) for get_xp(lam, g): as for mutant 5, lam and g come from the same "
        "array module",
    "dsatgo_np.core.surrogate.x_mpd_agl_width__mutmut_5":
        "get_xp(g) for get_xp(lam, g): the engine passes lam and g from the same array module "
        "(the neuron's decay, its BatchNorm's mean scale)",
    "dsatgo_np.containers.xǁSEWBlockǁbackward__mutmut_1":
        "need_dx defaults to False: SEWBlock.backward never reads need_dx",
    "dsatgo_np.core.conv.x_conv2d_backward__mutmut_58":
        "dL/dxpad allocated also when need_dx is False: it is written only under `if need_dx` "
        "and the function returns (None, grads) without reading it, so only memory changes",
    "dsatgo_np.core.update.x_adam_update__mutmut_35":
        "get_xp(None) is NumPy, and np.sqrt on a CuPy (or stand-in) array dispatches to its own "
        "module through __array_ufunc__",
    "dsatgo_np.optim.xǁAdamǁstep__mutmut_8":
        "get_xp(None) is NumPy, and np.zeros_like of a CuPy (or stand-in) array returns an array "
        "of that module through __array_function__",
    "dsatgo_np.optim.xǁSGDǁstep__mutmut_7":
        "get_xp(None) is NumPy, and np.zeros_like of a CuPy (or stand-in) array returns an array "
        "of that module through __array_function__",
}


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


def allocate(counts: dict[str, int], size: int) -> dict[str, int]:
    """How many of `size` mutants each file gets: size * n_file / n_all, rounded so that the
    shares add up to `size` (largest remainders first), so every file is sampled at one rate."""
    total = sum(counts.values())
    exact = {path: size * n / total for path, n in counts.items()}
    share = {path: int(e) for path, e in exact.items()}
    by_remainder = sorted(counts, key=lambda path: (share[path] - exact[path], path))
    for path in by_remainder[:size - sum(share.values())]:
        share[path] += 1
    return share


def sample(size: int = SIZE, seed: int = SEED):
    """`size` mutants of all engine files, each file's share in proportion to its mutants,
    drawn without replacement by a generator seeded with `seed`."""
    rng = random.Random(seed)
    files = metas()
    share = allocate({path: len(codes) for path, codes in files.items()}, size)
    chosen = []
    for path, codes in files.items():
        chosen += sorted(rng.sample(sorted(codes), share[path]))
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
        elif status == "timeout":               # counted as killed, listed to be looked at
            survivors.append((name, status))
        elif status != "killed":
            survivors.append((name, status))
        by_module[module][status] += 1
    total = defaultdict(int)
    for module, counts in sorted(by_module.items()):
        for k, v in counts.items():
            total[k] += v
        print(f"{module:28s} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    counted = sum(total.values()) - total["equivalent"]
    killed = total["killed"] + total["timeout"]
    print(f"sampled {sum(total.values())}, equivalent {total['equivalent']}, killed {killed} "
          f"(of which timed out {total['timeout']}) of {counted} non-equivalent: "
          f"score {100 * killed / max(counted, 1):.1f} %")
    for name, status in survivors:
        print(f"  {status}: {name}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["generate", "sample", "score"])
    p.add_argument("--size", type=int, default=SIZE, help="mutants in the sample")
    p.add_argument("--seed", type=int, default=SEED)
    a = p.parse_args()
    if a.command == "generate":
        generate()
    elif a.command == "sample":
        print(" ".join(sample(a.size, a.seed)))
    else:
        score(sample(a.size, a.seed))


if __name__ == "__main__":
    main()
