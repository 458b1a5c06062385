"""Every numbered tutorial runs, in fast mode, as a plain script, and its asserts hold.

Each tutorial checks its own claims with asserts; this test only runs them (DSATGO_FAST=1:
smaller data and fewer epochs) in a subprocess, the way a reader runs them, with figures
written to a temporary folder.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))


def test_tutorials_exist():
    assert TUTORIALS, f"no numbered tutorials found in {ROOT / 'tutorials'}"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path):
    pytest.importorskip("matplotlib")
    env = dict(os.environ, DSATGO_FAST="1", MPLBACKEND="Agg", DSATGO_FIGURES=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    result = subprocess.run([sys.executable, str(path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (f"{path.name} failed (exit {result.returncode}):\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    assert list(tmp_path.glob("*.png")) or path.name.startswith("10_"), f"{path.name} saved no figure"
