#!/usr/bin/env bash
# patch: normalised effects against transformers with the same patches applied by PyTorch hooks
# (tests/gen/gen_patch_goldens.py), the exact end points, and the refusals.
source "$(dirname "$0")/lib.sh"
D=${SS_TEST_DATA:-tests/data}
H5CMP=${TOOLBIN}h5cmp
M=models/tiny-gpt2
C=$D/patch/clean.jsonl
K=$D/patch/corrupt.jsonl

# Effects are ratios of logit differences (|clean - corrupt| ~ 1..10) computed from fp32 logits
# that agree with PyTorch to ~1e-6: 1e-4 absolute is two orders above what was measured (4e-7).
"$SUBSCOPE" patch --model $M --input $C --corrupt $K --sites 'blocks.*.hook_resid_pre' --per position --out "$TMP/pos.h5" >/dev/null 2>&1
expect_ok "per position at resid_pre equals transformers + hooks" "$H5CMP" --quiet --atol 1e-4 --rtol 1e-3 "$D/golden/patch-tiny-gpt2-position.h5" "$TMP/pos.h5"
"$SUBSCOPE" patch --model $M --clean $C --corrupt $K --sites 'blocks.*.attn.hook_z' --per head --out "$TMP/head.h5" >/dev/null 2>&1
expect_ok "per head at hook_z equals transformers + hooks" "$H5CMP" --quiet --atol 1e-4 --rtol 1e-3 "$D/golden/patch-tiny-gpt2-head.h5" "$TMP/head.h5"

# End points: the last residual at the last position carries everything. Patched from clean,
# the effect there is 1; with --denoise (corrupt into clean) it is 0.
last() { h5dump -y -m '%.6f' -d /effect/blocks.3.hook_resid_post "$1" 2>/dev/null | awk '/DATA {/{f=1;next} f&&/}/{exit} f' | tr -d ' \n'; }
"$SUBSCOPE" patch --model $M --input $C --corrupt $K --sites blocks.3.hook_resid_post --per position --out "$TMP/e.h5" >/dev/null 2>&1
"$SUBSCOPE" patch --model $M --input $C --corrupt $K --sites blocks.3.hook_resid_post --per position --denoise --out "$TMP/d.h5" >/dev/null 2>&1
v=$(last "$TMP/e.h5"); w=$(last "$TMP/d.h5")
# pair 0 has 3 tokens: positions 0..2, then NaN padding to 10. The patched passes run K copies
# of the prompt together, whose products may round apart from the one-copy runs that give the
# clean and corrupt metrics in the last float bits: the effects are 0 and 1 within 1e-5.
near() { # near VALUES E0,E1,E2: the first three values within 1e-5 of E0..E2, the fourth NaN
    echo "$1 $2" | awk '{ n = split($1, v, ","); split($2, e, ","); ok = n >= 4 && v[4] == "nan";
        for (i = 1; i <= 3; i++) { d = v[i] - e[i]; if (d < 0) d = -d; if (d > 1e-5) ok = 0 } exit !ok }'
}
near "$v" 0,0,1 && pass "patching the final residual at the last position restores clean (1)" || fail "final residual effect" "$v"
near "$w" 1,1,0 && pass "--denoise: the same piece from corrupt gives 0" || fail "--denoise end point" "$w"
# One copy a pass (--batch 1) gives the one-copy runs' bits: exactly 0 and 1.
"$SUBSCOPE" patch --model $M --input $C --corrupt $K --sites blocks.3.hook_resid_post --per position --batch 1 --out "$TMP/e1.h5" >/dev/null 2>&1
case "$(last "$TMP/e1.h5")" in 0.000000,0.000000,1.000000,nan,*) pass "--batch 1: the end points exactly" ;; *) fail "--batch 1 end points" "$(last "$TMP/e1.h5")" ;; esac
# K copies a pass against one: the patched metrics within float rounding, at every kind of
# start (the embeddings, a block's input, inside a block, ln_final): a logit difference of
# values ~10 carries their fp32 rounding (ulp 1e-6) through four blocks, so 1e-5 + 1e-5 relative
S1='hook_embed,blocks.0.hook_resid_pre,blocks.1.attn.hook_z,blocks.2.mlp.hook_post,ln_final.hook_normalized'
for met in logitdiff loss; do
    "$SUBSCOPE" patch --model $M --input $C --corrupt $K --sites "$S1" --per neuron --metric $met --batch 1 --out "$TMP/b1.h5" >/dev/null 2>&1
    "$SUBSCOPE" patch --model $M --input $C --corrupt $K --sites "$S1" --per neuron --metric $met --batch 7 --out "$TMP/b7.h5" >/dev/null 2>&1
    expect_ok "--batch 7 equals --batch 1 within rounding ($met, per neuron)" "$H5CMP" --quiet --atol 1e-5 --rtol 1e-5 --only /patched_metric "$TMP/b1.h5" "$TMP/b7.h5"
done
b=$(h5dump -a /batch "$TMP/b7.h5" 2>/dev/null | awk '/\(0\)/{print $2}')
[ "$b" = 7 ] && pass "the root attribute batch records the copies a pass ran" || fail "batch attribute" "got '$b'"
"$SUBSCOPE" patch --model $M --input $C --corrupt $K --sites blocks.1.hook_resid_mid --out "$TMP/s.h5" --metric loss >"$TMP/t" 2>&1
grep -q "blocks.1.hook_resid_mid" "$TMP/t" && pass "--per site --metric loss prints its summary" || fail "--per site --metric loss" "$(cat "$TMP/t")"
# show: each site's pieces by mean effect over the pairs (NaN skipped): one piece here, its mean
m=$(h5dump -y -m '%.9g' -d /effect/blocks.1.hook_resid_mid "$TMP/s.h5" | awk '/DATA {/{f=1;next} f&&/}/{exit} f' | tr ',' '\n' |
    awk '$1 != "nan" && NF {s += $1; n++} END {if (n) printf "%+.3f", s / n}')
"$SUBSCOPE" show --file "$TMP/s.h5" >"$TMP/sh" 2>&1
# show names the inputs the file was made from (the clean and corrupted prompts).
grep -q "^  clean_path  *." "$TMP/sh" && grep -q "^  corrupt_path  *." "$TMP/sh" && pass "show: the clean and corrupted inputs" ||
    fail "show's provenance lacks clean_path/corrupt_path" "$(head -12 "$TMP/sh")"
grep -q "^  blocks.1.hook_resid_mid (all):  0 $m\$" "$TMP/sh" && pass "show: a site's mean patching effect" ||
    fail "show's patching effects (want 0 $m)" "$(tail -3 "$TMP/sh")"
# A piece's mean is over the pairs with a value there: the pairs here have 3, 10, 3 and 6 tokens,
# so position 8 is one pair's effect. The table counts the pairs under each position and show
# says how many stand behind a piece that has fewer than all (both said "mean over 4 pairs").
"$SUBSCOPE" patch --model $M --input $C --corrupt $K --sites blocks.0.hook_resid_pre --per position --out "$TMP/pp.h5" >"$TMP/ppt" 2>&1
grep -Eq '^\(pairs\) +4 +4 +4 +2 +2 +2 +1 +1 +1 +1$' "$TMP/ppt" && grep -q "mean over the pairs with a value (of 4" "$TMP/ppt" &&
    pass "patch's table counts the pairs behind each position's mean" || fail "patch table's pair counts" "$(cat "$TMP/ppt")"
"$SUBSCOPE" show --file "$TMP/pp.h5" >"$TMP/ppsh" 2>&1
grep -Eq '^  blocks.0.hook_resid_pre \(position\):  8 \+0\.9[0-9]+ \(1 pair\)  1 \+0\.[0-9]+  ' "$TMP/ppsh" &&
    pass "show: a piece whose mean rests on fewer pairs says how many" || fail "show's pair counts" "$(tail -4 "$TMP/ppsh")"
# Effects are written whole: a file declaring [2^31, 1] of them never written is refused by its
# size before reading (they were allocated whole: 8 GiB, "out of memory" under capped).
if python3 -c "import h5py" 2>/dev/null; then
    cp "$TMP/s.h5" "$TMP/huge.h5" && python3 -c 'import sys, h5py
f = h5py.File(sys.argv[1], "r+")
del f["effect/blocks.1.hook_resid_mid"]
f.create_dataset("effect/blocks.1.hook_resid_mid", shape=(1 << 31, 1), dtype="f4", chunks=(1 << 16, 1))' "$TMP/huge.h5"
    expect_fail "show: effects declaring 2^31 pairs never written refused by their size" \
        "/effect/blocks.1.hook_resid_mid declares 8589934592 bytes but stores 0: most of it was never written" \
        capped "$SUBSCOPE" show "$TMP/huge.h5"
else pass "show of huge declared effects not tested: needs python3 with h5py"; fi

# Grouped-query attention: --per head cuts q into its 6 heads and k/v into the 2 key/value
# heads, on axes of their own (head, kv_head, as forward names them), so both fit in one file.
G=$D/models/llama-gqa-llama3
printf '{"tokens": [5, 6, 7, 8]}\n{"tokens": [9, 10, 11]}\n' >"$TMP/gc.jsonl"
printf '{"tokens": [5, 6, 9, 8]}\n{"tokens": [9, 12, 11]}\n' >"$TMP/gk.jsonl"
if "$SUBSCOPE" patch --model $G --clean "$TMP/gc.jsonl" --corrupt "$TMP/gk.jsonl" --sites 'blocks.0.attn.hook_q,blocks.0.attn.hook_k,blocks.1.attn.hook_v' \
    --per head --metric loss --out "$TMP/gqa.h5" >"$TMP/gqa.txt" 2>&1 &&
    "$SUBSCOPE" show "$TMP/gqa.h5" | grep -q '/effect/blocks.0.attn.hook_q  *float32 \[pair 2, head 6\]' &&
    "$SUBSCOPE" show "$TMP/gqa.h5" | grep -q '/effect/blocks.1.attn.hook_v  *float32 \[pair 2, kv_head 2\]'; then
    pass "--per head with grouped-query attention: q on head, k/v on kv_head"
else fail "--per head with grouped-query attention" "$(tail -2 "$TMP/gqa.txt")"; fi

# A glob that sweeps up hook_pattern (no per-token vector) leaves it out, as collect and
# attribute do; named outright it is refused below.
"$SUBSCOPE" patch --model $M --clean $C --corrupt $K --sites 'blocks.0.attn.*' --out "$TMP/attn.h5" >"$TMP/attn.txt" 2>&1 &&
    [ "$(h5ls "$TMP/attn.h5/effect" 2>/dev/null | awk '{print $1}' | tr '\n' ' ')" = "blocks.0.attn.hook_k blocks.0.attn.hook_q blocks.0.attn.hook_v blocks.0.attn.hook_z " ] &&
    pass "a glob over attn.* patches q, k, v and z, leaving hook_pattern out" || fail "glob with hook_pattern" "$(tail -2 "$TMP/attn.txt")"

# Refusals.
expect_fail "--clean and --input disagree" "name different files" "$SUBSCOPE" patch --model $M --clean $C --input $K --corrupt $K --sites blocks.0.hook_resid_pre --out "$TMP/x.h5"
printf '{"text": "The dog says hello"}\n{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n' >"$TMP/bad.jsonl"
expect_fail "unequal token counts" "pairs need equal lengths" "$SUBSCOPE" patch --model $M --input $C --corrupt "$TMP/bad.jsonl" --sites blocks.0.hook_resid_pre --out "$TMP/x.h5"
head -n 2 $K >"$TMP/two.jsonl"
expect_fail "unpaired files" "paired line by line" "$SUBSCOPE" patch --model $M --input $C --corrupt "$TMP/two.jsonl" --sites blocks.0.hook_resid_pre --out "$TMP/x.h5"
expect_fail "--sites of blanks" "names no site" "$SUBSCOPE" patch --model $M --input $C --corrupt $K --sites ' , ' --out "$TMP/x.h5"
expect_fail "hook_pattern named outright" "cannot be patched (no per-token vector)" "$SUBSCOPE" patch --model $M --input $C --corrupt $K --sites blocks.0.attn.hook_pattern --out "$TMP/x.h5"
expect_fail "a glob of only patterns" "selects no site with a per-token vector" "$SUBSCOPE" patch --model $M --input $C --corrupt $K --sites 'blocks.*.attn.hook_pat*' --out "$TMP/x.h5"
expect_fail "--per head on a site without heads" "has no heads" "$SUBSCOPE" patch --model $M --input $C --corrupt $K --sites blocks.0.hook_resid_pre --per head --out "$TMP/x.h5"
expect_fail "logitdiff without answers" "needs \"answer\" and \"wrong\"" "$SUBSCOPE" patch --model $M --input $K --corrupt $K --sites blocks.0.hook_resid_pre --out "$TMP/x.h5"
expect_fail "bad --per" "--per must be" "$SUBSCOPE" patch --model $M --input $C --corrupt $K --sites blocks.0.hook_resid_pre --per layer --out "$TMP/x.h5"
[ ! -e "$TMP/x.h5" ] && pass "failed runs write no file" || fail "failed runs write no file"
n=$(grep -c . "$C")
tl=$(SUBSCOPE_TIMING=1 "$SUBSCOPE" patch --model $M --input $C --corrupt $K --sites blocks.0.hook_resid_pre --out "$TMP/t.h5" 2>&1 >/dev/null | grep "timing:")
if printf '%s' "$tl" | grep -Eq "^subscope patch: timing: first batch [0-9.]+ s \(1 prompts\), later batches [0-9.]+ s \($((n - 1)) prompts\)$"; then
    pass "SUBSCOPE_TIMING=1 times patch's first pair and the later ones"
else fail "SUBSCOPE_TIMING=1 patch" "got: $tl"; fi
# On a terminal, progress starts at 0 of the pieces, as the other commands' does: its first line
# came after the first pair's pieces (3/40), and the rate counted them against the time since
# that line (346224.4/s where the pieces ran at about 2500/s). `script` gives the run a terminal.
if command -v script >/dev/null 2>&1; then
    out=$(script -qec "'$SUBSCOPE' patch --model $M --input $C --corrupt $K --sites blocks.0.hook_resid_pre --per position --out '$TMP/tty.h5'" \
        /dev/null 2>&1 | tr '\r' '\n' | grep -a ' patches ')
    [ "$(printf '%s\n' "$out" | head -n 1 | awk '{print $1}')" = "0/40" ] && printf '%s\n' "$out" | grep -q "^  40/40 patches" &&
        pass "on a terminal: patch's progress runs from 0/40 to 40/40 pieces" || fail "patch's progress on a terminal" "$out"
    # Each line clears to its end (ESC [K): one shorter than the line before it left that line's tail.
    [ -n "$out" ] && ! printf '%s\n' "$out" | grep -av $'elapsed\e\\[K$' | grep -q . &&
        pass "on a terminal: each progress line clears the rest of the line" || fail "progress lines clear to the end" "$(printf '%s' "$out" | cat -A | head -n 3)"
else
    pass "progress on a terminal not checked: no 'script' command here"
fi
# "answer" and "wrong" that begin with the same token (" congratulations" and " congress" both
# start with id 276 in this vocabulary): logitdiff scores first tokens only, so it would be 0
# whatever the model does; refused naming the line (before, a silent 0).
printf '%s\n' '{"text": "The cat says", "answer": " meow", "wrong": " woof"}' \
    '{"text": "The dog says", "answer": " congratulations", "wrong": " congress"}' >"$TMP/same_first.jsonl"
expect_fail "patch: answer and wrong sharing their first token refused" 'same_first.jsonl:2: "answer" and "wrong" begin with the same token (id 276)' \
    "$SUBSCOPE" patch --model $M --clean "$TMP/same_first.jsonl" --corrupt "$TMP/same_first.jsonl" --sites blocks.1.mlp.hook_post --out "$TMP/sf.h5"
[ ! -e "$TMP/sf.h5" ] && pass "patch: no output after the refusal" || fail "patch left an output" "$TMP/sf.h5"
# An "answer" of more than one token is scored by its first (" congratulations" is 8 tokens here): a note
# on stderr counts such values and names the first; none where every answer is one token.
printf '%s\n' '{"text": "The cat says", "answer": " congratulations", "wrong": " woof"}' >"$TMP/long_answer.jsonl"
"$SUBSCOPE" patch --model $M --clean "$TMP/long_answer.jsonl" --corrupt "$TMP/long_answer.jsonl" --sites blocks.1.mlp.hook_post --out "$TMP/mt.h5" 2>"$TMP/mt.err" >/dev/null
grep -qF 'patch: note: 1 "answer"/"wrong" value of '"$TMP"'/long_answer.jsonl encodes to more than one token (the first: line 1, "answer" " congratulations", 8 tokens); logitdiff scores only the first token of each' "$TMP/mt.err" &&
    pass "patch: a note names the answers of more than one token" || fail "patch: multi-token answer note" "$(cat "$TMP/mt.err")"
"$SUBSCOPE" patch --model $M --input $C --corrupt $K --sites blocks.1.mlp.hook_post --out "$TMP/mt.h5" 2>"$TMP/mt.err" >/dev/null
! grep -q "note" "$TMP/mt.err" && pass "patch: no such note when every answer is one token" || fail "patch: unwanted note" "$(cat "$TMP/mt.err")"
finish
