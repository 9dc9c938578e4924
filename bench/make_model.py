#!/usr/bin/env python3
"""Make a random-weight GPT-2 model directory and a prompts file for the benchmarks.

The weights are random (transformers' own initialisation, fixed seed): speed does not
depend on their values, and no download is needed. The model is saved with
save_pretrained as F32 safetensors, exactly what users feed `subscope forward`.
The prompts are random token ids ({"tokens": [...]} JSONL), so no tokenizer is needed.

    python3 bench/make_model.py --out bench/work/gpt2-small            # GPT-2 small shape
    python3 bench/make_model.py --out bench/work/gpt2-6l --small       # 6 layers, d=512
"""
import argparse
import json
import os
import sys

SHAPES = {
    # GPT-2 small (124M parameters).
    "gpt2-small": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024),
    # A faster variant for small or shared machines; same vocabulary and context.
    "small": dict(n_layer=6, n_head=8, n_embd=512, vocab_size=50257, n_positions=1024),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="model directory to create (config.json, model.safetensors)")
    ap.add_argument("--small", action="store_true", help="6 layers, 8 heads, d=512 instead of GPT-2 small")
    ap.add_argument("--prompts", default=None, help="prompts JSONL to write (default: OUT/prompts.jsonl)")
    ap.add_argument("--n-prompts", type=int, default=32, help="number of prompts (default 32)")
    ap.add_argument("--tokens", type=int, default=128, help="tokens per prompt (default 128)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--force", action="store_true", help="rewrite the model even if it exists with the same shape")
    a = ap.parse_args()

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    shape = SHAPES["small" if a.small else "gpt2-small"]
    if a.tokens < 1 or a.tokens > shape["n_positions"]:
        sys.exit(f"make_model.py: --tokens must be in 1..{shape['n_positions']}")
    if a.n_prompts < 1:
        sys.exit("make_model.py: --n-prompts must be at least 1")
    os.makedirs(a.out, exist_ok=True)

    cfg_path = os.path.join(a.out, "config.json")
    st_path = os.path.join(a.out, "model.safetensors")
    same = False
    if not a.force and os.path.exists(cfg_path) and os.path.exists(st_path):
        with open(cfg_path) as f:
            old = json.load(f)
        same = all(old.get(k) == v for k, v in shape.items())
    if same:
        print(f"make_model.py: {a.out} already holds this shape; keeping it (--force rewrites)")
    else:
        torch.manual_seed(a.seed)
        cfg = GPT2Config(**shape, n_ctx=shape["n_positions"])
        model = GPT2LMHeadModel(cfg).to(torch.float32).eval()
        model.save_pretrained(a.out, safe_serialization=True)
        n = sum(p.numel() for p in model.parameters())
        print(f"make_model.py: wrote {a.out} ({n / 1e6:.1f}M parameters, F32)")

    prompts = a.prompts or os.path.join(a.out, "prompts.jsonl")
    g = torch.Generator().manual_seed(a.seed + 1)
    ids = torch.randint(0, shape["vocab_size"], (a.n_prompts, a.tokens), generator=g)
    with open(prompts, "w") as f:
        for row in ids.tolist():
            f.write(json.dumps({"tokens": row}) + "\n")
    print(f"make_model.py: wrote {prompts} ({a.n_prompts} prompts x {a.tokens} tokens)")


if __name__ == "__main__":
    main()
