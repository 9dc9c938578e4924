#!/usr/bin/env python3
"""Writes the tokenizer goldens used by tests/unit/test_tokenizer.c.

Run by hand from the repository root (needs the `tokenizers` package):

    python3 tests/gen/gen_tokenizer_goldens.py

Outputs (committed):
  tests/data/tokenizer_goldens.jsonl   one JSON object per line:
    {"variant_def": NAME, "base": FILE, "patch": TEXT}
        a tokenizer: tests/data/FILE with TEXT (JSON members) appended to its
        top-level object; later members override earlier ones (last key wins
        in both Python's json and subscope's parser).
    {"text": T, "ids": [...], "variant": NAME}     (variant absent: GPT-2)
        Hugging Face `Tokenizer.encode(T).ids` for that tokenizer.
    {"decode_ids": [...], "bytes_hex": H}
        the exact bytes those GPT-2 ids stand for (inverse byte map).
  tests/data/tokenizer_trained_bl.json  a ByteLevelBPETokenizer trained here
  tests/data/tokenizer_trained_raw.json a Tokenizer(BPE(unk)) + ByteLevel one

It also checks that encoder.json + vocab.bpe (tokenizers.models.BPE with the
same ByteLevel setup and <|endoftext|> as a special token) gives the same ids
as tokenizer.json on every GPT-2 case.
"""
import json
import os
import random
import sys

from tokenizers import ByteLevelBPETokenizer, Tokenizer, decoders, models, pre_tokenizers, trainers

DATA = "tests/data"
GPT2 = os.path.join(DATA, "gpt2-tokenizer")
OUT = os.path.join(DATA, "tokenizer_goldens.jsonl")

# --------------------------------------------------------------------------
# Hand-written cases: every category the C encoder must get exactly right.
HAND = [
    "", " ", "  ", "   ", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", "\t", "\t\t", " \t \n ", "a", "A",
    "Hello world", "Hello  world", "Hello   world ", "hello world\n", "abc   ", "   abc", "a \n b", "a  \n  b",
    "line1\nline2\r\nline3\rline4", "trailing tab\t", "x\n \n", "  \n  ", "a\t\tb", "end.\n\n\n",
    # contractions, including the uppercase forms GPT-2 does not special-case
    "I'm", "you're", "they've", "we'll", "he'd", "it's", "don't", "can't", "I'M", "YOU'LL", "IT'S", "WE'RE",
    "He'D", "'s", "'sa", "''s", "x's's", "'", "''", "' s", "can\u2019t", "rock 'n' roll", "'ll've'd",
    # digits and numbers
    "123", "1234567890123", "3.14159", "1,000,000", "a1b2c3", " 42", "$1,234.56", "2024-01-01", "0x1F",
    "\u0663\u0664\u0665", "\u00bd", "x\u00b2", "\u216b", "\u2460\u2461", "99 bottles", "1e-10", "12:30pm",
    # accents and combining marks
    "caf\u00e9", "na\u00efve", "\u00c5ngstr\u00f6m", "cafe\u0301", "e\u0301\u0302", "Z\u0351\u0360\u035c\u0348a\u0308",
    "Cr\u00e8me br\u00fbl\u00e9e", "\u0130stanbul", "stra\u00dfe", "\u1e9e", "\u0301", " \u0301a",
    # CJK, Hangul, other scripts
    "\u4f60\u597d\uff0c\u4e16\u754c", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u1100\u1161\u11a8", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd", "\u200f\u05e9\u200e", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
    "\u0928\u092e\u0938\u094d\u0924\u0947", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
    "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5", "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0",
    "\u1200\u1208\u1218", "\U00020000\U0002a6d6",
    # emoji: ZWJ sequences, flags, skin tones, keycaps, variation selectors
    "\U0001f44d", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0001f1fa\U0001f1f8\U0001f1eb\U0001f1f7", "\U0001f3f3\ufe0f\u200d\U0001f308", "\u2764\ufe0f", "a\U0001f600b",
    "1\ufe0f\u20e3", " \U0001f389 party \U0001f389", "\U0001f9d1\U0001f3ff\u200d\U0001f4bb", "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    # unusual white space (Oniguruma's \s is Unicode White_Space)
    "\u00a0", "a\u00a0b", "a \u00a0 b", "\u3000x", "a\u2028b", "a\u2029b", "a\u0085b", "a\u180eb", "a\u200bb",
    "\ufeffx", "a\x0bb\x0cc", "a\x1cb\x1dc\x1ed\x1fe", "\u2003\u2003word", "x\u202fy", "x\u205fy", " \u1680 ",
    # special token inside text
    "<|endoftext|>", "a<|endoftext|>b", "<|endoftext|><|endoftext|>", " <|endoftext|> ", "<|endoftext|",
    "<|endoftext|>\n\nNext document", "<<|endoftext|>>", "word<|endoftext|>word", "  <|endoftext|>  x",
    "<|endoftext|> <|endoftext|>", "<|ENDOFTEXT|>", "<|endoftext|>" * 3 + "tail",
    # control characters
    "\x00", "a\x00b", "\x7f", "\x1b[31mred\x1b[0m", "\x01\x02\x03", "\x08\x07",
    # code, markup, URLs
    "def f(x):\n    return x**2\n", "int main() { return 0; }\n", '{"key": [1, 2.5, "v"]}',
    "https://example.com/path?q=1&r=2#frag", "<div class=\"a\">hi</div>", "    indented\n\tTabbed",
    "if (a != b && c >= d) { x += 1; }", "SELECT * FROM t WHERE id=42;", "$ ls -la ~/src", "#!/bin/sh",
    "**bold** _it_ `code`", "email@example.org", "C:\\Users\\x", "a->b::c", "...", "?!?!", "----------",
    # letters and symbols assigned in recent Unicode versions
    "\U0001e030\U0001e031", "\U00011f04\U00011f05", "\U0001f6dc", "\U0001faf8", "\u0c5d", "\U0001e4d0",
    # long runs (beyond the 256-byte cache limit)
    "a" * 300, " " * 300, "\n" * 50, " " * 40 + "x", "!" * 100, "ab" * 200, "7" * 64, "\u4e00" * 120,
    "\U0001f600" * 30,
    # mixtures
    "Hello, \u4e16\u754c! 123 \U0001f389 caf\u00e9", "The year 2024 \u2014 \u201cquoted\u201d \u2026 done.",
    "mix\u00e9d\u4e2d\u6587and\u0627\u0644\u0639\u0631\u0628\u064a\u0629 123\u0664\u0665",
]

POOLS = {
    "ascii": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "digits": "0123456789",
    "space": [" ", " ", " ", "  ", "\t", "\n", "\r\n", "\n\n", "\u00a0", "\u3000", "\u2028", "\x0b", "\u180e", "\u200b"],
    "punct": list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["\u2014", "\u201c", "\u201d", "\u2026", "\u00bf", "\u00a7"],
    "contr": ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'Re", "n't"],
    "accent": list("\u00e9\u00e8\u00ea\u00eb\u00e0\u00e2\u00f6\u00fc\u00f1\u00e7\u00c5\u00d8\u0142\u0131\u0130"),
    "comb": ["\u0301", "\u0300", "\u0308", "\u0327", "\u0351", "\u20e3", "\u0e31", "\u094d"],
    "cjk": list("\u4e00\u4e8c\u4e09\u6587\u5b57\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001\u3002\uff0c"),
    "hangul": list("\ud55c\uad6d\uc5b4\ud14d\uc2a4\ud2b8\u1100\u1161\u11a8"),
    "arabic": list("\u0645\u0631\u062d\u0628\u0627\u0644\u0639\u064a\u0629\u0664\u0665\u060c"),
    "indic": list("\u0928\u092e\u0938\u094d\u0924\u0947\u0e2a\u0e27\u0e14"),
    "emoji": ["\U0001f44d", "\U0001f3fd", "\u200d", "\U0001f468", "\U0001f469", "\U0001f1fa", "\U0001f1f8",
              "\u2764", "\ufe0f", "\U0001f600", "\U0001f308", "\U0001f3f3"],
    "special": ["<|endoftext|>", "<|endoftext|", "<|", "|>"],
    "ctrl": ["\x00", "\x01", "\x1b", "\x7f", "\x1c"],
}
WEIGHTS = {"ascii": 30, "digits": 8, "space": 14, "punct": 8, "contr": 5, "accent": 5, "comb": 3, "cjk": 5,
           "hangul": 3, "arabic": 3, "indic": 2, "emoji": 5, "special": 2, "ctrl": 1}


# Characters the trained tokenizers never saw (unknown bytes: unk or dropped).
UNSEEN = ["\u03a9\u2211\u222b\u2603", "x\U0001d518\U0001d52b\U0001d526y", "\u00c6\u00d8\u00c5 \u00e6\u00f8\u00e5",
          "\u2200x\u2203y", "\u0295\u2022\u1d25\u2022\u0294", "\U0001f600\U0001f601\U0001f602", "\x00\x01\x02 \x7f\x7f"]


def random_text(rng, nseg):
    names = list(WEIGHTS)
    w = [WEIGHTS[n] for n in names]
    out = []
    for _ in range(nseg):
        pool = POOLS[rng.choices(names, w)[0]]
        for _ in range(rng.randint(1, 6)):
            out.append(rng.choice(pool))
    return "".join(out)


PROSE = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness. We'll see what they've done: they're sure it's 42 -- or 3.14159? Nobody knows.\n\n"
    "The committee met on 2023-11-05 at 10:30am; 17 of 23 members (74%) voted \u201cyes\u201d.\n"
)
CODE = (
    "static int add(int a, int b) {\n    return a + b;   // trailing spaces   \n}\n\n"
    "for (size_t i = 0; i < n; i++) {\n\tif (x[i] != 0) sum += x[i] * 2;\n}\r\n"
)
MULTI = (
    "Fran\u00e7ais: l'\u00e9t\u00e9 est arriv\u00e9. Deutsch: Stra\u00dfe und Gr\u00fc\u00dfe. "
    "\u65e5\u672c\u8a9e\u3068\u4e2d\u6587\u3002\ud55c\uad6d\uc5b4\ub3c4. \u0627\u0644\u0639\u0631\u0628\u064a\u0629 "
    "\u0939\u093f\u0928\u094d\u0926\u0940 \U0001f44d\U0001f3fd \U0001f1ef\U0001f1f5<|endoftext|>\n"
)


def long_texts(rng):
    a = "".join(PROSE if i % 3 else CODE for i in range(14))
    b = "".join(rng.choice([PROSE, CODE, MULTI]) for _ in range(12))
    c = " ".join(random_text(rng, 8) for _ in range(60))
    return [a, b, c]


def write_line(f, obj):
    f.write(json.dumps(obj, ensure_ascii=True) + "\n")


def patched(base_text, patch):
    """The document the C test builds: base with members appended."""
    doc = base_text.rstrip()
    assert doc.endswith("}")
    return doc[:-1] + ", " + patch + "}"


def train_tokenizers(corpus):
    bl = ByteLevelBPETokenizer(add_prefix_space=False)
    bl.train_from_iterator(corpus, vocab_size=600, min_frequency=2,
                           special_tokens=["<|endoftext|>", "<pad>"], show_progress=False)
    bl.save(os.path.join(DATA, "tokenizer_trained_bl.json"))

    raw = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, ignore_merges=True))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    raw.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=400, min_frequency=2, special_tokens=["<unk>", "<|endoftext|>"],
                             show_progress=False)
    raw.train_from_iterator(corpus, trainer=tr)
    raw.save(os.path.join(DATA, "tokenizer_trained_raw.json"))


def main():
    rng = random.Random(20240521)
    with open(os.path.join(GPT2, "tokenizer.json"), encoding="utf-8") as f:
        gpt2_text = f.read()
    tok = Tokenizer.from_str(gpt2_text)

    # The encoder.json + vocab.bpe pair, set up as GPT-2 uses it.
    pair = Tokenizer(models.BPE.from_file(os.path.join(GPT2, "encoder.json"), os.path.join(GPT2, "vocab.bpe")))
    pair.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    pair.decoder = decoders.ByteLevel()
    pair.add_special_tokens(["<|endoftext|>"])

    randoms = [random_text(rng, rng.randint(1, 14)) for _ in range(300)]
    longs = long_texts(rng)
    cases = HAND + randoms + longs

    corpus = [PROSE, CODE, MULTI] * 5 + HAND + randoms[:150]
    train_tokenizers(corpus)

    lines = 0
    with open(OUT, "w", encoding="ascii") as f:
        for text in cases:
            ids = tok.encode(text).ids
            ids2 = pair.encode(text).ids
            if ids != ids2:
                sys.exit(f"encoder.json+vocab.bpe disagree with tokenizer.json on {text!r}: {ids} vs {ids2}")
            write_line(f, {"text": text, "ids": ids})
            lines += 1

        # Added-token flags (lstrip/rstrip/single_word/normalized, overlap,
        # an added token already in the vocabulary, non-ASCII content).
        added = [
            {"content": "<|endoftext|>", "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": True, "special": True},
            {"content": "<mask>", "single_word": False, "lstrip": True, "rstrip": True,
             "normalized": True, "special": True},
            {"content": "[SW]", "single_word": True, "lstrip": False, "rstrip": False,
             "normalized": False, "special": False},
            {"content": "\u2603snow", "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": False},
            {"content": "hello", "single_word": False, "lstrip": False, "rstrip": True,
             "normalized": True, "special": False},
            {"content": "<|end", "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True},
            {"content": "<mask>X", "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": True, "special": False},
        ]
        # Ids as HF assigns them (vocabulary id if present, else the next free one).
        probe = Tokenizer.from_str(gpt2_text)
        for a in added:
            from tokenizers import AddedToken
            at = AddedToken(a["content"], single_word=a["single_word"], lstrip=a["lstrip"], rstrip=a["rstrip"],
                            normalized=a["normalized"], special=a["special"])
            (probe.add_special_tokens if a["special"] else probe.add_tokens)([at])
            a["id"] = probe.token_to_id(a["content"])
        added_cases = [
            "<mask>", "a <mask> b", "a<mask>b", "x  \t<mask>\n\ny", "<mask> <mask>", "<mask>X", " <mask>X ",
            "[SW]", "a [SW] b", "a[SW] b", "a [SW]b", "_[SW]", "\u00e9[SW]", "a\u0301[SW]", "-[SW]-", "[SW][SW]",
            "x[SW]", "\u2603snow", "a\u2603snowb", "\u2603sno", "hello world", "hello   world", "sayhello  there",
            "Hello", "<|endoftext|>", "a<|endoftext|>b", "<|end", "<|en", "<mask>hello <|endoftext|> [SW] \u2603snow",
            "<mask>\u3000x", "<mask>\u00a0\u2000x", "\u2028<mask>",
        ] + randoms[:40]
        patch = '"added_tokens": ' + json.dumps(added)
        vt = Tokenizer.from_str(patched(gpt2_text, patch))
        for a in added:
            assert vt.token_to_id(a["content"]) == a["id"], a
        write_line(f, {"variant_def": "added", "base": "gpt2-tokenizer/tokenizer.json", "patch": patch})
        for text in added_cases:
            write_line(f, {"variant": "added", "text": text, "ids": vt.encode(text).ids})
            lines += 1

        # ByteLevel options.
        for name, pt in [("prefix", {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                                     "use_regex": True}),
                         ("noregex", {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                      "use_regex": False})]:
            patch = '"pre_tokenizer": ' + json.dumps(pt)
            vt = Tokenizer.from_str(patched(gpt2_text, patch))
            write_line(f, {"variant_def": name, "base": "gpt2-tokenizer/tokenizer.json", "patch": patch})
            for text in HAND[:60] + [t for t in HAND if "<|endoftext|>" in t] + randoms[:30]:
                write_line(f, {"variant": name, "text": text, "ids": vt.encode(text).ids})
                lines += 1

        # Freshly trained tokenizers (merges stored as pairs).
        for name, fname in [("trained_bl", "tokenizer_trained_bl.json"), ("trained_raw", "tokenizer_trained_raw.json")]:
            with open(os.path.join(DATA, fname), encoding="utf-8") as g:
                base_text = g.read()
            vt = Tokenizer.from_str(base_text)
            write_line(f, {"variant_def": name, "base": fname, "patch": ""})
            for text in HAND + randoms[:100] + UNSEEN:
                write_line(f, {"variant": name, "text": text, "ids": vt.encode(text).ids})
                lines += 1
        # The raw one without unk_token (unknown bytes are dropped) and
        # without ignore_merges.
        with open(os.path.join(DATA, "tokenizer_trained_raw.json"), encoding="utf-8") as g:
            raw_doc = json.load(g)
        model = raw_doc["model"]
        model["unk_token"] = None
        model["ignore_merges"] = False
        patch = '"model": ' + json.dumps(model, ensure_ascii=True)
        with open(os.path.join(DATA, "tokenizer_trained_raw.json"), encoding="utf-8") as g:
            vt = Tokenizer.from_str(patched(g.read(), patch))
        write_line(f, {"variant_def": "trained_nounk", "base": "tokenizer_trained_raw.json", "patch": patch})
        for text in HAND[:80] + randoms[:40] + UNSEEN:
            write_line(f, {"variant": "trained_nounk", "text": text, "ids": vt.encode(text).ids})
            lines += 1

        # Decode: exact bytes of single tokens and of sequences that split a
        # UTF-8 character (HF's own decode would replace those with U+FFFD).
        byte_of = {}
        n = 256
        for b in range(256):
            if (33 <= b <= 126) or (161 <= b <= 172) or (174 <= b <= 255):
                byte_of[chr(b)] = b
            else:
                byte_of[chr(n)] = b
                n += 1
        dec_cases = [[0], [197], [220], [198], [50256], [31373, 995], [447], [447, 247], [9468, 239],
                     [10298], [40, 1101, 50256, 1101], [188], [255], [256], [50255]]
        dec_cases += [[rng.randrange(50257) for _ in range(rng.randint(1, 12))] for _ in range(20)]
        for ids in dec_cases:
            out = bytearray()
            for i in ids:
                tokstr = tok.id_to_token(i)
                out += tokstr.encode() if i == 50256 else bytes(byte_of[ch] for ch in tokstr)
            write_line(f, {"decode_ids": ids, "bytes_hex": out.hex()})
    size = os.path.getsize(OUT)
    print(f"wrote {OUT}: {lines} encode cases, {size} bytes")


if __name__ == "__main__":
    main()
