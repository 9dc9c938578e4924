#!/usr/bin/env python3
"""Make a random-weight GPT-2 or Llama-family model directory and a prompts file for the benchmarks.

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
    python3 bench/make_model.py --out bench/work/smollm2-135m --family llama       # SmolLM2-135M shape
    python3 bench/make_model.py --out bench/work/llama-7b --shape llama-7b --dtype bf16 --stdlib --prompts none

Llama-family shapes (--family llama, or --shape smollm2-135m / llama-1b / llama-7b / llama-tiny)
are LlamaForCausalLM directories: transformers' initialisation (N(0, 0.02) linears and
embeddings, RMSNorm weights 1) or, by the standard library, the same keys, shapes and
[out, in] layout that save_pretrained writes (embed_tokens, q/k/v/o_proj, gate/up/down_proj,
input/post_attention_layernorm, norm; lm_head only when untied), all N(0, 0.02) from the
seeded block, norms 1. --dtype bf16 writes BF16 tensors (the stdlib writer rounds fp32 to
nearest even). Either writer splits the weights into model-0000k-of-0000N.safetensors with a
model.safetensors.index.json when they exceed --max-shard-mb (5000, save_pretrained's 5GB):
tensors in state-dict order, a new shard when the next one would overflow the current one.
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

# Llama-family shapes (LlamaForCausalLM: RMSNorm, rotary, grouped-query attention, SwiGLU).
# The key names are LlamaConfig's; head_dim = hidden_size / num_attention_heads throughout.
LLAMA_SHAPES = {
    # SmolLM2-135M (134.5M parameters, tied).
    "smollm2-135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=0),
    # Llama-3.2-1B (1.24B parameters, tied, llama3 rope scaling).
    "llama-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
                     max_position_embeddings=131072, rms_norm_eps=1e-5, bos_token_id=128000, eos_token_id=128001,
                     rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                       original_max_position_embeddings=8192)),
    # Llama-2-7B (6.74B parameters, untied, no GQA).
    "llama-7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                     intermediate_size=11008, vocab_size=32000, tie_word_embeddings=False, rope_theta=10000.0,
                     max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2),
    # A tiny one for checking the writers and the drivers (seconds, a few MB).
    "llama-tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=160, vocab_size=512, tie_word_embeddings=False, rope_theta=500000.0,
                       max_position_embeddings=256, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                       rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                         original_max_position_embeddings=64)),
}
for _s in LLAMA_SHAPES.values():
    _s["head_dim"] = _s["hidden_size"] // _s["num_attention_heads"]
# What decides whether an existing directory already holds the shape asked for.
STRUCTURE_KEYS = set(SHAPES["small"]) | {"hidden_size", "num_hidden_layers", "num_attention_heads",
                                         "num_key_value_heads", "intermediate_size", "vocab_size",
                                         "tie_word_embeddings", "head_dim"}
DEFAULT_SHAPE = {"gpt2": "gpt2-small", "llama": "smollm2-135m"}


def family_of(shape_name):
    return "llama" if shape_name in LLAMA_SHAPES else "gpt2"


def n_positions(family, shape):
    return shape["n_positions"] if family == "gpt2" else shape["max_position_embeddings"]


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


def llama_config_json(shape):
    """What LlamaConfig(**shape).save_pretrained writes, minus version fields, in the spelling
    released checkpoints carry (rope_theta + rope_scaling; subscope and transformers read both)."""
    cfg = dict(architectures=["LlamaForCausalLM"], attention_bias=False, attention_dropout=0.0, hidden_act="silu",
               initializer_range=0.02, mlp_bias=False, model_type="llama", pad_token_id=None, pretraining_tp=1,
               use_cache=True, dtype="float32")
    cfg.update(shape)
    cfg.setdefault("rope_scaling", None)
    return dict(sorted(cfg.items()))


def gpt2_tensors(shape):
    """(name, shape, init) in the order of GPT2LMHeadModel's state dict (lm_head tied)."""
    d, L, V, P = shape["n_embd"], shape["n_layer"], shape["vocab_size"], shape["n_positions"]
    dm = 4 * d
    proj = 0.02 / (2 * L) ** 0.5
    tensors = [("transformer.wte.weight", (V, d), 0.02), ("transformer.wpe.weight", (P, d), 0.01)]
    for l in range(L):
        h = f"transformer.h.{l}."
        tensors += [
            (h + "ln_1.weight", (d,), "one"), (h + "ln_1.bias", (d,), "zero"),
            (h + "attn.c_attn.weight", (d, 3 * d), 0.02), (h + "attn.c_attn.bias", (3 * d,), "zero"),
            (h + "attn.c_proj.weight", (d, d), proj), (h + "attn.c_proj.bias", (d,), "zero"),
            (h + "ln_2.weight", (d,), "one"), (h + "ln_2.bias", (d,), "zero"),
            (h + "mlp.c_fc.weight", (d, dm), 0.02), (h + "mlp.c_fc.bias", (dm,), "zero"),
            (h + "mlp.c_proj.weight", (dm, d), proj), (h + "mlp.c_proj.bias", (d,), "zero"),
        ]
    tensors += [("transformer.ln_f.weight", (d,), "one"), ("transformer.ln_f.bias", (d,), "zero")]
    return tensors


def llama_tensors(shape):
    """(name, shape, init) in the order of LlamaForCausalLM's state dict: nn.Linear weights are
    [out, in]; no biases; lm_head only when untied (save_pretrained drops a tied one)."""
    d, L, V, f = shape["hidden_size"], shape["num_hidden_layers"], shape["vocab_size"], shape["intermediate_size"]
    H, Hkv = shape["num_attention_heads"], shape["num_key_value_heads"]
    dh = shape.get("head_dim") or d // H
    std = 0.02  # LlamaConfig.initializer_range; transformers scales no projection by depth
    tensors = [("model.embed_tokens.weight", (V, d), std)]
    for l in range(L):
        h = f"model.layers.{l}."
        tensors += [
            (h + "self_attn.q_proj.weight", (H * dh, d), std), (h + "self_attn.k_proj.weight", (Hkv * dh, d), std),
            (h + "self_attn.v_proj.weight", (Hkv * dh, d), std), (h + "self_attn.o_proj.weight", (d, H * dh), std),
            (h + "mlp.gate_proj.weight", (f, d), std), (h + "mlp.up_proj.weight", (f, d), std),
            (h + "mlp.down_proj.weight", (d, f), std),
            (h + "input_layernorm.weight", (d,), "one"), (h + "post_attention_layernorm.weight", (d,), "one"),
        ]
    tensors.append(("model.norm.weight", (d,), "one"))
    if not shape["tie_word_embeddings"]:
        tensors.append(("lm_head.weight", (V, d), std))
    return tensors


def numel(shp):
    n = 1
    for x in shp:
        n *= x
    return n


def remove_weights(out):
    """Old weight files go first: a directory holding both model.safetensors and an index (or
    shards of another split) would be read inconsistently."""
    for name in os.listdir(out):
        if name == "model.safetensors" or name == "model.safetensors.index.json" or \
                (name.startswith("model-") and name.endswith(".safetensors")):
            os.remove(os.path.join(out, name))


def write_stdlib(out, family, shape, seed, dtype="f32", max_shard_bytes=5 * 10**9):
    """Writes config.json and the safetensors file(s) without torch (see the module doc).
    Returns the parameter count."""
    import array
    import random
    import struct

    tensors = gpt2_tensors(shape) if family == "gpt2" else llama_tensors(shape)
    es, st_dtype = (4, "F32") if dtype == "f32" else (2, "BF16")

    # Shards as save_pretrained cuts them: tensors in state-dict order, a new file when the
    # next tensor would take this one over the limit.
    shards = [[]]
    size = 0
    for t in tensors:
        nb = es * numel(t[1])
        if shards[-1] and size + nb > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += nb

    rng = random.Random(seed)
    block_n = 1 << 20
    base = array.array("f", (rng.gauss(0.0, 1.0) for _ in range(block_n)))
    scaled = {}

    def block(init):
        """2^20 seeded N(0, init^2) values in the file's dtype, little-endian."""
        if init not in scaled:
            a = array.array("f", (x * init for x in base))
            if dtype == "bf16":
                # Round to nearest even on the top 16 bits of each fp32 (no NaN/Inf here).
                u = array.array("I", a.tobytes())
                a = array.array("H", ((x + 0x7FFF + ((x >> 16) & 1)) >> 16 for x in u))
            if sys.byteorder != "little":
                a.byteswap()
            scaled[init] = a.tobytes()
        return scaled[init]

    const = {"one": struct.pack("<f", 1.0) if es == 4 else struct.pack("<H", 0x3F80), "zero": bytes(es)}
    names = []
    n_files = len(shards)
    weight_map = {}
    for k, shard in enumerate(shards):
        shard = sorted(shard, key=lambda t: t[0])  # save_pretrained's order within a file
        fname = "model.safetensors" if n_files == 1 else f"model-{k + 1:05d}-of-{n_files:05d}.safetensors"
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for name, shp, _ in shard:
            nb = es * numel(shp)
            header[name] = {"dtype": st_dtype, "shape": list(shp), "data_offsets": [off, off + nb]}
            off += nb
            weight_map[name] = fname
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * (-len(hb) % 8)
        tmp = os.path.join(out, fname + ".tmp")
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            for i, (name, shp, init) in enumerate(shard):
                left = es * numel(shp)
                if init in const:
                    f.write(const[init] * (left // es))
                    continue
                blk = block(init)
                start = (i * 7919 * es) % len(blk)  # a different phase per tensor
                rot = blk[start:] + blk[:start]
                while left:
                    m = min(left, len(rot))
                    f.write(rot[:m])
                    left -= m
        names.append((tmp, os.path.join(out, fname)))
    remove_weights(out)
    for tmp, final in names:
        os.replace(tmp, final)
    if n_files > 1:
        total = sum(es * numel(t[1]) for t in tensors)
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
            f.write("\n")
    cfg = config_json(shape) if family == "gpt2" else llama_config_json(shape)
    cfg["dtype"] = "float32" if dtype == "f32" else "bfloat16"
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    return sum(numel(t[1]) for t in tensors)


def weights_present(out):
    return os.path.exists(os.path.join(out, "model.safetensors")) or \
        os.path.exists(os.path.join(out, "model.safetensors.index.json"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="model directory to create (config.json, safetensors)")
    ap.add_argument("--small", action="store_true", help="6 layers, 8 heads, d=512 (same as --shape small)")
    ap.add_argument("--family", choices=["gpt2", "llama"], default=None,
                    help="gpt2 (GPT2LMHeadModel) or llama (LlamaForCausalLM); default: the shape's family, else gpt2")
    ap.add_argument("--shape", choices=sorted(SHAPES) + sorted(LLAMA_SHAPES), default=None,
                    help="model shape (default gpt2-small, or smollm2-135m with --family llama)")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32", help="weights in the safetensors (default f32)")
    ap.add_argument("--max-shard-mb", type=float, default=5000,
                    help="largest safetensors file in MB (10^6 bytes) before the weights are split into shards "
                         "with a model.safetensors.index.json (default 5000, save_pretrained's 5GB)")
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
    name = "small" if a.small else a.shape or DEFAULT_SHAPE[a.family or "gpt2"]
    family = family_of(name)
    if a.family and a.family != family:
        sys.exit(f"make_model.py: --shape {name} is a {family} shape, not {a.family}")
    shape = SHAPES[name] if family == "gpt2" else LLAMA_SHAPES[name]
    stdlib = a.stdlib or not have_torch()
    max_pos = n_positions(family, shape)
    if a.tokens < 1 or a.tokens > max_pos:
        sys.exit(f"make_model.py: --tokens must be in 1..{max_pos}")
    if a.n_prompts < 1:
        sys.exit("make_model.py: --n-prompts must be at least 1")
    if a.max_shard_mb <= 0:
        sys.exit("make_model.py: --max-shard-mb must be positive")
    os.makedirs(a.out, exist_ok=True)

    cfg_path = os.path.join(a.out, "config.json")
    want_dtype = "float32" if a.dtype == "f32" else "bfloat16"
    same = False
    if not a.force and os.path.exists(cfg_path) and weights_present(a.out):
        with open(cfg_path) as f:
            old = json.load(f)
        same = all(old.get(k) == v for k, v in shape.items() if k in STRUCTURE_KEYS) and \
            (old.get("dtype") or old.get("torch_dtype")) == want_dtype
    label = f"{name}, {a.dtype.upper()}"
    if same:
        print(f"make_model.py: {a.out} already holds this shape ({label}); keeping it (--force rewrites)")
    elif stdlib:
        n = write_stdlib(a.out, family, shape, a.seed, a.dtype, int(a.max_shard_mb * 10**6))
        print(f"make_model.py: wrote {a.out} ({label}, {n / 1e6:.1f}M parameters; standard library writer)")
    else:
        import torch

        torch.manual_seed(a.seed)
        tdtype = torch.float32 if a.dtype == "f32" else torch.bfloat16
        if family == "gpt2":
            from transformers import GPT2Config, GPT2LMHeadModel
            model = GPT2LMHeadModel(GPT2Config(**shape, n_ctx=shape["n_positions"]))
        else:
            from transformers import LlamaConfig, LlamaForCausalLM
            # Built directly in the target dtype: a 7B shape in fp32 would need 27 GB of RAM.
            torch.set_default_dtype(tdtype)
            try:
                model = LlamaForCausalLM(LlamaConfig(**shape))
            finally:
                torch.set_default_dtype(torch.float32)
        model = model.to(tdtype).eval()
        remove_weights(a.out)
        model.save_pretrained(a.out, safe_serialization=True, max_shard_size=int(a.max_shard_mb * 10**6))
        n = sum(p.numel() for p in model.parameters())
        print(f"make_model.py: wrote {a.out} ({label}, {n / 1e6:.1f}M parameters)")

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
