#!/usr/bin/env python3
"""Goldens for subscope's byte-level BPE trainer (tests/unit/test_bpe_train.c).

Run by hand from the repository root after `make` (needs the `tokenizers`
package and bin/subscope):

    python3 tests/gen/gen_bpe_goldens.py

Writes (committed) under tests/data/bpe/:
  corpus.txt          a seeded synthetic corpus, one document per line (no
                      trailing newline is part of a document)
  hf_V.json           for V in VOCABS: the tokenizer Hugging Face `tokenizers`
                      trains on those documents with
                        Tokenizer(BPE()), ByteLevel(add_prefix_space=False)
                        pre-tokenizer, BpeTrainer(vocab_size=V, min_frequency=0,
                        special_tokens=["<|endoftext|>"],
                        initial_alphabet=ByteLevel.alphabet())
                      (the settings ByteLevelBPETokenizer uses; checked equal
                      to ByteLevelBPETokenizer.train_from_iterator here)
  subscope_800.json   the tokenizer.json `subscope train --vocab-size 800`
                      writes for the same corpus
  stress.jsonl        {"docs": [...], "vocab_size": V, "merges": [[a, b], ...],
                       "n_tokens": N}: small random corpora over 2-4 letters,
                      trained by HF until no pair is left or V: almost every
                      merge there is decided by a tie
  encodings.jsonl     {"text": T, "hf": ids from hf_800.json,
                       "subscope_file": ids from subscope_800.json loaded by HF}
                      for held-out strings

It prints whether subscope's vocabulary and merges equal HF's (they should:
the C test asserts it).
"""
import json
import os
import random
import subprocess
import sys
import tempfile

from tokenizers import ByteLevelBPETokenizer, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

OUT = "tests/data/bpe"
VOCABS = [300, 800]
SUBSCOPE = "bin/subscope"

WORDS = ("the of and to in is was for on that with as by at from it his her they this an be are which or had "
         "not but have one all were when there been their who more new time year people first two after also "
         "would into only over some other could about such than these many most may then them later city "
         "world state called school during music family known between under film where because however "
         "river music played season series became house group church while government number written "
         "running jumped quickly slowly bright darker stronger hopeful careful thinking nothing everything "
         "national international nationally internationalisation unbelievable reconsidering").split()
NAMES = "Alice Bob Carol Dmitri Émile Zoë François Åsa Jürgen Ngozi Hiroshi Priya O'Brien McDonald".split()
FOREIGN = ["café", "naïve", "résumé", "Straße", "über", "smörgåsbord", "Ελλάδα", "Москва", "東京", "日本語",
           "서울", "नमस्ते", "مرحبا", "שלום", "🙂", "👍🏽", "🎉", "™", "½", "…", "—", "«", "»"]
PUNCT = [",", ".", ";", ":", "!", "?", "...", " -", "(", ")", "\"", "'s", "'re", "'ll", "n't", "'d"]
CODE = ["def f(x):", "return x**2", "if (a != b) {", "x += 1;", "}", "SELECT * FROM t;", "<div>", "</div>",
        "https://example.com/a?b=1", "foo_bar.baz()", "#include <stdio.h>", "0x1F", "a->b", "i++"]


def number(rng):
    k = rng.randint(0, 4)
    if k == 0:
        return str(rng.randint(0, 99))
    if k == 1:
        return str(rng.randint(1000, 2030))
    if k == 2:
        return f"{rng.randint(0, 999)}.{rng.randint(0, 99)}"
    if k == 3:
        return f"{rng.randint(1, 9)},{rng.randint(100, 999)},{rng.randint(100, 999)}"
    return f"{rng.randint(1, 12)}:{rng.randint(0, 59):02d}"


def sentence(rng):
    parts = []
    for _ in range(rng.randint(3, 14)):
        r = rng.random()
        if r < 0.62:
            w = rng.choice(WORDS)
            if rng.random() < 0.08:
                w = w.capitalize()
            if rng.random() < 0.02:
                w = w.upper()
            parts.append(w)
        elif r < 0.72:
            parts.append(rng.choice(NAMES))
        elif r < 0.80:
            parts.append(number(rng))
        elif r < 0.87:
            parts.append(rng.choice(FOREIGN))
        else:
            p = rng.choice(PUNCT)
            if parts:
                parts[-1] += p
            else:
                parts.append(p)
    s = " ".join(parts)
    return s[0].upper() + s[1:] + rng.choice([".", ".", ".", "!", "?", ""])


def document(rng):
    r = rng.random()
    if r < 0.08:  # a code line, with indentation
        return rng.choice(["", "    ", "\t", "  "]) + " ".join(rng.choice(CODE) for _ in range(rng.randint(1, 4)))
    sents = [sentence(rng) for _ in range(rng.randint(1, 4))]
    sep = rng.choice([" ", " ", " ", "  ", "\t", " \u00a0"])
    doc = sep.join(sents)
    if rng.random() < 0.05:
        doc += rng.choice(["   ", " ", "\t"])  # trailing white space
    return doc


def corpus(seed, n):
    rng = random.Random(seed)
    return [document(rng) for _ in range(n)]


def hf_train(docs, vocab):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tr = trainers.BpeTrainer(vocab_size=vocab, min_frequency=0, special_tokens=["<|endoftext|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer=tr)
    return tok


def model_of(tok):
    m = json.loads(tok.to_str())["model"]
    merges = [tuple(x) if isinstance(x, list) else tuple(x.split(" ")) for x in m["merges"]]
    return m["vocab"], merges


def main():
    os.makedirs(OUT, exist_ok=True)
    docs = corpus(20240607, 1000)
    with open(os.path.join(OUT, "corpus.txt"), "w", encoding="utf-8", newline="\n") as f:
        for d in docs:
            assert "\n" not in d and "\r" not in d
            f.write(d + "\n")
    print(f"corpus: {len(docs)} documents, {sum(len(d.encode()) for d in docs)} bytes")

    hf = {}
    for v in VOCABS:
        tok = hf_train(docs, v)
        hf[v] = tok
        tok.save(os.path.join(OUT, f"hf_{v}.json"))
        vocab, merges = model_of(tok)
        bl = ByteLevelBPETokenizer(add_prefix_space=False)
        bl.train_from_iterator(docs, vocab_size=v, min_frequency=0, special_tokens=["<|endoftext|>"],
                               show_progress=False)
        if model_of(bl._tokenizer) != (vocab, merges):
            sys.exit(f"V={v}: ByteLevelBPETokenizer and BpeTrainer(initial_alphabet) disagree")
        # Reused ids: a merge whose result was already a token.
        made = {}
        reuse = 0
        for a, b in merges:
            reuse += (a + b) in made
            made[a + b] = 1
        print(f"V={v}: {len(vocab)} tokens, {len(merges)} merges, {reuse} merges re-making an existing token")

    # Tie-heavy corpora: few letters, so many pairs share a count.
    with open(os.path.join(OUT, "stress.jsonl"), "w", encoding="ascii") as f:
        for seed in range(30):
            rng = random.Random(1000 + seed)
            alpha = rng.choice(["ab", "abc", "aab", "abcd", "aaab", "ab\u00e9"])
            docs = [" ".join("".join(rng.choice(alpha) for _ in range(rng.randint(1, 16)))
                             for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(2, 30))]
            v = 257 + rng.randint(5, 200)
            vocab, merges = model_of(hf_train(docs, v))
            f.write(json.dumps({"docs": docs, "vocab_size": v, "merges": merges, "n_tokens": len(vocab)},
                               ensure_ascii=True) + "\n")

    # subscope's own tokenizer.json for the same corpus and V=800.
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "c.json")
        with open(cfg, "w") as f:
            json.dump({"n_layer": 1, "n_head": 1, "n_embd": 8, "n_positions": 16, "vocab_size": 800}, f)
        subprocess.run([SUBSCOPE, "train", "--config", cfg, "--data", os.path.join(OUT, "corpus.txt"),
                        "--vocab-size", "800", "--steps", "1", "--batch", "1", "--seq", "16",
                        "--out", os.path.join(tmp, "m")], check=True, stderr=subprocess.DEVNULL)
        with open(os.path.join(tmp, "m", "tokenizer.json"), encoding="utf-8") as f:
            sub_text = f.read()
    with open(os.path.join(OUT, "subscope_800.json"), "w", encoding="utf-8", newline="\n") as f:
        f.write(sub_text)
    sub = Tokenizer.from_str(sub_text)
    same = model_of(sub) == model_of(hf[800])
    print("subscope_800.json vocabulary and merges equal HF's:", same)
    if not same:
        sv, sm = model_of(sub)
        hv, hm = model_of(hf[800])
        for i, (x, y) in enumerate(zip(sm, hm)):
            if x != y:
                print(f"  first differing merge: rank {i}: subscope {x} HF {y}")
                break

    # Held-out strings: fresh documents, and text the corpus never had.
    held = corpus(777, 60) + [
        "", " ", "Hello world", "The international season was unbelievable!", "naïve café in Zürich",
        "Ωμέγα ∑ ∫ ☃", "x𝔘𝔫𝔦y", "🙂🙂🙂 party 🎉", "a<|endoftext|>b", "<|endoftext|>", "line one\nline two\r\n",
        "    return x**2\n", "1,234,567.89 and 12:30", "     ", "\t\ttabs", "don't won't can't I'm",
        "ALL CAPS SHOUTING", "\x00\x01\x7f", "Straße über smörgåsbord", "東京と서울",
    ]
    with open(os.path.join(OUT, "encodings.jsonl"), "w", encoding="ascii") as f:
        for t in held:
            rec = {"text": t, "hf": hf[800].encode(t).ids, "subscope_file": sub.encode(t).ids}
            f.write(json.dumps(rec, ensure_ascii=True) + "\n")
    agree = sum(hf[800].encode(t).ids == sub.encode(t).ids for t in held)
    print(f"held-out strings: {agree}/{len(held)} encode the same with HF's and subscope's tokenizer.json")


if __name__ == "__main__":
    main()
