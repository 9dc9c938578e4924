#!/usr/bin/env python3
"""Golden statistics for `subscope collect`, computed with numpy in float64.

Run by hand from the repository root after `make` (the outputs are committed):

    python3 tests/gen/gen_collect_goldens.py

It asks `subscope forward` for the activations of the bundled model on
data/demo_prompts.jsonl (float32, exactly what collect sees), then computes the
count, mean, covariance and correlation of every site over the real positions
with numpy in float64 (np.cov, np.corrcoef), all positions and last positions
only, and writes tests/data/golden/collect-tiny-gpt2[-last].h5 in collect's
layout. tests/cli/test_collect.sh compares collect's output with them.
"""
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SITES = "blocks.0.hook_resid_pre,blocks.1.attn.hook_z"  # 128 units each: goldens stay small


def main():
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        acts = os.path.join(tmp, "acts.h5")
        subprocess.run(["bin/subscope", "forward", "--model", "models/tiny-gpt2", "--input",
                        "data/demo_prompts.jsonl", "--out", acts, "--sites", SITES, "--no-logits",
                        "--batch", "16"], check=True)
        with h5py.File(acts, "r") as f:
            lengths = f["lengths"][:]
            data = {name: f["acts"][name][:] for name in f["acts"]}
    for suffix, last in (("", False), ("-last", True)):
        out = f"tests/data/golden/collect-tiny-gpt2{suffix}.h5"
        with h5py.File(out, "w") as g:
            g.attrs["generator"] = "tests/gen/gen_collect_goldens.py"
            g.attrs["numpy"] = np.__version__
            g.attrs["positions"] = "last" if last else "all"
            for name, x in data.items():
                rows = []
                for p, n in enumerate(lengths):
                    sel = x[p, n - 1:n] if last else x[p, :n]
                    rows.append(sel.reshape(sel.shape[0], -1))
                x2 = np.concatenate(rows).astype(np.float64)
                grp = g.create_group(f"stats/{name}")
                grp.create_dataset("count", data=np.int64(x2.shape[0]))
                grp.create_dataset("mean", data=x2.mean(axis=0))
                grp.create_dataset("cov", data=np.cov(x2, rowvar=False, ddof=1), compression="gzip", shuffle=True)
                with np.errstate(invalid="ignore", divide="ignore"):
                    grp.create_dataset("corr", data=np.corrcoef(x2, rowvar=False), compression="gzip", shuffle=True)
        print("wrote", out, os.path.getsize(out), "bytes")


if __name__ == "__main__":
    sys.exit(main())
