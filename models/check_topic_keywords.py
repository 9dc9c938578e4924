#!/usr/bin/env python3
"""Checks that the tokenizer of the topic pair (models/topics-all,
models/topics-no-toxic) keeps every topic keyword in one token: a keyword (a
line of data/topics/keywords_*.txt) must be a single token in at least 90% of
its occurrences in the training text (" goals", " Thanks" and "Thanks" at the
start of a document are different tokens; `subscope ablate`'s keyword metric
counts all of them, since it lowercases a vocabulary entry and strips its
leading space). The keyword metric only sees keywords that are one token, so a
keyword split in pieces would silently drop out of it.

The tokenizer itself is trained by `subscope train --vocab-size 1536` on
data/topics/train_all.txt (models/train_pair.sh). tiny-gpt2's tokenizer is not
used because it was trained on tiny-gpt2's own domain (animals, colours, days)
and splits the topic words ("snerkwit", "goalkeeper", "delightful"); at 1024
ids the sport names are still split, hence 1536.

    python models/check_topic_keywords.py --tokenizer out/topics/tokenizer/tokenizer.json \
        --data data/topics/train_all.txt --keywords data/topics
"""
import argparse
import collections
import glob
import os
import re
import sys

from tokenizers import Tokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json")
    ap.add_argument("--data", required=True, help="the training text it was trained on")
    ap.add_argument("--keywords", required=True, help="directory with keywords_*.txt")
    a = ap.parse_args()

    tok = Tokenizer.from_file(a.tokenizer)
    with open(a.data) as f:
        text = f.read()
    bad, n = [], 0
    for path in sorted(glob.glob(os.path.join(a.keywords, "keywords_*.txt"))):
        with open(path) as f:
            for w in f.read().split():
                n += 1
                forms = collections.Counter(m.group(0) for m in re.finditer(
                    r"(?:^| )" + re.escape(w) + r"\b", text, re.I | re.M))
                total = sum(forms.values())
                single = sum(c for form, c in forms.items() if len(tok.encode(form).ids) == 1)
                if total == 0 or single < 0.9 * total:
                    bad.append(f"{os.path.basename(path)}: '{w}' is one token in {single} of its "
                               f"{total} occurrences {dict(forms.most_common(3))}")
    if n == 0:
        sys.exit(f"{a.keywords}: no keywords_*.txt")
    if bad:
        sys.exit("keywords that are not one token:\n  " + "\n  ".join(bad))
    print(f"{a.tokenizer}: {tok.get_vocab_size()} ids; all {n} keywords are single tokens "
          f"in their occurrences", file=sys.stderr)


if __name__ == "__main__":
    main()
