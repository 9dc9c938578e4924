#!/usr/bin/env python3
"""Checks that a directory written by `subscope train` runs in Hugging Face
transformers with the logits `subscope forward` gives. Trains nothing.

    python tests/gen/check_train_roundtrip.py --model out/small --input data/demo_prompts.jsonl

Runs `subscope forward` on the prompts (token ids as subscope's tokenizer
made them, read back from the HDF5 file), loads the directory with
GPT2LMHeadModel (and its tokenizer with PreTrainedTokenizerFast, whose ids
must be the same), and prints the largest absolute logit difference; exits 1
above --tol (default 1e-4).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="directory written by subscope train")
    ap.add_argument("--input", required=True, help="prompt file (JSONL or text)")
    ap.add_argument("--subscope", default="bin/subscope")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "fwd.h5")
        subprocess.run([a.subscope, "forward", "--model", a.model, "--input", a.input, "--out", out,
                        "--device", "cpu", "--compress", "0"], check=True)
        with h5py.File(out, "r") as f:
            tokens, lengths, logits = f["tokens"][:], f["lengths"][:], f["logits"][:]

    torch.set_grad_enabled(False)
    model = GPT2LMHeadModel.from_pretrained(a.model, torch_dtype=torch.float32).eval()
    tok = None
    if os.path.exists(os.path.join(a.model, "tokenizer.json")):
        tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(a.model, "tokenizer.json"))

    texts = []
    if tok is not None:
        import json
        with open(a.input, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    texts.append(json.loads(line)["text"] if line.lstrip().startswith("{") else line.rstrip("\r\n"))

    worst, n_tok_mismatch = 0.0, 0
    for i, n in enumerate(lengths):
        ids = tokens[i, :n].astype(np.int64)
        if texts and tok(texts[i])["input_ids"] != ids.tolist():
            n_tok_mismatch += 1
        hf = model(torch.from_numpy(ids)[None]).logits[0].numpy()
        worst = max(worst, float(np.abs(hf - logits[i, :n]).max()))
    print(f"{len(lengths)} prompts, {int(lengths.sum())} positions, vocab {logits.shape[-1]}: "
          f"max |logit(transformers) - logit(subscope)| = {worst:.3e} (tolerance {a.tol:g})")
    if texts:
        print(f"tokenizer: {len(texts) - n_tok_mismatch}/{len(texts)} prompts tokenized identically")
    ok = worst <= a.tol and n_tok_mismatch == 0
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
