#!/usr/bin/env python3
"""Writes small GGUF files with the reference writer (the `gguf` Python package,
llama.cpp's gguf-py) and what that package reads back from them, so the C
reader (src/model/gguf.c) is checked against real output:

  tests/data/gguf/<name>.gguf   the file
  tests/data/gguf/<name>.json   expected metadata (every key, typed) and tensor table
  tests/data/gguf/<name>.f32    gguf.quants.dequantize of every tensor, in table
                                order, as raw little-endian float32
  tests/fuzz/corpus/fuzz_gguf/  fuzz seeds

In the .json, integers are decimal strings (UINT64 does not fit a JSON double)
and floats are the hex of their IEEE bits, so the comparison is exact; every
value is {"type": T, "value": V}, an array's V is {"elem_type": E, "items": [...]}.

Files: types (every metadata type, arrays of each, nested arrays; tensors in
F32, F16, BF16, F64, Q8_0, Q4_0, Q4_1 with 1 to 4 dimensions), align64
(general.alignment = 64), llama (a llama-architecture-shaped model with
tokenizer.ggml.* metadata, weights in Q4_1 / Q8_0 / F32) and kquants (Q5_0,
Q5_1 quantised by gguf-py and as random blocks; Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
Q8_K as random blocks, which gguf-py cannot quantise: dequantisation is
defined for any bytes. The expected values are gguf-py's dequantize, except
for Q8_K, which gguf-py does not implement: there they are ggml's
dequantize_row_q8_K written in numpy, x = d * q in float32).

Run from the repo root: python3 tests/gen/gen_gguf_goldens.py
(pip install gguf if missing; written with gguf 0.19.0, numpy 2.4.)
"""
import json
import os
import shutil
import struct

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out_dir = os.path.join(root, "tests", "data", "gguf")
corpus = os.path.join(root, "tests", "fuzz", "corpus", "fuzz_gguf")
os.makedirs(out_dir, exist_ok=True)
os.makedirs(corpus, exist_ok=True)

INT_TYPES = {V.UINT8, V.INT8, V.UINT16, V.INT16, V.UINT32, V.INT32, V.UINT64, V.INT64}


def enc(val, vtype, sub=None):
    """The JSON form of one value, as the C test expects it."""
    if vtype in INT_TYPES:
        v = str(int(val))
    elif vtype == V.FLOAT32:
        v = "0x%08x" % struct.unpack("<I", struct.pack("<f", val))[0]
    elif vtype == V.FLOAT64:
        v = "0x%016x" % struct.unpack("<Q", struct.pack("<d", val))[0]
    elif vtype == V.BOOL:
        v = bool(val)
    elif vtype == V.STRING:
        v = val
    else:
        et = sub if sub is not None else V.get_type(val[0])
        v = {"elem_type": et.name, "items": [enc(x, et) for x in val]}
    return {"type": vtype.name, "value": v}


class File:
    def __init__(self, name, arch, alignment=None):
        self.name = name
        self.w = gguf.GGUFWriter(os.path.join(out_dir, name + ".gguf"), arch)
        if alignment:
            self.w.add_custom_alignment(alignment)
        self.meta = [
            {"key": "general.architecture", **enc(arch, V.STRING)},
        ]
        if alignment:
            self.meta.append({"key": "general.alignment", **enc(alignment, V.UINT32)})
        self.tensors = []
        self.values = []
        self.n_f32 = 0

    def kv(self, key, val, vtype, sub=None):
        self.w.add_key_value(key, val, vtype, sub_type=sub)
        self.meta.append({"key": key, **enc(val, vtype, sub)})

    def tensor(self, name, x, qtype):
        """x: float32 array in numpy (row-major) shape."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if qtype == Q.F32:
            data = x
        elif qtype == Q.F16:
            data = x.astype(np.float16)
        elif qtype == Q.F64:
            data = x.astype(np.float64)
        else:
            data = gguf.quants.quantize(x, qtype)
        if qtype in (Q.F32, Q.F16, Q.F64):
            self.w.add_tensor(name, data)
            back = data.astype(np.float32)
        else:
            self.w.add_tensor(name, data, raw_dtype=qtype)
            back = gguf.quants.dequantize(data, qtype).astype(np.float32)
        assert back.shape == x.shape, (name, back.shape, x.shape)
        self.tensors.append({"name": name, "type": qtype.name, "ne": list(reversed(x.shape)),
                             "offset_f32": self.n_f32, "n": int(x.size)})
        self.values.append(back.reshape(-1))
        self.n_f32 += x.size

    def raw(self, name, blocks, qtype, shape):
        """blocks: uint8 [n_blocks, type_size] written as is; shape: the
        tensor's numpy (row-major) element shape."""
        bs, ts = gguf.GGML_QUANT_SIZES[qtype]
        assert blocks.dtype == np.uint8 and blocks.shape[1] == ts and blocks.shape[0] * bs == int(np.prod(shape))
        data = blocks.reshape(tuple(shape[:-1]) + (shape[-1] // bs * ts,))
        self.w.add_tensor(name, data, raw_dtype=qtype)
        if qtype == Q.Q8_K:
            d = blocks[:, :4].copy().view("<f4").astype(np.float32)
            q = blocks[:, 4:4 + 256].copy().view(np.int8).astype(np.float32)
            back = (d * q).reshape(shape)
        else:
            back = gguf.quants.dequantize(data, qtype).astype(np.float32)
        assert back.shape == tuple(shape) and back.dtype == np.float32, (name, back.shape)
        assert np.isfinite(back).all(), name  # finite scales: NaN payloads would tie the goldens to one CPU
        self.tensors.append({"name": name, "type": qtype.name, "ne": list(reversed(shape)),
                             "offset_f32": self.n_f32, "n": int(back.size)})
        self.values.append(back.reshape(-1))
        self.n_f32 += back.size

    def close(self):
        w = self.w
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with open(os.path.join(out_dir, self.name + ".json"), "w") as f:
            json.dump({"version": 3, "alignment": w.data_alignment, "metadata": self.meta,
                       "tensors": self.tensors}, f, indent=1, ensure_ascii=False)
            f.write("\n")
        vals = np.concatenate(self.values) if self.values else np.zeros(0, np.float32)
        vals.astype("<f4").tofile(os.path.join(out_dir, self.name + ".f32"))
        shutil.copy(os.path.join(out_dir, self.name + ".gguf"), os.path.join(corpus, self.name + ".gguf"))


rng = np.random.default_rng(9)

# ---- every metadata type, every supported tensor type ----
f = File("types", "testarch")
f.kv("t.u8", 255, V.UINT8)
f.kv("t.i8", -128, V.INT8)
f.kv("t.u16", 65535, V.UINT16)
f.kv("t.i16", -32768, V.INT16)
f.kv("t.u32", 4294967295, V.UINT32)
f.kv("t.i32", -2147483648, V.INT32)
f.kv("t.u64", 2**64 - 1, V.UINT64)
f.kv("t.i64", -(2**63), V.INT64)
f.kv("t.f32", 3.1415927410125732, V.FLOAT32)
f.kv("t.f32_neg_zero", -0.0, V.FLOAT32)
f.kv("t.f32_tiny", 1.401298464324817e-45, V.FLOAT32)  # smallest subnormal
f.kv("t.f64", 1e-300, V.FLOAT64)
f.kv("t.bool_true", True, V.BOOL)
f.kv("t.bool_false", False, V.BOOL)
f.kv("t.str", "héllo wörld ✓ \u4e2d\u6587", V.STRING)
f.kv("t.str_empty", "", V.STRING)
f.kv("t.str_nul", "a\u0000b", V.STRING)
f.kv("t.arr_u8", [0, 1, 254, 255], V.ARRAY, V.UINT8)
f.kv("t.arr_i8", [-128, -1, 0, 127], V.ARRAY, V.INT8)
f.kv("t.arr_u16", [0, 65535, 1234], V.ARRAY, V.UINT16)
f.kv("t.arr_i16", [-32768, 32767], V.ARRAY, V.INT16)
f.kv("t.arr_u32", [4294967295, 7], V.ARRAY, V.UINT32)
f.kv("t.arr_i32", [-2147483648, 2147483647, 0], V.ARRAY, V.INT32)
f.kv("t.arr_u64", [2**64 - 1, 0, 2**40], V.ARRAY, V.UINT64)
f.kv("t.arr_i64", [-(2**63), 2**63 - 1], V.ARRAY, V.INT64)
f.kv("t.arr_f32", [1.5, -2.25, 1e-10, float("inf")], V.ARRAY, V.FLOAT32)
f.kv("t.arr_f64", [0.1, -1e300], V.ARRAY, V.FLOAT64)
f.kv("t.arr_bool", [True, False, True], V.ARRAY, V.BOOL)
f.kv("t.arr_str", ["a", "", "ünïcode", "x y z"], V.ARRAY, V.STRING)
f.kv("t.nested_i32", [[1, 2, 3], [4], [5, 6]], V.ARRAY)
f.kv("t.nested_str", [["a", "b"], ["c"]], V.ARRAY)
f.kv("t.nested3", [[[1, 2]], [[3], [4, 5]]], V.ARRAY)

f.tensor("f32.vec", rng.standard_normal(7), Q.F32)
f.tensor("f32.mat", rng.standard_normal((3, 5)), Q.F32)
h = rng.standard_normal((4, 6)).astype(np.float32)
h[0, :5] = [6.0e-8, -6.1e-5, 65504.0, np.inf, -np.inf]  # f16 subnormal, limits, infinities
f.tensor("f16.mat", h, Q.F16)
b = rng.standard_normal((2, 3, 8)).astype(np.float32) * 100
b[0, 0, :3] = [1e-40, -3.0e38, np.inf]
f.tensor("bf16.t3", b, Q.BF16)
f.tensor("f64.vec", rng.standard_normal(5) * 1e3, Q.F64)
f.tensor("q8_0.mat", rng.standard_normal((4, 64)), Q.Q8_0)
f.tensor("q8_0.t4", rng.standard_normal((2, 1, 3, 32)), Q.Q8_0)
q = rng.standard_normal((3, 96)).astype(np.float32)
q[1, :32] = 0.0  # an all-zero block (scale 0)
f.tensor("q4_0.mat", q, Q.Q4_0)
f.tensor("q4_1.mat", rng.standard_normal((2, 64)) * 3 + 1, Q.Q4_1)
f.tensor("q4_1.vec", rng.uniform(-1, 5, 32), Q.Q4_1)
f.close()

# ---- a non-default alignment ----
f = File("align64", "testarch", alignment=64)
f.kv("t.note", "tensors start on 64-byte boundaries", V.STRING)
f.tensor("a", rng.standard_normal(3), Q.F32)
f.tensor("b", rng.standard_normal((2, 32)), Q.Q8_0)
f.tensor("c", rng.standard_normal(5), Q.F16)
f.close()

# ---- llama-architecture shaped, with a BPE tokenizer in the metadata ----
f = File("llama", "llama")
n_embd, n_ff, n_head, n_kv, n_layer, ctx = 32, 64, 4, 2, 2, 128
bytes_vocab = ["<|endoftext|>", "<s>", "</s>"] + [chr(0x100 + i) if i < 33 else chr(i) for i in range(33, 33 + 61)]
merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ th", "e n", "Ġ s"]
tokens = bytes_vocab + [m.replace(" ", "") for m in merges]
f.kv("general.name", "tiny-llama-for-tests", V.STRING)
f.kv("llama.context_length", ctx, V.UINT32)
f.kv("llama.embedding_length", n_embd, V.UINT32)
f.kv("llama.feed_forward_length", n_ff, V.UINT32)
f.kv("llama.block_count", n_layer, V.UINT32)
f.kv("llama.attention.head_count", n_head, V.UINT32)
f.kv("llama.attention.head_count_kv", n_kv, V.UINT32)
f.kv("llama.rope.freq_base", 500000.0, V.FLOAT32)
f.kv("llama.attention.layer_norm_rms_epsilon", 1e-5, V.FLOAT32)
f.kv("llama.vocab_size", len(tokens), V.UINT32)
f.kv("llama.rope.dimension_count", n_embd // n_head, V.UINT32)
f.kv("tokenizer.ggml.model", "gpt2", V.STRING)
f.kv("tokenizer.ggml.pre", "smollm", V.STRING)
f.kv("tokenizer.ggml.tokens", tokens, V.ARRAY, V.STRING)
f.kv("tokenizer.ggml.token_type", [3, 3, 3] + [1] * (len(tokens) - 3), V.ARRAY, V.INT32)
f.kv("tokenizer.ggml.merges", merges, V.ARRAY, V.STRING)
f.kv("tokenizer.ggml.bos_token_id", 1, V.UINT32)
f.kv("tokenizer.ggml.eos_token_id", 2, V.UINT32)
f.kv("tokenizer.ggml.add_bos_token", False, V.BOOL)
f.kv("general.file_type", 3, V.UINT32)  # MOSTLY_Q4_1
nv = len(tokens)
f.tensor("token_embd.weight", rng.standard_normal((nv, n_embd)) * 0.02, Q.Q8_0)
for L in range(n_layer):
    p = "blk.%d." % L
    f.tensor(p + "attn_norm.weight", 1 + 0.1 * rng.standard_normal(n_embd), Q.F32)
    f.tensor(p + "attn_q.weight", rng.standard_normal((n_embd, n_embd)) * 0.05, Q.Q4_1)
    f.tensor(p + "attn_k.weight", rng.standard_normal((n_embd * n_kv // n_head, n_embd)) * 0.05, Q.Q4_1)
    f.tensor(p + "attn_v.weight", rng.standard_normal((n_embd * n_kv // n_head, n_embd)) * 0.05, Q.Q4_1)
    f.tensor(p + "attn_output.weight", rng.standard_normal((n_embd, n_embd)) * 0.05, Q.Q4_1)
    f.tensor(p + "ffn_norm.weight", 1 + 0.1 * rng.standard_normal(n_embd), Q.F32)
    f.tensor(p + "ffn_gate.weight", rng.standard_normal((n_ff, n_embd)) * 0.05, Q.Q4_1)
    f.tensor(p + "ffn_up.weight", rng.standard_normal((n_ff, n_embd)) * 0.05, Q.Q4_1)
    f.tensor(p + "ffn_down.weight", rng.standard_normal((n_embd, n_ff)) * 0.05, Q.Q4_0)
f.tensor("output_norm.weight", 1 + 0.1 * rng.standard_normal(n_embd), Q.F32)
f.tensor("output.weight", rng.standard_normal((nv, n_embd)) * 0.02, Q.Q8_0)
f.close()

# ---- Q5_0/Q5_1 and the K-quants ----
# Random blocks, with every f16 (and Q8_K's f32) scale field replaced by a
# random finite value: all other bytes (quants, packed 6-bit scales, high-bit
# masks) are uniformly random, so every bit pattern of them is exercised.
kr = np.random.default_rng(94)

# byte offsets of the f16 scale fields (d, dmin, m) in each block type
F16_FIELDS = {Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2],
              Q.Q5_K: [0, 2], Q.Q6_K: [208]}


def finite_f16(n):
    """Random finite halves: every sign, exponent (subnormals included) and mantissa."""
    h = kr.integers(0, 1 << 16, n, dtype=np.uint32)
    inf_nan = ((h >> 10) & 0x1F) == 0x1F
    h[inf_nan] ^= 1 << 14  # exponent 31 -> 15 (|x| in [1, 2))
    return h.astype(np.uint16)


def random_blocks(qtype, n_blocks, special=True):
    bs, ts = gguf.GGML_QUANT_SIZES[qtype]
    b = kr.integers(0, 256, (n_blocks, ts), dtype=np.uint8)
    if qtype == Q.Q8_K:
        d = (kr.standard_normal(n_blocks) * 10.0 ** kr.integers(-6, 3, n_blocks)).astype("<f4")
        b[:, :4] = d.view(np.uint8).reshape(n_blocks, 4)
        if special:
            b[0, :4] = 0  # d = 0
        return b
    for off in F16_FIELDS[qtype]:
        b[:, off:off + 2] = finite_f16(n_blocks).view(np.uint8).reshape(n_blocks, 2)
    if special and n_blocks >= 3:
        for off in F16_FIELDS[qtype]:
            b[0, off:off + 2] = np.array([0x3C00], "<u2").view(np.uint8)  # 1.0: the raw integers show
            b[1, off:off + 2] = np.array([0x7BFF], "<u2").view(np.uint8)  # 65504, the largest half
            b[2, off:off + 2] = np.array([0x8001], "<u2").view(np.uint8)  # -2^-24, the smallest subnormal
        if qtype in (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K):
            ts_ = gguf.GGML_QUANT_SIZES[qtype][1]
            # block 0 with every non-scale byte 0xff: top quants, top 6-bit scales and mins
            keep = {o + k for o in F16_FIELDS[qtype] for k in (0, 1)}
            for k in range(ts_):
                if k not in keep:
                    b[0, k] = 0xFF
    return b


f = File("kquants", "testarch")
f.kv("t.note", "K-quants and Q5_0/Q5_1; random blocks with finite scales", V.STRING)
f.tensor("q5_0.quantized", kr.standard_normal((2, 64)), Q.Q5_0)
f.tensor("q5_1.quantized", kr.standard_normal((2, 64)) * 2 + 0.5, Q.Q5_1)
f.raw("q5_0.raw", random_blocks(Q.Q5_0, 8), Q.Q5_0, (4, 64))
f.raw("q5_1.raw", random_blocks(Q.Q5_1, 8), Q.Q5_1, (2, 128))
for qt in (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q8_K):
    nm = qt.name.lower()
    f.raw(nm + ".mat", random_blocks(qt, 6), qt, (3, 512))
    f.raw(nm + ".vec", random_blocks(qt, 1, special=False), qt, (256,))
f.close()

total = sum(os.path.getsize(os.path.join(out_dir, x)) for x in os.listdir(out_dir))
print("wrote %s (%d bytes)" % (out_dir, total))
