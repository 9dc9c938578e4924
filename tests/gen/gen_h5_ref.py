#!/usr/bin/env python3
"""Writes tests/data/h5/h5py_base.h5: the same numbers as `h5fixture OUT base`
(tests/tools/h5fixture.c), but written by h5py with other storage choices --
big-endian f64 activations, big-endian i64 tokens, contiguous layout, no
dimension scales, plus a string dataset -- so the CLI test can show that
h5cmp compares values, not storage.  Run from the repository root:

    python3 tests/gen/gen_h5_ref.py
"""
import os

import h5py
import numpy as np

B, P, D = 2, 5, 4
LEN = [P, 3]  # row 1 holds 3 tokens; the rest is padding


def val(i):
    return (i % 7 - 3) * 0.25


def main():
    out = os.path.join("tests", "data", "h5", "h5py_base.h5")
    acts = np.full((B, P, D), np.nan, dtype=">f8")
    toks = np.full((B, P), -1, dtype=">i8")
    for b in range(B):
        for p in range(LEN[b]):
            toks[b, p] = 100 * b + p
            for d in range(D):
                acts[b, p, d] = val((b * P + p) * D + d)
    with h5py.File(out, "w", libver="earliest") as f:
        f.create_dataset("acts/blocks.0.hook_resid_pre", data=acts)
        f.create_dataset("tokens", data=toks)
        f.create_dataset("stats/mean", data=np.array([0.125, -0.5, 1.0 / 3.0, 1e-3], dtype="<f8"))
        f.create_dataset("stats/count", data=np.int64(8))
        f.create_dataset("notes", data="written by h5py", dtype=h5py.string_dtype())
        f.attrs["producer"] = "tests/gen/gen_h5_ref.py"
    print("wrote", out, os.path.getsize(out), "bytes")


if __name__ == "__main__":
    main()
