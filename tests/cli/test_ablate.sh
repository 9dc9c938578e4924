#!/usr/bin/env bash
# ablate: per-prompt metrics under masks against transformers with the same interventions
# applied by PyTorch hooks (tests/gen/gen_ablate_goldens.py), exactness of no-op masks,
# repeated --mask specs, the printed table, and invalid masks.
source "$(dirname "$0")/lib.sh"
D=${SS_TEST_DATA:-tests/data}
H5CMP=${TOOLBIN}h5cmp
M=models/tiny-gpt2
P=$D/ablate/prompts.jsonl
MASKS=$D/ablate/masks.jsonl

# Tolerance: the engine's fp32 logits differ from PyTorch's by ~1e-6 (see the forward goldens);
# losses (~1..5) and logit differences (~5) then agree to ~1e-5 relative, KL values
# (1e-5..1e-1) to far better than 1e-5 absolute; accuracies are exact.
if "$SUBSCOPE" ablate --model $M --input $P --masks $MASKS --metrics loss,acc,logitdiff,kl --out "$TMP/a.h5" >"$TMP/table" 2>"$TMP/err"; then
    if res=$("$H5CMP" --quiet --atol 1e-5 --rtol 1e-4 "$D/golden/ablate-tiny-gpt2.h5" "$TMP/a.h5" 2>&1); then
        pass "loss, acc, logitdiff, kl under zero/scale/mean/resample masks equal transformers + hooks"
    else fail "ablate goldens" "$(printf '%s' "$res" | head -5)"; fi
else fail "ablate runs" "$(cat "$TMP/err")"; fi

# A scale-by-1 mask changes nothing, bit for bit.
# A dataset's values at full float precision (the first DATA block is the dataset's own).
vals() { h5dump -y -m '%.9g' -d "$1" "${2:-$TMP/a.h5}" 2>/dev/null | awk '/DATA {/{f=1;next} f&&/}/{exit} f' | tr -d ' \n'; }
# h5dump reads [..] in a name as a selection; h5ls takes such names as they are.
lsvals() { h5ls -d "$2/$1" 2>/dev/null | sed -n '/Data:/,$p' | tail -n +2 | tr -d ' \n'; }
[ "$(vals /clean/loss)" = "$(vals /ablate/identity/loss)" ] && [ -n "$(vals /clean/loss)" ] && pass "factor 1 leaves the loss bit-identical" || fail "factor 1 leaves the loss bit-identical"
[ -n "$(vals /ablate/identity/kl)" ] && [ "$(vals /ablate/identity/kl | tr -d '0,')" = "" ] && pass "factor 1 gives KL exactly 0" || fail "factor 1 gives KL exactly 0" "$(vals /ablate/identity/kl)"

# The table: one row per mask and label, changes from clean.
grep -q "^mlp1_units *animals" "$TMP/table" && grep -q "^(clean) *all" "$TMP/table" && pass "table by mask and label" || fail "table by mask and label" "$(head -5 "$TMP/table")"

# --mask specs on the command line, repeated; per-label means in the file.
expect_ok "repeated --mask" "$SUBSCOPE" ablate --model $M --input $P --out "$TMP/b.h5" \
    --mask 'blocks.1.mlp.hook_post[0,5,9,100,300]' --mask 'blocks.0.attn.hook_z[head=2]'
h5ls -r "$TMP/b.h5" 2>/dev/null | grep -q "/by_label/colours/ablate/blocks.0.attn.hook_z\[head=2\]/loss" && pass "per-label means written" || fail "per-label means written" "$(h5ls -r "$TMP/b.h5" | head)"
a=$(lsvals '/ablate/blocks.1.mlp.hook_post[0,5,9,100,300]/loss' "$TMP/b.h5")
b=$(lsvals /ablate/mlp1_units/loss "$TMP/a.h5")
[ -n "$a" ] && [ "$a" = "$b" ] && pass "a --mask spec equals the same mask from JSONL" || fail "--mask spec equals JSONL mask" "$a" "$b"

# Seeded noise does not depend on batching: batch 1 and batch 8 agree to fp32 forward rounding.
printf '{"name": "n", "site": "blocks.2.mlp.hook_post", "mode": "noise", "sigma": 0.5, "seed": 7}\n{"name": "nn", "site": "blocks.1.hook_resid_mid", "mode": "negnoise", "sigma": 1, "relative": true, "seed": 3}\n' >"$TMP/noise.jsonl"
"$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/noise.jsonl" --out "$TMP/n1.h5" --batch 1 >/dev/null 2>&1
"$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/noise.jsonl" --out "$TMP/n8.h5" --batch 8 >/dev/null 2>&1
expect_ok "noise and relative negnoise: batch 1 equals batch 8" "$H5CMP" --quiet --atol 1e-5 --rtol 1e-5 "$TMP/n1.h5" "$TMP/n8.h5"
kl=$(vals /ablate/n/kl "$TMP/n1.h5")
[ -n "$kl" ] && [ "$(printf '%s' "$kl" | tr -d '0,')" != "" ] && pass "noise changes the output (KL > 0)" || fail "noise changes the output" "$kl"

# keyword accuracy: only positions whose target is a keyword count; none -> NaN.
printf 'green\nWHITE\n' >"$TMP/kw.txt"
"$SUBSCOPE" ablate --model $M --input $P --mask 'blocks.2.mlp.hook_post[0-99]' --metrics keyword --keywords "$TMP/kw.txt" --out "$TMP/k.h5" >/dev/null 2>&1
kw=$(vals /clean/keyword "$TMP/k.h5")
# prompt 6 ("The sky is blue. Grass is green. Snow is") has "green" as a target; prompts without one are NaN.
case "$kw" in nan,nan,nan,nan,nan,[01]*,nan,nan) pass "keyword metric: defined only where a keyword is the target ($kw)" ;;
    *) fail "keyword metric" "$kw" ;; esac
expect_fail "--keywords that match nothing" "no keyword matches" "$SUBSCOPE" ablate --model $M --input $P --mask 'blocks.2.mlp.hook_post[1]' --metrics keyword --keywords "$P" --out "$TMP/x.h5"

# Invalid masks.
expect_fail "unknown site" "unknown site" "$SUBSCOPE" ablate --model $M --input $P --out "$TMP/x.h5" --mask 'blocks.9.mlp.hook_post[1]'
expect_fail "unit out of range" "512" "$SUBSCOPE" ablate --model $M --input $P --out "$TMP/x.h5" --mask 'blocks.1.mlp.hook_post[512]'
printf '{"name": "bad", "site": "blocks.1.mlp.hook_post", "mode": "scale", "factor": 1.5}\n' >"$TMP/m1.jsonl"
expect_fail "factor outside [0,1]" "m1.jsonl:1" "$SUBSCOPE" ablate --model $M --input $P --out "$TMP/x.h5" --masks "$TMP/m1.jsonl"
printf '{"name": "a/b", "site": "blocks.1.mlp.hook_post"}\n' >"$TMP/m2.jsonl"
expect_fail "mask name with a slash" "contains '/'" "$SUBSCOPE" ablate --model $M --input $P --out "$TMP/x.h5" --masks "$TMP/m2.jsonl"
expect_fail "no masks" "no masks" "$SUBSCOPE" ablate --model $M --input $P --out "$TMP/x.h5"
expect_fail "logitdiff without answers" "needs \"answer\" and \"wrong\"" "$SUBSCOPE" ablate --model $M --input data/demo_prompts.jsonl --out "$TMP/x.h5" --mask 'blocks.1.mlp.hook_post[1]' --metrics logitdiff
expect_fail "unknown metric" "unknown metric 'f1'" "$SUBSCOPE" ablate --model $M --input $P --out "$TMP/x.h5" --mask 'blocks.1.mlp.hook_post[1]' --metrics loss,f1
[ ! -e "$TMP/x.h5" ] && pass "failed runs write no file" || fail "failed runs write no file"
finish
