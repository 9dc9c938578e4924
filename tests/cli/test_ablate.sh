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
# One mask per forward (--mask-batch 1) runs the same products as the clean run, so
# identity is exact there; run with other masks (the default: all 7 in one forward) the
# matrix products have more rows, and BLAS may round differently in the last bit
# (OpenBLAS does: KL ~1e-13; the built-in GEMM does not).
"$SUBSCOPE" ablate --model $M --input $P --masks $MASKS --metrics loss,acc,logitdiff,kl --out "$TMP/a1.h5" --mask-batch 1 >/dev/null 2>&1
[ "$(vals /clean/loss "$TMP/a1.h5")" = "$(vals /ablate/identity/loss "$TMP/a1.h5")" ] && [ -n "$(vals /clean/loss "$TMP/a1.h5")" ] && pass "factor 1 leaves the loss bit-identical (--mask-batch 1)" || fail "factor 1 leaves the loss bit-identical"
[ -n "$(vals /ablate/identity/kl "$TMP/a1.h5")" ] && [ "$(vals /ablate/identity/kl "$TMP/a1.h5" | tr -d '0,')" = "" ] && pass "factor 1 gives KL exactly 0 (--mask-batch 1)" || fail "factor 1 gives KL exactly 0" "$(vals /ablate/identity/kl "$TMP/a1.h5")"
kl=$(vals /ablate/identity/kl)
[ -n "$kl" ] && printf '%s' "$kl" | tr ',' '\n' | awk '$1 < 0 || $1 > 1e-9 {bad=1} END {exit bad}' && pass "factor 1 in a batch of masks: KL <= 1e-9 ($kl)" || fail "factor 1 in a batch of masks: KL <= 1e-9" "$kl"

# The table: one row per mask and label, changes from clean.
grep -q "^mlp1_units *animals" "$TMP/table" && grep -q "^(clean) *all" "$TMP/table" && pass "table by mask and label" || fail "table by mask and label" "$(head -5 "$TMP/table")"

# --mask specs on the command line, repeated; per-label means in the file.
expect_ok "repeated --mask" "$SUBSCOPE" ablate --model $M --input $P --out "$TMP/b.h5" --mask-batch 1 \
    --mask 'blocks.1.mlp.hook_post[0,5,9,100,300]' --mask 'blocks.0.attn.hook_z[head=2]'
h5ls -r "$TMP/b.h5" 2>/dev/null | grep -q "/by_label/colours/ablate/blocks.0.attn.hook_z\[head=2\]/loss" && pass "per-label means written" || fail "per-label means written" "$(h5ls -r "$TMP/b.h5" | head)"
a=$(lsvals '/ablate/blocks.1.mlp.hook_post[0,5,9,100,300]/loss' "$TMP/b.h5")
b=$(lsvals /ablate/mlp1_units/loss "$TMP/a1.h5") # one mask per forward in both: the same products
[ -n "$a" ] && [ "$a" = "$b" ] && pass "a --mask spec equals the same mask from JSONL" || fail "--mask spec equals JSONL mask" "$a" "$b"

# --mask and --masks add up (the usage said "--mask SPEC ... | --masks FILE", as if either-or): the
# file's masks, then the spec's, each with the values of a run of its own.
"$SUBSCOPE" ablate --model $M --input $P --masks $MASKS --mask 'blocks.1.mlp.hook_post[0,5,9,100,300]' --mask-batch 1 \
    --out "$TMP/both.h5" >"$TMP/both.txt" 2>&1
rows=$(awk '$2 == "all" {printf "%s ", $1}' "$TMP/both.txt")
a=$(lsvals '/ablate/blocks.1.mlp.hook_post[0,5,9,100,300]/loss' "$TMP/both.h5") c=$(lsvals /ablate/mlp1_units/loss "$TMP/both.h5")
[ "$rows" = "(clean) mlp1_units head0_2 resid2_half mlp3_mean two_sites identity mlp1_resample blocks.1.mlp.hook_post[0,5,9,100,300] " ] &&
    [ -n "$a" ] && [ "$a" = "$b" ] && [ "$c" = "$b" ] && pass "--masks and --mask together: the file's masks, then the spec's" ||
    fail "--masks and --mask together" "rows: $rows" "$a" "$b"
"$SUBSCOPE" ablate --help | grep -qF "usage: subscope ablate --model DIR --input FILE (--mask SPEC ... and/or --masks FILE) --out" &&
    "$SUBSCOPE" ablate --help | grep -qF -- "--mask and --masks add up" && pass "ablate --help: --mask and/or --masks" ||
    fail "ablate --help's usage: --mask and --masks" "$("$SUBSCOPE" ablate --help | head -3)"
# Each item of a --mask spec stands alone: head=1,head=3 is two heads (64 units of hook_v's 4 x 32),
# head=1,3 is head 1 and unit 3 (33); --help and FORMAT.md say so (they did not, and 'head=1,3'
# reads as two heads).
"$SUBSCOPE" ablate --model $M --input $P --mask 'blocks.1.attn.hook_v[head=1,head=3]' --mask 'blocks.1.attn.hook_v[head=1,3]' \
    --out "$TMP/hh.h5" >/dev/null 2>&1
nu() { h5dump -a "/ablate/$1/n_units" "$TMP/hh.h5" 2>/dev/null | sed -n 's/.*(0): \([0-9]*\).*/\1/p'; }
[ "$(nu 'blocks.1.attn.hook_v[head=1,head=3]')" = 64 ] && [ "$(nu 'blocks.1.attn.hook_v[head=1,3]')" = 33 ] &&
    "$SUBSCOPE" ablate --help | grep -qF "two heads are head=1,head=3 ('head=1,3' is head 1 and unit 3)" &&
    pass "--mask items stand alone: head=1,head=3 is two heads, head=1,3 a head and a unit, as --help says" ||
    fail "--mask head items" "n_units $(nu 'blocks.1.attn.hook_v[head=1,head=3]') and $(nu 'blocks.1.attn.hook_v[head=1,3]')"

# Seeded noise does not depend on batching: batch 1 and batch 8 agree to fp32 forward rounding.
printf '{"name": "n", "site": "blocks.2.mlp.hook_post", "mode": "noise", "sigma": 0.5, "seed": 7}\n{"name": "nn", "site": "blocks.1.hook_resid_mid", "mode": "negnoise", "sigma": 1, "relative": true, "seed": 3}\n' >"$TMP/noise.jsonl"
"$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/noise.jsonl" --out "$TMP/n1.h5" --batch 1 >/dev/null 2>&1
"$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/noise.jsonl" --out "$TMP/n8.h5" --batch 8 >/dev/null 2>&1
expect_ok "noise and relative negnoise: batch 1 equals batch 8" "$H5CMP" --quiet --atol 1e-5 --rtol 1e-5 "$TMP/n1.h5" "$TMP/n8.h5"
kl=$(vals /ablate/n/kl "$TMP/n1.h5")
[ -n "$kl" ] && [ "$(printf '%s' "$kl" | tr -d '0,')" != "" ] && pass "noise changes the output (KL > 0)" || fail "noise changes the output" "$kl"

# Batched masks: a sweep of 40 masks (every mode; sites from the embeddings, where a run
# must start at block 0, to ln_final and blocks.3, the last block) gives the same metrics
# one mask per forward, 7 per forward (6 groups, each starting at its earliest block),
# all 40 in one forward (the default here), and 16 per forward over batches of 3 prompts.
# Tolerance atol 1e-6 + rtol 1e-5: BLAS rounds products of different row counts
# differently in the last bit (observed with OpenBLAS: |diff| <= 7e-6 on values ~1..10,
# KL ~1e-4 within 3e-9); with the built-in GEMM every value is bit-identical.
awk 'BEGIN {
    split("zero scale mean resample noise negnoise", mode, " ");
    for (i = 0; i < 40; i++) {
        L = i % 4; m = mode[i % 6 + 1];
        if (i % 5 == 0)      site = sprintf("\"site\": \"blocks.%d.mlp.hook_post\", \"units\": [%d, %d, %d]", L, i, i + 7, 100 + i);
        else if (i % 5 == 1) site = sprintf("\"site\": \"blocks.%d.attn.hook_z\", \"heads\": [%d]", L, i % 4);
        else if (i % 5 == 2) site = sprintf("\"site\": \"blocks.%d.hook_resid_mid\", \"positions\": [1, 2]", L);
        else if (i % 5 == 3) site = sprintf("\"sites\": [{\"site\": \"blocks.%d.mlp.hook_pre\", \"units\": [%d]}, {\"site\": \"blocks.3.hook_resid_post\", \"units\": [%d, 39]}]", L, i, i);
        else                 site = (i < 20 ? "\"site\": \"hook_embed\", \"units\": [1, 2, 3]" : "\"site\": \"ln_final.hook_normalized\", \"units\": [4, 5]");
        extra = m == "scale" ? ", \"factor\": 0.25" : m == "noise" ? ", \"sigma\": 0.5" : m == "negnoise" ? ", \"sigma\": 1, \"relative\": true" : "";
        printf "{\"name\": \"s%02d_%s\", %s, \"mode\": \"%s\", \"seed\": %d%s}\n", i, m, site, m, i, extra;
    } }' >"$TMP/sweep.jsonl"
sweep() { "$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/sweep.jsonl" --metrics loss,acc,logitdiff,kl --out "$TMP/$1.h5" "${@:2}" >"$TMP/$1.txt" 2>&1 || cat "$TMP/$1.txt" >&2; }
sweep sw1 --mask-batch 1; sweep sw7 --mask-batch 7; sweep swauto; sweep sw40 --mask-batch 40; sweep swb3 --batch 3 --mask-batch 16
grep -q "40 masks, 1 per forward at most (40 forwards" "$TMP/sw1.txt" && grep -q "7 per forward at most (6 forwards" "$TMP/sw7.txt" &&
    grep -q "40 per forward at most (1 forward per" "$TMP/sw40.txt" && grep -q "14 per forward at most (3 forwards" "$TMP/swb3.txt" &&
    grep -q "40 masks, 1 per forward at most" "$TMP/swauto.txt" &&
    pass "--mask-batch sets the masks per forward (groups of even size); the CPU default is one" ||
    fail "masks per forward" "$(grep -h "per forward" "$TMP"/sw*.txt)"
# logitdiff is a difference of two logits (~1..10), so its rounding is absolute at the logits'
# scale even where the difference is small (an AVX-512 machine's OpenBLAS: 2.9e-6 on -0.042):
# atol 1e-5 for it, the tolerance above for the rest.
ld=() rest=()
for d in $(h5ls -r "$TMP/sw1.h5" | awk '$2 == "Dataset" {print $1}'); do
    case $d in */logitdiff) ld+=(--only "$d") ;; *) rest+=(--only "$d") ;; esac
done
for v in sw7 sw40 swb3; do
    expect_ok "40-mask sweep: --mask-batch 1 equals $v (all but logitdiff: $((${#rest[@]} / 2)) datasets)" "$H5CMP" --quiet \
        --atol 1e-6 --rtol 1e-5 "${rest[@]}" "$TMP/sw1.h5" "$TMP/$v.h5"
    expect_ok "40-mask sweep: --mask-batch 1 equals $v (logitdiff: $((${#ld[@]} / 2)) datasets)" "$H5CMP" --quiet \
        --atol 1e-5 --rtol 1e-5 "${ld[@]}" "$TMP/sw1.h5" "$TMP/$v.h5"
done
nz() { [ -n "$1" ] && [ "$(printf '%s' "$1" | tr -d '0,.')" != "" ]; }
nz "$(vals /ablate/s04_noise/kl "$TMP/sw40.h5")" && nz "$(vals /ablate/s24_zero/kl "$TMP/sw40.h5")" &&
    nz "$(vals /ablate/s03_resample/kl "$TMP/sw40.h5")" &&
    pass "first-block (hook_embed) and last-block (ln_final, blocks.3) masks in one forward change the output" ||
    fail "first/last block masks change the output" "$(vals /ablate/s24_zero/kl "$TMP/sw40.h5")"
expect_fail "--mask-batch 0" "mask-batch" "$SUBSCOPE" ablate --model $M --input $P --out "$TMP/x.h5" --mask 'blocks.1.mlp.hook_post[1]' --mask-batch 0

# keyword accuracy: only positions whose target is a keyword count; none -> NaN.
printf 'green\nWHITE\n' >"$TMP/kw.txt"
"$SUBSCOPE" ablate --model $M --input $P --mask 'blocks.2.mlp.hook_post[0-99]' --metrics keyword --keywords "$TMP/kw.txt" --out "$TMP/k.h5" >"$TMP/k.txt" 2>&1
kw=$(vals /clean/keyword "$TMP/k.h5")
# A label with no keyword position (animals, days) has no mean: the table printed "nan" for the
# clean run and "+nan" for the mask; now "nan" in both, with a note, and NaN in the file.
t=$(awk '$2 == "animals" || $2 == "days" {printf "%s %s;", $2, $3}' "$TMP/k.txt")
[ "$t" = "animals nan;days nan;animals nan;days nan;" ] && grep -q "^nan: undefined, NaN in the file too" "$TMP/k.txt" &&
    [ "$(vals /by_label/animals/clean/keyword "$TMP/k.h5")" = nan ] &&
    [ "$(lsvals "/by_label/days/ablate/blocks.2.mlp.hook_post[0-99]/keyword" "$TMP/k.h5")" = nan ] &&
    grep -q '^(clean) *colours *[01]\.' "$TMP/k.txt" && pass "table: an undefined mean is nan, with a note, as in the file" ||
    fail "table: undefined means" "$t" "$(grep nan "$TMP/k.txt")"
# --keywords without the keyword metric would be read for nothing: refused, naming it, no output.
expect_fail "--keywords without --metrics keyword refused" "--keywords is used by --metrics keyword only" \
    "$SUBSCOPE" ablate --model $M --input $P --mask 'blocks.2.mlp.hook_post[0-99]' --keywords "$TMP/kw.txt" --out "$TMP/knone.h5"
[ ! -e "$TMP/knone.h5" ] || fail "no output after the --keywords refusal"
# prompt 6 ("The sky is blue. Grass is green. Snow is") has "green" as a target; prompts without one are NaN.
case "$kw" in nan,nan,nan,nan,nan,[01]*,nan,nan) pass "keyword metric: defined only where a keyword is the target ($kw)" ;;
    *) fail "keyword metric" "$kw" ;; esac
# a byte-order mark before the first word, and a word no vocabulary entry spells (named on stderr)
printf '\357\273\277green\nzzqqxx\n  white\t\n' >"$TMP/kwbom.txt"
"$SUBSCOPE" ablate --model $M --input $P --mask 'blocks.2.mlp.hook_post[0-99]' --metrics keyword --keywords "$TMP/kwbom.txt" --out "$TMP/kb.h5" >/dev/null 2>"$TMP/kb.err"
kwb=$(vals /clean/keyword "$TMP/kb.h5")
case "$kwb" in nan,nan,nan,nan,nan,[01]*,nan,nan) pass "--keywords: a byte-order mark before the first word is skipped ($kwb)" ;;
    *) fail "--keywords with a byte-order mark" "$kwb" "$(cat "$TMP/kb.err")" ;; esac
if grep -q "'zzqqxx' is no single vocabulary entry" "$TMP/kb.err" && ! grep -q "'green'\|white" "$TMP/kb.err"; then
    pass "--keywords: a word that matches no entry is named on stderr (spaces around a word are not part of it)"
else fail "--keywords: unmatched word note" "$(cat "$TMP/kb.err")"; fi
expect_fail "--keywords that match nothing" "no keyword matches" "$SUBSCOPE" ablate --model $M --input $P --mask 'blocks.2.mlp.hook_post[1]' --metrics keyword --keywords "$P" --out "$TMP/x.h5"

# Invalid masks.
expect_fail "unknown site" "unknown site" "$SUBSCOPE" ablate --model $M --input $P --out "$TMP/x.h5" --mask 'blocks.9.mlp.hook_post[1]'
expect_fail "unit out of range" "512" "$SUBSCOPE" ablate --model $M --input $P --out "$TMP/x.h5" --mask 'blocks.1.mlp.hook_post[512]'
printf '{"name": "bad", "site": "blocks.1.mlp.hook_post", "mode": "scale", "factor": 1.5}\n' >"$TMP/m1.jsonl"
expect_fail "factor outside [0,1]" "m1.jsonl:1" "$SUBSCOPE" ablate --model $M --input $P --out "$TMP/x.h5" --masks "$TMP/m1.jsonl"
printf '{"name": "a/b", "site": "blocks.1.mlp.hook_post"}\n' >"$TMP/m2.jsonl"
expect_fail "mask name with a slash" "contains '/'" "$SUBSCOPE" ablate --model $M --input $P --out "$TMP/x.h5" --masks "$TMP/m2.jsonl"
# Labels name HDF5 groups: one that cannot is refused at its line, before any mask runs.
printf '{"text": "The cat says", "label": "q"}\n{"text": "The dog says", "label": "."}\n' >"$TMP/dotlabel.jsonl"
printf '{"text": "The cat says", "label": ""}\n{"text": "The dog says", "label": "q"}\n' >"$TMP/nolabel.jsonl"
expect_fail "label '.'" "dotlabel.jsonl:2: label '.' cannot name an HDF5 group" "$SUBSCOPE" ablate --model $M --input "$TMP/dotlabel.jsonl" --out "$TMP/x.h5" --mask 'blocks.1.mlp.hook_post[1]'
expect_fail "empty label" "nolabel.jsonl:1: label '' cannot name an HDF5 group (it is empty)" "$SUBSCOPE" ablate --model $M --input "$TMP/nolabel.jsonl" --out "$TMP/x.h5" --mask 'blocks.1.mlp.hook_post[1]'
# A label of 512 bytes with a mask name of 63 names its groups whole; a longer label is refused
# (the paths were built in a 512-byte buffer, which cut them).
l512=$(printf 'L%.0s' $(seq 1 512)) n63=$(printf 'n%.0s' $(seq 1 63))
printf '{"text": "The cat says", "label": "%s"}\n{"text": "The dog says", "label": "%sX"}\n' "$l512" "$l512" >"$TMP/longlabel.jsonl"
expect_fail "label past 512 bytes" "longlabel.jsonl:2: label of 513 bytes, longer than the 512" "$SUBSCOPE" ablate --model $M --input "$TMP/longlabel.jsonl" --out "$TMP/x.h5" --mask 'blocks.1.mlp.hook_post[1]'
head -n 1 "$TMP/longlabel.jsonl" >"$TMP/l512.jsonl"
printf '{"name": "%s", "site": "blocks.1.mlp.hook_post", "units": [1]}\n' "$n63" >"$TMP/n63.jsonl"
if "$SUBSCOPE" ablate --model $M --input "$TMP/l512.jsonl" --masks "$TMP/n63.jsonl" --out "$TMP/ll.h5" >/dev/null 2>"$TMP/err" &&
    h5dump -d "/by_label/$l512/ablate/$n63/loss" "$TMP/ll.h5" >/dev/null 2>&1; then
    pass "a 512-byte label and a 63-byte mask name: /by_label/<label>/ablate/<mask>/loss whole"
else fail "512-byte label" "$(cat "$TMP/err")" "$(h5ls -r "$TMP/ll.h5" 2>&1 | grep by_label | cut -c1-120 | tail -n 2)"; fi
# the table's columns line up for a non-ASCII label (widths in characters, not bytes)
printf '{"text": "The cat says", "label": "Tiere \303\244\303\266\303\274"}\n{"text": "The dog runs", "label": "colours"}\n' >"$TMP/u8.jsonl"
"$SUBSCOPE" ablate --model $M --input "$TMP/u8.jsonl" --mask 'blocks.1.mlp.hook_post[1-20]' --out "$TMP/u8.h5" >"$TMP/u8.txt" 2>/dev/null
w1=$(grep -m1 "^(clean) *Tiere" "$TMP/u8.txt" | LC_ALL=C.UTF-8 wc -m) w2=$(grep -m1 "^(clean) *colours" "$TMP/u8.txt" | LC_ALL=C.UTF-8 wc -m)
[ -n "$w1" ] && [ "$w1" -gt 20 ] && [ "$w1" = "$w2" ] && pass "table: a non-ASCII label's row is as wide as an ASCII one's ($w1 characters)" ||
    fail "table widths with a non-ASCII label" "$w1 vs $w2" "$(tail -n 4 "$TMP/u8.txt")"
expect_fail "no masks" "no masks" "$SUBSCOPE" ablate --model $M --input $P --out "$TMP/x.h5"
expect_fail "logitdiff without answers" "needs \"answer\" and \"wrong\"" "$SUBSCOPE" ablate --model $M --input data/demo_prompts.jsonl --out "$TMP/x.h5" --mask 'blocks.1.mlp.hook_post[1]' --metrics logitdiff
expect_fail "unknown metric" "unknown metric 'f1'" "$SUBSCOPE" ablate --model $M --input $P --out "$TMP/x.h5" --mask 'blocks.1.mlp.hook_post[1]' --metrics loss,f1
expect_fail "--metrics naming no metric" "names no metric" "$SUBSCOPE" ablate --model $M --input $P --out "$TMP/x.h5" --mask 'blocks.1.mlp.hook_post[1]' --metrics ,
[ ! -e "$TMP/x.h5" ] && pass "failed runs write no file" || fail "failed runs write no file"
# Mode patch = activation patching: on the clean prompts with the site taken from the paired
# corrupt ones, the loss equals `patch --denoise --per site --metric loss` (same run, other
# batching: fp32 rounding only).
PC=$D/patch/clean.jsonl PK=$D/patch/corrupt.jsonl
printf '%s\n' '{"name": "p_resid1", "site": "blocks.1.hook_resid_pre", "mode": "patch"}' \
    '{"name": "p_z2", "site": "blocks.2.attn.hook_z", "mode": "patch"}' >"$TMP/pm.jsonl"
"$SUBSCOPE" ablate --model $M --input $PC --patch-from $PK --masks "$TMP/pm.jsonl" --metrics loss --out "$TMP/pa.h5" >/dev/null 2>&1
"$SUBSCOPE" patch --model $M --clean $PC --corrupt $PK --sites 'blocks.1.hook_resid_pre,blocks.2.attn.hook_z' --per site \
    --metric loss --denoise --out "$TMP/pp.h5" >/dev/null 2>&1
ok=1
for pair in "p_resid1 blocks.1.hook_resid_pre" "p_z2 blocks.2.attn.hook_z"; do
    set -- $pair
    a=$(vals "/ablate/$1/loss" "$TMP/pa.h5"); b=$(vals "/patched_metric/$2" "$TMP/pp.h5")
    paste -d' ' <(printf '%s' "$a" | tr ',' '\n') <(printf '%s' "$b" | tr ',' '\n') |
        awk 'NF != 2 { exit 1 } { d = $1 - $2; if (d < 0) d = -d; if (d > 1e-5 + 1e-5 * ($2 < 0 ? -$2 : $2)) exit 1 }' || ok=0
    [ -n "$a" ] || ok=0
done
[ $ok = 1 ] && pass "mode patch equals patch --denoise (loss per pair)" || fail "mode patch equals patch --denoise" "$a" "$b"
# The paired prompts shape the result as --input does: the file records both paths.
pf=$(h5dump -a /patch_from_path "$TMP/pa.h5" 2>/dev/null | sed -n 's/.*(0): "\(.*\)"$/\1/p')
[ "$pf" = "$PK" ] && ! h5dump -A "$TMP/a.h5" 2>/dev/null | grep -q patch_from_path &&
    pass "--patch-from is recorded as patch_from_path (and absent without it)" || fail "patch_from_path" "got '$pf', want '$PK'"
# So do the masks file, the statistics of mean / relative-noise masks and the keywords: each is
# recorded as <option>_path (they were only inside command_line), and absent without the option.
sattr() { h5dump -a "/$1" "$2" 2>/dev/null | sed -n 's/.*(0): "\(.*\)"$/\1/p'; }
"$SUBSCOPE" collect --model $M --input $P --sites blocks.1.mlp.hook_post --out "$TMP/st.h5" >/dev/null 2>&1
echo '{"name": "m", "site": "blocks.1.mlp.hook_post", "units": [1, 2], "mode": "mean"}' >"$TMP/mean.jsonl"
"$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/mean.jsonl" --stats "$TMP/st.h5" --out "$TMP/ms.h5" >/dev/null 2>&1
[ "$(sattr masks_path "$TMP/a.h5")" = "$MASKS" ] && [ "$(sattr masks_path "$TMP/ms.h5")" = "$TMP/mean.jsonl" ] &&
    [ "$(sattr stats_path "$TMP/ms.h5")" = "$TMP/st.h5" ] && [ "$(sattr keywords_path "$TMP/k.h5")" = "$TMP/kw.txt" ] &&
    ! h5dump -A "$TMP/b.h5" 2>/dev/null | grep -q 'masks_path\|stats_path\|keywords_path' &&
    pass "--masks, --stats and --keywords are recorded as masks_path, stats_path, keywords_path (and absent without them)" ||
    fail "masks_path, stats_path, keywords_path" "$(sattr masks_path "$TMP/ms.h5"), $(sattr stats_path "$TMP/ms.h5"), $(sattr keywords_path "$TMP/k.h5")"
# --stats that no mask reads was taken and never opened (a missing file passed): refused, as
# --keywords and --patch-from are when nothing uses them.
expect_fail "--stats without mean or relative-noise masks refused" "--stats is used by masks of mode mean and relative noise/negnoise only" \
    "$SUBSCOPE" ablate --model $M --input $P --mask 'blocks.1.mlp.hook_post[1]' --stats "$TMP/st.h5" --out "$TMP/snone.h5"
[ ! -e "$TMP/snone.h5" ] || fail "no output after the --stats refusal"
# A statistics file of a few KB can declare a dataset of 2^31 values whose chunks were never
# written: its count (one value) or mean (the site's width) is refused by size before anything
# is read (it was allocated, 16 GiB, and filled before the size was checked).
if python3 -c "import h5py" 2>/dev/null; then
    for ds in count mean; do
        cp "$TMP/st.h5" "$TMP/huge-$ds.h5"
        python3 -c 'import sys, h5py
g = h5py.File(sys.argv[1], "r+")["stats/blocks.1.mlp.hook_post"]
del g[sys.argv[2]]
g.create_dataset(sys.argv[2], shape=(1 << 31,), dtype="i8" if sys.argv[2] == "count" else "f8", chunks=(1 << 16,))' "$TMP/huge-$ds.h5" $ds
        expect_fail "a --stats $ds declaring 2^31 values is refused by its size" \
            "/stats/blocks.1.mlp.hook_post/$ds holds 2147483648 values, not the $([ $ds = count ] && echo 1 || echo 512) expected" \
            "$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/mean.jsonl" --stats "$TMP/huge-$ds.h5" --out "$TMP/huge.h5"
        [ ! -e "$TMP/huge.h5" ] || fail "no output after a refused --stats $ds"
    done
else pass "huge declared --stats datasets not tested: needs python3 with h5py"; fi
expect_fail "patch masks need --patch-from" "need --patch-from" "$SUBSCOPE" ablate --model $M --input $PC --masks "$TMP/pm.jsonl" --out "$TMP/x.h5"
expect_fail "--patch-from without patch masks" "mode patch only" "$SUBSCOPE" ablate --model $M --input $PC --patch-from $PK --mask 'blocks.1.mlp.hook_post[1]' --out "$TMP/x.h5"
head -2 $PK >"$TMP/short.jsonl"
expect_fail "--patch-from with fewer lines" "paired line by line" "$SUBSCOPE" ablate --model $M --input $PC --patch-from "$TMP/short.jsonl" --masks "$TMP/pm.jsonl" --out "$TMP/x.h5"
tl=$(SUBSCOPE_TIMING=1 "$SUBSCOPE" ablate --model $M --input $P --mask 'blocks.1.mlp.hook_post[1,2]' --mask 'blocks.0.attn.hook_z[head=1]' --out "$TMP/t.h5" 2>&1 >/dev/null | grep "timing:")
printf '%s\n' "$tl" | grep -Eq "^subscope ablate: timing: passes [0-9.]+ s \($(grep -c . $P) prompts, 2 masks\): clean forwards [0-9.]+ s, [1-9][0-9]* masked forwards [0-9.]+ s, the rest [0-9.]+ s; the first masked forward [0-9.]+ s; past the first batch of prompts 0.0000 s \(1 batches\)$" &&
    printf '%s\n' "$tl" | grep -Eq "^subscope: timing: setup [0-9.]+ s: backend [0-9.]+ s, model files [0-9.]+ s, prompts [0-9.]+ s, placing the weights [0-9.]+ s$" &&
    pass "SUBSCOPE_TIMING=1 times ablate's setup and passes" || fail "SUBSCOPE_TIMING=1 ablate" "got: $tl"
tl=$(SUBSCOPE_TIMING=1 "$SUBSCOPE" ablate --model $M --input $P --batch 1 --mask 'blocks.1.mlp.hook_post[1,2]' --out "$TMP/t.h5" 2>&1 >/dev/null | grep "timing: passes")
np=$(grep -c . $P)
pa=$(printf '%s\n' "$tl" | sed -nE 's/.*timing: passes ([0-9.]+) s.*/\1/p')
pf=$(printf '%s\n' "$tl" | sed -nE "s/.*past the first batch of prompts ([0-9.]+) s \($np batches\)$/\1/p")
[ -n "$pf" ] && awk -v a="$pa" -v f="$pf" 'BEGIN { exit !(f > 0 && f < a) }' &&
    pass "SUBSCOPE_TIMING=1: the passes past the first batch of prompts" || fail "ablate timing past the first batch" "got: $tl"
# A mask whose positions lie past every prompt changes nothing, and says so.
"$SUBSCOPE" ablate --model $M --input $P --mask 'blocks.1.mlp.hook_post[pos=120]' --out "$TMP/far.h5" >"$TMP/far.txt" 2>&1
grep -q "note: mask 'blocks.1.mlp.hook_post\[pos=120\]': its positions (from 120) lie past every prompt" "$TMP/far.txt" &&
    pass "a mask past every prompt is named" || fail "mask past every prompt" "$(head -c 400 "$TMP/far.txt")"
# On a terminal the progress counts prompt passes (a prompt clean or under one mask: 8 prompts x
# (1 + 2 masks) = 24); it called them forward passes, of which this run has 3 a batch.
if command -v script >/dev/null 2>&1; then
    out=$(script -qec "'$SUBSCOPE' ablate --model $M --input $P --mask 'blocks.1.mlp.hook_post[1]' --mask 'blocks.2.mlp.hook_post[2]' --out '$TMP/tty.h5'" \
        /dev/null 2>&1 | tr '\r' '\n')
    printf '%s\n' "$out" | grep -q "^  24/24 prompt passes " && pass "on a terminal: ablate's progress counts 24 prompt passes" ||
        fail "ablate's progress on a terminal" "$(printf '%s\n' "$out" | grep -a elapsed | tail -n 2)"
else
    pass "progress on a terminal not checked: no 'script' command here"
fi
# "answer" and "wrong" that begin with the same token (" congratulations" and " congress" both
# start with id 276 in this vocabulary): logitdiff scores first tokens only, so it would be 0
# whatever the model does; refused naming the line (before, a silent 0).
printf '%s\n' '{"text": "The cat says", "answer": " meow", "wrong": " woof"}' \
    '{"text": "The dog says", "answer": " congratulations", "wrong": " congress"}' >"$TMP/same_first.jsonl"
expect_fail "ablate: answer and wrong sharing their first token refused" 'same_first.jsonl:2: "answer" and "wrong" begin with the same token (id 276)' \
    "$SUBSCOPE" ablate --model $M --input "$TMP/same_first.jsonl" --mask 'blocks.1.mlp.hook_post[1]' --metrics logitdiff --out "$TMP/sf.h5"
[ ! -e "$TMP/sf.h5" ] && pass "ablate: no output after the refusal" || fail "ablate left an output" "$TMP/sf.h5"
# An "answer" of more than one token is scored by its first (" hot" is " h" + "ot" here): a note
# on stderr counts such values and names the first; none where every answer is one token.
"$SUBSCOPE" ablate --model $M --input $D/attribute/prompts.jsonl --mask 'blocks.1.mlp.hook_post[1]' --metrics logitdiff --out "$TMP/mt.h5" 2>"$TMP/mt.err" >/dev/null
grep -qF 'ablate: note: 1 "answer"/"wrong" value of '"$D"'/attribute/prompts.jsonl encodes to more than one token (the first: line 3, "answer" " hot", 2 tokens); logitdiff scores only the first token of each' "$TMP/mt.err" &&
    pass "ablate: a note names the answers of more than one token" || fail "ablate: multi-token answer note" "$(cat "$TMP/mt.err")"
"$SUBSCOPE" ablate --model $M --input $D/ablate/prompts.jsonl --mask 'blocks.1.mlp.hook_post[1]' --metrics logitdiff --out "$TMP/mt.h5" 2>"$TMP/mt.err" >/dev/null
! grep -q "note" "$TMP/mt.err" && pass "ablate: no such note when every answer is one token" || fail "ablate: unwanted note" "$(cat "$TMP/mt.err")"
# The table's mask names are padded by display columns: a CJK name (two columns a character)
# counted by characters pushed its row's later columns three columns right; a combining accent
# (no column) one left.
printf '%s\n' '{"name": "日本語", "site": "blocks.0.mlp.hook_post", "units": [1]}' \
    '{"name": "日本語テスト", "site": "blocks.0.mlp.hook_post", "units": [4]}' \
    '{"name": "ab", "site": "blocks.0.mlp.hook_post", "units": [2]}' \
    '{"name": "cafe\u0301", "site": "blocks.0.mlp.hook_post", "units": [3]}' >"$TMP/cjk_masks.jsonl"
out=$("$SUBSCOPE" ablate --model $M --input $P --masks "$TMP/cjk_masks.jsonl" --out "$TMP/cjk.h5" 2>/dev/null)
# (the widest, 日本語テスト, is 12 columns: the column is 12 wide, not its 6 characters, which cut it)
if printf '%s\n' "$out" | grep -q '^(clean)      all ' && printf '%s\n' "$out" | grep -q '^日本語       all ' &&
    printf '%s\n' "$out" | grep -q '^日本語テスト all ' &&
    printf '%s\n' "$out" | grep -q '^ab           all ' && printf '%s\n' "$out" | grep -q $'^cafe\xcc\x81         all '; then
    pass "ablate's table pads CJK and accented mask names by columns"
else fail "ablate's table with CJK mask names" "$(printf '%s\n' "$out" | sed -n '/^mask/,$p')"; fi
finish
