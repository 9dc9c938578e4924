#!/usr/bin/env python3
"""Hugging Face reference data for subscope's Llama-family forward and backward passes (issue 9).

    python tests/gen/gen_llama_goldens.py            # everything, ~20 s on one CPU thread
    python tests/gen/gen_llama_goldens.py --only qwen2-bias-tied

For each random-weight config in CONFIGS it writes
    tests/data/models/<name>/            config.json + safetensors (dtype / shards vary per config)
    tests/data/golden/<name>.jsonl       the prompts, {"tokens": [...]} per line
    tests/data/golden/<name>.h5          tokens, lengths, logits and every site (as gen_gpt2_goldens.py)
    tests/data/golden/attr-<name>-loss-grad.h5
                                         what `subscope attribute --sites '*' --metric loss --method grad`
                                         must write: /metric [N], /attr/<site> [N,T,...]

The reference is transformers' LlamaForCausalLM / Qwen2ForCausalLM / MistralForCausalLM (fp32,
eager attention, eval) loaded back from the files written here. Sites are taken by hooks on its
modules and by wrapping the modeling module's apply_rotary_pos_emb (for hook_rot_q / hook_rot_k,
which no module outputs); names and shapes follow TransformerLens (hook_k, hook_v, hook_rot_k have
the key/value heads). Gradients are torch.autograd.grad of each prompt's mean next-token
cross-entropy with respect to the captured tensors themselves, so a tensor used twice (the
residual stream) gets its total derivative. Every real position is computed from its prompt
alone (batch of one); padding positions are NaN; a 1-token prompt has a NaN loss and NaN
attributions. Deterministic: fixed seeds, CPU, one thread.

The configs cover what issue 9 names: grouped-query attention (6/2, 4/2, 4/1 heads), rope_theta
other than 10000, llama3 and linear rope scaling, tied and untied embeddings, Qwen2's q/k/v
biases, Llama's attention_bias and mlp_bias, a head_dim that is not hidden/heads, F32 / F16 /
BF16 weights, a sharded index, and both config spellings (transformers 5's "rope_parameters"
and the "rope_theta" + "rope_scaling" that released checkpoints carry).
"""
import argparse
import json
import os

import h5py
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(ROOT, "tests", "data", "models")
GOLDEN = os.path.join(ROOT, "tests", "data", "golden")

CONFIGS = [
    # GQA 6/2, rope_theta 5e5, llama3 scaling with a short original context so that all three
    # frequency bands occur at d_head 8; untied; F32; legacy config spelling.
    dict(name="llama-gqa-llama3", kind="llama", seed=201, dtype="F32", shards=1, legacy=True,
         cfg=dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
                  num_key_value_heads=2, vocab_size=113, max_position_embeddings=40, rms_norm_eps=1e-5,
                  rope_theta=500000.0, tie_word_embeddings=False,
                  rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                    original_max_position_embeddings=16))),
    # Qwen2: q/k/v biases, tied embeddings, rope_theta 1e6, F16 in two shards.
    dict(name="qwen2-bias-tied", kind="qwen2", seed=202, dtype="F16", shards=2, legacy=False,
         cfg=dict(hidden_size=32, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=97, max_position_embeddings=32, rms_norm_eps=1e-6,
                  rope_theta=1000000.0, tie_word_embeddings=True)),
    # head_dim 6 (not 40/4), one kv head, attention_bias + mlp_bias, linear scaling, BF16.
    dict(name="llama-hd6-bias", kind="llama", seed=203, dtype="BF16", shards=1, legacy=False,
         cfg=dict(hidden_size=40, intermediate_size=56, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=1, head_dim=6, vocab_size=89, max_position_embeddings=32,
                  rms_norm_eps=1e-5, rope_theta=10000.0, attention_bias=True, mlp_bias=True,
                  tie_word_embeddings=False, rope_scaling=dict(rope_type="linear", factor=2.0))),
    # Mistral layout (no biases), a sliding window wider than the context.
    dict(name="mistral-small", kind="mistral", seed=204, dtype="F32", shards=1, legacy=False,
         cfg=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=71, max_position_embeddings=24, rms_norm_eps=1e-5,
                  rope_theta=10000.0, sliding_window=4096, tie_word_embeddings=False)),
]
CONFIG_CLASS = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}
ARCH = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
TORCH_DTYPE = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
CONFIG_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}

BLOCK_SITES = ["hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
               "attn.hook_rot_q", "attn.hook_rot_k", "attn.hook_pattern", "attn.hook_z", "hook_attn_out",
               "hook_resid_mid", "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post",
               "hook_mlp_out", "hook_resid_post"]


def all_sites(n_layer):
    s = ["hook_embed"]
    for L in range(n_layer):
        s += [f"blocks.{L}.{x}" for x in BLOCK_SITES]
    return s + ["ln_final.hook_normalized"]


def check_close(what, a, b, atol=1e-5, rtol=1e-5):
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    err = ((a - b).abs() - rtol * b.abs()).max().item() if a.numel() else 0.0
    assert err <= atol, f"{what}: max excess error {err:.3g} > {atol:g}"


def random_model(c):
    cfg = CONFIG_CLASS[c["kind"]](**c["cfg"], attention_dropout=0.0, bos_token_id=0, eos_token_id=1)
    torch.manual_seed(c["seed"])
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    g = torch.Generator().manual_seed(c["seed"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name:
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.2 * noise)
    return model


def save_model_dir(model, c, d):
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    sd = model.state_dict()
    tied = c["cfg"].get("tie_word_embeddings", False)
    tensors = {k: v.detach().to(TORCH_DTYPE[c["dtype"]]).contiguous() for k, v in sd.items()
               if not (tied and k == "lm_head.weight")}
    cfg = model.config
    cfg.architectures = [ARCH[c["kind"]]]
    cfg.dtype = CONFIG_DTYPE[c["dtype"]]
    cfg.save_pretrained(d)
    if c["legacy"]:
        # As released Llama-3 checkpoints spell it: rope_theta and rope_scaling at the top level.
        p = os.path.join(d, "config.json")
        j = json.load(open(p))
        rp = j.pop("rope_parameters")
        j["rope_theta"] = rp.pop("rope_theta")
        j["rope_scaling"] = rp if rp.get("rope_type", "default") != "default" else None
        json.dump(j, open(p, "w"), indent=2, sort_keys=True)
    meta = {"format": "pt"}
    if c["shards"] == 1:
        save_file(tensors, os.path.join(d, "model.safetensors"), metadata=meta)
        return
    names = list(tensors)
    n = c["shards"]
    per = (len(names) + n - 1) // n
    weight_map, total = {}, 0
    for i in range(n):
        fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        part = {k: tensors[k] for k in names[i * per:(i + 1) * per]}
        save_file(part, os.path.join(d, fname), metadata=meta)
        for k, v in part.items():
            weight_map[k] = fname
            total += v.numel() * v.element_size()
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
        f.write("\n")


def load_reference(d):
    model, info = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager", dtype=torch.float32,
                                                       output_loading_info=True)
    model.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model


class Capture:
    """Hooks on the HF modules (and the modeling module's rotary function); fills self.acts
    with the very tensors the model computes with, so autograd can differentiate at them."""

    def __init__(self, model):
        self.acts = {}
        self.handles = []
        cfg = model.config
        self.H, self.Hkv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.H
        self.mod = __import__(type(model).__module__, fromlist=["apply_rotary_pos_emb"])
        self.orig_rope = self.mod.apply_rotary_pos_emb
        self.layer = None

        def rope(q, k, cos, sin, *a, **kw):
            qr, kr = self.orig_rope(q, k, cos, sin, *a, **kw)
            # [1, heads, T, dh] -> [T, heads, dh]
            self.acts[self.layer + "attn.hook_rot_q"] = qr
            self.acts[self.layer + "attn.hook_rot_k"] = kr
            return qr, kr
        self.mod.apply_rotary_pos_emb = rope

        def out_hook(site, fn=None):
            def h(_m, _args, out):
                o = out[0] if isinstance(out, tuple) else out
                self.acts[site] = fn(o) if fn else o
            return h

        def in_hook(site):
            def h(_m, args, kwargs):
                self.acts[site] = args[0] if args else kwargs["hidden_states"]
            return h

        reg = self.handles.append
        m = model.model
        reg(m.embed_tokens.register_forward_hook(out_hook("hook_embed")))
        for L, blk in enumerate(m.layers):
            p = f"blocks.{L}."

            def set_layer(_m, _args, p=p):
                self.layer = p
            reg(blk.register_forward_pre_hook(set_layer))
            reg(blk.register_forward_pre_hook(in_hook(p + "hook_resid_pre"), with_kwargs=True))
            reg(blk.input_layernorm.register_forward_hook(out_hook(p + "ln1.hook_normalized")))
            a = blk.self_attn
            reg(a.q_proj.register_forward_hook(out_hook(p + "attn.hook_q")))
            reg(a.k_proj.register_forward_hook(out_hook(p + "attn.hook_k")))
            reg(a.v_proj.register_forward_hook(out_hook(p + "attn.hook_v")))
            reg(a.register_forward_hook(lambda _m, _a, out, p=p: self.acts.__setitem__(p + "attn.hook_pattern", out[1])))
            reg(a.o_proj.register_forward_pre_hook(in_hook(p + "attn.hook_z"), with_kwargs=True))
            reg(a.register_forward_hook(out_hook(p + "hook_attn_out")))
            reg(blk.post_attention_layernorm.register_forward_pre_hook(in_hook(p + "hook_resid_mid"), with_kwargs=True))
            reg(blk.post_attention_layernorm.register_forward_hook(out_hook(p + "ln2.hook_normalized")))
            reg(blk.mlp.gate_proj.register_forward_hook(out_hook(p + "mlp.hook_pre")))
            reg(blk.mlp.up_proj.register_forward_hook(out_hook(p + "mlp.hook_pre_linear")))
            reg(blk.mlp.down_proj.register_forward_pre_hook(in_hook(p + "mlp.hook_post"), with_kwargs=True))
            reg(blk.mlp.register_forward_hook(out_hook(p + "hook_mlp_out")))
            reg(blk.register_forward_hook(out_hook(p + "hook_resid_post")))
        reg(m.norm.register_forward_hook(out_hook("ln_final.hook_normalized")))

    def shaped(self, site, x):
        """The batch-of-one tensor as the golden stores it ([T, ...] or [H, T, T])."""
        leaf = site.split(".")[-1]
        if leaf in ("hook_rot_q", "hook_rot_k"):
            return x[0].transpose(0, 1)
        if leaf == "hook_pattern":
            return x[0]
        if leaf in ("hook_q", "hook_z"):
            return x[0].reshape(x.shape[1], self.H, self.dh)
        if leaf in ("hook_k", "hook_v"):
            return x[0].reshape(x.shape[1], self.Hkv, self.dh)
        return x[0]

    def run(self, model, ids, grad=False):
        self.acts = {}
        with torch.set_grad_enabled(grad):
            out = model(input_ids=torch.tensor([ids]), use_cache=False)
        return out, dict(self.acts)

    def remove(self):
        self.mod.apply_rotary_pos_emb = self.orig_rope
        for h in self.handles:
            h.remove()


def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def self_check(model, ids, out, a, cap, what):
    """The captured values agree with each other and with the model's weights."""
    cfg = model.config
    nL, eps, T = cfg.num_hidden_layers, cfg.rms_norm_eps, len(ids)
    m = model.model
    sh = {s: cap.shaped(s, v).detach() for s, v in a.items()}
    assert set(sh) == set(all_sites(nL)), set(sh) ^ set(all_sites(nL))
    check_close(f"{what} embed", sh["hook_embed"], m.embed_tokens.weight[ids], 0, 0)
    check_close(f"{what} resid_pre0", sh["blocks.0.hook_resid_pre"], sh["hook_embed"], 0, 0)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    G = cap.H // cap.Hkv
    for L in range(nL):
        p = f"blocks.{L}."
        blk = m.layers[L]
        x = sh[p + "hook_resid_pre"]
        if L:
            check_close(f"{what} {p}pre==post", x, sh[f"blocks.{L - 1}.hook_resid_post"], 0, 0)
        check_close(f"{what} {p}ln1", sh[p + "ln1.hook_normalized"], rms(x, blk.input_layernorm.weight, eps))
        qr, kr, v = sh[p + "attn.hook_rot_q"], sh[p + "attn.hook_rot_k"], sh[p + "attn.hook_v"]
        scores = torch.einsum("qhd,khd->hqk", qr, kr.repeat_interleave(G, 1)) / cap.dh ** 0.5
        pat = sh[p + "attn.hook_pattern"]
        check_close(f"{what} {p}pattern", pat, torch.softmax(scores.masked_fill(~causal, -torch.inf), -1))
        check_close(f"{what} {p}z", sh[p + "attn.hook_z"], torch.einsum("hqk,khd->qhd", pat, v.repeat_interleave(G, 1)))
        check_close(f"{what} {p}mid", sh[p + "hook_resid_mid"], x + sh[p + "hook_attn_out"], 1e-6)
        check_close(f"{what} {p}ln2", sh[p + "ln2.hook_normalized"],
                    rms(sh[p + "hook_resid_mid"], blk.post_attention_layernorm.weight, eps))
        check_close(f"{what} {p}post", sh[p + "mlp.hook_post"],
                    F.silu(sh[p + "mlp.hook_pre"]) * sh[p + "mlp.hook_pre_linear"])
        check_close(f"{what} {p}resid_post", sh[p + "hook_resid_post"],
                    sh[p + "hook_resid_mid"] + sh[p + "hook_mlp_out"], 1e-6)
    check_close(f"{what} logits", out.logits[0].detach(), sh["ln_final.hook_normalized"] @ model.lm_head.weight.T)
    return sh


def check_padded_batch(model, prompts, single_logits):
    T = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), T, dtype=torch.long)
    mask = torch.zeros(len(prompts), T, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, :len(p)] = torch.tensor(p)
        mask[i, :len(p)] = 1
    with torch.no_grad():
        lg = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    for i, p in enumerate(prompts):
        check_close(f"padded batch prompt {i}", lg[i, :len(p)], single_logits[i], 1e-5, 0)


def site_shape(site, N, T, cfg, dh):
    H, Hkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size
    leaf = site.split(".")[-1]
    if leaf == "hook_pattern":
        return (N, H, T, T)
    if leaf in ("hook_q", "hook_rot_q", "hook_z"):
        return (N, T, H, dh)
    if leaf in ("hook_k", "hook_v", "hook_rot_k"):
        return (N, T, Hkv, dh)
    if ".mlp.hook_" in site:
        return (N, T, cfg.intermediate_size)
    return (N, T, d)


def write_h5(path, attrs, datasets):
    tmp = path + ".tmp"
    kw = dict(compression="gzip", compression_opts=9, shuffle=True)
    with h5py.File(tmp, "w", libver=("v110", "v110")) as f:
        for k, v in attrs.items():
            f.attrs[k] = str(v)
        for k, v in datasets.items():
            f.create_dataset(k, data=v, **(kw if v.ndim > 1 else {}))
    os.replace(tmp, path)


def make_prompts(c):
    rng = np.random.default_rng(c["seed"])
    P, V = c["cfg"]["max_position_embeddings"], c["cfg"]["vocab_size"]
    mids = rng.choice(np.arange(2, max(5, 2 * P // 3)), size=3, replace=False)
    lengths = [int(mids[0]), 1, P, int(mids[1]), int(mids[2])]
    prompts = [[int(t) for t in rng.integers(0, V, n)] for n in lengths]
    prompts[2][0], prompts[2][-1] = 0, V - 1
    return prompts


def gen(c):
    d = os.path.join(MODELS, c["name"])
    save_model_dir(random_model(c), c, d)
    model = load_reference(d)
    cfg = model.config
    nL = cfg.num_hidden_layers
    prompts = make_prompts(c)
    cap = Capture(model)
    dh = cap.dh
    sites = all_sites(nL)
    grad_sites = [s for s in sites if not s.endswith("hook_pattern")]
    N, T, V = len(prompts), max(len(p) for p in prompts), cfg.vocab_size
    tokens = np.full((N, T), -1, dtype="<i4")
    lengths = np.array([len(p) for p in prompts], dtype="<i4")
    logits = np.full((N, T, V), np.nan, dtype="<f4")
    acts = {s: np.full(site_shape(s, N, T, cfg, dh), np.nan, dtype="<f4") for s in sites}
    grads = {s: np.full(site_shape(s, N, T, cfg, dh), np.nan, dtype="<f4") for s in grad_sites}
    metric = np.full(N, np.nan, dtype="<f4")
    single = []
    for i, p in enumerate(prompts):
        n = len(p)
        out, a = cap.run(model, p, grad=True)
        sh = self_check(model, p, out, a, cap, f"{c['name']} prompt {i}")
        single.append(out.logits[0].detach())
        tokens[i, :n] = p
        logits[i, :n] = out.logits[0].detach().numpy()
        for s in sites:
            if s.endswith("hook_pattern"):
                acts[s][i, :, :n, :n] = sh[s].numpy()
            else:
                acts[s][i, :n] = sh[s].numpy()
        if n > 1:
            loss = F.cross_entropy(out.logits[0, :-1], torch.tensor(p[1:]))
            metric[i] = loss.item()
            gs = torch.autograd.grad(loss, [a[s] for s in grad_sites])
            for s, g in zip(grad_sites, gs):
                grads[s][i, :n] = cap.shaped(s, g).numpy()
    cap.remove()
    check_padded_batch(model, prompts, single)
    with open(os.path.join(GOLDEN, c["name"] + ".jsonl"), "w") as f:
        for p in prompts:
            f.write(json.dumps({"tokens": p}) + "\n")
    ver = {"generator": "tests/gen/gen_llama_goldens.py", "torch": torch.__version__,
           "transformers": transformers.__version__}
    ds = {"tokens": tokens, "lengths": lengths, "logits": logits}
    ds.update({"acts/" + s: v for s, v in acts.items()})
    write_h5(os.path.join(GOLDEN, c["name"] + ".h5"), ver, ds)
    ds = {"metric": metric}
    ds.update({"attr/" + s: v for s, v in grads.items()})
    write_h5(os.path.join(GOLDEN, f"attr-{c['name']}-loss-grad.h5"), ver, ds)
    print(f"{c['name']}: {N} prompts, T={T}, {len(sites)} sites, loss {np.nanmean(metric):.4f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated config names")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(GOLDEN, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    for c in CONFIGS:
        if only is None or c["name"] in only:
            gen(c)


if __name__ == "__main__":
    main()
