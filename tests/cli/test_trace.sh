#!/usr/bin/env bash
# trace: per-position predictions and sub-model activity / attribution / ablation effect,
# cross-checked against `attribute` and `forward`, and bad input.
source "$(dirname "$0")/lib.sh"
M=models/tiny-gpt2
H5CMP=${TOOLBIN}h5cmp
PROMPT="The cow lives on a farm. The cow says"
printf '%s\n' '{"name": "mlp1_a", "site": "blocks.1.mlp.hook_post", "units": [10, 20, 30, 40, 50]}' \
    '{"name": "z2_head1", "sites": [{"site": "blocks.2.attn.hook_z", "heads": [1]}], "mode": "scale", "factor": 0.5}' \
    '{"name": "identity", "site": "blocks.0.hook_resid_pre", "mode": "scale", "factor": 1}' >"$TMP/sm.jsonl"
vals() { h5dump -y -m '%.9g' -d "$1" "$2" 2>/dev/null | awk '/DATA {/{f=1;next} f&&/}/{exit} f' | tr -d ' \n'; }
last() { printf '%s' "$1" | tr ',' '\n' | tail -n 1; }

if "$SUBSCOPE" trace --model $M --prompt "$PROMPT" --answer " moo" --submodels "$TMP/sm.jsonl" --out "$TMP/t.h5" >"$TMP/table" 2>"$TMP/err"; then
    pass "trace runs"
else fail "trace runs" "$(cat "$TMP/err")"; fi
# The attribution sums only the positions a mask names (FORMAT.md): the table and --help said
# "at positions <= this one" and "at this and earlier positions" and no more.
grep -qF "at positions <= this one (and among" "$TMP/table" && grep -qF "its mask's positions, where it names some)" "$TMP/table" &&
    "$SUBSCOPE" trace --help | grep -qF "(those among the mask's \"positions\", where it names some)" &&
    pass "table and --help: the attribution is within the mask's positions" || fail "positions in the table's and --help's attribution" "$(sed -n 3p "$TMP/table")"
# --stats is read for relative-noise masks' stds too: --help said "means for mean-mode masks" only.
"$SUBSCOPE" trace --help | grep -qF "stds (the cov's diagonal) for relative-noise masks" &&
    grep -qF 'unit standard deviations (the diagonal of `cov`) of `relative` `noise`/`negnoise` masks' "$(dirname "$0")/../../docs/FORMAT.md" &&
    pass "--help and FORMAT.md: --stats gives relative-noise masks their stds" || fail "--stats in trace --help" "$("$SUBSCOPE" trace --help | grep -F -- --stats)"
grep -q "' says' *' moo'" "$TMP/table" && pass "table: token, prediction (--answer at the last position)" || fail "table" "$(tail -3 "$TMP/table")"
attr() { h5dump -a "/$1" "$2" 2>/dev/null | sed -n 's/.*(0): "\(.*\)"/\1/p'; }
# auto: 10 positions and 3 sub-models: forward mode (10 x (1 + 2 x 3) rows) is cheaper than the
# prefixes (3 x 55 rows); with 1 position the prefixes (3 rows) are.
[ "$(attr attribution_pass "$TMP/t.h5")" = forward ] && pass "auto runs the forward-mode pass on 10 positions (root attribute attribution_pass)" ||
    fail "attribution_pass of a 10-token trace" "$(attr attribution_pass "$TMP/t.h5")"
"$SUBSCOPE" trace --model $M --prompt "The" --submodels "$TMP/sm.jsonl" --out "$TMP/one.h5" >/dev/null 2>&1
[ "$(attr attribution_pass "$TMP/one.h5")" = prefixes ] && pass "auto runs the prefixes on 1 position" ||
    fail "attribution_pass of a 1-token trace" "$(attr attribution_pass "$TMP/one.h5")"
expect_fail "an unknown --attribution-pass is named" "--attribution-pass: unknown value 'sideways' (expected auto, forward or prefixes)" \
    "$SUBSCOPE" trace --model $M --prompt "$PROMPT" --submodels "$TMP/sm.jsonl" --attribution-pass sideways
"$SUBSCOPE" trace --help | grep -qF -- "--attribution-pass P" && pass "--help names --attribution-pass" || fail "--help lacks --attribution-pass"

# Forward mode = the prefixes' backward passes, per position, for sub-models over every kind of
# per-token site (some units; all units at some positions), on the bundled GPT-2 and on a random
# Llama-family model with grouped-query attention and rotary q/k (rot_q/rot_k, pre_linear), and
# with several sites and positions at once. Tolerance 2e-5 + 1e-4 relative: the two sum the
# same products in fp32 in different orders, a sum that can cancel to a value far smaller than
# its terms (measured: at most 4e-6 on values up to 1.6 under OpenBLAS's Prescott kernels; 7.4e-6
# on -0.0616, a Llama rot_k sub-model, under its Cooperlake ones, past 1e-6 + 1e-4 relative).
sites_jsonl() { # SITE...: per site a sub-model of 5 units and one of all units at positions 0, 2, 5
    local s
    for s in "$@"; do
        printf '{"name": "u_%s", "site": "%s", "units": [1, 3, 4, 9, 17]}\n' "$s" "$s"
        printf '{"name": "p_%s", "site": "%s", "positions": [0, 2, 5]}\n' "$s" "$s"
    done
    printf '{"name": "multi", "sites": [{"site": "blocks.0.attn.hook_q", "heads": [1]}, {"site": "blocks.0.mlp.hook_post", "units": [5, 6, 7]}, {"site": "blocks.1.hook_resid_pre"}], "positions": [1, 3]}\n'
}
COMMON="blocks.0.hook_resid_pre blocks.0.ln1.hook_normalized blocks.0.attn.hook_q blocks.0.attn.hook_k blocks.0.attn.hook_v
    blocks.1.attn.hook_z blocks.0.hook_attn_out blocks.1.hook_resid_mid blocks.1.ln2.hook_normalized blocks.0.mlp.hook_pre
    blocks.1.mlp.hook_post blocks.0.hook_mlp_out blocks.1.hook_resid_post ln_final.hook_normalized hook_embed"
sites_jsonl $COMMON hook_pos_embed >"$TMP/all_gpt2.jsonl"
LL=$TMP/llama
"${TOOLBIN}mkmodel" --out "$LL" --family llama --layers 2 --d 64 --heads 4 --kv-heads 2 --vocab 50257 --std 0.2 --seed 3 >/dev/null &&
    cp "${SS_TEST_DATA:-tests/data}/gpt2-tokenizer/tokenizer.json" "$LL/"
sites_jsonl $COMMON blocks.0.attn.hook_rot_q blocks.0.attn.hook_rot_k blocks.1.mlp.hook_pre_linear >"$TMP/all_llama.jsonl"
for c in "$M:all_gpt2:GPT-2" "$LL:all_llama:Llama"; do
    mdl=${c%%:*} rest=${c#*:}; js=${rest%%:*} fam=${rest#*:}
    ok=1
    for p in forward prefixes; do
        "$SUBSCOPE" trace --model "$mdl" --prompt "$PROMPT moo" --submodels "$TMP/$js.jsonl" --attribution-pass $p \
            --out "$TMP/$js-$p.h5" >/dev/null 2>"$TMP/err" && [ "$(attr attribution_pass "$TMP/$js-$p.h5")" = $p ] || ok=0
    done
    n=$(grep -c . "$TMP/$js.jsonl")
    if [ $ok = 1 ] && out=$("$H5CMP" --atol 2e-5 --rtol 1e-4 --only /submodels "$TMP/$js-prefixes.h5" "$TMP/$js-forward.h5") &&
        [ "$(printf '%s\n' "$out" | grep -c '/attribution .* ok$')" = "$n" ]; then
        pass "$fam: forward-mode attribution = the prefixes' ($n sub-models over every site kind; 2e-5 + 1e-4 relative)"
    else fail "$fam: forward mode vs prefixes" "$(cat "$TMP/err"; printf '%s\n' "$out" | grep -v ' ok$' | head -n 5)"; fi
done

# With 16-bit weights each pass rounds its own products' inputs (the tangents forward, the
# gradients backward) to bfloat16, so the two agree to that rounding, not to fp32's
# (docs/FORMAT.md): on the bundled GPT-2 with --dtype bfloat16 (CPU), measured at most 0.38% of
# a sub-model's largest attribution apart (0.43% on the random Llama); bound 1%.
printf '%s\n' '{"name": "mlp", "site": "blocks.1.mlp.hook_post", "units": [10, 20, 30]}' \
    '{"name": "z", "site": "blocks.2.attn.hook_z", "heads": [1], "positions": [2, 6]}' \
    '{"name": "resid", "site": "blocks.1.hook_resid_mid"}' >"$TMP/bf.jsonl"
BP="The cow lives on a farm. The cow says moo, and the dog sleeps by the door"
ok=1 worst=""
for p in forward prefixes; do
    "$SUBSCOPE" trace --model $M --prompt "$BP" --submodels "$TMP/bf.jsonl" --dtype bfloat16 --device cpu \
        --attribution-pass $p --out "$TMP/bf-$p.h5" >/dev/null 2>"$TMP/err" || ok=0
done
for k in mlp z resid; do
    [ $ok = 1 ] || break
    r=$(paste -d ' ' <(vals /submodels/$k/attribution "$TMP/bf-forward.h5" | tr ',' '\n') \
        <(vals /submodels/$k/attribution "$TMP/bf-prefixes.h5" | tr ',' '\n') |
        awk '{d = $1 - $2; if (d < 0) d = -d; a = $2 < 0 ? -$2 : $2; if (d > md) md = d; if (a > ma) ma = a; n++}
             END {if (n < 20 || ma == 0) print "none"; else printf "%.2e", md / ma}')
    worst="$worst $k:$r"
    awk -v r="$r" 'BEGIN {exit !(r != "none" && r + 0 <= 0.01)}' || ok=0
done
[ $ok = 1 ] && pass "--dtype bfloat16: forward mode and the prefixes within 1% of each sub-model's largest attribution (max |diff| / max |value|:$worst)" ||
    fail "--dtype bfloat16: forward mode vs prefixes" "$worst" "$(tail -n 2 "$TMP/err")"

d=$(vals /submodels/identity/ablation_delta_logprob "$TMP/t.h5")
[ -n "$d" ] && [ "$(printf '%s' "$d" | tr -d '0,-')" = "" ] && pass "a factor-1 sub-model changes nothing (delta exactly 0)" || fail "factor-1 delta" "$d"

# --answer's tracked token is the first of the tokenizer's encoding (ss_answer_token_id, as a prompt
# file's "answer"), with a leading space and non-ASCII.
for a in " moo" " naïve" "été"; do
    want=$("$SUBSCOPE" tokenize --model $M --text "$a" | tr -d '[]' | cut -d, -f1)
    "$SUBSCOPE" trace --model $M --prompt "$PROMPT" --answer "$a" --submodels "$TMP/sm.jsonl" --out "$TMP/ans.h5" >/dev/null 2>"$TMP/err"
    got=$(last "$(vals /prediction/token "$TMP/ans.h5")")
    [ -n "$want" ] && [ "$got" = "$want" ] && pass "--answer '$a' tracks token $want" || fail "--answer '$a'" "got '$got', want '$want'" "$(cat "$TMP/err")"
done

# The last position's attribution equals attribute's gradient x activation of log p(answer),
# summed over the sub-model's units and the prompt's positions.
printf '{"text": "%s", "answer": " moo"}\n' "$PROMPT" >"$TMP/p.jsonl"
"$SUBSCOPE" attribute --model $M --input "$TMP/p.jsonl" --sites blocks.1.mlp.hook_post --metric logprob --method gradxact \
    --reduce positions --out "$TMP/a.h5" >/dev/null 2>&1
want=$(h5dump -y -m '%.9g' -d /attr/blocks.1.mlp.hook_post "$TMP/a.h5" | awk '/DATA {/{f=1;next} f&&/}/{exit} f' | tr -d ' \n' |
    tr ',' '\n' | awk 'NR==11||NR==21||NR==31||NR==41||NR==51 { s += $1 } END { printf "%.9g", s }')
got=$(last "$(vals /submodels/mlp1_a/attribution "$TMP/t.h5")")
awk -v a="$got" -v b="$want" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= 1e-6 + 1e-4 * (b < 0 ? -b : b)) }' &&
    pass "attribution at the last position = attribute's gradxact ($got vs $want)" || fail "attribution vs attribute" "$got vs $want"

# The tracked log-probability at the last position equals forward's logits.
lp=$(last "$(vals /prediction/logprob "$TMP/t.h5")")
awk -v a="$lp" 'BEGIN { exit !(a < 0 && a > -0.1) }' && pass "log p(' moo') after 'The cow says' is high ($lp)" || fail "prediction logprob" "$lp"

# A prompt of 117 tokens takes its attribution's prefixes in two batches (1-90: 4095 rows; 91-117);
# a position's attribution equals the last position's of a trace of that prefix alone (one batch).
S="The cow lives on a farm and the dog sleeps by the door while the cat watches birds in the old tree."
LONG="$S $S $S"
ids=$("$SUBSCOPE" tokenize --model $M --text "$LONG")
prefix() { "$SUBSCOPE" tokenize --model $M --decode --text "$(printf '%s' "$ids" | tr -d '[] ' | cut -d, -f1-"$1" | sed 's/^/[/; s/$/]/')"; }
if "$SUBSCOPE" trace --model $M --prompt "$LONG" --submodels "$TMP/sm.jsonl" --attribution-pass prefixes --out "$TMP/long.h5" >/dev/null 2>"$TMP/err"; then
    full=$(vals /submodels/mlp1_a/attribution "$TMP/long.h5")
    for k in 51 101; do
        "$SUBSCOPE" trace --model $M --prompt "$(prefix $k)" --submodels "$TMP/sm.jsonl" --attribution-pass prefixes --out "$TMP/p$k.h5" >/dev/null 2>&1
        got=$(printf '%s' "$full" | cut -d, -f"$k")
        want=$(last "$(vals /submodels/mlp1_a/attribution "$TMP/p$k.h5")")
        awk -v a="$got" -v b="$want" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && b != "" && d <= 1e-6 + 1e-5 * (b < 0 ? -b : b)) }' &&
            pass "117-token prompt: position $k's attribution (batch $([ $k -le 90 ] && echo 1 || echo 2) of prefixes) = a trace of that prefix ($got vs $want)" ||
            fail "batched prefixes: position $k" "$got vs $want"
    done
else fail "trace of a 117-token prompt" "$(cat "$TMP/err")"; fi
# ... and forward mode (auto's choice there) gives every one of its 117 positions the same.
"$SUBSCOPE" trace --model $M --prompt "$LONG" --submodels "$TMP/sm.jsonl" --out "$TMP/longf.h5" >/dev/null 2>&1
[ "$(attr attribution_pass "$TMP/longf.h5")" = forward ] &&
    expect_ok "117-token prompt: forward-mode attribution = the batched prefixes' (2e-5 + 1e-4 relative)" \
        "$H5CMP" --quiet --atol 2e-5 --rtol 1e-4 --only /submodels "$TMP/long.h5" "$TMP/longf.h5" ||
    fail "117-token prompt in forward mode" "$(attr attribution_pass "$TMP/longf.h5")"


# The attribution is the derivative of log p(prediction) along the sub-model's units scaled by
# f, at f = 1 (d/df log p(f a) = g . a): trace's own ablation deltas under scale masks 0.9 and
# 0.8 give it by a finite difference, (-4 delta(0.9) + delta(0.8)) / 0.2 (second order), at
# every position. Independent of the backward pass; it checks the prefixes' targets, the sum over
# earlier positions and the mask's positions filter (positions 2 and 5: 0 before position 2).
# Measured: within 1e-4 of attributions up to 0.12.
fdm() { # NAME SITES-JSON [POSITIONS]: the sub-model at f = 0.9 and 0.8
    local f
    for f in 0.9 0.8; do
        printf '{"name": "%s@%s", "sites": %s%s, "mode": "scale", "factor": %s}\n' "$1" "$f" "$2" "${3:+, \"positions\": $3}" "$f"
    done
}
{
    fdm mlp1 '[{"site": "blocks.1.mlp.hook_post", "units": [10, 20, 30, 40, 50]}]'
    fdm mlp1_pos '[{"site": "blocks.1.mlp.hook_post", "units": [10, 20, 30, 40, 50]}]' '[2, 5]'
    fdm z2_head1 '[{"site": "blocks.2.attn.hook_z", "heads": [1]}]'
    fdm two_sites '[{"site": "blocks.0.mlp.hook_post", "units": [3, 7, 100]}, {"site": "blocks.3.hook_resid_mid", "units": [5, 6]}]'
} >"$TMP/fd.jsonl"
for pass in forward prefixes; do
if "$SUBSCOPE" trace --model $M --prompt "$PROMPT" --submodels "$TMP/fd.jsonl" --attribution-pass $pass --out "$TMP/fd.h5" >/dev/null 2>"$TMP/err"; then
    for s in mlp1 mlp1_pos z2_head1 two_sites; do
        r=$(awk -v a="$(vals /submodels/$s@0.9/attribution "$TMP/fd.h5")" -v p="$(vals /submodels/$s@0.9/ablation_delta_logprob "$TMP/fd.h5")" \
            -v m="$(vals /submodels/$s@0.8/ablation_delta_logprob "$TMP/fd.h5")" -v s=$s 'BEGIN {
            n = split(a, A, ","); split(p, P, ","); split(m, Q, ","); big = 0; worst = 0; bad = (n != 10)
            for (t = 1; t <= n; t++) {
                fd = (-4 * P[t] + Q[t]) / 0.2; d = fd - A[t]; if (d < 0) d = -d
                v = A[t] < 0 ? -A[t] : A[t]; if (v > big) big = v; if (d > worst) worst = d
                if (!(d <= 5e-4 + 0.05 * v)) bad = 1
                if (s == "mlp1_pos" && t <= 2 && A[t] != 0) bad = 1
            }
            printf "%s %.2g %.2g", (bad || big < 1e-3) ? "bad" : "ok", worst, big }')
        [ "${r%% *}" = ok ] && pass "$pass: attribution of $s = finite difference of its ablation under scale 0.9, 0.8 (max |diff|, |attr|: ${r#* })" ||
            fail "$pass: attribution of $s against a finite difference" "$r"
    done
else fail "trace with scale sub-models ($pass)" "$(cat "$TMP/err")"; fi
done
# The same on the random Llama (grouped-query, rotary; std 0.2, strongly nonlinear): forward mode
# against the finite difference of scale 0.99 and 0.98 ((-4 delta(0.99) + delta(0.98)) / 0.02;
# at 0.9/0.8 the truncation error reached 0.03 on values of 1.3), for rotated q, k at two
# positions, the MLP's linear half and two sites at once. Measured: within 7e-4 of attributions
# up to 1.3; tolerance 1e-3 + 2%.
fdl() { # NAME SITES-JSON [POSITIONS]
    local f
    for f in 0.99 0.98; do
        printf '{"name": "%s@%s", "sites": %s%s, "mode": "scale", "factor": %s}\n' "$1" "$f" "$2" "${3:+, \"positions\": $3}" "$f"
    done
}
{
    fdl rotq '[{"site": "blocks.0.attn.hook_rot_q", "heads": [1]}]'
    fdl k '[{"site": "blocks.1.attn.hook_k", "heads": [0]}]' '[1, 4]'
    fdl lin '[{"site": "blocks.0.mlp.hook_pre_linear", "units": [3, 7, 100]}]'
    fdl two '[{"site": "blocks.0.mlp.hook_pre", "units": [3, 9]}, {"site": "blocks.1.ln1.hook_normalized", "units": [5, 6]}]'
} >"$TMP/fdl.jsonl"
if "$SUBSCOPE" trace --model "$LL" --prompt "$PROMPT" --submodels "$TMP/fdl.jsonl" --attribution-pass forward --out "$TMP/fdl.h5" >/dev/null 2>"$TMP/err"; then
    for s in rotq k lin two; do
        r=$(awk -v a="$(vals /submodels/$s@0.99/attribution "$TMP/fdl.h5")" -v p="$(vals /submodels/$s@0.99/ablation_delta_logprob "$TMP/fdl.h5")" \
            -v m="$(vals /submodels/$s@0.98/ablation_delta_logprob "$TMP/fdl.h5")" 'BEGIN {
            n = split(a, A, ","); split(p, P, ","); split(m, Q, ","); big = 0; worst = 0; bad = (n != 10)
            for (t = 1; t <= n; t++) {
                fd = (-4 * P[t] + Q[t]) / 0.02; d = fd - A[t]; if (d < 0) d = -d
                v = A[t] < 0 ? -A[t] : A[t]; if (v > big) big = v; if (d > worst) worst = d
                if (!(d <= 1e-3 + 0.02 * v)) bad = 1
            }
            printf "%s %.2g %.2g", (bad || big < 1e-2) ? "bad" : "ok", worst, big }')
        [ "${r%% *}" = ok ] && pass "Llama, forward mode: attribution of $s = finite difference of scale 0.99, 0.98 (max |diff|, |attr|: ${r#* })" ||
            fail "Llama, forward mode: attribution of $s against a finite difference" "$r"
    done
else fail "trace of the Llama with scale sub-models" "$(cat "$TMP/err")"; fi

# The ablation delta at the last position is what ablate measures: with the prompt and the prompt
# plus " moo" (n and n + 1 tokens), log p(' moo') = (n - 1) loss(prompt) - n loss(prompt + moo),
# clean and masked. The predictions are forward's top tokens, and their log-probabilities its.
printf '{"text": "%s moo"}\n{"text": "%s"}\n' "$PROMPT" "$PROMPT" >"$TMP/pm.jsonl"
if "$SUBSCOPE" ablate --model $M --input "$TMP/pm.jsonl" --masks "$TMP/sm.jsonl" --metrics loss --out "$TMP/ab.h5" >/dev/null 2>"$TMP/err"; then
    lp() { awk -v l="$1" -v k="$(vals /tokens "$TMP/t.h5")" 'BEGIN { split(l, L, ","); n = split(k, K, ","); printf "%.9g", (n - 1) * L[2] - n * L[1] }'; }
    for s in mlp1_a z2_head1; do
        want=$(awk -v a="$(lp "$(vals "/ablate/$s/loss" "$TMP/ab.h5")")" -v c="$(lp "$(vals /clean/loss "$TMP/ab.h5")")" 'BEGIN { printf "%.9g", a - c }')
        got=$(last "$(vals /submodels/$s/ablation_delta_logprob "$TMP/t.h5")")
        awk -v a="$got" -v b="$want" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && b != "" && (b < -1e-4 || b > 1e-4) && d <= 2e-5) }' &&
            pass "ablation delta of $s at the last position = ablate's ($got vs $want)" || fail "ablation delta of $s vs ablate" "$got vs $want"
    done
else fail "ablate for the ablation deltas" "$(cat "$TMP/err")"; fi
"$SUBSCOPE" tokenize --model $M --text "$PROMPT" | tr -d '[] ' | sed 's/^/{"tokens": [/; s/$/]}/' >"$TMP/tok.jsonl"
if "$SUBSCOPE" forward --model $M --input "$TMP/tok.jsonl" --out "$TMP/f.h5" >/dev/null 2>"$TMP/err"; then
    r=$(h5dump -y -m '%.9g' -d /logits "$TMP/f.h5" | awk '/DATA {/{f=1;next} f&&/}/{exit} f' | tr -d ' \n' | tr ',' '\n' |
        awk -v V="$(h5ls "$TMP/f.h5/logits" | sed 's/.*, \([0-9]*\)}.*/\1/')" -v pt="$(vals /prediction/token "$TMP/t.h5")" \
            -v pl="$(vals /prediction/logprob "$TMP/t.h5")" '
        BEGIN { n = split(pt, P, ","); split(pl, L, ","); bad = (n != 10); worst = 0 }
        { t = int((NR - 1) / V); v = (NR - 1) % V; x[v] = $1
          if (v < V - 1) next
          b = 0; for (i = 1; i < V; i++) if (x[i] > x[b]) b = i
          z = 0; for (i = 0; i < V; i++) z += exp(x[i] - x[b])
          if (t < n - 1 && P[t + 1] != b) bad = 1
          d = x[P[t + 1]] - x[b] - log(z) - L[t + 1]; if (d < 0) d = -d; if (d > worst) worst = d; rows++ }
        END { printf "%s %.2g", (bad || rows != n || worst > 1e-5) ? "bad" : "ok", worst }')
    [ "${r%% *}" = ok ] && pass "predictions are forward's top tokens (the last one --answer), their log-probabilities forward's (max |diff| ${r#* })" ||
        fail "predictions vs forward" "$r"
else fail "forward for the predictions" "$(cat "$TMP/err")"; fi
# Bad input.
printf '{"name": "r", "site": "blocks.1.mlp.hook_post", "mode": "resample"}\n' >"$TMP/r.jsonl"
expect_fail "resample sub-models refused" "needs other prompts" "$SUBSCOPE" trace --model $M --prompt "$PROMPT" --submodels "$TMP/r.jsonl"
printf '{"name": "mm", "site": "blocks.1.mlp.hook_post", "mode": "mean"}\n' >"$TMP/m.jsonl"
expect_fail "mean sub-models need --stats" "needs --stats" "$SUBSCOPE" trace --model $M --prompt "$PROMPT" --submodels "$TMP/m.jsonl"
printf '{"name": "p", "site": "blocks.1.mlp.hook_post", "mode": "patch"}\n' >"$TMP/p.jsonl"
expect_fail "patch sub-models refused (one prompt)" "uses mode patch, which needs other prompts" \
    "$SUBSCOPE" trace --model $M --prompt "$PROMPT" --submodels "$TMP/p.jsonl"
"$SUBSCOPE" collect --model $M --input data/demo_prompts.jsonl --sites blocks.0.mlp.hook_post --out "$TMP/s0.h5" 2>/dev/null
expect_fail "a --stats file without the sub-model's site is named" "s0.h5 has no /stats/blocks.1.mlp.hook_post/mean" \
    "$SUBSCOPE" trace --model $M --prompt "$PROMPT" --submodels "$TMP/m.jsonl" --stats "$TMP/s0.h5"
# Activity is in standard units only where --stats has every site of the sub-model: one over
# blocks.0 (in s0.h5) and blocks.2's hook_z (not) averaged z-scores with raw values, and the
# table said "standardised by --stats" of every sub-model.
printf '{"name": "mix", "sites": [{"site": "blocks.0.mlp.hook_post", "units": [1, 2]}, {"site": "blocks.2.attn.hook_z", "heads": [1]}]}\n' >"$TMP/mix.jsonl"
"$SUBSCOPE" trace --model $M --prompt "$PROMPT" --submodels "$TMP/mix.jsonl" --out "$TMP/mix-raw.h5" >/dev/null 2>&1
tab=$("$SUBSCOPE" trace --model $M --prompt "$PROMPT" --submodels "$TMP/mix.jsonl" --stats "$TMP/s0.h5" --out "$TMP/mix-st.h5" 2>&1)
printf '%s\n' "$tab" | grep -qF "[1] mix (act raw: $TMP/s0.h5 has no mean and cov of blocks.2.attn.hook_z)" &&
    pass "trace names a sub-model whose activity --stats cannot standardise" || fail "trace: raw activity named" "$(printf '%s' "$tab" | head -n 6)"
expect_ok "... and its activity is the raw one, as without --stats" "$H5CMP" --quiet --atol 0 --rtol 0 --only /submodels/mix/activity \
    "$TMP/mix-raw.h5" "$TMP/mix-st.h5"
[ "$(h5dump -a /submodels/mix/activity/standardised "$TMP/mix-st.h5" 2>/dev/null | sed -n 's/.*(0): //p')" = 0 ] &&
    pass "... with the attribute standardised 0" || fail "trace: attribute standardised 0"
# The token and prediction cells (14 characters) cut long quoted tokens between whole characters
# and escapes, with "…" and the closing quote: before, ' congratulations' showed as
# "' congratulati" and GPT-2's eight-backslash token as "'\\\\\\\\\\\\\" (half an escape, no quote).
G2=$TMP/g2
"${TOOLBIN}mkmodel" --out "$G2" --layers 1 --d 32 --heads 2 --vocab 50257 >/dev/null &&
    cp "${SS_TEST_DATA:-tests/data}/gpt2-tokenizer/tokenizer.json" "$G2/"
printf '%s\n' '{"name": "m0", "site": "blocks.0.mlp.hook_post", "units": [1, 2]}' >"$TMP/sm0.jsonl"
"$SUBSCOPE" trace --model "$G2" --prompt ' congratulations a\\\\\\\\ サーティワン の' --submodels "$TMP/sm0.jsonl" \
    >"$TMP/cut" 2>"$TMP/err"
rows=$(sed -n '/^ *0 /,$p' "$TMP/cut")
# (CJK characters take two columns each: ' サーティワン' is 15 columns, cut to 14 as ' サーティワ…')
if grep -qF "   0 ' congratula…' " "$TMP/cut" && grep -qF "   2 '\\\\\\\\\\\\\\\\\\\\…'  " "$TMP/cut" &&
    grep -qF "   3 ' サーティワ…' '" "$TMP/cut" && [ "$(printf '%s\n' "$rows" | wc -l)" = 6 ] &&
    ! printf '%s\n' "$rows" | grep -vqE "^ +[0-9]+ '.*' +'.*' +[0-9.]+ \|"; then
    pass "table cells cut long tokens at whole characters and escapes, closing quote kept"
else fail "table cells of long tokens" "$(cat "$TMP/cut" "$TMP/err" | tail -n 5)"; fi
# Cells are padded and cut by display columns, not characters: a CJK character takes two, so
# before, the row of a token of CJK text ('の', ' サーティワン') ran one column further right per
# character and its '|' no longer lined up with the others. Measured where wc -L counts columns
# (a UTF-8 locale): every row's text before the first '|' is as wide as the header's.
if [ "$(printf '\346\227\245|' | LC_ALL=C.UTF-8 wc -L 2>/dev/null)" = 3 ]; then
    widths=$(sed -n '/^ *pos /,$p' "$TMP/cut" | while IFS= read -r line; do
        printf '%s\n' "${line%%|*}" | LC_ALL=C.UTF-8 wc -L; done | sort -u)
    grep -qF "   5 'の'          " "$TMP/cut" && [ "$(printf '%s\n' "$widths" | wc -l)" = 1 ] &&
        pass "a table with CJK tokens keeps its columns aligned (every row $widths columns to its '|')" ||
        fail "a table with CJK tokens keeps its columns aligned" "widths to '|': $(printf '%s ' $widths); $(sed -n '/^ *3 /,/^ *5 /p' "$TMP/cut")"
else
    grep -qF "   5 'の'          " "$TMP/cut" && pass "a CJK token's cell is padded by columns (no UTF-8 locale to measure rows)" ||
        fail "a CJK token's cell is padded by columns" "$(sed -n '/^ *5 /p' "$TMP/cut")"
fi
expect_fail "unknown site in the sub-models file" "blocks.9" "$SUBSCOPE" trace --model $M --prompt "$PROMPT" --submodels <(printf '{"site": "blocks.9.mlp.hook_post"}\n')
expect_fail "invalid UTF-8 in --prompt is named" "--prompt: text is not valid UTF-8" "$SUBSCOPE" trace --model $M --prompt $'The \xff cat' --submodels "$TMP/sm.jsonl"
expect_fail "invalid UTF-8 in --answer is named" "--answer: text is not valid UTF-8" "$SUBSCOPE" trace --model $M --prompt "$PROMPT" --answer $'\xff' --submodels "$TMP/sm.jsonl"
expect_fail "missing --submodels" "--submodels" "$SUBSCOPE" trace --model $M --prompt "$PROMPT"
finish
