#!/usr/bin/env python3
"""Make a random-weight GPT-2 model directory and a prompts file for the benchmarks.

The weights are random (transformers' own initialisation, fixed seed): speed does not
depend on their values, and no download is needed. The model is saved with
save_pretrained as F32 safetensors, exactly what users feed `subscope forward`.
The prompts are random token ids ({"tokens": [...]} JSONL), so no tokenizer is needed.

Without torch/transformers (e.g. a GPU machine with no network), or with --stdlib, the
same files are written by the standard library alone: the key names, shapes and F32
layout of save_pretrained (transformer.-prefixed, lm_head tied), N(0, 0.02) weights
(a block of 2^20 seeded Gaussian floats repeated at a per-tensor offset), layernorm
weights 1 and biases 0, c_proj weights N(0, 0.02/sqrt(2 n_layer)) as in GPT-2.

    python3 bench/make_model.py --out bench/work/gpt2-small            # GPT-2 small shape
    python3 bench/make_model.py --out bench/work/gpt2-6l --small       # 6 layers, d=512
    python3 bench/make_model.py --out bench/work/gpt2-large --shape gpt2-large --prompts none
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
    # GPT-2 medium (355M) and large (774M), for the GPU benchmarks.
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, vocab_size=50257, n_positions=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, vocab_size=50257, n_positions=1024),
}


def have_torch():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def config_json(shape):
    """What GPT2Config(**shape).save_pretrained writes, minus version fields."""
    return dict(
        activation_function="gelu_new", architectures=["GPT2LMHeadModel"], attn_pdrop=0.1, bos_token_id=50256,
        embd_pdrop=0.1, eos_token_id=50256, initializer_range=0.02, layer_norm_epsilon=1e-5, model_type="gpt2",
        n_ctx=shape["n_positions"], n_inner=None, reorder_and_upcast_attn=False, resid_pdrop=0.1,
        scale_attn_by_inverse_layer_idx=False, scale_attn_weights=True, tie_word_embeddings=True, use_cache=True,
        dtype="float32", **shape)


def write_stdlib(out, shape, seed):
    """Writes config.json and model.safetensors without torch (see the module doc)."""
    import array
    import random
    import struct

    d, L, V, P = shape["n_embd"], shape["n_layer"], shape["vocab_size"], shape["n_positions"]
    dm = 4 * d
    tensors = [("transformer.wte.weight", (V, d), 0.02), ("transformer.wpe.weight", (P, d), 0.01)]
    for l in range(L):
        h = f"transformer.h.{l}."
        proj = 0.02 / (2 * L) ** 0.5
        tensors += [
            (h + "ln_1.weight", (d,), "one"), (h + "ln_1.bias", (d,), "zero"),
            (h + "attn.c_attn.weight", (d, 3 * d), 0.02), (h + "attn.c_attn.bias", (3 * d,), "zero"),
            (h + "attn.c_proj.weight", (d, d), proj), (h + "attn.c_proj.bias", (d,), "zero"),
            (h + "ln_2.weight", (d,), "one"), (h + "ln_2.bias", (d,), "zero"),
            (h + "mlp.c_fc.weight", (d, dm), 0.02), (h + "mlp.c_fc.bias", (dm,), "zero"),
            (h + "mlp.c_proj.weight", (dm, d), proj), (h + "mlp.c_proj.bias", (d,), "zero"),
        ]
    tensors += [("transformer.ln_f.weight", (d,), "one"), ("transformer.ln_f.bias", (d,), "zero")]
    tensors.sort(key=lambda t: t[0])  # save_pretrained's order

    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shp, _ in tensors:
        n = 1
        for x in shp:
            n *= x
        header[name] = {"dtype": "F32", "shape": list(shp), "data_offsets": [off, off + 4 * n]}
        off += 4 * n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)

    rng = random.Random(seed)
    block_n = 1 << 20
    base = array.array("f", (rng.gauss(0.0, 1.0) for _ in range(block_n)))
    if sys.byteorder != "little":
        base.byteswap()
    tmp = os.path.join(out, "model.safetensors.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        scaled = {}
        for i, (name, shp, init) in enumerate(tensors):
            n = header[name]["data_offsets"][1] // 4 - header[name]["data_offsets"][0] // 4
            if init in ("one", "zero"):
                f.write(array.array("f", [1.0 if init == "one" else 0.0]).tobytes() * n)
                continue
            if init not in scaled:
                scaled[init] = array.array("f", (x * init for x in base)).tobytes()
            blk = scaled[init]
            start = (i * 7919 * 4) % len(blk)  # a different phase per tensor
            rot = blk[start:] + blk[:start]
            left = 4 * n
            while left:
                k = min(left, len(rot))
                f.write(rot[:k])
                left -= k
    os.replace(tmp, os.path.join(out, "model.safetensors"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config_json(shape), f, indent=2)
        f.write("\n")
    n_params = sum(header[k]["data_offsets"][1] - header[k]["data_offsets"][0] for k in header if k != "__metadata__")
    return n_params // 4


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="model directory to create (config.json, model.safetensors)")
    ap.add_argument("--small", action="store_true", help="6 layers, 8 heads, d=512 (same as --shape small)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default=None, help="model shape (default gpt2-small)")
    ap.add_argument("--stdlib", action="store_true", help="write the files without torch even if it is installed")
    ap.add_argument("--prompts", default=None,
                    help="prompts JSONL to write (default: OUT/prompts.jsonl; 'none': no prompts)")
    ap.add_argument("--n-prompts", type=int, default=32, help="number of prompts (default 32)")
    ap.add_argument("--tokens", type=int, default=128, help="tokens per prompt (default 128)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--force", action="store_true", help="rewrite the model even if it exists with the same shape")
    a = ap.parse_args()

    if a.small and a.shape not in (None, "small"):
        sys.exit("make_model.py: --small contradicts --shape " + a.shape)
    shape = SHAPES["small" if a.small else a.shape or "gpt2-small"]
    stdlib = a.stdlib or not have_torch()
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
    elif stdlib:
        n = write_stdlib(a.out, shape, a.seed)
        print(f"make_model.py: wrote {a.out} ({n / 1e6:.1f}M parameters, F32; standard library writer)")
    else:
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(a.seed)
        cfg = GPT2Config(**shape, n_ctx=shape["n_positions"])
        model = GPT2LMHeadModel(cfg).to(torch.float32).eval()
        model.save_pretrained(a.out, safe_serialization=True)
        n = sum(p.numel() for p in model.parameters())
        print(f"make_model.py: wrote {a.out} ({n / 1e6:.1f}M parameters, F32)")

    prompts = a.prompts or os.path.join(a.out, "prompts.jsonl")
    if prompts == "none":
        return
    if stdlib:
        import random
        rng = random.Random(a.seed + 1)
        rows = [[rng.randrange(shape["vocab_size"]) for _ in range(a.tokens)] for _ in range(a.n_prompts)]
    else:
        import torch
        g = torch.Generator().manual_seed(a.seed + 1)
        rows = torch.randint(0, shape["vocab_size"], (a.n_prompts, a.tokens), generator=g).tolist()
    with open(prompts, "w") as f:
        for row in rows:
            f.write(json.dumps({"tokens": row}) + "\n")
    print(f"make_model.py: wrote {prompts} ({a.n_prompts} prompts x {a.tokens} tokens)")


if __name__ == "__main__":
    main()
