"""What `import dsatgo_np` gives a user: the documented attributes, and no optional package
imported on the way (each is imported by the function that needs it)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ["torch", "safetensors", "nir", "nirtorch", "norse", "matplotlib", "scipy", "sklearn",
            "PIL", "cupy"]

PROBE = f"""
import json, sys
import dsatgo_np as dn
names = ["to_nir", "from_nir", "export_official", "import_official", "load_official",
         "save_safetensors", "load_safetensors", "read_safetensors", "calibrate"]
found = {{n: callable(getattr(dn.interop, n)) for n in names}}
found["official.cli_import"] = callable(dn.interop.official.cli_import)
found["nirgraph.load_file"] = callable(dn.interop.nirgraph.load_file)
state, thresholds = dn.interop.export_official(dn.models.mlp([4, 3, 2], T=2))
found["export_official returns arrays"] = len(state) > 0 and all(
    hasattr(v, "dtype") for v in state.values())
print(json.dumps({{"found": found, "loaded": [m for m in {OPTIONAL!r} if m in sys.modules]}}))
"""


def test_interop_is_an_attribute_and_imports_no_optional_package():
    """In a fresh interpreter on the working tree: dn.interop.to_nir, dn.interop.export_official
    and the rest are there after `import dsatgo_np as dn`, and neither the import nor building
    and exporting a network imports torch, safetensors, nir or any other optional package."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert all(report["found"].values()), report["found"]
    assert report["loaded"] == [], report["loaded"]
