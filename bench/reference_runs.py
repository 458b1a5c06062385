"""Reference runs: train small networks on the digits set and print a digest of every weight,
buffer and metric row, so that one command run before and after a change that must not change
the arithmetic (a move of files, say) shows bit-equal results.

    python bench/reference_runs.py before.json     # then, after the change:
    python bench/reference_runs.py after.json && python -c "import json; a, b = (json.load(open(f)) for f in ('before.json', 'after.json')); print(a == b)"

24 runs: both kernel sets, mlp / cnn / vgg / sew-resnet, ds-atgo / vanilla / mpd-agl.
"""
import hashlib
import json
import sys
import tempfile

import numpy as np
import dsatgo_np as dn
from dsatgo_np import train
out = {}
for kernels in ("fast", "plain"):
    dn.set_kernels(kernels)
    for model, extra in (("mlp", dict(hidden=[64])), ("cnn", dict(channels=[8, 16], augment=True)),
                         ("vgg", dict(vgg_layers=[8, "P", 16])), ("sew-resnet", dict(width_mult=0.125))):
        for method in ("ds-atgo", "vanilla", "mpd-agl"):
            d = tempfile.mkdtemp()
            cfg = train.Config(dataset="digits", model=model, method=method, T=2, epochs=1, batch_size=100,
                               train_subset=300, out=d + "/r", plots=False, **extra)
            train.fit(cfg, verbose=False, progress=False)
            net = dn.load(d + "/r/last.npz")
            h = hashlib.sha256()
            for k, v in sorted(net.state_dict().items()):
                h.update(k.encode()); h.update(np.ascontiguousarray(dn.to_numpy(v)).tobytes())
            rows = [json.loads(l) for l in open(d + "/r/metrics.jsonl")]
            for r in rows:
                for key in ("time", "train_time_s"):
                    r.pop(key, None)
            h.update(json.dumps(rows, sort_keys=True, default=str).encode())
            out[f"{kernels} {model} {method}"] = h.hexdigest()[:16]
            print(kernels, model, method, out[f"{kernels} {model} {method}"], flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
