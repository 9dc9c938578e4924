#!/usr/bin/env bash
# subscope train from the command line: a few steps on a tiny config, progress
# on stderr, a directory that `forward` and `info` load, identical reruns for
# one seed, and the bad-input paths (no half-written output directory).
source "$(dirname "$0")/lib.sh"
TOK=models/tiny-gpt2

cat >"$TMP/small.json" <<'J'
{"n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 32, "vocab_size": 1024}
J
for i in $(seq 1 120); do
    echo "The cat says meow. The dog says woof. Today is Monday, tomorrow is Tuesday. Line $i."
done >"$TMP/corpus.txt"
run() { "$SUBSCOPE" train --config "$TMP/small.json" --data "$TMP/corpus.txt" --tokenizer $TOK \
    --steps 12 --batch 4 --seq 32 --lr 3e-3 --warmup 2 --log-every 4 "$@"; }

if run --out "$TMP/m1" 2>"$TMP/log1"; then pass "train 12 steps"; else fail "train 12 steps" "$(tail -3 "$TMP/log1")"; fi
if grep -q "^step      4/12  loss [0-9.]*  lr [0-9.e+-]*  grad norm [0-9.]*  [0-9]* tok/s" "$TMP/log1" &&
    grep -q "^held-out loss" "$TMP/log1"; then pass "progress lines and held-out loss on stderr"
else fail "progress lines" "$(cat "$TMP/log1")"; fi
for f in config.json model.safetensors tokenizer.json subscope_train.json; do
    [ -s "$TMP/m1/$f" ] || fail "output holds $f"
done
if grep -q '"model_type": "gpt2"' "$TMP/m1/config.json" && grep -q '"architectures": \["GPT2LMHeadModel"\]' "$TMP/m1/config.json" &&
    grep -q '"tie_word_embeddings": true' "$TMP/m1/config.json"; then pass "config.json names GPT2LMHeadModel, tied"
else fail "config.json" "$(cat "$TMP/m1/config.json")"; fi
cmp -s $TOK/tokenizer.json "$TMP/m1/tokenizer.json" && pass "tokenizer.json copied" || fail "tokenizer.json copied"
printf '{"text": "The cat says"}\n{"text": "Today is Monday, tomorrow is"}\n' >"$TMP/p.jsonl"
expect_ok "forward loads the trained directory" "$SUBSCOPE" forward --model "$TMP/m1" --input "$TMP/p.jsonl" --out "$TMP/f.h5"
expect_ok "info loads it" "$SUBSCOPE" info --model "$TMP/m1"
run --out "$TMP/m2" 2>/dev/null
cmp -s "$TMP/m1/model.safetensors" "$TMP/m2/model.safetensors" && pass "same seed: identical model.safetensors" ||
    fail "same seed: identical model.safetensors"
run --out "$TMP/m3" --seed 99 2>/dev/null
cmp -s "$TMP/m1/model.safetensors" "$TMP/m3/model.safetensors" && fail "another seed: other weights" ||
    pass "another seed: other weights"

expect_fail "--steps 0" "--steps must be an integer in 1.." run --out "$TMP/bad" --steps 0
expect_fail "missing --config" "--config is required" "$SUBSCOPE" train --data "$TMP/corpus.txt" --out "$TMP/bad"
echo '{"n_layer": 2, "n_embd": 32, "n_positions": 32, "vocab_size": 1024}' >"$TMP/nohead.json"
expect_fail "config without n_head" 'missing required key "n_head"' \
    "$SUBSCOPE" train --config "$TMP/nohead.json" --data "$TMP/corpus.txt" --tokenizer $TOK --out "$TMP/bad"
echo '{"n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 32, "vocab_size": 100}' >"$TMP/v100.json"
expect_fail "vocab_size below the tokenizer's" "vocab_size 100 is smaller than the tokenizer's 1024 ids" \
    "$SUBSCOPE" train --config "$TMP/v100.json" --data "$TMP/corpus.txt" --tokenizer $TOK --out "$TMP/bad"
echo '{"model_type": "llama", "num_hidden_layers": 1, "num_attention_heads": 2, "hidden_size": 16, "intermediate_size": 32, "max_position_embeddings": 16, "vocab_size": 1024}' >"$TMP/llama.json"
expect_fail "a Llama config is refused (train makes GPT-2s)" 'train trains GPT-2 models only' \
    "$SUBSCOPE" train --config "$TMP/llama.json" --data "$TMP/corpus.txt" --tokenizer $TOK --out "$TMP/bad"
: >"$TMP/empty.txt"
expect_fail "empty data file" "no prompts in the file" \
    "$SUBSCOPE" train --config "$TMP/small.json" --data "$TMP/empty.txt" --tokenizer $TOK --out "$TMP/bad"
expect_fail "--lr 0" "--lr must be a positive number, got '0'" run --out "$TMP/bad" --lr 0
# A negative --lr's message gave the range as non-negative, which 0 is not.
expect_fail "--lr -1 says positive" "--lr must be a positive number, got '-1'" run --out "$TMP/bad" --lr -1
expect_fail "--clip -1 says non-negative (0 turns clipping off)" "--clip must be a non-negative number, got '-1'" \
    run --out "$TMP/bad" --clip -1
printf '{"tokens": [1, 2, 3]}\n{"tokens": [5, 1024]}\n' >"$TMP/oov.jsonl"
err=$("$SUBSCOPE" train --config "$TMP/small.json" --data "$TMP/oov.jsonl" --steps 1 --seq 2 --out "$TMP/bad" 2>&1)
[ "$err" = "subscope train: error: $TMP/oov.jsonl:2: token id 1024 is outside the vocabulary (size 1024)" ] &&
    pass "an id past vocab_size in token-id data: that error alone (no 'without --tokenizer')" || fail "token id past vocab_size" "$err"
[ -e "$TMP/bad" ] && fail "failed runs left $TMP/bad" || pass "failed runs created no output directory"
# An input that is one of the files --out DIR would receive is refused, and left as it was.
mkdir -p "$TMP/own" && cp "$TMP/m1/config.json" "$TMP/own/config.json"
expect_fail "--config DIR/config.json with --out DIR" "is the config.json that --out" \
    "$SUBSCOPE" train --config "$TMP/own/config.json" --data "$TMP/corpus.txt" --tokenizer $TOK --steps 1 --out "$TMP/own/."
cmp -s "$TMP/m1/config.json" "$TMP/own/config.json" && [ ! -e "$TMP/own/model.safetensors" ] &&
    pass "the refused run left the folder alone" || fail "refused train left the folder alone"
# Training again into a directory: files of an earlier run that this one does not write (a
# trained tokenizer's vocab.json + merges.txt beside a copied tokenizer.json) are removed, so
# the directory describes one model; a sharded model's index, which loaders read before
# model.safetensors, is refused up front.
mkdir -p "$TMP/again" && cp "$TMP/m1/config.json" "$TMP/again/" && echo '{"stale": 1}' >"$TMP/again/vocab.json" &&
    echo '#stale' >"$TMP/again/merges.txt" && echo '{}' >"$TMP/again/tokenizer_config.json" && echo keep >"$TMP/again/notes.txt"
if run --out "$TMP/again" --steps 2 2>"$TMP/log2"; then
    [ ! -e "$TMP/again/vocab.json" ] && [ ! -e "$TMP/again/merges.txt" ] && [ ! -e "$TMP/again/tokenizer_config.json" ] &&
        [ -e "$TMP/again/notes.txt" ] && grep -q "removed $TMP/again/vocab.json, left by an earlier run" "$TMP/log2" &&
        pass "a rerun into a directory removes the earlier run's tokenizer files it does not write" ||
        fail "rerun into a directory" "$(ls "$TMP/again")" "$(grep removed "$TMP/log2")"
else fail "rerun into a directory" "$(tail -3 "$TMP/log2")"; fi
# A run killed while writing (SIGKILL) leaves its staged files, DIR/.NAME.tmp.<host>.<pid> (and the
# weights writer's own temporary of one): the next run into DIR removes those of a writer that is gone.
H=$(hostname | sed 's/[^A-Za-z0-9-]/_/g' | cut -c1-64)
true & dead=$!; wait $dead
touch "$TMP/again/.model.safetensors.tmp.$H.$dead" "$TMP/again/.model.safetensors.tmp.$H.$dead.tmp.$H.$dead" \
    "$TMP/again/.config.json.tmp.$H.$dead"
if run --out "$TMP/again" --steps 1 2>"$TMP/log3"; then
    left=$(ls -A "$TMP/again" | grep tmp)
    [ -z "$left" ] && [ "$(grep -c "^subscope: removed $TMP/again/\..*, left by process $dead" "$TMP/log3")" = 3 ] &&
        pass "a rerun removes a killed run's staged files" || fail "a killed run's staged files" "left: $left" "$(cat "$TMP/log3")"
else fail "rerun over a killed run's staged files" "$(tail -3 "$TMP/log3")"; fi
mkdir -p "$TMP/sharded" && echo '{"weight_map": {}}' >"$TMP/sharded/model.safetensors.index.json"
expect_fail "--out holding model.safetensors.index.json" "holds model.safetensors.index.json, which loaders read before" \
    run --out "$TMP/sharded" --steps 1
[ ! -e "$TMP/sharded/model.safetensors" ] && pass "the refused run wrote nothing" || fail "the refused sharded run wrote nothing"
# Stopped by SIGTERM while its files are being written: the files it staged in the directory
# go too (they were left, a whole model's worth, beside the user's files), and so does the
# directory it created. A 32 MiB tokenizer_config.json (copied, not read) keeps the write
# going long enough to be caught.
mkdir -p "$TMP/bigtok" && cp $TOK/tokenizer.json "$TMP/bigtok/" &&
    { printf '{"pad": "'; head -c $((32 << 20)) /dev/zero | tr '\0' x; printf '"}\n'; } >"$TMP/bigtok/tokenizer_config.json"
set -m # background jobs keep SIGINT and SIGTERM's default actions
# ... unless the signal was ignored when this shell started (a test run started in the background
# by a non-interactive shell): then neither set -m nor the run can take it back, and subscope
# leaves an ignored signal ignored, as it should; that case is skipped, saying so.
sigs=TERM
if [ -n "$(trap -p INT)" ]; then echo "  skip: SIGINT is ignored in this test's environment (started in the background)"
else sigs="TERM INT"; fi
for sig in $sigs; do
    "$SUBSCOPE" train --config "$TMP/small.json" --data "$TMP/corpus.txt" --tokenizer "$TMP/bigtok" --steps 2 --batch 4 \
        --seq 32 --out "$TMP/stopped" 2>/dev/null &
    pid=$!
    for _ in $(seq 1 1000); do compgen -G "$TMP/stopped/.tokenizer_config.json.tmp.*" >/dev/null && break; sleep 0.01; done
    kill -$sig $pid 2>/dev/null; wait $pid; rc=$?
    if [ $rc -gt 128 ] && [ ! -e "$TMP/stopped" ]; then pass "SIG$sig while writing: the staged files and the new directory are removed"
    else fail "SIG$sig while writing" "exit $rc, left: $(ls -A "$TMP/stopped" 2>&1)"; fi
    rm -rf "$TMP/stopped"
done
set +m
rm -rf "$TMP/bigtok"
# Stopped by a signal between two of its renames (tests/shim/rename_signal.c sends it to the
# process right after the first, model.safetensors's) in a directory an earlier run wrote: it
# takes effect once every file is in place, so the directory holds the new model whole (the files
# of an uninterrupted run with the same options), never new weights beside the earlier run's
# subscope_train.json or config.json, and no staged file. With SUBSCOPE_THREADS=4 the pool's
# workers, which do not block the signal, take it and pass it on to the thread renaming. SIGPIPE
# sent to the process (kill -PIPE) is held too: OpenBLAS's threads took it and died by it at once.
sigs=TERM
if [ -n "$(trap -p INT)" ]; then echo "  skip: SIGINT is ignored in this test's environment (started in the background)"
else sigs="$sigs INT"; fi
if [ -n "$(trap -p PIPE)" ]; then echo "  skip: SIGPIPE is ignored in this test's environment"
else sigs="$sigs PIPE"; fi
for th in 1 4; do
    SUBSCOPE_THREADS=$th run --out "$TMP/ref$th" --seed 99 2>/dev/null
    for sig in $sigs; do
        rm -rf "$TMP/again" && cp -r "$TMP/m1" "$TMP/again"
        (SUBSCOPE_THREADS=$th SS_SHIM_RENAME_SIGNAL=$sig SS_SHIM_RENAME_MATCH=again/model.safetensors \
            LD_PRELOAD="${TOOLBIN}rename_signal.so" ASAN_OPTIONS="${ASAN_OPTIONS:-}:verify_asan_link_order=0" \
            run --out "$TMP/again" --seed 99 2>"$TMP/logsig") 2>/dev/null # (bash's "Terminated")
        rc=$? want=$((128 + $(kill -l $sig)))
        mixed=
        for f in $(ls -A "$TMP/ref$th" "$TMP/again" | grep -v ':$' | sort -u); do
            [ "$f" = subscope_train.json ] && continue # the command line and the seconds differ
            cmp -s "$TMP/ref$th/$f" "$TMP/again/$f" || mixed="$mixed $f"
        done
        grep -q '"seed": 99,' "$TMP/again/subscope_train.json" || mixed="$mixed subscope_train.json"
        if ! grep -q "^rename_signal: SIG$sig after renaming .*/again/model.safetensors" "$TMP/logsig"; then
            fail "SIG$sig between train's renames ($th threads)" "the shim sent no signal: $(tail -2 "$TMP/logsig")"
        elif [ $rc = $want ] && [ -z "$mixed" ]; then
            pass "SIG$sig between train's renames ($th threads): exit $rc with the new files all in place"
        else fail "SIG$sig between train's renames ($th threads)" "exit $rc (want $want), not the new run's:$mixed" \
            "in the directory: $(ls -A "$TMP/again" | tr '\n' ' ')"; fi
    done
done
rm -rf "$TMP/again" "$TMP/ref1" "$TMP/ref4"
# A rename that fails part-way (tests/shim/rename_signal.c fails the chosen one: another file
# system, a file that cannot be replaced, a full directory), in a directory an earlier run wrote:
# exit 1 naming the file, and every file the earlier run's again, byte for byte, with nothing
# left beside them (the new files and the earlier ones' kept copies gone). Before, the new files
# renamed before it were removed, and the earlier run's files they had replaced were lost. Where
# the file system has no hard links (link fails: EPERM), the earlier files are kept by renaming
# them aside. model.safetensors as a symbolic link to a file in another folder: the link stays and
# its target is the earlier one's again.
snap() { (cd "$1" && for f in $(ls -A | sort); do
    if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; else sha256sum "$f" 2>&1; fi; done); }
for c in "config.json EXDEV" "subscope_train.json EACCES" "subscope_train.json ENOSPC EPERM" "link EIO" "link EIO EPERM"; do
    set -- $c
    rm -rf "$TMP/again" "$TMP/aside" && cp -r "$TMP/m1" "$TMP/again" && mkdir "$TMP/aside"
    what="the rename of $1 failing ($2)"
    f=$1
    if [ $1 = link ]; then # the last file's rename fails, model.safetensors's goes through a link
        f=subscope_train.json what="$2 on the last rename, model.safetensors a symbolic link"
        mv "$TMP/again/model.safetensors" "$TMP/aside/w.safetensors" && ln -s ../aside/w.safetensors "$TMP/again/model.safetensors"
    fi
    [ $# = 3 ] && what="$what, no hard links"
    snap "$TMP/again" >"$TMP/before" && snap "$TMP/aside" >"$TMP/before_aside"
    ([ $# = 3 ] && export SS_SHIM_LINK_FAIL=$3
    SS_SHIM_RENAME_FAIL=$2 SS_SHIM_RENAME_MATCH=again/$f LD_PRELOAD="${TOOLBIN}rename_signal.so" \
        ASAN_OPTIONS="${ASAN_OPTIONS:-}:verify_asan_link_order=0" run --out "$TMP/again" --steps 2 --seed 7 2>"$TMP/logfail")
    rc=$?
    snap "$TMP/again" >"$TMP/after" && snap "$TMP/aside" >"$TMP/after_aside"
    if ! grep -q "^rename_signal: $2 for the rename onto .*/again/$f$" "$TMP/logfail"; then
        fail "train: $what" "the shim failed no rename: $(tail -2 "$TMP/logfail")"
    elif [ $rc = 1 ] && grep -q "error: $TMP/again/$f: cannot rename .* into place: " "$TMP/logfail" &&
        cmp -s "$TMP/before" "$TMP/after" && cmp -s "$TMP/before_aside" "$TMP/after_aside"; then
        pass "train: $what: exit 1 naming it, and the earlier run's files as they were"
    else fail "train: $what" "exit $rc (want 1): $(grep error "$TMP/logfail")" \
        "$(diff "$TMP/before" "$TMP/after"; diff "$TMP/before_aside" "$TMP/after_aside")"; fi
done
# ... and without a failure, the new files replace the earlier ones and no kept copy is left.
for l in "" EPERM; do
    rm -rf "$TMP/again" && cp -r "$TMP/m1" "$TMP/again"
    if ([ -n "$l" ] && export SS_SHIM_LINK_FAIL=$l
        LD_PRELOAD="${TOOLBIN}rename_signal.so" ASAN_OPTIONS="${ASAN_OPTIONS:-}:verify_asan_link_order=0" \
            run --out "$TMP/again" --steps 2 --seed 7 2>"$TMP/logok"); then
        if [ "$(ls -A "$TMP/again" | tr '\n' ' ')" = "$(ls -A "$TMP/m1" | tr '\n' ' ')" ] && grep -q '"seed": 7,' "$TMP/again/subscope_train.json" &&
            ! cmp -s "$TMP/m1/model.safetensors" "$TMP/again/model.safetensors"; then
            pass "train over an earlier run${l:+ (no hard links)}: the new files in place, nothing kept beside them"
        else fail "train over an earlier run${l:+ (no hard links)}" "$(ls -A "$TMP/again" | tr '\n' ' ')"; fi
    else fail "train over an earlier run${l:+ (no hard links)}" "$(tail -2 "$TMP/logok")"; fi
done
rm -rf "$TMP/again" "$TMP/aside"
# A file name train writes that is a folder in --out is refused before training: its rename came
# after the earlier files had been renamed into place, and removing those lost the earlier model.
cp -r "$TMP/m1" "$TMP/m1dir" && rm "$TMP/m1dir/subscope_train.json" && mkdir "$TMP/m1dir/subscope_train.json"
expect_fail "--out holding a folder named subscope_train.json" "m1dir/subscope_train.json is not a file, and train writes" \
    run --out "$TMP/m1dir" --steps 1
cmp -s "$TMP/m1/model.safetensors" "$TMP/m1dir/model.safetensors" && cmp -s "$TMP/m1/config.json" "$TMP/m1dir/config.json" &&
    pass "... and the earlier model is kept" || fail "... and the earlier model is kept" "$(ls -A "$TMP/m1dir")"
"$SUBSCOPE" train --help | grep -q "subscope train --config small.json" && pass "--help has an example" || fail "--help example"
finish
