#!/usr/bin/env bash
# Pipeline parallelism (--pipeline P, docs/DISTRIBUTED.md): the model's blocks split over P
# ranks, each loading only its own. Every job (forward, collect, ablate, attribute, patch, trace) with 2 and 3 stages
# (forward, collect, ablate, attribute and patch also with copies of the pipeline side by side: 4 and 6 ranks)
# against one process (bit for bit: every stage runs the same batches through the same code),
# GPT-2 and Llama; checkpoints and --resume across stage counts; --max-memory (a model that does not fit
# one rank runs split in two); a stage that hangs stops the job naming it; the refusals. Stages send
# through the MPI communicator's sender thread; one collect runs without it (SUBSCOPE_SEND_THREAD=0).
source "$(dirname "$0")/lib.sh"
H5CMP=${TOOLBIN}h5cmp
D=${SS_TEST_DATA:-tests/data}
M=models/tiny-gpt2
P=data/demo_prompts.jsonl
if ! command -v mpirun >/dev/null 2>&1; then
    echo "  skip: no mpirun on this machine ('make deps' installs openmpi-bin libopenmpi-dev)"
    finish; exit
fi
export SUBSCOPE_THREADS=1
export ASAN_OPTIONS=detect_leaks=0 OMPI_MCA_btl_vader_single_copy_mechanism=none
MPI="mpirun --allow-run-as-root --oversubscribe"

# forward: logits, losses and every site, in input order, identical to one process.
for model in "$M" "$D/models/llama-hd6-bias"; do
    input=$P
    [ "$model" = "$M" ] || input=$D/golden/llama-hd6-bias.jsonl
    name=$(basename "$model")
    "$SUBSCOPE" forward --model "$model" --input "$input" --sites '*' --batch 2 --loss --out "$TMP/f1.h5" 2>/dev/null
    for n in 2 3; do
        if ! res=$($MPI -np $n "$SUBSCOPE" forward --model "$model" --input "$input" --sites '*' --batch 2 --pipeline $n \
            --loss --out "$TMP/f$n.h5" 2>&1); then fail "$name forward --pipeline $n runs" "$(printf '%s' "$res" | tail -3)"; continue; fi
        if res=$("$H5CMP" --quiet --atol 0 --rtol 0 --only /acts --only /logits --only /loss --only /tokens "$TMP/f1.h5" "$TMP/f$n.h5" 2>&1); then
            pass "$name forward --pipeline $n = one process, bit for bit (every site, logits, --loss)"
        else fail "$name forward --pipeline $n vs one process" "$(printf '%s' "$res" | head -n 4)"; fi
    done
done
st=$(h5dump -a /pipeline_stages "$TMP/f3.h5" 2>/dev/null | sed -n 's/.*(0): \([0-9]*\).*/\1/p')
fb=$(h5dump -a /pipeline_first_block "$TMP/f3.h5" 2>/dev/null | sed -n 's/.*(0): \(.*\)$/\1/p')
[ "$st" = 3 ] && [ "$fb" = "0, 1, 2" ] && h5dump -a /pipeline_bubble_fraction "$TMP/f3.h5" >/dev/null 2>&1 &&
    pass "the file records the stages, their first blocks and the bubble" || fail "pipeline attributes" "stages '$st', first blocks '$fb'"
# The provenance describes the whole model, not the writing stage's share of it.
np1=$(h5dump -a /model_n_params "$TMP/f1.h5" 2>/dev/null | sed -n 's/.*(0): \([0-9]*\).*/\1/p')
np3=$(h5dump -a /model_n_params "$TMP/f3.h5" 2>/dev/null | sed -n 's/.*(0): \([0-9]*\).*/\1/p')
[ -n "$np1" ] && [ "$np1" = "$np3" ] && pass "model_n_params of a 3-stage run is the whole model's ($np3)" ||
    fail "model_n_params under --pipeline 3" "one process '$np1', 3 stages '$np3'"

# collect: the statistics of each site come from the one stage that computes it.
awk 'NR % 3 == 0 {sub(/}$/, ", \"label\": \"a\"}")} NR % 3 {sub(/}$/, ", \"label\": \"b\"}")} {print}' $P >"$TMP/lab.jsonl"
copts=(--model $M --input "$TMP/lab.jsonl" --sites 'hook_embed,blocks.*.mlp.hook_post,blocks.3.attn.hook_z,ln_final.hook_normalized'
       --stats mean,cov,corr,pca:4 --group-by label --batch 3)
"$SUBSCOPE" collect "${copts[@]}" --out "$TMP/c1.h5" 2>/dev/null
for n in 2 3; do
    if ! res=$($MPI -np $n "$SUBSCOPE" collect "${copts[@]}" --pipeline $n --out "$TMP/c$n.h5" 2>&1); then
        fail "collect --pipeline $n runs" "$(printf '%s' "$res" | tail -3)"; continue; fi
    expect_ok "collect --pipeline $n = one process, bit for bit (per label too)" \
        "$H5CMP" --quiet --atol 0 --rtol 0 --only /stats --only /groups "$TMP/c1.h5" "$TMP/c$n.h5"
done
# The same without the communicator's sender thread: each stage's send then waits for the next stage.
if res=$(SUBSCOPE_SEND_THREAD=0 $MPI -np 3 "$SUBSCOPE" collect "${copts[@]}" --pipeline 3 --out "$TMP/c3b.h5" 2>&1); then
    expect_ok "collect --pipeline 3 with blocking sends (SUBSCOPE_SEND_THREAD=0) = one process, bit for bit" \
        "$H5CMP" --quiet --atol 0 --rtol 0 --only /stats --only /groups "$TMP/c1.h5" "$TMP/c3b.h5"
else fail "collect --pipeline 3 with SUBSCOPE_SEND_THREAD=0 runs" "$(printf '%s' "$res" | tail -3)"; fi

# ablate: masks act on the stage that computes their site (a mask spanning blocks of two
# stages included), the last stage scores; mean statistics, resample donors and the clean
# prefix each stay on their stage. Identical values and table, one mask or three per forward.
cat >"$TMP/masks.jsonl" <<'JSONL'
{"name": "z1", "site": "blocks.1.mlp.hook_post", "units": [1, 5, 9], "mode": "zero"}
{"name": "m3", "site": "blocks.3.attn.hook_z", "heads": [2], "mode": "mean"}
{"name": "r0", "site": "blocks.0.hook_resid_post", "units": [3, 4], "mode": "resample", "seed": 5}
{"name": "n2", "sites": [{"site": "blocks.2.mlp.hook_pre", "units": [7]}, {"site": "blocks.0.attn.hook_v", "units": [2, 3]}], "mode": "noise", "sigma": 0.5, "seed": 3}
{"name": "s3", "site": "blocks.3.mlp.hook_post", "mode": "scale", "factor": 0.5}
JSONL
for mb in 1 3; do
    aopts=(--model $M --input "$TMP/lab.jsonl" --masks "$TMP/masks.jsonl" --metrics loss,acc,kl --batch 4 --mask-batch $mb)
    "$SUBSCOPE" ablate "${aopts[@]}" --out "$TMP/a1.h5" >"$TMP/t1" 2>&1
    if ! $MPI -np 3 "$SUBSCOPE" ablate "${aopts[@]}" --pipeline 3 --out "$TMP/a3.h5" >"$TMP/t3" 2>&1; then
        fail "ablate --pipeline 3 runs (--mask-batch $mb)" "$(tail -3 "$TMP/t3")"; continue; fi
    if "$H5CMP" --quiet --atol 0 --rtol 0 --only /clean --only /ablate --only /by_label "$TMP/a1.h5" "$TMP/a3.h5" >/dev/null 2>&1 &&
       diff <(grep -v '^wrote' "$TMP/t1") <(grep -v '^wrote\|^pipeline' "$TMP/t3") >/dev/null; then
        pass "ablate --pipeline 3 = one process, bit for bit, same table (--mask-batch $mb)"
    else fail "ablate --pipeline 3 vs one process (--mask-batch $mb)" "$("$H5CMP" --quiet --atol 0 --rtol 0 "$TMP/a1.h5" "$TMP/a3.h5" 2>&1 | head -3)"; fi
done

# attribute: the forward pass down the stages, the metric at the last, the gradient back up
# them; each site's attributions from its stage, in input order. Every method and reduction,
# identical to one process, and the Llama golden against autograd with --recompute.
A=$D/attribute
AS='hook_embed,hook_pos_embed,blocks.*.mlp.hook_post,blocks.2.attn.hook_z,ln_final.hook_normalized'
for meth in grad gradxact atp ig:4; do
    for red in none prompts; do
        extra=()
        [ $meth = atp ] && extra=(--corrupt $A/corrupt.jsonl)
        at=(--model $M --input $A/prompts.jsonl --sites "$AS" --metric logitdiff --method $meth --reduce $red --batch 2 "${extra[@]}")
        "$SUBSCOPE" attribute "${at[@]}" --out "$TMP/t1.h5" >"$TMP/tt1" 2>&1
        if ! $MPI -np 3 "$SUBSCOPE" attribute "${at[@]}" --pipeline 3 --out "$TMP/t3.h5" >"$TMP/tt3" 2>&1; then
            fail "attribute --method $meth --reduce $red --pipeline 3 runs" "$(tail -3 "$TMP/tt3")"; continue; fi
        if "$H5CMP" --quiet --atol 0 --rtol 0 --only /attr --only /metric --only /ig "$TMP/t1.h5" "$TMP/t3.h5" >/dev/null 2>&1 &&
           diff <(grep -v '^wrote' "$TMP/tt1") <(grep -v '^wrote' "$TMP/tt3") >/dev/null; then
            pass "attribute --method $meth --reduce $red --pipeline 3 = one process, bit for bit, same table"
        else fail "attribute $meth $red --pipeline 3 vs one process" "$("$H5CMP" --quiet --atol 0 --rtol 0 "$TMP/t1.h5" "$TMP/t3.h5" 2>&1 | head -3)"; fi
    done
done
# Like the other jobs' files, attribute's records the stages (ranks / stages copies ran side by side).
st1=$(h5dump -a /pipeline_stages "$TMP/t1.h5" 2>/dev/null | sed -n 's/.*(0): \([0-9]*\).*/\1/p')
st3=$(h5dump -a /pipeline_stages "$TMP/t3.h5" 2>/dev/null | sed -n 's/.*(0): \([0-9]*\).*/\1/p')
[ "$st1" = 1 ] && [ "$st3" = 3 ] && pass "attribute's file records pipeline_stages (1, and 3 with --pipeline 3)" ||
    fail "attribute's pipeline_stages" "one process '$st1', --pipeline 3 '$st3'"
# The backward pass stops below the deepest wanted site: stages below it neither wait for a
# gradient nor compute one (a site on the last stage, on the middle one, the final norm's).
for AS2 in blocks.3.mlp.hook_post blocks.1.attn.hook_z ln_final.hook_normalized; do
    at=(--model $M --input $A/prompts.jsonl --sites "$AS2" --metric loss --method gradxact --batch 2)
    "$SUBSCOPE" attribute "${at[@]}" --out "$TMP/s1.h5" >/dev/null 2>&1
    if $MPI -np 3 "$SUBSCOPE" attribute "${at[@]}" --pipeline 3 --out "$TMP/s3.h5" >"$TMP/s3.log" 2>&1; then
        expect_ok "attribute at $AS2 only, --pipeline 3 = one process, bit for bit" \
            "$H5CMP" --quiet --atol 0 --rtol 0 --only /attr --only /metric "$TMP/s1.h5" "$TMP/s3.h5"
    else fail "attribute at $AS2 --pipeline 3 runs" "$(tail -3 "$TMP/s3.log")"; fi
done
L=llama-hd6-bias
if $MPI -np 3 "$SUBSCOPE" attribute --model "$D/models/$L" --input "$D/golden/$L.jsonl" --sites '*' --metric loss --method grad \
    --pipeline 3 --recompute --out "$TMP/l3.h5" >"$TMP/l3.log" 2>&1; then
    expect_ok "attribute --pipeline 3 --recompute on a Llama model equals autograd" \
        "$H5CMP" --quiet --atol 1e-5 --rtol 1e-4 "$D/golden/attr-$L-loss-grad.h5" "$TMP/l3.h5"
else fail "Llama attribute --pipeline 3 runs" "$(tail -3 "$TMP/l3.log")"; fi

# patch: the stages run every pair together; the patched piece is replaced on its stage and the
# last stage, which has the logits, writes.
PD=$D/patch
pa=(--model $M --clean $PD/clean.jsonl --corrupt $PD/corrupt.jsonl --sites 'blocks.*.attn.hook_z,blocks.0.hook_resid_pre' --per position)
"$SUBSCOPE" patch "${pa[@]}" --out "$TMP/pa1.h5" >/dev/null 2>&1
if $MPI -np 2 "$SUBSCOPE" patch "${pa[@]}" --pipeline 2 --out "$TMP/pa2.h5" >"$TMP/pa.log" 2>&1; then
    expect_ok "patch --per position --pipeline 2 = one process, bit for bit" "$H5CMP" --quiet --atol 0 --rtol 0 \
        --only /effect --only /patched_metric --only /clean_metric --only /corrupt_metric "$TMP/pa1.h5" "$TMP/pa2.h5"
else fail "patch --pipeline 2 runs" "$(tail -3 "$TMP/pa.log")"; fi

# trace: every stage runs the same passes; activity and attribution are summed over the stages
# (a sub-model spanning blocks 0 and 3 lies on two); the last stage writes and prints.
"$SUBSCOPE" collect --model $M --input $P --sites 'blocks.*.mlp.hook_post,blocks.*.attn.hook_z' --stats mean --out "$TMP/tst.h5" 2>/dev/null
cp data/demo_submodels.jsonl "$TMP/sub.jsonl"
echo '{"name": "across", "sites": [{"site": "blocks.0.mlp.hook_post", "units": [1, 2]}, {"site": "blocks.3.attn.hook_z", "heads": [0]}], "mode": "zero"}' >>"$TMP/sub.jsonl"
tr=(--model $M --prompt 'The cat says' --answer ' meow' --submodels "$TMP/sub.jsonl" --stats "$TMP/tst.h5")
# (the one process runs the prefixes too, the pass a pipeline runs, for the bit-for-bit comparison)
"$SUBSCOPE" trace "${tr[@]}" --attribution-pass prefixes --out "$TMP/tr1.h5" >"$TMP/tr1.txt" 2>/dev/null
if $MPI -np 3 "$SUBSCOPE" trace "${tr[@]}" --pipeline 3 --out "$TMP/tr3.h5" >"$TMP/tr3.txt" 2>"$TMP/tr3.err"; then
    # one-stage sub-models bit for bit; the one over two stages adds its stages' sums in another order
    if "$H5CMP" --quiet --atol 1e-6 --rtol 1e-6 --only /submodels --only /prediction --only /tokens "$TMP/tr1.h5" "$TMP/tr3.h5" >/dev/null 2>&1 &&
       "$H5CMP" --quiet --atol 0 --rtol 0 --only /submodels/mlp1_units --only /submodels/mlp2_half --only /submodels/l2_head1 "$TMP/tr1.h5" "$TMP/tr3.h5" >/dev/null 2>&1 &&
       [ "$(grep -c '|' "$TMP/tr3.txt")" = "$(grep -c '|' "$TMP/tr1.txt")" ]; then
        pass "trace --pipeline 3 = one process (sub-models on one stage bit for bit, one across two within 1e-6), one table"
    else fail "trace --pipeline 3 vs one process" "$("$H5CMP" --quiet --atol 0 --rtol 0 "$TMP/tr1.h5" "$TMP/tr3.h5" 2>&1 | head -3)"; fi
else fail "trace --pipeline 3 runs" "$(tail -3 "$TMP/tr3.err")"; fi
# The forward-mode pass runs the whole model in one process: auto falls back to the prefixes and
# says why (attribute attribution_pass), a forced forward pass is refused naming the reason.
[ "$(h5dump -a /attribution_pass "$TMP/tr3.h5" 2>/dev/null | sed -n 's/.*(0): "\(.*\)"/\1/p')" = prefixes ] &&
    grep -qF "trace: attribution by prefixes (forward mode cannot run: the model is split into pipeline stages" "$TMP/tr3.err" &&
    pass "trace --pipeline 3: auto runs the prefixes and says why" || fail "trace --pipeline 3: auto's pass" "$(cat "$TMP/tr3.err")"
# Like the other jobs' files, trace's records its ranks and stages (1 and 1 in one process; before,
# neither was written).
a=(); for f in tr1 tr3; do for k in ranks pipeline_stages; do
    a+=("$(h5dump -a /$k "$TMP/$f.h5" 2>/dev/null | sed -n 's/.*(0): \([0-9]*\).*/\1/p')"); done; done
[ "${a[*]}" = "1 1 3 3" ] && pass "trace's file records ranks and pipeline_stages (1 1, and 3 3 with --pipeline 3)" ||
    fail "trace's ranks and pipeline_stages" "one process '${a[0]}' '${a[1]}', --pipeline 3 '${a[2]}' '${a[3]}'"
expect_fail "trace --pipeline 2 --attribution-pass forward is refused" \
    "--attribution-pass forward: the model is split into pipeline stages" \
    $MPI -np 2 "$SUBSCOPE" trace "${tr[@]}" --pipeline 2 --attribution-pass forward

# Copies of a pipeline side by side (data x pipeline): ranks q*P..q*P+P-1 are copy q, each copy
# runs its share of the batches. forward is bit for bit one process (every batch runs through
# the same code); collect merges like data-parallel ranks (within 1e-12).
for np_p in "4 2" "6 3" "6 2"; do
    set -- $np_p
    if ! res=$($MPI -np $1 "$SUBSCOPE" forward --model $M --input $P --sites '*' --batch 2 --pipeline $2 \
        --out "$TMP/fc.h5" 2>&1); then fail "forward: $1 ranks, --pipeline $2 runs" "$(printf '%s' "$res" | tail -3)"; continue; fi
    "$SUBSCOPE" forward --model $M --input $P --sites '*' --batch 2 --loss --out "$TMP/f1.h5" 2>/dev/null
    expect_ok "forward: $(( $1 / $2 )) copies of a $2-stage pipeline ($1 ranks) = one process, bit for bit" \
        "$H5CMP" --quiet --atol 0 --rtol 0 --only /acts --only /logits --only /tokens "$TMP/f1.h5" "$TMP/fc.h5"
    # --no-logits --loss: each copy's last stage scores its logits in place and sends the writer the losses
    if [ "$1" = 4 ]; then
        if res=$($MPI -np $1 "$SUBSCOPE" forward --model $M --input $P --batch 2 --pipeline $2 --no-logits --loss \
            --out "$TMP/fl.h5" 2>&1); then
            expect_ok "forward --no-logits --loss: 2 copies of a 2-stage pipeline = one process, bit for bit" \
                "$H5CMP" --quiet --atol 0 --rtol 0 --only /loss "$TMP/f1.h5" "$TMP/fl.h5"
        else fail "forward --no-logits --loss: 4 ranks, --pipeline 2 runs" "$(printf '%s' "$res" | tail -3)"; fi
    fi
    if ! res=$($MPI -np $1 "$SUBSCOPE" collect "${copts[@]}" --pipeline $2 --out "$TMP/cc.h5" 2>&1); then
        fail "collect: $1 ranks, --pipeline $2 runs" "$(printf '%s' "$res" | tail -3)"; continue; fi
    expect_ok "collect: $(( $1 / $2 )) copies of a $2-stage pipeline = one process within 1e-12 (per label, PCA)" \
        "$H5CMP" --quiet --atol 1e-14 --rtol 1e-12 --only /stats --only /groups "$TMP/c1.h5" "$TMP/cc.h5"
done
if $MPI -np 4 "$SUBSCOPE" forward --model "$D/models/llama-hd6-bias" --input "$D/golden/llama-hd6-bias.jsonl" --sites '*' \
    --batch 2 --pipeline 2 --out "$TMP/lc.h5" >/dev/null 2>&1; then
    "$SUBSCOPE" forward --model "$D/models/llama-hd6-bias" --input "$D/golden/llama-hd6-bias.jsonl" --sites '*' --batch 2 \
        --out "$TMP/l1.h5" 2>/dev/null
    expect_ok "forward (Llama): 2 copies of a 2-stage pipeline = one process, bit for bit" \
        "$H5CMP" --quiet --atol 0 --rtol 0 --only /acts --only /logits "$TMP/l1.h5" "$TMP/lc.h5"
else fail "forward (Llama): 4 ranks, --pipeline 2 runs"; fi
# attribute's 1F1B schedule: stage s keeps at most max(1, min(--micro-batches, P) - s) batches in flight and
# exchanges blocks with its neighbours between passes; any cap gives the same bits, with ATP's
# corrupt passes and the metric travelling down the stages. 4 stages of 4 blocks: 8 batches in
# flight 4, 3, 2 and 1 deep (--reduce none: every stage's sites go to rank 0 batch by batch).
"$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.*.mlp.hook_post' --method atp --corrupt "$P" --batch 2 \
    --out "$TMP/mb1.h5" >/dev/null 2>&1
for np_mbw in "2 1" "2 3" "4 0" "4 2" "3 2"; do
    set -- $np_mbw
    mbo=(); [ "$2" = 0 ] || mbo=(--micro-batches "$2")
    if $MPI -np $1 "$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.*.mlp.hook_post' --method atp --corrupt "$P" \
        --batch 2 --pipeline $1 "${mbo[@]}" --out "$TMP/mb2.h5" >"$TMP/mb.log" 2>&1; then
        expect_ok "attribute atp --pipeline $1 ${mbo[*]:-(1F1B)} = one process, bit for bit" \
            "$H5CMP" --quiet --atol 0 --rtol 0 --only /attr --only /metric "$TMP/mb1.h5" "$TMP/mb2.h5"
    else fail "attribute --pipeline $1 ${mbo[*]} runs" "$(tail -3 "$TMP/mb.log")"; fi
done
# integrated gradients run a batch's steps 1F1B (the editing hook's alpha kept with each pass, also
# through --recompute, which runs the hook again in the backward pass), at any depth
igo=(--model $M --input $P --sites 'blocks.1.mlp.hook_post,blocks.2.attn.hook_z' --method ig:8 --recompute --batch 4)
"$SUBSCOPE" attribute "${igo[@]}" --out "$TMP/ig1.h5" >/dev/null 2>&1
for np_mbw in "2 3" "4 0"; do
    set -- $np_mbw
    mbo=(); [ "$2" = 0 ] || mbo=(--micro-batches "$2")
    if $MPI -np $1 "$SUBSCOPE" attribute "${igo[@]}" --pipeline $1 "${mbo[@]}" --out "$TMP/ig2.h5" >"$TMP/ig.log" 2>&1; then
        expect_ok "attribute ig:8 --recompute --pipeline $1 ${mbo[*]:-(1F1B)} = one process, bit for bit" \
            "$H5CMP" --quiet --atol 0 --rtol 0 --only /attr --only /metric --only /ig "$TMP/ig1.h5" "$TMP/ig2.h5"
    else fail "attribute ig:8 --pipeline $1 ${mbo[*]} runs" "$(tail -3 "$TMP/ig.log")"; fi
done
expect_fail "--micro-batches without --pipeline is refused" "--micro-batches 3: only a pipeline" \
    "$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.1.mlp.hook_post' --micro-batches 3 --out "$TMP/x.h5"
# copies_vs_ranks NAME D P ONLY... -- JOB OPTIONS...: D copies of a P-stage pipeline (D*P ranks) must give
# what D data-parallel ranks give, bit for bit in the datasets under ONLY, with the same table.
copies_vs_ranks() {
    local name=$1 d=$2 p=$3 only=(); shift 3
    while [ "$1" != -- ]; do only+=(--only "$1"); shift; done; shift
    $MPI -np $d "$SUBSCOPE" "$@" --out "$TMP/cvd.h5" >"$TMP/cvd" 2>&1
    if ! $MPI -np $(( d * p )) "$SUBSCOPE" "$@" --pipeline $p --out "$TMP/cvc.h5" >"$TMP/cvc" 2>&1; then
        fail "$name: $d copies of a $p-stage pipeline run" "$(tail -3 "$TMP/cvc")"; return; fi
    if "$H5CMP" --quiet --atol 0 --rtol 0 "${only[@]}" "$TMP/cvd.h5" "$TMP/cvc.h5" >/dev/null 2>&1 &&
       diff <(grep -v '^wrote' "$TMP/cvd") <(grep -v '^wrote\|^pipeline' "$TMP/cvc") >/dev/null; then
        pass "$name: $d copies of a $p-stage pipeline = $d data-parallel ranks, bit for bit, same table"
    else fail "$name: $d copies of a $p-stage pipeline vs $d ranks" "$("$H5CMP" --quiet --atol 0 --rtol 0 "$TMP/cvd.h5" "$TMP/cvc.h5" 2>&1 | head -3)"; fi
}
# ablate: copies split the prompts as data-parallel ranks do (which equal one process, mean masks'
# statistics included: merged along one tree over the prompts, as test_dist.sh checks).
aopts=(--model $M --input "$TMP/lab.jsonl" --masks "$TMP/masks.jsonl" --metrics loss,acc,kl --batch 3 --mask-batch 3)
for dp in "2 2" "3 2" "2 3"; do
    set -- $dp
    copies_vs_ranks ablate $1 $2 /clean /ablate /by_label -- ablate "${aopts[@]}"
done
# attribute: each site's attributions from the stage of its copy that computes it; metrics, IG
# baselines and completeness errors gathered per stage.
for dp_m in "2 2 gradxact none" "3 2 ig:4 positions" "2 3 grad prompts"; do
    set -- $dp_m
    copies_vs_ranks "attribute --method $3 --reduce $4" $1 $2 /attr /metric /ig -- attribute --model $M --input $P \
        --sites 'blocks.*.mlp.hook_post,blocks.0.attn.hook_z,ln_final.hook_normalized' --method $3 --reduce $4 --batch 2
done
# patch: copies split the pairs as data-parallel ranks do.
copies_vs_ranks "patch --per position" 2 2 /effect /patched_metric /clean_metric /corrupt_metric -- patch "${pa[@]}"
expect_fail "other jobs take exactly P ranks, and say which take copies" \
    "needs exactly 2 ranks (one per stage), but the job has 4 (copies of a pipeline side by side are for forward, collect, ablate, attribute and patch)" \
    $MPI -np 4 "$SUBSCOPE" trace --model $M --prompt "The cat" --submodels "$TMP/masks.jsonl" --pipeline 2

# --pipeline-blocks: an uneven split (e.g. fewer blocks for the last stage, which also computes the
# logits) changes nothing but who runs what.
"$SUBSCOPE" forward --model $M --input $P --sites '*' --batch 2 --out "$TMP/f1.h5" 2>/dev/null
if $MPI -np 2 "$SUBSCOPE" forward --model $M --input $P --sites '*' --batch 2 --pipeline 2 --pipeline-blocks 3,1 \
    --out "$TMP/fb.h5" >/dev/null 2>&1 && [ "$(h5dump -a /pipeline_first_block "$TMP/fb.h5" | sed -n 's/.*(0): \(.*\)$/\1/p')" = "0, 3" ]; then
    expect_ok "forward --pipeline 2 --pipeline-blocks 3,1 = one process, bit for bit (stages start at blocks 0, 3)" \
        "$H5CMP" --quiet --atol 0 --rtol 0 --only /acts --only /logits "$TMP/f1.h5" "$TMP/fb.h5"
else fail "forward --pipeline-blocks 3,1"; fi
"$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.*.mlp.hook_post,blocks.0.attn.hook_z' --batch 2 --out "$TMP/tb1.h5" >/dev/null 2>&1
if $MPI -np 4 "$SUBSCOPE" attribute --model $M --input $P --sites 'blocks.*.mlp.hook_post,blocks.0.attn.hook_z' --batch 2 \
    --pipeline 2 --pipeline-blocks 1,3 --out "$TMP/tb2.h5" >"$TMP/tb.log" 2>&1; then
    expect_ok "attribute, 2 copies of a 2-stage pipeline split 1,3 = one process, bit for bit" \
        "$H5CMP" --quiet --atol 0 --rtol 0 --only /attr --only /metric "$TMP/tb1.h5" "$TMP/tb2.h5"
else fail "attribute --pipeline-blocks 1,3 on 4 ranks" "$(tail -3 "$TMP/tb.log")"; fi
# The default split is balanced by multiply-adds: with a head as costly as 5.3 of its 4 blocks (d 32,
# vocabulary 2048), jobs that score logits give the last stage one block, collect and forward
# --no-logits split evenly, and --pipeline-blocks even asks for the even split anyway.
"${TOOLBIN}mkmodel" --out "$TMP/bighead" --layers 4 --d 32 --heads 2 --vocab 2048 --positions 32 \
    --prompts "$TMP/bh.jsonl" --lengths 5,9,3,7,8,2 >/dev/null
first_blocks() { h5dump -a /pipeline_first_block "$1" 2>/dev/null | sed -n 's/.*(0): \(.*\)$/\1/p'; }
bh=(--model "$TMP/bighead" --input "$TMP/bh.jsonl" --sites 'blocks.*.hook_resid_post' --batch 2)
"$SUBSCOPE" forward "${bh[@]}" --out "$TMP/bh1.h5" 2>/dev/null
$MPI -np 2 "$SUBSCOPE" forward "${bh[@]}" --pipeline 2 --out "$TMP/bh2.h5" >/dev/null 2>&1
$MPI -np 2 "$SUBSCOPE" forward "${bh[@]}" --pipeline 2 --no-logits --out "$TMP/bh3.h5" >/dev/null 2>&1
$MPI -np 2 "$SUBSCOPE" forward "${bh[@]}" --pipeline 2 --pipeline-blocks even --out "$TMP/bh4.h5" >/dev/null 2>&1
$MPI -np 2 "$SUBSCOPE" collect "${bh[@]}" --stats mean --pipeline 2 --out "$TMP/bh5.h5" >/dev/null 2>&1
got="$(first_blocks "$TMP/bh2.h5") / $(first_blocks "$TMP/bh3.h5") / $(first_blocks "$TMP/bh4.h5") / $(first_blocks "$TMP/bh5.h5")"
if [ "$got" = "0, 3 / 0, 2 / 0, 2 / 0, 2" ]; then
    expect_ok "the default split gives a costly head's stage fewer blocks (3,1; collect and --no-logits 2,2), = one process" \
        "$H5CMP" --quiet --atol 0 --rtol 0 --only /acts --only /logits "$TMP/bh1.h5" "$TMP/bh2.h5"
else fail "balanced default split" "first blocks: forward / --no-logits / even / collect = $got"; fi
expect_ok "info --config shows both splits" grep -q "^split        3,1 for jobs that score logits .* 2,2 for collect" \
    <("$SUBSCOPE" info --config "$TMP/bighead/config.json" --pipeline 2)
# Under --max-memory the split that fits comes first: GPT-2 small's 9,3 puts 394 MiB of float32 on
# stage 0; within 350 MiB the fastest split is 7,5 (340 and 282 MiB).
printf '{"model_type": "gpt2", "n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024, "vocab_size": 50257}' \
    >"$TMP/gpt2-small.json"
out=$("$SUBSCOPE" info --config "$TMP/gpt2-small.json" --pipeline 2 --max-memory 350M 2>&1)
if printf '%s' "$out" | grep -q "^split        7,5 for jobs" && [ "$(printf '%s' "$out" | grep -c "fits --max-memory")" = 2 ] &&
   "$SUBSCOPE" info --config "$TMP/gpt2-small.json" --pipeline 2 | grep -q "^split        9,3 for jobs"; then
    pass "info --config --max-memory: the balanced split that fits (7,5; without the limit 9,3)"
else fail "info --config --max-memory" "$out"; fi
expect_fail "--pipeline-blocks that do not add up are refused" "the counts add up to 3, but the model has 4 blocks" \
    $MPI -np 2 "$SUBSCOPE" forward --model $M --input $P --pipeline 2 --pipeline-blocks 2,1 --out "$TMP/x.h5"
expect_fail "--pipeline-blocks without --pipeline is refused" "give --pipeline P of 2 or more stages too" \
    "$SUBSCOPE" forward --model $M --input $P --pipeline-blocks 3,1 --out "$TMP/x.h5"

# Checkpoints: a 2-stage run checkpoints; 3 stages resume what one process left.
for i in $(seq 1 20); do cat $P; done >"$TMP/big.jsonl"
bopts=(--model $M --input "$TMP/big.jsonl" --sites 'blocks.*.mlp.hook_post' --stats mean,cov --batch 8 --checkpoint-every 48)
"$SUBSCOPE" collect "${bopts[@]}" --out "$TMP/b1.h5" 2>/dev/null
$MPI -np 2 "$SUBSCOPE" collect "${bopts[@]}" --pipeline 2 --out "$TMP/b2.h5" >/dev/null 2>&1
expect_ok "collect --pipeline 2 with checkpoints = one process" "$H5CMP" --quiet --atol 1e-14 --rtol 1e-12 "$TMP/b1.h5" "$TMP/b2.h5"
$MPI -np 4 "$SUBSCOPE" collect "${bopts[@]}" --pipeline 2 --out "$TMP/b4.h5" >/dev/null 2>&1
expect_ok "... and 2 copies of it (4 ranks)" "$H5CMP" --quiet --atol 1e-14 --rtol 1e-12 "$TMP/b1.h5" "$TMP/b4.h5"
# A checkpoint from one process killed half-way, then 3 stages resume it.
for i in $(seq 1 10); do cat "$TMP/big.jsonl"; done >"$TMP/huge.jsonl"
ropts=(--model $M --input "$TMP/huge.jsonl" --sites 'blocks.*.mlp.hook_post' --stats mean,cov --batch 8 --checkpoint-every 48)
"$SUBSCOPE" collect "${ropts[@]}" --out "$TMP/u1.h5" 2>/dev/null
"$SUBSCOPE" collect "${ropts[@]}" --out "$TMP/r.h5" >/dev/null 2>&1 &
cp=$!
for _ in $(seq 1 500); do [ -e "$TMP/r.h5.ckpt" ] && break; sleep 0.01; done
kill -9 $cp 2>/dev/null; wait $cp 2>/dev/null
if [ -e "$TMP/r.h5.ckpt" ] && [ ! -e "$TMP/r.h5" ]; then
    $MPI -np 3 "$SUBSCOPE" collect "${ropts[@]}" --pipeline 3 --resume --out "$TMP/r.h5" >"$TMP/r.log" 2>&1
    if grep -q "resuming from" "$TMP/r.log"; then
        expect_ok "3 stages resume the checkpoint of one killed process = one uninterrupted process" \
            "$H5CMP" --quiet --atol 1e-14 --rtol 1e-12 "$TMP/u1.h5" "$TMP/r.h5"
    else fail "3 stages resume a checkpoint" "$(tail -3 "$TMP/r.log")"; fi
else fail "a killed one-process collect leaves a checkpoint and no output"; fi

# --max-memory: tiny-gpt2's 3.6 MiB of weights do not fit in 2.5 MiB; two stages of ~1.8 do.
expect_fail "--max-memory refuses a model that does not fit one rank" "more than --max-memory 2.5 MiB; split the model with --pipeline P" \
    "$SUBSCOPE" forward --model $M --input $P --max-memory 2.5M --out "$TMP/mm.h5"
if res=$($MPI -np 2 "$SUBSCOPE" forward --model $M --input $P --batch 2 --pipeline 2 --max-memory 2.5M --out "$TMP/mm2.h5" 2>&1); then
    "$SUBSCOPE" forward --model $M --input $P --batch 2 --out "$TMP/mm1.h5" 2>/dev/null
    expect_ok "... and runs split over 2 stages, equal to one process" "$H5CMP" --quiet --atol 0 --rtol 0 --only /logits "$TMP/mm1.h5" "$TMP/mm2.h5"
else fail "--pipeline 2 --max-memory 2.5M runs" "$(printf '%s' "$res" | tail -3)"; fi
# a stage of one block that does not fit is not told to use more stages
expect_fail "--max-memory: a one-block stage that does not fit says more stages cannot help" "more than --max-memory 307.2 KiB (one block: more stages cannot help)" \
    $MPI -np 4 "$SUBSCOPE" forward --model $M --input $P --pipeline 4 --max-memory 0.3M --out "$TMP/mm4.h5"
expect_fail "--max-memory takes sizes" "--max-memory must be a positive size" \
    "$SUBSCOPE" forward --model $M --input $P --max-memory 12Q --out "$TMP/x.h5"

# A stage that hangs: its neighbours give up after SUBSCOPE_DIST_TIMEOUT and name it; in forward's
# blocking sends, and in attribute's 1F1B exchanges between passes (stage 1 stopped).
hang_test() { # hang_test NAME STAGE JOB OPTIONS...
    local name=$1 hung=$2 t0 mp r rc dt; shift 2
    t0=$(date +%s)
    SUBSCOPE_DIST_TIMEOUT=2 timeout 60 $MPI -np 2 "$SUBSCOPE" "$@" --pipeline 2 --out "$TMP/h.h5" >"$TMP/h.log" 2>&1 &
    mp=$!
    r=""
    for _ in $(seq 1 300); do r=$(rank_pid $mp $hung); [ -n "$r" ] && [ -n "$(rank_pid $mp $((1 - hung)))" ] && break; sleep 0.05; done
    sleep 0.5
    [ -n "$r" ] && kill -STOP "$r"
    wait $mp; rc=$?; dt=$(( $(date +%s) - t0 ))
    [ -n "$r" ] && kill -9 "$r" 2>/dev/null
    if [ -n "$r" ] && [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "rank $hung (host .*) did not" "$TMP/h.log" && [ ! -e "$TMP/h.h5" ]; then
        pass "$name: stage $hung hung, the other stops the job after the 2 s timeout (exit $rc, ${dt}s), naming it and its host"
    else fail "$name: hung stage" "pid '$r', exit $rc after ${dt}s" "$(tail -n 5 "$TMP/h.log")"; fi
}
# (both get 8 times the prompts: a job must still be running when a stage is stopped, and
# with raw output they get through huge.jsonl in about a second)
for i in $(seq 1 8); do cat "$TMP/huge.jsonl"; done >"$TMP/huger.jsonl"
hang_test forward 0 forward --model $M --input "$TMP/huger.jsonl" --batch 4
hang_test "attribute (1F1B)" 1 attribute --model $M --input "$TMP/huger.jsonl" --sites 'blocks.*.mlp.hook_post' --batch 2

# Refusals.
expect_fail "--pipeline needs one rank per stage" "--pipeline 3 needs a multiple of 3 ranks (one per stage), but the job has 2" \
    $MPI -np 2 "$SUBSCOPE" forward --model $M --input $P --pipeline 3 --out "$TMP/x.h5"
expect_fail "--pipeline beyond the block count" "--pipeline 5: the model has only 4 blocks" \
    $MPI -np 5 "$SUBSCOPE" forward --model $M --input $P --pipeline 5 --out "$TMP/x.h5"
finish
