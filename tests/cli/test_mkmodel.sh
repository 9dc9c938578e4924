#!/usr/bin/env bash
# bin/mkmodel (random GPT-2 and Llama directories for the GPU checks and
# benchmarks): the models load, `info` counts the parameters mkmodel reports
# and the GPT-2 or Llama formula gives, forward runs on its prompts, the same seed gives the
# same bytes, and bad arguments are refused.
source "$(dirname "$0")/lib.sh"
MK=${TOOLBIN}mkmodel

# GPT-2 parameter count: wte, wpe, ln_f, and per layer ln_1, c_attn, c_proj, ln_2, c_fc, mlp.c_proj
params() { # params L D V P M UNTIED
    local L=$1 D=$2 V=$3 P=$4 M=$5 U=$6
    echo $(( V*D + P*D + 2*D + L*(2*D + D*3*D + 3*D + D*D + D + 2*D + D*M + M + M*D + D) + U*V*D ))
}
# Llama: embed_tokens, norm, per layer two norms, q, k, v, o, gate, up, down; lm_head when untied
lparams() { # lparams L D V M H KV DH UNTIED
    local L=$1 D=$2 V=$3 M=$4 H=$5 KV=$6 DH=$7 U=$8
    echo $(( V*D + D + L*(2*D + D*H*DH + 2*D*KV*DH + H*DH*D + 3*D*M) + U*V*D ))
}
check_model() { # check_model NAME EXPECTED-PARAMS DTYPE LENGTHS MKMODEL-ARGS...
    local name=$1 want=$2 dt=$3 lens=$4; shift 4
    local dir=$TMP/$name got info
    if ! got=$("$MK" --out "$dir" --prompts "$TMP/$name.jsonl" --lengths "$lens" "$@" 2>&1); then
        fail "mkmodel $name" "$got"; return
    fi
    info=$("$SUBSCOPE" info --model "$dir" 2>&1)
    if [ "$got" = "$want" ] && printf '%s\n' "$info" | grep -qE "^parameters +$want " &&
        printf '%s\n' "$info" | grep -qE "^weights +$dt in the files"; then
        pass "mkmodel $name: $want parameters (mkmodel = info = formula), $dt weights"
    else
        fail "mkmodel $name" "mkmodel says $got, formula $want, info: $(printf '%s\n' "$info" | grep -E '^(parameters|weights)' | tr '\n' ' ')"
    fi
    if "$SUBSCOPE" forward --model "$dir" --input "$TMP/$name.jsonl" --out "$TMP/$name.h5" --sites '*' \
        --device cpu >/dev/null 2>"$TMP/err"; then
        # the first DATA block of the dump is the dataset's (attributes follow)
        lengths=$(h5dump -d /lengths -y -w 0 "$TMP/$name.h5" 2>/dev/null | awk '/DATA \{/ { on = 1; next } on && /\}/ { exit } on' |
            grep -oE '[0-9]+' | tr '\n' ',' | sed 's/,$//')
        if [ "$lengths" = "$lens" ]; then pass "forward on $name: prompts of $lens tokens"
        else fail "forward on $name lengths" "got /lengths $lengths, want $lens"; fi
    else
        fail "forward on $name" "$(cat "$TMP/err")"
    fi
}

check_model tied-f32 "$(params 2 64 1000 128 256 0)" F32 1,5,128
check_model untied-bf16 "$(params 3 48 777 40 100 1)" BF16 40,1,2 \
    --layers 3 --d 48 --heads 6 --vocab 777 --positions 40 --inner 100 --untied --dtype bf16 --seed 5 --act gelu
check_model noprefix-f16 "$(params 1 20 50 16 80 0)" F16 3 --layers 1 --d 20 --heads 4 --vocab 50 --positions 16 \
    --dtype f16 --no-prefix
# Llama: grouped-query heads of 64 (wider than d / heads), untied, bf16; and the defaults (tied)
check_model llama-gqa-bf16 "$(lparams 2 96 300 160 4 2 64 1)" BF16 70,3 --family llama --layers 2 --d 96 --heads 4 \
    --kv-heads 2 --head-dim 64 --vocab 300 --positions 80 --inner 160 --untied --dtype bf16 --rope-theta 500000
check_model llama-tied "$(lparams 2 64 1000 256 4 4 16 0)" F32 4,9 --family llama
if grep -q '"rope_theta": 500000,' "$TMP/llama-gqa-bf16/config.json" &&
    "$SUBSCOPE" info --model "$TMP/llama-gqa-bf16" 2>&1 | grep -q "2 key/value heads (grouped-query)"; then
    pass "llama config: rope_theta and grouped-query heads as given"
else fail "llama config" "$(cat "$TMP/llama-gqa-bf16/config.json")"; fi

# deterministic: same seed, same bytes; another seed, other weights
"$MK" --out "$TMP/a" --seed 9 >/dev/null && "$MK" --out "$TMP/b" --seed 9 >/dev/null && "$MK" --out "$TMP/c" --seed 10 >/dev/null
if cmp -s "$TMP/a/model.safetensors" "$TMP/b/model.safetensors" && ! cmp -s "$TMP/a/model.safetensors" "$TMP/c/model.safetensors"; then
    pass "same seed gives the same weights, another seed other weights"
else fail "mkmodel determinism"; fi
# token ids stay inside the vocabulary
"$MK" --vocab 7 --prompts "$TMP/p7.jsonl" --lengths 200,3 >/dev/null
if [ "$(wc -l <"$TMP/p7.jsonl")" = 2 ] && ! grep -oE '[0-9]+' "$TMP/p7.jsonl" | awk '$1 > 6 { bad = 1 } END { exit !bad }'; then
    pass "prompt token ids are in [0, vocab)"
else fail "prompt token ids" "$(head -c 200 "$TMP/p7.jsonl")"; fi

# bad arguments: exit 2 and a message, no model written
expect_usage() { # expect_usage NAME SUBSTRING ARGS...
    local n=$1 sub=$2; shift 2; local out rc
    out=$("$MK" "$@" 2>&1 >/dev/null); rc=$?
    if [ $rc -eq 2 ] && printf '%s' "$out" | grep -qF -- "$sub"; then pass "$n"
    else fail "$n" "exit $rc (want 2): $out"; fi
}
expect_usage "d not divisible by heads" "multiple of heads" --out "$TMP/bad" --d 10 --heads 3
expect_usage "nothing to do" "nothing to do"
expect_usage "unknown option" "unknown option --bogus" --bogus 3 --out "$TMP/bad1"
expect_usage "unknown option last, not 'needs a value'" "unknown option --bogus" --bogus
expect_usage "--lengths without --prompts" "go together" --out "$TMP/bad2" --lengths 3
expect_usage "bad dtype" "--dtype must be" --out "$TMP/bad3" --dtype f64
expect_usage "bad size" "positive integer" --out "$TMP/bad4" --layers 0
# whole numbers are digits only: strtoll/strtoull took a leading space or '+' (and --seed -1)
expect_usage "--layers +2 refused" 'needs a positive integer, got "+2"' --out "$TMP/bad4" --layers +2
expect_usage "--vocab ' 50' refused" 'needs a positive integer, got " 50"' --out "$TMP/bad4" --vocab ' 50'
expect_usage "--seed -1 refused" "--seed needs a non-negative integer" --out "$TMP/bad4" --seed -1
expect_usage "--lengths '3, 4' refused" 'expected positive integers separated by commas, got "3, 4"' \
    --prompts "$TMP/bad4.jsonl" --lengths '3, 4'
expect_usage "bad family" "--family must be" --out "$TMP/bad5" --family t5
expect_usage "kv-heads without llama" "need --family llama" --out "$TMP/bad6" --kv-heads 2
expect_usage "kv-heads not dividing heads" "kv-heads must divide heads" --out "$TMP/bad7" --family llama --heads 4 --kv-heads 3
expect_usage "odd head-dim" "head-dim even" --out "$TMP/bad8" --family llama --head-dim 7
# A bad --lengths is a usage error found before anything is written: with --out the model was
# written first, then the run failed (exit 1) beside a complete model directory.
out=$("$MK" --vocab 5 --out "$TMP/badl" --prompts "$TMP/bad.jsonl" --lengths 3,x 2>&1); rc=$?
if [ $rc -eq 2 ] && printf '%s' "$out" | grep -q "positive integers" && [ ! -e "$TMP/bad.jsonl" ] && [ ! -e "$TMP/badl" ]; then
    pass "bad --lengths refused before anything is written (no model, no prompts)"
else fail "bad --lengths" "exit $rc: $out; $(ls "$TMP" | grep bad)"; fi
[ ! -e "$TMP/bad" ] && pass "a refused model writes nothing" || fail "a refused model writes nothing"

# A write that fails (ulimit -f, as a full disk): exit 1 and a message naming the file, the files
# of an earlier run left as they were, no new or temporary file; before, SIGXFSZ killed mkmodel
# (exit 153) and left a cut-short model.safetensors under its name, beside a new config.json.
"$MK" --out "$TMP/keep" --prompts "$TMP/keep.jsonl" --lengths 5 >/dev/null && cp -r "$TMP/keep" "$TMP/keep0" && cp "$TMP/keep.jsonl" "$TMP/keep0.jsonl"
for args in "--out $TMP/keep --d 128 --seed 2" "--out $TMP/new --d 128" "--prompts $TMP/keep.jsonl --lengths 5000 --seed 2"; do
    out=$(ulimit -f 8; "$MK" $args 2>&1 >/dev/null); rc=$?
    if [ $rc = 1 ] && printf '%s' "$out" | grep -qE "error writing $TMP/(keep|new)/model.safetensors|error writing $TMP/keep.jsonl" &&
        diff -r "$TMP/keep" "$TMP/keep0" >/dev/null && cmp -s "$TMP/keep.jsonl" "$TMP/keep0.jsonl" && [ ! -e "$TMP/new" ] &&
        ! ls "$TMP"/*.tmp.* "$TMP"/keep/*.tmp.* >/dev/null 2>&1; then pass "write failure ($args): error, earlier files kept"
    else fail "write failure ($args)" "exit $rc: $out" "$(ls -A "$TMP/keep" "$TMP/new" 2>&1 | tr '\n' ' ')"; fi
done
# A config.json that cannot be written (here a folder by that name) after the weights were: exit 1
# naming it, the earlier weights kept and no temporary left; before, the new model.safetensors was
# already in place, beside the old config.json.
"$MK" --out "$TMP/pair" >/dev/null && rm "$TMP/pair/config.json" && mkdir "$TMP/pair/config.json" &&
    cp "$TMP/pair/model.safetensors" "$TMP/pair0.safetensors"
out=$("$MK" --out "$TMP/pair" --seed 2 2>&1 >/dev/null); rc=$?
if [ $rc = 1 ] && printf '%s' "$out" | grep -q "pair/config.json: not a regular file" &&
    cmp -s "$TMP/pair/model.safetensors" "$TMP/pair0.safetensors" && ! ls "$TMP"/pair/*.tmp.* >/dev/null 2>&1; then
    pass "config.json not writable: error, the earlier weights kept"
else fail "config.json not writable" "exit $rc: $out" "$(ls -A "$TMP/pair" 2>&1 | tr '\n' ' ')"; fi
# Stopped by SIGTERM between its two renames (tests/shim/rename_signal.c sends it to the process right
# after the first, model.safetensors's) over an earlier run's directory: it takes effect once both
# files are in place, so the directory holds the new model whole (an uninterrupted run's files) and
# no temporary; before, the signal stopped it there, the new weights beside the earlier config.json.
"$MK" --out "$TMP/sigref" --seed 3 >/dev/null && "$MK" --out "$TMP/sig" >/dev/null
(SS_SHIM_RENAME_SIGNAL=TERM LD_PRELOAD="${TOOLBIN}rename_signal.so" ASAN_OPTIONS="${ASAN_OPTIONS:-}:verify_asan_link_order=0" \
    "$MK" --out "$TMP/sig" --seed 3 >/dev/null 2>"$TMP/logsig") 2>/dev/null # (bash's "Terminated")
rc=$?
if ! grep -q "^rename_signal: SIGTERM after renaming .*/sig/model.safetensors" "$TMP/logsig"; then
    fail "SIGTERM between mkmodel's renames" "the shim sent no signal: $(tail -2 "$TMP/logsig")"
elif [ $rc = 143 ] && cmp -s "$TMP/sig/model.safetensors" "$TMP/sigref/model.safetensors" &&
    cmp -s "$TMP/sig/config.json" "$TMP/sigref/config.json" && [ "$(ls -A "$TMP/sig" | wc -l)" = 2 ]; then
    pass "SIGTERM between mkmodel's renames: exit 143 with the new files both in place"
else fail "SIGTERM between mkmodel's renames" "exit $rc (want 143): $(ls -A "$TMP/sig" | tr '\n' ' ')" \
    "config.json: $(grep seed "$TMP/sig/config.json")"; fi
# The config.json rename failing (tests/shim/rename_signal.c: another file system; and where link
# fails too, a file system without hard links) after model.safetensors's, over an earlier run's
# pair: exit 1 naming config.json, and both files the earlier run's again, nothing left beside
# them. Before, the new model.safetensors was removed and the earlier weights were gone.
for lf in "" EPERM; do
    rm -rf "$TMP/rf" && "$MK" --out "$TMP/rf" >/dev/null && cp -r "$TMP/rf" "$TMP/rf0"
    ([ -n "$lf" ] && export SS_SHIM_LINK_FAIL=$lf
    SS_SHIM_RENAME_FAIL=EXDEV SS_SHIM_RENAME_MATCH=/rf/config.json LD_PRELOAD="${TOOLBIN}rename_signal.so" \
        ASAN_OPTIONS="${ASAN_OPTIONS:-}:verify_asan_link_order=0" "$MK" --out "$TMP/rf" --seed 2 >/dev/null 2>"$TMP/logrf")
    rc=$? what="mkmodel: the config.json rename failing${lf:+ (no hard links)}"
    if ! grep -q "^rename_signal: EXDEV for the rename onto .*/rf/config.json$" "$TMP/logrf"; then
        fail "$what" "the shim failed no rename: $(tail -2 "$TMP/logrf")"
    elif [ $rc = 1 ] && grep -q "rf/config.json: cannot rename .* into place: " "$TMP/logrf" &&
        cmp -s "$TMP/rf/model.safetensors" "$TMP/rf0/model.safetensors" && cmp -s "$TMP/rf/config.json" "$TMP/rf0/config.json" &&
        [ "$(ls -A "$TMP/rf" | tr '\n' ' ')" = "config.json model.safetensors " ]; then
        pass "$what: exit 1 naming it, the earlier pair as it was"
    else fail "$what" "exit $rc (want 1): $(grep -v '^rename_signal' "$TMP/logrf")" "$(ls -A "$TMP/rf" | tr '\n' ' ')"; fi
    rm -rf "$TMP/rf0"
done
mkfifo "$TMP/fifo"
out=$("$MK" --prompts "$TMP/fifo" --lengths 3 2>&1); rc=$?
[ $rc = 1 ] && [ -p "$TMP/fifo" ] && printf '%s' "$out" | grep -q "fifo: not a regular file" && pass "--prompts naming a FIFO is refused, not replaced" ||
    fail "--prompts naming a FIFO" "exit $rc: $out"
# Stopped by SIGTERM while writing the weights: the temporary file and the new directory go.
set -m
"$MK" --out "$TMP/stopped" --d 512 --layers 4 >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 500); do compgen -G "$TMP/stopped/model.safetensors.tmp.*" >/dev/null && break; sleep 0.01; done
kill -TERM $pid 2>/dev/null; wait $pid; rc=$?
set +m
[ $rc = 143 ] && [ ! -e "$TMP/stopped" ] && pass "SIGTERM while writing: nothing left" || fail "SIGTERM while writing" "exit $rc: $(ls -A "$TMP/stopped" 2>&1)"
finish
