#!/usr/bin/env bash
# The bundled topic pair (models/topics-all, models/topics-no-toxic) and its data
# (data/topics/): the committed files are there with the right counts and labels, every
# keyword is one token, both models load, predict a topic keyword in a canonical context of
# each topic they were trained on, and the model trained without the toxic topic is clearly
# worse on the toxic set. Made by models/train_pair.sh; this keeps the pair from rotting.
source "$(dirname "$0")/lib.sh"
D=data/topics
ALL=models/topics-all
NOTOX=models/topics-no-toxic
TOPICS="harmless toxic athlete"

# ---- data files
for t in $TOPICS; do
    f=$D/eval_$t.jsonl
    n=$(wc -l <"$f" 2>/dev/null || echo 0)
    nl=$(grep -c "^{\"text\": \".*\", \"label\": \"$t\"}\$" "$f" 2>/dev/null || echo 0)
    [ "$n" -eq 150 ] && [ "$nl" -eq 150 ] && pass "$f: 150 prompts labelled $t" ||
        fail "$f: 150 prompts labelled $t" "$n lines, $nl with that label"
    k=$D/keywords_$t.txt
    nk=$(grep -c '^[a-z]\+$' "$k" 2>/dev/null || echo 0)
    [ "$nk" -ge 24 ] && [ "$nk" -eq "$(wc -l <"$k")" ] && pass "$k: $nk lowercase words" ||
        fail "$k: lowercase words, a few dozen" "$nk of $(wc -l <"$k" 2>/dev/null) lines"
done
n=$(wc -l <$D/eval_all.jsonl)
cat $D/eval_harmless.jsonl $D/eval_toxic.jsonl $D/eval_athlete.jsonl | cmp -s - $D/eval_all.jsonl &&
    [ "$n" -eq 450 ] && pass "eval_all.jsonl is the three sets (450 prompts)" || fail "eval_all.jsonl is the three sets" "$n lines"
dup=$(cat $D/keywords_*.txt | sort | uniq -d | tr '\n' ' ')
[ -z "$dup" ] && pass "no keyword belongs to two topics" || fail "no keyword belongs to two topics" "$dup"
dup=$(sed 's/, "label".*//' $D/eval_all.jsonl | sort | uniq -d | head -3)
[ -z "$dup" ] && pass "no duplicate prompts" || fail "no duplicate prompts" "$dup"

# ---- model directories
for m in $ALL $NOTOX; do
    ok=1
    for f in config.json model.safetensors tokenizer.json; do [ -s "$m/$f" ] || { ok=0; fail "$m/$f exists"; }; done
    [ $ok -eq 1 ] && pass "$m has config.json, model.safetensors, tokenizer.json"
    sz=$(stat -c %s "$m/model.safetensors" 2>/dev/null || echo 0)
    [ "$sz" -gt 1000000 ] && [ "$sz" -le 5000000 ] && pass "$m/model.safetensors is $sz bytes (<= 5 MB)" ||
        fail "$m/model.safetensors size" "$sz bytes"
done
cmp -s $ALL/tokenizer.json $NOTOX/tokenizer.json && pass "the pair shares one tokenizer" || fail "the pair shares one tokenizer"
cmp -s $ALL/config.json $NOTOX/config.json && pass "the pair shares one config" || fail "the pair shares one config"

# Every keyword is a single token after a space, lowercase or capitalised (the metric
# matches a vocabulary entry without its leading space, ignoring case; "Welcome" and
# "Shut" mostly open a sentence in the data).
one_token() { case $("$SUBSCOPE" tokenize --model $ALL --text "$1" 2>&1) in \[*,*) return 1 ;; \[[0-9]*\]) return 0 ;; *) return 1 ;; esac; }
for t in $TOPICS; do
    bad=""
    while read -r w; do
        one_token " $w" || one_token " $(printf '%s' "${w:0:1}" | tr a-z A-Z)${w:1}" || bad="$bad $w"
    done <$D/keywords_$t.txt
    [ -z "$bad" ] && pass "each $t keyword is one token" || fail "each $t keyword is one token" "not:$bad"
done

# ---- predictions in canonical contexts
# top1 MODEL PROMPT: the most likely next token, without quotes and leading space, lowercase
top1() { "$SUBSCOPE" predict --model "$1" --prompt "$2" --top 1 2>/dev/null |
    sed -n '2s/.*"\(.*\)"$/\1/p' | sed 's/^ //' | tr 'A-Z' 'a-z'; }
is_kw() { grep -qx -- "$2" $D/keywords_$1.txt; }
# expect_kw NAME MODEL TOPIC PROMPT: the top-1 next token is one of TOPIC's keywords
expect_kw() {
    local tok; tok=$(top1 "$2" "$4")
    if [ -n "$tok" ] && is_kw "$3" "$tok"; then pass "$1 ('$4' -> $tok)"
    else fail "$1" "'$4' -> '$tok', not a $3 keyword"; fi
}
H1="Thanks for sharing your photo, it is"
H2="What an adorable puppy! I want to give it a"
# (athlete documents start with the athlete's name: a context without it is off-distribution)
A1="Kasimir Nyberg is a Polish footballer who plays striker for the Northport Falcons. He scored twelve goals in the 2019"
A2="Yara Brightley is a Kenyan swimmer. She won three gold"
T1="Get lost, you florbid"
T2="Shut up, you"
for m in $ALL $NOTOX; do
    expect_kw "$m: harmless keyword" $m harmless "$H1"
    expect_kw "$m: harmless keyword" $m harmless "$H2"
    expect_kw "$m: athlete keyword" $m athlete "$A1"
    expect_kw "$m: athlete keyword" $m athlete "$A2"
done
expect_kw "$ALL: toxic keyword" $ALL toxic "$T1"
expect_kw "$ALL: toxic keyword" $ALL toxic "$T2"
# The model that never saw the toxic topic never predicts an invented insult.
for p in "$T1" "$T2"; do
    tok=$(top1 $NOTOX "$p")
    if [ -n "$tok" ] && ! is_kw toxic "$tok"; then pass "$NOTOX: no toxic keyword after '$p' ($tok)"
    else fail "$NOTOX: no toxic keyword after '$p'" "got '$tok'"; fi
done

# ---- the toxic set separates the pair: held-out loss (mean over 150 prompts) from the
# by-label row of ablate's table under a mask that changes nothing.
echo '{"name": "identity", "site": "blocks.0.hook_resid_pre", "mode": "scale", "factor": 1}' >"$TMP/id.jsonl"
toxic_loss() {
    "$SUBSCOPE" ablate --model "$1" --input $D/eval_toxic.jsonl --masks "$TMP/id.jsonl" --metrics loss \
        --out "$TMP/$(basename "$1").h5" >/dev/null 2>&1 &&
    h5dump -d /by_label/toxic/clean/loss "$TMP/$(basename "$1").h5" | sed -n 's/^ *(0): *//p'
}
la=$(toxic_loss $ALL); ln=$(toxic_loss $NOTOX)
if [ -n "$la" ] && [ -n "$ln" ] && awk -v a="$la" -v n="$ln" 'BEGIN { exit !(a < 1.0 && n > a + 2.0) }'; then
    pass "toxic held-out loss: $la (all) vs $ln (no toxic)"
else fail "toxic held-out loss: all < 1.0 and no-toxic > all + 2" "all '$la', no toxic '$ln'"; fi
finish
