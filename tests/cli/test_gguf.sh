#!/usr/bin/env bash
# gguf_dump on the gguf-py goldens: the header line, typed metadata, the
# tensor table, dequantised values equal to gguf-py's, and errors (truncated
# file, unknown tensor, not a GGUF file) that exit 1 naming the file.
cd "$(dirname "$0")/../.." || exit 2
source tests/cli/lib.sh
DUMP=${TOOLBIN}gguf_dump
D=tests/data/gguf

# expect_out NAME SUBSTRING CMD...: exit 0 and SUBSTRING (fixed string) in stdout
expect_out() {
    local n=$1 sub=$2; shift 2; local out rc
    out=$("$@" 2>&1); rc=$?
    if [ $rc -eq 0 ] && printf '%s' "$out" | grep -qF -- "$sub"; then pass "$n"
    else fail "$n" "exit $rc, output: $(printf '%s' "$out" | tail -n 3)" "wanted: $sub"; fi
}

expect_out header "GGUF version 3, 33 metadata keys, 10 tensors, alignment 32" $DUMP $D/types.gguf
expect_out u64_max "t.u64 (UINT64) = 18446744073709551615" $DUMP $D/types.gguf
expect_out nested "t.nested3 (ARRAY[2] of ARRAY[1] of ARRAY[2] of INT32) = [[[1, 2]], [[3], [4, 5]]]" $DUMP $D/types.gguf
expect_out string_nul 't.str_nul (STRING) = "a\x00b"' $DUMP $D/types.gguf
expect_out table_row "q4_1.mat" $DUMP $D/types.gguf
expect_out alignment64 "alignment 64" $DUMP $D/align64.gguf
expect_out tokens_truncated 'tokenizer.ggml.tokens (ARRAY[74] of STRING) = ["<|endoftext|>", "<s>", "</s>", "!"' $DUMP $D/llama.gguf
expect_out tokens_all '"Ġth", "en", "Ġs"]' $DUMP $D/llama.gguf --all
expect_out llama_table "token_embd.weight                Q8_0   [74, 32]" $DUMP $D/llama.gguf

# gguf-py's own dequantisation of q4_1.vec starts 2.8256836 3.5625 0.24682617 0.6152344 4.2993164.
out=$($DUMP $D/types.gguf --tensor q4_1.vec --count 5 | tr '\n' ' ')
if [ "$out" = "2.82568359 3.5625 0.246826172 0.615234375 4.29931641 " ]; then pass q4_1_values
else fail q4_1_values "got: $out"; fi
n=$($DUMP $D/llama.gguf --tensor blk.0.ffn_down.weight --count 100 | wc -l)
if [ "$n" -eq 100 ]; then pass count_across_rows; else fail count_across_rows "got $n lines"; fi

# --help is usage on stdout (exit 0); an unknown option or a bad --count is usage (exit 2)
out=$($DUMP --help 2>/dev/null); rc=$?
[ $rc = 0 ] && [ "${out#usage: gguf_dump}" != "$out" ] && pass help || fail help "exit $rc: $out"
out=$($DUMP $D/llama.gguf --bogus 2>&1 >/dev/null); rc=$?
[ $rc = 2 ] && printf '%s' "$out" | grep -q "unknown option --bogus" && pass unknown_option || fail unknown_option "exit $rc: $out"
out=$($DUMP $D/llama.gguf --tensor token_embd.weight --count x 2>&1 >/dev/null); rc=$?
[ $rc = 2 ] && printf '%s' "$out" | grep -q "count needs a positive integer, got 'x'" && pass bad_count || fail bad_count "exit $rc: $out"
out=$($DUMP $D/llama.gguf --tensor token_embd.weight --count +3 2>&1 >/dev/null); rc=$? # digits only
[ $rc = 2 ] && printf '%s' "$out" | grep -q "count needs a positive integer, got '+3'" && pass bad_count_plus || fail bad_count_plus "exit $rc: $out"

head -c 2000 $D/types.gguf > "$TMP/cut.gguf"
expect_fail truncated_data 'cut.gguf: tensor "bf16.t3": bytes [160, +96) of the data section run past the end of the file' $DUMP "$TMP/cut.gguf"
head -c 500 $D/types.gguf > "$TMP/cut2.gguf"
expect_fail truncated_header "cut2.gguf: truncated file" $DUMP "$TMP/cut2.gguf"
expect_fail no_tensor "no tensor named \"nope\"" $DUMP $D/types.gguf --tensor nope
printf 'GGML\3\0\0\0' > "$TMP/bad.gguf"
expect_fail not_gguf "bad.gguf: not a GGUF file" $DUMP "$TMP/bad.gguf"
expect_fail missing "nonexistent.gguf" $DUMP "$TMP/nonexistent.gguf"
finish
