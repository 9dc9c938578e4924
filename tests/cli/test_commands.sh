#!/usr/bin/env bash
# info, tokenize, predict, show and the top-level CLI: output and error paths.
source "$(dirname "$0")/lib.sh"
D=${SS_TEST_DATA:-tests/data}
TOK=$D/gpt2-tokenizer
M=$D/models/prefix-f32

# tokenize: ids as one JSON array line, equal to Hugging Face tokenizers
# (the full golden set runs in the unit tests; this checks the command's plumbing).
out=$("$SUBSCOPE" tokenize --model "$TOK" --text "Hello world! It's 2024 🎉<|endoftext|>x" 2>&1)
[ "$out" = "[15496, 995, 0, 632, 338, 48609, 12520, 236, 231, 50256, 87]" ] && pass "tokenize prints HF ids" || fail "tokenize prints HF ids" "$out"
out=$("$SUBSCOPE" tokenize --model "$TOK" --decode --text "[15496, 995, 0, 50256]" 2>&1)
[ "$out" = "Hello world!<|endoftext|>" ] && pass "tokenize --decode" || fail "tokenize --decode" "$out"
expect_fail "decode rejects non-array" "--text must be a JSON array" "$SUBSCOPE" tokenize --model "$TOK" --decode --text '{"a":1}'
expect_fail "decode rejects unknown id" "99999" "$SUBSCOPE" tokenize --model "$TOK" --decode --text '[99999]'
expect_fail "tokenize without a tokenizer" "$TMP" "$SUBSCOPE" tokenize --model "$TMP" --text hi

# info: sizes and sites of a known model.
out=$("$SUBSCOPE" info --model "$M" 2>&1)
if printf '%s' "$out" | grep -q "layers       2" && printf '%s' "$out" | grep -q "heads        4 x d_head 8" &&
    printf '%s' "$out" | grep -q "blocks.L.attn.hook_pattern" && printf '%s' "$out" | grep -q "transformer.-prefixed"; then
    pass "info shows architecture and sites"
else fail "info shows architecture and sites" "$out"; fi
n=$("$SUBSCOPE" info --model "$M" --list-sites | wc -l)
[ "$n" = 31 ] && pass "info --list-sites lists 3 + 14 per block" || fail "info --list-sites" "got $n lines"
"$SUBSCOPE" info --model "$M" --list-sites | grep -qx "blocks.1.mlp.hook_post" && pass "site names are TransformerLens names" || fail "site names"
# The parameter count equals the sum of the weight tensors the forward pass uses.
out=$("$SUBSCOPE" info --model "$D/models/noprefix-odd-untied")
# noprefix-odd-untied: V=101, d=24, n_pos=24, L=3, d_mlp=40, untied lm_head
want=$(( 101*24 + 24*24 + 2*24 + 3*(4*24 + 24*72 + 72 + 24*24 + 24 + 24*40 + 40 + 40*24 + 24) + 101*24 ))
printf '%s' "$out" | grep -q "parameters   $want " && pass "parameter count" || fail "parameter count" "want $want" "$(printf '%s' "$out" | grep parameters)"
out=$("$SUBSCOPE" info --config models/tiny-gpt2/config.json 2>&1)
printf '%s' "$out" | grep -q "^parameters   940800 (0.94 M): weights 3.6 MiB in float32" && pass "info --config: a small model's parameters in millions, not '0.00 B'" ||
    fail "info --config parameters of a small model" "$(printf '%s' "$out" | grep parameters)"
# Every label is 12 characters and a space wide, the batch's "N tokens" too (it was followed by two
# spaces, in line only for a 4-digit N).
for t in 7 1000 16384 99999; do
    out=$("$SUBSCOPE" info --config models/tiny-gpt2/config.json --tokens $t 2>&1)
    bad=$(printf '%s\n' "$out" | awk '{ if (substr($0, 13, 1) != " " || substr($0, 14, 1) == " ") print }')
    [ -z "$bad" ] && printf '%s' "$out" | grep -q "^$t tokens" && pass "info --config --tokens $t: the labels aligned" ||
        fail "info --config --tokens $t: a label out of line" "$bad"
done
# a config that names no model type, as train takes (README's small.json): planned as GPT-2, as train reads it
printf '{"n_layer": 4, "n_head": 4, "n_embd": 64, "n_positions": 64, "vocab_size": 1024}' >"$TMP/small.json"
out=$("$SUBSCOPE" info --config "$TMP/small.json" 2>&1)
printf '%s' "$out" | grep -q "^architecture gpt2, 4 layers, d_model 64" && printf '%s' "$out" | grep -q "^parameters   269696 " &&
    pass "info --config of an untyped config (train's): GPT-2" || fail "info --config untyped" "$(printf '%s' "$out" | head -n 3)"
# An option of another of info's three forms would be ignored: refused, naming both, and --config's
# pipeline options are checked before anything is printed.
expect_fail "info --model --tokens refused" "--tokens does not go with --model" "$SUBSCOPE" info --model "$M" --tokens 5
# Without --model, --config or --dist, info names its three forms: --tokens alone was said not to
# go with a --model never given.
expect_fail "info --tokens alone names the three forms" "give --model DIR, --config CONFIG.json or --dist" "$SUBSCOPE" info --tokens 5
expect_fail "info alone names the three forms" "give --model DIR, --config CONFIG.json or --dist" "$SUBSCOPE" info
expect_fail "info --config --list-sites refused" "--list-sites does not go with --config" "$SUBSCOPE" info --config "$TMP/small.json" --list-sites
expect_fail "info --config --model refused" "--model does not go with --config" "$SUBSCOPE" info --config "$TMP/small.json" --model "$M"
expect_fail "info --dist --model refused" "--model does not go with --dist" "$SUBSCOPE" info --dist --model "$M"
expect_fail "info --config --max-memory without --pipeline refused" "--max-memory '1G' plans a pipeline's stages: give --pipeline P" \
    "$SUBSCOPE" info --config "$TMP/small.json" --max-memory 1G
# With --pipeline 1 given, "give --pipeline P too" pointed at what was there: the stages are 2 or more.
expect_fail "info --pipeline 1 --max-memory: P of 2 or more stages" "give --pipeline P of 2 or more stages too" \
    "$SUBSCOPE" info --config "$TMP/small.json" --pipeline 1 --max-memory 1G
expect_fail "forward --pipeline 1 --pipeline-blocks: P of 2 or more stages" "give --pipeline P of 2 or more stages too" \
    "$SUBSCOPE" forward --model "$M" --input data/demo_prompts.jsonl --pipeline 1 --pipeline-blocks 4 --out "$TMP/pb.h5"
out=$("$SUBSCOPE" info --config "$TMP/small.json" --pipeline 2 --pipeline-blocks 1,1 2>/dev/null)
[ $? = 1 ] && [ -z "$out" ] && pass "info --config: a bad --pipeline-blocks prints nothing on stdout" || fail "info --config bad split" "$out"

# predict on the bundled model: the greedy continuation transformers produced
# (tests/data/golden/tiny-gpt2-predict.json; its texts are plain ASCII, no escapes).
G=$D/golden/tiny-gpt2-predict.json
text=$(grep -m1 '"text"' "$G" | sed 's/.*"text": "\(.*\)",*$/\1/')
cont=$(grep -m1 '"greedy_text"' "$G" | sed 's/.*"greedy_text": "\(.*\)",*$/\1/')
out=$("$SUBSCOPE" predict --model models/tiny-gpt2 --prompt "$text" --generate 12 2>&1)
[ "$out" = "$text$cont" ] && pass "predict --generate equals transformers' greedy text" || fail "predict --generate" "got:  $out" "want: $text$cont"
# an eos_token_id list (Llama 3's instruct models: <|end_of_text|>, <|eom_id|>, <|eot_id|>): the
# continuation stops at any of them, here the list's second, the greedy continuation's third
# token (' seven'; the first two are ' six' and ',')
all=$("$SUBSCOPE" tokenize --model models/tiny-gpt2 --text "$text$cont" | tr -d '[] ')
n0=$("$SUBSCOPE" tokenize --model models/tiny-gpt2 --text "$text" | tr -d '[] ' | awk -F, '{print NF}')
stop=$(printf '%s' "$all" | cut -d, -f$((n0 + 3)))
mkdir -p "$TMP/eosl" && cp models/tiny-gpt2/* "$TMP/eosl/"
sed -i "s/\"eos_token_id\": *[0-9]*/\"eos_token_id\": [1000, $stop]/" "$TMP/eosl/config.json"
two=$("$SUBSCOPE" tokenize --model models/tiny-gpt2 --decode --text "[$(printf '%s' "$all" | cut -d, -f$((n0 + 1))-$((n0 + 2)))]")
out=$("$SUBSCOPE" predict --model "$TMP/eosl" --prompt "$text" --generate 12 2>&1)
grep -q "\[1000, $stop\]" "$TMP/eosl/config.json" && [ "$two" = " six," ] && [ "$out" = "$text$two" ] &&
    pass "predict --generate stops at any id of an eos_token_id list" || fail "eos_token_id list" "got:  $out" "want: $text$two"
# SUBSCOPE_PREDICT_TRACE=1 (gpu_check.sh's generation comparisons): one stderr line a step, the
# chosen id (the continuation's tokens, as tokenize gives them) and its logit, the runner-up's id and
# logit (the first step's two are --top 2's, to its 4 decimals, the runner-up's no larger); the
# continuation on stdout unchanged, and no trace without the variable
out=$(SUBSCOPE_PREDICT_TRACE=1 "$SUBSCOPE" predict --model models/tiny-gpt2 --prompt "$text" --generate 12 2>"$TMP/trace.err")
ids=$(awk '$1 == "predict:" && $2 == "step" { printf "%s%s", (n++ ? "," : ""), $5 }' "$TMP/trace.err")
top2=$("$SUBSCOPE" predict --model models/tiny-gpt2 --prompt "$text" --top 2 2>&1 | awk 'NR > 1 { print $2, $4 }' | paste -sd' ')
tr1=$(awk '$1 == "predict:" && $3 == 0 { printf "%s %.4f %s %.4f", $5, $7, $9, $11 }' "$TMP/trace.err")
ordered=$(awk '$1 == "predict:" && $2 == "step" && !($11 <= $7 && $9 != $5) { bad++ } END { print bad + 0 }' "$TMP/trace.err")
quiet=$("$SUBSCOPE" predict --model models/tiny-gpt2 --prompt "$text" --generate 3 2>&1 >/dev/null)
if [ "$out" = "$text$cont" ] && [ "$ids" = "$(printf '%s' "$all" | cut -d, -f$((n0 + 1))-$((n0 + 12)))" ] &&
    [ "$(grep -c '^predict: step' "$TMP/trace.err")" = 12 ] && [ "$tr1" = "$top2" ] && [ "$ordered" = 0 ] && [ -z "$quiet" ]; then
    pass "predict --generate with SUBSCOPE_PREDICT_TRACE=1: each step's id and logit and the runner-up's on stderr"
else fail "SUBSCOPE_PREDICT_TRACE" "stdout: $out" "ids: $ids" "first step: $tr1 (--top 2: $top2)" "out of order: $ordered" \
    "without it: $quiet" "$(head -n 3 "$TMP/trace.err")"; fi
out=$("$SUBSCOPE" predict --model models/tiny-gpt2 --prompt "$text" --top 3 2>&1)
first=$(printf '%s\n' "$out" | awk 'NR==2 {print $2}')
want=$(grep -m1 '"id"' "$G" | tr -dc 0-9)
[ "$first" = "$want" ] && pass "predict --top ranks transformers' top token first" || fail "predict --top" "$out"

if ! nvidia-smi -L >/dev/null 2>&1; then
    # Without a GPU, asking for one is a clear error whether or not the build has CUDA.
    expect_fail "--device cuda without a GPU" "cuda" "$SUBSCOPE" predict --model models/tiny-gpt2 --prompt hi --device cuda
    out=$("$SUBSCOPE" predict --model models/tiny-gpt2 --prompt hi --device auto --top 1 2>&1) && pass "--device auto falls back to the CPU" || fail "--device auto falls back to the CPU" "$out"
fi
# The CUDA backend and the NCCL communicator are plugins beside the program (src/util/plugin.c):
# the program links no CUDA library, a missing plugin is named, and a present one is loaded
# (without a GPU its own message then says why there is no device).
BIN_DIR=$(dirname "$SUBSCOPE")
if [ -e "$BIN_DIR/libsubscope-cuda.so" ]; then
    if ldd "$SUBSCOPE" | grep -qE 'libcudart|libcublas|libcusolver|libnccl'; then
        fail "the program links no CUDA library" "$(ldd "$SUBSCOPE" | grep -E 'cuda|cublas|nccl')"
    else pass "the program links no CUDA library (they come with the plugins)"; fi
    expect_fail "--device cuda with the plugin missing names it" "/nonexistent/libsubscope-cuda.so: not found" \
        env SUBSCOPE_PLUGIN_DIR=/nonexistent "$SUBSCOPE" predict --model models/tiny-gpt2 --prompt hi --device cuda
    if ! nvidia-smi -L >/dev/null 2>&1; then
        expect_fail "--device cuda loads the plugin, which says why there is no GPU" "cuda:0: no" \
            "$SUBSCOPE" predict --model models/tiny-gpt2 --prompt hi --device cuda
    fi
fi
if [ -e "$BIN_DIR/libsubscope-nccl.so" ]; then
    expect_fail "SUBSCOPE_DIST=nccl with the plugin missing names it" "/nonexistent/libsubscope-nccl.so: not found" \
        env SUBSCOPE_PLUGIN_DIR=/nonexistent SUBSCOPE_DIST=nccl "$SUBSCOPE" forward --model models/tiny-gpt2 \
        --input data/demo_prompts.jsonl --out "$TMP/x.h5"
fi
expect_fail "unknown device, naming --device" "--device: unknown device 'gpu'" "$SUBSCOPE" predict --model models/tiny-gpt2 --prompt hi --device gpu
expect_fail "predict --top with --generate refused (--top was ignored)" "give --top K (the next tokens) or --generate N" \
    "$SUBSCOPE" predict --model models/tiny-gpt2 --prompt hi --top 3 --generate 2
expect_fail "bad cuda device number" "expected cuda:N" "$SUBSCOPE" forward --model "$M" --input "$D/golden/prefix-f32.jsonl" --out "$TMP/x.h5" --device cuda:x

# bf16 products on the CPU (the reference for the GPU's tensor-core path).
out=$("$SUBSCOPE" predict --model models/tiny-gpt2 --prompt "$text" --top 1 --dtype bfloat16 2>&1)
[ "$(printf '%s\n' "$out" | awk 'NR==2 {print $2}')" = "$want" ] && pass "predict --dtype bfloat16 keeps the top token" || fail "predict --dtype bfloat16" "$out"
"$SUBSCOPE" forward --model models/tiny-gpt2 --input "$D/golden/tiny-gpt2.jsonl" --out "$TMP/bf.h5" --dtype bf16 2>/dev/null
h5dump -a dtype "$TMP/bf.h5" 2>/dev/null | grep -q "bfloat16 products" && pass "forward --dtype records bfloat16" || fail "forward --dtype records bfloat16"
expect_fail "bad --dtype" "--dtype must be float32, bfloat16, float16 or auto" "$SUBSCOPE" forward --model "$M" --input "$D/golden/prefix-f32.jsonl" --out "$TMP/x.h5" --dtype fp8

# predict --generate keeps each position's keys and values (CPU): a random GPT-2 and a random
# Llama with grouped (4/2) key/value heads and rotations, std 0.3 so that greedy steps are far
# apart and <|endoftext|> is rare, from a prompt 4-7 tokens short of the context of 64, 30 tokens
# (past the context the oldest tokens drop out and each token recomputes the last 64), in fp32
# and bf16 products, give the bytes of the full recompute (SUBSCOPE_PREDICT_RECOMPUTE=1).
# tests/unit/test_forward.c compares each step's logits.
"$TOOLBIN/mkmodel" --out "$TMP/kvg" --vocab 1024 --positions 64 --std 0.3 >/dev/null &&
    cp models/tiny-gpt2/tokenizer.json "$TMP/kvg/"
"$TOOLBIN/mkmodel" --out "$TMP/kvl" --family llama --heads 4 --kv-heads 2 --vocab 300 --positions 64 --std 0.3 >/dev/null &&
    cp "$D/llama-gguf/hf/tokenizer.json" "$TMP/kvl/"
pg=$(printf 'one two %.0s' $(seq 1 28))  # 57 tokens of tiny-gpt2's tokenizer
pl=$(printf 'one two %.0s' $(seq 1 10))  # 60 of the Llama's
for c in "kvg:$pg:float32" "kvg:$pg:bfloat16" "kvl:$pl:float32" "kvl:$pl:bfloat16"; do
    mm=${c%%:*} pr=${c#*:} dt=${c##*:}
    pr=${pr%:*}
    n=$("$SUBSCOPE" tokenize --model "$TMP/$mm" --text "$pr" | tr ',' '\n' | wc -l)
    "$SUBSCOPE" predict --model "$TMP/$mm" --prompt "$pr" --generate 30 --dtype $dt >"$TMP/kv.out" 2>&1
    SUBSCOPE_PREDICT_RECOMPUTE=1 "$SUBSCOPE" predict --model "$TMP/$mm" --prompt "$pr" --generate 30 --dtype $dt >"$TMP/full.out" 2>&1
    "$SUBSCOPE" predict --model "$TMP/$mm" --prompt "$pr" --generate $((64 - n)) --dtype $dt >"$TMP/ctx.out" 2>&1
    # the continuation goes on past the context (longer than the one that fills it)
    if [ "$n" -ge 57 ] && [ "$n" -le 60 ] && cmp -s "$TMP/kv.out" "$TMP/full.out" &&
        [ "$(wc -c <"$TMP/kv.out")" -gt "$(wc -c <"$TMP/ctx.out")" ]; then
        pass "predict --generate 30 with the key/value cache = full recompute ($mm, $n-token prompt, $dt)"
    else fail "predict --generate with the key/value cache ($mm, $dt, $n tokens)" "$(cat "$TMP/kv.out")" "$(cat "$TMP/full.out")"; fi
done
# a prompt that fills the context: the first token from the cache, the rest recomputed
pf="$(printf 'one two %.0s' $(seq 1 31))one two"
"$SUBSCOPE" predict --model "$TMP/kvg" --prompt "$pf" --generate 5 >"$TMP/kv.out" 2>&1
SUBSCOPE_PREDICT_RECOMPUTE=1 "$SUBSCOPE" predict --model "$TMP/kvg" --prompt "$pf" --generate 5 >"$TMP/full.out" 2>&1
[ "$("$SUBSCOPE" tokenize --model "$TMP/kvg" --text "$pf" | tr ',' '\n' | wc -l)" = 64 ] && cmp -s "$TMP/kv.out" "$TMP/full.out" &&
    pass "predict --generate from a prompt of n_positions tokens: cache = recompute" ||
    fail "predict --generate from a full context" "$(cat "$TMP/kv.out")" "$(cat "$TMP/full.out")"

# predict needs a tokenizer; the random models have none.
expect_fail "predict without tokenizer" "has no tokenizer" "$SUBSCOPE" predict --model "$M" --prompt hi
long=$(printf 'cat %.0s' $(seq 1 200))
expect_fail "predict: a prompt longer than the context (no --truncate to suggest)" \
    "tokens, more than the model's context of 128 positions (shorten it)" \
    "$SUBSCOPE" predict --model models/tiny-gpt2 --prompt "$long" --top 1
expect_fail "predict --top out of range" "--top must be an integer" "$SUBSCOPE" predict --model "$M" --prompt hi --top 0

# show on a forward file.
"$SUBSCOPE" forward --model "$M" --input "$D/golden/prefix-f32.jsonl" --out "$TMP/f.h5" --sites 'blocks.*.mlp.hook_post' 2>/dev/null
out=$("$SUBSCOPE" show --file "$TMP/f.h5" 2>&1)
if printf '%s' "$out" | grep -q "/acts/blocks.1.mlp.hook_post *float32 \[prompt 5, position 32, d_mlp 128\]" &&
    printf '%s' "$out" | grep -q "most active neurons"; then pass "show lists datasets with named axes"
else fail "show lists datasets with named axes" "$out"; fi
expect_fail "show on a non-HDF5 file" "$M/config.json" "$SUBSCOPE" show --file "$M/config.json"
# a damaged file whose group links back into itself (fuzz_h5read found it): listing it used to
# recurse until memory ran out; now a format error at 64 levels
expect_fail "show on a file whose groups form a cycle: an error, not a hang" "groups nested more than 64 deep" \
    timeout 60 "$SUBSCOPE" show tests/fuzz/corpus/fuzz_h5read/hang-self-link-cycle.h5
# the file may also be given bare, one only
out2=$("$SUBSCOPE" show "$TMP/f.h5" 2>&1)
if [ "$out2" = "$out" ]; then pass "show FILE = show --file FILE"; else fail "show FILE = show --file FILE" "$out2"; fi
# A long prompt is shown by its last 45 bytes at most, from the start of a UTF-8 character.
printf '{"text": "xxx%s"}\n' "$(printf 'é%.0s' $(seq 30))" >"$TMP/utf.jsonl"
"$SUBSCOPE" forward --model models/tiny-gpt2 --input "$TMP/utf.jsonl" --out "$TMP/utf.h5" >/dev/null 2>&1
"$SUBSCOPE" show "$TMP/utf.h5" >"$TMP/utf.txt" 2>&1
grep -q '\[0\] \.\.\."éé' "$TMP/utf.txt" && iconv -f UTF-8 -t UTF-8 "$TMP/utf.txt" >/dev/null 2>&1 &&
    pass "show cuts a long prompt between UTF-8 characters" || fail "show's cut of a long prompt" "$(grep -a '\[0\]' "$TMP/utf.txt")"
expect_fail "show with two files" "one file at a time" "$SUBSCOPE" show "$TMP/f.h5" "$TMP/f.h5"
expect_fail "show without a file" "no file given" "$SUBSCOPE" show
# --prompts limits a forward file's predictions and losses; of other files show lists no prompts,
# and it changed nothing there: refused before anything is printed, naming the file's kind.
AP=$D/ablate/prompts.jsonl
out=$("$SUBSCOPE" show "$TMP/utf.h5" --prompts 1 2>&1)
printf '%s' "$out" | grep -q '^  \[0\] ' && pass "show --prompts on a forward file" || fail "show --prompts on a forward file" "$out"
"$SUBSCOPE" forward --model models/tiny-gpt2 --input "$AP" --out "$TMP/sp.h5" --loss >/dev/null 2>&1
out=$("$SUBSCOPE" show "$TMP/sp.h5" --prompts 2 2>&1)
[ "$(printf '%s\n' "$out" | grep -c '^  \[[0-9]\] ')" = 2 ] && printf '%s' "$out" | grep -q "^  \.\.\. 6 more" &&
    pass "show --prompts 2: two prompts' predictions" || fail "show --prompts 2" "$out"
"$SUBSCOPE" forward --model models/tiny-gpt2 --input "$AP" --out "$TMP/snl.h5" --no-logits >/dev/null 2>&1
"$SUBSCOPE" ablate --model models/tiny-gpt2 --input "$AP" --mask 'blocks.1.mlp.hook_post[1]' --out "$TMP/sab.h5" >/dev/null 2>&1
"$SUBSCOPE" collect --model models/tiny-gpt2 --input "$AP" --sites blocks.1.mlp.hook_post --stats mean,cov,corr --out "$TMP/sco.h5" >/dev/null 2>&1
"$SUBSCOPE" attribute --model models/tiny-gpt2 --input "$AP" --sites blocks.1.mlp.hook_post --out "$TMP/sat.h5" >/dev/null 2>&1
"$SUBSCOPE" patch --model models/tiny-gpt2 --clean $D/patch/clean.jsonl --corrupt $D/patch/corrupt.jsonl --sites blocks.1.hook_resid_pre --out "$TMP/spa.h5" >/dev/null 2>&1
"$SUBSCOPE" discover --stats "$TMP/sco.h5" --sites blocks.1.mlp.hook_post --method cluster --top 1 --out "$TMP/sdi.h5" >/dev/null 2>&1
"$SUBSCOPE" trace --model models/tiny-gpt2 --prompt "The cat says" --submodels "$TMP/sdi.masks.jsonl" --out "$TMP/str.h5" >/dev/null 2>&1
for c in "snl a forward file with neither /logits nor /loss" "sab an ablate file" "sco a collect file" "sat an attribute file" \
    "spa a patch file" "sdi a discover file" "str a trace file"; do
    f=${c%% *} kind=${c#* }
    out=$("$SUBSCOPE" show "$TMP/$f.h5" --prompts 3 2>"$TMP/show.err"); rc=$?
    [ $rc = 1 ] && [ -z "$out" ] && grep -qF "show: error: --prompts 3: $TMP/$f.h5 is $kind, of which show lists no prompts" "$TMP/show.err" &&
        "$SUBSCOPE" show "$TMP/$f.h5" >/dev/null 2>&1 && pass "show --prompts refused for $kind" ||
        fail "show --prompts on $kind" "exit $rc: $(cat "$TMP/show.err")" "$(printf '%s' "$out" | head -3)"
done

# A write that fails (here the file-size limit, as a full disk would) is an error naming the
# output, exit 1, with no output or temporary file left; before, HDF5's exit handler then
# crashed on the file it could not close. The limit's signal (SIGXFSZ, whose default kills)
# is left as the shell gives it: subscope ignores it itself, so that the write fails instead.
TM=models/tiny-gpt2 TP=tests/data/ablate/prompts.jsonl
"$SUBSCOPE" collect --model $TM --input $TP --sites 'blocks.*.mlp.hook_post' --out "$TMP/st.h5" >/dev/null 2>&1
mkdir -p "$TMP/full"
full() { # full NAME CMD...: run under a 4 KiB file-size limit
    local n=$1 out rc; shift
    out=$(ulimit -f 4; "$@" 2>&1 >/dev/null); rc=$?
    if [ $rc = 1 ] && printf '%s' "$out" | grep -q "File too large" && [ -z "$(ls -A "$TMP/full")" ]; then pass "$n"
    else fail "$n" "exit $rc (want 1), left: $(ls -A "$TMP/full")" "$(printf '%s' "$out" | tail -n 2)"; fi
    rm -f "$TMP/full"/*
}
full "forward: write failure" "$SUBSCOPE" forward --model $TM --input $TP --out "$TMP/full/o.h5"
full "collect: write failure" "$SUBSCOPE" collect --model $TM --input $TP --sites 'blocks.*.mlp.hook_post' --out "$TMP/full/o.h5"
full "ablate: write failure" "$SUBSCOPE" ablate --model $TM --input $TP --mask 'blocks.1.mlp.hook_post[1]' --out "$TMP/full/o.h5"
full "attribute: write failure" "$SUBSCOPE" attribute --model $TM --input $TP --sites 'blocks.*.mlp.hook_post' --out "$TMP/full/o.h5"
full "patch: write failure" "$SUBSCOPE" patch --model $TM --clean tests/data/patch/clean.jsonl \
    --corrupt tests/data/patch/corrupt.jsonl --sites 'blocks.*.hook_resid_pre' --out "$TMP/full/o.h5"
full "trace: write failure" "$SUBSCOPE" trace --model $TM --prompt 'The cat says' --submodels data/demo_submodels.jsonl \
    --stats "$TMP/st.h5" --out "$TMP/full/o.h5"
full "train: write failure (the directory it made goes too)" "$SUBSCOPE" train --config $TM/config.json --tokenizer $TM \
    --data $TP --steps 1 --seq 8 --batch 1 --out "$TMP/full/m"
full "discover: write failure" "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites 'blocks.*.mlp.hook_post' --method cluster \
    --out "$TMP/full/o.h5"

# Results printed on stdout (tokenize's ids, predict's tokens, show) are results too: a write
# there that fails (a full disk; /dev/full) is an error, exit 1, not exit 0 with nothing written.
if [ -w /dev/full ]; then
    expect_fail "tokenize to a full stdout" "tokenize: error: writing standard output: No space left on device" \
        sh -c '"$0" tokenize --model "$1" --text "The cat" >/dev/full' "$SUBSCOPE" $TM
    expect_fail "predict to a full stdout" "predict: error: writing standard output" \
        sh -c '"$0" predict --model "$1" --prompt "The cat" >/dev/full' "$SUBSCOPE" $TM
    expect_fail "show to a full stdout" "show: error: writing standard output" sh -c '"$0" show "$1" >/dev/full' "$SUBSCOPE" "$TMP/st.h5"
    expect_fail "--help to a full stdout" "error: writing standard output" sh -c '"$0" forward --help >/dev/full' "$SUBSCOPE"
fi
# A closed pipe (| head -1) ends show and report quietly, by SIGPIPE as for any filter: no error
# storm on stderr, and report's page is whole. Where SIGPIPE was ignored when this test started
# (a launcher such as Python leaves it so, and nothing here can take that back), the write fails
# instead: one error naming standard output, as coreutils give, and a non-zero exit.
"$SUBSCOPE" ablate --model $TM --input $TP --masks tests/data/ablate/masks.jsonl --out "$TMP/ab.h5" >/dev/null 2>&1
full "report: write failure" "$SUBSCOPE" report "$TMP/ab.h5" --out "$TMP/full/r.html"
for c in "show $TMP/ab.h5" "report $TMP/ab.h5 --out $TMP/pipe.html"; do
    err=$( { "$SUBSCOPE" $c | true; } 2>&1 >/dev/null)
    if [ -n "$(trap -p PIPE)" ]; then
        [ "$(printf '%s' "$err" | grep -vc '^wrote ')" = 1 ] && printf '%s' "$err" | grep -q 'error: writing standard output' &&
            pass "${c%% *} into a closed pipe, SIGPIPE ignored: one error" || fail "${c%% *} into a closed pipe, SIGPIPE ignored" "$err"
    else
        [ "$(printf '%s' "$err" | grep -vc '^wrote ')" = 0 ] && pass "${c%% *} into a closed pipe: quiet" || fail "${c%% *} into a closed pipe" "$err"
    fi
done
grep -q '</html>' "$TMP/pipe.html" && ! ls "$TMP"/pipe.html.tmp.* >/dev/null 2>&1 && pass "report into a closed pipe: the page is whole" ||
    fail "report into a closed pipe: the page is whole"

# An output that names an input (by inode: ./x is x) is refused before anything runs, and the
# input is left as it was.
cp $TP "$TMP/pp.jsonl"
expect_fail "--out naming --input is refused" "is the same file as --input" \
    "$SUBSCOPE" collect --model $TM --input "$TMP/pp.jsonl" --sites blocks.1.mlp.hook_post --out "$TMP/./pp.jsonl"
cmp -s $TP "$TMP/pp.jsonl" && pass "the input is untouched" || fail "the input is untouched"
expect_fail "--out naming --stats is refused (discover)" "is the same file as --stats" \
    "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites 'blocks.*' --method cluster --out "$TMP/../$(basename "$TMP")/st.h5"
# discover's masks file named after --out (no --masks-out) is an output too: one that is an input
# spelt another way, or a link to one, was compared by string only, and the finished masks
# file was renamed over the input.
cp "$TMP/st.h5" "$TMP/dd.masks.jsonl"
expect_fail "the masks file named after --out naming --stats spelt differently is refused (discover)" \
    "the masks file $TMP/dd.masks.jsonl (named after --out; --masks-out names another) is the same file as --stats $TMP/./dd.masks.jsonl" \
    "$SUBSCOPE" discover --stats "$TMP/./dd.masks.jsonl" --sites 'blocks.*' --method cluster --out "$TMP/dd.h5"
cmp -s "$TMP/st.h5" "$TMP/dd.masks.jsonl" && [ ! -e "$TMP/dd.h5" ] && pass "... the input is untouched, nothing written" ||
    fail "the masks file named after --out overwrote --stats"
rm -f "$TMP/dd.masks.jsonl"
cp "$TMP/st.h5" "$TMP/st2.h5"
ln -s "$TMP/st2.h5" "$TMP/dl.masks.jsonl"
expect_fail "the masks file named after --out, a link to --stats, is refused (discover)" \
    "the masks file $TMP/dl.masks.jsonl (named after --out; --masks-out names another) is the same file as --stats $TMP/st2.h5" \
    "$SUBSCOPE" discover --stats "$TMP/st2.h5" --sites 'blocks.*' --method cluster --out "$TMP/dl.h5"
cmp -s "$TMP/st.h5" "$TMP/st2.h5" && [ ! -e "$TMP/dl.h5" ] && pass "... the file it links to is untouched, nothing written" ||
    fail "the masks file named after --out overwrote the --stats it links to"
rm -f "$TMP/dl.masks.jsonl" "$TMP/st2.h5"
expect_fail "--out naming a positional input is refused (report)" "is the same file as the input" \
    "$SUBSCOPE" report "$TMP/st.h5" --out "$TMP/st.h5"
# An --out that exists and is not a file (/dev/null, a FIFO) is refused before anything runs:
# the finished file was renamed over it, which (for root) replaced /dev/null with an HDF5 file.
mkfifo "$TMP/fifo"
expect_fail "--out naming a FIFO is refused" "--out $TMP/fifo is not a file (a device, pipe or socket)" \
    "$SUBSCOPE" forward --model $TM --input $TP --out "$TMP/fifo"
expect_fail "--masks-out naming a FIFO is refused (discover)" "--masks-out $TMP/fifo is not a file" \
    "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites 'blocks.*' --method cluster --out "$TMP/dm.h5" --masks-out "$TMP/fifo"
expect_fail "report --out naming a FIFO is refused" "is not a file" "$SUBSCOPE" report "$TMP/ab.h5" --out "$TMP/fifo"
[ -p "$TMP/fifo" ] && [ ! -e "$TMP/dm.h5" ] && pass "... and the FIFO is still one" || fail "the FIFO is still one" "$(ls -l "$TMP/fifo")"
# An --out in a folder that is not there is refused before the run, not when its results are
# ready to write (ablate and collect ran to the end first).
expect_fail "ablate --out in a missing folder" "--out $TMP/nodir/a.h5: cannot write in $TMP/nodir: No such file or directory" \
    "$SUBSCOPE" ablate --model $TM --input $TP --mask 'blocks.1.mlp.hook_post[1]' --out "$TMP/nodir/a.h5"
expect_fail "ablate --out= (empty)" "--out is empty: give a file name" \
    "$SUBSCOPE" ablate --model $TM --input $TP --mask 'blocks.1.mlp.hook_post[1]' --out=
# Any other empty value is refused naming its option: --device '', --metrics '', --group-by '' and
# forward's --sites '' ran as their default, wrote a file and exited 0; an empty --input, --model
# or --masks failed naming nothing (": cannot open", "/config.json: cannot open"). Free text (a
# prompt, an answer, a title) may be empty.
expect_fail "forward --device '' refused" "--device is empty: give DEV" \
    "$SUBSCOPE" forward --model $TM --input $TP --device '' --out "$TMP/e.h5"
expect_fail "forward --sites= refused" "--sites is empty: give GLOBS" \
    "$SUBSCOPE" forward --model $TM --input $TP --sites= --out "$TMP/e.h5"
expect_fail "ablate --metrics '' refused" "--metrics is empty: give LIST" \
    "$SUBSCOPE" ablate --model $TM --input $TP --mask 'blocks.1.mlp.hook_post[1]' --metrics '' --out "$TMP/e.h5"
expect_fail "collect --group-by '' refused" "--group-by is empty: give FIELD" \
    "$SUBSCOPE" collect --model $TM --input $TP --sites blocks.1.mlp.hook_post --group-by '' --out "$TMP/e.h5"
expect_fail "forward --input '' names --input" "--input is empty: give FILE" \
    "$SUBSCOPE" forward --model $TM --input '' --out "$TMP/e.h5"
expect_fail "forward --model= names --model" "--model is empty: give DIR" \
    "$SUBSCOPE" forward --model= --input $TP --out "$TMP/e.h5"
expect_fail "ablate --masks '' names --masks" "--masks is empty: give FILE" \
    "$SUBSCOPE" ablate --model $TM --input $TP --masks '' --out "$TMP/e.h5"
[ ! -e "$TMP/e.h5" ] && pass "... and none of them wrote its --out" || fail "an empty value's run wrote its --out"
expect_ok "report --title '' (free text) runs" "$SUBSCOPE" report "$TMP/ab.h5" --title '' --out "$TMP/e.html"
expect_ok "tokenize --text '' (free text) runs" "$SUBSCOPE" tokenize --model $TM --text ''
# Past the 64 values an option or the inputs hold: report's 65th input was an "unexpected
# argument", and ablate's 65th --mask did not say where more masks go.
runs=(); for i in $(seq 1 65); do runs+=("$TMP/ab.h5"); done
expect_fail "report: a 65th input is named as one too many" "more than 64 inputs (RUN.h5): '$TMP/ab.h5' is one too many" \
    "$SUBSCOPE" report "${runs[@]}" --out "$TMP/e65.html"
specs=(); for i in $(seq 1 65); do specs+=(--mask "blocks.1.mlp.hook_post[$i]"); done
expect_fail "ablate: a 65th --mask points to --masks FILE" "--mask given more than 64 times (put the masks in a --masks FILE)" \
    "$SUBSCOPE" ablate --model $TM --input $TP "${specs[@]}" --out "$TMP/e65.h5"
expect_fail "ablate --out naming a folder" "--out $TMP/full is a folder; give a file name" \
    "$SUBSCOPE" ablate --model $TM --input $TP --mask 'blocks.1.mlp.hook_post[1]' --out "$TMP/full"
chmod 555 "$TMP/full"
if [ ! -w "$TMP/full" ]; then # not for root, whom no mode stops
    expect_fail "--out in an unwritable current folder" "--out o.h5: cannot write in .: not writable" \
        sh -c 'cd "$1" && exec "$2" discover --stats "$3" --sites "blocks.*" --method cluster --out o.h5' sh \
        "$TMP/full" "$(realpath "$SUBSCOPE")" "$TMP/st.h5"
fi
chmod 755 "$TMP/full"
# A file's name ending in '/' (a missing folder's, or a file's with a slash after it) was found only
# when the file was created, after the whole run (collect: 16 s of 3000 prompts of tiny-gpt2).
expect_fail "collect --out ending in a slash" "--out $TMP/new.h5/ ends in '/', a folder's name; give a file name" \
    "$SUBSCOPE" collect --model $TM --input $TP --sites blocks.1.mlp.hook_post --out "$TMP/new.h5/"
expect_fail "discover --masks-out ending in a slash" "--masks-out $TMP/st.h5/ ends in '/'" \
    "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites 'blocks.*' --method cluster --out "$TMP/dm.h5" --masks-out "$TMP/st.h5/"
# A name the folder takes whose temporary (NAME.tmp.<host>.<pid>) is too long for it was found
# only when the file was created, after the whole run (collect: 21 s of 3000 prompts of tiny-gpt2).
if [ "$(getconf NAME_MAX "$TMP" 2>/dev/null)" = 255 ]; then # the lengths below assume it
    host=$(uname -n | tr -c 'A-Za-z0-9\n-' _ | cut -c1-64)
    long=$(printf "%0$((255 - 13 - ${#host}))d" 0) # its temporary fits with any pid of up to 7 digits
    expect_fail "collect --out whose temporary's name is too long" "--out $TMP/${long}xxxxxxxxxxx: the temporary file it is written as (NAME.tmp.<host>.<pid>) would have a name of" \
        "$SUBSCOPE" collect --model $TM --input $TP --sites blocks.1.mlp.hook_post --out "$TMP/${long}xxxxxxxxxxx"
    expect_fail "... and its checkpoint's (pids of 3 digits or more)" "(NAME.ckpt.tmp.<host>.<pid>) would have a name of" \
        "$SUBSCOPE" collect --model $TM --input $TP --sites blocks.1.mlp.hook_post --out "$TMP/$long" --checkpoint-every 1
    "$SUBSCOPE" collect --model $TM --input $TP --sites blocks.1.mlp.hook_post --out "$TMP/$long" >/dev/null 2>&1 &&
        [ -f "$TMP/$long" ] && pass "... a name whose temporary fits is written" || fail "a long name that fits is written"
    rm -f "$TMP/$long"
    # --out a link: the output's temporary goes beside its target, the checkpoint (OUT.ckpt, named
    # after the link) and its temporary beside the link. Both were measured by the target's name:
    # a long link to a short name passed and failed at the first checkpoint, a short link to a
    # long name was refused though both temporaries fit.
    ln -s lt.h5 "$TMP/$long"
    expect_fail "collect --out a link with a long name: its checkpoint's temporary, beside the link, is too long" \
        "--out $TMP/$long (a symbolic link to $TMP/lt.h5): the temporary file it is written as (NAME.ckpt.tmp.<host>.<pid>) would have a name of" \
        "$SUBSCOPE" collect --model $TM --input $TP --sites blocks.1.mlp.hook_post --out "$TMP/$long" --checkpoint-every 1
    [ ! -e "$TMP/lt.h5" ] && [ -z "$(ls "$TMP" | grep '\.ckpt')" ] && pass "... refused before the run: nothing written" ||
        fail "collect through a long link wrote" "$(ls "$TMP" | grep 'lt.h5\|\.ckpt' | cut -c1-40)"
    rm -f "$TMP/$long"
    ln -s "$long" "$TMP/sl.h5"
    "$SUBSCOPE" collect --model $TM --input $TP --sites blocks.1.mlp.hook_post --batch 2 --out "$TMP/sl.h5" --checkpoint-every 1 \
        >/dev/null 2>"$TMP/err" && [ -L "$TMP/sl.h5" ] && [ -f "$TMP/$long" ] && [ ! -e "$TMP/sl.h5.ckpt" ] &&
        pass "collect --out a short link to a long name, with checkpoints: both temporaries fit, the target is written" ||
        fail "collect through a short link to a long name" "$(head -c 300 "$TMP/err")"
    rm -f "$TMP/$long" "$TMP/sl.h5"
    # discover's masks file named after such an --out (.h5 -> .masks.jsonl, 9 characters more)
    # was not checked: the --out passed and the masks file failed after the whole run.
    dl="$TMP/${long%???}.h5"
    expect_fail "discover: the masks file named after --out, its temporary's name too long" \
        "the masks file ${dl%.h5}.masks.jsonl (named after --out; --masks-out names another): the temporary file it is written as (NAME.tmp.<host>.<pid>) would have a name of" \
        "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites 'blocks.*' --method cluster --out "$dl"
    [ ! -e "$dl" ] && pass "... and nothing is written" || fail "discover wrote $dl"
    "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites 'blocks.*' --method cluster --out "$dl" --masks-out "$TMP/dl.jsonl" \
        >/dev/null 2>&1 && [ -f "$dl" ] && [ -f "$TMP/dl.jsonl" ] && pass "... with --masks-out the same --out is written" ||
        fail "discover with a long --out and --masks-out"
    rm -f "$dl" "$TMP/dl.jsonl"
else echo "  skip: names of up to 255 bytes assumed, $TMP takes $(getconf NAME_MAX "$TMP")"; fi
# A path of thousands of characters: the message (2 KiB at most) was cut at its end, losing
# the reason; it keeps its head and its end now, with "…" for the middle.
lp="$TMP/$(printf '%05000d' 0)"
expect_fail "collect --out of 5000 characters: the reason is kept" "unable to open file: File name too long" \
    "$SUBSCOPE" collect --model $TM --input $TP --sites blocks.1.mlp.hook_post --out "$lp/o.h5"
expect_fail "info --model of 5000 characters: the reason is kept" "config.json: cannot open: File name too long" \
    "$SUBSCOPE" info --model "$lp"
out=$("$SUBSCOPE" info --model "$lp" 2>&1)
case "$out" in "subscope info: error: $TMP/00000"*…*"00000/config.json: cannot open: File name too long")
    pass "... its head and end, the middle as '…'" ;; *) fail "the long path's message" "$(printf '%s' "$out" | cut -c1-80)" ;; esac
expect_fail "collect --out under a file" "--out $TMP/st.h5/c.h5: cannot write in $TMP/st.h5: not a folder" \
    "$SUBSCOPE" collect --model $TM --input $TP --sites blocks.1.mlp.hook_post --out "$TMP/st.h5/c.h5"
expect_fail "discover --masks-out in a missing folder" "--masks-out $TMP/nodir/m.jsonl: cannot write in $TMP/nodir" \
    "$SUBSCOPE" discover --stats "$TMP/st.h5" --sites 'blocks.*' --method cluster --out "$TMP/dm.h5" --masks-out "$TMP/nodir/m.jsonl"
cp -r $TM "$TMP/tm" # a copy: were the check to fail, train would replace the folder's model
expect_fail "train's --out naming its --tokenizer folder is refused" "is the same folder as --tokenizer" \
    "$SUBSCOPE" train --config "$TMP/tm/config.json" --tokenizer "$TMP/tm" --data $TP --steps 1 --out "$TMP/tm/"

# Stopped by SIGTERM (a scheduler's, a user's kill) in the middle of writing: the temporary file
# goes too, and there is no output.
for i in $(seq 1 3000); do echo '{"text": "The cat sat on the mat and the dog ran after the ball."}'; done >"$TMP/long.jsonl"
"$SUBSCOPE" forward --model $TM --input "$TMP/long.jsonl" --sites '*' --batch 1 --out "$TMP/full/k.h5" 2>/dev/null &
pid=$!
for _ in $(seq 1 200); do [ -n "$(ls -A "$TMP/full")" ] && break; sleep 0.05; done
had=$(ls -A "$TMP/full")
kill -TERM $pid 2>/dev/null; wait $pid; rc=$?
if [ -n "$had" ] && [ $rc = 143 ] && [ -z "$(ls -A "$TMP/full")" ]; then pass "SIGTERM while writing: the temporary file is removed, no output"
else fail "SIGTERM while writing" "seen: '$had', exit $rc, left: $(ls -A "$TMP/full")"; fi
rm -f "$TMP/full"/*
# Killed by SIGKILL while writing: OUT.tmp.<host>.<pid> stays; the next run of the same OUT removes it,
# as its writer (of this host) is gone, and says so. Another host's, a live writer's and an older
# subscope's (no host in the name) are left: it cannot tell that their writers are gone.
H=$(hostname | sed 's/[^A-Za-z0-9-]/_/g' | cut -c1-64)
"$SUBSCOPE" forward --model $TM --input "$TMP/long.jsonl" --sites '*' --batch 1 --out "$TMP/full/k.h5" 2>/dev/null &
pid=$!
for _ in $(seq 1 200); do [ -n "$(ls -A "$TMP/full")" ] && break; sleep 0.05; done
kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null
left=$(ls -A "$TMP/full")
sleep 300 & live=$!
touch "$TMP/full/k.h5.tmp.othernode.$pid" "$TMP/full/k.h5.tmp.$H.$live" "$TMP/full/k.h5.tmp.$pid"
if "$SUBSCOPE" forward --model $TM --input "$TP" --out "$TMP/full/k.h5" >/dev/null 2>"$TMP/err"; then
    now=$(ls -A "$TMP/full" | sort | tr '\n' ' ')
    want=$(printf '%s\n' k.h5 "k.h5.tmp.$H.$live" "k.h5.tmp.othernode.$pid" "k.h5.tmp.$pid" | sort | tr '\n' ' ')
    [ "$left" = "k.h5.tmp.$H.$pid" ] && [ "$now" = "$want" ] && grep -q "removed $TMP/full/k.h5.tmp.$H.$pid, left by process $pid" "$TMP/err" &&
        grep -q "left $TMP/full/k.h5.tmp.othernode.$pid, written on host othernode" "$TMP/err" &&
        grep -q "left $TMP/full/k.h5.tmp.$pid, a temporary file of an older subscope" "$TMP/err" &&
        pass "a SIGKILLed run's OUT.tmp.<host>.<pid> is removed by the next run; other hosts', live and older ones stay" ||
        fail "leftover temporaries" "after the kill: $left; after the next run: $now" "$(cat "$TMP/err")"
else fail "forward over leftover temporaries" "$(cat "$TMP/err")"; fi
kill $live 2>/dev/null; wait $live 2>/dev/null
rm -f "$TMP/full"/*
expect_fail "--input naming a folder" "is a folder, not a file" "$SUBSCOPE" forward --model $TM --input "$TMP" --out "$TMP/x.h5"
# A character device is refused, naming it, wherever a file is read (/dev/zero was read until memory
# ran out): --input, a model's config.json and tokenizer.json, --masks, --keywords, an HDF5 input.
expect_fail "--input /dev/zero is refused" "/dev/zero: is a character device, not a file to read" \
    timeout 20 "$SUBSCOPE" forward --model $TM --input /dev/zero --out "$TMP/x.h5"
for f in config.json tokenizer.json; do
    rm -rf "$TMP/devm" && mkdir "$TMP/devm" && ln -s "$PWD/$TM"/* "$TMP/devm/" && ln -sf /dev/zero "$TMP/devm/$f"
    expect_fail "a model's $f that is /dev/zero is refused" "$TMP/devm/$f: is a character device" \
        timeout 20 "$SUBSCOPE" forward --model "$TMP/devm" --input "$TP" --out "$TMP/x.h5"
done
expect_fail "--masks /dev/zero is refused" "/dev/zero: is a character device" \
    timeout 20 "$SUBSCOPE" ablate --model $TM --input "$TP" --masks /dev/zero --out "$TMP/x.h5"
expect_fail "--keywords /dev/zero is refused" "/dev/zero: is a character device" \
    timeout 20 "$SUBSCOPE" ablate --model $TM --input "$TP" --mask 'blocks.0.mlp.hook_post[0]' --metrics keyword \
    --keywords /dev/zero --out "$TMP/x.h5"
expect_fail "an HDF5 input that is /dev/zero is refused" "/dev/zero: is a character device" \
    timeout 20 "$SUBSCOPE" show --file /dev/zero
# A model's files and an HDF5 input are no pipe: refused before opening one (whose open would wait for
# a writer); --masks may be one.
rm -rf "$TMP/fifom" && mkdir "$TMP/fifom" && ln -s "$PWD/$TM"/* "$TMP/fifom/" && rm "$TMP/fifom/config.json" &&
    mkfifo "$TMP/fifom/config.json" "$TMP/fifo.gguf" "$TMP/fifo.h5"
expect_fail "a model's config.json that is a FIFO is refused" "$TMP/fifom/config.json: is a pipe, not a regular file" \
    timeout 20 "$SUBSCOPE" forward --model "$TMP/fifom" --input "$TP" --out "$TMP/x.h5"
expect_fail "a .gguf model that is a FIFO is refused" "$TMP/fifo.gguf: is a pipe" \
    timeout 20 "$SUBSCOPE" forward --model "$TMP/fifo.gguf" --input "$TP" --out "$TMP/x.h5"
expect_fail "an HDF5 input that is a FIFO is refused" "$TMP/fifo.h5: is a pipe" timeout 20 "$SUBSCOPE" show --file "$TMP/fifo.h5"
expect_ok "--masks from a pipe" "$SUBSCOPE" ablate --model $TM --input "$TP" --out "$TMP/x.h5" \
    --masks <(echo '{"name": "m", "site": "blocks.1.mlp.hook_post", "units": [1, 2]}')
# A pipe (bash's <(...), a FIFO) is read as --input; collect records the SHA-256 of the bytes it
# read (hashing the path again found a spent pipe)
if "$SUBSCOPE" collect --model $TM --input <(head -3 "$TP") --sites blocks.0.mlp.hook_post --stats mean \
    --out "$TMP/pipe.h5" >/dev/null 2>"$TMP/err"; then
    got=$(h5dump -a /data_sha256 "$TMP/pipe.h5" | awk -F'"' '/\(0\)/{print $2}') want=$(head -3 "$TP" | sha256sum | cut -d' ' -f1)
    got_n=$(h5dump -a /n_prompts "$TMP/pipe.h5" | awk '/\(0\)/{print $2}')
    [ "$got" = "$want" ] && [ "$got_n" = 3 ] && pass "--input from a pipe: read, and its bytes' SHA-256 recorded" ||
        fail "--input from a pipe" "sha $got (want $want), n_prompts $got_n"
else fail "collect --input from a pipe runs" "$(cat "$TMP/err")"; fi

# Top level.
expect_ok "--help" "$SUBSCOPE" --help
expect_ok "--version" "$SUBSCOPE" --version
# The commit a build records (--version, every file's git_commit) is the tree's HEAD once `make`
# has run: version.o used to stay from an older build when only the commit had changed.
if head=$(git rev-parse --short=12 HEAD 2>/dev/null); then
    v=$("$SUBSCOPE" --version 2>&1)
    case "$v" in *"($head)"* | *"($head-dirty)"*) pass "--version records HEAD's commit ($head)" ;;
        *) fail "--version records HEAD's commit" "got '$v', HEAD is $head (built before the last commit without make?)" ;; esac
fi
for c in info tokenize predict forward show; do
    expect_ok "$c --help" "$SUBSCOPE" $c --help
done
# predict --help on the key/value cache says what README says: on a GPU a 16-bit model's cache is
# kept in its type (since ec8e0a8); it said the cached attention was fp32 on either device.
h=$("$SUBSCOPE" predict --help | tr '\n' ' ')
case "$h" in *"with 16-bit weights (--dtype bfloat16 or float16, or auto on such files), the cache holds the keys and values in their type"*)
    pass "predict --help: a GPU's 16-bit key/value cache" ;;
*) fail "predict --help describes the GPU's 16-bit key/value cache" ;; esac
# A bad SUBSCOPE_THREADS or SUBSCOPE_DIST_TIMEOUT is refused naming it: the library fell back to
# its default without a word (SUBSCOPE_THREADS=abc or 0 ran on every core, =1x on one thread;
# ' 4' and '+4' were 4).
for v in abc 0 1x 2000 ' 4' '+4' '4 '; do
    expect_fail "SUBSCOPE_THREADS='$v' refused" "SUBSCOPE_THREADS='$v': must be a whole number of threads in 1..1024" \
        env SUBSCOPE_THREADS="$v" "$SUBSCOPE" predict --model models/tiny-gpt2 --prompt hi --top 1
done
expect_fail "SUBSCOPE_DIST_TIMEOUT=-3 refused" "SUBSCOPE_DIST_TIMEOUT='-3': must be a number of seconds in 0.001..1e+09" \
    env SUBSCOPE_DIST_TIMEOUT=-3 "$SUBSCOPE" info --dist
# The other settings the library reads where it cannot report a bad value, checked the same way
# before a command runs: SUBSCOPE_TIMING=yes was on, SUBSCOPE_PREDICT_TRACE=true on,
# SUBSCOPE_SEND_THREAD=off on, SUBSCOPE_NCCL_CHUNK=1x the default, SUBSCOPE_DIST=gloo refused only
# where a communicator opened.
for s in "SUBSCOPE_TIMING=yes|1 or 0" "SUBSCOPE_PREDICT_TRACE=true|1 or 0" "SUBSCOPE_PREDICT_RECOMPUTE=2|1 or 0" \
    "SUBSCOPE_SEND_THREAD=off|1 or 0" "SUBSCOPE_NCCL_CHUNK=1x|a whole number of bytes in 16..1073741824" \
    "SUBSCOPE_DIST=gloo|auto (single process or MPI, from the launcher) or nccl"; do
    kv=${s%%|*} var=${kv%%=*} val=${kv#*=}
    expect_fail "$var=$val refused" "subscope predict: error: $var='$val': must be ${s#*|}" \
        env "$kv" "$SUBSCOPE" predict --model models/tiny-gpt2 --prompt hi --top 1
done
expect_ok "SUBSCOPE_TIMING=1 and SUBSCOPE_PREDICT_TRACE=0 run" \
    env SUBSCOPE_TIMING=1 SUBSCOPE_PREDICT_TRACE=0 "$SUBSCOPE" predict --model models/tiny-gpt2 --prompt hi --top 1
expect_ok "SUBSCOPE_THREADS=2 runs" env SUBSCOPE_THREADS=2 "$SUBSCOPE" predict --model models/tiny-gpt2 --prompt hi --top 1
expect_ok "SUBSCOPE_THREADS= (empty: unset) runs" env SUBSCOPE_THREADS= "$SUBSCOPE" predict --model models/tiny-gpt2 --prompt hi --top 1
expect_fail "unknown command" "unknown command 'frobnicate'" "$SUBSCOPE" frobnicate
expect_fail "no command" "usage" "$SUBSCOPE"
finish
