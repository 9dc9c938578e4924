#!/usr/bin/env bash
# --model FILE.gguf through the commands: info names the file's ggml types,
# predict and forward run on the tiny random Llama of tests/data/llama-gguf
# (the same ids as its Hugging Face directory), forward records the equivalent
# config.json, and a file of another architecture is refused by name.
cd "$(dirname "$0")/../.." || exit 2
source tests/cli/lib.sh
D=tests/data/llama-gguf

expect_out() {
    local n=$1 sub=$2; shift 2; local out rc
    out=$("$@" 2>&1); rc=$?
    if [ $rc -eq 0 ] && printf '%s' "$out" | grep -qF -- "$sub"; then pass "$n"
    else fail "$n" "exit $rc, output: $(printf '%s' "$out" | tail -n 3)" "wanted: $sub"; fi
}

expect_out info_types "Q8_0,F32 in the files" $SUBSCOPE info --model $D/tiny-q8_0.gguf
expect_out info_gqa "4 x d_head 16, 2 key/value heads" $SUBSCOPE info --model $D/tiny-f32.gguf

# The F32 GGUF predicts exactly what the Hugging Face directory does.
a=$($SUBSCOPE predict --model $D/tiny-f32.gguf --prompt "Sefa Kestrup is a 12" --top 5 --device cpu 2>&1)
b=$($SUBSCOPE predict --model $D/hf --prompt "Sefa Kestrup is a 12" --top 5 --device cpu 2>&1)
if [ -n "$a" ] && [ "$a" = "$b" ]; then pass predict_same_as_hf; else fail predict_same_as_hf "$a" "$b"; fi

# tokenize reads the tokenizer inside the file: the ids of the Hugging Face directory, and back.
a=$($SUBSCOPE tokenize --model $D/tiny-f32.gguf --text "Sefa Kestrup is a 12" 2>&1)
b=$($SUBSCOPE tokenize --model $D/hf --text "Sefa Kestrup is a 12" 2>&1)
if [ -n "$a" ] && [ "$a" = "$b" ]; then pass tokenize_same_as_hf; else fail tokenize_same_as_hf "$a" "$b"; fi
expect_out tokenize_decode "Sefa Kestrup is a 12" $SUBSCOPE tokenize --model $D/tiny-f32.gguf --decode --text "$a"
expect_fail tokenize_no_tokenizer "has no tokenizer" $SUBSCOPE tokenize --model $D/llama3-ropefreqs.gguf --text hi
# predict says what tokenize says of a .gguf without one; it asked for a tokenizer.json.
expect_fail predict_no_tokenizer "llama3-ropefreqs.gguf has no tokenizer (no tokenizer.ggml.model)" \
    $SUBSCOPE predict --model $D/llama3-ropefreqs.gguf --prompt hi

printf '{"text": "Thank you for the tea, 2024.", "label": "harmless"}\n' >"$TMP/p.jsonl"
expect_ok forward $SUBSCOPE forward --model $D/tiny-q4_1.gguf --input "$TMP/p.jsonl" --sites 'blocks.*.mlp.hook_post' \
    --out "$TMP/f.h5" --device cpu
if command -v h5dump >/dev/null; then
    expect_out forward_config '"num_key_value_heads": 2, "head_dim": 16' h5dump -a /model_config "$TMP/f.h5"
fi
expect_ok collect $SUBSCOPE collect --model $D/tiny-q8_0.gguf --input "$TMP/p.jsonl" --sites 'blocks.*.mlp.hook_post' \
    --group-by label --out "$TMP/s.h5" --device cpu

# A Llama 3.x-style file: llama3 rope scaling stored as rope_freqs.weight (the lead's
# llama-gqa-llama3 model converted; tests/gen/gen_llama_gguf.py) gives transformers'
# logits and every site, within test_forward.sh's fp32 tolerance.
G=tests/data/golden
if $SUBSCOPE forward --model $D/llama3-ropefreqs.gguf --input $G/llama-gqa-llama3.jsonl --out "$TMP/l3.h5" \
        --sites '*' --batch 2 --device cpu >/dev/null 2>"$TMP/err"; then
    if res=$(${TOOLBIN}h5cmp --atol 1e-4 --rtol 1e-4 $G/llama-gqa-llama3.h5 "$TMP/l3.h5" 2>&1); then
        pass "llama3 rope_freqs GGUF: logits and every site match transformers"
    else fail llama3_rope_freqs "$(printf '%s\n' "$res" | grep -E 'FAIL|h5cmp' | head -5)"; fi
    expect_out rope_freqs_recorded "(0): 1.73594, 8, 8, 8" h5dump -a /model_rope_freqs "$TMP/l3.h5"
else
    fail llama3_rope_freqs "$(cat "$TMP/err")"
fi

# K-quants end to end: a Q4_K_M-style mixture (Q2_K..Q6_K, rows of 256 and 512) against
# transformers run on gguf-py's dequantisation of the same blocks (tests/gen/gen_llama_gguf.py).
expect_out kquant_info "Q5_K,F32,Q3_K,Q4_K,Q6_K,Q2_K in the files" $SUBSCOPE info --model $D/tiny-kquants.gguf
if $SUBSCOPE forward --model $D/tiny-kquants.gguf --input $G/llama-kquants.jsonl --out "$TMP/kq.h5" \
        --sites 'blocks.*.hook_resid_post,blocks.*.mlp.hook_post' --batch 2 --device cpu >/dev/null 2>"$TMP/err"; then
    if res=$(${TOOLBIN}h5cmp --atol 1e-4 --rtol 1e-4 $G/llama-kquants.h5 "$TMP/kq.h5" 2>&1); then
        pass "K-quant GGUF (Q2_K..Q6_K): logits and sites match transformers on the dequantised weights"
    else fail kquant_forward "$(printf '%s\n' "$res" | grep -E 'FAIL|h5cmp' | head -5)"; fi
else
    fail kquant_forward "$(cat "$TMP/err")"
fi

# Byte-fallback tokens (<0xDD>: one byte of a UTF-8 character) print as \xNN in predict's, trace's
# and show's tables and in predict --generate's continuation: what reaches the terminal is valid
# UTF-8 (this random model's top guesses are such bytes: before, they were written raw).
utf8_ok() { python3 -c 'import sys; sys.stdin.buffer.read().decode("utf-8")' 2>/dev/null; }
check_utf8() { # name file
    if utf8_ok <"$2" && grep -qE '\\x[0-9a-f]{2}' "$2"; then pass "$1: valid UTF-8, byte tokens as \\xNN"
    else fail "$1" "$(od -c "$2" | head -n 4)"; fi
}
$SUBSCOPE predict --model $D/tiny-f32.gguf --prompt Hello --top 20 --device cpu >"$TMP/u_top" 2>&1
grep -qE '^1 +156 .*"\\xdd"$' "$TMP/u_top" && check_utf8 utf8_predict_top "$TMP/u_top" || fail utf8_predict_top "$(head -n 3 "$TMP/u_top")"
$SUBSCOPE predict --model $D/tiny-f32.gguf --prompt Hello --generate 20 --device cpu >"$TMP/u_gen" 2>&1
grep -q '^Hello\\xdd' "$TMP/u_gen" && check_utf8 utf8_predict_generate "$TMP/u_gen" || fail utf8_predict_generate "$(od -c "$TMP/u_gen" | head -n 3)"
printf '%s\n' '{"name": "m0", "site": "blocks.0.mlp.hook_post", "units": [1, 2]}' >"$TMP/u_sm.jsonl"
$SUBSCOPE trace --model $D/tiny-f32.gguf --prompt Hello --submodels "$TMP/u_sm.jsonl" --device cpu >"$TMP/u_trace" 2>&1
grep -qE "^ +4 'o' +'\\\\xdd' " "$TMP/u_trace" && check_utf8 utf8_trace "$TMP/u_trace" || fail utf8_trace "$(tail -n 2 "$TMP/u_trace")"
printf '{"text": "Hello", "label": "x"}\n' >"$TMP/u_p.jsonl"
if $SUBSCOPE forward --model $D/hf --input "$TMP/u_p.jsonl" --out "$TMP/u_f.h5" --device cpu >/dev/null 2>"$TMP/err"; then
    $SUBSCOPE show "$TMP/u_f.h5" >"$TMP/u_show" 2>&1
    grep -qF '[0] "Hello" -> "\xdd"' "$TMP/u_show" && check_utf8 utf8_show "$TMP/u_show" || fail utf8_show "$(grep -A1 next-token "$TMP/u_show")"
else
    fail utf8_show "$(cat "$TMP/err")"
fi
# show decodes a forward file of the .gguf itself with the tokenizer inside it (it looked for a
# tokenizer.json under the path, found none and showed "(5 tokens) -> id 156"); a model since
# moved away still gives the ids, quietly.
cp $D/tiny-f32.gguf "$TMP/moved.gguf"
if $SUBSCOPE forward --model "$TMP/moved.gguf" --input "$TMP/u_p.jsonl" --out "$TMP/g_f.h5" --device cpu >/dev/null 2>"$TMP/err"; then
    expect_out show_gguf_decodes '[0] "Hello" -> "\xdd"  p=0.156' $SUBSCOPE show "$TMP/g_f.h5"
    rm "$TMP/moved.gguf"
    expect_out show_gguf_moved '[0] (5 tokens) -> id 156  p=0.156' $SUBSCOPE show "$TMP/g_f.h5"
else
    fail show_gguf_decodes "$(cat "$TMP/err")"
fi

expect_fail not_llama 'general.architecture "testarch" is not supported' $SUBSCOPE info --model tests/data/gguf/types.gguf
expect_fail missing 'no-such.gguf' $SUBSCOPE info --model $D/no-such.gguf
finish
