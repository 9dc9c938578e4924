#!/usr/bin/env python3
"""Golden metrics for `subscope ablate`, from Hugging Face transformers with the
same interventions applied by PyTorch hooks. Run by hand from the repository
root; writes tests/data/golden/ablate-tiny-gpt2.h5 (committed).

Masks (tests/data/ablate/masks.jsonl) and their hook points, in TransformerLens terms:
  blocks.L.mlp.hook_post   output of mlp.act (forward hook on the activation module)
  blocks.L.attn.hook_z     input of attn.c_proj, heads x d_head (forward pre-hook)
  blocks.L.hook_resid_pre  input of block L (forward pre-hook)
Modes: zero, scale (factor), mean (per-unit mean over every real position of
every prompt in the clean run), resample (prompt i takes the clean values of
donor prompt (i + 1 + r) mod n, r = mix64(mix64(seed) ^ i) mod (n - 1), at the
same position or the donor's last one: the rule of ss_mask_resample_source). Metrics per prompt, as subscope defines them:
loss and acc over next-token predictions, logitdiff at the last position with
the first token of "answer"/"wrong", kl = mean over positions of KL(clean||ablated).
"""
import json
import os

import h5py
import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import GPT2LMHeadModel

M64 = (1 << 64) - 1


def mix64(z):
    """splitmix64's finaliser, as src/sites/masks.c."""
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def donor(seed, i, n):
    return (i + 1 + mix64(mix64(seed) ^ i) % (n - 1)) % n


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    os.chdir(ROOT)
    torch.set_grad_enabled(False)
    model = GPT2LMHeadModel.from_pretrained("models/tiny-gpt2", attn_implementation="eager").eval().float()
    tok = Tokenizer.from_file("models/tiny-gpt2/tokenizer.json")
    prompts = [json.loads(l) for l in open("tests/data/ablate/prompts.jsonl") if l.strip()]
    masks = [json.loads(l) for l in open("tests/data/ablate/masks.jsonl") if l.strip()]
    H = model.config.n_head
    dh = model.config.n_embd // H
    blocks = model.transformer.h

    def site_module(site):
        parts = site.split(".")
        L = int(parts[1])
        name = ".".join(parts[2:])
        if name == "mlp.hook_post":
            return blocks[L].mlp.act, "out"
        if name == "attn.hook_z":
            return blocks[L].attn.c_proj, "in"
        if name == "hook_resid_pre":
            return blocks[L], "in"
        raise ValueError(site)

    def targets(m):
        if "sites" in m:
            return [(t["site"], t.get("units"), t.get("heads")) for t in m["sites"]]
        return [(m["site"], m.get("units"), m.get("heads"))]

    def unit_index(site, units, heads, width):
        if units is None and heads is None:
            return list(range(width))
        idx = set(units or [])
        for h in heads or []:
            idx.update(range(h * dh, (h + 1) * dh))
        return sorted(idx)

    ids = [tok.encode(p["text"]).ids for p in prompts]

    # Clean run, and the per-unit means of every site a mean mask uses.
    def run_one(hooks, x):
        handles = []
        for mod, kind, fn in hooks:
            if kind == "out":
                handles.append(mod.register_forward_hook(lambda m, i, o, fn=fn: fn(o)))
            else:
                handles.append(mod.register_forward_pre_hook(lambda m, a, fn=fn: (fn(a[0]),) + tuple(a[1:])))
        try:
            return model(torch.tensor([x])).logits[0].double()
        finally:
            for h in handles:
                h.remove()

    def run(hooks):
        handles = []
        for mod, kind, fn in hooks:
            if kind == "out":
                handles.append(mod.register_forward_hook(lambda m, i, o, fn=fn: fn(o)))
            else:
                handles.append(mod.register_forward_pre_hook(lambda m, a, fn=fn: (fn(a[0]),) + tuple(a[1:])))
        try:
            return [model(torch.tensor([x])).logits[0].double() for x in ids]
        finally:
            for h in handles:
                h.remove()

    means, clean_acts = {}, {}
    for m in masks:
        if m.get("mode") == "resample":
            for site, _, _ in targets(m):
                mod, kind = site_module(site)
                rows = []
                run([(mod, kind, lambda x, rows=rows: rows.append(x[0].clone()) or x)])
                clean_acts[site] = rows
        if m.get("mode") == "mean":
            for site, _, _ in targets(m):
                mod, kind = site_module(site)
                rows = []
                run([(mod, kind, lambda x, rows=rows: rows.append(x[0].clone()) or x)])
                means[site] = torch.cat(rows).double().mean(0)

    clean = run([])
    results = {}
    for m in masks:
        hooks = []
        current = {"prompt": 0}
        for site, units, heads in targets(m):
            mod, kind = site_module(site)

            def fn(x, site=site, units=units, heads=heads, m=m):
                y = x.clone()
                idx = unit_index(site, units, heads, y.shape[-1])
                pos = m.get("positions")
                sel = slice(None) if pos is None else [p for p in pos if p < y.shape[1]]
                mode = m.get("mode", "zero")
                block = y[0, sel][:, idx]
                if mode == "zero":
                    block = torch.zeros_like(block)
                elif mode == "scale":
                    block = block * m["factor"]
                elif mode == "mean":
                    block = means[site][idx].float().expand_as(block).clone()
                elif mode == "resample":
                    i = current["prompt"]
                    src = clean_acts[site][donor(m.get("seed", 0), i, len(ids))]
                    t = torch.arange(y.shape[1])[sel] if pos is not None else torch.arange(y.shape[1])
                    t = torch.clamp(t, max=src.shape[0] - 1)
                    block = src[t][:, idx].clone()
                else:
                    raise ValueError(mode)
                rows = y[0, sel]
                rows[:, idx] = block
                y[0, sel] = rows
                return y
            hooks.append((mod, kind, fn))
        outs = []
        for i in range(len(ids)):
            current["prompt"] = i
            ids_i = ids
            outs.append(run_one(hooks, ids_i[i]))
        results[m["name"]] = outs

    def metrics(logits, ref):
        out = {k: [] for k in ("loss", "acc", "logitdiff", "kl")}
        for i, (lg, x) in enumerate(zip(logits, ids)):
            lp = torch.log_softmax(lg, -1)
            tgt = torch.tensor(x[1:])
            out["loss"].append(float(-lp[:-1].gather(1, tgt[:, None]).mean()))
            out["acc"].append(float((lp[:-1].argmax(-1) == tgt).double().mean()))
            a = tok.encode(prompts[i]["answer"]).ids[0]
            w = tok.encode(prompts[i]["wrong"]).ids[0]
            out["logitdiff"].append(float(lg[-1, a] - lg[-1, w]))
            if ref is None:
                out["kl"].append(0.0)
            else:
                lpc = torch.log_softmax(ref[i], -1)
                out["kl"].append(float((lpc.exp() * (lpc - lp)).sum(-1).mean()))
        return out

    with h5py.File("tests/data/golden/ablate-tiny-gpt2.h5", "w") as f:
        f.attrs["generator"] = "tests/gen/gen_ablate_goldens.py"
        f.attrs["torch"] = str(torch.__version__)
        for k, v in metrics(clean, None).items():
            if k != "kl":
                f.create_dataset(f"clean/{k}", data=np.array(v, dtype=np.float32))
        for name, lg in results.items():
            for k, v in metrics(lg, clean).items():
                f.create_dataset(f"ablate/{name}/{k}", data=np.array(v, dtype=np.float32))
    print("wrote tests/data/golden/ablate-tiny-gpt2.h5")


if __name__ == "__main__":
    main()
