#!/usr/bin/env bash
# subscope train --vocab-size: the tokenizer is trained on the data first,
# written as tokenizer.json + vocab.json + merges.txt (the same tokenizer.json
# the library's trainer gives, tests/data/bpe/subscope_800.json for the
# committed corpus), the model is trained on its ids, and the directory loads;
# the bad combinations fail without leaving an output directory.
source "$(dirname "$0")/lib.sh"
DATA=${SS_TEST_DATA:-tests/data}/bpe

cat >"$TMP/c800.json" <<'J'
{"n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 32, "vocab_size": 800}
J
run() { "$SUBSCOPE" train --data "$DATA/corpus.txt" --steps 3 --batch 2 --seq 32 --log-every 1 "$@"; }

if run --config "$TMP/c800.json" --vocab-size 800 --out "$TMP/m" 2>"$TMP/log"; then pass "train with --vocab-size 800"
else fail "train with --vocab-size 800" "$(tail -3 "$TMP/log")"; fi
grep -q "^tokenizer: 800 ids (543 merges) trained on 0.12 MB" "$TMP/log" && pass "tokenizer line on stderr" ||
    fail "tokenizer line on stderr" "$(head -3 "$TMP/log")"
cmp -s "$DATA/subscope_800.json" "$TMP/m/tokenizer.json" && pass "tokenizer.json is the committed one (HF's merges)" ||
    fail "tokenizer.json is the committed one"
head -1 "$TMP/m/merges.txt" | grep -q '^#version: 0.2$' && [ "$(wc -l <"$TMP/m/merges.txt")" -eq 544 ] &&
    grep -q '"<|endoftext|>": 0,' "$TMP/m/vocab.json" && pass "vocab.json and merges.txt" || fail "vocab.json and merges.txt"
grep -q '"trained_tokenizer": {"type": "byte-level BPE", "vocab_size": 800, "merges": 543' "$TMP/m/subscope_train.json" &&
    pass "subscope_train.json records the tokenizer" || fail "subscope_train.json records the tokenizer"
grep -q '"eos_token_id": 0' "$TMP/m/config.json" && pass "config.json: eos_token_id 0" || fail "config.json eos"
printf '{"text": "The international season"}\n' >"$TMP/p.jsonl"
expect_ok "forward loads the directory" "$SUBSCOPE" forward --model "$TMP/m" --input "$TMP/p.jsonl" --out "$TMP/f.h5"
run --config "$TMP/c800.json" --vocab-size 800 --out "$TMP/m2" 2>/dev/null
cmp -s "$TMP/m/model.safetensors" "$TMP/m2/model.safetensors" && cmp -s "$TMP/m/tokenizer.json" "$TMP/m2/tokenizer.json" &&
    pass "rerun: identical tokenizer and weights" || fail "rerun: identical tokenizer and weights"

expect_fail "config vocab_size differs" "vocab_size 800 differs from --vocab-size 700" \
    run --config "$TMP/c800.json" --vocab-size 700 --out "$TMP/bad"
expect_fail "--vocab-size below 257" "--vocab-size must be an integer in 257.." \
    run --config "$TMP/c800.json" --vocab-size 256 --out "$TMP/bad"
expect_fail "both --tokenizer and --vocab-size" "not both" \
    run --config "$TMP/c800.json" --vocab-size 800 --tokenizer models/tiny-gpt2 --out "$TMP/bad"
printf 'ab ab ab\nab\n' >"$TMP/tiny.txt"
echo '{"n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 32, "vocab_size": 300}' >"$TMP/c300.json"
expect_fail "data too small for the vocabulary" "the data yields only 259 tokens (2 merges)" \
    "$SUBSCOPE" train --config "$TMP/c300.json" --data "$TMP/tiny.txt" --vocab-size 300 --out "$TMP/bad"
printf '{"tokens": [1, 2, 3]}\n' >"$TMP/ids.jsonl"
expect_fail "token-id data cannot train a tokenizer" "trains the tokenizer on text" \
    "$SUBSCOPE" train --config "$TMP/c300.json" --data "$TMP/ids.jsonl" --vocab-size 300 --out "$TMP/bad"
[ -e "$TMP/bad" ] && fail "failed runs left $TMP/bad" || pass "failed runs created no output directory"
finish
