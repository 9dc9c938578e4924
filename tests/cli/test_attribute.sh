#!/usr/bin/env bash
# attribute: gradients at sites against PyTorch autograd (tests/gen/gen_attr_goldens.py),
# exact properties (atp with clean = corrupt is 0, --recompute changes nothing), the
# table, and bad input.
source "$(dirname "$0")/lib.sh"
D=${SS_TEST_DATA:-tests/data}
H5CMP=${TOOLBIN}h5cmp
M=models/tiny-gpt2
P=$D/patch/clean.jsonl
K=$D/patch/corrupt.jsonl

# A dataset's values at full precision (first DATA block).
vals() { h5dump -y -m '%.9g' -d "$1" "$2" 2>/dev/null | awk '/DATA {/{f=1;next} f&&/}/{exit} f' | tr -d ' \n'; }

# Goldens: PyTorch autograd on the same prompts (tests/gen/gen_attr_goldens.py), fp32 and fp64.
# Tolerance |a-e| <= 1e-5 + 1e-4|e|: attributions are O(1e-3..3); the fp32 reference itself is
# within 3.5e-6 of the fp64 one, and the engine's fp32 forward within ~2e-6 of PyTorch's.
G=$D/golden
golden() { # NAME then the attribute arguments
    local name=$1; shift
    if "$SUBSCOPE" attribute "$@" --out "$TMP/$name.h5" >/dev/null 2>"$TMP/err"; then
        for ref in "$G/$name.h5" "$G/$name-f64.h5"; do
            [ -e "$ref" ] || continue
            if res=$("$H5CMP" --quiet --atol 1e-5 --rtol 1e-4 "$ref" "$TMP/$name.h5" 2>&1); then
                pass "$(basename "$ref" .h5) equals autograd"
            else fail "$(basename "$ref" .h5)" "$(printf '%s' "$res" | head -4)"; fi
        done
    else fail "$name runs" "$(cat "$TMP/err")"; fi
}
for r in prefix-f32 noprefix-odd-untied f16-sharded bf16; do
    golden attr-$r-loss-grad --model $D/models/$r --input $D/attribute/$r.jsonl --sites '*' --metric loss --method grad
done
# The Llama family: gradients at every per-token site (hook_rot_q/k, hook_pre_linear included)
# against torch.autograd through transformers' own modules; measured max abs error 3.2e-6.
for r in llama-gqa-llama3 qwen2-bias-tied llama-hd6-bias mistral-small; do
    golden attr-$r-loss-grad --model $D/models/$r --input $D/golden/$r.jsonl --sites '*' --metric loss --method grad
done
A=$D/attribute
golden attr-tiny-logitdiff-gradxact --model $M --input $A/prompts.jsonl --sites 'hook_embed,hook_pos_embed,blocks.0.attn.*,blocks.2.mlp.hook_post' --metric logitdiff --method gradxact
golden attr-tiny-logprob-grad --model $M --input $A/prompts.jsonl --sites 'blocks.3.*,ln_final.hook_normalized' --metric logprob --method grad
golden attr-tiny-logitdiff-atp --model $M --input $A/prompts.jsonl --corrupt $A/corrupt.jsonl --sites 'hook_embed,hook_pos_embed,blocks.1.hook_*,blocks.2.attn.*' --metric logitdiff --method atp
golden attr-tiny-loss-grad-positions --model $M --input $A/prompts.jsonl --sites 'blocks.*.mlp.hook_post,blocks.*.attn.hook_z' --metric loss --method grad --reduce positions
# show: the top units per site from the file, as attribute's own table ranked them (heads too),
# for the unreduced file and one summed over positions
for red in none positions; do
    "$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.1.attn.hook_z,blocks.2.mlp.hook_post' --metric logitdiff \
        --reduce $red --out "$TMP/show-$red.h5" >"$TMP/table-$red" 2>&1
    "$SUBSCOPE" show --file "$TMP/show-$red.h5" >"$TMP/show-$red" 2>&1
    want=$(awk '$1 ~ /^blocks\./ && NF > 3 {print $1, $2, $4}' "$TMP/table-$red")
    got=$(awk '/^attributions/{f=1; next} f && $1 ~ /^blocks\./ {sub(":", "", $1); print $1, $2, $4}' "$TMP/show-$red")
    [ -n "$want" ] && [ "$want" = "$got" ] && pass "show ranks the units as attribute's table (--reduce $red)" ||
        fail "show's attributions (--reduce $red)" "table: $want; show: $got"
done
golden attr-tiny-logprob-gradxact-prompts --model $M --input $A/prompts.jsonl --sites 'blocks.*.hook_resid_post' --metric logprob --method gradxact --reduce prompts
# --reduce prompts where no prompt with a metric reaches a position (one-token prompts: NaN loss):
# a sum over no prompt is NaN, not 0; a 3-token prompt beside them makes every position's sum finite
printf '{"text": " the"}\n{"text": " a"}\n' >"$TMP/one-tok.jsonl"
printf '{"text": " the"}\n{"text": "Hello"}\n' >"$TMP/mixed-tok.jsonl"
for f in one-tok mixed-tok; do
    "$SUBSCOPE" attribute --model $M --input "$TMP/$f.jsonl" --sites blocks.0.mlp.hook_post --reduce prompts \
        --out "$TMP/$f.h5" >/dev/null 2>"$TMP/err" || fail "--reduce prompts on $f runs" "$(cat "$TMP/err")"
done
v=$(vals /attr/blocks.0.mlp.hook_post "$TMP/one-tok.h5")
[ -n "$v" ] && [ "$(printf '%s' "$v" | tr ',' '\n' | grep -vc '^nan$')" = 0 ] &&
    pass "--reduce prompts: NaN where every prompt's metric is NaN" || fail "--reduce prompts of NaN metrics" "$(printf '%s' "$v" | head -c 200)"
"$SUBSCOPE" attribute --model $M --input "$TMP/one-tok.jsonl" --sites blocks.0.mlp.hook_post --out "$TMP/one-none.h5" >"$TMP/table" 2>&1
grep -q "^blocks.0.mlp.hook_post *(no values: every prompt's loss is NaN)$" "$TMP/table" &&
    pass "the table says there are no values when every metric is NaN (not units of score +0)" || fail "table of NaN metrics" "$(cat "$TMP/table")"
v=$(vals /attr/blocks.0.mlp.hook_post "$TMP/mixed-tok.h5")
[ -n "$v" ] && ! printf '%s' "$v" | grep -q nan && pass "--reduce prompts: the prompts with a metric still sum" ||
    fail "--reduce prompts beside a NaN metric" "$(printf '%s' "$v" | head -c 200)"
golden attr-tiny-logitdiff-ig16 --model $M --input $A/prompts.jsonl --sites 'blocks.*.mlp.hook_post,blocks.1.hook_resid_pre' --metric logitdiff --method ig:16

# atp with the clean prompts as their own corrupt twins: every attribution is exactly 0.
if "$SUBSCOPE" attribute --model $M --input $P --corrupt $P --sites '*' --metric logitdiff --method atp --reduce positions --out "$TMP/z.h5" >/dev/null 2>"$TMP/err"; then
    v=$(for s in blocks.0.hook_resid_pre blocks.2.attn.hook_z blocks.3.mlp.hook_post ln_final.hook_normalized; do vals "/attr/$s" "$TMP/z.h5"; done)
    [ -n "$v" ] && [ "$(printf '%s' "$v" | tr -d '0,-')" = "" ] && pass "atp with corrupt = clean gives exactly 0" || fail "atp with corrupt = clean gives exactly 0" "$(printf '%s' "$v" | head -c 200)"
else fail "atp runs" "$(cat "$TMP/err")"; fi

# --recompute: the same gradients bit for bit.
"$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.*' --metric loss --method grad --out "$TMP/a.h5" >/dev/null 2>&1
"$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.*' --metric loss --method grad --recompute --out "$TMP/b.h5" >/dev/null 2>&1
expect_ok "--recompute gives bit-identical gradients" "$H5CMP" --quiet --atol 0 --rtol 0 --only /attr --only /metric "$TMP/a.h5" "$TMP/b.h5"

# Batching does not change the result beyond rounding.
"$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.1.*' --metric logitdiff --batch 1 --out "$TMP/b1.h5" >/dev/null 2>&1
"$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.1.*' --metric logitdiff --batch 3 --out "$TMP/b3.h5" >"$TMP/table" 2>&1
expect_ok "batch 1 equals batch 3" "$H5CMP" --quiet --atol 1e-6 --rtol 1e-4 --only /attr --only /metric "$TMP/b1.h5" "$TMP/b3.h5"
grep -q "^blocks.1.mlp.hook_post" "$TMP/table" && grep -q "top 10 units per site" "$TMP/table" && pass "table of top units" || fail "table of top units" "$(head -5 "$TMP/table")"
# --top beyond a site's units: the table says the number it keeps ("top 1000 units" it said of
# tiny-gpt2's 128-unit hook_z and 512-unit MLP), and that a narrower site shows all of its own.
"$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.1.attn.hook_z,blocks.1.mlp.hook_post' --top 1000 --out "$TMP/t1k.h5" >"$TMP/t1k" 2>&1
"$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.1.attn.hook_z' --top 1000 --out "$TMP/t1k.h5" >"$TMP/t1k1" 2>&1
n=$(awk '$1 == "blocks.1.attn.hook_z" {print (NF - 1) / 2}' "$TMP/t1k")
grep -qF "top 512 units per site (all the units of a site with fewer) by |sum of attributions over prompts and positions| (the sum shown):" "$TMP/t1k" && [ "$n" = 128 ] &&
    grep -qF "all 128 units per site by |sum of attributions over prompts and positions| (the sum shown):" "$TMP/t1k1" && pass "--top 1000: the table names the units it keeps" ||
    fail "--top beyond the sites' units" "$(grep units "$TMP/t1k" "$TMP/t1k1")" "hook_z's row: $n units"
h5ls -r "$TMP/b3.h5" | grep -q "/attr/blocks.1.attn.hook_q Dataset {4, 10, 4, 32}" && pass "q/k/v/z keep their [head, d_head] shape" || fail "q shape" "$(h5ls -r "$TMP/b3.h5" | grep hook_q)"
h5ls -r "$TMP/b3.h5" | grep -q "hook_pattern" && fail "a glob leaves hook_pattern out" || pass "a glob leaves hook_pattern out"

# IG with a mean baseline from a collect file.
"$SUBSCOPE" collect --model $M --input $P --sites 'blocks.2.mlp.hook_post' --stats mean --out "$TMP/st.h5" >/dev/null 2>&1
if "$SUBSCOPE" attribute --model $M --input $P --sites blocks.2.mlp.hook_post --metric logitdiff --method ig:64 --stats "$TMP/st.h5" --out "$TMP/ig.h5" >/dev/null 2>"$TMP/err"; then
    c=$(h5dump -a /ig/blocks.2.mlp.hook_post/completeness_max_rel_error "$TMP/ig.h5" | awk '/\(0\)/{print $2}')
    awk -v c="$c" 'BEGIN{exit !(c != "" && c < 0.01)}' && pass "IG from the mean baseline, 64 steps: completeness within 1% ($c)" || fail "IG completeness" "$c"
else fail "IG with --stats runs" "$(cat "$TMP/err")"; fi
grep -q warning "$TMP/err" && fail "no warning for a stats file of the same model" "$(cat "$TMP/err")" ||
    pass "no warning for a stats file of the same model"
# The same widths from another model (the topic model: another vocabulary and context): warned, not refused.
if "$SUBSCOPE" attribute --model models/topics-all --input $P --sites blocks.2.mlp.hook_post --metric logitdiff --method ig:4 --stats "$TMP/st.h5" --out "$TMP/ig2.h5" >/dev/null 2>"$TMP/err" &&
    grep -q "warning: $TMP/st.h5 was collected from $M, whose config is not that of models/topics-all" "$TMP/err"; then
    pass "a stats file of another model is named in a warning"
else fail "a stats file of another model is named in a warning" "$(cat "$TMP/err")"; fi

# Bad input.
expect_fail "unknown method" "unknown --method 'saliency'" "$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.0.*' --method saliency --out "$TMP/x.h5"
expect_fail "ig with zero steps" "1..100000 steps" "$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.0.*' --method ig:0 --out "$TMP/x.h5"
for v in 'ig:+4' 'ig: 4' 'ig:4 '; do # digits only: strtol took the space or '+'
    expect_fail "--method '$v' refused" "1..100000 steps, got '$v'" "$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.0.*' --method "$v" --out "$TMP/x.h5"
done
expect_fail "atp without --corrupt" "needs --corrupt" "$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.0.*' --method atp --out "$TMP/x.h5"
expect_fail "unknown metric, naming --metric" "--metric: unknown metric 'acc'" "$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.0.*' --metric acc --out "$TMP/x.h5"
expect_fail "hook_pattern named" "blocks.1.attn.hook_pattern has no per-token vector" "$SUBSCOPE" attribute --model $M --input $P --sites blocks.1.attn.hook_pattern --out "$TMP/x.h5"
expect_fail "hook_pattern named beside a glob" "blocks.0.attn.hook_pattern has no per-token vector" "$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.0.attn.hook_pattern,blocks.1.mlp.*' --out "$TMP/x.h5"
expect_fail "unknown site" "blocks.9" "$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.9.mlp.hook_post' --out "$TMP/x.h5"
printf '{"text": "The cat says"}\n' >"$TMP/noans.jsonl"
expect_fail "logprob without an answer" "noans.jsonl:1: the logprob metric needs \"answer\"" "$SUBSCOPE" attribute --model $M --input "$TMP/noans.jsonl" --sites 'blocks.0.*' --metric logprob --out "$TMP/x.h5"
head -2 $K >"$TMP/short.jsonl"
expect_fail "corrupt file with fewer lines" "paired line by line" "$SUBSCOPE" attribute --model $M --input $P --corrupt "$TMP/short.jsonl" --sites 'blocks.0.*' --method atp --out "$TMP/x.h5"
expect_fail "--stats without ig" "used by --method ig only" "$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.0.*' --stats "$TMP/st.h5" --out "$TMP/x.h5"
expect_fail "ig baseline for a site the stats file lacks" "has no /stats/blocks.0.mlp.hook_post/mean" "$SUBSCOPE" attribute --model $M --input $P --sites blocks.0.mlp.hook_post --method ig:4 --stats "$TMP/st.h5" --out "$TMP/x.h5"
[ ! -e "$TMP/x.h5" ] && pass "failed runs write no file" || fail "failed runs write no file"
# SUBSCOPE_TIMING=1: first and later batches timed apart, their prompts adding up to the input's
n=$(grep -c . $P)
# --compress: raw by default, shuffle + deflate at the level asked; the same values either way
filters() { h5dump -p -H -d /attr/blocks.1.mlp.hook_post "$1" 2>/dev/null | grep -E "SHUFFLE|DEFLATE" | tr -s ' \n' ' '; }
"$SUBSCOPE" attribute --model $M --input $P --sites blocks.1.mlp.hook_post --out "$TMP/z0.h5" >/dev/null 2>&1
"$SUBSCOPE" attribute --model $M --input $P --sites blocks.1.mlp.hook_post --compress 6 --out "$TMP/z6.h5" >/dev/null 2>&1
f0=$(filters "$TMP/z0.h5") f6=$(filters "$TMP/z6.h5")
if [ -z "$f0" ] && printf '%s' "$f6" | grep -q "SHUFFLE" && printf '%s' "$f6" | grep -q "DEFLATE { LEVEL 6 }"; then
    expect_ok "--compress 6 deflates /attr at level 6 (default raw), same values" "$H5CMP" --quiet --atol 0 --rtol 0 \
        "$TMP/z0.h5" "$TMP/z6.h5"
else fail "--compress" "default: '$f0'; --compress 6: '$f6'"; fi
expect_fail "--compress out of range" "--compress" "$SUBSCOPE" attribute --model $M --input $P --sites blocks.1.mlp.hook_post \
    --compress 10 --out "$TMP/z10.h5"
tl=$(SUBSCOPE_TIMING=1 "$SUBSCOPE" attribute --model $M --input $P --sites blocks.0.mlp.hook_post --batch 2 --out "$TMP/t.h5" 2>&1 >/dev/null | grep "timing:")
if printf '%s' "$tl" | grep -Eq "^subscope attribute: timing: first batch [0-9.]+ s \(2 prompts\), later batches [0-9.]+ s \($((n - 2)) prompts\)$"; then
    pass "SUBSCOPE_TIMING=1 times attribute's first batch and the later ones"
else fail "SUBSCOPE_TIMING=1 attribute" "got: $tl"; fi
# "answer" and "wrong" that begin with the same token (" congratulations" and " congress" both
# start with id 276 in this vocabulary): logitdiff scores first tokens only, so it would be 0
# whatever the model does; refused naming the line (before, a silent 0).
printf '%s\n' '{"text": "The cat says", "answer": " meow", "wrong": " woof"}' \
    '{"text": "The dog says", "answer": " congratulations", "wrong": " congress"}' >"$TMP/same_first.jsonl"
expect_fail "attribute: answer and wrong sharing their first token refused" 'same_first.jsonl:2: "answer" and "wrong" begin with the same token (id 276)' \
    "$SUBSCOPE" attribute --model $M --input "$TMP/same_first.jsonl" --sites blocks.1.mlp.hook_post --metric logitdiff --out "$TMP/sf.h5"
[ ! -e "$TMP/sf.h5" ] && pass "attribute: no output after the refusal" || fail "attribute left an output" "$TMP/sf.h5"
# An "answer" of more than one token is scored by its first (" hot" is " h" + "ot" here): a note
# on stderr counts such values and names the first; none where every answer is one token.
"$SUBSCOPE" attribute --model $M --input $D/attribute/prompts.jsonl --sites blocks.1.mlp.hook_post --metric logprob --out "$TMP/mt.h5" 2>"$TMP/mt.err" >/dev/null
grep -qF 'attribute: note: 1 "answer"/"wrong" value of '"$D"'/attribute/prompts.jsonl encodes to more than one token (the first: line 3, "answer" " hot", 2 tokens); logprob scores only the first token of each' "$TMP/mt.err" &&
    pass "attribute: a note names the answers of more than one token" || fail "attribute: multi-token answer note" "$(cat "$TMP/mt.err")"
"$SUBSCOPE" attribute --model $M --input $D/ablate/prompts.jsonl --sites blocks.1.mlp.hook_post --metric logitdiff --out "$TMP/mt.h5" 2>"$TMP/mt.err" >/dev/null
! grep -q "note" "$TMP/mt.err" && pass "attribute: no such note when every answer is one token" || fail "attribute: unwanted note" "$(cat "$TMP/mt.err")"
# show reads an attribute file one prompt at a time over every prompt the file declares (here
# 8000 of them, 4 s): its progress goes to stderr where that is a terminal (cli_progress; before,
# nothing for the whole read), nothing elsewhere; Ctrl-C ends it at once.
"${TOOLBIN}h5fixture" "$TMP/big.h5" attrbig
"$SUBSCOPE" show "$TMP/big.h5" >"$TMP/big.out" 2>"$TMP/big.err"
rc=$?
[ $rc = 0 ] && [ ! -s "$TMP/big.err" ] && grep -qF "blocks.0.mlp.hook_post:  2 -5  3 -4  1 -1.75  0 +1.5" "$TMP/big.out" &&
    pass "show of 8000 declared prompts: the summary, and no progress where stderr is a file" ||
    fail "show of a large attribute file" "exit $rc: $(tail -n 2 "$TMP/big.err" "$TMP/big.out")"
if command -v script >/dev/null 2>&1; then
    out=$(script -qec "'$SUBSCOPE' show '$TMP/big.h5'" /dev/null 2>&1 | tr '\r' '\n')
    if printf '%s\n' "$out" | grep -qE '^  [0-9]+/8000 attribution rows read ' &&
        printf '%s\n' "$out" | grep -qE '^  8000/8000 attribution rows read  [0-9.]+/s  [0-9]+s elapsed' &&
        printf '%s\n' "$out" | grep -qF "blocks.0.mlp.hook_post:  2 -5  3 -4  1 -1.75  0 +1.5"; then
        pass "show on a terminal: the attribution rows read as it goes, and the summary"
    else fail "show's progress on a terminal" "$(printf '%s\n' "$out" | tail -n 4)"; fi
else
    pass "show's progress not checked: no script(1) for a terminal"
fi
set -m # its own process group, as a shell gives a foreground job: SIGINT is not ignored
"$SUBSCOPE" show "$TMP/big.h5" >/dev/null 2>&1 &
pid=$!
set +m
sleep 0.2
t0=$(date +%s%N)
kill -INT $pid
wait $pid
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
[ $rc = 130 ] && [ $ms -lt 1000 ] && pass "Ctrl-C (SIGINT) ends show's read at once ($ms ms, exit 130)" ||
    fail "Ctrl-C ends show" "exit $rc (want 130) after $ms ms"
# An /attr dataset declaring far more than it stores was never written (attribute writes every
# row, NaN past a prompt's end): show refuses it naming file and dataset, before reading a row
# (before, it read all 100000 declared prompts, fill values summed: 400000 took 93 s).
"${TOOLBIN}h5fixture" "$TMP/unwritten.h5" attrunwritten
expect_fail "show: an /attr dataset never written is refused" \
    "$TMP/unwritten.h5: /attr/blocks.0.mlp.hook_post declares 409600000 bytes but stores" \
    timeout 20 "$SUBSCOPE" show "$TMP/unwritten.h5"
# show failing partway through its progress (the second /attr dataset has the wrong axes, found
# after the first's 8000 rows): the progress line is ended before the error, which starts its own
# line (before, it ran on after "... elapsed").
"${TOOLBIN}h5fixture" "$TMP/late.h5" attrlate
if command -v script >/dev/null 2>&1; then
    out=$(script -qec "'$SUBSCOPE' show '$TMP/late.h5' >/dev/null" /dev/null 2>&1 | tr '\r' '\n')
    if printf '%s\n' "$out" | grep -qE '^  [0-9]+/8003 attribution rows read ' &&
        printf '%s\n' "$out" | grep -qF "subscope show: error: $TMP/late.h5: /attr/blocks.1.mlp.hook_post has 1 axes" &&
        printf '%s\n' "$out" | grep -qE '^subscope show: error: '; then
        pass "show failing partway: the progress line ends before the error"
    else fail "show's error after its progress" "$(printf '%s\n' "$out" | tail -n 2 | cat -A)"; fi
    # the line ended before the error counts the rows truly read (the first dataset's 8000), not
    # the last throttled count (before: e.g. 7840/8003)
    last=$(printf '%s\n' "$out" | grep -E '^  [0-9]+/8003 attribution rows read ' | tail -n 1)
    case "$last" in
    "  8000/8003 attribution rows read "*) pass "show failing partway: its last progress line counts the 8000 rows read" ;;
    *) fail "show's last count before the error" "$(printf '%s' "$last" | cat -A)" ;;
    esac
else
    pass "show's error after progress not checked: no script(1) for a terminal"
fi
finish
