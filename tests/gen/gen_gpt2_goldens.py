#!/usr/bin/env python3
"""Makes the GPT-2 reference data that subscope's forward pass is tested against.

    python tests/gen/gen_gpt2_goldens.py            # everything (run from the repo root or anywhere)
    python tests/gen/gen_gpt2_goldens.py --only bf16,tiny-gpt2

For each random-weight config in CONFIGS it writes
    tests/data/models/<name>/           config.json + safetensors (layout varies per config)
    tests/data/golden/<name>.jsonl      the prompts, {"tokens": [...]} per line
    tests/data/golden/<name>.h5         tokens, lengths, logits and every site
and for the bundled model models/tiny-gpt2 (which must exist: models/train_tiny.py)
    tests/data/golden/tiny-gpt2.jsonl, tiny-gpt2.h5, tiny-gpt2-predict.json

The reference is Hugging Face's GPT2LMHeadModel (fp32, eager attention, eval),
loaded back from the files written here, with activations taken by forward hooks
on its modules; nothing of the model is re-implemented except in the
self-consistency checks. Every real position is computed from its prompt alone
(batch of one); padding positions are NaN. Deterministic: fixed seeds, CPU.
"""
import argparse
import json
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(ROOT, "tests", "data", "models")
GOLDEN = os.path.join(ROOT, "tests", "data", "golden")
TINY = os.path.join(ROOT, "models", "tiny-gpt2")

CONFIGS = [
    # transformer. prefix, attn.bias / attn.masked_bias buffers in the file, tied lm_head.
    dict(name="prefix-f32", seed=101, n_layer=2, n_head=4, n_embd=32, vocab_size=97, n_positions=32,
         activation_function="gelu_new", tie=True, prefix=True, dtype="F32", shards=1, buffers=True),
    # no prefix, separate lm_head, odd sizes, erf GELU, small epsilon.
    dict(name="noprefix-odd-untied", seed=102, n_layer=3, n_head=3, n_embd=24, n_inner=40, vocab_size=101,
         n_positions=24, activation_function="gelu", layer_norm_epsilon=1e-6, tie=False, prefix=False,
         dtype="F32", shards=1, buffers=False),
    # F16, two shards + model.safetensors.index.json.
    dict(name="f16-sharded", seed=103, n_layer=2, n_head=2, n_embd=16, vocab_size=64, n_positions=16,
         activation_function="gelu_new", tie=True, prefix=True, dtype="F16", shards=2, buffers=False),
    # BF16, one file, no prefix.
    dict(name="bf16", seed=104, n_layer=1, n_head=4, n_embd=32, vocab_size=80, n_positions=24,
         activation_function="gelu_new", tie=True, prefix=False, dtype="BF16", shards=1, buffers=False),
]
TORCH_DTYPE = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
CONFIG_DTYPE = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}

SITES_PER_BLOCK = ["hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
                   "attn.hook_pattern", "attn.hook_z", "hook_attn_out", "hook_resid_mid",
                   "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post"]


def all_sites(n_layer):
    s = ["hook_embed", "hook_pos_embed"]
    for L in range(n_layer):
        s += [f"blocks.{L}.{x}" for x in SITES_PER_BLOCK]
    return s + ["ln_final.hook_normalized"]


def check_close(what, a, b, atol=1e-5, rtol=1e-5):
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
    err = ((a - b).abs() - rtol * b.abs()).max().item() if a.numel() else 0.0
    if not err <= atol:
        raise AssertionError(f"{what}: max excess error {err:.3g} > {atol:g}")


# ---------------------------------------------------------------- random models

def random_model(c):
    cfg = GPT2Config(vocab_size=c["vocab_size"], n_positions=c["n_positions"], n_embd=c["n_embd"],
                     n_layer=c["n_layer"], n_head=c["n_head"], n_inner=c.get("n_inner"),
                     activation_function=c["activation_function"],
                     layer_norm_epsilon=c.get("layer_norm_epsilon", 1e-5),
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     tie_word_embeddings=c["tie"], bos_token_id=0, eos_token_id=0)
    torch.manual_seed(c["seed"])
    model = GPT2LMHeadModel(cfg)
    g = torch.Generator().manual_seed(c["seed"])
    with torch.no_grad():
        # named_parameters() lists a tied lm_head once (as transformer.wte.weight).
        for name, p in model.named_parameters():
            leaf = name.split(".")[-2] if "." in name else ""
            is_ln = leaf.startswith("ln_")
            noise = torch.randn(p.shape, generator=g)
            if is_ln and name.endswith(".weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif is_ln or name.endswith(".bias"):
                p.copy_((0.2 if is_ln else 0.1) * noise)
            else:
                p.copy_(0.2 * noise)
    if c["tie"]:
        assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    else:
        assert not torch.equal(model.lm_head.weight, model.transformer.wte.weight)
    return model


def file_tensors(model, c):
    """The tensors as they go into the file: names, prefix, buffers, dtype."""
    sd = model.state_dict()
    out = {}
    for k, v in sd.items():
        if k == "lm_head.weight" and c["tie"]:
            continue
        if ".attn.bias" in k or ".attn.masked_bias" in k:
            continue  # transformers 5 has no such buffers; added below on request
        name = k if c["prefix"] or not k.startswith("transformer.") else k[len("transformer."):]
        out[name] = v.detach().to(TORCH_DTYPE[c["dtype"]]).contiguous()
    if c["buffers"]:
        P = c["n_positions"]
        pre = "transformer." if c["prefix"] else ""
        causal = torch.tril(torch.ones(P, P)).view(1, 1, P, P)
        for L in range(c["n_layer"]):
            # As old GPT-2 checkpoints hold them; a loader must ignore them whatever their dtype.
            out[f"{pre}h.{L}.attn.bias"] = (causal if L % 2 == 0 else causal.bool()).contiguous()
            out[f"{pre}h.{L}.attn.masked_bias"] = torch.tensor(-1e4)
    return out


def save_model_dir(model, c, d):
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    tensors = file_tensors(model, c)
    cfg = model.config
    cfg.architectures = ["GPT2LMHeadModel"]
    cfg.dtype = CONFIG_DTYPE[c["dtype"]]
    cfg.save_pretrained(d)
    meta = {"format": "pt"}
    if c["shards"] == 1:
        save_file(tensors, os.path.join(d, "model.safetensors"), metadata=meta)
    else:
        names = list(tensors)
        n = c["shards"]
        per = (len(names) + n - 1) // n
        weight_map = {}
        total = 0
        for i in range(n):
            fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            part = {k: tensors[k] for k in names[i * per:(i + 1) * per]}
            save_file(part, os.path.join(d, fname), metadata=meta)
            for k, v in part.items():
                weight_map[k] = fname
                total += v.numel() * v.element_size()
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
                      f, indent=2)
            f.write("\n")
    return tensors


def read_dir_tensors(d):
    files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
    out = {}
    for fn in files:
        with safe_open(os.path.join(d, fn), "pt") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
    return out


def load_reference(d, expect_tied):
    """Loads with HF and proves every parameter came from the files (none left at init)."""
    model, info = GPT2LMHeadModel.from_pretrained(d, attn_implementation="eager", dtype=torch.float32,
                                                  output_loading_info=True)
    model.eval()
    assert not info["missing_keys"], f"{d}: missing {info['missing_keys']}"
    assert all(".attn.bias" in k or ".attn.masked_bias" in k for k in info["unexpected_keys"]), info
    assert not info.get("mismatched_keys"), info
    assert model.config._attn_implementation == "eager"
    ft = {(k if k.startswith(("transformer.", "lm_head.")) else "transformer." + k): v
          for k, v in read_dir_tensors(d).items()}
    for k, p in model.state_dict().items():
        if k == "lm_head.weight" and expect_tied:
            assert "lm_head.weight" not in ft
            assert torch.equal(p, ft["transformer.wte.weight"].float()), "lm_head not tied to wte"
            continue
        assert p.dtype == torch.float32
        assert torch.equal(p, ft[k].float()), f"{d}: {k} differs from the file"
    return model


# ---------------------------------------------------------------- capture

class Capture:
    """Forward hooks on the HF modules; fills self.acts[site] for one batch-of-1 run."""

    def __init__(self, model):
        self.acts = {}
        self.handles = []
        cfg = model.config
        H, d = cfg.n_head, cfg.n_embd
        dh = d // H
        tr = model.transformer

        def out_hook(site, fn=None):
            def h(_m, _args, out):
                o = out[0] if isinstance(out, tuple) else out
                self.acts[site] = (fn(o) if fn else o).detach().clone()
            return h

        def in_hook(site, fn=None):
            def h(_m, args):
                self.acts[site] = (fn(args[0]) if fn else args[0]).detach().clone()
            return h

        def heads(x):
            return x.reshape(*x.shape[:-1], H, dh)

        def qkv(_m, _args, out):
            q, k, v = out.split(d, dim=-1)
            self.acts[self._L + "attn.hook_q"] = heads(q).detach().clone()
            self.acts[self._L + "attn.hook_k"] = heads(k).detach().clone()
            self.acts[self._L + "attn.hook_v"] = heads(v).detach().clone()

        reg = self.handles.append
        reg(tr.wte.register_forward_hook(out_hook("hook_embed")))
        reg(tr.wpe.register_forward_hook(out_hook("hook_pos_embed")))
        for L, blk in enumerate(tr.h):
            p = f"blocks.{L}."

            def set_layer(_m, _args, p=p):
                self._L = p
            reg(blk.register_forward_pre_hook(set_layer))
            reg(blk.register_forward_pre_hook(in_hook(p + "hook_resid_pre")))
            reg(blk.ln_1.register_forward_hook(out_hook(p + "ln1.hook_normalized")))
            reg(blk.attn.c_attn.register_forward_hook(qkv))
            # GPT2Attention returns (attn_output, attn_weights); weights are the softmax probabilities.
            reg(blk.attn.register_forward_hook(
                lambda _m, _a, out, p=p: self.acts.__setitem__(p + "attn.hook_pattern", out[1].detach().clone())))
            reg(blk.attn.c_proj.register_forward_pre_hook(in_hook(p + "attn.hook_z", heads)))
            reg(blk.attn.c_proj.register_forward_hook(out_hook(p + "hook_attn_out")))
            reg(blk.ln_2.register_forward_pre_hook(in_hook(p + "hook_resid_mid")))
            reg(blk.ln_2.register_forward_hook(out_hook(p + "ln2.hook_normalized")))
            reg(blk.mlp.c_fc.register_forward_hook(out_hook(p + "mlp.hook_pre")))
            reg(blk.mlp.c_proj.register_forward_pre_hook(in_hook(p + "mlp.hook_post")))
            reg(blk.mlp.register_forward_hook(out_hook(p + "hook_mlp_out")))
            reg(blk.register_forward_hook(out_hook(p + "hook_resid_post")))
        reg(tr.ln_f.register_forward_hook(out_hook("ln_final.hook_normalized")))

    def run(self, model, ids):
        self.acts = {}
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), output_attentions=True, output_hidden_states=True,
                        use_cache=False)
        acts = {k: v[0] for k, v in self.acts.items()}
        return out, acts

    def remove(self):
        for h in self.handles:
            h.remove()


def self_check(model, ids, out, a, what):
    """The captured values must agree with each other and with HF's own outputs."""
    cfg = model.config
    nL, H, d = cfg.n_layer, cfg.n_head, cfg.n_embd
    dh = d // H
    T = len(ids)
    tr = model.transformer
    eps = cfg.layer_norm_epsilon
    assert set(a) == set(all_sites(nL)), set(a) ^ set(all_sites(nL))
    check_close(f"{what} embed", a["hook_embed"], tr.wte.weight[ids], 0, 0)
    check_close(f"{what} pos", a["hook_pos_embed"], tr.wpe.weight[:T], 0, 0)
    check_close(f"{what} resid_pre0", a["blocks.0.hook_resid_pre"], a["hook_embed"] + a["hook_pos_embed"], 1e-6)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    act = {"gelu_new": lambda x: F.gelu(x, approximate="tanh"), "gelu": F.gelu}[cfg.activation_function]
    for L in range(nL):
        p = f"blocks.{L}."
        blk = tr.h[L]
        x = a[p + "hook_resid_pre"]
        if L > 0:
            check_close(f"{what} {p}pre==post", x, a[f"blocks.{L - 1}.hook_resid_post"], 0, 0)
        check_close(f"{what} {p}ln1", a[p + "ln1.hook_normalized"],
                    F.layer_norm(x, (d,), blk.ln_1.weight, blk.ln_1.bias, eps))
        qkv = torch.cat([a[p + "attn.hook_" + s].reshape(T, d) for s in "qkv"], -1)
        check_close(f"{what} {p}qkv", qkv, a[p + "ln1.hook_normalized"] @ blk.attn.c_attn.weight + blk.attn.c_attn.bias)
        pat = a[p + "attn.hook_pattern"]
        assert pat.shape == (H, T, T)
        check_close(f"{what} {p}pattern==attentions", pat, out.attentions[L][0], 0, 0)
        scores = torch.einsum("qhd,khd->hqk", a[p + "attn.hook_q"], a[p + "attn.hook_k"]) / dh ** 0.5
        check_close(f"{what} {p}pattern", pat, torch.softmax(scores.masked_fill(~causal, -torch.inf), -1))
        assert torch.all(pat[:, ~causal] == 0)
        check_close(f"{what} {p}rowsum", pat.sum(-1), torch.ones(H, T))
        z = a[p + "attn.hook_z"]
        check_close(f"{what} {p}z", z, torch.einsum("hqk,khd->qhd", pat, a[p + "attn.hook_v"]))
        check_close(f"{what} {p}attn_out", a[p + "hook_attn_out"],
                    z.reshape(T, d) @ blk.attn.c_proj.weight + blk.attn.c_proj.bias)
        check_close(f"{what} {p}mid", a[p + "hook_resid_mid"], x + a[p + "hook_attn_out"], 1e-6)
        check_close(f"{what} {p}ln2", a[p + "ln2.hook_normalized"],
                    F.layer_norm(a[p + "hook_resid_mid"], (d,), blk.ln_2.weight, blk.ln_2.bias, eps))
        check_close(f"{what} {p}mlp_pre", a[p + "mlp.hook_pre"],
                    a[p + "ln2.hook_normalized"] @ blk.mlp.c_fc.weight + blk.mlp.c_fc.bias)
        check_close(f"{what} {p}mlp_post", a[p + "mlp.hook_post"], act(a[p + "mlp.hook_pre"]))
        check_close(f"{what} {p}mlp_out", a[p + "hook_mlp_out"],
                    a[p + "mlp.hook_post"] @ blk.mlp.c_proj.weight + blk.mlp.c_proj.bias)
        check_close(f"{what} {p}post", a[p + "hook_resid_post"],
                    a[p + "hook_resid_mid"] + a[p + "hook_mlp_out"], 1e-6)
    hs = out.hidden_states
    if hs is not None and len(hs) == nL + 1:
        # HF: hidden_states[i] is the input of block i; the last one is after ln_f.
        for L in range(nL):
            check_close(f"{what} hidden_states[{L}]", hs[L][0], a[f"blocks.{L}.hook_resid_pre"], 0, 0)
        check_close(f"{what} hidden_states[-1]", hs[-1][0], a["ln_final.hook_normalized"], 0, 0)
    check_close(f"{what} ln_f", a["ln_final.hook_normalized"],
                F.layer_norm(a[f"blocks.{nL - 1}.hook_resid_post"], (d,), tr.ln_f.weight, tr.ln_f.bias, eps))
    check_close(f"{what} logits", out.logits[0], a["ln_final.hook_normalized"] @ model.lm_head.weight.T)


def check_padded_batch(model, prompts, single_logits):
    T = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), T, dtype=torch.long)
    mask = torch.zeros(len(prompts), T, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, :len(p)] = torch.tensor(p)
        ids[i, len(p):] = (i * 7) % model.config.vocab_size  # arbitrary pad ids must not matter
        mask[i, :len(p)] = 1
    with torch.no_grad():
        lg = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    for i, p in enumerate(prompts):
        check_close(f"padded batch prompt {i}", lg[i, :len(p)], single_logits[i], 1e-5, 0)


# ---------------------------------------------------------------- output

def site_shape(site, N, T, cfg):
    H, d = cfg.n_head, cfg.n_embd
    if site.endswith("hook_pattern"):
        return (N, H, T, T)
    if site.split(".")[-1] in ("hook_q", "hook_k", "hook_v", "hook_z"):
        return (N, T, H, d // H)
    if site.startswith("blocks.") and ".mlp.hook_" in site:
        return (N, T, cfg.n_inner or 4 * d)
    return (N, T, d)


def write_golden(path, cfg, prompts, runs, sites, attrs):
    N, T, V = len(prompts), max(len(p) for p in prompts), cfg.vocab_size
    tokens = np.full((N, T), -1, dtype="<i4")
    lengths = np.array([len(p) for p in prompts], dtype="<i4")
    logits = np.full((N, T, V), np.nan, dtype="<f4")
    acts = {s: np.full(site_shape(s, N, T, cfg), np.nan, dtype="<f4") for s in sites}
    for i, (p, (out, a)) in enumerate(zip(prompts, runs)):
        n = len(p)
        tokens[i, :n] = p
        logits[i, :n] = out.logits[0].numpy()
        for s in sites:
            v = a[s].numpy()
            if s.endswith("hook_pattern"):
                acts[s][i, :, :n, :n] = v
            else:
                acts[s][i, :n] = v
    tmp = path + ".tmp"
    kw = dict(compression="gzip", compression_opts=9, shuffle=True)
    # v110 format: compact single-chunk indexes (readable by HDF5 >= 1.10).
    with h5py.File(tmp, "w", libver=("v110", "v110")) as f:
        for k, v in attrs.items():
            f.attrs[k] = str(v)
        f.create_dataset("tokens", data=tokens, **kw)
        f.create_dataset("lengths", data=lengths)
        f.create_dataset("logits", data=logits, **kw)
        for s in sites:
            f.create_dataset("acts/" + s, data=acts[s], **kw)
    os.replace(tmp, path)
    # Read back and spot-check the padding convention.
    with h5py.File(path, "r") as f:
        for s in sites:
            x = f["acts/" + s][...]
            for i, n in enumerate(lengths):
                if s.endswith("hook_pattern"):
                    real = x[i, :, :n, :n]
                    assert np.isnan(x[i, :, n:, :]).all() and np.isnan(x[i, :, :, n:]).all()
                else:
                    real = x[i, :n]
                    assert np.isnan(x[i, n:]).all()
                assert np.isfinite(real).all(), (path, s, i)


def versions():
    return {"generator": "tests/gen/gen_gpt2_goldens.py", "torch": torch.__version__,
            "transformers": transformers.__version__}


def make_prompts(c):
    rng = np.random.default_rng(c["seed"])
    P, V = c["n_positions"], c["vocab_size"]
    # Three distinct lengths strictly between 1 and P, kept short so the goldens stay small.
    mids = rng.choice(np.arange(2, max(5, 2 * P // 3)), size=3, replace=False)
    lengths = [int(mids[0]), 1, P, int(mids[1]), int(mids[2])]
    prompts = [[int(t) for t in rng.integers(0, V, n)] for n in lengths]
    # The extreme ids must work too.
    prompts[2][0], prompts[2][-1] = 0, V - 1
    return prompts


def run_prompts(model, prompts, what):
    cap = Capture(model)
    runs = []
    for i, p in enumerate(prompts):
        out, a = cap.run(model, p)
        self_check(model, p, out, a, f"{what} prompt {i}")
        runs.append((out, a))
    cap.remove()
    check_padded_batch(model, prompts, [o.logits[0] for o, _ in runs])
    return runs


def gen_random(c):
    name = c["name"]
    d = os.path.join(MODELS, name)
    model = random_model(c)
    save_model_dir(model, c, d)
    ref = load_reference(d, c["tie"])
    if c["dtype"] == "F32":
        for k, v in model.state_dict().items():
            assert torch.equal(v, ref.state_dict()[k]), k
    prompts = make_prompts(c)
    with open(os.path.join(GOLDEN, name + ".jsonl"), "w") as f:
        for p in prompts:
            f.write(json.dumps({"tokens": p}) + "\n")
    runs = run_prompts(ref, prompts, name)
    attrs = dict(versions(), model=f"tests/data/models/{name}", prompts=f"tests/data/golden/{name}.jsonl")
    write_golden(os.path.join(GOLDEN, name + ".h5"), ref.config, prompts, runs, all_sites(c["n_layer"]), attrs)
    absmax = max(float(a[s].abs().max()) for _, a in runs for s in a)
    print(f"{name}: {len(prompts)} prompts, lengths {[len(p) for p in prompts]}, "
          f"max |act| {absmax:.2f}, logits std {float(runs[2][0].logits.std()):.2f}")


# ---------------------------------------------------------------- bundled model

TINY_PROMPTS = ["The cat says", "Two plus three is", "Today is Monday. Tomorrow is"]
PREDICT_PROMPTS = ["Let us count: four, five,", "The cow lives"]
TINY_SITES = ["blocks.0.hook_resid_pre", "blocks.1.mlp.hook_post", "blocks.3.attn.hook_pattern",
              "ln_final.hook_normalized"]


def gen_tiny():
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer.from_file(os.path.join(TINY, "tokenizer.json"))
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(TINY, "tokenizer.json"))
    model = load_reference(TINY, True)

    def encode(text):
        ids = tok.encode(text).ids
        assert ids == hf_tok(text)["input_ids"], text
        return ids

    prompts = [encode(t) for t in TINY_PROMPTS]
    with open(os.path.join(GOLDEN, "tiny-gpt2.jsonl"), "w") as f:
        for t in TINY_PROMPTS:
            f.write(json.dumps({"text": t}) + "\n")
    runs = run_prompts(model, prompts, "tiny-gpt2")
    attrs = dict(versions(), model="models/tiny-gpt2", prompts="tests/data/golden/tiny-gpt2.jsonl")
    write_golden(os.path.join(GOLDEN, "tiny-gpt2.h5"), model.config, prompts, runs, TINY_SITES, attrs)

    eos = tok.token_to_id("<|endoftext|>")
    preds = []
    for text in PREDICT_PROMPTS:
        ids = encode(text)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
        probs = torch.softmax(logits, -1)
        top = torch.topk(probs, 6)
        # The order of the top five must not hang on rounding.
        assert all(top.values[i] - top.values[i + 1] > 1e-4 for i in range(5)), (text, top.values)
        cont = list(ids)
        for _ in range(12):
            with torch.no_grad():
                lg = model(input_ids=torch.tensor([cont])).logits[0, -1]
            two = torch.topk(lg, 2).values
            assert two[0] - two[1] > 1e-3, f"greedy step of {text!r} is nearly a tie"
            cont.append(int(lg.argmax()))
        new = cont[len(ids):]
        preds.append({
            "text": text, "tokens": ids,
            "top5": [{"id": int(i), "token": tok.decode([int(i)], skip_special_tokens=False),
                      "piece": tok.id_to_token(int(i)), "prob": round(float(p), 6)}
                     for p, i in zip(top.values[:5], top.indices[:5])],
            "greedy_ids": new,
            "greedy_text": tok.decode(new, skip_special_tokens=False),
            "greedy_has_eos": eos in new,
        })
    with open(os.path.join(GOLDEN, "tiny-gpt2-predict.json"), "w", encoding="utf-8") as f:
        json.dump({"model": "models/tiny-gpt2", "n_new": 12, "prompts": preds, **versions()}, f,
                  indent=1, ensure_ascii=False)
        f.write("\n")
    for p in preds:
        print(f"tiny-gpt2: {p['text']!r} top {p['top5'][0]['token']!r} {p['top5'][0]['prob']:.3f}"
              f" -> {p['greedy_text']!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated names (configs and/or tiny-gpt2)")
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))
    torch.set_num_threads(1)  # same reduction order every run
    os.makedirs(GOLDEN, exist_ok=True)
    for c in CONFIGS:
        if not only or c["name"] in only:
            gen_random(c)
    if not only or "tiny-gpt2" in only:
        if not os.path.exists(os.path.join(TINY, "model.safetensors")):
            sys.exit("models/tiny-gpt2 is missing: run models/train_tiny.py first")
        gen_tiny()


if __name__ == "__main__":
    main()
