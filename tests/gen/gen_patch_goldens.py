#!/usr/bin/env python3
"""Golden activation-patching effects for `subscope patch`, from transformers
with PyTorch hooks. Run by hand from the repository root; writes
tests/data/golden/patch-tiny-gpt2-{position,head}.h5 (committed).

Pairs: tests/data/patch/clean.jsonl and corrupt.jsonl (same token counts).
Metric: logit(answer) - logit(wrong) at the last position (first tokens of the
clean line's "answer"/"wrong"). The corrupt prompt is run with one piece of a
site replaced by its clean value:
  position: blocks.L.hook_resid_pre (the input of block L) at one position;
  head:     blocks.L.attn.hook_z (the input of attn.c_proj) for one head.
effect = (patched - corrupt) / (clean - corrupt).
"""
import json
import os

import h5py
import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import GPT2LMHeadModel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    os.chdir(ROOT)
    torch.set_grad_enabled(False)
    model = GPT2LMHeadModel.from_pretrained("models/tiny-gpt2", attn_implementation="eager").eval().float()
    tok = Tokenizer.from_file("models/tiny-gpt2/tokenizer.json")
    clean = [json.loads(l) for l in open("tests/data/patch/clean.jsonl") if l.strip()]
    corrupt = [json.loads(l) for l in open("tests/data/patch/corrupt.jsonl") if l.strip()]
    L = model.config.n_layer
    H = model.config.n_head
    dh = model.config.n_embd // H
    T = max(len(tok.encode(c["text"]).ids) for c in clean)

    def run(ids, mod=None, fn=None):
        handle = None
        if mod is not None:
            handle = mod.register_forward_pre_hook(lambda m, a: (fn(a[0]),) + tuple(a[1:]))
        try:
            return model(torch.tensor([ids])).logits[0].double()
        finally:
            if handle:
                handle.remove()

    def capture(ids, mod):
        box = []
        run(ids, mod, lambda x: box.append(x[0].clone()) or x)
        return box[0]

    eff_pos = np.full((L, len(clean), T), np.nan, dtype=np.float32)
    eff_head = np.full((L, len(clean), H), np.nan, dtype=np.float32)
    for i, (c, k) in enumerate(zip(clean, corrupt)):
        ci, ki = tok.encode(c["text"]).ids, tok.encode(k["text"]).ids
        assert len(ci) == len(ki)
        a, w = tok.encode(c["answer"]).ids[0], tok.encode(c["wrong"]).ids[0]
        metric = lambda lg: float(lg[-1, a] - lg[-1, w])
        mc, mk = metric(run(ci)), metric(run(ki))
        for layer in range(L):
            block = model.transformer.h[layer]
            src = capture(ci, block)
            for t in range(len(ci)):
                def fn(x, t=t, src=src):
                    y = x.clone()
                    y[0, t] = src[t]
                    return y
                eff_pos[layer, i, t] = (metric(run(ki, block, fn)) - mk) / (mc - mk)
            srcz = capture(ci, block.attn.c_proj)
            for h in range(H):
                def fnz(x, h=h, srcz=srcz):
                    y = x.clone()
                    y[0, :, h * dh:(h + 1) * dh] = srcz[:, h * dh:(h + 1) * dh]
                    return y
                eff_head[layer, i, h] = (metric(run(ki, block.attn.c_proj, fnz)) - mk) / (mc - mk)
    for name, eff, site in (("position", eff_pos, "hook_resid_pre"), ("head", eff_head, "attn.hook_z")):
        with h5py.File(f"tests/data/golden/patch-tiny-gpt2-{name}.h5", "w") as f:
            f.attrs["generator"] = "tests/gen/gen_patch_goldens.py"
            for layer in range(L):
                f.create_dataset(f"effect/blocks.{layer}.{site}", data=eff[layer])
        print("wrote", f"tests/data/golden/patch-tiny-gpt2-{name}.h5")


if __name__ == "__main__":
    main()
