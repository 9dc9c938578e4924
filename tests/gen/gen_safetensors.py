#!/usr/bin/env python3
"""Writes safetensors files with the reference implementation (the
`safetensors` package), so the C reader is checked against real output:

  tests/data/safetensors/ref.safetensors      read by tests/unit/test_safetensors.c
  tests/fuzz/corpus/fuzz_safetensors/*        fuzz seeds
  tests/fuzz/corpus/fuzz_config/*             fuzz seeds (config.json variants)

Run from the repo root: python3 tests/gen/gen_safetensors.py
"""
import json
import os

import numpy as np
import torch
from safetensors.numpy import save as np_save
from safetensors.torch import save as torch_save

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
data_dir = os.path.join(root, "tests", "data", "safetensors")
st_corpus = os.path.join(root, "tests", "fuzz", "corpus", "fuzz_safetensors")
cfg_corpus = os.path.join(root, "tests", "fuzz", "corpus", "fuzz_config")
for d in (data_dir, st_corpus, cfg_corpus):
    os.makedirs(d, exist_ok=True)


def write(path, blob):
    with open(path, "wb") as f:
        f.write(blob)


# Values chosen to be exact in every dtype they are stored in; the C test
# hard-codes them (keep in sync).
ref = {
    "a.f32": torch.tensor([[1.5, -2.25, 0.0], [3.0e-3, 1.0e10, -7.0]], dtype=torch.float32),
    "b.f16": torch.tensor([1.0, -0.5, 65504.0, 2.0 ** -24], dtype=torch.float16),
    "c.bf16": torch.tensor([[1.0], [-3.0], [3.140625]], dtype=torch.bfloat16),
    "d.f64": torch.tensor([0.1, -2.0], dtype=torch.float64),
    "e.i64": torch.tensor([5, -6, 7], dtype=torch.int64),
    "f.empty": torch.zeros((0, 4), dtype=torch.float32),
    "g.scalar": torch.tensor(42.0, dtype=torch.float32),
    "h.bool": torch.tensor([True, False, True]),
}
blob = torch_save(ref, metadata={"format": "pt", "source": "tests/gen/gen_safetensors.py"})
write(os.path.join(data_dir, "ref.safetensors"), blob)
write(os.path.join(st_corpus, "ref.safetensors"), blob)

write(os.path.join(st_corpus, "small_f32.safetensors"),
      np_save({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}))
write(os.path.join(st_corpus, "small_ints.safetensors"),
      np_save({"i8": np.array([-1, 2], dtype=np.int8), "u8": np.array([3], dtype=np.uint8),
               "i16": np.array([4], dtype=np.int16), "i32": np.array([5], dtype=np.int32)}))
write(os.path.join(st_corpus, "empty.safetensors"), np_save({}))

base = {"model_type": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 32, "n_positions": 64,
        "vocab_size": 100, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "bos_token_id": 0, "eos_token_id": 0}
variants = {
    "base.json": base,
    "full.json": dict(base, n_inner=None, tie_word_embeddings=False, scale_attn_weights=True,
                      reorder_and_upcast_attn=True, architectures=["GPT2LMHeadModel"]),
    "arch_only.json": {k: v for k, v in dict(base, architectures=["GPT2Model"], n_ctx=64).items()
                       if k not in ("model_type", "n_positions")},
    "llama.json": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2},
}
for name, cfg in variants.items():
    write(os.path.join(cfg_corpus, name), json.dumps(cfg, indent=2).encode())
